// Zero-padded, stride-phase-split copy of input planes for the direct kernels.
//
// For stride s the padded plane xpad is split into s_h x s_w phase planes
//   phase[rr][r][i][j] = xpad[i * s_h + rr][j * s_w + r],
// so the input element under output (oh, ow) and tap (kh, kw) is
//   phase[(kh*d_h) % s_h][(kw*d_w) % s_w][oh + (kh*d_h) / s_h][ow + (kw*d_w) / s_w].
// Indexing outputs by the flat j = oh * wq + ow over the phase width wq makes that a
// fixed offset per tap: every tap reads a contiguous run of j, whatever the stride or
// dilation. Lanes with ow >= w_out are computed and discarded.
#pragma once
#include <cstdint>
#include <cstring>

#include "core/params.h"
#include "simd/vec.h"

namespace fastconv {
namespace FC_NS {

// Shared padding columns (below) measured 3-25% faster for 3x3 convolutions on
// images up to 168 wide (AVX-512, 2 threads), equal at 192-200, but 12-20% slower at
// some widths from 216 to 224 (an alignment effect we have not pinned down; the
// separate layout has such widths too, e.g. 225). Wide images keep separate columns.
constexpr int64_t kSharedPaddingMaxWidth = 192;

struct PhaseLayout {
  int64_t hq = 0, wq = 0;        // phase plane size
  int64_t plane = 0;             // hq * wq
  int64_t channel_stride = 0;    // s_h * s_w * plane
  int64_t flat_outputs = 0;      // h_out * wq
  int64_t slack = 0;             // readable (zero) floats past the last channel

  PhaseLayout(const Conv2dArgs& a, int64_t tile) {
    const int64_t h_need = (a.h_out - 1) * a.stride_h + (a.kh - 1) * a.dil_h + 1;
    const int64_t w_need = (a.w_out - 1) * a.stride_w + (a.kw - 1) * a.dil_w + 1;
    hq = ceil_div(h_need, a.stride_h);
    wq = ceil_div(w_need, a.stride_w);
    if (a.stride_w == 1 && a.w <= kSharedPaddingMaxWidth) {
      // Reads past a row's last input column wrap into the next row's left padding,
      // so the right padding can share those zero columns: rows need only
      // w + max(pad_left, pad_right) columns, fewer discarded lanes per row.
      const int64_t pad_right = w_need - a.w - a.pad_left;
      if (pad_right >= 0) wq = imax(a.w_out, a.w + imax(a.pad_left, pad_right));
    }
    plane = hq * wq;
    channel_stride = a.stride_h * a.stride_w * plane;
    flat_outputs = a.h_out * wq;
    // Past the last plane: the final tile's overrun, plus a row for reads that wrap
    // from the last row into (zero) padding.
    slack = wq + 2 * tile + 16;
  }

  int64_t buffer_floats(int64_t channels) const { return channels * channel_stride + slack; }

