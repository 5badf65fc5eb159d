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

#include "core/params.h"

namespace fastconv {
namespace FC_NS {

// ReLU / ReLU6 on a vector; NaN inputs stay NaN (as in PyTorch).
inline VecF apply_activation(VecF v, Activation act) {
  if (act == Activation::relu) return VecF::clamp_min(v, 0.0f);
  if (act == Activation::relu6) return VecF::clamp_max(VecF::clamp_min(v, 0.0f), 6.0f);
  return v;
}

// Adds the bias for C[row][col .. col + lanes) and applies the activation.
// `row` and `col` are absolute coordinates in the full C.
inline VecF apply_epilogue(VecF r, const Epilogue& epi, int64_t row, int64_t col, int lanes) {
  if (epi.bias_mode == BiasMode::per_row) {
    r = VecF::add(r, VecF::set1(epi.bias[row]));
  } else if (epi.bias_mode == BiasMode::per_col) {
    r = VecF::add(r, lanes >= VecF::kWidth ? VecF::load(epi.bias + col) : VecF::load_partial(epi.bias + col, lanes));
  }
  return apply_activation(r, epi.act);
}

inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }
inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }
// dst[0 .. n) = src[0 .. n) for short runs, where a libc call costs more than the copy.
inline void copy_floats(float* dst, const float* src, int64_t n) {
  constexpr int L = VecF::kWidth;
  int64_t i = 0;
  for (; i + L <= n; i += L) VecF::load(src + i).store(dst + i);
  if (i < n) VecF::load_partial(src + i, static_cast<int>(n - i)).store_partial(dst + i, static_cast<int>(n - i));
}

// Floats per thread-private slice of a shared scratch buffer: whole 64-byte lines,
// so that two threads never write the same cache line.
inline int64_t per_thread_floats(int64_t floats) { return round_up(floats, 16); }

}  // namespace FC_NS
}  // namespace fastconv
