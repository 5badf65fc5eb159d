// Depthwise convolution backward (groups == c_in, any channel multiplier), 2-D,
// float or double, any stride, padding and dilation.
//
// Threads take whole input channels, so neither gradient needs a reduction
// across threads. Per (image, channel) plane:
// - grad_w[o, i, j] = sum over outputs of grad_y[oh, ow] * x[oh*sh + i*dh - ph,
//   ow*sw + j*dw - pw]. The x plane is first copied, zero-padded, into its
//   column stride phases (phase p holds padded columns p, p + sw, ...), so every
//   tap reads a contiguous run of x for a contiguous run of ow. Two forms skip it:
//   - a 3x3 filter with stride 1, no dilation and one filter per channel whose output
//     rows fill more than half a vector runs by rows (RowsWeightGrad: in place, each x
//     row loaded once per filter column);
//   - otherwise, with stride_h 1, one filter per channel and at most 9 taps, it runs
//     flat: x and grad_y on rows of one length, so that each tap is one long vector
//     chain over the plane and every image of the channel (in place, without copies,
//     when the stride is 1 both ways and output rows keep the input's width); short
//     rows then still fill the vectors.
// - grad_x is gathered, not scattered: grad_x[ih, iw] = sum of w[o, i, j] *
//   grad_y[oh, ow] over the taps that reach it. For each column phase of the
//   padded input the taps with that phase read a contiguous, zero-padded grad_y
//   row, so a vector of grad_x is a short chain of FMAs and one store.
// The float 3x3 stride-2 case has its own sweep (depthwise_s2 below).
#pragma once
#include <omp.h>

#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "conv/flat_lanes.h"
#include "simd/vec_math.h"

namespace fastconv {
namespace FC_NS {

namespace depthwise_detail {

// Threads for a backward of `work` multiply-adds: whole input channels each, one below 2^16.
template <class T>
int backward_threads(const ConvNdArgs<T>& a, int64_t work) {
  return static_cast<int>(imin(work < (1 << 16) ? 1 : a.threads, a.c_in));
}

// Kernels of at most this many taps take the flat weight gradient (one register chain per tap).
constexpr int kFlatTaps = 9;

// The filter size (kRowsK x kRowsK) that the weight gradient by rows (RowsWeightGrad) takes.
constexpr int kRowsK = 3;

// The plane geometry and the per-thread buffers' layout.
template <class T>
struct Plane {
  int64_t H, W, Ho, Wo, kh, kw, sh, sw, dh, dw, ph, pw, mult;
  int64_t reach;    // phase columns a tap reaches beyond its first: (kw - 1) * dw / sw
  int64_t Wq;       // row length of an x phase plane
  int64_t Wu;       // padded-input columns per phase that hold an input column
  int64_t Wu_len;   // Wu rounded up to whole vectors: a grad_x phase row's length
  int64_t Wd;       // row length of the zero-padded grad_y copy
  int64_t x_phase_elems;  // the x phase planes, the padded-row scratch after them (none where x is not copied)
  int64_t x_elems, dy_elems, dx_elems;
  // The weight gradient's flat form (flat_weight_grad_channel), when grad_w is asked for, with
  // stride_h 1, one filter per channel and at most kFlatTaps taps. The x phase planes then hold
  // xrows = Ho + (kh - 1) * dh rows, row R being input row R - ph (zero outside the input), and
  // grad_y is copied to rows of Wq values (zero past Wo), so that tap t reads x at q + flat_off[t]
  // for grad_y's flat index q = oh * Wq + ow. Otherwise xrows = H and row R is input row R.
  bool flat;
  int64_t xrows, xrow0;
  int64_t flat_len, flat_vecs, flat_dy_elems;
  std::vector<int64_t> flat_off;  // per tap t = i * kw + j (kFlatTaps entries, the last repeated)
  // Per vector of q and tap: the lanes the tap reads x for, [v * kFlatTaps + t]. In the
  // copies, the lanes that are outputs (ow < Wo, q < flat_len), the same for every tap.
  std::vector<unsigned> flat_masks;
  // In place: with stride 1 both ways and Wo == W, grad_y's planes already have x's row
  // length, so the flat form reads both where they lie (q = oh * W + ow), tap t at x offset
  // flat_off[t] = (i * dh - ph) * W + j * dw - pw, its masks keeping the lanes whose x
  // position is inside the input (the rest is padding: zero) and whose q is inside the
  // plane. No copies at all.
  bool in_place;
  // The weight gradient by rows (RowsWeightGrad), when grad_w is asked for with a 3 x 3
  // filter, stride 1, no dilation, one filter per channel and output rows of more than half
  // a vector: rows_nv vectors per chunk of output columns (2 from rows of two vectors on,
  // else 1; 0 where the form does not run), and per chunk from ow0 the lanes of the x loads
  // of tap column j, [j * rows_nv + v] (inside the input and an output), then those of
  // grad_y's, [kRowsK * rows_nv + v] (an output).
  int rows_nv = 0;
  std::vector<unsigned> rows_masks;
  // Where filter column j's run of x starts in the phase planes: (phase * xrows) * Wq + shift,
  // with phase (j * dw) % sw and shift (j * dw) / sw.
  std::vector<int64_t> xoff;
  // The taps that reach grad_x row ih in column phase p (of the padded input):
  // entries [tap_begin[ih * sw + p], tap_begin[ih * sw + p + 1]) of tap_w (the
  // filter element, mult * kh * kw per channel) and tap_dy (where the tap's run
  // starts in the padded grad_y copy). The same for every channel and image.
  std::vector<int64_t> tap_begin, tap_w, tap_dy;

