// Transcendental functions on Vec<T>, for the element-wise kernels.
//
// float: branch-free polynomial forms (relative error a few 1e-7) that run on
// every lane at once. double: each lane through the C library, so the float64
// path, which gradient checks rely on, keeps libm's accuracy.
#pragma once

#include <cmath>
#include <limits>

#include "simd/vec.h"

namespace fastconv {
namespace FC_NS {

// f applied to each lane through a small buffer.
template <class V, class F>
inline V lanewise(V x, F f) {
  alignas(64) typename V::Scalar buf[V::kWidth];
  x.store(buf);
  for (int i = 0; i < V::kWidth; ++i) buf[i] = f(buf[i]);
  return V::load(buf);
}

template <class V>
inline typename V::Scalar reduce_add(V x) {
  return V::sum(x);
}

template <class V>
inline typename V::Scalar reduce_max(V x) {
  alignas(64) typename V::Scalar buf[V::kWidth];
  x.store(buf);
  typename V::Scalar m = buf[0];
  for (int i = 1; i < V::kWidth; ++i) m = buf[i] > m ? buf[i] : m;
  return m;
}

// e^x. float: n = round(x / ln 2), r = x - n ln 2 in two parts (|r| <= ln 2 / 2),
// e^r by its degree-7 Taylor polynomial (truncation below 6e-9), times 2^n.
// x is clamped to [-104, 89] first, so large x gives inf, very negative x gives
// 0 through the subnormals, and NaN (which the clamps pass through) stays NaN.
template <class V>
inline V vexp(V x) {
  using S = typename V::Scalar;
  if constexpr (sizeof(S) == sizeof(double)) {
    return lanewise(x, [](double v) { return std::exp(v); });
  } else {
    x = V::clamp_max(V::clamp_min(x, -104.0f), 89.0f);
    const V n = V::round(V::mul(x, V::set1(1.44269504088896341f)));
    V r = V::fmadd(n, V::set1(-0.693359375f), x);  // ln 2's leading bits: n * this is exact
    r = V::fmadd(n, V::set1(2.12194440e-4f), r);   // ln 2 - 0.693359375
    V p = V::set1(1.0f / 5040);
    p = V::fmadd(p, r, V::set1(1.0f / 720));
    p = V::fmadd(p, r, V::set1(1.0f / 120));
    p = V::fmadd(p, r, V::set1(1.0f / 24));
    p = V::fmadd(p, r, V::set1(1.0f / 6));
    p = V::fmadd(p, r, V::set1(0.5f));
    p = V::fmadd(p, r, V::set1(1.0f));
    p = V::fmadd(p, r, V::set1(1.0f));
    return V::ldexp(p, n);
  }
}

template <class V>
inline V vsigmoid(V x) {
  const V one = V::set1(1);
  return V::div(one, V::add(one, vexp(V::sub(V::zero(), x))));
}

// tanh. float: 1 - 2 / (e^2|x| + 1) with x's sign, and for |x| < 0.3, where
// that form cancels, the odd Taylor polynomial to x^11 (truncation below 3e-9).
template <class V>
inline V vtanh(V x) {
  using S = typename V::Scalar;
  if constexpr (sizeof(S) == sizeof(double)) {
    return lanewise(x, [](double v) { return std::tanh(v); });
  } else {
    const V ax = V::abs(x), one = V::set1(1.0f);
    const V big = V::sub(one, V::div(V::set1(2.0f), V::add(vexp(V::add(ax, ax)), one)));
    const V signed_big = V::select_lt(x, V::zero(), V::sub(V::zero(), big), big);
    const V x2 = V::mul(x, x);
    V p = V::fmadd(x2, V::set1(-1382.0f / 155925), V::set1(62.0f / 2835));
    p = V::fmadd(x2, p, V::set1(-17.0f / 315));
    p = V::fmadd(x2, p, V::set1(2.0f / 15));
    p = V::fmadd(x2, p, V::set1(-1.0f / 3));
    const V small = V::fmadd(V::mul(x, x2), p, x);
    return V::select_lt(ax, V::set1(0.3f), small, signed_big);
  }
}

// The standard normal CDF Phi(x) = erfc(-x / sqrt 2) / 2. float: erfc(z) for
// z >= 0 by the Chebyshev fit t exp(-z^2 + P(t)), t = 1 / (1 + z/2) (Numerical
// Recipes' erfcc, relative error below 1.2e-7 for every z), then Phi from
// erfc(|x| / sqrt 2) by symmetry, so the tail x << 0 keeps its relative accuracy.
template <class V>
inline V vnormal_cdf(V x) {
  using S = typename V::Scalar;
  if constexpr (sizeof(S) == sizeof(double)) {
    return lanewise(x, [](double v) { return 0.5 * std::erfc(-v * 0.70710678118654752440); });
  } else {
    // This form of erfc(10.5) underflows to 0 in float; the clamp keeps recip's argument finite.
    const V z = V::clamp_max(V::mul(V::abs(x), V::set1(0.70710678118654752440f)), 10.5f);
    const V t = V::recip(V::fmadd(z, V::set1(0.5f), V::set1(1.0f)));
    static constexpr float kC[10] = {-1.26551223f, 1.00002368f, 0.37409196f,  0.09678418f,  -0.18628806f,
                                     0.27886807f,  -1.13520398f, 1.48851587f, -0.82215223f, 0.17087277f};
    V q = V::set1(kC[9]);
    for (int k = 8; k >= 0; --k) q = V::fmadd(q, t, V::set1(kC[k]));
    const V half_erfc = V::mul(V::set1(0.5f), V::mul(t, vexp(V::sub(q, V::mul(z, z)))));
    return V::select_lt(x, V::zero(), half_erfc, V::sub(V::set1(1.0f), half_erfc));
  }
}

}  // namespace FC_NS
}  // namespace fastconv
