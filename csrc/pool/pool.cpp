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

// Lanes j of a vector get columns c + 2j (even) and c + 2j + 1 (odd) of input row xr, of width
// w, from two loads and a deinterleave; columns outside the row read as `fill`.
inline void load_stride2_pair(const float* xr, int64_t c, int64_t w, float fill, VecF* even, VecF* odd) {
  using V = VecF;
  constexpr int L = V::kWidth;
  const bool inside = c >= 0 && c + 2 * L <= w;
  const V lo = inside ? V::load(xr + c) : V::load_mask_or(xr + c, lanes_inside(c, w), fill);
  const V hi = inside ? V::load(xr + c + L) : V::load_mask_or(xr + c + L, lanes_inside(c + L, w), fill);
  V::deinterleave2(lo, hi, even, odd);
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
  const int64_t w = a.in[2];
  V acc = V::set1(fill);
  for (int r = 0; r < nrows; ++r) {
    const float* xr = xp + rows[r];
    // Without dilation, tap kx + 1 reads the odd lanes of the pair tap kx loads.
    const int64_t step = a.dil[2] == 1 ? 2 : 1;
    for (int64_t kx = 0; kx < a.kernel[2]; kx += step) {
      V even, odd;
      load_stride2_pair(xr, 2 * ow + kx * a.dil[2] - a.pad[2], w, fill, &even, &odd);
      acc = combine(acc, even);
      if (step == 2 && kx + 1 < a.kernel[2]) acc = combine(acc, odd);
    }
  }
  return acc;
}

// The window's nrows input rows folded into one row of W columns with `combine`
// (their maximum or sum), so that the stride-2 sweep then reads a single row: the
// sweep's vector pairs per output fall from pairs * nrows to pairs, for a pass over
// the rows. That pays when a row takes two or more pairs (a window 3 or more wide),
// so only then are the rows folded: the function returns the row set to sweep,
// `folded` itself (rows = {0}, one row) or the original rows.
template <class Combine>
inline const float* fold_rows(const PoolArgs& a, const float* xp, const int64_t*& rows, int& nrows, float* folded,
                              Combine combine) {
  static const int64_t kFirst = 0;
  const int64_t pairs = a.dil[2] == 1 ? ceil_div(a.kernel[2], 2) : a.kernel[2];
  if (nrows < 2 || pairs < 2) return xp;
  const int64_t w = a.in[2];
  for (int64_t c = 0; c < w; c += VecF::kWidth) {
    VecF v = load_n<VecF>(xp + rows[0] + c, w - c);
    for (int r = 1; r < nrows; ++r) v = combine(v, load_n<VecF>(xp + rows[r] + c, w - c));
    store_n(v, folded + c, w - c);
  }
  rows = &kFirst;
  nrows = 1;
  return folded;
}

inline void max_row_stride2(const PoolArgs& a, const float* xp, const int64_t* rows, int nrows, float* folded,
                            float* yr) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  xp = fold_rows(a, xp, rows, nrows, folded, VecF::max_nan);
  for (int64_t ow = 0; ow < a.out[2]; ow += VecF::kWidth)
    store_n(pool_vector_stride2(a, xp, rows, nrows, ow, kNegInf, VecF::max_nan), yr + ow, a.out[2] - ow);
}

#if defined(__AVX512F__)
// Bits of the lanes j of a vector whose input column col0 + 2j lies in [0, w).
inline __mmask16 stride2_lanes_inside(int64_t col0, int64_t w) {
  const int64_t lo = imax(0, ceil_div(-col0, 2)), hi = imin(VecF::kWidth, ceil_div(w - col0, 2));
  return static_cast<__mmask16>(hi <= lo ? 0u : lane_range_bits(lo, hi));
}

