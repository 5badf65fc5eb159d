// Blocked direct convolution over phase-split input (see phase.h); on AVX-512, stride-1
// convolutions that keep the row width run on flat output positions instead (direct_flat.h).
// A task computes an MR-channel x (NV * width)-position register tile of the
// output: per input channel and tap, NV contiguous vector loads of input and MR
// weight broadcasts feed MR * NV FMAs. Depthwise convolution is the MR = 1 case.
#pragma once
#include <omp.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "conv/flat_lanes.h"
#include "conv/phase.h"
#include "core/buffer.h"

namespace fastconv {
namespace FC_NS {

#if defined(__AVX512F__)
constexpr int kDirectMR = 6, kDirectNV = 4, kDepthwiseNV = 4;
#elif defined(__AVX2__)
constexpr int kDirectMR = 6, kDirectNV = 2, kDepthwiseNV = 4;
#else
constexpr int kDirectMR = 4, kDirectNV = 4, kDepthwiseNV = 4;
#endif

// Accumulates one register tile. `x` points at channel 0's phase block plus the
// tile's first flat output. Weights are read in place: `w` is output channel
// co's filter (cin x taps floats, `w_ci_step` apart), the next channel's `w_stride`
// floats further; the MR filters are MR sequential streams, so no per-call
// repacking is needed. Rows past `m` re-read the last valid filter (their results
// are discarded).
template <int MR, int NV>
inline void direct_tile(const float* __restrict x, int64_t cin, int64_t cstride, const int64_t* offs, int taps,
                        const float* __restrict w, int64_t w_stride, int64_t w_ci_step, int m, VecF (&acc)[MR][NV]) {
  constexpr int L = VecF::kWidth;
  const float* wr[MR];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
    wr[i] = w + (i < m ? i : m - 1) * w_stride;
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[i][v] = VecF::zero();
  }
  for (int64_t ci = 0; ci < cin; ++ci) {
    const float* xc = x + ci * cstride;
    for (int t = 0; t < taps; ++t) {
      const float* src = xc + offs[t];
      VecF xv[NV];
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) xv[v] = VecF::load(src + v * L);
#pragma GCC unroll 16
      for (int i = 0; i < MR; ++i) {
        const VecF wv = VecF::set1(wr[i][t]);
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) acc[i][v] = VecF::fmadd(wv, xv[v], acc[i][v]);
      }
    }
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) wr[i] += w_ci_step;
  }
}

// Applies bias + activation and stores the valid lanes (ow < w_out) of a tile
// starting at flat output j0 into output channels co .. co + m.
template <int MR, int NV>
inline void store_direct_tile(VecF (&acc)[MR][NV], int m, int64_t co, int64_t j0, const PhaseLayout& L,
                              const Conv2dArgs& a, float* y_image, const Epilogue& epi) {
  const FlatTileMap<NV> map(j0, L, a.w_out);
  const int64_t plane_out = a.h_out * a.w_out;
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
    if (i >= m) break;
    VecF r[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) r[v] = apply_epilogue(acc[i][v], epi, co + i, 0, VecF::kWidth);
    map.store(r, y_image + (co + i) * plane_out);
  }
}

inline Epilogue conv_epilogue(const Conv2dArgs& a) {
  Epilogue e;
  e.bias = a.bias;
  e.bias_mode = a.bias ? BiasMode::per_row : BiasMode::none;
  e.act = a.act;
  return e;
}

// Input offset per filter tap; reversed for flipped (transposed) filters, so that
// filter tap t meets the input under tap taps - 1 - t.
inline void fill_tap_offsets(const Conv2dArgs& a, const PhaseLayout& L, int64_t* offs) {
  const int64_t taps = a.kh * a.kw;
  for (int64_t kh = 0; kh < a.kh; ++kh)
    for (int64_t kw = 0; kw < a.kw; ++kw) {
      const int64_t t = kh * a.kw + kw;
      offs[a.weight_transposed ? taps - 1 - t : t] = L.tap_offset(a, kh, kw);
    }
}

