// The vector type for the ISA this translation unit is compiled for. Kernel
// sources include this header and are written once against VecF; CMake compiles
// them once per ISA, each copy inside its own namespace fastconv::FC_NS so the
// linker can never mix an AVX-512 instantiation into the scalar path.
#pragma once

#define FC_XCAT(a, b) a##b
#define FC_CAT(a, b) FC_XCAT(a, b)
#define FC_NS FC_CAT(isa_, FASTCONV_ISA)
#define FC_STR(a) #a
#define FC_XCAT_STR(a) FC_STR(a)

#if defined(__AVX512F__)
#include "simd/vec_avx512.h"
#elif defined(__AVX2__) && defined(__FMA__)
#include "simd/vec_avx2.h"
#else
#include "simd/vec_scalar.h"
#endif

#include <cstdint>  // uintptr_t

#include "core/buffer.h"
#include "core/params.h"

namespace fastconv {
namespace FC_NS {

// The vector type for element type T: Vec<float> = VecF, Vec<double> = VecD.
template <class T>
struct VecOf;
template <>
struct VecOf<float> {
  using type = VecF;
};
template <>
struct VecOf<double> {
  using type = VecD;
};
template <class T>
using Vec = typename VecOf<T>::type;

// The output size (bytes in all) from which a kernel may write with non-temporal
// stores, which skip the read of each line a plain store makes first. Measured per
// kernel: max_pool_backward gained; ReLU's forward on the same 25.7 MB lost (part of
// its output stays in the 32 MiB L3 for what reads it next).
constexpr int64_t kStreamMinBytes = int64_t{16} << 20;

// dst[0 .. n) = src[0 .. n), with non-temporal stores where dst is aligned to a
// vector. They are weakly ordered: call stream_fence() once the thread's copies are
// done, before a barrier after which other threads read them (a fence per call
// would wait for each copy to reach memory).
template <class T>
inline void stream_copy(T* dst, const T* src, int64_t n) {
  using V = Vec<T>;
  constexpr int64_t kAlign = sizeof(T) * V::kWidth;
  int64_t i = 0;
  for (; i < n && reinterpret_cast<uintptr_t>(dst + i) % kAlign != 0; ++i) dst[i] = src[i];
  for (; i + V::kWidth <= n; i += V::kWidth) V::load(src + i).stream(dst + i);
  for (; i < n; ++i) dst[i] = src[i];
}

inline void stream_fence() { VecF::stream_fence(); }

// ReLU / ReLU6 on a vector; NaN inputs stay NaN (as in PyTorch).
template <class V>
inline V apply_activation(V v, Activation act) {
  using S = typename V::Scalar;
  if (act == Activation::relu) return V::clamp_min(v, S(0));
  if (act == Activation::relu6) return V::clamp_max(V::clamp_min(v, S(0)), S(6));
  return v;
}

// Adds the bias for C[row][col .. col + lanes) and applies the activation.
// `row` and `col` are absolute coordinates in the full C.
template <class V>
inline V apply_epilogue(V r, const EpilogueT<typename V::Scalar>& epi, int64_t row, int64_t col, int lanes) {
  if (epi.bias_mode == BiasMode::per_row) {
    r = V::add(r, V::set1(epi.bias[row]));
  } else if (epi.bias_mode == BiasMode::per_col) {
    r = V::add(r, lanes >= V::kWidth ? V::load(epi.bias + col) : V::load_partial(epi.bias + col, lanes));
  }
  return apply_activation(r, epi.act);
}

inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }
inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }
// dst[0 .. n) = src[0 .. n) for short runs, where a libc call costs more than the copy.
template <class T>
inline void copy_floats(T* dst, const T* src, int64_t n) {
  using V = Vec<T>;
  constexpr int L = V::kWidth;
  int64_t i = 0;
  for (; i + L <= n; i += L) V::load(src + i).store(dst + i);
  if (i < n) V::load_partial(src + i, static_cast<int>(n - i)).store_partial(dst + i, static_cast<int>(n - i));
}

// dst[0 .. n) = value, for short runs (n <= 0 writes nothing).
template <class T>
inline void fill_floats(T* dst, T value, int64_t n) {
  using V = Vec<T>;
  constexpr int L = V::kWidth;
  const V v = V::set1(value);
  int64_t i = 0;
  for (; i + L <= n; i += L) v.store(dst + i);
  if (i < n) v.store_partial(dst + i, static_cast<int>(n - i));
}

// Bit mask of lanes lo .. hi - 1 (0 <= lo < hi <= 32).
inline unsigned lane_range_bits(int64_t lo, int64_t hi) {
  return ((hi >= 32 ? 0u : (1u << hi)) - 1u) & ~((1u << lo) - 1u);
}

// Lanes l of a vector of `lanes` (a float vector's by default) starting at column `col` that
// fall inside [0, w).
inline unsigned lanes_inside(int64_t col, int64_t w, int64_t lanes = VecF::kWidth) {
  const int64_t lo = imax(0, -col), hi = imin(lanes, w - col);
  return hi <= lo ? 0u : lane_range_bits(lo, hi);
}

// The first min(n, kWidth) elements at p as a vector (the rest zero), and the store that mirrors it.
template <class V>
inline V load_n(const typename V::Scalar* p, int64_t n) {
  return n >= V::kWidth ? V::load(p) : V::load_partial(p, static_cast<int>(n));
}
template <class V>
inline void store_n(V v, typename V::Scalar* p, int64_t n) {
  if (n >= V::kWidth) {
    v.store(p);
  } else {
    v.store_partial(p, static_cast<int>(n));
  }
}

// Elements per thread-private slice of a shared scratch buffer: whole 64-byte lines,
// so that two threads never write the same cache line.
inline int64_t per_thread_floats(int64_t floats) { return round_up(floats, 16); }

// Called inside a parallel region: out[i] = the sum over u < parts_count of the
// thread-private parts[u * stride + i], for i < n, the elements split statically
// across the region's threads. Each sum runs in part order, whichever thread adds it.
template <class T>
inline void sum_thread_parts(const T* parts, int64_t stride, int parts_count, int64_t n, T* out) {
#pragma omp for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    T sum = 0;
    for (int u = 0; u < parts_count; ++u) sum += parts[u * stride + i];
    out[i] = sum;
  }
}

// Scratch memory of `count` elements of T (int64 offsets, uint32 masks, float or
// double data) on top of the 64-byte aligned AlignedBuffer.
template <class T>
class Scratch {
  static_assert(sizeof(T) % sizeof(float) == 0, "Scratch holds 4- or 8-byte elements");

 public:
  Scratch() = default;
  explicit Scratch(int64_t count, bool zero = false)
      : buf_(checked_mul(count, static_cast<int64_t>(sizeof(T) / sizeof(float))), zero) {}
  T* data() const { return reinterpret_cast<T*>(buf_.data()); }

 private:
  AlignedBuffer buf_;
};

}  // namespace FC_NS
}  // namespace fastconv
