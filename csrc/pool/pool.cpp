// Pooling kernels, float and double. Planes (N * C) are independent and split
// across threads; within a plane, each output row is built by sweeping the
// window's taps over contiguous input rows, so the innermost loop runs along W
// and vectorises.
#include "pool/pool.h"

#include <omp.h>

#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

namespace fastconv {
namespace FC_NS {

namespace {

// Output range [lo, hi) along axis d whose tap at offset `off` lands inside the input.
inline void tap_range(const PoolArgs& a, int d, int64_t off, int64_t* lo, int64_t* hi) {
  const int64_t s = a.stride[d], n = a.in[d], out = a.out[d];
  *lo = imin(out, imax(0, ceil_div(-off, s)));
  *hi = imax(*lo, imin(out, off >= n ? 0 : ceil_div(n - off, s)));
}

int pool_threads(const PoolArgs& a) {
  const int64_t work = a.planes * imax(a.in_volume(), a.out_volume());
  return work < (1 << 15) ? 1 : a.threads;
}

// Calls fn(plane, out_row, od, oh, rows, nrows, scratch) for every output row,
// `rows` being the flat offsets (within the plane) of the nrows input rows the
// window covers, in window order. Planes are split across threads and a plane's
// rows run in order on one thread; `scratch` is that thread's buffer of
// `scratch_elems` S.
template <class S, class Fn>
void for_each_output_row(const PoolArgs& a, int64_t scratch_elems, Fn fn) {
#pragma omp parallel num_threads(pool_threads(a)) if (pool_threads(a) > 1)
  {
    std::vector<int64_t> rows(a.kernel[0] * a.kernel[1]);
    std::vector<S> scratch(scratch_elems);
#pragma omp for schedule(static)
    for (int64_t p = 0; p < a.planes; ++p) {
      for (int64_t od = 0; od < a.out[0]; ++od) {
        for (int64_t oh = 0; oh < a.out[1]; ++oh) {
          int nrows = 0;
          for (int64_t kz = 0; kz < a.kernel[0]; ++kz) {
            const int64_t id = od * a.stride[0] - a.pad[0] + kz * a.dil[0];
            if (id < 0 || id >= a.in[0]) continue;
            for (int64_t ky = 0; ky < a.kernel[1]; ++ky) {
              const int64_t ih = oh * a.stride[1] - a.pad[1] + ky * a.dil[1];
              if (ih < 0 || ih >= a.in[1]) continue;
              rows[nrows++] = (id * a.in[1] + ih) * a.in[2];
            }
          }
          fn(p, od * a.out[1] + oh, od, oh, rows.data(), nrows, scratch.data());
        }
      }
    }
  }
}

// PyTorch's average-pooling divisor factor along one axis for output o.
inline int64_t avg_factor(const PoolArgs& a, int d, int64_t o) {
  const int64_t start = o * a.stride[d] - a.pad[d];
  const int64_t end = imin(start + a.kernel[d], a.in[d] + a.pad[d]);
  if (a.count_include_pad) return end - start;
  return imin(end, a.in[d]) - imax(start, 0);
}

// The divisor of output (od, oh, ow): row(od, oh) * col[ow] (divisor_override, or
// the product of the per-axis factors).
template <class T>
struct AvgDivisors {
  const PoolArgs& a;
  std::vector<T> col;

