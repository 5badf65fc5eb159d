// Baseline x86-64: one element per "vector". The compiler may still use SSE2.
// One template serves float (VecF) and double (VecD).
#pragma once
#include <cmath>

namespace fastconv {
namespace FC_NS {

template <class T>
struct VecScalar {
  using Scalar = T;
  static constexpr int kWidth = 1;
  T v;

  static VecScalar zero() { return {T(0)}; }
  static VecScalar set1(T x) { return {x}; }
  static VecScalar load(const T* p) { return {*p}; }
  static VecScalar load_partial(const T* p, int n) { return {n > 0 ? *p : T(0)}; }
  void store(T* p) const { *p = v; }
  // The wider types' non-temporal store; here a plain one.
  void stream(T* p) const { *p = v; }
  static void stream_fence() {}
  void store_partial(T* p, int n) const {
    if (n > 0) *p = v;
  }
  void store_mask(T* p, unsigned bits) const {
    if (bits & 1u) *p = v;
  }
  static void deinterleave2(VecScalar lo, VecScalar hi, VecScalar* even, VecScalar* odd) {
    even->v = lo.v;
    odd->v = hi.v;
  }
  static void interleave2(VecScalar even, VecScalar odd, VecScalar* lo, VecScalar* hi) {
    lo->v = even.v;
    hi->v = odd.v;
  }
  // A 1 x 1 matrix is its own transpose (the wider types transpose kWidth x kWidth blocks).
  static void transpose(VecScalar*) {}
  static VecScalar load_mask(const T* p, unsigned bits) { return {(bits & 1u) ? *p : T(0)}; }
  static VecScalar load_mask_or(const T* p, unsigned bits, T fill) { return {(bits & 1u) ? *p : fill}; }
  // The larger of a and b, NaN where either is NaN.
  static VecScalar max_nan(VecScalar a, VecScalar b) { return {(b.v > a.v || b.v != b.v) ? b.v : a.v}; }
  static VecScalar fmadd(VecScalar a, VecScalar b, VecScalar c) { return {a.v * b.v + c.v}; }
  static VecScalar add(VecScalar a, VecScalar b) { return {a.v + b.v}; }
  // Written so that a NaN input is returned unchanged.
  static VecScalar clamp_min(VecScalar x, T lo) { return {x.v < lo ? lo : x.v}; }
  static VecScalar clamp_max(VecScalar x, T hi) { return {x.v > hi ? hi : x.v}; }
  static VecScalar sub(VecScalar a, VecScalar b) { return {a.v - b.v}; }
  static VecScalar mul(VecScalar a, VecScalar b) { return {a.v * b.v}; }
  static VecScalar div(VecScalar a, VecScalar b) { return {a.v / b.v}; }
  static VecScalar recip(VecScalar a) { return {T(1) / a.v}; }
  static T sum(VecScalar a) { return a.v; }
  // As the vector ISAs: where either is NaN the result is b.
  static VecScalar max(VecScalar a, VecScalar b) { return {a.v > b.v ? a.v : b.v}; }
  static VecScalar min(VecScalar a, VecScalar b) { return {a.v < b.v ? a.v : b.v}; }
  static VecScalar abs(VecScalar a) { return {std::fabs(a.v)}; }
  static VecScalar round(VecScalar a) { return {std::nearbyint(a.v)}; }
  static VecScalar ldexp(VecScalar a, VecScalar n) {
    return {n.v != n.v ? n.v : std::ldexp(a.v, static_cast<int>(n.v))};
  }
  static VecScalar select_lt(VecScalar a, VecScalar b, VecScalar t, VecScalar f) { return {a.v < b.v ? t.v : f.v}; }
};

using VecF = VecScalar<float>;
using VecD = VecScalar<double>;
// No narrower vector than one element (and the flat direct kernel, which takes half-vector tails,
// runs on AVX-512 only).
using VecH = VecScalar<float>;

}  // namespace FC_NS
}  // namespace fastconv