// Where output channel co's filter starts, the next channel's distance and the
// step from one input channel to the next, in either weight layout.
struct FilterRows {
  const float* w;
  int64_t row_stride, ci_step;
  FilterRows(const Conv2dArgs& a, int64_t co) {
    const int64_t cin_g = a.c_in / a.groups, cout_g = a.c_out / a.groups, taps = a.kh * a.kw;
    if (a.weight_transposed) {
      const int64_t g = co / cout_g;
      w = a.weight + g * cout_g * cin_g * taps + (co - g * cout_g) * taps;
      row_stride = taps;
      ci_step = cout_g * taps;
    } else {
      w = a.weight + co * cin_g * taps;
      row_stride = cin_g * taps;
      ci_step = taps;
    }
  }
};

// One output tile task with an R-row register tile (R >= the block's channel count m).
template <int R, int NV>
inline void direct_task_rows(const Conv2dArgs& a, const PhaseLayout& L, const float* phases, const int64_t* offs,
                             int64_t g, int64_t j0, int64_t co, int m, float* y_image, const Epilogue& epi) {
  const int64_t cin_g = a.c_in / a.groups, taps = a.kh * a.kw;
  const FilterRows f(a, co);
  VecF acc[R][NV];
  direct_tile<R, NV>(phases + g * cin_g * L.channel_stride + j0, cin_g, L.channel_stride, offs,
                     static_cast<int>(taps), f.w, f.row_stride, f.ci_step, m, acc);
  store_direct_tile<R, NV>(acc, m, co, j0, L, a, y_image, epi);
}

// Calls fn(std::integral_constant<int, R>) with the register tile's row count R for a block
// of m output channels: kDirectMR, or 2 or 4 where that covers a group's last, partial block,
// rather than computing rows that are thrown away.
template <class Fn>
inline decltype(auto) with_direct_tile_rows(int m, Fn fn) {
  constexpr int MR = kDirectMR;
  if (m <= 2 && MR > 2) return fn(std::integral_constant<int, 2>());
  if (m <= 4 && MR > 4) return fn(std::integral_constant<int, 4>());
  return fn(std::integral_constant<int, MR>());
}

// One output tile task of the dense/grouped direct convolution, on the tile rows
// with_direct_tile_rows picks for its block.
template <int NV>
inline void direct_task(const Conv2dArgs& a, const PhaseLayout& L, const float* phases, const int64_t* offs,
                        int64_t g, int64_t tile, int64_t block, float* y_image, const Epilogue& epi) {
  constexpr int MR = kDirectMR, T = NV * VecF::kWidth;
  const int64_t cout_g = a.c_out / a.groups;
  const int64_t j0 = tile * T, co = g * cout_g + block * MR;
  const int m = static_cast<int>(imin(MR, cout_g - block * MR));
  with_direct_tile_rows(m, [&](auto rows) {
    direct_task_rows<decltype(rows)::value, NV>(a, L, phases, offs, g, j0, co, m, y_image, epi);
  });
}

template <int NV>
void conv2d_direct_nv(const Conv2dArgs& a, const PhaseLayout& L) {
  constexpr int MR = kDirectMR, T = NV * VecF::kWidth;
  const int64_t cout_g = a.c_out / a.groups, taps = a.kh * a.kw;
  const int64_t blocks = ceil_div(cout_g, MR), tiles = ceil_div(L.flat_outputs, T);
  const int64_t tasks = a.groups * tiles * blocks;
  const int64_t image_in = a.c_in * a.h * a.w, image_out = a.c_out * a.h_out * a.w_out;
  const int threads = a.threads;
  const Epilogue epi = conv_epilogue(a);

  Scratch<int64_t> offs_buf(taps);
  int64_t* offs = offs_buf.data();
  fill_tap_offsets(a, L, offs);
  // Tasks in tile-major order within a group: consecutive tasks of a thread share
  // their input tile.
  auto run_task = [&](int64_t t, const float* phases, float* y_image) {
    const int64_t block = t % blocks, tile = (t / blocks) % tiles, g = t / (blocks * tiles);
    direct_task<NV>(a, L, phases, offs, g, tile, block, y_image, epi);
  };

  const int64_t phase_floats = per_thread_floats(L.buffer_floats(a.c_in));
  if (a.n >= threads && threads > 1) {
    // Many images: each thread takes whole images with its own phase buffer.
    AlignedBuffer phases(checked_mul(threads, phase_floats), true);
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
    for (int64_t n = 0; n < a.n; ++n) {
      float* ph = phases.data() + omp_get_thread_num() * phase_floats;
      for (int64_t c = 0; c < a.c_in; ++c)
        fill_phase_channel(a, L, a.x + n * image_in + c * a.h * a.w, ph + c * L.channel_stride);
      for (int64_t t = 0; t < tasks; ++t) run_task(t, ph, a.y + n * image_out);
    }
    return;
  }
  // Each thread clears the channels it fills (the first image only): zeroing the whole
  // buffer up front would be a serial pass over it.
  AlignedBuffer phases(phase_floats);
  std::memset(phases.data() + a.c_in * L.channel_stride, 0, sizeof(float) * (phase_floats - a.c_in * L.channel_stride));
  for (int64_t n = 0; n < a.n; ++n) {
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
#pragma omp for schedule(static)
      for (int64_t c = 0; c < a.c_in; ++c)
        fill_phase_channel(a, L, a.x + n * image_in + c * a.h * a.w, phases.data() + c * L.channel_stride, n == 0);
#pragma omp for schedule(static)
      for (int64_t t = 0; t < tasks; ++t) run_task(t, phases.data(), a.y + n * image_out);
    }
  }
}