  explicit AvgDivisors(const PoolArgs& args) : a(args), col(args.out[2], T(1)) {
    if (a.divisor_override <= 0)
      for (int64_t ow = 0; ow < a.out[2]; ++ow) col[ow] = T(avg_factor(a, 2, ow));
  }
  T row(int64_t od, int64_t oh) const {
    return a.divisor_override > 0 ? T(a.divisor_override) : T(avg_factor(a, 0, od) * avg_factor(a, 1, oh));
  }
};

}  // namespace

// One tap's sweep along W: take each input that beats the running maximum (or is
// NaN); with indices, also record where it came from. Indices are kept as int32
// in the loop (same lane count as float, so it vectorises) when a plane is small
// enough.
template <class T, class I>
inline void max_tap(const T* __restrict xr, T* __restrict yr, I* __restrict ir, int64_t lo, int64_t hi, int64_t sw,
                    int64_t off, int64_t base) {
  if (ir) {
#pragma omp simd
    for (int64_t ow = lo; ow < hi; ++ow) {
      const T v = xr[ow * sw + off], m = yr[ow];
      const I i = ir[ow];
      const bool take = v > m || v != v || i < 0;
      yr[ow] = take ? v : m;
      ir[ow] = take ? static_cast<I>(base + ow * sw + off) : i;
    }
  } else if (sw == 1) {
#pragma omp simd
    for (int64_t ow = lo; ow < hi; ++ow) {
      const T v = xr[ow + off], m = yr[ow];
      yr[ow] = (v > m || v != v) ? v : m;
    }
  } else {
#pragma omp simd
    for (int64_t ow = lo; ow < hi; ++ow) {
      const T v = xr[ow * sw + off], m = yr[ow];
      yr[ow] = (v > m || v != v) ? v : m;
    }
  }
}

// One output row of a float pool with stride 2 along W (max without indices, or
// average): each vector of outputs is kept in a register over every tap of the window,
// and a tap's inputs for it (every other element from its first) come from two loads
// and a deinterleave, where the generic sweeps make strided element loads. Positions
// outside the row load as `fill` (-inf for max, so they never win, NaN still winning
// as in max_tap; 0 for the average). Taps are combined in the generic sweeps' order.
template <class Combine>
inline VecF pool_vector_stride2(const PoolArgs& a, const float* xp, const int64_t* rows, int nrows, int64_t ow,
                                float fill, Combine combine) {
  using V = VecF;
  constexpr int L = V::kWidth;
  const int64_t w = a.in[2];
  V acc = V::set1(fill);
  for (int r = 0; r < nrows; ++r) {
    const float* xr = xp + rows[r];
    for (int64_t kx = 0; kx < a.kernel[2]; ++kx) {
      const int64_t c = 2 * ow + kx * a.dil[2] - a.pad[2];  // the tap's input column for lane 0
      const bool inside = c >= 0 && c + 2 * L <= w;
      const V lo = inside ? V::load(xr + c) : V::load_mask_or(xr + c, lanes_inside(c, w), fill);
      const V hi = inside ? V::load(xr + c + L) : V::load_mask_or(xr + c + L, lanes_inside(c + L, w), fill);
      V even, odd;
      V::deinterleave2(lo, hi, &even, &odd);
      acc = combine(acc, even);
    }
  }
  return acc;
}

inline void max_row_stride2(const PoolArgs& a, const float* xp, const int64_t* rows, int nrows, float* yr) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  for (int64_t ow = 0; ow < a.out[2]; ow += VecF::kWidth)
    store_n(pool_vector_stride2(a, xp, rows, nrows, ow, kNegInf, VecF::max_nan), yr + ow, a.out[2] - ow);
}

template <class T, class I>
void max_pool_rows(const PoolArgs& a, const T* x, T* y, int64_t* indices) {
  const int64_t wo = a.out[2], sw = a.stride[2], in_vol = a.in_volume(), out_vol = a.out_volume();
  for_each_output_row<char>(a, 0, [&](int64_t p, int64_t orow, int64_t, int64_t, const int64_t* rows, int nrows,
                                      char*) {
    T* yr = y + p * out_vol + orow * wo;
    if constexpr (std::is_same_v<T, float>) {
      if (!indices && sw == 2) return max_row_stride2(a, x + p * in_vol, rows, nrows, yr);
    }
    int64_t* ir64 = indices ? indices + p * out_vol + orow * wo : nullptr;
    // The int32 row of indices lives in the first half of the int64 output row and
    // is widened in place, back to front, at the end.
    I* ir = reinterpret_cast<I*>(ir64);
    const T* xp = x + p * in_vol;
    for (int64_t ow = 0; ow < wo; ++ow) yr[ow] = -std::numeric_limits<T>::infinity();
    if (ir)
      for (int64_t ow = 0; ow < wo; ++ow) ir[ow] = -1;
    for (int r = 0; r < nrows; ++r) {
      for (int64_t kx = 0; kx < a.kernel[2]; ++kx) {
        const int64_t off = kx * a.dil[2] - a.pad[2];
        int64_t lo, hi;
        tap_range(a, 2, off, &lo, &hi);
        max_tap<T, I>(xp + rows[r], yr, ir, lo, hi, sw, off, rows[r]);
      }
    }
    if (ir && sizeof(I) < sizeof(int64_t))
      for (int64_t ow = wo - 1; ow >= 0; --ow) ir64[ow] = static_cast<int64_t>(ir[ow]);
  });
}

template <class T>
void max_pool_forward(const PoolArgs& a, const T* x, T* y, int64_t* indices) {
  if (a.in_volume() < (int64_t(1) << 31))
    max_pool_rows<T, int32_t>(a, x, y, indices);
  else
    max_pool_rows<T, int64_t>(a, x, y, indices);
}

template <class T>
bool max_pool_backward(const PoolArgs& a, const T* grad_y, const int64_t* indices, T* grad_x) {
  const int64_t in_vol = a.in_volume(), out_vol = a.out_volume();
  const int threads = pool_threads(a);
  bool ok = true;
#pragma omp parallel for num_threads(threads) schedule(static) reduction(&& : ok) if (threads > 1)
  for (int64_t p = 0; p < a.planes; ++p) {
    T* gx = grad_x + p * in_vol;
    const T* gy = grad_y + p * out_vol;
    const int64_t* ix = indices + p * out_vol;
    std::memset(gx, 0, sizeof(T) * in_vol);
    for (int64_t o = 0; o < out_vol; ++o) {
      const int64_t i = ix[o];
      if (i >= 0 && i < in_vol)
        gx[i] += gy[o];
      else if (i != -1)  // -1: a window with no tap inside the input
        ok = false;
    }
  }
  return ok;
}

template <class T>
void avg_pool_forward(const PoolArgs& a, const T* x, T* y) {
  const int64_t wo = a.out[2], sw = a.stride[2], in_vol = a.in_volume(), out_vol = a.out_volume();
  const AvgDivisors<T> div(a);
  for_each_output_row<char>(a, 0, [&](int64_t p, int64_t orow, int64_t od, int64_t oh, const int64_t* rows, int nrows,
                                      char*) {
    T* __restrict yr = y + p * out_vol + orow * wo;
    const T* xp = x + p * in_vol;
    if constexpr (std::is_same_v<T, float>) {
      if (sw == 2) {
        const VecF hd = VecF::set1(div.row(od, oh));
        for (int64_t ow = 0; ow < wo; ow += VecF::kWidth) {
          const VecF sum = pool_vector_stride2(a, xp, rows, nrows, ow, 0.0f, VecF::add);
          store_n(VecF::div(sum, VecF::mul(hd, load_n<VecF>(div.col.data() + ow, wo - ow))), yr + ow, wo - ow);
        }
        return;
      }
    }
    for (int64_t ow = 0; ow < wo; ++ow) yr[ow] = 0;
    for (int r = 0; r < nrows; ++r) {
      const T* __restrict xr = xp + rows[r];
      for (int64_t kx = 0; kx < a.kernel[2]; ++kx) {
        const int64_t off = kx * a.dil[2] - a.pad[2];
        int64_t lo, hi;
        tap_range(a, 2, off, &lo, &hi);
        if (sw == 1) {
#pragma omp simd
          for (int64_t ow = lo; ow < hi; ++ow) yr[ow] += xr[ow + off];
        } else {
#pragma omp simd
          for (int64_t ow = lo; ow < hi; ++ow) yr[ow] += xr[ow * sw + off];
        }
      }
    }
    const T hd = div.row(od, oh);
    for (int64_t ow = 0; ow < wo; ++ow) yr[ow] /= hd * div.col[ow];
  });
}

template <class T>
void avg_pool_backward(const PoolArgs& a, const T* grad_y, T* grad_x) {
  const int64_t wo = a.out[2], sw = a.stride[2], in_vol = a.in_volume(), out_vol = a.out_volume();
  const AvgDivisors<T> div(a);
  // A plane's rows run in order on one thread, which zeroes the plane first and
  // then scatters into it alone.
  for_each_output_row<T>(a, wo, [&](int64_t p, int64_t orow, int64_t od, int64_t oh, const int64_t* rows, int nrows,
                                    T* scaled) {
    T* gx = grad_x + p * in_vol;
    if (orow == 0) std::memset(gx, 0, sizeof(T) * in_vol);
    const T* gy = grad_y + p * out_vol + orow * wo;
    const T hd = div.row(od, oh);
    for (int64_t ow = 0; ow < wo; ++ow) scaled[ow] = gy[ow] / (hd * div.col[ow]);
    for (int r = 0; r < nrows; ++r) {
      T* __restrict gr = gx + rows[r];
      const T* __restrict sc = scaled;
      for (int64_t kx = 0; kx < a.kernel[2]; ++kx) {
        const int64_t off = kx * a.dil[2] - a.pad[2];
        int64_t lo, hi;
        tap_range(a, 2, off, &lo, &hi);
        if (sw == 1) {
#pragma omp simd
          for (int64_t ow = lo; ow < hi; ++ow) gr[ow + off] += sc[ow];
        } else {
          for (int64_t ow = lo; ow < hi; ++ow) gr[ow * sw + off] += sc[ow];
        }
      }
    }
  });
}

namespace {

inline int64_t adaptive_start(int64_t o, int64_t in, int64_t out) { return (o * in) / out; }
inline int64_t adaptive_end(int64_t o, int64_t in, int64_t out) { return ((o + 1) * in + out - 1) / out; }

// Calls fn(plane, flat output index, z0, z1, y0, y1, x0, x1) for every output.
template <class Fn>
void for_each_adaptive_window(const PoolArgs& a, Fn fn) {
  const int threads = pool_threads(a);
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int64_t p = 0; p < a.planes; ++p) {
    int64_t o = 0;
    for (int64_t od = 0; od < a.out[0]; ++od) {
      const int64_t z0 = adaptive_start(od, a.in[0], a.out[0]), z1 = adaptive_end(od, a.in[0], a.out[0]);
      for (int64_t oh = 0; oh < a.out[1]; ++oh) {
        const int64_t y0 = adaptive_start(oh, a.in[1], a.out[1]), y1 = adaptive_end(oh, a.in[1], a.out[1]);
        for (int64_t ow = 0; ow < a.out[2]; ++ow, ++o) {
          const int64_t x0 = adaptive_start(ow, a.in[2], a.out[2]), x1 = adaptive_end(ow, a.in[2], a.out[2]);
          fn(p, o, z0, z1, y0, y1, x0, x1);
        }
      }
    }
  }
}

}  // namespace

