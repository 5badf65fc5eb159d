// Convolution as GEMM: y[g] (cout_g x P) = W[g] (cout_g x K) * B (K x P), P = h_out * w_out.
// "im2col" builds B explicitly (K = cin_g * kh * kw rows); "pointwise" (1x1, stride 1,
// no padding) uses the input planes as B directly. Bias and activation ride in the
// GEMM epilogue.
#pragma once
#include <omp.h>

#include <cstdint>
#include <cstring>

#include "conv/direct.h"
#include "core/buffer.h"
#include "gemm/driver.h"

namespace fastconv {
namespace FC_NS {

// Rows [r0, r1) of the im2col matrix of channels starting at x (one image, one group).
inline void im2col_rows(const Conv2dArgs& a, const float* x, float* col, int64_t r0, int64_t r1) {
  const int64_t P = a.h_out * a.w_out, sw = a.stride_w;
  for (int64_t row = r0; row < r1; ++row) {
    const int64_t kw = row % a.kw, kh = (row / a.kw) % a.kh, ci = row / (a.kw * a.kh);
    float* dst = col + row * P;
    const int64_t off = kw * a.dil_w - a.pad_left;
    // Output columns whose input column ow*sw + off lies inside [0, w).
    const int64_t ow_lo = imin(a.w_out, imax(0, ceil_div(-off, sw)));
    const int64_t ow_hi = imax(ow_lo, imin(a.w_out, off >= a.w ? 0 : ceil_div(a.w - off, sw)));
    for (int64_t oh = 0; oh < a.h_out; ++oh) {
      float* d = dst + oh * a.w_out;
      const int64_t ih = oh * a.stride_h + kh * a.dil_h - a.pad_top;
      if (ih < 0 || ih >= a.h) {
        std::memset(d, 0, sizeof(float) * a.w_out);
        continue;
      }
      const float* src = x + (ci * a.h + ih) * a.w + off;
      std::memset(d, 0, sizeof(float) * ow_lo);
      if (sw == 1) {
        std::memcpy(d + ow_lo, src + ow_lo, sizeof(float) * (ow_hi - ow_lo));
      } else {
        for (int64_t ow = ow_lo; ow < ow_hi; ++ow) d[ow] = src[ow * sw];
      }
      std::memset(d + ow_hi, 0, sizeof(float) * (a.w_out - ow_hi));
    }
  }
}

inline void conv2d_gemm(const Conv2dArgs& a, bool explicit_im2col) {
  const int64_t cin_g = a.c_in / a.groups, cout_g = a.c_out / a.groups;
  const int64_t K = cin_g * a.kh * a.kw, P = a.h_out * a.w_out;
  const int64_t image_in = a.c_in * a.h * a.w, image_out = a.c_out * P;
  const int64_t jobs = a.n * a.groups;
  const int threads = a.threads;
  const int64_t col_floats = explicit_im2col ? checked_mul(K, P) : 0;

  auto job_epilogue = [&](int64_t g) {
    Epilogue e = conv_epilogue(a);
    if (e.bias) e.bias += g * cout_g;
    return e;
  };
  auto operand_b = [&](int64_t n, int64_t g, float* col) {
    const float* x = a.x + n * image_in + g * cin_g * a.h * a.w;
    return explicit_im2col ? PackBStrided{col, P, 1} : PackBStrided{x, P, 1};
  };

  if (jobs >= threads && threads > 1) {
    // Enough (image, group) jobs to give each thread whole GEMMs of its own.
    const int64_t per_thread = per_thread_floats(col_floats + kGemmScratchPerThread);
    AlignedBuffer scratch(checked_mul(threads, per_thread));
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
    for (int64_t job = 0; job < jobs; ++job) {
      const int64_t n = job / a.groups, g = job % a.groups;
      float* mine = scratch.data() + omp_get_thread_num() * per_thread;
      float* col = mine + kGemmScratchPerThread;
      if (explicit_im2col) im2col_rows(a, a.x + n * image_in + g * cin_g * a.h * a.w, col, 0, K);
      const Epilogue e = job_epilogue(g);
      gemm_serial(cout_g, P, K, PackAStrided{a.weight + g * cout_g * K, K, 1}, operand_b(n, g, col),
                  a.y + n * image_out + g * cout_g * P, P, e, 0, 0, mine, mine + kGemmMC * kGemmKC);
    }
    return;
  }
  AlignedBuffer col(col_floats);
  for (int64_t job = 0; job < jobs; ++job) {
    const int64_t n = job / a.groups, g = job % a.groups;
    if (explicit_im2col) {
      const float* x = a.x + n * image_in + g * cin_g * a.h * a.w;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
      for (int64_t r = 0; r < K; ++r) im2col_rows(a, x, col.data(), r, r + 1);
    }
    const Epilogue e = job_epilogue(g);
    gemm_parallel(cout_g, P, K, PackAStrided{a.weight + g * cout_g * K, K, 1}, operand_b(n, g, col.data()),
                  a.y + n * image_out + g * cout_g * P, P, e, threads);
  }
}

}  // namespace FC_NS
}  // namespace fastconv