// Tiles of NV and NV/2 vectors run at about the same speed (measured), so the
// narrower one is used when it computes noticeably fewer discarded lanes (over 2%:
// it also halves the work per task, over which the per-task output mapping and
// epilogue are spread; the ResNet stem ran 3% faster on the wide tile although the
// narrow one saved 0.25% of its lanes). On AVX2 the narrow tile would leave too few
// accumulators to hide FMA latency.
inline void conv2d_direct_phases(const Conv2dArgs& a) {
  constexpr int T = kDirectNV * VecF::kWidth;
  const PhaseLayout L(a, T);  // its slack covers the overrun of either tile width
  const int64_t flat = L.flat_outputs;
  if (kDirectNV >= 4 && round_up(flat, T / 2) * 50 < round_up(flat, T) * 49)
    conv2d_direct_nv<kDirectNV / 2>(a, L);
  else
    conv2d_direct_nv<kDirectNV>(a, L);
}

// All output tiles of one depthwise output channel into the wide plane (h_out x wq).
// TAPS > 0 fixes the filter size at compile time (3x3, 5x5): the filter stays in
// registers and two accumulator sets halve the FMA chains. TAPS == 0 is the
// general case.
template <int TAPS, int NV>
inline void depthwise_channel(const float* ph, const PhaseLayout& P, const int64_t* offs_in, int64_t taps,
                              const float* w, int64_t tiles, float* wide, const Epilogue& epi, int64_t co) {
  constexpr int L = VecF::kWidth, T = NV * L;
  if constexpr (TAPS == 0) {
    for (int64_t tile = 0; tile < tiles; ++tile) {
      VecF acc[1][NV];
      direct_tile<1, NV>(ph + tile * T, 1, P.channel_stride, offs_in, static_cast<int>(taps), w, taps, taps, 1, acc);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) apply_epilogue(acc[0][v], epi, co, 0, L).store(wide + tile * T + v * L);
    }
  } else {
    int64_t offs[TAPS];
    VecF wv[TAPS];
#pragma GCC unroll 32
    for (int t = 0; t < TAPS; ++t) {
      offs[t] = offs_in[t];
      wv[t] = VecF::set1(w[t]);
    }
    for (int64_t tile = 0; tile < tiles; ++tile) {
      const float* x = ph + tile * T;
      // Keep one base pointer: without this barrier GCC turns every (tap, vector)
      // address into its own induction variable and spills them.
      asm("" : "+r"(x));
      VecF even[NV], odd[NV];
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) even[v] = odd[v] = VecF::zero();
#pragma GCC unroll 32
      for (int t = 0; t < TAPS; ++t)
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) {
          VecF& acc = (t & 1) ? odd[v] : even[v];
          acc = VecF::fmadd(wv[t], VecF::load(x + offs[t] + v * L), acc);
        }
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v)
        apply_epilogue(VecF::add(even[v], odd[v]), epi, co, 0, L).store(wide + tile * T + v * L);
    }
  }
}

