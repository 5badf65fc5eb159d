// GEMMs with few rows (m <= kSkinnyMaxM): a linear layer at batch 1 to 8, and its
// input gradient. There the packed GEMM would spend most of its time packing B
// (all of a layer's weights, on every call) for a micro-kernel whose MR rows are
// mostly padding. These kernels stream B once, straight from its own layout, and
// keep every row of A's products in registers:
//   - skinny_dot:  B's columns contiguous (b_rs == 1: x @ weight.T): per column j,
//                  m vector dot products of A's rows with B's column j;
//   - skinny_axpy: B's rows contiguous (b_cs == 1: grad @ weight): per block of
//                  columns, C[i] += A[i][p] * B[p] for every p.
// Threads split the columns of C.
#pragma once
#include <omp.h>

#include <cstdint>

#include "core/params.h"
#include "gemm/driver.h"
#include "simd/vec.h"

namespace fastconv {
namespace FC_NS {

constexpr int64_t kSkinnyMaxM = 8;

// C[0:m, j0:j1] = epilogue(C), or epilogue(0) when !from_c (an empty product).
template <class T>
void epilogue_columns(const GemmArgsT<T>& g, int64_t j0, int64_t j1, bool from_c) {
  using V = Vec<T>;
  constexpr int L = V::kWidth;
  if (from_c && g.epi.bias_mode == BiasMode::none && g.epi.act == Activation::none) return;
  for (int64_t i = 0; i < g.m; ++i) {
    T* row = g.c + i * g.ldc;
    for (int64_t j = j0; j < j1; j += L) {
      const int lanes = static_cast<int>(imin(L, j1 - j));
      const V start = from_c ? V::load_partial(row + j, lanes) : V::zero();
      apply_epilogue(start, g.epi, i, j, lanes).store_partial(row + j, lanes);
    }
  }
}

// M rows of A (M == g.m) against NB columns of B at a time; A's rows and B's
// columns are contiguous along k.
template <int M, class T>
void skinny_dot_columns(const GemmArgsT<T>& g, int64_t j0, int64_t j1) {
  using V = Vec<T>;
  constexpr int L = V::kWidth;
  constexpr int NB = M <= 2 ? 4 : M <= 4 ? 2 : 1;
  const int64_t k = g.k, kv = k / L * L;
  const int tail = static_cast<int>(k - kv);
  int64_t j = j0;
  for (; j < j1; j += NB) {
    const int nb = static_cast<int>(imin(NB, j1 - j));
    const T* bcol[NB];
    for (int c = 0; c < NB; ++c) bcol[c] = g.b + (j + (c < nb ? c : 0)) * g.b_cs;
    V acc[M][NB];
#pragma GCC unroll 8
    for (int i = 0; i < M; ++i)
#pragma GCC unroll 4
      for (int c = 0; c < NB; ++c) acc[i][c] = V::zero();
    for (int64_t p = 0; p < kv; p += L) {
      V bv[NB];
#pragma GCC unroll 4
      for (int c = 0; c < NB; ++c) bv[c] = V::load(bcol[c] + p);
#pragma GCC unroll 8
      for (int i = 0; i < M; ++i) {
        const V av = V::load(g.a + i * g.a_rs + p);
#pragma GCC unroll 4
        for (int c = 0; c < NB; ++c) acc[i][c] = V::fmadd(av, bv[c], acc[i][c]);
      }
    }
    if (tail) {
      V bv[NB];
      for (int c = 0; c < NB; ++c) bv[c] = V::load_partial(bcol[c] + kv, tail);
      for (int i = 0; i < M; ++i) {
        const V av = V::load_partial(g.a + i * g.a_rs + kv, tail);
        for (int c = 0; c < NB; ++c) acc[i][c] = V::fmadd(av, bv[c], acc[i][c]);
      }
    }
    for (int i = 0; i < M; ++i)
      for (int c = 0; c < nb; ++c) {
        T& out = g.c[i * g.ldc + j + c];
        out = (g.accumulate ? out : T(0)) + V::sum(acc[i][c]);
      }
  }
  epilogue_columns(g, j0, j1, true);  // the sums are in C
}

// M rows of A against NV vectors of B's columns at a time; B's rows are contiguous.
// The sum over k runs in blocks of kGemmKC terms added into C, as the packed GEMM
// does, so that its rounding error grows no faster than the packed GEMM's.
template <int M, class T>
void skinny_axpy_columns(const GemmArgsT<T>& g, int64_t j0, int64_t j1) {
  using V = Vec<T>;
  constexpr int L = V::kWidth;
  constexpr int NV = M <= 2 ? 4 : M <= 4 ? 2 : 1;
  for (int64_t j = j0; j < j1; j += NV * L) {
    const int64_t width = imin(NV * L, j1 - j);
    int lanes[NV];
    for (int v = 0; v < NV; ++v) lanes[v] = static_cast<int>(imax(0, imin(L, width - v * L)));
    for (int64_t pc = 0; pc < g.k; pc += kGemmKC) {
      const int64_t pend = imin(g.k, pc + kGemmKC);
      V acc[M][NV];
#pragma GCC unroll 8
      for (int i = 0; i < M; ++i)
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) acc[i][v] = V::zero();
      if (width == NV * L) {
        for (int64_t p = pc; p < pend; ++p) {
          const T* brow = g.b + p * g.b_rs + j;
          V bv[NV];
#pragma GCC unroll 4
          for (int v = 0; v < NV; ++v) bv[v] = V::load(brow + v * L);
#pragma GCC unroll 8
          for (int i = 0; i < M; ++i) {
            const V av = V::set1(g.a[i * g.a_rs + p * g.a_cs]);
#pragma GCC unroll 4
            for (int v = 0; v < NV; ++v) acc[i][v] = V::fmadd(av, bv[v], acc[i][v]);
          }
        }
      } else {
        for (int64_t p = pc; p < pend; ++p) {
          const T* brow = g.b + p * g.b_rs + j;
          V bv[NV];
          for (int v = 0; v < NV; ++v) bv[v] = lanes[v] > 0 ? V::load_partial(brow + v * L, lanes[v]) : V::zero();
          for (int i = 0; i < M; ++i) {
            const V av = V::set1(g.a[i * g.a_rs + p * g.a_cs]);
            for (int v = 0; v < NV; ++v) acc[i][v] = V::fmadd(av, bv[v], acc[i][v]);
          }
        }
      }
      const bool first = pc == 0, last = pend == g.k;
      for (int i = 0; i < M; ++i) {
        T* out = g.c + i * g.ldc + j;
        for (int v = 0; v < NV && lanes[v] > 0; ++v) {
          V r = acc[i][v];
          if (!first || g.accumulate) r = V::add(r, V::load_partial(out + v * L, lanes[v]));
          if (last) r = apply_epilogue(r, g.epi, i, j + v * L, lanes[v]);
          r.store_partial(out + v * L, lanes[v]);
        }
      }
    }
  }
}

// Whether skinny_gemm takes this product.
template <class T>
bool skinny_applies(const GemmArgsT<T>& g) {
  return g.m >= 1 && g.m <= kSkinnyMaxM && ((g.b_rs == 1 && g.a_cs == 1) || g.b_cs == 1);
}

template <int M, class T>
void skinny_run(const GemmArgsT<T>& g, int64_t j0, int64_t j1) {
  if (g.b_rs == 1 && g.a_cs == 1)
    skinny_dot_columns<M>(g, j0, j1);
  else
    skinny_axpy_columns<M>(g, j0, j1);
}

template <class T>
void skinny_gemm(const GemmArgsT<T>& g) {
  using Fn = void (*)(const GemmArgsT<T>&, int64_t, int64_t);
  static constexpr Fn kRun[kSkinnyMaxM] = {skinny_run<1, T>, skinny_run<2, T>, skinny_run<3, T>, skinny_run<4, T>,
                                           skinny_run<5, T>, skinny_run<6, T>, skinny_run<7, T>, skinny_run<8, T>};
  const Fn run = kRun[g.m - 1];
  const int threads = gemm_threads(g.m, g.n, g.k, g.threads);
  // Column chunks of whole vectors, so that no two threads write one cache line.
  constexpr int64_t L = Vec<T>::kWidth;
  const int64_t chunk = round_up(ceil_div(g.n, threads), L);
  if (threads <= 1) {
    run(g, 0, g.n);
    return;
  }
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int t = 0; t < threads; ++t) {
    const int64_t j0 = t * chunk, j1 = imin(g.n, j0 + chunk);
    if (j0 < j1) run(g, j0, j1);
  }
}

}  // namespace FC_NS
}  // namespace fastconv
