// Direct convolution on dense flat output positions, for stride-1 convolutions whose
// output rows are as long as their input rows (pad_left + pad_right = dil_w * (kw - 1):
// "same" padding, e.g. 3x3 with padding 1).
//
// Output j = oh * w + ow reads, under filter tap (kh, kw), the input element
//   j + (kh * dil_h - pad_top) * w + (kw * dil_w - pad_left)
// whenever that tap's input row and column lie inside the plane: a fixed offset per tap,
// as in the phase-split layout (phase.h), but over the outputs themselves. So the input is
// read in place (no padded copy), every lane of a vector is an output (the phase layout's
// rows are padded, so 7 x 7 outputs took 64 lanes there), and the output plane is stored
// with plain vector stores. The lanes whose input lies outside (a row's edge columns for
// the side taps, the first and last rows for the top and bottom ones) are masked loads: a
// mask per (vector, tap), the same for every channel and computed once per call.
//
// The register tile is the phase kernel's (kDirectMR output channels x kDirectNV vectors).
// A plane's last tile keeps only the vectors it needs, and where its last vector would hold
// at most half a vector of outputs, that part runs on the half-width vector VecH (a
// 7 x 7 plane: 3 vectors and a half rather than 4 vectors on AVX-512).
#pragma once
#include <omp.h>

#include <cstdint>

#include "conv/direct.h"
#include "conv/flat_lanes.h"

namespace fastconv {
namespace FC_NS {

// Input channels per pass over the filter taps: the tile's filter values (MR x chunk x taps)
// and input rows stay in L1 while each tap sweeps the chunk.
constexpr int64_t kFlatChannelChunk = 32;

// Where the flat layout runs: on AVX-512 only, and with at least kFlatMinChannels input
// channels per group. Measured against the phase kernel (batch 1, 3x3, in-process A/B, 2
// threads): AVX-512 512 @7 1.10-1.14x, 256 @14 1.10-1.15x, 128 @28 1.03-1.14x, 64 @56
// 1.00-1.04x, 64 @224 1.02-1.09x, 64 @56 batch 32 1.04-1.08x, 32 @112 1.08x, 24 @56 1.01x,
// but 16 @112 0.88x, 8 @224 0.49x (each tap's pass over few channels costs more than the
// padded copy it saves). On AVX2, whose masked loads build a vector mask each, 0.76-0.98x.
constexpr bool kDirectFlat = VecF::kWidth >= 16;
constexpr int64_t kFlatMinChannels = 24;

inline bool direct_flat_applies(const Conv2dArgs& a) {
  return kDirectFlat && a.stride_h == 1 && a.stride_w == 1 && a.w_out == a.w && a.h_out > 0 &&
         a.w > 0 && a.c_in / a.groups >= kFlatMinChannels;
}

// A pointwise convolution (1x1, stride 1, no padding) over small planes runs here rather
// than on the GEMM, forward and as its data gradient: the GEMM pads each plane's columns to
// whole micro-kernel tiles and packs its operand on every call, which small planes do not
// repay. Measured (in-process A/B, 2 threads, flat kernel vs GEMM): forward @7 and @14
// 1.05-1.62x at batch 8 and 1.06-1.36x at batch 1 (MobileNetV2's and ResNet-50's 1x1
// layers), data gradient at batch 8 1.07-1.13x @14 and 1.00-1.08x @7. @28 it wins at batch 1
// (forward 0.98-1.21x, data gradient 0.99-1.16x over ten layers) but not reliably at batch
// 2-8 (0.86-1.18x); @56 and @112 0.70-0.96x, and on AVX2 (the phase kernel) 0.35-0.76x, so
// those stay on the GEMM.
constexpr int64_t kFlatPointwiseMaxPlane = 256, kFlatPointwiseMaxPlaneBatch1 = 784;

inline bool flat_runs_pointwise(const Conv2dArgs& a) {
  return direct_flat_applies(a) &&
         a.h_out * a.w_out <= (a.n == 1 ? kFlatPointwiseMaxPlaneBatch1 : kFlatPointwiseMaxPlane);
}

// Per call: the input offset of each tap, and the lanes each tap reads inside the input,
// per (vector, tap) (flat_lanes.h).
struct FlatPlan {
  int64_t plane_in = 0, plane_out = 0, taps = 0;
  Scratch<int64_t> offs;    // offs[t]: input offset of tap t (row-major taps)
  Scratch<unsigned> masks;  // masks[v * taps + t]: lanes of output vector v that tap t reads

