// The GEMM micro-kernel: an MR x (NV * VecF::kWidth) register tile of C,
// accumulated over kc steps of a packed A sliver (kc x MR) and a packed B sliver
// (kc x NR). The epilogue (accumulate into C, bias, activation) is applied to the
// accumulators before the only store.
#pragma once
#include <cstdint>

#include "simd/vec.h"

namespace fastconv {
namespace FC_NS {

#if defined(__AVX512F__)
constexpr int kGemmMR = 6, kGemmNV = 4;  // 24 zmm accumulators: 6 x 64
#elif defined(__AVX2__)
constexpr int kGemmMR = 6, kGemmNV = 2;  // 12 ymm accumulators: 6 x 16
#else
constexpr int kGemmMR = 4, kGemmNV = 4;  // 4 x 4 scalars
#endif
constexpr int kGemmNR = kGemmNV * VecF::kWidth;

// Stores one row of accumulators to C[row][0 .. n) (n <= NV * width).
// `epi` is null except on the last k block.
template <int NV>
inline void store_tile_row(const VecF* acc, float* crow, int n, bool accumulate, const Epilogue* epi, int64_t row,
                           int64_t col0) {
  constexpr int L = VecF::kWidth;
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) {
    const int lanes = n - v * L;
    if (lanes <= 0) break;
    VecF r = acc[v];
    if (lanes >= L) {
      if (accumulate) r = VecF::add(r, VecF::load(crow + v * L));
      if (epi) r = apply_epilogue(r, *epi, row, col0 + v * L, L);
      r.store(crow + v * L);
    } else {
      if (accumulate) r = VecF::add(r, VecF::load_partial(crow + v * L, lanes));
      if (epi) r = apply_epilogue(r, *epi, row, col0 + v * L, lanes);
      r.store_partial(crow + v * L, lanes);
    }
  }
}

template <int MR, int NV>
inline void gemm_ukernel(int64_t kc, const float* __restrict a, const float* __restrict b, float* c, int64_t ldc,
                         int m, int n, bool accumulate, const Epilogue* epi, int64_t row0, int64_t col0) {
  constexpr int L = VecF::kWidth;
  VecF acc[MR][NV];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[i][v] = VecF::zero();

#pragma GCC unroll 2
  for (int64_t p = 0; p < kc; ++p) {
    VecF bv[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) bv[v] = VecF::load(b + v * L);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const VecF av = VecF::set1(a[i]);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[i][v] = VecF::fmadd(av, bv[v], acc[i][v]);
    }
    a += MR;
    b += NV * L;
  }

#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
    if (i >= m) break;
    store_tile_row<NV>(acc[i], c + i * ldc, n, accumulate, epi, row0 + i, col0);
  }
}

}  // namespace FC_NS
}  // namespace fastconv
