// Packing routines: copy a block of A into MR-row slivers (k-major, kc x MR each)
// and a block of B into NR-column slivers (kc x NR each), zero-padding the edges
// so the micro-kernel always sees full tiles.
#pragma once
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "gemm/ukernel.h"

namespace fastconv {
namespace FC_NS {

// A with general strides: element (i, p) at a[i * rs + p * cs].
template <class T>
struct PackAStrided {
  using Scalar = T;
  const T* a;
  int64_t rs, cs;

  void operator()(T* dst, int64_t i0, int64_t mc, int64_t p0, int64_t kc) const {
    constexpr int MR = kGemmMR;
    for (int64_t s = 0; s < mc; s += MR) {
      const int rows = static_cast<int>(imin(MR, mc - s));
      T* d = dst + s * kc;
      const T* src = a + (i0 + s) * rs + p0 * cs;
      if (rows == MR && rs == 1) {  // each column's MR values lie together
        for (int64_t p = 0; p < kc; ++p) std::memcpy(d + p * MR, src + p * cs, MR * sizeof(T));
      } else if (rows == MR) {
        for (int64_t p = 0; p < kc; ++p)
#pragma GCC unroll 16
          for (int r = 0; r < MR; ++r) d[p * MR + r] = src[r * rs + p * cs];
      } else {
        for (int64_t p = 0; p < kc; ++p)
          for (int r = 0; r < MR; ++r) d[p * MR + r] = r < rows ? src[r * rs + p * cs] : T(0);
      }
    }
  }
};

// B with general strides: element (p, j) at b[p * rs + j * cs].
template <class T>
struct PackBStrided {
  using Scalar = T;
  const T* b;
  int64_t rs, cs;

  // Where the micro-kernel can read B's rows in place (unit column stride): row p0 of
  // column j0, rows rs apart; null otherwise.
  const T* in_place(int64_t j0, int64_t p0) const { return cs == 1 ? b + p0 * rs + j0 : nullptr; }
  int64_t row_stride() const { return rs; }

  void operator()(T* dst, int64_t j0, int64_t nc, int64_t p0, int64_t kc) const {
    using V = Vec<T>;
    constexpr int NR = gemm_nr<T>();
    constexpr int L = V::kWidth;
    if (cs == 1) {
      // Row by row, each row's nc values read in order: a few long streams that the
      // hardware prefetcher follows, where sliver by sliver would run kc short ones at once.
      for (int64_t p = 0; p < kc; ++p) {
        const T* row = b + (p0 + p) * rs + j0;
        for (int64_t s = 0; s < nc; s += NR) {
          const int cols = static_cast<int>(imin(NR, nc - s));
          T* out = dst + s * kc + p * NR;
#pragma GCC unroll 8
          for (int v = 0; v < NR / L; ++v) {
            const int lanes = cols - v * L;
            const V x = lanes >= L ? V::load(row + s + v * L)
                                   : lanes > 0 ? V::load_partial(row + s + v * L, lanes) : V::zero();
            x.store(out + v * L);
          }
        }
      }
      return;
    }
    if constexpr (std::is_same_v<T, float>) {
      if (rs == 1) {
        // Columns contiguous in p: L x L blocks transposed in registers, L loads of L p values
        // each becoming L stores of L columns each.
        for (int64_t s = 0; s < nc; s += NR) {
          const int cols = static_cast<int>(imin(NR, nc - s));
          T* d = dst + s * kc;
          const T* src = b + p0 + (j0 + s) * cs;
          int64_t p = 0;
          for (; p + L <= kc; p += L) {
#pragma GCC unroll 4
            for (int v = 0; v < NR / L; ++v) {
              V r[L];
#pragma GCC unroll 16
              for (int q = 0; q < L; ++q) r[q] = v * L + q < cols ? V::load(src + (v * L + q) * cs + p) : V::zero();
              V::transpose(r);
#pragma GCC unroll 16
              for (int q = 0; q < L; ++q) r[q].store(d + (p + q) * NR + v * L);
            }
          }
          for (; p < kc; ++p)
            for (int j = 0; j < NR; ++j) d[p * NR + j] = j < cols ? src[j * cs + p] : T(0);
        }
        return;
      }
    }
    for (int64_t s = 0; s < nc; s += NR) {
      const int cols = static_cast<int>(imin(NR, nc - s));
      T* d = dst + s * kc;
      const T* src = b + p0 * rs + (j0 + s) * cs;
      for (int j = 0; j < cols; ++j) {
        const T* col = src + j * cs;
        for (int64_t p = 0; p < kc; ++p) d[p * NR + j] = col[p * rs];
      }
      for (int j = cols; j < NR; ++j)
        for (int64_t p = 0; p < kc; ++p) d[p * NR + j] = T(0);
    }
  }
};

// Calls fn(done, img, off, run) for each run of the positions q0 .. q0 + count that lie in one
// image (cols_per_image positions each): positions q0 + done .. q0 + done + run are image img's
// off .. off + run.
template <class Fn>
inline void for_each_image_run(int64_t q0, int64_t count, int64_t cols_per_image, Fn fn) {
  for (int64_t done = 0; done < count;) {
    const int64_t q = q0 + done, img = q / cols_per_image, off = q % cols_per_image;
    const int64_t run = imin(cols_per_image - off, count - done);
    fn(done, img, off, run);
    done += run;
  }
}

// A whose columns run through several images: element (i, p) at
// a[(p / cols_per_image) * image_stride + i * rs + p % cols_per_image]. grad_y's
// planes side by side, for a weight gradient summed over images in one GEMM.
template <class T>
struct PackAImages {
  using Scalar = T;
  const T* a;
  int64_t rs, cols_per_image, image_stride;

  void operator()(T* dst, int64_t i0, int64_t mc, int64_t p0, int64_t kc) const {
    constexpr int MR = kGemmMR;
    for (int64_t s = 0; s < mc; s += MR) {
      const int rows = static_cast<int>(imin(MR, mc - s));
      T* d = dst + s * kc;
      for_each_image_run(p0, kc, cols_per_image, [&](int64_t p, int64_t img, int64_t off, int64_t run) {
        const T* src = a + img * image_stride + (i0 + s) * rs + off;
        for (int64_t t = 0; t < run; ++t)
          for (int r = 0; r < MR; ++r) d[(p + t) * MR + r] = r < rows ? src[r * rs + t] : T(0);
      });
    }
  }
};

// B whose columns run through several images: element (p, j) at
// b[(j / cols_per_image) * image_stride + p * rs + j % cols_per_image]. A
// pointwise convolution's small planes side by side, so that one GEMM covers
// the whole batch instead of one narrow GEMM per image.
template <class T>
struct PackBImages {
  using Scalar = T;
  const T* b;
  int64_t rs, cols_per_image, image_stride;

  void operator()(T* dst, int64_t j0, int64_t nc, int64_t p0, int64_t kc) const {
    constexpr int NR = gemm_nr<T>();
    for (int64_t s = 0; s < nc; s += NR) {
      const int64_t cols = imin(NR, nc - s);
      T* d = dst + s * kc;
      for (int64_t p = 0; p < kc; ++p) {
        T* out = d + p * NR;
        for_each_image_run(j0 + s, cols, cols_per_image, [&](int64_t done, int64_t img, int64_t off, int64_t run) {
          copy_floats(out + done, b + img * image_stride + (p0 + p) * rs + off, run);
        });
        fill_floats(out + cols, T(0), NR - cols);
      }
    }
  }
};

}  // namespace FC_NS
}  // namespace fastconv