template <class T>
void adaptive_pool_forward(const PoolArgs& a, bool max, const T* x, T* y, int64_t* indices) {
  const int64_t in_vol = a.in_volume(), out_vol = a.out_volume(), h = a.in[1], w = a.in[2];
  for_each_adaptive_window(a, [&](int64_t p, int64_t o, int64_t z0, int64_t z1, int64_t y0, int64_t y1, int64_t x0,
                                  int64_t x1) {
    const T* xp = x + p * in_vol;
    if (max) {
      T best = -std::numeric_limits<T>::infinity();
      int64_t at = -1;
      for (int64_t z = z0; z < z1; ++z)
        for (int64_t r = y0; r < y1; ++r)
          for (int64_t c = x0; c < x1; ++c) {
            const int64_t i = (z * h + r) * w + c;
            const T v = xp[i];
            if (v > best || v != v || at < 0) {
              best = v;
              at = i;
            }
          }
      y[p * out_vol + o] = best;
      if (indices) indices[p * out_vol + o] = at;
    } else {
      T sum = 0;
      for (int64_t z = z0; z < z1; ++z)
        for (int64_t r = y0; r < y1; ++r) {
          const T* row = xp + (z * h + r) * w;
          T part = 0;
#pragma omp simd reduction(+ : part)
          for (int64_t c = x0; c < x1; ++c) part += row[c];
          sum += part;
        }
      y[p * out_vol + o] = sum / T((z1 - z0) * (y1 - y0) * (x1 - x0));
    }
  });
}

