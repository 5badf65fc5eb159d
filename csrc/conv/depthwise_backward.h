// Depthwise convolution backward (groups == c_in, any channel multiplier), 2-D,
// float or double. One pass over each (grad_y, x) plane pair per tap computes
// both gradients: grad_w[o, tap] += <grad_y row, x row> and grad_x row +=
// w[o, tap] * grad_y row. Threads take whole input channels, so neither
// gradient needs a reduction across threads.
#pragma once
#include <omp.h>

#include <cstdint>
#include <cstring>

#include "conv/conv_gemm.h"

namespace fastconv {
namespace FC_NS {

template <class T>
void depthwise_backward(const ConvBackward<T>& b) {
  const ConvNdArgs<T>& a = b.g;
  const ConvShape<T> s(a);
  const int64_t mult = a.c_out / a.c_in;
  const int64_t kh = a.kernel[1], kw = a.kernel[2];
  const int64_t wi = a.in[2], wo = a.out[2], sw = a.stride[2];
  const int64_t work = a.n * a.c_out * s.P * s.taps;
  const int threads = work < (1 << 16) ? 1 : a.threads;

#pragma omp parallel for num_threads(threads) schedule(dynamic, 1) if (threads > 1)
  for (int64_t c = 0; c < a.c_in; ++c) {
    if (b.grad_w) std::memset(b.grad_w + c * mult * s.taps, 0, sizeof(T) * mult * s.taps);
    for (int64_t n = 0; n < a.n; ++n) {
      const T* xp = b.x ? b.x + (n * a.c_in + c) * s.in_vol : nullptr;
      T* dxp = b.grad_x ? b.grad_x + (n * a.c_in + c) * s.in_vol : nullptr;
      if (dxp) std::memset(dxp, 0, sizeof(T) * s.in_vol);
      for (int64_t m = 0; m < mult; ++m) {
        const int64_t o = c * mult + m;
        const T* dyp = b.grad_y + (n * a.c_out + o) * s.P;
        for (int64_t tap = 0; tap < kh * kw; ++tap) {
          const T wv = b.grad_x ? b.weight[o * s.taps + tap] : T(0);
          T acc = 0;
          for_each_col_row(
              a, tap,
              [&](int64_t orow, int64_t irow, int64_t off, int64_t lo, int64_t hi) {
                const T* __restrict dy = dyp + orow * wo;
                if (b.grad_w) {
                  const T* __restrict x = xp + irow * wi + off;
                  T part = 0;
                  if (sw == 1) {
#pragma omp simd reduction(+ : part)
                    for (int64_t ow = lo; ow < hi; ++ow) part += dy[ow] * x[ow];
                  } else {
                    for (int64_t ow = lo; ow < hi; ++ow) part += dy[ow] * x[ow * sw];
                  }
                  acc += part;
                }
                if (dxp) {
                  T* __restrict dx = dxp + irow * wi + off;
                  if (sw == 1) {
#pragma omp simd
                    for (int64_t ow = lo; ow < hi; ++ow) dx[ow] += wv * dy[ow];
                  } else {
                    for (int64_t ow = lo; ow < hi; ++ow) dx[ow * sw] += wv * dy[ow];
                  }
                }
              },
              [](int64_t) {});
          if (b.grad_w) b.grad_w[o * s.taps + tap] += acc;
        }
      }
    }
  }
}

}  // namespace FC_NS
}  // namespace fastconv
