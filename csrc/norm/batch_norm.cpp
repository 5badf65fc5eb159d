// BatchNorm, float and double. Groups of consecutive channels are split across
// threads; each pass over a group streams, for each n, its channels' rows. Sums
// are accumulated in double (shifted by the channel's first value for the
// variance), so float32 statistics stay accurate on large batches.
#include "norm/batch_norm.h"

#include <omp.h>

#include <cmath>
#include <type_traits>
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

// Channel c's dx = (dy - mdy - (x - m) * proj) * k, from its sums of dy and dy * (x - mean):
//   training: dx = (dy - mean(dy) - (x - mean) * invstd^2 * mean(dy * (x - mean))) * invstd * w
//   eval:     dx = dy * invstd * w
// Writes the channel's grad_w and grad_b (either may be null) on the way.
template <class T>
struct DxCoefficients {
  T m, mdy, proj, k;
};

template <class T>
DxCoefficients<T> channel_backward(const BatchNormArgs& a, bool training, int64_t c, double sum_dy, double sum_dy_xmu,
                                   const T* weight, const T* mean, const T* invstd, T* grad_w, T* grad_b) {
  const double count = static_cast<double>(a.n * a.s), is = invstd[c], w = weight ? weight[c] : 1.0;
  if (grad_b) grad_b[c] = static_cast<T>(sum_dy);
  if (grad_w) grad_w[c] = static_cast<T>(sum_dy_xmu * is);
  return {mean[c], training ? static_cast<T>(sum_dy / count) : T(0),
          training ? static_cast<T>(is * is * sum_dy_xmu / count) : T(0), static_cast<T>(is * w)};
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
  std::vector<DxCoefficients<T>> co(nc);
  for (int64_t c = c0; c < c1; ++c)
    co[c - c0] = channel_backward(a, training, c, sum_dy[c - c0], sum_dy_xmu[c - c0], weight, mean, invstd, grad_w,
                                  grad_b);
  if (!grad_x) return;
  for (int64_t n = 0; n < a.n; ++n)
    for (int64_t c = c0; c < c1; ++c) {
      const DxCoefficients<T>& d = co[c - c0];
      const int64_t off = (n * a.c + c) * a.s;
      backward_row_dx<A>(a.s, training, grad_y + off, x + off, y ? y + off : nullptr, grad_x + off, d.m, d.mdy,
                         d.proj, d.k);
    }
}

// Channel c's y = x * scale + shift. Training: from its batch sums of (x - first)
// and (x - first)^2 (first: the channel's first value, so the variance does not
// cancel), writing the saved statistics and updating the running ones with the
// unbiased variance; eval: from the running statistics.
template <class T>
void channel_affine(const BatchNormArgs& a, bool training, int64_t c, double first, double sum, double sumsq,
                    const T* weight, const T* bias, T* running_mean, T* running_var, T* save_mean, T* save_invstd,
                    T* scale, T* shift) {
  double mean, invstd;
  if (training) {
    const double count = static_cast<double>(a.n * a.s);
    const double dm = sum / count;
    const double raw = sumsq / count - dm * dm;
    const double var = raw < 0.0 ? 0.0 : raw;  // rounding below 0 is clamped; NaN (from NaN/Inf input) stays
    mean = first + dm;
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
  *scale = static_cast<T>(w * invstd);
  *shift = static_cast<T>(b - mean * w * invstd);
}

// Short rows ((N, C) and (N, C, small L) inputs). A row of s values is too short
// for the channel-group passes (a call and a masked vector per few values), so
// these passes run over whole samples instead: sample n's c * s values are one
// contiguous run, and every value position ("column") j belongs to channel j / s.
// Threads split the samples; the sums are kept per column in double, one set per
// thread, and then folded into channels; the per-element passes read per-column
// coefficients. Those per-column arrays cost O(c * s) per call, which a few
// samples do not repay once rows hold 8 values: measured on (N, C, L) with
// L = 1 to 32 (BatchNorm1d on (4096, 1024): 16-23x faster than channel groups;
// (8, 1024, 8): 1.8x slower forward).
inline bool short_rows(const BatchNormArgs& a) { return a.s < 8 || (a.s < 32 && a.n >= 32); }

// Calls fn(thread, n0, n1) for each thread's contiguous range of samples.
template <class Fn>
void for_each_sample_range(const BatchNormArgs& a, int threads, Fn fn) {
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    fn(t, a.n * t / nt, a.n * (t + 1) / nt);
  }
}