  // Builds the tables of the gradients asked for: the data gradient's taps per row,
  // the flat weight gradient's offsets and masks.
  Plane(const ConvNdArgs<T>& a, bool data_grad, bool weight_grad) {
    constexpr int L = Vec<T>::kWidth;
    H = a.in[1], W = a.in[2], Ho = a.out[1], Wo = a.out[2];
    kh = a.kernel[1], kw = a.kernel[2], sh = a.stride[1], sw = a.stride[2];
    dh = a.dil[1], dw = a.dil[2], ph = a.pad[1], pw = a.pad[2];
    mult = a.c_out / a.c_in;
    reach = (kw - 1) * dw / sw;
    Wq = Wo + reach;
    if (weight_grad && mult == 1 && kh == kRowsK && kw == kRowsK && sh == 1 && sw == 1 && dh == 1 && dw == 1 &&
        2 * Wo > L) {
      rows_nv = Wo >= 2 * L ? 2 : 1;
      for (int64_t ow0 = 0; ow0 < Wo; ow0 += rows_nv * L) {
        const size_t at = rows_masks.size();
        rows_masks.resize(at + (kRowsK + 1) * rows_nv);
        for (int v = 0; v < rows_nv; ++v) {
          const unsigned out = lanes_inside(ow0 + v * L, Wo, L);
          rows_masks[at + kRowsK * rows_nv + v] = out;
          for (int j = 0; j < kRowsK; ++j)
            rows_masks[at + j * rows_nv + v] = out & lanes_inside(ow0 + v * L + j - pw, W, L);
        }
      }
    }
    flat = weight_grad && !rows_nv && sh == 1 && mult == 1 && kh * kw <= kFlatTaps;
    xrows = flat ? Ho + (kh - 1) * dh : H;
    xrow0 = flat ? ph : 0;
    Wu = ceil_div(pw + W, sw);
    // Room for the full-vector reads of data_grad_row and for every grad_y column.
    Wu_len = round_up(Wu, L);
    Wd = reach + imax(Wu_len + L, Wo);
    dy_elems = per_thread_floats(mult * Ho * Wd);
    dx_elems = per_thread_floats(sw * Wu_len);
    for (int64_t j = 0; j < kw; ++j) xoff.push_back(((j * dw) % sw) * xrows * Wq + (j * dw) / sw);
    in_place = flat && sw == 1 && Wo == W;
    // x is copied only by the weight gradient's phase-split form and its flat form's copies: the
    // rows form and the in-place flat form read x where it lies, the data gradient never reads it.
    const bool copies_x = weight_grad && !rows_nv && !in_place;
    x_phase_elems = copies_x ? per_thread_floats(sw * xrows * Wq) : 0;
    x_elems = copies_x ? x_phase_elems + per_thread_floats(sw * Wq) : 0;
    flat_len = Ho * (in_place ? W : Wq);
    flat_vecs = ceil_div(flat_len, L);
    flat_dy_elems = flat && !in_place ? per_thread_floats(flat_vecs * L) : 0;
    if (flat) {
      // Tap t = i * kw + j; past the taps (a register tile wider than them) the last tap repeats.
      auto tap = [&](int64_t t, int64_t* i, int64_t* j) {
        const int64_t c = imin(t, kh * kw - 1);
        *i = c / kw;
        *j = c % kw;
      };
      for (int64_t t = 0; t < kFlatTaps; ++t) {
        int64_t i, j;
        tap(t, &i, &j);
        flat_off.push_back(in_place ? flat_tap_offset(W, i, j, dh, dw, ph, pw) : xoff[j] + i * dh * Wq);
      }
      if (in_place) {
        const FlatLanes lanes(H, W, Ho, kh, kw, dh, dw, ph, pw, L);
        for (int64_t v = 0; v < flat_vecs; ++v)
          for (int64_t t = 0; t < kFlatTaps; ++t) {
            int64_t i, j;
            tap(t, &i, &j);
            flat_masks.push_back(lanes.tap(v, i, j));
          }
      } else {
        for (int64_t v = 0; v < flat_vecs; ++v) {  // the copies' output lanes, the same for every tap
          unsigned bits = 0;
          for (int l = 0; l < L; ++l) {
            const int64_t q = v * L + l;
            if (q < flat_len && q % Wq < Wo) bits |= 1u << l;
          }
          flat_masks.insert(flat_masks.end(), kFlatTaps, bits);
        }
      }
    }
    if (!data_grad) return;
    tap_begin.push_back(0);
    for (int64_t ih = 0; ih < H; ++ih)
      for (int64_t p = 0; p < sw; ++p) {
        for (int64_t i = 0; i < kh; ++i) {
          const int64_t y = ih + ph - i * dh;  // grad_y row y / sh reaches ih through filter row i
          if (y < 0 || y % sh != 0 || y / sh >= Ho) continue;
          for (int64_t m = 0; m < mult; ++m)
            for (int64_t j = 0; j < kw; ++j) {
              if ((j * dw) % sw != p) continue;
              tap_w.push_back((m * kh + i) * kw + j);
              tap_dy.push_back((m * Ho + y / sh) * Wd + reach - (j * dw) / sw);
            }
        }
        tap_begin.push_back(static_cast<int64_t>(tap_w.size()));
      }
  }
};

// xph[p][r + xrow0][u] = x[r][u * sw + p - pw], 0 outside the row; rows past
// xrows are left out, and the buffer's other rows are not written. `row` is scratch
// for one zero-padded input row of sw * Wq elements. Rows are short, so the copies
// are inline vector loops rather than libc calls.
template <class T>
void copy_x_phases(const Plane<T>& g, const T* x, T* xph, T* row) {
  const int64_t len = g.sw * g.Wq, body = imax(0, imin(g.W, len - g.pw));
  const int64_t lead = imin(g.pw, len);
  const int64_t r_end = imin(g.H, g.xrows - g.xrow0);
  for (int64_t r = 0; r < r_end; ++r) {
    const int64_t R = r + g.xrow0;
    if (g.sw == 1) {
      row = xph + R * g.Wq;  // the padded row is the only phase
    }
    fill_floats(row, T(0), lead);
    copy_floats(row + lead, x + r * g.W, body);
    fill_floats(row + lead + body, T(0), len - lead - body);
    if (g.sw == 2) {  // the common stride, with a constant step the compiler vectorises
      T* __restrict even = xph + R * g.Wq;
      T* __restrict odd = xph + (g.xrows + R) * g.Wq;
      for (int64_t u = 0; u < g.Wq; ++u) {
        even[u] = row[2 * u];
        odd[u] = row[2 * u + 1];
      }
    } else if (g.sw > 2) {
      for (int64_t p = 0; p < g.sw; ++p) {
        T* dst = xph + (p * g.xrows + R) * g.Wq;
        for (int64_t u = 0; u < g.Wq; ++u) dst[u] = row[u * g.sw + p];
      }
    }
  }
}

// grad_w[i, 0 .. kw) += the plane's contribution for filter row i (column j's x
// run at g.xoff[j] in each phase row). KW > 0 fixes kw at compile time, so that the
// accumulators live in registers; each grad_y vector is loaded once for the
// whole filter row, and two vectors of a row go at once so that 2 * KW
// independent FMA chains hide the FMA latency. KW = 0 takes kw at run time.
template <class T, int KW>
void weight_grad_row(const Plane<T>& g, int64_t i, const T* dy, const T* xph, T* grad_w) {
  using V = Vec<T>;
  constexpr int L = V::kWidth;
  const int64_t kw = KW > 0 ? KW : g.kw;
  const int64_t* xoff = g.xoff.data();
  if constexpr (KW > 0) {
    V a0[KW], a1[KW];
#pragma GCC unroll 8
    for (int j = 0; j < KW; ++j) a0[j] = a1[j] = V::zero();
    for (int64_t oh = 0; oh < g.Ho; ++oh) {
      const int64_t r = oh * g.sh + i * g.dh - g.ph;
      if (r < 0 || r >= g.H) continue;
      const T* dyr = dy + oh * g.Wo;
      const T* xr = xph + r * g.Wq;
      int64_t ow = 0;
      for (; ow + 2 * L <= g.Wo; ow += 2 * L) {
        const V d0 = V::load(dyr + ow), d1 = V::load(dyr + ow + L);
#pragma GCC unroll 8
        for (int j = 0; j < KW; ++j) {
          a0[j] = V::fmadd(d0, V::load(xr + xoff[j] + ow), a0[j]);
          a1[j] = V::fmadd(d1, V::load(xr + xoff[j] + ow + L), a1[j]);
        }
      }
      for (; ow < g.Wo; ow += L) {
        // Masked at the tail, so x beyond the row never meets a zero lane of grad_y.
        const int64_t n = g.Wo - ow;
        const V d = load_n<V>(dyr + ow, n);
#pragma GCC unroll 8
        for (int j = 0; j < KW; ++j) a0[j] = V::fmadd(d, load_n<V>(xr + xoff[j] + ow, n), a0[j]);
      }
    }
#pragma GCC unroll 8
    for (int j = 0; j < KW; ++j) grad_w[i * kw + j] += reduce_add(V::add(a0[j], a1[j]));
  } else {
    for (int64_t j = 0; j < kw; ++j) {
      V acc = V::zero();
      for (int64_t oh = 0; oh < g.Ho; ++oh) {
        const int64_t r = oh * g.sh + i * g.dh - g.ph;
        if (r < 0 || r >= g.H) continue;
        const T* dyr = dy + oh * g.Wo;
        const T* xr = xph + r * g.Wq + xoff[j];
        for (int64_t ow = 0; ow < g.Wo; ow += L)
          acc = V::fmadd(load_n<V>(dyr + ow, g.Wo - ow), load_n<V>(xr + ow, g.Wo - ow), acc);
      }
      grad_w[i * kw + j] += reduce_add(acc);
    }
  }
}

template <class T>
void weight_grad_plane(const Plane<T>& g, const T* dy, const T* xph, T* grad_w) {
  for (int64_t i = 0; i < g.kh; ++i) {
    switch (g.kw) {
      case 3:
        weight_grad_row<T, 3>(g, i, dy, xph, grad_w);
        break;
      case 5:
        weight_grad_row<T, 5>(g, i, dy, xph, grad_w);
        break;
      case 7:
        weight_grad_row<T, 7>(g, i, dy, xph, grad_w);
        break;
      default:
        weight_grad_row<T, 0>(g, i, dy, xph, grad_w);
    }
  }
}

// Adds one plane's products to the flat form's accumulators: tap t's chain (a0[t], a1[t])
// takes dy[q] * x[q + flat_off[t]] over the plane, two vectors of q at a time, each x load
// masked by the tap's lanes and grad_y's last vector by the plane.
template <class T, int TAPS>
__attribute__((always_inline)) inline void flat_plane_sums(const Plane<T>& g, const T* x, const T* dy, Vec<T>* a0,
                                                           Vec<T>* a1) {
  using V = Vec<T>;
  constexpr int L = V::kWidth;
  const int64_t* off = g.flat_off.data();
  const unsigned* masks = g.flat_masks.data();
  const int64_t full = g.flat_len / L;  // vectors wholly inside the plane
  int64_t v = 0;
  for (; v + 1 < full; v += 2) {
    const unsigned* m0 = masks + v * kFlatTaps;
    const unsigned* m1 = m0 + kFlatTaps;
    const V d0 = V::load(dy + v * L), d1 = V::load(dy + v * L + L);
#pragma GCC unroll 16
    for (int t = 0; t < TAPS; ++t) {
      a0[t] = V::fmadd(d0, V::load_mask(x + v * L + off[t], m0[t]), a0[t]);
      a1[t] = V::fmadd(d1, V::load_mask(x + v * L + L + off[t], m1[t]), a1[t]);
    }
  }
  for (; v < g.flat_vecs; ++v) {
    const unsigned* m0 = masks + v * kFlatTaps;
    const V d0 = load_n<V>(dy + v * L, g.flat_len - v * L);
#pragma GCC unroll 16
    for (int t = 0; t < TAPS; ++t) a0[t] = V::fmadd(d0, V::load_mask(x + v * L + off[t], m0[t]), a0[t]);
  }
}

// grad_w (the channel's kh * kw <= TAPS values) = the flat form's sums over n images
// (g.flat), one horizontal sum per tap at the end. In place it reads x and grad_y
// where they lie; otherwise each image is first copied into `xph` (the phase planes)
// and `dyf` (grad_y on rows of Wq), which must hold zeros wherever the copies do not
// write: they write the same positions for every image.
template <class T, int TAPS>
void flat_weight_grad_channel(const Plane<T>& g, const T* x, int64_t x_image, const T* dy, int64_t dy_image,
                              int64_t n, T* xph, T* dyf, T* grad_w) {
  using V = Vec<T>;
  V a0[TAPS], a1[TAPS];
#pragma GCC unroll 16
  for (int t = 0; t < TAPS; ++t) a0[t] = a1[t] = V::zero();
  for (int64_t img = 0; img < n; ++img) {
    if (g.in_place) {
      flat_plane_sums<T, TAPS>(g, x + img * x_image, dy + img * dy_image, a0, a1);
      continue;
    }
    copy_x_phases(g, x + img * x_image, xph, xph + g.x_phase_elems);
    for (int64_t oh = 0; oh < g.Ho; ++oh) copy_floats(dyf + oh * g.Wq, dy + img * dy_image + oh * g.Wo, g.Wo);
    flat_plane_sums<T, TAPS>(g, xph, dyf, a0, a1);
  }
  const int taps = static_cast<int>(g.kh * g.kw);
#pragma GCC unroll 16
  for (int t = 0; t < TAPS; ++t)
    if (t < taps) grad_w[t] = reduce_add(V::add(a0[t], a1[t]));
}

template <class T>
void flat_weight_grad(const Plane<T>& g, const T* x, int64_t x_image, const T* dy, int64_t dy_image, int64_t n,
                      T* xph, T* dyf, T* grad_w) {
  const int64_t taps = g.kh * g.kw;
  if (taps == 1) return flat_weight_grad_channel<T, 1>(g, x, x_image, dy, dy_image, n, xph, dyf, grad_w);
  if (taps <= 2) return flat_weight_grad_channel<T, 2>(g, x, x_image, dy, dy_image, n, xph, dyf, grad_w);
  if (taps <= 4) return flat_weight_grad_channel<T, 4>(g, x, x_image, dy, dy_image, n, xph, dyf, grad_w);
  if (taps <= 6) return flat_weight_grad_channel<T, 6>(g, x, x_image, dy, dy_image, n, xph, dyf, grad_w);
  flat_weight_grad_channel<T, kFlatTaps>(g, x, x_image, dy, dy_image, n, xph, dyf, grad_w);
}

// The weight gradient by rows (Plane::rows_nv > 0): a K x K filter (K = kRowsK = 3), stride 1, no dilation,
// one filter per channel, output rows filling more than half a vector. Input row r is loaded
// once per filter column j, a chunk of NV vectors of columns at a time (masked to the input
// and to the chunk's outputs, so padding reads zero), and meets the K grad_y rows r + ph - i
// that it reaches through filter row i (rows just used, in L1): per chunk and row, K * NV
// loads of x and up to K * NV of grad_y for K * K * NV FMAs. The accumulators take every
// chunk, so the sweep goes row by row through each plane in memory order. The flat form
// instead reads K * K shifted vectors of x per vector of grad_y, each with its own mask from
// a table; it is kept for rows of at most half a vector, whose lanes it fills where this form
// leaves them empty. Measured against the flat form (builds alternated, AVX-512, 2 threads,
// grad_w alone): batch 1 144 @56 0.114-0.123 -> 0.077-0.080 ms, 32 @112 0.117-0.145 ->
// 0.067-0.070, 192 @28 0.045-0.049 -> 0.033-0.036, 576 @14 0.041-0.044 -> 0.034; batch 8
// 32 @112 0.85-0.88 -> 0.49-0.61, 576 @14 0.24-0.25 -> 0.19 (144 @56, bound by memory,
// 1.05-1.26 -> 0.67-1.12). On 960 @7 (7 of 16 lanes) it lost: 0.033-0.037 ms against the
// flat form's 0.031-0.035. AVX2 gains as well (32 @112 0.177 -> 0.107 ms).
template <int NV>
struct RowsWeightGrad {
  static constexpr int K = kRowsK;
  static constexpr int kMasks = (K + 1) * NV;  // per chunk in Plane::rows_masks

