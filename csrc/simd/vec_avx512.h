// AVX-512F: 16 float lanes, masked loads and stores for tails.
#pragma once
#include <immintrin.h>

namespace fastconv {
namespace FC_NS {

struct VecF {
  using Scalar = float;
  static constexpr int kWidth = 16;
  __m512 v;

  static VecF zero() { return {_mm512_setzero_ps()}; }
  static VecF set1(float x) { return {_mm512_set1_ps(x)}; }
  static VecF load(const float* p) { return {_mm512_loadu_ps(p)}; }
  static VecF load_partial(const float* p, int n) { return {_mm512_maskz_loadu_ps(mask(n), p)}; }
  void store(float* p) const { _mm512_storeu_ps(p, v); }
  void store_partial(float* p, int n) const { _mm512_mask_storeu_ps(p, mask(n), v); }
  // Stores the lanes whose bit is set in `bits`; other lanes' addresses are never touched.
  void store_mask(float* p, unsigned bits) const { _mm512_mask_storeu_ps(p, static_cast<__mmask16>(bits), v); }
  // Non-temporal store to a 64-byte aligned p (see stream_copy in vec.h).
  void stream(float* p) const { _mm512_stream_ps(p, v); }
  // Orders this thread's non-temporal stores before its later stores (and so before a barrier).
  static void stream_fence() { _mm_sfence(); }
  // Even and odd elements of the 2 * kWidth values a, b.
  static void deinterleave2(VecF lo, VecF hi, VecF* even, VecF* odd) {
    const __m512 a = lo.v, b = hi.v;
    const __m512i ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i io = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    even->v = _mm512_permutex2var_ps(a, ie, b);
    odd->v = _mm512_permutex2var_ps(a, io, b);
  }
  // The inverse of deinterleave2: lo = e0 o0 e1 o1 ... e7 o7, hi = e8 o8 ... e15 o15.
  static void interleave2(VecF even, VecF odd, VecF* lo, VecF* hi) {
    const __m512i il = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i ih = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    lo->v = _mm512_permutex2var_ps(even.v, il, odd.v);
    hi->v = _mm512_permutex2var_ps(even.v, ih, odd.v);
  }
  // Transposes the 16 x 16 matrix whose rows are r[0 .. 16): afterwards r[c] holds column c.
  static void transpose(VecF* r) {
    // 4 x 4 transposes within each 128-bit lane: u[4g + m] lane k = column 4k + m of rows 4g .. 4g + 3.
    __m512 u[16];
    for (int g = 0; g < 4; ++g) {
      const __m512 t0 = _mm512_unpacklo_ps(r[4 * g].v, r[4 * g + 1].v);
      const __m512 t1 = _mm512_unpackhi_ps(r[4 * g].v, r[4 * g + 1].v);
      const __m512 t2 = _mm512_unpacklo_ps(r[4 * g + 2].v, r[4 * g + 3].v);
      const __m512 t3 = _mm512_unpackhi_ps(r[4 * g + 2].v, r[4 * g + 3].v);
      u[4 * g] = _mm512_shuffle_ps(t0, t2, 0x44);
      u[4 * g + 1] = _mm512_shuffle_ps(t0, t2, 0xEE);
      u[4 * g + 2] = _mm512_shuffle_ps(t1, t3, 0x44);
      u[4 * g + 3] = _mm512_shuffle_ps(t1, t3, 0xEE);
    }
    // Then the 4 x 4 transpose of 128-bit lanes: column 4k + m = lane k of u[m], u[4 + m], u[8 + m], u[12 + m].
    for (int m = 0; m < 4; ++m) {
      const __m512 v0 = _mm512_shuffle_f32x4(u[m], u[4 + m], 0x44);
      const __m512 v1 = _mm512_shuffle_f32x4(u[m], u[4 + m], 0xEE);
      const __m512 v2 = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0x44);
      const __m512 v3 = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0xEE);
      r[m].v = _mm512_shuffle_f32x4(v0, v2, 0x88);
      r[4 + m].v = _mm512_shuffle_f32x4(v0, v2, 0xDD);
      r[8 + m].v = _mm512_shuffle_f32x4(v1, v3, 0x88);
      r[12 + m].v = _mm512_shuffle_f32x4(v1, v3, 0xDD);
    }
  }
  // Loads the lanes whose bit is set in `bits` (others are zero and never touched).
  static VecF load_mask(const float* p, unsigned bits) { return {_mm512_maskz_loadu_ps(static_cast<__mmask16>(bits), p)}; }
  // As load_mask, with `fill` in the lanes not loaded.
  static VecF load_mask_or(const float* p, unsigned bits, float fill) {
    return {_mm512_mask_loadu_ps(_mm512_set1_ps(fill), static_cast<__mmask16>(bits), p)};
  }
  // The larger of a and b, NaN where either is NaN.
  static VecF max_nan(VecF a, VecF b) {
    const __m512 r = _mm512_max_ps(a.v, b.v);  // b where either is NaN
    return {_mm512_mask_mov_ps(r, _mm512_cmp_ps_mask(a.v, a.v, _CMP_UNORD_Q), a.v)};
  }
  static VecF fmadd(VecF a, VecF b, VecF c) { return {_mm512_fmadd_ps(a.v, b.v, c.v)}; }
  static VecF add(VecF a, VecF b) { return {_mm512_add_ps(a.v, b.v)}; }
  // max/min with the constant first: vmaxps returns the second operand when
  // either is NaN, so a NaN in v propagates.
  static VecF clamp_min(VecF v, float lo) { return {_mm512_max_ps(_mm512_set1_ps(lo), v.v)}; }
  static VecF clamp_max(VecF v, float hi) { return {_mm512_min_ps(_mm512_set1_ps(hi), v.v)}; }
  static VecF sub(VecF a, VecF b) { return {_mm512_sub_ps(a.v, b.v)}; }
  static VecF mul(VecF a, VecF b) { return {_mm512_mul_ps(a.v, b.v)}; }
  static VecF div(VecF a, VecF b) { return {_mm512_div_ps(a.v, b.v)}; }
  // 1 / a within 2 ulp for finite, normal a: a 14-bit estimate and one Newton step.
  static VecF recip(VecF a) {
    const __m512 r = _mm512_rcp14_ps(a.v);
    return {_mm512_mul_ps(r, _mm512_fnmadd_ps(a.v, r, _mm512_set1_ps(2.0f)))};
  }
  // Lane-wise max/min; where either lane is NaN the result is b's lane.
  static VecF max(VecF a, VecF b) { return {_mm512_max_ps(a.v, b.v)}; }
  static VecF min(VecF a, VecF b) { return {_mm512_min_ps(a.v, b.v)}; }
  static VecF abs(VecF a) { return {_mm512_abs_ps(a.v)}; }
  // Nearest integer, ties to even.
  static VecF round(VecF a) { return {_mm512_roundscale_ps(a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)}; }
  // a * 2^n for integer-valued n with |n| <= 252.
  static VecF ldexp(VecF a, VecF n) { return {_mm512_scalef_ps(a.v, n.v)}; }
  // Lanes where a < b (ordered) take t, the others f.
  static VecF select_lt(VecF a, VecF b, VecF t, VecF f) {
    return {_mm512_mask_blend_ps(_mm512_cmp_ps_mask(a.v, b.v, _CMP_LT_OQ), f.v, t.v)};
  }

