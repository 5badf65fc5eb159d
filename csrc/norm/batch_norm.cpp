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

// y = act(x * scale + shift) over one channel.
template <class T>
void scale_shift(const BatchNormArgs& a, int64_t c, const T* x, T* y, T scale, T shift, Activation act) {
  using V = Vec<T>;
  constexpr int L = V::kWidth;
  const V vs = V::set1(scale), vb = V::set1(shift);
  for (int64_t n = 0; n < a.n; ++n) {
    const T* xr = x + (n * a.c + c) * a.s;
    T* yr = y + (n * a.c + c) * a.s;
    for (int64_t i = 0; i < a.s; i += L) {
      const int64_t left = a.s - i;
      store_n(apply_activation(V::fmadd(load_n<V>(xr + i, left), vs, vb), act), yr + i, left);
    }
  }
}

// grad_y where the activation A passes it (its slope is 1 there), 0 elsewhere:
// everywhere without one; ReLU where y > 0; ReLU6 where 0 < y < 6. NaN outputs
// pass nothing, as PyTorch's threshold and hardtanh backward do.
template <Activation A, class V>
inline V masked_grad(V g, V y) {
  using S = typename V::Scalar;
  if constexpr (A == Activation::relu) return V::select_lt(V::zero(), y, g, V::zero());
  if constexpr (A == Activation::relu6)
    return V::select_lt(V::zero(), y, V::select_lt(y, V::set1(S(6)), g, V::zero()), V::zero());
  return g;
}

// One channel's backward; `y` is read only when A is an activation.
template <Activation A, class T>
void backward_channel(const BatchNormArgs& a, bool training, int64_t c, const T* grad_y, const T* x, const T* y,
                      double m, double is, double w, T* grad_x, T* grad_w, T* grad_b) {
  using V = Vec<T>;
  constexpr int L = V::kWidth;
  constexpr int64_t kChunk = 1024;  // masked gradients staged per chunk, in L1
  alignas(64) T staged[A == Activation::none ? 1 : kChunk];
  const double count = static_cast<double>(a.n * a.s);
  // sum(dy) and sum(dy * (x - mean)), dy masked by the activation.
  double sum_dy = 0, sum_dy_xmu = 0;
  for (int64_t n = 0; n < a.n; ++n) {
    const int64_t off = (n * a.c + c) * a.s;
    for (int64_t i0 = 0; i0 < a.s; i0 += kChunk) {
      const int64_t len = imin(kChunk, a.s - i0);
      const T* xr = x + off + i0;
      const T* gr = grad_y + off + i0;
      if constexpr (A != Activation::none) {
        const T* yr = y + off + i0;
        for (int64_t i = 0; i < len; i += L)
          store_n(masked_grad<A>(load_n<V>(gr + i, len - i), load_n<V>(yr + i, len - i)), staged + i, len - i);
        gr = staged;
      }
      double s1 = 0, s2 = 0;
#pragma omp simd reduction(+ : s1, s2)
      for (int64_t i = 0; i < len; ++i) {
        const double g = gr[i];
        s1 += g;
        s2 += g * (static_cast<double>(xr[i]) - m);
      }
      sum_dy += s1;
      sum_dy_xmu += s2;
    }
  }
  if (grad_b) grad_b[c] = static_cast<T>(sum_dy);
  if (grad_w) grad_w[c] = static_cast<T>(sum_dy_xmu * is);
  if (!grad_x) return;
  // training: dx = (dy - mean(dy) - (x - mean) * invstd^2 * mean(dy * (x - mean))) * invstd * w
  // eval:     dx = dy * invstd * w
  const V k = V::set1(static_cast<T>(is * w));
  const V mdy = V::set1(training ? static_cast<T>(sum_dy / count) : T(0));
  const V proj = V::set1(training ? static_cast<T>(is * is * sum_dy_xmu / count) : T(0));
  const V mt = V::set1(static_cast<T>(m));
  for (int64_t n = 0; n < a.n; ++n) {
    const int64_t off = (n * a.c + c) * a.s;
    const T* xr = x + off;
    const T* gr = grad_y + off;
    T* dr = grad_x + off;
    for (int64_t i = 0; i < a.s; i += L) {
      const int64_t left = a.s - i;
      V g = load_n<V>(gr + i, left);
      if constexpr (A != Activation::none) g = masked_grad<A>(g, load_n<V>(y + off + i, left));
      if (training) {
        const V xc = V::sub(load_n<V>(xr + i, left), mt);
        g = V::sub(V::sub(g, mdy), V::mul(xc, proj));
      }
      store_n(V::mul(g, k), dr + i, left);  // eval never reads x: a NaN there does not reach dx
    }
  }
}

}  // namespace

template <class T>
void batch_norm_forward(const BatchNormArgs& a, bool training, const T* x, const T* weight, const T* bias,
                        T* running_mean, T* running_var, T* y, T* save_mean, T* save_invstd, Activation act) {
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
    scale_shift(a, c, x, y, static_cast<T>(w * invstd), static_cast<T>(b - mean * w * invstd), act);
  }
}

template <class T>
void batch_norm_backward(const BatchNormArgs& a, bool training, const T* grad_y, const T* x, const T* weight,
                         const T* mean, const T* invstd, T* grad_x, T* grad_w, T* grad_b, Activation act,
                         const T* y) {
  const int threads = bn_threads(a);
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1) if (threads > 1)
  for (int64_t c = 0; c < a.c; ++c) {
    const double m = mean[c], is = invstd[c], w = weight ? weight[c] : 1.0;
    switch (act) {
      case Activation::relu:
        backward_channel<Activation::relu>(a, training, c, grad_y, x, y, m, is, w, grad_x, grad_w, grad_b);
        break;
      case Activation::relu6:
        backward_channel<Activation::relu6>(a, training, c, grad_y, x, y, m, is, w, grad_x, grad_w, grad_b);
        break;
      default:
        backward_channel<Activation::none>(a, training, c, grad_y, x, y, m, is, w, grad_x, grad_w, grad_b);
    }
  }
}

template void batch_norm_forward<float>(const BatchNormArgs&, bool, const float*, const float*, const float*, float*,
                                        float*, float*, float*, float*, Activation);
template void batch_norm_forward<double>(const BatchNormArgs&, bool, const double*, const double*, const double*,
                                         double*, double*, double*, double*, double*, Activation);
template void batch_norm_backward<float>(const BatchNormArgs&, bool, const float*, const float*, const float*,
                                         const float*, const float*, float*, float*, float*, Activation, const float*);
template void batch_norm_backward<double>(const BatchNormArgs&, bool, const double*, const double*, const double*,
                                          const double*, const double*, double*, double*, double*, Activation,
                                          const double*);

}  // namespace FC_NS
}  // namespace fastconv
