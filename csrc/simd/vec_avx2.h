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
  // Loads the lanes whose bit is set in `bits` (others are zero and never touched).
  static VecF load_mask(const float* p, unsigned bits) { return {_mm256_maskload_ps(p, bits_mask(bits))}; }
  static VecF fmadd(VecF a, VecF b, VecF c) { return {_mm256_fmadd_ps(a.v, b.v, c.v)}; }
  static VecF add(VecF a, VecF b) { return {_mm256_add_ps(a.v, b.v)}; }
  static VecF clamp_min(VecF v, float lo) { return {_mm256_max_ps(_mm256_set1_ps(lo), v.v)}; }
  static VecF clamp_max(VecF v, float hi) { return {_mm256_min_ps(_mm256_set1_ps(hi), v.v)}; }

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
  void store(double* p) const { _mm256_storeu_pd(p, v); }
  void store_partial(double* p, int n) const { _mm256_maskstore_pd(p, mask(n), v); }
  static VecD fmadd(VecD a, VecD b, VecD c) { return {_mm256_fmadd_pd(a.v, b.v, c.v)}; }
  static VecD add(VecD a, VecD b) { return {_mm256_add_pd(a.v, b.v)}; }
  static VecD clamp_min(VecD v, double lo) { return {_mm256_max_pd(_mm256_set1_pd(lo), v.v)}; }
  static VecD clamp_max(VecD v, double hi) { return {_mm256_min_pd(_mm256_set1_pd(hi), v.v)}; }

 private:
  static __m256i mask(int n) {
    alignas(32) static const long long kTable[8] = {-1, -1, -1, -1, 0, 0, 0, 0};
    n = n < 0 ? 0 : (n > 4 ? 4 : n);
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kTable + 4 - n));
  }
};

}  // namespace FC_NS
}  // namespace fastconv
