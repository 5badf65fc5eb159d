// The GEMM micro-kernel: an MR x (NV * width) register tile of C, accumulated
// over kc steps of a packed A sliver (kc x MR) and a B sliver (kc x NR), packed
// or read in place (rows ldb apart).
// The epilogue (accumulate into C, bias, activation) is applied to the
// accumulators before the only store. Written once for float and double.
#pragma once
#include <cstdint>

#include "simd/vec.h"

namespace fastconv {
namespace FC_NS {

#if defined(__AVX512F__)
constexpr int kGemmMR = 6, kGemmNV = 4;  // 24 zmm accumulators: 6 x 64 floats / 6 x 32 doubles
#elif defined(__AVX2__)
constexpr int kGemmMR = 6, kGemmNV = 2;  // 12 ymm accumulators: 6 x 16 floats / 6 x 8 doubles
#else
constexpr int kGemmMR = 4, kGemmNV = 4;  // 4 x 4 scalars
#endif
template <class T>
constexpr int gemm_nr() {
  return kGemmNV * Vec<T>::kWidth;
}

// Stores one row of accumulators to C[row][0 .. n) (n <= NV * width).
// `epi` is null except on the last k block.
template <int NV, class T>
inline void store_tile_row(const Vec<T>* acc, T* crow, int n, bool accumulate, const EpilogueT<T>* epi, int64_t row,
                           int64_t col0) {
  using V = Vec<T>;
  constexpr int L = V::kWidth;
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) {
    const int lanes = n - v * L;
    if (lanes <= 0) break;
    V r = acc[v];
    if (lanes >= L) {
      if (accumulate) r = V::add(r, V::load(crow + v * L));
      if (epi) r = apply_epilogue(r, *epi, row, col0 + v * L, L);
      r.store(crow + v * L);
    } else {
      if (accumulate) r = V::add(r, V::load_partial(crow + v * L, lanes));
      if (epi) r = apply_epilogue(r, *epi, row, col0 + v * L, lanes);
      r.store_partial(crow + v * L, lanes);
    }
  }
}

// `ldb`: the distance between B's rows, NV * width for a packed sliver.
template <int MR, int NV, class T>
inline void gemm_ukernel(int64_t kc, const T* __restrict a, const T* __restrict b, T* c, int64_t ldc, int m, int n,
                         bool accumulate, const EpilogueT<T>* epi, int64_t row0, int64_t col0,
                         int64_t ldb = NV * Vec<T>::kWidth) {
  using V = Vec<T>;
  constexpr int L = V::kWidth;
  V acc[MR][NV];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[i][v] = V::zero();

#pragma GCC unroll 2
  for (int64_t p = 0; p < kc; ++p) {
    V bv[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) bv[v] = V::load(b + v * L);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const V av = V::set1(a[i]);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[i][v] = V::fmadd(av, bv[v], acc[i][v]);
    }
    a += MR;
    b += ldb;
  }

#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
    if (i >= m) break;
    store_tile_row<NV, T>(acc[i], c + i * ldc, n, accumulate, epi, row0 + i, col0);
  }
}

}  // namespace FC_NS
}  // namespace fastconv
