// AVX2 + FMA: 8 float lanes; tails through vmaskmovps.
#pragma once
#include <immintrin.h>

namespace fastconv {
namespace FC_NS {

struct VecF {
  using Scalar = float;
  static constexpr int kWidth = 8;
  __m256 v;

  static VecF zero() { return {_mm256_setzero_ps()}; }
  static VecF set1(float x) { return {_mm256_set1_ps(x)}; }
  static VecF load(const float* p) { return {_mm256_loadu_ps(p)}; }
  static VecF load_partial(const float* p, int n) { return {_mm256_maskload_ps(p, mask(n))}; }
  void store(float* p) const { _mm256_storeu_ps(p, v); }
  // Non-temporal store to a 32-byte aligned p (see stream_copy in vec.h).
  void stream(float* p) const { _mm256_stream_ps(p, v); }
  // Orders this thread's non-temporal stores before its later stores (and so before a barrier).
  static void stream_fence() { _mm_sfence(); }
  void store_partial(float* p, int n) const { _mm256_maskstore_ps(p, mask(n), v); }
  // Stores the lanes whose bit is set in `bits`; other lanes' addresses are never touched.
  void store_mask(float* p, unsigned bits) const { _mm256_maskstore_ps(p, bits_mask(bits), v); }
  // Even and odd elements of the 2 * kWidth values a, b.
  static void deinterleave2(VecF lo, VecF hi, VecF* even, VecF* odd) {
    const __m256 a = lo.v, b = hi.v;
    // Within 128-bit halves: [a0 a2 b0 b2 | a4 a6 b4 b6]; then put the 64-bit pairs in order.
    const __m256 e = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
    const __m256 o = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
    even->v = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), _MM_SHUFFLE(3, 1, 2, 0)));
    odd->v = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(o), _MM_SHUFFLE(3, 1, 2, 0)));
  }
  // The inverse of deinterleave2: lo = e0 o0 e1 o1 e2 o2 e3 o3, hi = e4 o4 ... e7 o7.
  static void interleave2(VecF even, VecF odd, VecF* lo, VecF* hi) {
    const __m256 l = _mm256_unpacklo_ps(even.v, odd.v);  // e0 o0 e1 o1 | e4 o4 e5 o5
    const __m256 h = _mm256_unpackhi_ps(even.v, odd.v);  // e2 o2 e3 o3 | e6 o6 e7 o7
    lo->v = _mm256_permute2f128_ps(l, h, 0x20);
    hi->v = _mm256_permute2f128_ps(l, h, 0x31);
  }
  // Transposes the 8 x 8 matrix whose rows are r[0 .. 8): afterwards r[c] holds column c.
  static void transpose(VecF* r) {
    // 4 x 4 transposes within each 128-bit half: u[4g + m] half k = column 4k + m of rows 4g .. 4g + 3.
    __m256 u[8];
    for (int g = 0; g < 2; ++g) {
      const __m256 t0 = _mm256_unpacklo_ps(r[4 * g].v, r[4 * g + 1].v);
      const __m256 t1 = _mm256_unpackhi_ps(r[4 * g].v, r[4 * g + 1].v);
      const __m256 t2 = _mm256_unpacklo_ps(r[4 * g + 2].v, r[4 * g + 3].v);
      const __m256 t3 = _mm256_unpackhi_ps(r[4 * g + 2].v, r[4 * g + 3].v);
      u[4 * g] = _mm256_shuffle_ps(t0, t2, 0x44);
      u[4 * g + 1] = _mm256_shuffle_ps(t0, t2, 0xEE);
      u[4 * g + 2] = _mm256_shuffle_ps(t1, t3, 0x44);
      u[4 * g + 3] = _mm256_shuffle_ps(t1, t3, 0xEE);
    }
    for (int m = 0; m < 4; ++m) {
      r[m].v = _mm256_permute2f128_ps(u[m], u[4 + m], 0x20);
      r[4 + m].v = _mm256_permute2f128_ps(u[m], u[4 + m], 0x31);
    }
  }
  // Loads the lanes whose bit is set in `bits` (others are zero and never touched).
  static VecF load_mask(const float* p, unsigned bits) { return {_mm256_maskload_ps(p, bits_mask(bits))}; }
  // As load_mask, with `fill` in the lanes not loaded.
  static VecF load_mask_or(const float* p, unsigned bits, float fill) {
    const __m256i m = bits_mask(bits);
    return {_mm256_blendv_ps(_mm256_set1_ps(fill), _mm256_maskload_ps(p, m), _mm256_castsi256_ps(m))};
  }
  // The larger of a and b, NaN where either is NaN.
  static VecF max_nan(VecF a, VecF b) {
    const __m256 r = _mm256_max_ps(a.v, b.v);  // b where either is NaN
    return {_mm256_blendv_ps(r, a.v, _mm256_cmp_ps(a.v, a.v, _CMP_UNORD_Q))};
  }
  static VecF fmadd(VecF a, VecF b, VecF c) { return {_mm256_fmadd_ps(a.v, b.v, c.v)}; }
  static VecF add(VecF a, VecF b) { return {_mm256_add_ps(a.v, b.v)}; }
  static VecF clamp_min(VecF v, float lo) { return {_mm256_max_ps(_mm256_set1_ps(lo), v.v)}; }
  static VecF clamp_max(VecF v, float hi) { return {_mm256_min_ps(_mm256_set1_ps(hi), v.v)}; }
  static VecF sub(VecF a, VecF b) { return {_mm256_sub_ps(a.v, b.v)}; }
  static VecF mul(VecF a, VecF b) { return {_mm256_mul_ps(a.v, b.v)}; }
  static VecF div(VecF a, VecF b) { return {_mm256_div_ps(a.v, b.v)}; }
  // 1 / a within 2 ulp for finite, normal a: a 12-bit estimate and one Newton step.
  static VecF recip(VecF a) {
    const __m256 r = _mm256_rcp_ps(a.v);
    return {_mm256_mul_ps(r, _mm256_fnmadd_ps(a.v, r, _mm256_set1_ps(2.0f)))};
  }
  // Lane-wise max/min; where either lane is NaN the result is b's lane.
  static VecF max(VecF a, VecF b) { return {_mm256_max_ps(a.v, b.v)}; }
  static VecF min(VecF a, VecF b) { return {_mm256_min_ps(a.v, b.v)}; }
  static VecF abs(VecF a) { return {_mm256_andnot_ps(_mm256_set1_ps(-0.0f), a.v)}; }
  // Nearest integer, ties to even.
  static VecF round(VecF a) { return {_mm256_round_ps(a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)}; }
  // a * 2^n for integer-valued n with |n| <= 252: two exponent-field factors of
  // 2^(n/2), so that each stays a normal number.
  static VecF ldexp(VecF a, VecF n) {
    const __m256i k = _mm256_cvtps_epi32(n.v), k1 = _mm256_srai_epi32(k, 1), k2 = _mm256_sub_epi32(k, k1);
    const __m256i bias = _mm256_set1_epi32(127);
    const __m256 p1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k1, bias), 23));
    const __m256 p2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k2, bias), 23));
    return {_mm256_mul_ps(_mm256_mul_ps(a.v, p1), p2)};
  }
  // Lanes where a < b (ordered) take t, the others f.
  static VecF select_lt(VecF a, VecF b, VecF t, VecF f) {
    return {_mm256_blendv_ps(f.v, t.v, _mm256_cmp_ps(a.v, b.v, _CMP_LT_OQ))};
  }

  // The sum of the lanes, as a tree in registers.
  static float sum(VecF a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a.v), _mm256_extractf128_ps(a.v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }

 private:
  static __m256i bits_mask(unsigned bits) {
    const __m256i bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    return _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(static_cast<int>(bits)), bit), bit);
  }
  static __m256i mask(int n) {
    alignas(32) static const int kTable[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
    n = n < 0 ? 0 : (n > 8 ? 8 : n);
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kTable + 8 - n));
  }
};