  // The sum of the lanes, as a tree in registers.
  static float sum(VecF a) { return _mm512_reduce_add_ps(a.v); }

 private:
  static __mmask16 mask(int n) { return static_cast<__mmask16>(n >= 16 ? 0xFFFFu : ((1u << n) - 1u)); }
};

// Half a VecF (8 float lanes in a ymm register, AVX-512VL masks): the tail of a tile of
// positions whose last vector would hold at most 8 of them. On cores that split a 512-bit
// FMA into two 256-bit halves (AMD Zen 4) it costs half a VecF FMA.
struct VecH {
  using Scalar = float;
  static constexpr int kWidth = 8;
  __m256 v;

  static VecH zero() { return {_mm256_setzero_ps()}; }
  static VecH set1(float x) { return {_mm256_set1_ps(x)}; }
  static VecH load(const float* p) { return {_mm256_loadu_ps(p)}; }
  static VecH load_partial(const float* p, int n) { return {_mm256_maskz_loadu_ps(mask(n), p)}; }
  static VecH load_mask(const float* p, unsigned bits) { return {_mm256_maskz_loadu_ps(static_cast<__mmask8>(bits), p)}; }
  void store_partial(float* p, int n) const { _mm256_mask_storeu_ps(p, mask(n), v); }
  static VecH fmadd(VecH a, VecH b, VecH c) { return {_mm256_fmadd_ps(a.v, b.v, c.v)}; }
  static VecH add(VecH a, VecH b) { return {_mm256_add_ps(a.v, b.v)}; }
  static VecH clamp_min(VecH v, float lo) { return {_mm256_max_ps(_mm256_set1_ps(lo), v.v)}; }
  static VecH clamp_max(VecH v, float hi) { return {_mm256_min_ps(_mm256_set1_ps(hi), v.v)}; }

