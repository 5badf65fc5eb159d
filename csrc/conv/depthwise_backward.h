// Depthwise convolution backward (groups == c_in, any channel multiplier), 2-D,
// float or double, any stride, padding and dilation.
//
// Threads take whole input channels, so neither gradient needs a reduction
// across threads. Per (image, channel) plane:
// - grad_w[o, i, j] = sum over outputs of grad_y[oh, ow] * x[oh*sh + i*dh - ph,
//   ow*sw + j*dw - pw]. The x plane is first copied, zero-padded, into its
//   column stride phases (phase p holds padded columns p, p + sw, ...), so every
//   tap reads a contiguous run of x for a contiguous run of ow.
// - grad_x is gathered, not scattered: grad_x[ih, iw] = sum of w[o, i, j] *
//   grad_y[oh, ow] over the taps that reach it. For each column phase of the
//   padded input the taps with that phase read a contiguous, zero-padded grad_y
//   row, so a vector of grad_x is a short chain of FMAs and one store.
#pragma once
#include <omp.h>

#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "simd/vec_math.h"

namespace fastconv {
namespace FC_NS {

namespace depthwise_detail {

// The plane geometry and the per-thread buffers' layout.
template <class T>
struct Plane {
  int64_t H, W, Ho, Wo, kh, kw, sh, sw, dh, dw, ph, pw, mult;
  int64_t reach;    // phase columns a tap reaches beyond its first: (kw - 1) * dw / sw
  int64_t Wq;       // row length of an x phase plane
  int64_t Wu;       // padded-input columns per phase that hold an input column
  int64_t Wu_len;   // Wu rounded up to whole vectors: a grad_x phase row's length
  int64_t Wd;       // row length of the zero-padded grad_y copy
  int64_t x_phase_elems;  // the x phase planes; the padded-row scratch follows them
  int64_t x_elems, dy_elems, dx_elems;
  // Where filter column j's run of x starts in the phase planes: (phase * H) * Wq + shift,
  // with phase (j * dw) % sw and shift (j * dw) / sw.
  std::vector<int64_t> xoff;