template <class T>
void adaptive_avg_pool_backward(const PoolArgs& a, const T* grad_y, T* grad_x) {
  const int64_t in_vol = a.in_volume(), out_vol = a.out_volume(), h = a.in[1], w = a.in[2];
  // Each plane's outputs run in order on one thread (the loop is parallel over planes).
  for_each_adaptive_window(a, [&](int64_t p, int64_t o, int64_t z0, int64_t z1, int64_t y0, int64_t y1, int64_t x0,
                                  int64_t x1) {
    T* gx = grad_x + p * in_vol;
    if (o == 0) std::memset(gx, 0, sizeof(T) * in_vol);
    const T g = grad_y[p * out_vol + o] / T((z1 - z0) * (y1 - y0) * (x1 - x0));
    for (int64_t z = z0; z < z1; ++z)
      for (int64_t r = y0; r < y1; ++r) {
        T* row = gx + (z * h + r) * w;
#pragma omp simd
        for (int64_t c = x0; c < x1; ++c) row[c] += g;
      }
  });
}

#define FC_INSTANTIATE_POOL(T)                                                                   \
  template void max_pool_forward<T>(const PoolArgs&, const T*, T*, int64_t*);                    \
  template bool max_pool_backward<T>(const PoolArgs&, const T*, const int64_t*, T*);             \
  template void avg_pool_forward<T>(const PoolArgs&, const T*, T*);                              \
  template void avg_pool_backward<T>(const PoolArgs&, const T*, T*);                             \
  template void adaptive_pool_forward<T>(const PoolArgs&, bool, const T*, T*, int64_t*);         \
  template void adaptive_avg_pool_backward<T>(const PoolArgs&, const T*, T*);
FC_INSTANTIATE_POOL(float)
FC_INSTANTIATE_POOL(double)

}  // namespace FC_NS
}  // namespace fastconv
