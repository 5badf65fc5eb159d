// Element-wise ops, softmax, cross-entropy and dropout, float and double:
// parallel over large ranges, vectorisable inner loops.
#include "eltwise/eltwise.h"

#include <omp.h>

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

constexpr double kSqrt1_2 = 0.70710678118654752440;
constexpr double kSqrt2_Pi = 0.79788456080286535588;
constexpr double kInvSqrt2Pi = 0.39894228040143267794;

template <class T>
inline T gelu_tanh_inner(T x) {
  return T(kSqrt2_Pi) * (x + T(0.044715) * x * x * x);
}

}  // namespace

template <class T>
void activation_forward(EltwiseKind kind, int64_t n, const T* x, T* y, double alpha, int threads) {
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
        for (int64_t i = b; i < e; ++i) y[i] = T(1) / (T(1) + std::exp(-x[i]));
        break;
      case EltwiseKind::tanh:
        for (int64_t i = b; i < e; ++i) y[i] = std::tanh(x[i]);
        break;
      case EltwiseKind::gelu:
        for (int64_t i = b; i < e; ++i) y[i] = T(0.5) * x[i] * (T(1) + std::erf(x[i] * T(kSqrt1_2)));
        break;
      case EltwiseKind::gelu_tanh:
        for (int64_t i = b; i < e; ++i) y[i] = T(0.5) * x[i] * (T(1) + std::tanh(gelu_tanh_inner(x[i])));
        break;
    }
  });
}

template <class T>
void activation_backward(EltwiseKind kind, int64_t n, const T* s, const T* g, T* gx, double alpha, int threads) {
  const T al = static_cast<T>(alpha);
  parallel_range(n, threads, [&](int64_t b, int64_t e) {
    switch (kind) {
      case EltwiseKind::relu:
#pragma omp simd
        for (int64_t i = b; i < e; ++i) gx[i] = s[i] > T(0) ? g[i] : T(0);
        break;
      case EltwiseKind::relu6:
#pragma omp simd
        for (int64_t i = b; i < e; ++i) gx[i] = (s[i] > T(0) && s[i] < T(6)) ? g[i] : T(0);
        break;
      case EltwiseKind::leaky_relu:
#pragma omp simd
        for (int64_t i = b; i < e; ++i) gx[i] = s[i] > T(0) ? g[i] : g[i] * al;
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
        for (int64_t i = b; i < e; ++i) {
          const T x = s[i];
          const T cdf = T(0.5) * (T(1) + std::erf(x * T(kSqrt1_2)));
          const T pdf = T(kInvSqrt2Pi) * std::exp(T(-0.5) * x * x);
          gx[i] = g[i] * (cdf + x * pdf);
        }
        break;
      case EltwiseKind::gelu_tanh:
        for (int64_t i = b; i < e; ++i) {
          const T x = s[i];
          const T t = std::tanh(gelu_tanh_inner(x));
          const T dinner = T(kSqrt2_Pi) * (T(1) + T(3 * 0.044715) * x * x);
          gx[i] = g[i] * (T(0.5) * (T(1) + t) + T(0.5) * x * (T(1) - t * t) * dinner);
        }
        break;
    }
  });
}

template <class T>
void softmax_forward(int64_t outer, int64_t dim, int64_t inner, const T* x, T* y, bool log, int threads) {
  const int t = threads_for(outer * dim * inner, threads);
#pragma omp parallel num_threads(t) if (t > 1)
  {
    std::vector<T> mx(inner), sum(inner);
#pragma omp for schedule(static)
    for (int64_t o = 0; o < outer; ++o) {
      const T* xo = x + o * dim * inner;
      T* yo = y + o * dim * inner;
      for (int64_t i = 0; i < inner; ++i) {
        mx[i] = -std::numeric_limits<T>::infinity();
        sum[i] = 0;
      }
      for (int64_t d = 0; d < dim; ++d)
        for (int64_t i = 0; i < inner; ++i) mx[i] = std::fmax(mx[i], xo[d * inner + i]);
      for (int64_t d = 0; d < dim; ++d)
        for (int64_t i = 0; i < inner; ++i) {
          const T e = std::exp(xo[d * inner + i] - mx[i]);
          sum[i] += e;
          if (!log) yo[d * inner + i] = e;
        }
      if (log) {
        for (int64_t i = 0; i < inner; ++i) sum[i] = mx[i] + std::log(sum[i]);
        for (int64_t d = 0; d < dim; ++d)
          for (int64_t i = 0; i < inner; ++i) yo[d * inner + i] = xo[d * inner + i] - sum[i];
      } else {
        for (int64_t i = 0; i < inner; ++i) sum[i] = T(1) / sum[i];
        for (int64_t d = 0; d < dim; ++d)
          for (int64_t i = 0; i < inner; ++i) yo[d * inner + i] *= sum[i];
      }
    }
  }
}