  explicit Plane(const ConvNdArgs<T>& a) {
    constexpr int L = Vec<T>::kWidth;
    H = a.in[1], W = a.in[2], Ho = a.out[1], Wo = a.out[2];
    kh = a.kernel[1], kw = a.kernel[2], sh = a.stride[1], sw = a.stride[2];
    dh = a.dil[1], dw = a.dil[2], ph = a.pad[1], pw = a.pad[2];
    mult = a.c_out / a.c_in;
    reach = (kw - 1) * dw / sw;
    Wq = Wo + reach;
    Wu = ceil_div(pw + W, sw);
    // Room for the full-vector reads of data_grad_row and for every grad_y column.
    Wu_len = round_up(Wu, L);
    Wd = reach + imax(Wu_len + L, Wo);
    x_phase_elems = per_thread_floats(sw * H * Wq);
    x_elems = x_phase_elems + per_thread_floats(sw * Wq);
    dy_elems = per_thread_floats(mult * Ho * Wd);
    dx_elems = per_thread_floats(sw * Wu_len);
    for (int64_t j = 0; j < kw; ++j) xoff.push_back(((j * dw) % sw) * H * Wq + (j * dw) / sw);
  }
};

// xph[p][r][u] = x[r][u * sw + p - pw], 0 outside the row. `row` is scratch for
// one zero-padded input row of sw * Wq elements. Rows are short, so the copies
// are inline vector loops rather than libc calls.
template <class T>
void copy_x_phases(const Plane<T>& g, const T* x, T* xph, T* row) {
  const int64_t len = g.sw * g.Wq, body = imax(0, imin(g.W, len - g.pw));
  const int64_t lead = imin(g.pw, len);
  for (int64_t r = 0; r < g.H; ++r) {
    if (g.sw == 1) {
      row = xph + r * g.Wq;  // the padded row is the only phase
    }
    fill_floats(row, T(0), lead);
    copy_floats(row + lead, x + r * g.W, body);
    fill_floats(row + lead + body, T(0), len - lead - body);
    if (g.sw == 2) {  // the common stride, with a constant step the compiler vectorises
      T* __restrict even = xph + r * g.Wq;
      T* __restrict odd = xph + (g.H + r) * g.Wq;
      for (int64_t u = 0; u < g.Wq; ++u) {
        even[u] = row[2 * u];
        odd[u] = row[2 * u + 1];
      }
    } else if (g.sw > 2) {
      for (int64_t p = 0; p < g.sw; ++p) {
        T* dst = xph + (p * g.H + r) * g.Wq;
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

// The filter columns j grouped by the padded-input column phase (j * dw) % sw
// they feed, with their grad_y column shift (j * dw) / sw: phase p's taps are
// entries [begin[p], begin[p + 1]) of j and shift.
struct PhaseTaps {
  std::vector<int64_t> begin, j, shift;

  PhaseTaps(int64_t kw, int64_t dw, int64_t sw) : begin(sw + 1, 0) {
    for (int64_t p = 0; p < sw; ++p) {
      begin[p] = static_cast<int64_t>(j.size());
      for (int64_t t = 0; t < kw; ++t)
        if ((t * dw) % sw == p) {
          j.push_back(t);
          shift.push_back((t * dw) / sw);
        }
    }
    begin[sw] = static_cast<int64_t>(j.size());
  }
};

// One row ih of grad_x from the padded grad_y planes; w holds the mult filters
// of this channel. `rows` and `taps` are scratch: the (grad_y row, filter row)
// pairs that reach row ih, and for one phase the (weight, grad_y run) pairs.
// Four vectors of a phase row go at once, four independent FMA chains.
template <class T>
void data_grad_row(const Plane<T>& g, const PhaseTaps& pt, int64_t ih, const T* dyp, const T* w, T* dxs,
                   T* dx_row, std::vector<std::pair<const T*, const T*>>& rows,
                   std::vector<std::pair<T, const T*>>& taps) {
  using V = Vec<T>;
  constexpr int L = V::kWidth;
  rows.clear();
  for (int64_t i = 0; i < g.kh; ++i) {
    const int64_t y = ih + g.ph - i * g.dh;
    if (y < 0 || y % g.sh != 0 || y / g.sh >= g.Ho) continue;
    for (int64_t m = 0; m < g.mult; ++m)
      rows.emplace_back(dyp + (m * g.Ho + y / g.sh) * g.Wd + g.reach, w + (m * g.kh + i) * g.kw);
  }
  const bool direct = g.sw == 1;  // the only phase is the padded row: write grad_x in place
  for (int64_t p = 0; p < g.sw; ++p) {
    taps.clear();
    for (const auto& rw : rows)
      for (int64_t t = pt.begin[p]; t < pt.begin[p + 1]; ++t) taps.emplace_back(rw.second[pt.j[t]], rw.first - pt.shift[t]);
    const int64_t u0 = direct ? g.pw : 0, u1 = direct ? g.pw + g.W : g.Wu;
    T* out = direct ? dx_row - g.pw : dxs + p * g.Wu_len;
    int64_t u = u0;
    for (; u + 3 * L < u1; u += 4 * L) {
      V a0 = V::zero(), a1 = V::zero(), a2 = V::zero(), a3 = V::zero();
      for (const auto& tp : taps) {
        const V wv = V::set1(tp.first);
        const T* src = tp.second + u;
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
      for (const auto& tp : taps) acc = V::fmadd(V::set1(tp.first), V::load(tp.second + u), acc);
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

template <class T>
void depthwise_backward(const ConvBackward<T>& b) {
  using namespace depthwise_detail;
  const ConvNdArgs<T>& a = b.g;
  const Plane<T> g(a);
  const int64_t taps = g.kh * g.kw, in_plane = g.H * g.W, out_plane = g.Ho * g.Wo;
  const int64_t work = a.n * a.c_out * out_plane * taps;
  const int threads = static_cast<int>(imin(work < (1 << 16) ? 1 : a.threads, a.c_in));
  const int64_t per_thread = g.x_elems + g.dy_elems + g.dx_elems;
  Scratch<T> scratch(checked_mul(per_thread, threads));

#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    T* xph = scratch.data() + omp_get_thread_num() * per_thread;
    T* dyp = xph + g.x_elems;
    T* dxs = dyp + g.dy_elems;
    const PhaseTaps pt(g.kw, g.dw, g.sw);
    std::vector<std::pair<const T*, const T*>> rows;
    std::vector<std::pair<T, const T*>> tap_runs;
    rows.reserve(g.kh * g.mult);
    tap_runs.reserve(g.kh * g.mult * g.kw);
#pragma omp for schedule(static)
    for (int64_t c = 0; c < a.c_in; ++c) {
      T* gw = b.grad_w ? b.grad_w + c * g.mult * taps : nullptr;
      if (gw) std::memset(gw, 0, sizeof(T) * g.mult * taps);
      for (int64_t n = 0; n < a.n; ++n) {
        const T* dy = b.grad_y + (n * a.c_out + c * g.mult) * out_plane;
        if (gw) {
          copy_x_phases(g, b.x + (n * a.c_in + c) * in_plane, xph, xph + g.x_phase_elems);
          for (int64_t m = 0; m < g.mult; ++m) weight_grad_plane(g, dy + m * out_plane, xph, gw + m * taps);
        }
        if (b.grad_x) {
          copy_dy_padded(g, dy, out_plane, dyp);
          T* dx = b.grad_x + (n * a.c_in + c) * in_plane;
          for (int64_t ih = 0; ih < g.H; ++ih)
            data_grad_row(g, pt, ih, dyp, b.weight + c * g.mult * taps, dxs, dx + ih * g.W, rows, tap_runs);
        }
      }
    }
  }
}

}  // namespace FC_NS
}  // namespace fastconv
