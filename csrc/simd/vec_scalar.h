// Baseline x86-64: one float per "vector". The compiler may still use SSE2.
#pragma once
#include <cmath>

namespace fastconv {
namespace FC_NS {

struct VecF {
  using Scalar = float;
  static constexpr int kWidth = 1;
  float v;

  static VecF zero() { return {0.0f}; }
  static VecF set1(float x) { return {x}; }
  static VecF load(const float* p) { return {*p}; }
  static VecF load_partial(const float* p, int n) { return {n > 0 ? *p : 0.0f}; }
  void store(float* p) const { *p = v; }
  void store_partial(float* p, int n) const {
    if (n > 0) *p = v;
  }
  void store_mask(float* p, unsigned bits) const {
    if (bits & 1u) *p = v;
  }
  static void deinterleave2(VecF lo, VecF hi, VecF* even, VecF* odd) {
    even->v = lo.v;
    odd->v = hi.v;
  }
  static VecF load_mask(const float* p, unsigned bits) { return {(bits & 1u) ? *p : 0.0f}; }
  static VecF fmadd(VecF a, VecF b, VecF c) { return {a.v * b.v + c.v}; }
  static VecF add(VecF a, VecF b) { return {a.v + b.v}; }
  // Written so that a NaN input is returned unchanged.
  static VecF clamp_min(VecF x, float lo) { return {x.v < lo ? lo : x.v}; }
  static VecF clamp_max(VecF x, float hi) { return {x.v > hi ? hi : x.v}; }
  static VecF sub(VecF a, VecF b) { return {a.v - b.v}; }
  static VecF mul(VecF a, VecF b) { return {a.v * b.v}; }
  static VecF div(VecF a, VecF b) { return {a.v / b.v}; }
  static VecF recip(VecF a) { return {float(1) / a.v}; }
  // As the vector ISAs: where either is NaN the result is b.
  static VecF max(VecF a, VecF b) { return {a.v > b.v ? a.v : b.v}; }
  static VecF min(VecF a, VecF b) { return {a.v < b.v ? a.v : b.v}; }
  static VecF abs(VecF a) { return {std::fabs(a.v)}; }
  static VecF round(VecF a) { return {std::nearbyint(a.v)}; }
  static VecF ldexp(VecF a, VecF n) { return {n.v != n.v ? n.v : std::ldexp(a.v, static_cast<int>(n.v))}; }
  static VecF select_lt(VecF a, VecF b, VecF t, VecF f) { return {a.v < b.v ? t.v : f.v}; }
};

struct VecD {
  using Scalar = double;
  static constexpr int kWidth = 1;
  double v;

  static VecD zero() { return {0.0}; }
  static VecD set1(double x) { return {x}; }
  static VecD load(const double* p) { return {*p}; }
  static VecD load_partial(const double* p, int n) { return {n > 0 ? *p : 0.0}; }
  void store(double* p) const { *p = v; }
  void store_partial(double* p, int n) const {
    if (n > 0) *p = v;
  }
  static VecD fmadd(VecD a, VecD b, VecD c) { return {a.v * b.v + c.v}; }
  static VecD add(VecD a, VecD b) { return {a.v + b.v}; }
  static VecD clamp_min(VecD x, double lo) { return {x.v < lo ? lo : x.v}; }
  static VecD clamp_max(VecD x, double hi) { return {x.v > hi ? hi : x.v}; }
  static VecD sub(VecD a, VecD b) { return {a.v - b.v}; }
  static VecD mul(VecD a, VecD b) { return {a.v * b.v}; }
  static VecD div(VecD a, VecD b) { return {a.v / b.v}; }
  static VecD recip(VecD a) { return {double(1) / a.v}; }
  // As the vector ISAs: where either is NaN the result is b.
  static VecD max(VecD a, VecD b) { return {a.v > b.v ? a.v : b.v}; }
  static VecD min(VecD a, VecD b) { return {a.v < b.v ? a.v : b.v}; }
  static VecD abs(VecD a) { return {std::fabs(a.v)}; }
  static VecD round(VecD a) { return {std::nearbyint(a.v)}; }
  static VecD ldexp(VecD a, VecD n) { return {n.v != n.v ? n.v : std::ldexp(a.v, static_cast<int>(n.v))}; }
  static VecD select_lt(VecD a, VecD b, VecD t, VecD f) { return {a.v < b.v ? t.v : f.v}; }
};

}  // namespace FC_NS
}  // namespace fastconv
