// Element-wise ops, softmax, cross-entropy and dropout, float and double:
// parallel over large ranges, vectorisable inner loops.
#include "eltwise/eltwise.h"

#include "simd/vec_math.h"

#include <omp.h>

#include <atomic>
#include <cmath>
#include <limits>
#include <vector>

namespace fastconv {
namespace FC_NS {

namespace {

constexpr int64_t kGrain = 1 << 15;  // elements below which one thread does the work

int threads_for(int64_t work, int threads) { return work < kGrain ? 1 : threads; }

// Runs body(begin, end) over [0, n) in contiguous per-thread chunks.
template <class Body>
void parallel_range(int64_t n, int threads, Body body) {
  const int t = threads_for(n, threads);
  if (t <= 1) {
    body(int64_t(0), n);
    return;
  }
#pragma omp parallel num_threads(t)
  {
    const int64_t per = ceil_div(n, t), begin = imin(n, omp_get_thread_num() * per);
    body(begin, imin(n, begin + per));
  }
}

// y[i] = f(x[i]) for i in [b, e), a vector at a time.
template <class T, class F>
inline void map_vec(int64_t b, int64_t e, const T* x, T* y, F f) {
  using V = Vec<T>;
  int64_t i = b;
  for (; i + V::kWidth <= e; i += V::kWidth) f(V::load(x + i)).store(y + i);
  if (i < e) {
    const int rest = static_cast<int>(e - i);
    f(V::load_partial(x + i, rest)).store_partial(y + i, rest);
  }
}

// z[i] = f(x[i], y[i]) for i in [b, e).
template <class T, class F>
inline void map_vec2(int64_t b, int64_t e, const T* x, const T* y, T* z, F f) {
  using V = Vec<T>;
  int64_t i = b;
  for (; i + V::kWidth <= e; i += V::kWidth) f(V::load(x + i), V::load(y + i)).store(z + i);
  if (i < e) {
    const int rest = static_cast<int>(e - i);
    f(V::load_partial(x + i, rest), V::load_partial(y + i, rest)).store_partial(z + i, rest);
  }
}

constexpr double kSqrt1_2 = 0.70710678118654752440;
constexpr double kSqrt2_Pi = 0.79788456080286535588;
constexpr double kInvSqrt2Pi = 0.39894228040143267794;

// sqrt(2 / pi) * (x + 0.044715 x^3), the argument of tanh in GELU's tanh form.
template <class V>
inline V gelu_tanh_inner(V x) {
  using S = typename V::Scalar;
  const V x2 = V::mul(x, x);
  return V::mul(V::set1(S(kSqrt2_Pi)), V::fmadd(V::mul(x2, x), V::set1(S(0.044715)), x));
}

}  // namespace

template <class T>
void activation_forward(EltwiseKind kind, int64_t n, const T* x, T* y, double alpha, int threads) {
  using V = Vec<T>;
  const T al = static_cast<T>(alpha);
  parallel_range(n, threads, [&](int64_t b, int64_t e) {
    switch (kind) {
      case EltwiseKind::relu:
#pragma omp simd
        for (int64_t i = b; i < e; ++i) y[i] = x[i] < T(0) ? T(0) : x[i];  // NaN stays NaN
        break;
      case EltwiseKind::relu6:
#pragma omp simd
        for (int64_t i = b; i < e; ++i) y[i] = x[i] < T(0) ? T(0) : (x[i] > T(6) ? T(6) : x[i]);
        break;
      case EltwiseKind::leaky_relu:
#pragma omp simd
        for (int64_t i = b; i < e; ++i) y[i] = x[i] < T(0) ? x[i] * al : x[i];
        break;
      case EltwiseKind::sigmoid:
        map_vec(b, e, x, y, [](V v) { return vsigmoid(v); });
        break;
      case EltwiseKind::tanh:
        map_vec(b, e, x, y, [](V v) { return vtanh(v); });
        break;
      case EltwiseKind::gelu:
        map_vec(b, e, x, y, [](V v) { return V::mul(v, vnormal_cdf(v)); });
        break;
      case EltwiseKind::gelu_tanh:
        map_vec(b, e, x, y, [](V v) {
          const V half_v = V::mul(V::set1(T(0.5)), v);
          return V::fmadd(half_v, vtanh(gelu_tanh_inner(v)), half_v);
        });
        break;
    }
  });
}

template <class T>
void activation_backward(EltwiseKind kind, int64_t n, const T* s, const T* g, T* gx, double alpha, int threads) {
  using V = Vec<T>;
  const T al = static_cast<T>(alpha);
  parallel_range(n, threads, [&](int64_t b, int64_t e) {
    switch (kind) {
      case EltwiseKind::relu:
#pragma omp simd
        for (int64_t i = b; i < e; ++i) {
          const T gi = g[i];  // loaded unconditionally so the select vectorises
          gx[i] = s[i] > T(0) ? gi : T(0);
        }
        break;
      case EltwiseKind::relu6:
#pragma omp simd
        for (int64_t i = b; i < e; ++i) {
          const T gi = g[i], si = s[i];
          gx[i] = (si > T(0) && si < T(6)) ? gi : T(0);
        }
        break;
      case EltwiseKind::leaky_relu:
#pragma omp simd
        for (int64_t i = b; i < e; ++i) {
          const T gi = g[i];
          gx[i] = s[i] > T(0) ? gi : gi * al;
        }
        break;
      case EltwiseKind::sigmoid:
#pragma omp simd
        for (int64_t i = b; i < e; ++i) gx[i] = g[i] * s[i] * (T(1) - s[i]);
        break;
      case EltwiseKind::tanh:
#pragma omp simd
        for (int64_t i = b; i < e; ++i) gx[i] = g[i] * (T(1) - s[i] * s[i]);
        break;
      case EltwiseKind::gelu:
        // g * (Phi(x) + x * phi(x)), phi(x) = e^(-x^2 / 2) / sqrt(2 pi).
        map_vec2(b, e, s, g, gx, [](V x, V gi) {
          const V pdf = V::mul(V::set1(T(kInvSqrt2Pi)), vexp(V::mul(V::set1(T(-0.5)), V::mul(x, x))));
          return V::mul(gi, V::fmadd(x, pdf, vnormal_cdf(x)));
        });
        break;
      case EltwiseKind::gelu_tanh:
        map_vec2(b, e, s, g, gx, [](V x, V gi) {
          const V one = V::set1(T(1)), half = V::set1(T(0.5));
          const V t = vtanh(gelu_tanh_inner(x));
          const V dinner = V::mul(V::set1(T(kSqrt2_Pi)), V::fmadd(V::mul(x, x), V::set1(T(3 * 0.044715)), one));
          // 0.5 (1 + t) + 0.5 x (1 - t^2) dinner
          const V slope = V::mul(V::mul(half, x), V::mul(V::sub(one, V::mul(t, t)), dinner));
          return V::mul(gi, V::fmadd(half, V::add(one, t), slope));
        });
        break;
    }
  });
}

namespace {

// max over x[0 .. n). NaNs are skipped here; they reach the result through the
// sum of exponentials, which they make NaN.
template <class T>
T row_max(const T* x, int64_t n) {
  using V = Vec<T>;
  V m = V::set1(-std::numeric_limits<T>::infinity());
  int64_t d = 0;
  for (; d + V::kWidth <= n; d += V::kWidth) m = V::max(V::load(x + d), m);
  T r = reduce_max(m);
  for (; d < n; ++d) r = x[d] > r ? x[d] : r;
  return r;
}

// sum of e^(x[d] - m) over x[0 .. n); the terms go to y unless it is null.
template <class T>
T row_sum_exp(const T* x, int64_t n, T m, T* y) {
  using V = Vec<T>;
  const V vm = V::set1(m);
  V acc = V::zero();
  int64_t d = 0;
  for (; d + V::kWidth <= n; d += V::kWidth) {
    const V e = vexp(V::sub(V::load(x + d), vm));
    if (y) e.store(y + d);
    acc = V::add(acc, e);
  }
  T s = reduce_add(acc);
  if (d < n) {
    const int rest = static_cast<int>(n - d);
    alignas(64) T tail[V::kWidth];
    vexp(V::sub(V::load_partial(x + d, rest), vm)).store(tail);
    for (int k = 0; k < rest; ++k) {
      if (y) y[d + k] = tail[k];
      s += tail[k];
    }
  }
  return s;
}

template <class T>
T row_logsumexp(const T* x, int64_t n) {
  const T m = row_max(x, n);
  return std::isinf(m) ? m : m + std::log(row_sum_exp(x, n, m, static_cast<T*>(nullptr)));
}

// Softmax of one contiguous row: the (outer, dim, 1) layout.
template <class T>
void softmax_row(const T* x, T* y, int64_t dim, bool log) {
  using V = Vec<T>;
  const T m = row_max(x, dim);
  if (log) {
    const V lse = V::set1(m + std::log(row_sum_exp(x, dim, m, static_cast<T*>(nullptr))));
    map_vec(0, dim, x, y, [&](V v) { return V::sub(v, lse); });
  } else {
    const V inv = V::set1(T(1) / row_sum_exp(x, dim, m, y));
    map_vec(0, dim, y, y, [&](V v) { return V::mul(v, inv); });
  }
}

// Softmax over d of x[d * inner + i] for `lanes` (up to NV vectors) neighbouring i
// at once: the (outer, dim, inner > 1) layout, vectors across the inner axis.
template <class T, int NV>
void softmax_lanes(const T* x, T* y, int64_t dim, int64_t inner, int lanes, bool log) {
  using V = Vec<T>;
  constexpr int L = V::kWidth;
  const int nv = static_cast<int>(ceil_div(lanes, L));
  V m[NV], sum[NV];
  for (int v = 0; v < NV; ++v) {
    m[v] = V::set1(-std::numeric_limits<T>::infinity());
    sum[v] = V::zero();
  }
  for (int64_t d = 0; d < dim; ++d)
    for (int v = 0; v < NV; ++v)
      if (v < nv) m[v] = V::max(load_n<V>(x + d * inner + v * L, lanes - v * L), m[v]);
  for (int64_t d = 0; d < dim; ++d)
    for (int v = 0; v < NV; ++v)
      if (v < nv) {
        const V e = vexp(V::sub(load_n<V>(x + d * inner + v * L, lanes - v * L), m[v]));
        if (!log) store_n(e, y + d * inner + v * L, lanes - v * L);
        sum[v] = V::add(sum[v], e);
      }
  for (int v = 0; v < NV; ++v) {
    if (v >= nv) break;
    const int n = lanes - v * L;
    if (log) {
      const V lse = V::add(m[v], lanewise(sum[v], [](T s) { return std::log(s); }));
      for (int64_t d = 0; d < dim; ++d)
        store_n(V::sub(load_n<V>(x + d * inner + v * L, n), lse), y + d * inner + v * L, n);
    } else {
      const V inv = V::div(V::set1(T(1)), sum[v]);
      for (int64_t d = 0; d < dim; ++d)
        store_n(V::mul(load_n<V>(y + d * inner + v * L, n), inv), y + d * inner + v * L, n);
    }
  }
}

// The softmax backward over d for `lanes` (up to NV vectors) neighbouring i (stride
// `inner` along d; inner = 1 is not used: rows take softmax_backward_row).
template <class T, int NV>
void softmax_backward_lanes(const T* y, const T* g, T* gx, int64_t dim, int64_t inner, int lanes, bool log) {
  using V = Vec<T>;
  constexpr int L = V::kWidth;
  const int nv = static_cast<int>(ceil_div(lanes, L));
  V acc[NV];
  for (int v = 0; v < NV; ++v) acc[v] = V::zero();
  for (int64_t d = 0; d < dim; ++d)
    for (int v = 0; v < NV; ++v)
      if (v < nv) {
        const int64_t at = d * inner + v * L;
        const V gd = load_n<V>(g + at, lanes - v * L);
        acc[v] = log ? V::add(acc[v], gd) : V::fmadd(gd, load_n<V>(y + at, lanes - v * L), acc[v]);
      }
  for (int64_t d = 0; d < dim; ++d)
    for (int v = 0; v < NV; ++v)
      if (v < nv) {
        const int64_t at = d * inner + v * L;
        const V yd = load_n<V>(y + at, lanes - v * L), gd = load_n<V>(g + at, lanes - v * L);
        const V r = log ? V::sub(gd, V::mul(vexp(yd), acc[v])) : V::mul(yd, V::sub(gd, acc[v]));
        store_n(r, gx + at, lanes - v * L);
      }
}

template <class T>
void softmax_backward_row(const T* y, const T* g, T* gx, int64_t dim, bool log) {
  using V = Vec<T>;
  V acc = V::zero();
  int64_t d = 0;
  for (; d + V::kWidth <= dim; d += V::kWidth)
    acc = log ? V::add(acc, V::load(g + d)) : V::fmadd(V::load(g + d), V::load(y + d), acc);
  T sum = reduce_add(acc);
  for (; d < dim; ++d) sum += log ? g[d] : g[d] * y[d];
  const V s = V::set1(sum);
  if (log) {
    map_vec2(0, dim, y, g, gx, [&](V yd, V gd) { return V::sub(gd, V::mul(vexp(yd), s)); });
  } else {
    map_vec2(0, dim, y, g, gx, [&](V yd, V gd) { return V::mul(yd, V::sub(gd, s)); });
  }
}

// Runs fn(o, i0, lanes) over every outer index and block of inner indices (NV
// vectors wide), in parallel.
template <class T, class F, int NV = 1>
void for_each_softmax_block(int64_t outer, int64_t dim, int64_t inner, int threads, F fn) {
  constexpr int L = Vec<T>::kWidth * NV;
  const int64_t blocks = inner == 1 ? 1 : ceil_div(inner, L);
  const int t = threads_for(outer * dim * inner, threads);
#pragma omp parallel for num_threads(t) schedule(static) if (t > 1)
  for (int64_t job = 0; job < outer * blocks; ++job) {
    const int64_t o = job / blocks, i0 = (job % blocks) * L;
    fn(o, i0, static_cast<int>(imin(L, inner - i0)));
  }
}

}  // namespace

// With inner > 1, a job takes 4 vectors of neighbouring positions: 4 cache lines of
// each class row at once (one vector per job measured 1.1x-1.8x slower on
// (8, 21, 128, 128) and (32, 10, 64, 64)).
template <class T>
void softmax_forward(int64_t outer, int64_t dim, int64_t inner, const T* x, T* y, bool log, int threads) {
  constexpr int NV = 4;
  auto fn = [&](int64_t o, int64_t i0, int lanes) {
    const int64_t base = o * dim * inner + i0;
    if (inner == 1) {
      softmax_row(x + base, y + base, dim, log);
    } else {
      softmax_lanes<T, NV>(x + base, y + base, dim, inner, lanes, log);
    }
  };
  for_each_softmax_block<T, decltype(fn), NV>(outer, dim, inner, threads, fn);
}

template <class T>
void softmax_backward(int64_t outer, int64_t dim, int64_t inner, const T* y, const T* g, T* gx, bool log,
                      int threads) {
  constexpr int NV = 4;
  auto fn = [&](int64_t o, int64_t i0, int lanes) {
    const int64_t base = o * dim * inner + i0;
    if (inner == 1) {
      softmax_backward_row(y + base, g + base, gx + base, dim, log);
    } else {
      softmax_backward_lanes<T, NV>(y + base, g + base, gx + base, dim, inner, lanes, log);
    }
  };
  for_each_softmax_block<T, decltype(fn), NV>(outer, dim, inner, threads, fn);
}

namespace {

// log-sum-exp of one sample's c logits (stride `inner`).
template <class T>
T logsumexp(const T* z, int64_t c, int64_t inner) {
  if (inner == 1) return row_logsumexp(z, c);
  T m = -std::numeric_limits<T>::infinity();
  for (int64_t k = 0; k < c; ++k) m = std::fmax(m, z[k * inner]);
  if (!std::isfinite(m)) return m;
  T s = 0;
  for (int64_t k = 0; k < c; ++k) s += std::exp(z[k * inner] - m);
  return m + std::log(s);
}


// One sample's loss: (1 - eps) * (lse - z[target]) + eps / c * sum_k (lse - z[k]).
template <class T>
T sample_loss(const T* z, int64_t c, int64_t inner, int64_t tg, T eps) {
  const T lse = logsumexp(z, c, inner);
  T l = (T(1) - eps) * (lse - z[tg * inner]);
  if (eps != T(0)) {
    T sum = 0;
    for (int64_t k = 0; k < c; ++k) sum += lse - z[k * inner];
    l += eps / T(c) * sum;
  }
  return l;
}

// One sample's gradient, g * (softmax - (1 - eps) * onehot(target) - eps / c).
template <class T>
void sample_grad(const T* z, T* gz, int64_t c, int64_t inner, int64_t tg, T g, T eps) {
  using V = Vec<T>;
  const T floor = eps / T(c);
  const T m = inner == 1 ? row_max(z, c) : T(0);
  if (inner == 1 && std::isfinite(m)) {
    // One exponential per logit: the terms e^(z - max) go to gz on the way to their
    // sum, which then scales them in place (p = e^(z - max) / sum).
    const V scale = V::set1(g / row_sum_exp(z, c, m, gz)), shift = V::set1(-floor * g);
    map_vec(0, c, gz, gz, [&](V e) { return V::fmadd(e, scale, shift); });
  } else {
    const T lse = logsumexp(z, c, inner);
    for (int64_t k = 0; k < c; ++k) gz[k * inner] = (std::exp(z[k * inner] - lse) - floor) * g;
  }
  gz[tg * inner] -= (T(1) - eps) * g;
}

// The per-lane maxima over the c classes of `lanes` neighbouring samples (stride
// `inner` between classes), or false where a lane's maximum is not finite (the
// per-sample code then keeps its special cases).
template <class T>
bool lanes_max(const T* z, int64_t c, int64_t inner, int lanes, Vec<T>* m) {
  using V = Vec<T>;
  V v = V::set1(-std::numeric_limits<T>::infinity());
  for (int64_t k = 0; k < c; ++k) v = V::max(load_n<V>(z + k * inner, lanes), v);
  alignas(64) T buf[V::kWidth];
  v.store(buf);
  for (int l = 0; l < lanes; ++l)
    if (!std::isfinite(buf[l])) return false;
  *m = v;
  return true;
}

bool valid_target(int64_t tg, int64_t c, int64_t ignore_index) { return tg != ignore_index && tg >= 0 && tg < c; }

}  // namespace

// With inner > 1 (class scores of an (N, C, d1, ...) input), `lanes` neighbouring
// samples of an image go at once, a vector across the inner axis: class k's logits
// for them are contiguous. (Sample by sample, a loss walked the classes with stride
// `inner`, one scalar exponential at a time: 7x slower than PyTorch on
// (8, 21, 128, 128).)
template <class T>
bool cross_entropy_forward(int64_t n, int64_t c, int64_t inner, const T* logits, const int64_t* target, T* loss,
                           int64_t ignore_index, double label_smoothing, int threads) {
  using V = Vec<T>;
  const T eps = static_cast<T>(label_smoothing);
  bool ok = true;
  if (inner > 1) {
    std::atomic<bool> all_valid{true};
    for_each_softmax_block<T>(n, c, inner, threads, [&](int64_t b, int64_t i0, int lanes) {
      const T* zb = logits + b * c * inner + i0;
      alignas(64) T lse[V::kWidth], zsum[V::kWidth];
      V m;
      const bool fast = lanes_max(zb, c, inner, lanes, &m);
      if (fast) {
        V s = V::zero(), zs = V::zero();
        for (int64_t k = 0; k < c; ++k) {
          const V v = load_n<V>(zb + k * inner, lanes);
          s = V::add(s, vexp(V::sub(v, m)));
          zs = V::add(zs, v);
        }
        V::add(m, lanewise(s, [](T v) { return std::log(v); })).store(lse);
        zs.store(zsum);
      }
      for (int l = 0; l < lanes; ++l) {
        const int64_t smp = b * inner + i0 + l, tg = target[smp];
        if (!valid_target(tg, c, ignore_index)) {
          if (tg != ignore_index) all_valid.store(false, std::memory_order_relaxed);
          loss[smp] = 0;
        } else if (!fast) {
          loss[smp] = sample_loss(zb + l, c, inner, tg, eps);
        } else {
          T v = (T(1) - eps) * (lse[l] - zb[tg * inner + l]);
          if (eps != T(0)) v += eps / T(c) * (T(c) * lse[l] - zsum[l]);
          loss[smp] = v;
        }
      }
    });
    return all_valid.load();
  }
  const int t = threads_for(n * c * inner, threads);
#pragma omp parallel for num_threads(t) schedule(static) reduction(&& : ok) if (t > 1)
  for (int64_t s = 0; s < n; ++s) {
    const int64_t tg = target[s];
    if (!valid_target(tg, c, ignore_index)) {
      if (tg != ignore_index) ok = false;
      loss[s] = 0;
      continue;
    }
    loss[s] = sample_loss(logits + s * c, c, int64_t(1), tg, eps);
  }
  return ok;
}

template <class T>
void cross_entropy_backward(int64_t n, int64_t c, int64_t inner, const T* logits, const int64_t* target,
                            const T* grad_loss, T* grad_logits, int64_t ignore_index, double label_smoothing,
                            int threads) {
  using V = Vec<T>;
  const T eps = static_cast<T>(label_smoothing);
  if (inner > 1) {
    // As the forward, a vector across the inner axis; the terms e^(z - max) go to
    // grad_logits on the way to their sum and are then scaled in place.
    for_each_softmax_block<T>(n, c, inner, threads, [&](int64_t b, int64_t i0, int lanes) {
      const T* zb = logits + b * c * inner + i0;
      T* gb = grad_logits + b * c * inner + i0;
      V m;
      if (!lanes_max(zb, c, inner, lanes, &m)) {
        for (int l = 0; l < lanes; ++l) {
          const int64_t smp = b * inner + i0 + l, tg = target[smp];
          if (valid_target(tg, c, ignore_index))
            sample_grad(zb + l, gb + l, c, inner, tg, grad_loss[smp], eps);
          else
            for (int64_t k = 0; k < c; ++k) gb[k * inner + l] = 0;
        }
        return;
      }
      alignas(64) T g[V::kWidth] = {};
      for (int l = 0; l < lanes; ++l) {
        const int64_t smp = b * inner + i0 + l;
        g[l] = valid_target(target[smp], c, ignore_index) ? grad_loss[smp] : T(0);
      }
      V s = V::zero();
      for (int64_t k = 0; k < c; ++k) {
        const V e = vexp(V::sub(load_n<V>(zb + k * inner, lanes), m));
        store_n(e, gb + k * inner, lanes);
        s = V::add(s, e);
      }
      const V vg = V::load(g), scale = V::div(vg, s), shift = V::mul(V::set1(-eps / T(c)), vg);
      for (int64_t k = 0; k < c; ++k)
        store_n(V::fmadd(load_n<V>(gb + k * inner, lanes), scale, shift), gb + k * inner, lanes);
      for (int l = 0; l < lanes; ++l) {
        const int64_t smp = b * inner + i0 + l, tg = target[smp];
        if (valid_target(tg, c, ignore_index))
          gb[tg * inner + l] -= (T(1) - eps) * g[l];
        else
          for (int64_t k = 0; k < c; ++k) gb[k * inner + l] = 0;
      }
    });
    return;
  }
  const int t = threads_for(n * c * inner, threads);
#pragma omp parallel for num_threads(t) schedule(static) if (t > 1)
  for (int64_t s = 0; s < n; ++s) {
    const int64_t tg = target[s];
    if (!valid_target(tg, c, ignore_index)) {
      for (int64_t k = 0; k < c; ++k) grad_logits[s * c + k] = 0;
      continue;
    }
    sample_grad(logits + s * c, grad_logits + s * c, c, int64_t(1), tg, grad_loss[s], eps);
  }
}

namespace {

inline uint64_t splitmix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace

template <class T>
void dropout_forward(int64_t n, const T* x, T* y, uint8_t* mask, double p, uint64_t seed, int threads) {
  // Keep iff the top 53 bits, as a fraction of 2^53, are >= p.
  const uint64_t threshold = static_cast<uint64_t>(p * 9007199254740992.0);
  const T scale = p < 1 ? static_cast<T>(1.0 / (1.0 - p)) : T(0);
  const uint64_t key = splitmix64(seed);
  parallel_range(n, threads, [&](int64_t b, int64_t e) {
    // Locals, not the closure's members, so that the hash loop vectorises.
    const uint64_t k = key, th = threshold;
    const T sc = scale;
    uint8_t* m = mask;
    T* out = y;
    const T* in = x;
#pragma omp simd
    for (int64_t i = b; i < e; ++i) {
      const uint8_t keep = (splitmix64(k ^ static_cast<uint64_t>(i)) >> 11) >= th;
      m[i] = keep;
      const T xi = in[i];
      out[i] = keep ? xi * sc : T(0);
    }
  });
}

template <class T>
void dropout_backward(int64_t n, const T* g, const uint8_t* mask, T* gx, double scale, int threads) {
  const T s = static_cast<T>(scale);
  parallel_range(n, threads, [&](int64_t b, int64_t e) {
#pragma omp simd
    for (int64_t i = b; i < e; ++i) {
      const T gi = g[i] * s;
      gx[i] = mask[i] ? gi : T(0);
    }
  });
}

template <class T>
void add(int64_t n, const T* a, const T* b, T* y, int threads) {
  parallel_range(n, threads, [&](int64_t lo, int64_t hi) {
#pragma omp simd
    for (int64_t i = lo; i < hi; ++i) y[i] = a[i] + b[i];
  });
}

template <class T>
void sgd_step(int64_t n, T* p, const T* grad, T* buf, const SgdArgs& s, int threads) {
  parallel_range(n, threads, [&](int64_t lo, int64_t hi) {
    // Locals, not the closure's members, so that the loop vectorises.
    const T lr = static_cast<T>(s.lr), mu = static_cast<T>(s.momentum), wd = static_cast<T>(s.weight_decay);
    const T keep = static_cast<T>(1.0 - s.dampening);
    const bool momentum = s.momentum != 0, decay = s.weight_decay != 0;
    const bool nesterov = s.nesterov, maximize = s.maximize, first = s.first;
#pragma omp simd
    for (int64_t i = lo; i < hi; ++i) {
      T g = maximize ? -grad[i] : grad[i];
      if (decay) g = g + wd * p[i];
      if (momentum) {
        const T b = first ? g : mu * buf[i] + keep * g;
        buf[i] = b;
        g = nesterov ? g + mu * b : b;
      }
      p[i] = p[i] - lr * g;
    }
  });
}

#define FC_INSTANTIATE_ELTWISE(T)                                                                                  \
  template void activation_forward<T>(EltwiseKind, int64_t, const T*, T*, double, int);                            \
  template void activation_backward<T>(EltwiseKind, int64_t, const T*, const T*, T*, double, int);                 \
  template void softmax_forward<T>(int64_t, int64_t, int64_t, const T*, T*, bool, int);                            \
  template void softmax_backward<T>(int64_t, int64_t, int64_t, const T*, const T*, T*, bool, int);                 \
  template bool cross_entropy_forward<T>(int64_t, int64_t, int64_t, const T*, const int64_t*, T*, int64_t, double, \
                                         int);                                                                     \
  template void cross_entropy_backward<T>(int64_t, int64_t, int64_t, const T*, const int64_t*, const T*, T*,       \
                                          int64_t, double, int);                                                   \
  template void dropout_forward<T>(int64_t, const T*, T*, uint8_t*, double, uint64_t, int);                        \
  template void dropout_backward<T>(int64_t, const T*, const uint8_t*, T*, double, int);                           \
  template void add<T>(int64_t, const T*, const T*, T*, int);                                                      \
  template void sgd_step<T>(int64_t, T*, const T*, T*, const SgdArgs&, int);
FC_INSTANTIATE_ELTWISE(float)
FC_INSTANTIATE_ELTWISE(double)

}  // namespace FC_NS
}  // namespace fastconv
