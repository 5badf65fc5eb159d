// The loops around the micro-kernel (BLIS's macro-kernel): cache blocks of
// NC columns, KC depth and MC rows; packs B per (jc, pc) block and A per
// (ic, pc) block. PackA / PackB are functors, so convolutions can pack straight
// from their own layouts; their Scalar type (float or double) is the GEMM's.
// Threads each take an independent block of C.
#pragma once
#include <omp.h>

#include <cstdint>
#include <type_traits>
#include <utility>

#include "core/buffer.h"
#include "gemm/pack.h"
#include "gemm/ukernel.h"

namespace fastconv {
namespace FC_NS {

constexpr int64_t kGemmKC = 256;
constexpr int64_t kGemmMC = kGemmMR * 24;
// Columns per cache block: a KC x NC panel of B is 1 MB for either type.
template <class T>
constexpr int64_t gemm_nc() {
  return 4096 / static_cast<int64_t>(sizeof(T));
}
template <class T>
constexpr int64_t gemm_scratch_per_thread() {
  return kGemmMC * kGemmKC + kGemmKC * gemm_nc<T>();
}

// Rows of A (of a thread's block) up to which B's full slivers are read in place where the
// packer allows it. Measured on 1x1 convolutions at batch 8, in-process A/B (AVX-512, 2
// threads): forward 144->24 @56 1.28-1.46x, 32->16 @112 1.24-1.32x, 96->24 @56 1.11x, 192->32
// @28 1.14x; backward data 24->144 @56 1.05-1.16x, 32->192 @28 1.17x, 16->96 @112 0.99-1.08x.
constexpr int64_t kDirectBMaxM = 6 * kGemmMR;
template <class P, class = void>
constexpr bool kHasInPlace = false;
template <class P>
constexpr bool kHasInPlace<P, std::void_t<decltype(std::declval<const P&>().in_place(0, 0))>> = true;
// A B operand packed once for many products (PackBPacked) hands out its panels as they are.
template <class P, class = void>
constexpr bool kHasPacked = false;
template <class P>
constexpr bool kHasPacked<P, std::void_t<decltype(std::declval<const P&>().packed(0, 0))>> = true;

// B packed once for the products that share it: for each kGemmKC-deep block of rows, all of
// B's NR-column slivers (kc x NR each, zero-padded to whole slivers), the blocks one after
// another, so the panel at (column j0, row p0) is a pointer and gemm_serial copies nothing.
// Whoever fills it writes that layout (winograd_filters does, as it transforms the filters).
template <class T>
struct PackBPacked {
  using Scalar = T;
  const T* base;
  int64_t k, n_padded;