// Folds per-thread, per-column sums (threads x 2 x cols) into per-channel ones (2 x c).
inline std::vector<double> fold_columns(const BatchNormArgs& a, const std::vector<double>& cols, int threads) {
  const int64_t n_cols = a.c * a.s;
  std::vector<double> out(2 * a.c, 0.0);
  for (int t = 0; t < threads; ++t)
    for (int k = 0; k < 2; ++k)
      for (int64_t j = 0; j < n_cols; ++j) out[k * a.c + j / a.s] += cols[(2 * t + k) * n_cols + j];
  return out;
}

template <class T>
void forward_short_rows(const BatchNormArgs& a, bool training, const T* x, const T* weight, const T* bias,
                        T* running_mean, T* running_var, T* y, T* save_mean, T* save_invstd, Activation act) {
  using V = Vec<T>;
  constexpr int L = V::kWidth;
  const int threads = bn_threads(a);
  const int64_t cols = a.c * a.s;
  const double count = static_cast<double>(a.n * a.s);
  std::vector<double> sums;
  std::vector<double> first(cols, 0.0);  // each column's channel's first value: the variance's shift
  if (training) {
    if (count > 0)
      for (int64_t j = 0; j < cols; ++j) first[j] = static_cast<double>(x[(j / a.s) * a.s]);
    std::vector<double> per(2 * threads * cols, 0.0);
    for_each_sample_range(a, threads, [&](int t, int64_t n0, int64_t n1) {
      double* s1 = per.data() + 2 * t * cols;
      double* s2 = s1 + cols;
      const double* sh = first.data();
      for (int64_t n = n0; n < n1; ++n) {
        const T* xr = x + n * cols;
#pragma omp simd
        for (int64_t j = 0; j < cols; ++j) {
          const double d = static_cast<double>(xr[j]) - sh[j];
          s1[j] += d;
          s2[j] += d * d;
        }
      }
    });
    sums = fold_columns(a, per, threads);
  }
  std::vector<T> scale(cols), shift(cols);
  for (int64_t c = 0; c < a.c; ++c) {
    T sc, sh;
    channel_affine(a, training, c, training ? first[c * a.s] : 0.0, training ? sums[c] : 0.0,
                   training ? sums[a.c + c] : 0.0, weight, bias, running_mean, running_var, save_mean, save_invstd,
                   &sc, &sh);
    for (int64_t i = 0; i < a.s; ++i) {
      scale[c * a.s + i] = sc;
      shift[c * a.s + i] = sh;
    }
  }
  for_each_sample_range(a, threads, [&](int, int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n)
      for (int64_t j = 0; j < cols; j += L) {
        const int64_t left = cols - j;
        const V v = V::fmadd(load_n<V>(x + n * cols + j, left), load_n<V>(scale.data() + j, left),
                             load_n<V>(shift.data() + j, left));
        store_n(apply_activation(v, act), y + n * cols + j, left);
      }
  });
}

template <Activation A, class T>
void backward_short_rows(const BatchNormArgs& a, bool training, const T* grad_y, const T* x, const T* weight,
                         const T* mean, const T* invstd, T* grad_x, T* grad_w, T* grad_b, const T* y) {
  using V = Vec<T>;
  constexpr int L = V::kWidth;
  const int threads = bn_threads(a);
  const int64_t cols = a.c * a.s;
  std::vector<double> mcol(cols);
  for (int64_t j = 0; j < cols; ++j) mcol[j] = static_cast<double>(mean[j / a.s]);
  // sum(dy) and sum(dy * (x - mean)) per column, dy masked by the activation.
  std::vector<double> per(2 * threads * cols, 0.0);
  for_each_sample_range(a, threads, [&](int t, int64_t n0, int64_t n1) {
    double* s1 = per.data() + 2 * t * cols;
    double* s2 = s1 + cols;
    const double* m = mcol.data();
    std::vector<T> staged(A == Activation::none ? 0 : cols);  // a sample's masked grad_y
    for (int64_t n = n0; n < n1; ++n) {
      const T* gr = grad_y + n * cols;
      const T* xr = x + n * cols;
      if constexpr (A != Activation::none) {
        for (int64_t j = 0; j < cols; j += L)
          store_n(masked_grad<A>(load_n<V>(gr + j, cols - j), load_n<V>(y + n * cols + j, cols - j)),
                  staged.data() + j, cols - j);
        gr = staged.data();
      }
#pragma omp simd
      for (int64_t j = 0; j < cols; ++j) {
        const double g = gr[j];
        s1[j] += g;
        s2[j] += g * (static_cast<double>(xr[j]) - m[j]);
      }
    }
  });
  const std::vector<double> sums = fold_columns(a, per, threads);
  // Per-column copies of each channel's dx coefficients, for the vector loop below.
  const int64_t coef_cols = grad_x ? cols : 0;
  std::vector<T> k(coef_cols), mdy(coef_cols), proj(coef_cols), m(coef_cols);
  for (int64_t c = 0; c < a.c; ++c) {
    const DxCoefficients<T> d = channel_backward(a, training, c, sums[c], sums[a.c + c], weight, mean, invstd, grad_w,
                                                 grad_b);
    if (!grad_x) continue;
    for (int64_t j = c * a.s; j < (c + 1) * a.s; ++j) {
      k[j] = d.k;
      m[j] = d.m;
      mdy[j] = d.mdy;
      proj[j] = d.proj;
    }
  }
  if (!grad_x) return;
  for_each_sample_range(a, threads, [&](int, int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n)
      for (int64_t j = 0; j < cols; j += L) {
        const int64_t left = cols - j, off = n * cols + j;
        V g = load_n<V>(grad_y + off, left);
        if constexpr (A != Activation::none) g = masked_grad<A>(g, load_n<V>(y + off, left));
        if (training) {
          const V xc = V::sub(load_n<V>(x + off, left), load_n<V>(m.data() + j, left));
          g = V::sub(V::sub(g, load_n<V>(mdy.data() + j, left)), V::mul(xc, load_n<V>(proj.data() + j, left)));
        }
        store_n(V::mul(g, load_n<V>(k.data() + j, left)), grad_x + off, left);  // eval never reads x
      }
  });
}

}  // namespace