  template <class T>
  static void channel(const Plane<T>& g, const T* x, int64_t x_image, const T* dy, int64_t dy_image, int64_t n,
                      T* grad_w) {
    using V = Vec<T>;
    constexpr int L = V::kWidth;
    V acc[K * K][NV];
#pragma GCC unroll 32
    for (int t = 0; t < K * K; ++t)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[t][v] = V::zero();
    const unsigned* masks = g.rows_masks.data();
    for (int64_t img = 0; img < n; ++img)
      for (int64_t r = 0; r < g.H; ++r) {
        const T* xr = x + img * x_image + r * g.W - g.pw;
        const T* dys[K];  // grad_y row r + ph - i, or null
#pragma GCC unroll 8
        for (int i = 0; i < K; ++i) {
          const int64_t oh = r + g.ph - i;
          dys[i] = oh >= 0 && oh < g.Ho ? dy + img * dy_image + oh * g.Wo : nullptr;
        }
        const unsigned* m = masks;
        for (int64_t ow0 = 0; ow0 < g.Wo; ow0 += NV * L, m += kMasks) {
          V xs[K][NV];
#pragma GCC unroll 8
          for (int j = 0; j < K; ++j)
#pragma GCC unroll 4
            for (int v = 0; v < NV; ++v) xs[j][v] = V::load_mask(xr + ow0 + v * L + j, m[j * NV + v]);
#pragma GCC unroll 8
          for (int i = 0; i < K; ++i) {
            if (!dys[i]) continue;
#pragma GCC unroll 4
            for (int v = 0; v < NV; ++v) {
              const V d = V::load_mask(dys[i] + ow0 + v * L, m[K * NV + v]);
#pragma GCC unroll 8
              for (int j = 0; j < K; ++j) acc[i * K + j][v] = V::fmadd(d, xs[j][v], acc[i * K + j][v]);
            }
          }
        }
      }
#pragma GCC unroll 32
    for (int t = 0; t < K * K; ++t) {
      V sum = acc[t][0];
#pragma GCC unroll 4
      for (int v = 1; v < NV; ++v) sum = V::add(sum, acc[t][v]);
      grad_w[t] = reduce_add(sum);
    }
  }
};

template <class T>
void rows_weight_grad(const Plane<T>& g, const T* x, int64_t x_image, const T* dy, int64_t dy_image, int64_t n,
                      T* grad_w) {
  if (g.rows_nv == 2) return RowsWeightGrad<2>::channel(g, x, x_image, dy, dy_image, n, grad_w);
  RowsWeightGrad<1>::channel(g, x, x_image, dy, dy_image, n, grad_w);
}

// dyp[m][oh][reach + ow] = grad_y[m][oh][ow], zero elsewhere.
template <class T>
void copy_dy_padded(const Plane<T>& g, const T* dy, int64_t plane_stride, T* dyp) {
  for (int64_t m = 0; m < g.mult; ++m)
    for (int64_t oh = 0; oh < g.Ho; ++oh) {
      T* row = dyp + (m * g.Ho + oh) * g.Wd;
      fill_floats(row, T(0), g.reach);
      copy_floats(row + g.reach, dy + m * plane_stride + oh * g.Wo, g.Wo);
      fill_floats(row + g.reach + g.Wo, T(0), g.Wd - g.reach - g.Wo);
    }
}

// One row ih of grad_x from the padded grad_y planes; w holds the mult filters
// of this channel, and g.tap_* list the taps that reach the row, phase by phase.
// Four vectors of a phase row go at once, four independent FMA chains.
template <class T>
void data_grad_row(const Plane<T>& g, int64_t ih, const T* dyp, const T* w, T* dxs, T* dx_row) {
  using V = Vec<T>;
  constexpr int L = V::kWidth;
  const bool direct = g.sw == 1;  // the only phase is the padded row: write grad_x in place
  for (int64_t p = 0; p < g.sw; ++p) {
    const int64_t t0 = g.tap_begin[ih * g.sw + p], t1 = g.tap_begin[ih * g.sw + p + 1];
    const int64_t* tw = g.tap_w.data();
    const int64_t* tdy = g.tap_dy.data();
    const int64_t u0 = direct ? g.pw : 0, u1 = direct ? g.pw + g.W : g.Wu;
    T* out = direct ? dx_row - g.pw : dxs + p * g.Wu_len;
    int64_t u = u0;
    for (; u + 3 * L < u1; u += 4 * L) {
      V a0 = V::zero(), a1 = V::zero(), a2 = V::zero(), a3 = V::zero();
      for (int64_t t = t0; t < t1; ++t) {
        const V wv = V::set1(w[tw[t]]);
        const T* src = dyp + tdy[t] + u;
        a0 = V::fmadd(wv, V::load(src), a0);
        a1 = V::fmadd(wv, V::load(src + L), a1);
        a2 = V::fmadd(wv, V::load(src + 2 * L), a2);
        a3 = V::fmadd(wv, V::load(src + 3 * L), a3);
      }
      a0.store(out + u);
      a1.store(out + u + L);
      a2.store(out + u + 2 * L);
      store_n(a3, out + u + 3 * L, direct ? u1 - u - 3 * L : L);
    }
    for (; u < u1; u += L) {
      V acc = V::zero();
      for (int64_t t = t0; t < t1; ++t) acc = V::fmadd(V::set1(w[tw[t]]), V::load(dyp + tdy[t] + u), acc);
      store_n(acc, out + u, direct ? u1 - u : L);
    }
  }
  if (direct) return;
  // Interleave the phases into the row: dx_row[iw] = dxs[c % sw][c / sw], c = iw + pw.
  if (g.sw == 2) {
    const T* __restrict p0 = dxs + (g.pw & 1) * g.Wu_len + g.pw / 2;  // phase of iw = 0
    const T* __restrict p1 = dxs + ((g.pw + 1) & 1) * g.Wu_len + (g.pw + 1) / 2;
    int64_t k = 0;
    for (; 2 * k + 1 < g.W; ++k) {
      dx_row[2 * k] = p0[k];
      dx_row[2 * k + 1] = p1[k];
    }
    if (2 * k < g.W) dx_row[2 * k] = p0[k];
  } else {
    for (int64_t iw = 0; iw < g.W; ++iw) {
      const int64_t c = iw + g.pw;
      dx_row[iw] = dxs[(c % g.sw) * g.Wu_len + c / g.sw];
    }
  }
}

}  // namespace depthwise_detail

// The float 3x3 stride-2 case (MobileNet's and EfficientNet's downsampling layers),
// any padding, no dilation, one filter per channel: one sweep over the rows of each
// plane with nothing copied. The general path above spends most of its time copying
// x into column phases and interleaving grad_x's phases element by element; here
// the phases live in registers:
// - weight gradient: input row r serves filter row i of output row (r + ph - i) / 2.
//   Tap j of output column ow reads x column 2 * ow - pw + j, so one pair of vectors
//   loaded at 2 * ow - pw and deinterleaved gives taps 0 (even lanes) and 1 (odd),
//   and the pair at one column further tap 2 (odd). Lanes past the row's outputs or
//   outside the input load zero. The nine sums stay in registers over the channel's
//   images and are added across lanes once.
// - data gradient: grad_x column 2m + q takes the taps j with pw + q - j even, from
//   grad_y column m + (pw + q - j) / 2. A vector of even columns and one of odd
//   columns are short FMA chains over unaligned grad_y loads (zero outside the row),
//   interleaved into 2 * L consecutive columns and stored once.
// The edge vectors' load masks are the same for every row, so they are made once per call:
// made per row and vector they cost more than the loads on narrow planes (both gradients,
// builds alternated, AVX-512, 2 threads: batch 1 144 @56 0.138 -> 0.093 ms, 192 @28 0.066 ->
// 0.044, 576 @14 0.086 -> 0.060, 96 @112 0.256 -> 0.215; batch 8 192 @28 0.46 -> 0.29).
// Measured against the general path at batch 8, both gradients (AVX-512, 2 threads):
// 96 @112 6.3 -> 2.6 ms, 144 @56 3.3 -> 1.35 ms, 576 @14 1.24 -> 0.64 ms.
namespace depthwise_s2 {

using V = VecF;
constexpr int L = V::kWidth;

inline bool applies(const ConvNdArgs<float>& a) {
  return a.c_out == a.c_in && a.kernel[1] == 3 && a.kernel[2] == 3 && a.stride[1] == 2 && a.stride[2] == 2 &&
         a.dil[1] == 1 && a.dil[2] == 1;
}

// Lanes of a vector of output columns (from ow, n = Wo - ow of them left) that are outputs,
// as element bits of a deinterleaved pair's low (half 0) or high (half 1) vector.
inline unsigned pair_out_bits(int64_t n, int half) {
  const int64_t hi = imin(L, imax(0, 2 * n - half * L));
  return hi <= 0 ? 0u : lane_range_bits(0, hi);
}

// The lanes of row_taps' four loads for the vector of output columns from ow (n = Wo - ow of
// them left): inside the input and outputs. The same for every row, so made once per call.
inline void row_taps_masks(int64_t W, int64_t pw, int64_t ow, int64_t n, unsigned* m) {
  const int64_t c = 2 * ow - pw;
  const unsigned o0 = pair_out_bits(n, 0), o1 = pair_out_bits(n, 1);
  m[0] = lanes_inside(c, W) & o0;
  m[1] = lanes_inside(c + L, W) & o1;
  m[2] = lanes_inside(c + 1, W) & o0;
  m[3] = lanes_inside(c + 1 + L, W) & o1;
}

// Taps 0, 1 and 2 of the output columns ow .. ow + L - 1 in input row xr; m: the vector's
// row_taps_masks.
__attribute__((always_inline)) inline void row_taps(const float* xr, int64_t W, int64_t pw, int64_t ow, int64_t n,
                                                    const unsigned* m, V* t0, V* t1, V* t2) {
  const int64_t c = 2 * ow - pw;
  V lo, hi, lo1, hi1, unused;
  if (c >= 0 && c + 1 + 2 * L <= W && n >= L) {
    lo = V::load(xr + c);
    hi = V::load(xr + c + L);
    lo1 = V::load(xr + c + 1);
    hi1 = V::load(xr + c + 1 + L);
  } else {
    lo = V::load_mask(xr + c, m[0]);
    hi = V::load_mask(xr + c + L, m[1]);
    lo1 = V::load_mask(xr + c + 1, m[2]);
    hi1 = V::load_mask(xr + c + 1 + L, m[3]);
  }
  V::deinterleave2(lo, hi, t0, t1);
  V::deinterleave2(lo1, hi1, &unused, t2);
}

// acc[i * 3 + j] += grad_y row dy_a (filter row IA) and, when IB >= 0, dy_b (filter row IB)
// times input row xr's taps j, over the row's output columns; masks: row_taps_masks per vector.
template <int IA, int IB>
__attribute__((always_inline)) inline void weight_grad_row(const float* xr, const float* dy_a, const float* dy_b,
                                                           int64_t W, int64_t Wo, int64_t pw, const unsigned* masks,
                                                           V* acc) {
  for (int64_t ow = 0; ow < Wo; ow += L, masks += 4) {
    const int64_t n = Wo - ow;
    V t[3];
    row_taps(xr, W, pw, ow, n, masks, &t[0], &t[1], &t[2]);
    const V da = load_n<V>(dy_a + ow, n);
#pragma GCC unroll 3
    for (int j = 0; j < 3; ++j) acc[IA * 3 + j] = V::fmadd(da, t[j], acc[IA * 3 + j]);
    if constexpr (IB >= 0) {
      const V db = load_n<V>(dy_b + ow, n);
#pragma GCC unroll 3
      for (int j = 0; j < 3; ++j) acc[IB * 3 + j] = V::fmadd(db, t[j], acc[IB * 3 + j]);
    }
  }
}

// One grad_y row's contribution (filter row i, weights w) to grad_x columns 2 * m0 + (0 .. 2L):
// even columns into *e, odd ones into *o. Tap j reaches the parity of pw - j, from grad_y
// column m0 + shift[j]; INSIDE: every load lies inside the row, else m[j]: the lanes that do.
template <int PW_ODD, bool INSIDE>
__attribute__((always_inline)) inline void data_grad_taps(const float* dyr, const float* w, const unsigned* m,
                                                          const int64_t* shift, int64_t m0, V* e, V* o) {
#pragma GCC unroll 3
  for (int j = 0; j < 3; ++j) {
    const int64_t col = m0 + shift[j];
    const V d = INSIDE ? V::load(dyr + col) : V::load_mask(dyr + col, m[j]);
    if (((PW_ODD - j) & 1) == 0)
      *e = V::fmadd(V::set1(w[j]), d, *e);
    else
      *o = V::fmadd(V::set1(w[j]), d, *o);
  }
}

// grad_x row from up to two grad_y rows (dy_a through filter row ia, dy_b through ib; null when
// absent); masks: per block of L grad_y columns from m0, the lanes of tap j's loads that lie
// inside grad_y's row, [3 * (m0 / L) + j].
template <int PW_ODD>
inline void data_grad_row(const float* dy_a, int64_t ia, const float* dy_b, int64_t ib, const float* w, int64_t W,
                          int64_t Wo, const int64_t* shift, const unsigned* masks, float* dxr) {
  // Blocks whose loads all lie inside grad_y's row.
  const int64_t lo = -imin(shift[0], imin(shift[1], shift[2])), hi = Wo - L - imax(shift[0], imax(shift[1], shift[2]));
  for (int64_t m0 = 0; 2 * m0 < W; m0 += L, masks += 3) {
    V e = V::zero(), o = V::zero();
    if (m0 >= lo && m0 <= hi) {
      if (dy_a) data_grad_taps<PW_ODD, true>(dy_a, w + ia * 3, masks, shift, m0, &e, &o);
      if (dy_b) data_grad_taps<PW_ODD, true>(dy_b, w + ib * 3, masks, shift, m0, &e, &o);
    } else {
      if (dy_a) data_grad_taps<PW_ODD, false>(dy_a, w + ia * 3, masks, shift, m0, &e, &o);
      if (dy_b) data_grad_taps<PW_ODD, false>(dy_b, w + ib * 3, masks, shift, m0, &e, &o);
    }
    V lo_v, hi_v;
    V::interleave2(e, o, &lo_v, &hi_v);
    const int64_t c = 2 * m0;
    store_n(lo_v, dxr + c, W - c);
    if (W - c > L) store_n(hi_v, dxr + c + L, W - c - L);
  }
}

inline void backward(const ConvBackward<float>& b) {
  const ConvNdArgs<float>& a = b.g;
  const int64_t H = a.in[1], W = a.in[2], Ho = a.out[1], Wo = a.out[2], ph = a.pad[1], pw = a.pad[2];
  const int64_t in_plane = H * W, out_plane = Ho * Wo;
  // grad_x column 2m + q takes tap j (of the parity q = (pw - j) mod 2) from grad_y column m + shift[j].
  int64_t shift[3];
  for (int j = 0; j < 3; ++j) shift[j] = ((pw - j) & 1) == 0 ? (pw - j) / 2 : (pw + 1 - j) / 2;
  // The edge vectors' load masks, the same for every row (weight_grad_row's, data_grad_row's).
  std::vector<unsigned> wg_masks(4 * ceil_div(Wo, L)), dg_masks;
  for (int64_t ow = 0; ow < Wo; ow += L) row_taps_masks(W, pw, ow, Wo - ow, &wg_masks[4 * (ow / L)]);
  for (int64_t m0 = 0; 2 * m0 < W; m0 += L)
    for (int j = 0; j < 3; ++j) dg_masks.push_back(lanes_inside(m0 + shift[j], Wo));
  const int threads = depthwise_detail::backward_threads(a, a.n * a.c_in * out_plane * 9);
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int64_t c = 0; c < a.c_in; ++c) {
    V acc[9];
#pragma GCC unroll 9
    for (int k = 0; k < 9; ++k) acc[k] = V::zero();
    const float* w = b.weight ? b.weight + c * 9 : nullptr;
    for (int64_t n = 0; n < a.n; ++n) {
      const float* x = b.x ? b.x + (n * a.c_in + c) * in_plane : nullptr;
      const float* dy = b.grad_y + (n * a.c_in + c) * out_plane;
      float* dx = b.grad_x ? b.grad_x + (n * a.c_in + c) * in_plane : nullptr;
      for (int64_t r = 0; r < H; ++r) {
        // The output rows that input row r reaches: through filter rows 0 and 2 when r + ph is even, row 1 when odd.
        const int64_t t = r + ph;
        const int64_t oh_a = (t & 1) ? (t - 1) / 2 : t / 2, oh_b = (t - 2) / 2;
        const int ia = (t & 1) ? 1 : 0;
        const float* dy_a = oh_a < Ho ? dy + oh_a * Wo : nullptr;
        const float* dy_b = !(t & 1) && t >= 2 && oh_b < Ho ? dy + oh_b * Wo : nullptr;
        if (b.grad_w) {
          const float* xr = x + r * W;
          if (ia == 1) {
            if (dy_a) weight_grad_row<1, -1>(xr, dy_a, nullptr, W, Wo, pw, wg_masks.data(), acc);
          } else if (dy_a && dy_b) {
            weight_grad_row<0, 2>(xr, dy_a, dy_b, W, Wo, pw, wg_masks.data(), acc);
          } else if (dy_a) {
            weight_grad_row<0, -1>(xr, dy_a, nullptr, W, Wo, pw, wg_masks.data(), acc);
          } else if (dy_b) {
            weight_grad_row<2, -1>(xr, dy_b, nullptr, W, Wo, pw, wg_masks.data(), acc);
          }
        }
        if (dx) {
          if (pw & 1)
            data_grad_row<1>(dy_a, ia, dy_b, 2, w, W, Wo, shift, dg_masks.data(), dx + r * W);
          else
            data_grad_row<0>(dy_a, ia, dy_b, 2, w, W, Wo, shift, dg_masks.data(), dx + r * W);
        }
      }
    }
    if (b.grad_w)
      for (int k = 0; k < 9; ++k) b.grad_w[c * 9 + k] = reduce_add(acc[k]);
  }
}

}  // namespace depthwise_s2

template <class T>
void depthwise_backward(const ConvBackward<T>& b) {
  using namespace depthwise_detail;
  const ConvNdArgs<T>& a = b.g;
  if constexpr (std::is_same_v<T, float>) {
    if (depthwise_s2::applies(a)) return depthwise_s2::backward(b);
  }
  const Plane<T> g(a, b.grad_x != nullptr, b.grad_w != nullptr);
  const int64_t taps = g.kh * g.kw, in_plane = g.H * g.W, out_plane = g.Ho * g.Wo;
  const int threads = backward_threads(a, a.n * a.c_out * out_plane * taps);
  const int64_t per_thread = g.x_elems + g.dy_elems + g.dx_elems + g.flat_dy_elems;
  Scratch<T> scratch(checked_mul(per_thread, threads));

#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    T* xph = scratch.data() + omp_get_thread_num() * per_thread;
    T* dyp = xph + g.x_elems;
    T* dxs = dyp + g.dy_elems;
    T* dyf = dxs + g.dx_elems;
    if (g.flat && !g.in_place) {  // the flat form's padding: zero once, never written by its copies
      std::memset(xph, 0, sizeof(T) * g.x_phase_elems);
      std::memset(dyf, 0, sizeof(T) * g.flat_dy_elems);
    }
#pragma omp for schedule(static)
    for (int64_t c = 0; c < a.c_in; ++c) {
      T* gw = b.grad_w ? b.grad_w + c * g.mult * taps : nullptr;
      if (g.rows_nv)  // one filter per channel, as in the flat form
        rows_weight_grad(g, b.x + c * in_plane, a.c_in * in_plane, b.grad_y + c * out_plane, a.c_out * out_plane,
                         a.n, gw);
      else if (g.flat)  // one filter per channel: grad_y's channel c is the filter's
        flat_weight_grad(g, b.x + c * in_plane, a.c_in * in_plane, b.grad_y + c * out_plane, a.c_out * out_plane,
                         a.n, xph, dyf, gw);
      else if (gw)
        std::memset(gw, 0, sizeof(T) * g.mult * taps);
      for (int64_t n = 0; n < a.n; ++n) {
        const T* dy = b.grad_y + (n * a.c_out + c * g.mult) * out_plane;
        if (gw && !g.flat && !g.rows_nv) {
          copy_x_phases(g, b.x + (n * a.c_in + c) * in_plane, xph, xph + g.x_phase_elems);
          for (int64_t m = 0; m < g.mult; ++m) weight_grad_plane(g, dy + m * out_plane, xph, gw + m * taps);
        }
        if (b.grad_x) {
          copy_dy_padded(g, dy, out_plane, dyp);
          T* dx = b.grad_x + (n * a.c_in + c) * in_plane;
          for (int64_t ih = 0; ih < g.H; ++ih)
            data_grad_row(g, ih, dyp, b.weight + c * g.mult * taps, dxs, dx + ih * g.W);
        }
      }
    }
  }
}

}  // namespace FC_NS
}  // namespace fastconv