// Masks per output chunk (NV vectors) of the row kernel: stride 1 loads one vector
// per (filter column kw, vector v); stride 2 loads two per (column pair p = kw / 2,
// vector v) and deinterleaves them.
template <int K, int S, int NV>
constexpr int depthwise_rows_masks_per_chunk() {
  return S == 1 ? K * NV : ((K + 1) / 2) * NV * 2;
}

// The lanes of each load that lie inside the row: the same for every row and plane of
// a call, so computed once.
template <int K, int S, int NV>
inline void depthwise_rows_masks(const Conv2dArgs& a, unsigned* masks) {
  constexpr int L = VecF::kWidth;
  const int64_t chunks = ceil_div(a.w_out, NV * L);
  for (int64_t c = 0; c < chunks; ++c) {
    unsigned* m = masks + c * depthwise_rows_masks_per_chunk<K, S, NV>();
    const int64_t c0 = S * c * NV * L - a.pad_left;
    for (int v = 0; v < NV; ++v) {
      if (S == 1) {
        for (int kw = 0; kw < K; ++kw) m[kw * NV + v] = lanes_inside(c0 + v * L + kw, a.w);
      } else {
        for (int p = 0; p < (K + 1) / 2; ++p)
          for (int half = 0; half < 2; ++half)
            m[(p * NV + v) * 2 + half] = lanes_inside(c0 + 2 * v * L + 2 * p + half * L, a.w);
      }
    }
  }
}

// A K x K depthwise filter with stride S (1 or 2), undilated, over one plane,
// straight from input rows to output rows: no padded copy (masked loads supply the
// zero padding; stride 2 deinterleaves even and odd columns in registers) and no
// staging. Two output rows are computed together: input row r feeds output row oh
// with filter row r and row oh + 1 with filter row r - S, so a shared row is loaded once.
template <int K, int S, int NV>
inline void depthwise_plane_rows(const Conv2dArgs& a, const float* x, const float* w, float* y, const Epilogue& epi,
                                 int64_t co, const unsigned* masks) {
  constexpr int L = VecF::kWidth, C = NV * L, R = K + S;
  VecF wv[K * K];
#pragma GCC unroll 32
  for (int t = 0; t < K * K; ++t) wv[t] = VecF::set1(w[t]);
  for (int64_t oh = 0; oh < a.h_out; oh += 2) {
    const bool second = oh + 1 < a.h_out;
    const float* rows[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const int64_t ih = S * oh - a.pad_top + r;
      const bool used = r < K || second;
      rows[r] = (ih < 0 || ih >= a.h || !used) ? nullptr : x + ih * a.w;
    }
    const unsigned* m = masks;
    for (int64_t ow = 0; ow < a.w_out; ow += C, m += depthwise_rows_masks_per_chunk<K, S, NV>()) {
      const int64_t c0 = S * ow - a.pad_left;
      VecF top[NV], bottom[NV];
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) top[v] = bottom[v] = VecF::zero();
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const float* row = rows[r];
        if (!row) continue;
        VecF cols[K][NV];  // cols[kw][v]: the input under filter column kw for vector v
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) {
          if constexpr (S == 1) {
#pragma GCC unroll 8
            for (int kw = 0; kw < K; ++kw) cols[kw][v] = VecF::load_mask(row + c0 + v * L + kw, m[kw * NV + v]);
          } else {
#pragma GCC unroll 8
            for (int p = 0; p < (K + 1) / 2; ++p) {
              const float* src = row + c0 + 2 * v * L + 2 * p;
              const unsigned* mm = m + (p * NV + v) * 2;
              VecF even, odd;
              VecF::deinterleave2(VecF::load_mask(src, mm[0]), VecF::load_mask(src + L, mm[1]), &even, &odd);
              cols[2 * p][v] = even;
              if (2 * p + 1 < K) cols[2 * p + 1][v] = odd;
            }
          }
        }
#pragma GCC unroll 8
        for (int kw = 0; kw < K; ++kw)
#pragma GCC unroll 8
          for (int v = 0; v < NV; ++v) {
            if (r < K) top[v] = VecF::fmadd(wv[r * K + kw], cols[kw][v], top[v]);
            if (r >= S) bottom[v] = VecF::fmadd(wv[(r - S) * K + kw], cols[kw][v], bottom[v]);
          }
      }
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) {
        const int64_t col = ow + v * L;
        const int lanes = static_cast<int>(imin(L, a.w_out - col));
        if (lanes <= 0) break;
        apply_epilogue(top[v], epi, co, 0, L).store_partial(y + oh * a.w_out + col, lanes);
        if (second) apply_epilogue(bottom[v], epi, co, 0, L).store_partial(y + (oh + 1) * a.w_out + col, lanes);
      }
    }
  }
}