 private:
  static __mmask8 mask(int n) { return static_cast<__mmask8>(n >= 8 ? 0xFFu : ((1u << n) - 1u)); }
};

// 8 double lanes: the float64 path of the templated kernels.
struct VecD {
  using Scalar = double;
  static constexpr int kWidth = 8;
  __m512d v;

  static VecD zero() { return {_mm512_setzero_pd()}; }
  static VecD set1(double x) { return {_mm512_set1_pd(x)}; }
  static VecD load(const double* p) { return {_mm512_loadu_pd(p)}; }
  static VecD load_partial(const double* p, int n) { return {_mm512_maskz_loadu_pd(mask(n), p)}; }
  void stream(double* p) const { _mm512_stream_pd(p, v); }
  static void stream_fence() { _mm_sfence(); }
  // Loads the lanes whose bit is set in `bits` (others are zero and never touched).
  static VecD load_mask(const double* p, unsigned bits) {
    return {_mm512_maskz_loadu_pd(static_cast<__mmask8>(bits), p)};
  }
  void store(double* p) const { _mm512_storeu_pd(p, v); }
  void store_partial(double* p, int n) const { _mm512_mask_storeu_pd(p, mask(n), v); }
  static VecD fmadd(VecD a, VecD b, VecD c) { return {_mm512_fmadd_pd(a.v, b.v, c.v)}; }
  static VecD add(VecD a, VecD b) { return {_mm512_add_pd(a.v, b.v)}; }
  static VecD clamp_min(VecD v, double lo) { return {_mm512_max_pd(_mm512_set1_pd(lo), v.v)}; }
  static VecD clamp_max(VecD v, double hi) { return {_mm512_min_pd(_mm512_set1_pd(hi), v.v)}; }
  static VecD sub(VecD a, VecD b) { return {_mm512_sub_pd(a.v, b.v)}; }
  static VecD mul(VecD a, VecD b) { return {_mm512_mul_pd(a.v, b.v)}; }
  static VecD div(VecD a, VecD b) { return {_mm512_div_pd(a.v, b.v)}; }
  static VecD recip(VecD a) { return {_mm512_div_pd(_mm512_set1_pd(1.0), a.v)}; }
  static VecD max(VecD a, VecD b) { return {_mm512_max_pd(a.v, b.v)}; }
  static VecD min(VecD a, VecD b) { return {_mm512_min_pd(a.v, b.v)}; }
  static VecD abs(VecD a) { return {_mm512_abs_pd(a.v)}; }
  static VecD round(VecD a) { return {_mm512_roundscale_pd(a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)}; }
  // a * 2^n for integer-valued n with |n| <= 2044.
  static VecD ldexp(VecD a, VecD n) { return {_mm512_scalef_pd(a.v, n.v)}; }
  static VecD select_lt(VecD a, VecD b, VecD t, VecD f) {
    return {_mm512_mask_blend_pd(_mm512_cmp_pd_mask(a.v, b.v, _CMP_LT_OQ), f.v, t.v)};
  }

  static double sum(VecD a) { return _mm512_reduce_add_pd(a.v); }

 private:
  static __mmask8 mask(int n) { return static_cast<__mmask8>(n >= 8 ? 0xFFu : ((1u << n) - 1u)); }
};

}  // namespace FC_NS
}  // namespace fastconv
