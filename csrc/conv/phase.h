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

struct PhaseLayout {
  int64_t hq = 0, wq = 0;        // phase plane size
  int64_t plane = 0;             // hq * wq
  int64_t channel_stride = 0;    // s_h * s_w * plane
  int64_t flat_outputs = 0;      // h_out * wq
  int64_t slack = 0;             // readable floats past the last channel

  PhaseLayout(const Conv2dArgs& a, int64_t tile) {
    const int64_t h_need = (a.h_out - 1) * a.stride_h + (a.kh - 1) * a.dil_h + 1;
    const int64_t w_need = (a.w_out - 1) * a.stride_w + (a.kw - 1) * a.dil_w + 1;
    hq = ceil_div(h_need, a.stride_h);
    wq = ceil_div(w_need, a.stride_w);
    plane = hq * wq;
    channel_stride = a.stride_h * a.stride_w * plane;
    flat_outputs = a.h_out * wq;
    slack = 2 * tile + 16;
  }

  int64_t buffer_floats(int64_t channels) const { return channels * channel_stride + slack; }

  // Offset of tap (kh, kw) from the start of a channel's phase block.
  int64_t tap_offset(const Conv2dArgs& a, int64_t kh, int64_t kw) const {
    const int64_t dh = kh * a.dil_h, dw = kw * a.dil_w;
    const int64_t phase = (dh % a.stride_h) * a.stride_w + (dw % a.stride_w);
    return phase * plane + (dh / a.stride_h) * wq + (dw / a.stride_w);
  }
};

// Fills the phase planes of `channels` input planes (each h x w, starting at x).
inline void fill_phase_channel(const Conv2dArgs& a, const PhaseLayout& L, const float* x, float* dst) {
  const int64_t sh = a.stride_h, sw = a.stride_w;
  for (int64_t rr = 0; rr < sh; ++rr) {
    for (int64_t r = 0; r < sw; ++r) {
      float* ph = dst + (rr * sw + r) * L.plane;
      for (int64_t i = 0; i < L.hq; ++i) {
        float* row = ph + i * L.wq;
        const int64_t ih = i * sh + rr - a.pad_top;
        if (ih < 0 || ih >= a.h) {
          std::memset(row, 0, sizeof(float) * L.wq);
          continue;
        }
        const float* src = x + ih * a.w;
        // Columns j with 0 <= j*sw + r - pad_left < w.
        const int64_t off = r - a.pad_left;
        const int64_t j_lo = imin(L.wq, imax(0, ceil_div(-off, sw)));
        const int64_t j_hi = imax(j_lo, imin(L.wq, off >= a.w ? 0 : ceil_div(a.w - off, sw)));
        std::memset(row, 0, sizeof(float) * j_lo);
        if (sw == 1) {
          std::memcpy(row + j_lo, src + j_lo + off, sizeof(float) * (j_hi - j_lo));
        } else {
          for (int64_t j = j_lo; j < j_hi; ++j) row[j] = src[j * sw + off];
        }
        std::memset(row + j_hi, 0, sizeof(float) * (L.wq - j_hi));
      }
    }
  }
}

}  // namespace FC_NS
}  // namespace fastconv