// A K x K depthwise filter with stride 1 whose output rows are as wide as its input
// rows, on flat output positions (flat_lanes.h): a vector of L outputs runs across
// rows, and tap t reads the input at a fixed flat offset under the lanes `masks`[v *
// K * K + t] (made once per call by depthwise_flat_masks). K * K masked loads and
// FMAs per vector. For rows of at most half a vector, where the row kernel's vectors
// hold one row each and leave most lanes empty (7 of 16 on 7x7 planes). (Two vectors
// at a time, four FMA chains, measured no faster.)
template <int K>
inline void depthwise_plane_flat(const Conv2dArgs& a, const float* x, const float* w, float* y, const Epilogue& epi,
                                 int64_t co, const unsigned* masks) {
  constexpr int L = VecF::kWidth, T = K * K;
  VecF wv[T];
  int64_t off[T];
#pragma GCC unroll 32
  for (int t = 0; t < T; ++t) {
    wv[t] = VecF::set1(w[t]);
    off[t] = flat_tap_offset(a.w, t / K, t % K, 1, 1, a.pad_top, a.pad_left);
  }
  const int64_t len = a.h_out * a.w_out;
  for (int64_t q = 0; q < len; q += L, masks += T) {
    VecF acc[2] = {VecF::zero(), VecF::zero()};  // two FMA chains
#pragma GCC unroll 32
    for (int t = 0; t < T; ++t) acc[t % 2] = VecF::fmadd(wv[t], VecF::load_mask(x + q + off[t], masks[t]), acc[t % 2]);
    apply_epilogue(VecF::add(acc[0], acc[1]), epi, co, 0, L).store_partial(y + q, static_cast<int>(imin(L, len - q)));
  }
}

template <int K>
inline void depthwise_flat_masks(const Conv2dArgs& a, unsigned* masks) {
  FlatLanes(a.h, a.w, a.h_out, K, K, 1, 1, a.pad_top, a.pad_left, VecF::kWidth).tap_masks(masks);
}

// The row kernel and its masks for one shape: square 3x3 / 5x5 filters, stride 1 or 2
// (the same on both axes), no dilation. Chunks are two vectors wide, or one for rows
// that fit in one vector. Measured faster than the phase-split path on every such
// MobileNet layer, the 7x7 ones included. Stride-1 planes that keep their row width
// with rows of at most half a vector take the flat kernel instead.
using DepthwisePlaneFn = void (*)(const Conv2dArgs&, const float*, const float*, float*, const Epilogue&, int64_t,
                                  const unsigned*);
struct DepthwiseRowsKernel {
  DepthwisePlaneFn plane = nullptr;
  void (*masks)(const Conv2dArgs&, unsigned*) = nullptr;
  int64_t mask_count = 0;
};

template <int K, int S, int NV>
inline DepthwiseRowsKernel depthwise_rows_kernel_for(const Conv2dArgs& a) {
  return {&depthwise_plane_rows<K, S, NV>, &depthwise_rows_masks<K, S, NV>,
          ceil_div(a.w_out, NV * VecF::kWidth) * depthwise_rows_masks_per_chunk<K, S, NV>()};
}

template <int K, int S>
inline DepthwiseRowsKernel depthwise_rows_kernel_for_width(const Conv2dArgs& a) {
  if (S == 1 && a.w_out == a.w && 2 * a.w_out <= VecF::kWidth)
    return {&depthwise_plane_flat<K>, &depthwise_flat_masks<K>, ceil_div(a.h_out * a.w_out, VecF::kWidth) * K * K};
  return a.w_out <= VecF::kWidth ? depthwise_rows_kernel_for<K, S, 1>(a) : depthwise_rows_kernel_for<K, S, 2>(a);
}