  explicit FlatPlan(const Conv2dArgs& a)
      : plane_in(a.h * a.w),
        plane_out(a.h_out * a.w_out),
        taps(a.kh * a.kw),
        offs(taps),
        masks(ceil_div(plane_out, VecF::kWidth) * taps) {
    FlatLanes(a.h, a.w, a.h_out, a.kh, a.kw, a.dil_h, a.dil_w, a.pad_top, a.pad_left, VecF::kWidth)
        .tap_masks(masks.data());
    for (int64_t i = 0; i < a.kh; ++i)
      for (int64_t j = 0; j < a.kw; ++j)
        offs.data()[i * a.kw + j] = flat_tap_offset(a.w, i, j, a.dil_h, a.dil_w, a.pad_top, a.pad_left);
  }
};

// One register tile: output channels co .. co + m (R >= m rows) x the NV vectors (and,
// with HALF, the half vector after them) of outputs from j0. `x` is the group's first
// input channel of the image, `y` the image's output.
template <int R, int NV, bool HALF>
void flat_tile(const Conv2dArgs& a, const FlatPlan& p, const float* x, int64_t cin, int64_t co, int m, int64_t j0,
               float* y, const Epilogue& epi) {
  constexpr int L = VecF::kWidth;
  const int taps = static_cast<int>(p.taps);
  const FilterRows f(a, co);
  const float* wr[R];
  VecF acc[R][NV > 0 ? NV : 1];
  VecH half[R];
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) {
    wr[i] = f.w + (i < m ? i : m - 1) * f.row_stride;
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[i][v] = VecF::zero();
    half[i] = VecH::zero();
  }
  const unsigned* masks = p.masks.data() + (j0 / L) * taps;
  for (int64_t c0 = 0; c0 < cin; c0 += kFlatChannelChunk) {
    const int64_t c1 = imin(cin, c0 + kFlatChannelChunk);
    for (int t = 0; t < taps; ++t) {
      // A flipped filter's tap t meets the input under tap taps - 1 - t.
      const int64_t wt = a.weight_transposed ? taps - 1 - t : t;
      unsigned mk[NV + 1];
#pragma GCC unroll 8
      for (int v = 0; v <= NV; ++v) mk[v] = v < NV || HALF ? masks[v * taps + t] : 0u;
      const float* src = x + p.offs.data()[t] + j0;
      for (int64_t ci = c0; ci < c1; ++ci) {
        const float* s = src + ci * p.plane_in;
        VecF xv[NV > 0 ? NV : 1];
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) xv[v] = VecF::load_mask(s + v * L, mk[v]);
        VecH xh = VecH::zero();
        if constexpr (HALF) xh = VecH::load_mask(s + NV * L, mk[NV]);
        const int64_t wo = ci * f.ci_step + wt;
#pragma GCC unroll 16
        for (int i = 0; i < R; ++i) {
          const float w = wr[i][wo];
          const VecF wv = VecF::set1(w);
#pragma GCC unroll 8
          for (int v = 0; v < NV; ++v) acc[i][v] = VecF::fmadd(wv, xv[v], acc[i][v]);
          if constexpr (HALF) half[i] = VecH::fmadd(VecH::set1(w), xh, half[i]);
        }
      }
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) {
    if (i >= m) break;
    float* out = y + (co + i) * p.plane_out;
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      const int64_t j = j0 + v * L;
      const VecF r = apply_epilogue(acc[i][v], epi, co + i, 0, L);
      if (j + L <= p.plane_out)
        r.store(out + j);
      else
        r.store_partial(out + j, static_cast<int>(p.plane_out - j));
    }
    if constexpr (HALF) {
      const int64_t j = j0 + NV * L;
      apply_epilogue(half[i], epi, co + i, 0, VecH::kWidth).store_partial(out + j, static_cast<int>(p.plane_out - j));
    }
  }
}

