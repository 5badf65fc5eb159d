// BatchNorm, float and double. Groups of consecutive channels are split across
// threads; each pass over a group streams, for each n, its channels' rows. Sums
// are accumulated in double (shifted by the channel's first value for the
// variance), so float32 statistics stay accurate on large batches.
#include "norm/batch_norm.h"

#include <omp.h>

#include <cmath>
#include <vector>

namespace fastconv {
namespace FC_NS {

namespace {

int bn_threads(const BatchNormArgs& a) { return a.n * a.c * a.s < (1 << 15) ? 1 : a.threads; }

// Channels are handled in groups of consecutive channels, and every pass over a
// group walks it n-major: for each n the group's rows lie in one contiguous
// stretch of memory, which the prefetchers stream. (Walking one channel at a time
// reads n short rows far apart, and neighbouring channels on different threads
// share the cache lines at their ends: 1.7x-4.8x slower on 14x14 and 7x7 planes.)
// A group's data stays within a cache budget (the size of a Zen 4 core's L2; 512
// KiB and 2-4 MiB measured no better), so that a pass that re-reads it (normalising
// after the statistics, dx after the reductions) finds it in cache. Threads take
// groups one at a time.
struct ChannelGroups {
  int64_t size = 1, count = 0;
};

ChannelGroups channel_groups(const BatchNormArgs& a, int threads, int64_t bytes_per_channel) {
  constexpr int64_t kBudget = 1024 * 1024;
  ChannelGroups g;
  g.size = imax(1, imin(ceil_div(a.c, threads), kBudget / imax(1, bytes_per_channel)));
  g.count = ceil_div(a.c, g.size);
  return g;
}

// Calls fn(c0, c1) for each group [c0, c1) of consecutive channels, in parallel.
template <class Fn>
void for_each_group(const BatchNormArgs& a, int64_t bytes_per_channel, Fn fn) {
  const int threads = bn_threads(a);
  const ChannelGroups g = channel_groups(a, threads, bytes_per_channel);
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1) if (threads > 1)
  for (int64_t k = 0; k < g.count; ++k) fn(k * g.size, imin(a.c, (k + 1) * g.size));
}

// y = act(x * scale + shift) over one row of s values.
template <class T>
void scale_shift_row(int64_t s, const T* xr, T* yr, T scale, T shift, Activation act) {
  using V = Vec<T>;
  constexpr int L = V::kWidth;
  const V vs = V::set1(scale), vb = V::set1(shift);
  for (int64_t i = 0; i < s; i += L) {
    const int64_t left = s - i;
    store_n(apply_activation(V::fmadd(load_n<V>(xr + i, left), vs, vb), act), yr + i, left);
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

// Adds one row's sum(dy) and sum(dy * (x - m)) (dy masked by the activation A,
// staged per chunk in L1; `yr` is read only when A is an activation) to s1, s2.
template <Activation A, class T>
void backward_row_sums(int64_t s, const T* gr, const T* xr, const T* yr, double m, double* s1, double* s2) {
  using V = Vec<T>;
  constexpr int L = V::kWidth;
  constexpr int64_t kChunk = 1024;
  alignas(64) T staged[A == Activation::none ? 1 : kChunk];
  for (int64_t i0 = 0; i0 < s; i0 += kChunk) {
    const int64_t len = imin(kChunk, s - i0);
    const T* g = gr + i0;
    if constexpr (A != Activation::none) {
      for (int64_t i = 0; i < len; i += L)
        store_n(masked_grad<A>(load_n<V>(g + i, len - i), load_n<V>(yr + i0 + i, len - i)), staged + i, len - i);
      g = staged;
    }
    const T* x = xr + i0;
    double t1 = 0, t2 = 0;
#pragma omp simd reduction(+ : t1, t2)
    for (int64_t i = 0; i < len; ++i) {
      const double gi = g[i];
      t1 += gi;
      t2 += gi * (static_cast<double>(x[i]) - m);
    }
    *s1 += t1;
    *s2 += t2;
  }
}

// One row of dx = (dy - mdy - (x - m) * proj) * k, dy masked by the activation A.
template <Activation A, class T>
void backward_row_dx(int64_t s, bool training, const T* gr, const T* xr, const T* yr, T* dr, T m, T mdy, T proj,
                     T k) {
  using V = Vec<T>;
  constexpr int L = V::kWidth;
  const V vk = V::set1(k), vmdy = V::set1(mdy), vproj = V::set1(proj), vm = V::set1(m);
  for (int64_t i = 0; i < s; i += L) {
    const int64_t left = s - i;
    V g = load_n<V>(gr + i, left);
    if constexpr (A != Activation::none) g = masked_grad<A>(g, load_n<V>(yr + i, left));
    if (training) g = V::sub(V::sub(g, vmdy), V::mul(V::sub(load_n<V>(xr + i, left), vm), vproj));
    store_n(V::mul(g, vk), dr + i, left);  // eval never reads x: a NaN there does not reach dx
  }
}

// The backward of channels [c0, c1): the reductions for all of them, then dx.
template <Activation A, class T>
void backward_group(const BatchNormArgs& a, bool training, int64_t c0, int64_t c1, const T* grad_y, const T* x,
                    const T* y, const T* weight, const T* mean, const T* invstd, T* grad_x, T* grad_w, T* grad_b) {
  const int64_t nc = c1 - c0;
  std::vector<double> sums(2 * nc, 0.0);
  double* sum_dy = sums.data();
  double* sum_dy_xmu = sums.data() + nc;
  for (int64_t n = 0; n < a.n; ++n)
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t off = (n * a.c + c) * a.s;
      backward_row_sums<A>(a.s, grad_y + off, x + off, y ? y + off : nullptr, static_cast<double>(mean[c]),
                           sum_dy + (c - c0), sum_dy_xmu + (c - c0));
    }
  for (int64_t c = c0; c < c1; ++c) {
    if (grad_b) grad_b[c] = static_cast<T>(sum_dy[c - c0]);
    if (grad_w) grad_w[c] = static_cast<T>(sum_dy_xmu[c - c0] * static_cast<double>(invstd[c]));
  }
  if (!grad_x) return;
  // training: dx = (dy - mean(dy) - (x - mean) * invstd^2 * mean(dy * (x - mean))) * invstd * w
  // eval:     dx = dy * invstd * w
  const double count = static_cast<double>(a.n * a.s);
  for (int64_t n = 0; n < a.n; ++n)
    for (int64_t c = c0; c < c1; ++c) {
      const double is = invstd[c], w = weight ? weight[c] : 1.0;
      const int64_t off = (n * a.c + c) * a.s;
      backward_row_dx<A>(a.s, training, grad_y + off, x + off, y ? y + off : nullptr, grad_x + off,
                         static_cast<T>(mean[c]), training ? static_cast<T>(sum_dy[c - c0] / count) : T(0),
                         training ? static_cast<T>(is * is * sum_dy_xmu[c - c0] / count) : T(0),
                         static_cast<T>(is * w));
    }
}

}  // namespace

template <class T>
void batch_norm_forward(const BatchNormArgs& a, bool training, const T* x, const T* weight, const T* bias,
                        T* running_mean, T* running_var, T* y, T* save_mean, T* save_invstd, Activation act) {
  const double count = static_cast<double>(a.n * a.s);
  // Training reads a group twice (statistics, then y), so it is kept to the cache
  // budget; eval reads x once, in as long stretches as the threads allow.
  const int64_t bytes = training ? a.n * a.s * static_cast<int64_t>(sizeof(T)) : 0;
  for_each_group(a, bytes, [&](int64_t c0, int64_t c1) {
    const int64_t nc = c1 - c0;
    std::vector<double> sums(2 * nc, 0.0);
    std::vector<T> scale(nc), shift(nc);
    if (training) {
      // Sums shifted by each channel's first value, so the variance does not cancel.
      for (int64_t n = 0; n < a.n; ++n)
        for (int64_t c = c0; c < c1; ++c) {
          const T* xr = x + (n * a.c + c) * a.s;
          const double sh = count > 0 ? static_cast<double>(x[c * a.s]) : 0.0;
          double s1 = 0, s2 = 0;
#pragma omp simd reduction(+ : s1, s2)
          for (int64_t i = 0; i < a.s; ++i) {
            const double d = static_cast<double>(xr[i]) - sh;
            s1 += d;
            s2 += d * d;
          }
          sums[c - c0] += s1;
          sums[nc + c - c0] += s2;
        }
    }
    for (int64_t c = c0; c < c1; ++c) {
      double mean, invstd;
      if (training) {
        const double sh = count > 0 ? static_cast<double>(x[c * a.s]) : 0.0;
        const double dm = sums[c - c0] / count;
        const double raw = sums[nc + c - c0] / count - dm * dm;
        const double var = raw < 0.0 ? 0.0 : raw;  // rounding below 0 is clamped; NaN (from NaN/Inf input) stays
        mean = sh + dm;
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
      scale[c - c0] = static_cast<T>(w * invstd);
      shift[c - c0] = static_cast<T>(b - mean * w * invstd);
    }
    for (int64_t n = 0; n < a.n; ++n)
      for (int64_t c = c0; c < c1; ++c) {
        const int64_t off = (n * a.c + c) * a.s;
        scale_shift_row(a.s, x + off, y + off, scale[c - c0], shift[c - c0], act);
      }
  });
}

template <class T>
void batch_norm_backward(const BatchNormArgs& a, bool training, const T* grad_y, const T* x, const T* weight,
                         const T* mean, const T* invstd, T* grad_x, T* grad_w, T* grad_b, Activation act,
                         const T* y) {
  // A group is read twice (the reductions, then dx): grad_y and x, and y with an activation.
  const int64_t bytes = a.n * a.s * static_cast<int64_t>(sizeof(T)) * (act == Activation::none ? 2 : 3);
  for_each_group(a, bytes, [&](int64_t c0, int64_t c1) {
    switch (act) {
      case Activation::relu:
        backward_group<Activation::relu>(a, training, c0, c1, grad_y, x, y, weight, mean, invstd, grad_x, grad_w,
                                         grad_b);
        break;
      case Activation::relu6:
        backward_group<Activation::relu6>(a, training, c0, c1, grad_y, x, y, weight, mean, invstd, grad_x, grad_w,
                                          grad_b);
        break;
      default:
        backward_group<Activation::none>(a, training, c0, c1, grad_y, x, y, weight, mean, invstd, grad_x, grad_w,
                                         grad_b);
    }
  });
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
