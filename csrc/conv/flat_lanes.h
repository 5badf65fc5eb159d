// Flat output positions of a stride-1 convolution whose output rows are as wide as its
// input rows (W): output q = oh * W + ow reads, under filter tap (i, j), input row
// oh + i * dh - ph and column ow + j * dw - pw, which is the input element at the fixed flat
// offset flat_tap_offset(...) from q whenever that row and column lie inside the input.
// Elsewhere the flat offset lands on a neighbouring row (or outside the plane), so the lanes
// of an output vector that a tap reads from inside the input are a mask per (vector, tap).
// Shared by the flat direct convolution (direct_flat.h), the depthwise forward's flat kernel
// (direct.h) and the depthwise weight gradient read in place (depthwise_backward.h).
#pragma once
#include <cstdint>
#include <vector>

#include "simd/vec.h"

namespace fastconv {
namespace FC_NS {

inline int64_t flat_tap_offset(int64_t W, int64_t i, int64_t j, int64_t dh, int64_t dw, int64_t ph, int64_t pw) {
  return (i * dh - ph) * W + j * dw - pw;
}

// Per vector of L flat outputs (Ho * W of them), the lanes whose input row is inside the
// input for each filter row i, and whose input column is for each filter column j; a tap's
// lanes are the AND of its row's and its column's. A vector's lanes run through a few row
// pieces, one division each.
struct FlatLanes {
  int64_t kh, kw;
  std::vector<unsigned> rows, cols;  // rows[v * kh + i], cols[v * kw + j]

  FlatLanes(int64_t H, int64_t W, int64_t Ho, int64_t kh_, int64_t kw_, int64_t dh, int64_t dw, int64_t ph,
            int64_t pw, int L)
      : kh(kh_), kw(kw_) {
    const int64_t len = Ho * W, vectors = ceil_div(len, L);
    rows.assign(vectors * kh, 0u);
    cols.assign(vectors * kw, 0u);
    for (int64_t v = 0; v < vectors; ++v) {
      const int64_t v_end = imin((v + 1) * L, len);
      for (int64_t q = v * L; q < v_end;) {
        const int64_t oh = q / W, ow = q % W, run = imin(v_end - q, W - ow), lane = q - v * L;
        for (int64_t i = 0; i < kh; ++i) {
          const int64_t r = oh + i * dh - ph;
          if (r >= 0 && r < H) rows[v * kh + i] |= lane_range_bits(lane, lane + run);
        }
        for (int64_t j = 0; j < kw; ++j) {  // columns ow .. ow + run reading input columns lo .. hi
          const int64_t lo = imax(ow, pw - j * dw), hi = imin(ow + run, W + pw - j * dw);
          if (lo < hi) cols[v * kw + j] |= lane_range_bits(lane + lo - ow, lane + hi - ow);
        }
        q += run;
      }
    }
  }

  // The lanes of vector v that tap (i, j) reads from inside the input.
  unsigned tap(int64_t v, int64_t i, int64_t j) const { return rows[v * kh + i] & cols[v * kw + j]; }

  // masks[v * kh * kw + i * kw + j] = tap(v, i, j) for every vector v.
  void tap_masks(unsigned* masks) const {
    const int64_t taps = kh * kw, vectors = static_cast<int64_t>(rows.size()) / kh;
    for (int64_t v = 0; v < vectors; ++v)
      for (int64_t t = 0; t < taps; ++t) masks[v * taps + t] = tap(v, t / kw, t % kw);
  }
};

}  // namespace FC_NS
}  // namespace fastconv