template <class T>
void batch_norm_forward(const BatchNormArgs& a, bool training, const T* x, const T* weight, const T* bias,
                        T* running_mean, T* running_var, T* y, T* save_mean, T* save_invstd, Activation act) {
  if (short_rows(a))
    return forward_short_rows(a, training, x, weight, bias, running_mean, running_var, y, save_mean, save_invstd,
                              act);
  if (!training) {
    // Eval reads x once: rows in memory order, one contiguous range per thread (in-process
    // A/B against walking groups n-major: 1.04-1.10x from 7x7 to 112x112 planes at batch 8).
    std::vector<T> scale(a.c), shift(a.c);
    const int threads = bn_threads(a);
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
#pragma omp for schedule(static)
      for (int64_t c = 0; c < a.c; ++c)
        channel_affine(a, false, c, 0.0, 0.0, 0.0, weight, bias, running_mean, running_var, save_mean, save_invstd,
                       &scale[c], &shift[c]);
#pragma omp for schedule(static)
      for (int64_t r = 0; r < a.n * a.c; ++r)
        scale_shift_row(a.s, x + r * a.s, y + r * a.s, scale[r % a.c], shift[r % a.c], act);
    }
    return;
  }
  // Training reads a group twice (statistics, then y), so it is kept to the cache budget.
  const int64_t bytes = a.n * a.s * static_cast<int64_t>(sizeof(T));
  const bool any = a.n * a.s > 0;
  for_each_group(a, bytes, [&](int64_t c0, int64_t c1) {
    const int64_t nc = c1 - c0;
    std::vector<double> sums(2 * nc, 0.0);
    std::vector<T> scale(nc), shift(nc);
    // Sums shifted by each channel's first value, so the variance does not cancel.
    for (int64_t n = 0; n < a.n; ++n)
      for (int64_t c = c0; c < c1; ++c) {
        const T* xr = x + (n * a.c + c) * a.s;
        const double sh = any ? static_cast<double>(x[c * a.s]) : 0.0;
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
    for (int64_t c = c0; c < c1; ++c)
      channel_affine(a, true, c, any ? static_cast<double>(x[c * a.s]) : 0.0, sums[c - c0], sums[nc + c - c0],
                     weight, bias, running_mean, running_var, save_mean, save_invstd, &scale[c - c0],
                     &shift[c - c0]);
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
  // The backward compiled per activation A (tag: std::integral_constant<Activation, A>).
  auto run = [&](auto tag) {
    constexpr Activation A = decltype(tag)::value;
    if (short_rows(a))
      return backward_short_rows<A>(a, training, grad_y, x, weight, mean, invstd, grad_x, grad_w, grad_b, y);
    // A group is read twice (the reductions, then dx): grad_y and x, and y with an activation.
    const int64_t bytes = a.n * a.s * static_cast<int64_t>(sizeof(T)) * (A == Activation::none ? 2 : 3);
    for_each_group(a, bytes, [&](int64_t c0, int64_t c1) {
      backward_group<A>(a, training, c0, c1, grad_y, x, y, weight, mean, invstd, grad_x, grad_w, grad_b);
    });
  };
  switch (act) {
    case Activation::relu:
      return run(std::integral_constant<Activation, Activation::relu>());
    case Activation::relu6:
      return run(std::integral_constant<Activation, Activation::relu6>());
    default:
      return run(std::integral_constant<Activation, Activation::none>());
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