// 4 double lanes: the float64 path of the templated kernels.
struct VecD {
  using Scalar = double;
  static constexpr int kWidth = 4;
  __m256d v;

  static VecD zero() { return {_mm256_setzero_pd()}; }
  static VecD set1(double x) { return {_mm256_set1_pd(x)}; }
  static VecD load(const double* p) { return {_mm256_loadu_pd(p)}; }
  static VecD load_partial(const double* p, int n) { return {_mm256_maskload_pd(p, mask(n))}; }
  // Loads the lanes whose bit is set in `bits` (others are zero and never touched).
  static VecD load_mask(const double* p, unsigned bits) {
    auto lane = [bits](int l) { return -static_cast<long long>((bits >> l) & 1u); };
    const __m256i m = _mm256_set_epi64x(lane(3), lane(2), lane(1), lane(0));
    return {_mm256_maskload_pd(p, m)};
  }
  void store(double* p) const { _mm256_storeu_pd(p, v); }
  void stream(double* p) const { _mm256_stream_pd(p, v); }
  static void stream_fence() { _mm_sfence(); }
  void store_partial(double* p, int n) const { _mm256_maskstore_pd(p, mask(n), v); }
  static VecD fmadd(VecD a, VecD b, VecD c) { return {_mm256_fmadd_pd(a.v, b.v, c.v)}; }
  static VecD add(VecD a, VecD b) { return {_mm256_add_pd(a.v, b.v)}; }
  static VecD clamp_min(VecD v, double lo) { return {_mm256_max_pd(_mm256_set1_pd(lo), v.v)}; }
  static VecD clamp_max(VecD v, double hi) { return {_mm256_min_pd(_mm256_set1_pd(hi), v.v)}; }
  static VecD sub(VecD a, VecD b) { return {_mm256_sub_pd(a.v, b.v)}; }
  static VecD mul(VecD a, VecD b) { return {_mm256_mul_pd(a.v, b.v)}; }
  static VecD div(VecD a, VecD b) { return {_mm256_div_pd(a.v, b.v)}; }
  static VecD recip(VecD a) { return {_mm256_div_pd(_mm256_set1_pd(1.0), a.v)}; }
  static VecD max(VecD a, VecD b) { return {_mm256_max_pd(a.v, b.v)}; }
  static VecD min(VecD a, VecD b) { return {_mm256_min_pd(a.v, b.v)}; }
  static VecD abs(VecD a) { return {_mm256_andnot_pd(_mm256_set1_pd(-0.0), a.v)}; }
  static VecD round(VecD a) { return {_mm256_round_pd(a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)}; }
  // a * 2^n for integer-valued n with |n| <= 2044, as VecF::ldexp.
  static VecD ldexp(VecD a, VecD n) {
    const __m128i k = _mm256_cvtpd_epi32(n.v), k1 = _mm_srai_epi32(k, 1), k2 = _mm_sub_epi32(k, k1);
    const __m256i bias = _mm256_set1_epi64x(1023);
    const __m256d p1 = _mm256_castsi256_pd(_mm256_slli_epi64(_mm256_add_epi64(_mm256_cvtepi32_epi64(k1), bias), 52));
    const __m256d p2 = _mm256_castsi256_pd(_mm256_slli_epi64(_mm256_add_epi64(_mm256_cvtepi32_epi64(k2), bias), 52));
    return {_mm256_mul_pd(_mm256_mul_pd(a.v, p1), p2)};
  }
  static VecD select_lt(VecD a, VecD b, VecD t, VecD f) {
    return {_mm256_blendv_pd(f.v, t.v, _mm256_cmp_pd(a.v, b.v, _CMP_LT_OQ))};
  }

  static double sum(VecD a) {
    const __m128d s = _mm_add_pd(_mm256_castpd256_pd128(a.v), _mm256_extractf128_pd(a.v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
  }

 private:
  static __m256i mask(int n) {
    alignas(32) static const long long kTable[8] = {-1, -1, -1, -1, 0, 0, 0, 0};
    n = n < 0 ? 0 : (n > 4 ? 4 : n);
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kTable + 4 - n));
  }
};

// The flat direct kernel, the only user of a half-width vector, runs on AVX-512 only (on AVX2 it
// measured slower than the phase kernel): no narrower type here.
using VecH = VecF;

}  // namespace FC_NS
}  // namespace fastconv