inline DepthwiseRowsKernel depthwise_rows_kernel(const Conv2dArgs& a) {
  if (a.stride_h != a.stride_w || a.dil_h != 1 || a.dil_w != 1 || a.kh != a.kw) return {};
  const int64_t k = a.kh, s = a.stride_h;
  if (k == 3 && s == 1) return depthwise_rows_kernel_for_width<3, 1>(a);
  if (k == 5 && s == 1) return depthwise_rows_kernel_for_width<5, 1>(a);
  if (k == 3 && s == 2) return depthwise_rows_kernel_for_width<3, 2>(a);
  if (k == 5 && s == 2) return depthwise_rows_kernel_for_width<5, 2>(a);
  return {};
}

// Depthwise (groups == c_in, any channel multiplier), parallel over (image, channel)
// planes. 3x3 / 5x5 filters with stride 1 or 2 take the row kernel above. Other
// shapes phase-split each input plane into a thread-local buffer and run MR = 1
// direct tiles per output channel; with only `taps` FMAs per vector, the flat-to-row
// store logic would cost more than the arithmetic, so those tiles go to a
// thread-local "wide" plane (h_out x wq, epilogue applied) compacted row by row.
inline void conv2d_depthwise(const Conv2dArgs& a) {
  constexpr int NV = kDepthwiseNV, T = NV * VecF::kWidth;
  const DepthwiseRowsKernel rows = depthwise_rows_kernel(a);
  if (rows.plane) {
    const int64_t mult = a.c_out / a.c_in, plane_in = a.h * a.w, plane_out = a.h_out * a.w_out;
    const Epilogue epi = conv_epilogue(a);
    Scratch<unsigned> masks(rows.mask_count);
    rows.masks(a, masks.data());
#pragma omp parallel for num_threads(a.threads) schedule(static) if (a.threads > 1)
    for (int64_t job = 0; job < a.n * a.c_out; ++job) {
      const int64_t n = job / a.c_out, co = job % a.c_out;
      rows.plane(a, a.x + (n * a.c_in + co / mult) * plane_in, a.weight + co * a.kh * a.kw, a.y + job * plane_out,
                 epi, co, masks.data());
    }
    return;
  }
  const PhaseLayout P(a, T);
  const int64_t mult = a.c_out / a.c_in, taps = a.kh * a.kw;
  const int64_t tiles = ceil_div(P.flat_outputs, T);
  const int64_t image_in = a.c_in * a.h * a.w, image_out = a.c_out * a.h_out * a.w_out;
  const int threads = a.threads;
  const Epilogue epi = conv_epilogue(a);
  const int64_t per_thread = per_thread_floats(P.buffer_floats(1) + tiles * T);
  auto channel = taps == 9 ? depthwise_channel<9, NV> : taps == 25 ? depthwise_channel<25, NV> : depthwise_channel<0, NV>;

  Scratch<int64_t> offs_buf(taps);
  int64_t* offs = offs_buf.data();
  fill_tap_offsets(a, P, offs);
  AlignedBuffer scratch(checked_mul(threads, per_thread), true);
  const int64_t jobs = a.n * a.c_in;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int64_t job = 0; job < jobs; ++job) {
    const int64_t n = job / a.c_in, c = job % a.c_in;
    float* ph = scratch.data() + omp_get_thread_num() * per_thread;
    float* wide = ph + P.buffer_floats(1);
    fill_phase_channel(a, P, a.x + n * image_in + c * a.h * a.w, ph);
    for (int64_t m = 0; m < mult; ++m) {
      const int64_t co = c * mult + m;
      channel(ph, P, offs, taps, a.weight + co * taps, tiles, wide, epi, co);
      float* yc = a.y + n * image_out + co * a.h_out * a.w_out;
      for (int64_t oh = 0; oh < a.h_out; ++oh) copy_floats(yc + oh * a.w_out, wide + oh * P.wq, a.w_out);
    }
  }
}

}  // namespace FC_NS
}  // namespace fastconv