template <class T>
void softmax_backward(int64_t outer, int64_t dim, int64_t inner, const T* y, const T* g, T* gx, bool log,
                      int threads) {
  const int t = threads_for(outer * dim * inner, threads);
#pragma omp parallel num_threads(t) if (t > 1)
  {
    std::vector<T> acc(inner);
#pragma omp for schedule(static)
    for (int64_t o = 0; o < outer; ++o) {
      const int64_t base = o * dim * inner;
      for (int64_t i = 0; i < inner; ++i) acc[i] = 0;
      for (int64_t d = 0; d < dim; ++d)
        for (int64_t i = 0; i < inner; ++i) acc[i] += log ? g[base + d * inner + i] : g[base + d * inner + i] * y[base + d * inner + i];
      for (int64_t d = 0; d < dim; ++d)
        for (int64_t i = 0; i < inner; ++i) {
          const int64_t k = base + d * inner + i;
          gx[k] = log ? g[k] - std::exp(y[k]) * acc[i] : y[k] * (g[k] - acc[i]);
        }
    }
  }
}

namespace {

// log-sum-exp of one sample's c logits (stride `inner`).
template <class T>
T logsumexp(const T* z, int64_t c, int64_t inner) {
  T m = -std::numeric_limits<T>::infinity();
  for (int64_t k = 0; k < c; ++k) m = std::fmax(m, z[k * inner]);
  if (!std::isfinite(m)) return m;
  T s = 0;
  for (int64_t k = 0; k < c; ++k) s += std::exp(z[k * inner] - m);
  return m + std::log(s);
}

}  // namespace

template <class T>
bool cross_entropy_forward(int64_t n, int64_t c, int64_t inner, const T* logits, const int64_t* target, T* loss,
                           int64_t ignore_index, double label_smoothing, int threads) {
  const T eps = static_cast<T>(label_smoothing);
  bool ok = true;
  const int t = threads_for(n * c * inner, threads);
#pragma omp parallel for num_threads(t) schedule(static) reduction(&& : ok) if (t > 1)
  for (int64_t s = 0; s < n * inner; ++s) {
    const int64_t b = s / inner, i = s % inner;
    const int64_t tg = target[s];
    if (tg == ignore_index) {
      loss[s] = 0;
      continue;
    }
    if (tg < 0 || tg >= c) {
      ok = false;
      loss[s] = 0;
      continue;
    }
    const T* z = logits + b * c * inner + i;
    const T lse = logsumexp(z, c, inner);
    T l = (T(1) - eps) * (lse - z[tg * inner]);
    if (eps != T(0)) {
      T sum = 0;
      for (int64_t k = 0; k < c; ++k) sum += lse - z[k * inner];
      l += eps / T(c) * sum;
    }
    loss[s] = l;
  }
  return ok;
}

template <class T>
void cross_entropy_backward(int64_t n, int64_t c, int64_t inner, const T* logits, const int64_t* target,
                            const T* grad_loss, T* grad_logits, int64_t ignore_index, double label_smoothing,
                            int threads) {
  const T eps = static_cast<T>(label_smoothing);
  const int t = threads_for(n * c * inner, threads);
#pragma omp parallel for num_threads(t) schedule(static) if (t > 1)
  for (int64_t s = 0; s < n * inner; ++s) {
    const int64_t b = s / inner, i = s % inner;
    const T* z = logits + b * c * inner + i;
    T* gz = grad_logits + b * c * inner + i;
    const int64_t tg = target[s];
    if (tg == ignore_index || tg < 0 || tg >= c) {
      for (int64_t k = 0; k < c; ++k) gz[k * inner] = 0;
      continue;
    }
    const T lse = logsumexp(z, c, inner), g = grad_loss[s];
    for (int64_t k = 0; k < c; ++k) gz[k * inner] = (std::exp(z[k * inner] - lse) - eps / T(c)) * g;
    gz[tg * inner] -= (T(1) - eps) * g;
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
    for (int64_t i = b; i < e; ++i) {
      const uint8_t keep = (splitmix64(key ^ static_cast<uint64_t>(i)) >> 11) >= threshold;
      mask[i] = keep;
      y[i] = keep ? x[i] * scale : T(0);
    }
  });
}

template <class T>
void dropout_backward(int64_t n, const T* g, const uint8_t* mask, T* gx, double scale, int threads) {
  const T s = static_cast<T>(scale);
  parallel_range(n, threads, [&](int64_t b, int64_t e) {
#pragma omp simd
    for (int64_t i = b; i < e; ++i) gx[i] = mask[i] ? g[i] * s : T(0);
  });
}

template <class T>
void add(int64_t n, const T* a, const T* b, T* y, int threads) {
  parallel_range(n, threads, [&](int64_t lo, int64_t hi) {
#pragma omp simd
    for (int64_t i = lo; i < hi; ++i) y[i] = a[i] + b[i];
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
  template void add<T>(int64_t, const T*, const T*, T*, int);
FC_INSTANTIATE_ELTWISE(float)
FC_INSTANTIATE_ELTWISE(double)

}  // namespace FC_NS
}  // namespace fastconv