  // Offset of tap (kh, kw) from the start of a channel's phase block.
  int64_t tap_offset(const Conv2dArgs& a, int64_t kh, int64_t kw) const {
    const int64_t dh = kh * a.dil_h, dw = kw * a.dil_w;
    const int64_t phase = (dh % a.stride_h) * a.stride_w + (dw % a.stride_w);
    return phase * plane + (dh / a.stride_h) * wq + (dw / a.stride_w);
  }
};

// Both column phases of one input row for stride 2: even[j] = xpad[2j], odd[j] = xpad[2j + 1]
// for j < wq. Masked loads supply the zero padding; no scalar edge loop.
inline void fill_row_stride2(const float* src, int64_t w, int64_t pad_left, int64_t wq, float* even, float* odd) {
  constexpr int L = VecF::kWidth;
  for (int64_t j = 0; j < wq; j += L) {
    const int64_t c = 2 * j - pad_left;
    const VecF lo = c >= 0 && c + L <= w ? VecF::load(src + c) : VecF::load_mask(src + c, lanes_inside(c, w));
    const VecF hi = c + L >= 0 && c + 2 * L <= w ? VecF::load(src + c + L)
                                                  : VecF::load_mask(src + c + L, lanes_inside(c + L, w));
    VecF e, o;
    VecF::deinterleave2(lo, hi, &e, &o);
    const int n = static_cast<int>(imin(L, wq - j));
    e.store_partial(even + j, n);
    o.store_partial(odd + j, n);
  }
}

// Fills the phase planes of one input plane (h x w, at x) into dst. Only the
// positions that hold input are written: `dst` must start zeroed, and since every
// plane of a call writes the same positions, a buffer can be refilled plane after
// plane without clearing the padding again.
// `clear` zeroes the channel's block first, for buffers that are not already zero.
inline void fill_phase_channel(const Conv2dArgs& a, const PhaseLayout& L, const float* x, float* dst,
                               bool clear = false) {
  const int64_t sh = a.stride_h, sw = a.stride_w;
  if (clear) std::memset(dst, 0, sizeof(float) * L.channel_stride);
  for (int64_t rr = 0; rr < sh; ++rr) {
    for (int64_t i = 0; i < L.hq; ++i) {
      const int64_t ih = i * sh + rr - a.pad_top;
      const float* src = x + ih * a.w;
      if (ih < 0 || ih >= a.h) continue;
      if (sw == 2) {
        float* even = dst + (rr * 2) * L.plane + i * L.wq;
        fill_row_stride2(src, a.w, a.pad_left, L.wq, even, even + L.plane);
        continue;
      }
      for (int64_t r = 0; r < sw; ++r) {
        float* row = dst + (rr * sw + r) * L.plane + i * L.wq;
        // Columns j with 0 <= j*sw + r - pad_left < w.
        const int64_t off = r - a.pad_left;
        const int64_t j_lo = imin(L.wq, imax(0, ceil_div(-off, sw)));
        const int64_t j_hi = imax(j_lo, imin(L.wq, off >= a.w ? 0 : ceil_div(a.w - off, sw)));
        if (sw == 1) {
          copy_floats(row + j_lo, src + j_lo + off, j_hi - j_lo);
        } else {
          for (int64_t j = j_lo; j < j_hi; ++j) row[j] = src[j * sw + off];
        }
      }
    }
  }
}

// Where the lanes of a tile of flat outputs go in an output plane: one entry per
// (vector, output row) piece, with the lanes it keeps (ow < w_out, j < flat_outputs)
// and the plane offset of its lane 0. Computed once per tile, shared by every
// output channel stored from it.
template <int NV>
struct FlatTileMap {
  static constexpr int kMax = NV * (VecF::kWidth + 1);
  int count = 0;
  int vec[kMax];
  unsigned bits[kMax];
  int64_t offset[kMax];

  FlatTileMap(int64_t j0, const PhaseLayout& L, int64_t w_out) {
    constexpr int W = VecF::kWidth;
    int64_t oh = j0 / L.wq;
    for (int v = 0; v < NV; ++v) {
      const int64_t j = j0 + v * W, j_end = imin(j + W, L.flat_outputs);
      while ((oh + 1) * L.wq <= j) ++oh;
      for (int64_t row = oh, row_start = oh * L.wq; row_start < j_end; row_start += L.wq, ++row) {
        const int64_t lo = imax(j, row_start) - j, hi = imin(j_end, row_start + w_out) - j;
        if (hi <= lo) continue;
        vec[count] = v;
        bits[count] = lane_range_bits(lo, hi);
        // Lane l of this row lands at plane[row * w_out + (j + l - row_start)].
        offset[count] = row * w_out - row_start + j;
        ++count;
      }
    }
  }

  // Stores NV vectors (one output channel's part of the tile) into its plane.
  void store(const VecF* r, float* plane) const {
    constexpr unsigned kAll = VecF::kWidth >= 32 ? ~0u : (1u << VecF::kWidth) - 1u;
    for (int s = 0; s < count; ++s) {
      if (bits[s] == kAll)
        r[vec[s]].store(plane + offset[s]);
      else
        r[vec[s]].store_mask(plane + offset[s], bits[s]);
    }
  }
};

}  // namespace FC_NS
}  // namespace fastconv
