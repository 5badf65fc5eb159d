// Element-wise ops, softmax, cross-entropy and dropout, float and double:
// parallel over large ranges, vectorisable inner loops.
#include "eltwise/eltwise.h"

#include <omp.h>

#include <cmath>
#include <cstring>
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

// exp for float written branch-free so loops over it vectorise (std::exp does
// not without -ffast-math): 2^n * p(r) with n = round(x / ln 2), |r| <= ln 2 / 2
// and a degree-6 Taylor polynomial, relative error below 3e-7. Overflow gives
// inf, deep underflow a value below 1.2e-38, NaN stays NaN. double uses std::exp.
template <class T>
inline T exp_vec(T x) {
  if constexpr (sizeof(T) == sizeof(double)) {
    return std::exp(x);
  } else {
    // Plain compares and an int conversion (not fmin / floor) so that GCC
    // vectorises this without -ffast-math.
    const float xc = x < -87.3f ? -87.3f : (x > 88.7f ? 88.7f : x);
    const float t = xc * 1.44269504f;
    const float n = static_cast<float>(static_cast<int32_t>(t + (t >= 0.0f ? 0.5f : -0.5f)));
    const float r = (xc - n * 0.693359375f) + n * 2.12194440e-4f;
    float p = 1.0f / 720;
    p = p * r + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
    float scale;
    std::memcpy(&scale, &bits, sizeof scale);
    const float e = p * scale;
    return x != x ? x : (x > 88.7f ? std::numeric_limits<float>::infinity() : e);
  }
}

// tanh through exp_vec, with an odd polynomial near 0 where 1 - 2 / (e^2x + 1) cancels.
template <class T>
inline T tanh_vec(T x) {
  if constexpr (sizeof(T) == sizeof(double)) {
    return std::tanh(x);
  } else {
    const float ax = x < 0.0f ? -x : x;
    const float big = 1.0f - 2.0f / (exp_vec(2.0f * ax) + 1.0f);
    const float x2 = x * x;
    const float small = x * (1.0f + x2 * (-1.0f / 3 + x2 * (2.0f / 15 + x2 * (-17.0f / 315))));
    return ax < 0.125f ? small : (x < 0.0f ? -big : big);
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
#pragma omp simd
        for (int64_t i = b; i < e; ++i) y[i] = T(1) / (T(1) + exp_vec(-x[i]));
        break;
      case EltwiseKind::tanh:
#pragma omp simd
        for (int64_t i = b; i < e; ++i) y[i] = tanh_vec(x[i]);
        break;
      case EltwiseKind::gelu:
        for (int64_t i = b; i < e; ++i) y[i] = T(0.5) * x[i] * (T(1) + std::erf(x[i] * T(kSqrt1_2)));
        break;
      case EltwiseKind::gelu_tanh:
#pragma omp simd
        for (int64_t i = b; i < e; ++i) y[i] = T(0.5) * x[i] * (T(1) + tanh_vec(gelu_tanh_inner(x[i])));
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

namespace {

// Softmax of one contiguous row: the common (outer, dim, 1) layout.
template <class T>
void softmax_row(const T* __restrict x, T* __restrict y, int64_t dim, bool log) {
  T m = -std::numeric_limits<T>::infinity();
  bool nan = false;
  for (int64_t d = 0; d < dim; ++d) {
    m = x[d] > m ? x[d] : m;
    nan = nan || x[d] != x[d];
  }
  if (nan) m = std::numeric_limits<T>::quiet_NaN();
  T sum = 0;
  if (log) {
#pragma omp simd reduction(+ : sum)
    for (int64_t d = 0; d < dim; ++d) sum += exp_vec(x[d] - m);
    const T lse = m + std::log(sum);
#pragma omp simd
    for (int64_t d = 0; d < dim; ++d) y[d] = x[d] - lse;
  } else {
#pragma omp simd reduction(+ : sum)
    for (int64_t d = 0; d < dim; ++d) {
      const T e = exp_vec(x[d] - m);
      y[d] = e;
      sum += e;
    }
    const T inv = T(1) / sum;
#pragma omp simd
    for (int64_t d = 0; d < dim; ++d) y[d] *= inv;
  }
}

}  // namespace

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
      if (inner == 1) {
        softmax_row(xo, yo, dim, log);
        continue;
      }
      for (int64_t i = 0; i < inner; ++i) {
        mx[i] = -std::numeric_limits<T>::infinity();
        sum[i] = 0;
      }
      for (int64_t d = 0; d < dim; ++d)
        for (int64_t i = 0; i < inner; ++i) mx[i] = std::fmax(mx[i], xo[d * inner + i]);
      for (int64_t d = 0; d < dim; ++d)
        for (int64_t i = 0; i < inner; ++i) {
          const T e = exp_vec(xo[d * inner + i] - mx[i]);
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
          gx[k] = log ? g[k] - exp_vec(y[k]) * acc[i] : y[k] * (g[k] - acc[i]);
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
#pragma omp simd reduction(+ : s)
  for (int64_t k = 0; k < c; ++k) s += exp_vec(z[k * inner] - m);
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
#pragma omp simd
    for (int64_t k = 0; k < c; ++k) gz[k * inner] = (exp_vec(z[k * inner] - lse) - eps / T(c)) * g;
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