  PackBPacked(const T* b, int64_t k_, int64_t n) : base(b), k(k_), n_padded(round_up(n, gemm_nr<T>())) {}
  static int64_t elems(int64_t k, int64_t n) { return k * round_up(n, gemm_nr<T>()); }
  const T* packed(int64_t j0, int64_t p0) const { return base + p0 * n_padded + j0 * imin(kGemmKC, k - p0); }
};

// Thread-private packing buffers: A block first, then the B panel.
template <class T>
struct GemmScratch {
  T* a;
  T* b;
  explicit GemmScratch(T* base) : a(base), b(base + kGemmMC * kGemmKC) {}
};

// C[0:m, 0:n] for the block whose top-left corner is (row0, col0) of the full
// product; `c` points at that corner. With `accumulate`, C += A * B.
template <class PackA, class PackB, class T = typename PackA::Scalar>
void gemm_serial(int64_t m, int64_t n, int64_t k, const PackA& pack_a, const PackB& pack_b, T* c, int64_t ldc,
                 const EpilogueT<T>& epi, int64_t row0, int64_t col0, GemmScratch<T> scratch,
                 bool accumulate_c = false) {
  constexpr int MR = kGemmMR, NR = gemm_nr<T>();
  constexpr int64_t NC = gemm_nc<T>();
  T* abuf = scratch.a;
  T* bbuf = scratch.b;
  for (int64_t jc = 0; jc < n; jc += NC) {
    const int64_t nc = imin(NC, n - jc);
    for (int64_t pc = 0; pc < k; pc += kGemmKC) {
      const int64_t kc = imin(kGemmKC, k - pc);
      const bool accumulate = pc > 0 || accumulate_c;
      const EpilogueT<T>* last = pc + kc >= k ? &epi : nullptr;
      // With few rows of A, each B sliver serves only a few micro-kernel calls, and packing
      // it costs about as much as they do: full slivers are read in place where the packer
      // allows it (only a partial last sliver is packed).
      const T* b_direct = nullptr;
      const T* b_panel = bbuf;
      int64_t b_rows = NR;
      if constexpr (kHasPacked<PackB>) {
        b_panel = pack_b.packed(col0 + jc, pc);
      } else {
        if constexpr (kHasInPlace<PackB>) {
          if (m <= kDirectBMaxM) {
            b_direct = pack_b.in_place(col0 + jc, pc);
            b_rows = pack_b.row_stride();
          }
        }
        if (!b_direct) {
          pack_b(bbuf, col0 + jc, nc, pc, kc);
        } else if (nc % NR) {
          pack_b(bbuf + (nc / NR) * NR * kc, col0 + jc + (nc / NR) * NR, nc % NR, pc, kc);  // the partial sliver
        }
      }
      for (int64_t ic = 0; ic < m; ic += kGemmMC) {
        const int64_t mc = imin(kGemmMC, m - ic);
        pack_a(abuf, row0 + ic, mc, pc, kc);
        for (int64_t jr = 0; jr < nc; jr += NR) {
          const int nr = static_cast<int>(imin(NR, nc - jr));
          const bool direct = b_direct && nr == NR;
          const T* bs = direct ? b_direct + jr : b_panel + jr * kc;
          const int64_t ldb = direct ? b_rows : NR;
          for (int64_t ir = 0; ir < mc; ir += MR) {
            const int mr = static_cast<int>(imin(MR, mc - ir));
            gemm_ukernel<MR, kGemmNV, T>(kc, abuf + ir * kc, bs, c + (ic + ir) * ldc + jc + jr, ldc, mr, nr,
                                      accumulate, last, row0 + ic + ir, col0 + jc + jr, ldb);
          }
        }
      }
    }
  }
}

// Splits C into a tm x tn grid (tm * tn = threads) that minimises the largest
// per-thread padded tile.
inline void choose_thread_grid(int64_t m, int64_t n, int64_t nr, int threads, int* tm_out, int* tn_out) {
  int best_tm = 1, best_tn = threads;
  int64_t best_cost = -1;
  for (int tm = 1; tm <= threads; ++tm) {
    if (threads % tm) continue;
    const int tn = threads / tm;
    const int64_t rows = round_up(ceil_div(m, tm), kGemmMR);
    const int64_t cols = round_up(ceil_div(n, tn), nr);
    // Each thread packs its own A and B blocks: charge for the duplicated packing.
    const int64_t cost = rows * cols + rows * 8 + cols * 8;
    if (best_cost < 0 || cost < best_cost) {
      best_cost = cost;
      best_tm = tm;
      best_tn = tn;
    }
  }
  *tm_out = best_tm;
  *tn_out = best_tn;
}

// Thread count worth using for an m x n x k product (small products run serially).
inline int gemm_threads(int64_t m, int64_t n, int64_t k, int threads) {
  const int64_t flops = 2 * m * n * k;
  const int64_t per_thread_min = 1 << 20;
  const int64_t useful = imax(1, flops / per_thread_min);
  return static_cast<int>(imin(threads, useful));
}

template <class PackA, class PackB, class T = typename PackA::Scalar>
void gemm_parallel(int64_t m, int64_t n, int64_t k, const PackA& pack_a, const PackB& pack_b, T* c, int64_t ldc,
                   const EpilogueT<T>& epi, int threads, bool accumulate_c = false) {
  constexpr int64_t per_thread = gemm_scratch_per_thread<T>();
  threads = gemm_threads(m, n, k, threads);
  if (threads <= 1) {
    Scratch<T> scratch(per_thread);
    gemm_serial(m, n, k, pack_a, pack_b, c, ldc, epi, 0, 0, GemmScratch<T>(scratch.data()), accumulate_c);
    return;
  }
  int tm, tn;
  choose_thread_grid(m, n, gemm_nr<T>(), threads, &tm, &tn);
  const int64_t row_chunk = round_up(ceil_div(m, tm), kGemmMR);
  const int64_t col_chunk = round_up(ceil_div(n, tn), gemm_nr<T>());
  Scratch<T> scratch(checked_mul(threads, per_thread));
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num();
    const int64_t r0 = (t / tn) * row_chunk, c0 = (t % tn) * col_chunk;
    const int64_t rows = imin(row_chunk, m - r0), cols = imin(col_chunk, n - c0);
    if (rows > 0 && cols > 0)
      gemm_serial(rows, cols, k, pack_a, pack_b, c + r0 * ldc + c0, ldc, epi, r0, c0,
                  GemmScratch<T>(scratch.data() + t * per_thread), accumulate_c);
  }
}

}  // namespace FC_NS
}  // namespace fastconv