// One output row of a float max pool with stride 2 along W, with indices: each vector of
// outputs keeps its running maximum and that input's position in the plane in registers over
// the window's taps (the position as a float, exact below 2^24), where the generic sweep
// makes strided loads and reads and writes both rows once per tap. Taps run in the generic
// sweep's order and win by its rule: above the maximum, NaN, or the first inside the input.
inline void max_row_stride2_indices(const PoolArgs& a, const float* xp, const int64_t* rows, int nrows, float* yr,
                                    int64_t* ir) {
  using V = VecF;
  constexpr int L = V::kWidth;
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  const int64_t w = a.in[2], wo = a.out[2];
  const __m512 two_j = _mm512_set_ps(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  const int64_t step = a.dil[2] == 1 ? 2 : 1;  // without dilation, tap kx + 1 is the odd lanes of tap kx's pair
  for (int64_t ow = 0; ow < wo; ow += L) {
    __m512 best = _mm512_set1_ps(kNegInf), at = _mm512_set1_ps(-1.0f);
    __mmask16 seen = 0;
    auto take = [&](__m512 v, __mmask16 inside, int64_t pos0) {
      const __mmask16 wins = (_mm512_cmp_ps_mask(v, best, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q) |
                              static_cast<__mmask16>(~seen)) & inside;
      best = _mm512_mask_mov_ps(best, wins, v);
      at = _mm512_mask_add_ps(at, wins, _mm512_set1_ps(static_cast<float>(pos0)), two_j);
      seen |= wins;
    };
    // Every tap of a vector whose window lies inside the row: whole loads, and a win is a tap above
    // the maximum or NaN (the first tap starts them).
    const bool interior = 2 * ow - a.pad[2] >= 0 && 2 * ow + (a.kernel[2] - 1) * a.dil[2] - a.pad[2] + 2 * L <= w;
    if (interior) {
      bool first = true;
      for (int r = 0; r < nrows; ++r) {
        const float* xr = xp + rows[r];
        for (int64_t kx = 0; kx < a.kernel[2]; kx += step) {
          const int64_t c = 2 * ow + kx * a.dil[2] - a.pad[2];
          V even, odd;
          V::deinterleave2(V::load(xr + c), V::load(xr + c + L), &even, &odd);
          for (int h = 0; h < (step == 2 && kx + 1 < a.kernel[2] ? 2 : 1); ++h) {
            const __m512 v = h ? odd.v : even.v;
            const __m512 pos = _mm512_add_ps(_mm512_set1_ps(static_cast<float>(rows[r] + c + h)), two_j);
            if (first) {
              best = v;
              at = pos;
              first = false;
              continue;
            }
            const __mmask16 wins = _mm512_cmp_ps_mask(v, best, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
            best = _mm512_mask_mov_ps(best, wins, v);
            at = _mm512_mask_mov_ps(at, wins, pos);
          }
        }
      }
    } else {
      for (int r = 0; r < nrows; ++r) {
        const float* xr = xp + rows[r];
        for (int64_t kx = 0; kx < a.kernel[2]; kx += step) {
          const int64_t c = 2 * ow + kx * a.dil[2] - a.pad[2];  // the tap's input column for lane 0
          V even, odd;
          load_stride2_pair(xr, c, w, kNegInf, &even, &odd);
          take(even.v, stride2_lanes_inside(c, w), rows[r] + c);
          if (step == 2 && kx + 1 < a.kernel[2]) take(odd.v, stride2_lanes_inside(c + 1, w), rows[r] + c + 1);
        }
      }
    }
    const int n = static_cast<int>(imin(L, wo - ow));
    V{best}.store_partial(yr + ow, n);
    const __m512i at32 = _mm512_cvtps_epi32(at);
    const __mmask8 m0 = static_cast<__mmask8>(n >= 8 ? 0xFFu : (1u << n) - 1u);
    const __mmask8 m1 = static_cast<__mmask8>(n >= L ? 0xFFu : n > 8 ? (1u << (n - 8)) - 1u : 0u);
    _mm512_mask_storeu_epi64(ir + ow, m0, _mm512_cvtepi32_epi64(_mm512_castsi512_si256(at32)));
    _mm512_mask_storeu_epi64(ir + ow + 8, m1, _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(at32, 1)));
  }
}
#endif

template <class T, class I>
void max_pool_rows(const PoolArgs& a, const T* x, T* y, int64_t* indices) {
  const int64_t wo = a.out[2], sw = a.stride[2], in_vol = a.in_volume(), out_vol = a.out_volume();
  for_each_output_row<T>(a, a.in[2], [&](int64_t p, int64_t orow, int64_t, int64_t, const int64_t* rows, int nrows,
                                         T* scratch) {
    T* yr = y + p * out_vol + orow * wo;
    if constexpr (std::is_same_v<T, float>) {
      if (!indices && sw == 2) return max_row_stride2(a, x + p * in_vol, rows, nrows, scratch, yr);
#if defined(__AVX512F__)
      if (sw == 2 && in_vol < (int64_t(1) << 24))
        return max_row_stride2_indices(a, x + p * in_vol, rows, nrows, yr, indices + p * out_vol + orow * wo);
#endif
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

// Adds grad_y's n values at their indices in a plane of in_vol: below `done` into
// `written`, from there into `building`. False if an index is neither in the plane
// nor -1 (a window with no tap inside the input).
template <class T>
bool add_at_indices(const T* gy, const int64_t* ix, int64_t n, int64_t in_vol, int64_t done, T* written,
                    T* building) {
  bool ok = true;
  for (int64_t o = 0; o < n; ++o) {
    const int64_t i = ix[o];
    if (static_cast<uint64_t>(i) < static_cast<uint64_t>(in_vol))
      (i < done ? written : building)[i] += gy[o];
    else if (i != -1)
      ok = false;
  }
  return ok;
}

// Planes of at most this many bytes are built in a thread's scratch buffer (in its
// L2) and streamed out when grad_x is large (kStreamMinBytes).
constexpr int64_t kStagedPlaneMaxBytes = int64_t{256} << 10;

// One plane of max_pool_backward built in `scratch` and copied to gx with non-temporal
// stores, so that gx's lines are never read from memory (a plain store reads each line
// first). For a 2-D pool the copy goes row by row, as soon as no later output's
// window reaches a row, so that the writes overlap the reads of grad_y and the indices;
// an index below that point (outside its window) is added to gx itself.
template <class T>
bool max_backward_plane_staged(const PoolArgs& a, const T* gy, const int64_t* ix, T* scratch, T* gx) {
  const int64_t in_vol = a.in_volume(), wo = a.out[2], out_rows = a.out[0] * a.out[1];
  std::memset(scratch, 0, sizeof(T) * in_vol);
  int64_t done = 0;  // gx[0 .. done) is written
  bool ok = true;
  for (int64_t r = 0; r < out_rows; ++r) {
    ok = add_at_indices(gy + r * wo, ix + r * wo, wo, in_vol, done, gx, scratch) && ok;
    int64_t next = in_vol;  // where the next output row's window starts
    if (a.out[0] == 1 && r + 1 < out_rows) {
      next = imin(a.in[1], imax(0, (r + 1) * a.stride[1] - a.pad[1])) * a.in[2];
      // down to a cache line of gx, so that no line takes both kinds of store
      const int64_t line = 64 / int64_t(sizeof(T));
      next -= (reinterpret_cast<uintptr_t>(gx + next) / sizeof(T)) % line;
    }
    if (next > done) {
      stream_copy(gx + done, scratch + done, next - done);
      done = next;
    }
  }
  return ok;
}

// Max-pooling backward: per plane, zero the plane and add each output's gradient at
// its index. When grad_x is too large to stay in the caches, planes go through
// max_backward_plane_staged.
template <class T>
bool max_pool_backward(const PoolArgs& a, const T* grad_y, const int64_t* indices, T* grad_x) {
  const int64_t in_vol = a.in_volume(), out_vol = a.out_volume();
  const int threads = pool_threads(a);
  const bool staged = int64_t(sizeof(T)) * in_vol <= kStagedPlaneMaxBytes &&
                      int64_t(sizeof(T)) * in_vol * a.planes >= kStreamMinBytes;
  bool ok = true;
#pragma omp parallel num_threads(threads) reduction(&& : ok) if (threads > 1)
  {
    std::vector<T> scratch(staged ? in_vol : 0);
#pragma omp for schedule(static)
    for (int64_t p = 0; p < a.planes; ++p) {
      T* gx = grad_x + p * in_vol;
      const T* gy = grad_y + p * out_vol;
      const int64_t* ix = indices + p * out_vol;
      if (staged) {
        ok = max_backward_plane_staged(a, gy, ix, scratch.data(), gx) && ok;
      } else {
        std::memset(gx, 0, sizeof(T) * in_vol);
        ok = add_at_indices(gy, ix, out_vol, in_vol, 0, gx, gx) && ok;
      }
    }
    if (staged) stream_fence();
  }
  return ok;
}

template <class T>
void avg_pool_forward(const PoolArgs& a, const T* x, T* y) {
  const int64_t wo = a.out[2], sw = a.stride[2], in_vol = a.in_volume(), out_vol = a.out_volume();
  const AvgDivisors<T> div(a);
  for_each_output_row<T>(a, a.in[2], [&](int64_t p, int64_t orow, int64_t od, int64_t oh, const int64_t* rows,
                                         int nrows, T* scratch) {
    T* __restrict yr = y + p * out_vol + orow * wo;
    const T* xp = x + p * in_vol;
    if constexpr (std::is_same_v<T, float>) {
      if (sw == 2) {
        xp = fold_rows(a, xp, rows, nrows, scratch, VecF::add);
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

// The taps of a float average-pooling backward row with stride 1 or 2 along W:
// column c0 + ph + stride * lane (c0 a multiple of stride * kWidth) takes, from
// tap kx, output column c0 / stride + shift + lane, where the window start
// ph + pad - kx * dil is a multiple of the stride (shift being its quotient).
struct AvgBackwardTap {
  int ph;
  int64_t shift;
};

std::vector<AvgBackwardTap> avg_backward_taps(const PoolArgs& a) {
  std::vector<AvgBackwardTap> taps;
  for (int ph = 0; ph < a.stride[2]; ++ph)
    for (int64_t kx = 0; kx < a.kernel[2]; ++kx) {
      const int64_t q = ph + a.pad[2] - kx * a.dil[2];
      if (q % a.stride[2] == 0) taps.push_back({ph, q / a.stride[2]});
    }
  return taps;
}

// One input row of a float average-pooling backward with stride 1 or 2 along W:
// grad_x[c] is the sum, over the (already divided) gradient rows `rows` and the
// taps, of row[(c + pad - kx * dil) / stride]. A vector of columns (with stride
// 2, one per column parity, interleaved at the end) is built in registers from
// shifted loads of the gradient rows, masked only near the rows' ends, and
// stored once. `terms` is scratch for 2 * taps * nrows entries.
struct AvgBackwardTerm {
  const float* row;
  int64_t shift;
};

inline void avg_backward_row_vector(const PoolArgs& a, const std::vector<AvgBackwardTap>& taps,
                                    const float* const* rows, int nrows, AvgBackwardTerm* terms, float* gx) {
  using V = VecF;
  constexpr int L = V::kWidth;
  const int64_t w = a.in[2], wo = a.out[2], sw = a.stride[2];
  // The terms of each column parity, and the shifts' range.
  const int64_t half = static_cast<int64_t>(taps.size()) * nrows;
  AvgBackwardTerm* even = terms;
  AvgBackwardTerm* odd = terms + half;
  int ne = 0, no = 0;
  int64_t lo = 0, hi = 0;
  for (const AvgBackwardTap& t : taps) {
    for (int r = 0; r < nrows; ++r) (t.ph ? odd[no++] : even[ne++]) = {rows[r], t.shift};
    lo = imin(lo, t.shift);
    hi = imax(hi, t.shift);
  }
  for (int64_t c0 = 0, ob = 0; c0 < w; c0 += sw * L, ob += L) {
    V e = V::zero(), o = V::zero();
    if (ob + lo >= 0 && ob + hi + L <= wo) {
      for (int i = 0; i < ne; ++i) e = V::add(e, V::load(even[i].row + ob + even[i].shift));
      for (int i = 0; i < no; ++i) o = V::add(o, V::load(odd[i].row + ob + odd[i].shift));
    } else {
      for (int i = 0; i < ne; ++i)
        if (const unsigned bits = lanes_inside(ob + even[i].shift, wo))
          e = V::add(e, V::load_mask(even[i].row + ob + even[i].shift, bits));
      for (int i = 0; i < no; ++i)
        if (const unsigned bits = lanes_inside(ob + odd[i].shift, wo))
          o = V::add(o, V::load_mask(odd[i].row + ob + odd[i].shift, bits));
    }
    if (sw == 1) {
      store_n(e, gx + c0, w - c0);
    } else {
      V l, h;
      V::interleave2(e, o, &l, &h);
      store_n(l, gx + c0, w - c0);
      if (w - c0 > L) store_n(h, gx + c0 + L, w - c0 - L);
    }
  }
}

// Average-pooling backward in gather form: each input row is written once, from
// the divided gradient rows of the output rows whose windows cover it. grad_x is
// never zero-filled as a whole and never read back from memory.
template <class T>
void avg_pool_backward(const PoolArgs& a, const T* grad_y, T* grad_x) {
  const int64_t w = a.in[2], wo = a.out[2], sw = a.stride[2], in_vol = a.in_volume(), out_vol = a.out_volume();
  const AvgDivisors<T> div(a);
  const std::vector<AvgBackwardTap> taps = avg_backward_taps(a);
  const int threads = pool_threads(a);
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    std::vector<T> scaled(out_vol);
    std::vector<const T*> cover(a.kernel[0] * a.kernel[1]);
    std::vector<AvgBackwardTerm> terms(2 * taps.size() * cover.size());
#pragma omp for schedule(static)
    for (int64_t p = 0; p < a.planes; ++p) {
      const T* gy = grad_y + p * out_vol;
      for (int64_t od = 0; od < a.out[0]; ++od)
        for (int64_t oh = 0; oh < a.out[1]; ++oh) {
          const int64_t orow = (od * a.out[1] + oh) * wo;
          const T hd = div.row(od, oh);
#pragma omp simd
          for (int64_t ow = 0; ow < wo; ++ow) scaled[orow + ow] = gy[orow + ow] / (hd * div.col[ow]);
        }
      for (int64_t id = 0; id < a.in[0]; ++id)
        for (int64_t ih = 0; ih < a.in[1]; ++ih) {
          T* __restrict gx = grad_x + p * in_vol + (id * a.in[1] + ih) * w;
          // The output rows whose windows hold input row (id, ih), in window order.
          int n = 0;
          for (int64_t kz = 0; kz < a.kernel[0]; ++kz) {
            const int64_t tz = id + a.pad[0] - kz * a.dil[0];
            if (tz < 0 || tz % a.stride[0] || tz / a.stride[0] >= a.out[0]) continue;
            for (int64_t ky = 0; ky < a.kernel[1]; ++ky) {
              const int64_t ty = ih + a.pad[1] - ky * a.dil[1];
              if (ty < 0 || ty % a.stride[1] || ty / a.stride[1] >= a.out[1]) continue;
              cover[n++] = scaled.data() + ((tz / a.stride[0]) * a.out[1] + ty / a.stride[1]) * wo;
            }
          }
          if constexpr (std::is_same_v<T, float>) {
            if (sw <= 2) {
              avg_backward_row_vector(a, taps, cover.data(), n, terms.data(), gx);
              continue;
            }
          }
          std::memset(gx, 0, sizeof(T) * w);
          for (int r = 0; r < n; ++r)
            for (int64_t kx = 0; kx < a.kernel[2]; ++kx) {
              const int64_t off = kx * a.dil[2] - a.pad[2];
              int64_t lo, hi;
              tap_range(a, 2, off, &lo, &hi);
              for (int64_t ow = lo; ow < hi; ++ow) gx[ow * sw + off] += cover[r][ow];
            }
        }
    }
  }
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

// Per axis: the adaptive windows [start, end) of every output, and for every
// input index the first and last outputs whose windows hold it (windows are
// monotone and cover the axis, so those outputs are one run).
struct AdaptiveAxis {
  std::vector<int64_t> start, end, first, last;
  AdaptiveAxis(int64_t in, int64_t out) : start(out), end(out), first(in, out), last(in, -1) {
    for (int64_t o = 0; o < out; ++o) {
      start[o] = adaptive_start(o, in, out);
      end[o] = adaptive_end(o, in, out);
      for (int64_t i = start[o]; i < end[o]; ++i) {
        first[i] = imin(first[i], o);
        last[i] = imax(last[i], o);
      }
    }
  }
  int64_t size(int64_t o) const { return end[o] - start[o]; }
};

// dst[0 .. w) = src (first) or += src.
template <class T>
inline void set_or_add_row(T* __restrict dst, const T* __restrict src, int64_t w, bool first) {
  if (first) {
#pragma omp simd
    for (int64_t c = 0; c < w; ++c) dst[c] = src[c];
  } else {
#pragma omp simd
    for (int64_t c = 0; c < w; ++c) dst[c] += src[c];
  }
}

}  // namespace

// Adaptive max pooling: each window scanned in order (first maximum wins, NaN wins).
// Adaptive average pooling: per output row, the window's input rows are first
// summed into one row of W columns (vector adds over whole rows), and each output
// is then the sum of its columns of that row; a global pool (one output per plane)
// sums each plane as one contiguous run. (Summing each window row by row cost a
// reduction per row: (8, 256, 56, 56) -> 7 and (8, 1280, 7, 7) -> 1 ran at 0.48x
// and 0.14x PyTorch's speed.)
template <class T>
void adaptive_pool_forward(const PoolArgs& a, bool max, const T* x, T* y, int64_t* indices) {
  const int64_t in_vol = a.in_volume(), out_vol = a.out_volume(), h = a.in[1], w = a.in[2];
  if (max) {
    for_each_adaptive_window(a, [&](int64_t p, int64_t o, int64_t z0, int64_t z1, int64_t y0, int64_t y1, int64_t x0,
                                    int64_t x1) {
      const T* xp = x + p * in_vol;
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
    });
    return;
  }
  const int threads = pool_threads(a);
  if (out_vol == 1) {  // global: each plane is one contiguous run
    using V = Vec<T>;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (int64_t p = 0; p < a.planes; ++p) {
      const T* xp = x + p * in_vol;
      V acc = V::zero();
      for (int64_t i = 0; i < in_vol; i += V::kWidth) acc = V::add(acc, load_n<V>(xp + i, in_vol - i));
      y[p] = V::sum(acc) / T(in_vol);
    }
    return;
  }
  const AdaptiveAxis ad(a.in[0], a.out[0]), ah(h, a.out[1]), aw(w, a.out[2]);
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    std::vector<T> rowsum(w);
#pragma omp for schedule(static)
    for (int64_t p = 0; p < a.planes; ++p) {
      const T* xp = x + p * in_vol;
      T* yp = y + p * out_vol;
      for (int64_t od = 0; od < a.out[0]; ++od)
        for (int64_t oh = 0; oh < a.out[1]; ++oh) {
          T* acc = rowsum.data();
          bool first = true;
          for (int64_t z = ad.start[od]; z < ad.end[od]; ++z)
            for (int64_t r = ah.start[oh]; r < ah.end[oh]; ++r) {
              set_or_add_row(acc, xp + (z * h + r) * w, w, first);
              first = false;
            }
          const int64_t area = ad.size(od) * ah.size(oh);
          T* yr = yp + (od * a.out[1] + oh) * a.out[2];
          for (int64_t ow = 0; ow < a.out[2]; ++ow) {
            T sum = 0;
            for (int64_t c = aw.start[ow]; c < aw.end[ow]; ++c) sum += acc[c];
            yr[ow] = sum / T(area * aw.size(ow));
          }
        }
    }
  }
}

// Adaptive average backward in gather form: each output row's divided gradients
// are first spread along W (input column c takes the outputs whose windows hold
// it), and every input row is then written once, the sum of the spread rows of
// the output rows that cover it. No zero fill, no read-modify-write of grad_x.
template <class T>
void adaptive_avg_pool_backward(const PoolArgs& a, const T* grad_y, T* grad_x) {
  const int64_t in_vol = a.in_volume(), out_vol = a.out_volume(), h = a.in[1], w = a.in[2], wo = a.out[2];
  const int threads = pool_threads(a);
  if (out_vol == 1) {  // global: each plane takes its gradient / (its size) everywhere
    using V = Vec<T>;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (int64_t p = 0; p < a.planes; ++p) {
      const V g = V::set1(grad_y[p] / T(in_vol));
      for (int64_t i = 0; i < in_vol; i += V::kWidth) store_n(g, grad_x + p * in_vol + i, in_vol - i);
    }
    return;
  }
  const AdaptiveAxis ad(a.in[0], a.out[0]), ah(h, a.out[1]), aw(w, wo);
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    std::vector<T> spread(a.out[0] * a.out[1] * w), scaled(wo);
#pragma omp for schedule(static)
    for (int64_t p = 0; p < a.planes; ++p) {
      const T* gy = grad_y + p * out_vol;
      for (int64_t od = 0; od < a.out[0]; ++od)
        for (int64_t oh = 0; oh < a.out[1]; ++oh) {
          const int64_t orow = od * a.out[1] + oh;
          const T area = T(ad.size(od) * ah.size(oh));
          for (int64_t ow = 0; ow < wo; ++ow) scaled[ow] = gy[orow * wo + ow] / (area * T(aw.size(ow)));
          T* sp = spread.data() + orow * w;
          for (int64_t c = 0; c < w; ++c) {
            T sum = 0;
            for (int64_t ow = aw.first[c]; ow <= aw.last[c]; ++ow) sum += scaled[ow];
            sp[c] = sum;
          }
        }
      for (int64_t z = 0; z < a.in[0]; ++z)
        for (int64_t r = 0; r < h; ++r) {
          T* gx = grad_x + p * in_vol + (z * h + r) * w;
          bool first = true;
          for (int64_t od = ad.first[z]; od <= ad.last[z]; ++od)
            for (int64_t oh = ah.first[r]; oh <= ah.last[r]; ++oh) {
              set_or_add_row(gx, spread.data() + (od * a.out[1] + oh) * w, w, first);
              first = false;
            }
        }
    }
  }
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
