// BatchNorm, float and double. Channels are split across threads; each pass
// streams a channel's n rows of s contiguous values. Sums are accumulated in
// double (shifted by the channel's first value for the variance), so float32
// statistics stay accurate on large batches.
#include "norm/batch_norm.h"

#include <omp.h>

#include <cmath>

namespace fastconv {
namespace FC_NS {

namespace {

int bn_threads(const BatchNormArgs& a) { return a.n * a.c * a.s < (1 << 15) ? 1 : a.threads; }

// y = x * scale + shift over one channel.
template <class T>
void scale_shift(const BatchNormArgs& a, int64_t c, const T* x, T* y, T scale, T shift) {
  for (int64_t n = 0; n < a.n; ++n) {
    const T* __restrict xr = x + (n * a.c + c) * a.s;
    T* __restrict yr = y + (n * a.c + c) * a.s;
#pragma omp simd
    for (int64_t i = 0; i < a.s; ++i) yr[i] = xr[i] * scale + shift;
  }
}

}  // namespace

template <class T>
void batch_norm_forward(const BatchNormArgs& a, bool training, const T* x, const T* weight, const T* bias,
                        T* running_mean, T* running_var, T* y, T* save_mean, T* save_invstd) {
  const int threads = bn_threads(a);
  const double count = static_cast<double>(a.n * a.s);
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1) if (threads > 1)
  for (int64_t c = 0; c < a.c; ++c) {
    double mean, invstd;
    if (training) {
      const double shift = count > 0 ? static_cast<double>(x[c * a.s]) : 0.0;
      double sum = 0, sumsq = 0;
      for (int64_t n = 0; n < a.n; ++n) {
        const T* xr = x + (n * a.c + c) * a.s;
        double s1 = 0, s2 = 0;
#pragma omp simd reduction(+ : s1, s2)
        for (int64_t i = 0; i < a.s; ++i) {
          const double d = static_cast<double>(xr[i]) - shift;
          s1 += d;
          s2 += d * d;
        }
        sum += s1;
        sumsq += s2;
      }
      const double dm = sum / count;
      const double raw = sumsq / count - dm * dm;
      const double var = raw < 0.0 ? 0.0 : raw;  // rounding below 0 is clamped; NaN (from NaN/Inf input) stays
      mean = shift + dm;
      invstd = 1.0 / std::sqrt(var + a.eps);
      save_mean[c] = static_cast<T>(mean);
      save_invstd[c] = static_cast<T>(invstd);
      if (running_mean) running_mean[c] = static_cast<T>((1 - a.momentum) * running_mean[c] + a.momentum * mean);
      if (running_var)
        running_var[c] = static_cast<T>((1 - a.momentum) * running_var[c] + a.momentum * var * count / (count - 1));
    } else {
      mean = running_mean[c];
      invstd = 1.0 / std::sqrt(static_cast<double>(running_var[c]) + a.eps);
    }
    const double w = weight ? weight[c] : 1.0, b = bias ? bias[c] : 0.0;
    scale_shift(a, c, x, y, static_cast<T>(w * invstd), static_cast<T>(b - mean * w * invstd));
  }
}

template <class T>
void batch_norm_backward(const BatchNormArgs& a, bool training, const T* grad_y, const T* x, const T* weight,
                         const T* mean, const T* invstd, T* grad_x, T* grad_w, T* grad_b) {
  const int threads = bn_threads(a);
  const double count = static_cast<double>(a.n * a.s);
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1) if (threads > 1)
  for (int64_t c = 0; c < a.c; ++c) {
    const double m = mean[c], is = invstd[c], w = weight ? weight[c] : 1.0;
    // sum(dy) and sum(dy * (x - mean)).
    double sum_dy = 0, sum_dy_xmu = 0;
    for (int64_t n = 0; n < a.n; ++n) {
      const T* xr = x + (n * a.c + c) * a.s;
      const T* gr = grad_y + (n * a.c + c) * a.s;
      double s1 = 0, s2 = 0;
#pragma omp simd reduction(+ : s1, s2)
      for (int64_t i = 0; i < a.s; ++i) {
        const double g = gr[i];
        s1 += g;
        s2 += g * (static_cast<double>(xr[i]) - m);
      }
      sum_dy += s1;
      sum_dy_xmu += s2;
    }
    if (grad_b) grad_b[c] = static_cast<T>(sum_dy);
    if (grad_w) grad_w[c] = static_cast<T>(sum_dy_xmu * is);
    if (!grad_x) continue;
    // training: dx = (dy - mean(dy) - (x - mean) * invstd^2 * mean(dy * (x - mean))) * invstd * w
    // eval:     dx = dy * invstd * w
    const T k = static_cast<T>(is * w);
    const T mdy = training ? static_cast<T>(sum_dy / count) : T(0);
    const T proj = training ? static_cast<T>(is * is * sum_dy_xmu / count) : T(0);
    const T mt = static_cast<T>(m);
    for (int64_t n = 0; n < a.n; ++n) {
      const T* __restrict xr = x + (n * a.c + c) * a.s;
      const T* __restrict gr = grad_y + (n * a.c + c) * a.s;
      T* __restrict dr = grad_x + (n * a.c + c) * a.s;
#pragma omp simd
      for (int64_t i = 0; i < a.s; ++i) dr[i] = (gr[i] - mdy - (xr[i] - mt) * proj) * k;
    }
  }
}

template void batch_norm_forward<float>(const BatchNormArgs&, bool, const float*, const float*, const float*, float*,
                                        float*, float*, float*, float*);
template void batch_norm_forward<double>(const BatchNormArgs&, bool, const double*, const double*, const double*,
                                         double*, double*, double*, double*, double*);
template void batch_norm_backward<float>(const BatchNormArgs&, bool, const float*, const float*, const float*,
                                         const float*, const float*, float*, float*, float*);
template void batch_norm_backward<double>(const BatchNormArgs&, bool, const double*, const double*, const double*,
                                          const double*, const double*, double*, double*, double*);

}  // namespace FC_NS
}  // namespace fastconv