using FlatTileFn = void (*)(const Conv2dArgs&, const FlatPlan&, const float*, int64_t, int64_t, int, int64_t, float*,
                            const Epilogue&);

// The tile for a block of m output channels (2-, 4- or MR-row tiles, as the phase kernel)
// and nv vectors plus an optional half vector.
template <int R>
inline FlatTileFn flat_tile_for_rows(int nv, bool half) {
  static_assert(kDirectNV == 4 || kDirectNV == 2, "flat tiles are instantiated for 2 or 4 vectors");
  if (half) {
    switch (nv) {
      case 0: return &flat_tile<R, 0, true>;
      case 1: return &flat_tile<R, 1, true>;
      case 2: return &flat_tile<R, 2, true>;
      default: return &flat_tile<R, 3, true>;
    }
  }
  switch (nv) {
    case 1: return &flat_tile<R, 1, false>;
    case 2: return &flat_tile<R, 2, false>;
    case 3: return &flat_tile<R, 3, false>;
    default: return &flat_tile<R, kDirectNV, false>;
  }
}

inline FlatTileFn flat_tile_for(int m, int nv, bool half) {
  return with_direct_tile_rows(m, [&](auto rows) { return flat_tile_for_rows<decltype(rows)::value>(nv, half); });
}

inline void conv2d_direct_flat(const Conv2dArgs& a) {
  constexpr int MR = kDirectMR, NV = kDirectNV, L = VecF::kWidth;
  const FlatPlan p(a);
  const int64_t cin_g = a.c_in / a.groups, cout_g = a.c_out / a.groups;
  // Tiles of NV full vectors, then the rest: the remaining full vectors, the partial one as
  // a full vector if it holds more than half a vector of outputs, as a half vector otherwise.
  const int64_t full = p.plane_out / L, rem = p.plane_out % L;
  const bool half_last = rem > 0 && rem <= VecH::kWidth && VecH::kWidth < L;
  const int nv_last = static_cast<int>(full % NV) + (rem > 0 && !half_last ? 1 : 0);
  const int64_t full_tiles = full / NV;
  const int64_t tiles = full_tiles + (nv_last > 0 || half_last ? 1 : 0);
  const int64_t blocks = ceil_div(cout_g, MR);
  const int64_t tasks = a.groups * tiles * blocks;
  const int64_t image_in = a.c_in * p.plane_in, image_out = a.c_out * p.plane_out;
  const Epilogue epi = conv_epilogue(a);
  // Tasks in tile-major order within a group: consecutive tasks of a thread share their input.
  auto run_task = [&](int64_t t, const float* x_image, float* y_image) {
    const int64_t block = t % blocks, tile = (t / blocks) % tiles, g = t / (blocks * tiles);
    const int m = static_cast<int>(imin(MR, cout_g - block * MR));
    const bool last = tile == full_tiles;
    const FlatTileFn fn = flat_tile_for(m, last ? nv_last : NV, last && half_last);
    fn(a, p, x_image + g * cin_g * p.plane_in, cin_g, g * cout_g + block * MR, m, tile * NV * L, y_image, epi);
  };
  const int threads = a.threads;
  if (a.n >= threads && threads > 1) {
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
    for (int64_t n = 0; n < a.n; ++n)
      for (int64_t t = 0; t < tasks; ++t) run_task(t, a.x + n * image_in, a.y + n * image_out);
    return;
  }
  for (int64_t n = 0; n < a.n; ++n) {
#pragma omp parallel for num_threads(threads) schedule(static, 1) if (threads > 1)
    for (int64_t t = 0; t < tasks; ++t) run_task(t, a.x + n * image_in, a.y + n * image_out);
  }
}

// The direct convolution: on flat positions where the shape allows it, over phase-split
// input otherwise.
inline void conv2d_direct(const Conv2dArgs& a) {
  if constexpr (kDirectFlat) {
    if (direct_flat_applies(a)) return conv2d_direct_flat(a);
  }
  conv2d_direct_phases(a);
}

}  // namespace FC_NS
}  // namespace fastconv
