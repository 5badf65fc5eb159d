// Blocked direct convolution over phase-split input (see phase.h).
// A task computes an MR-channel x (NV * width)-position register tile of the
// output: per input channel and tap, NV contiguous vector loads of input and MR
// weight broadcasts feed MR * NV FMAs. Depthwise convolution is the MR = 1 case.
#pragma once
#include <omp.h>

#include <cstdint>
#include <cstring>

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
// co's filter (cin x taps floats), the next channel's `w_stride` floats further;
// the MR filters are MR sequential streams, so no per-call repacking is needed.
// Rows past `m` re-read the last valid filter (their results are discarded).
template <int MR, int NV>
inline void direct_tile(const float* __restrict x, int64_t cin, int64_t cstride, const int64_t* offs, int taps,
                        const float* __restrict w, int64_t w_stride, int m, VecF (&acc)[MR][NV]) {
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
    for (int i = 0; i < MR; ++i) wr[i] += taps;
  }
}

// Applies bias + activation and stores the valid lanes (ow < w_out) of a tile
// starting at flat output j0 into output channels co .. co + m.
// `oh` is a row cursor at or before j0's row (see store_flat_vector).
template <int MR, int NV>
inline void store_direct_tile(VecF (&acc)[MR][NV], int m, int64_t co, int64_t j0, const PhaseLayout& L,
                              const Conv2dArgs& a, float* y_image, const Epilogue& epi, int64_t& oh) {
  const int64_t plane_out = a.h_out * a.w_out;
  while ((oh + 1) * L.wq <= j0) ++oh;
  const int64_t oh0 = oh;
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
    if (i >= m) break;
    float* yc = y_image + (co + i) * plane_out;
    oh = oh0;
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      const int64_t j = j0 + v * VecF::kWidth;
      if (j >= L.flat_outputs) break;
      store_flat_vector(apply_epilogue(acc[i][v], epi, co + i, 0, VecF::kWidth), yc, j, L, a.w_out, oh);
    }
  }
  oh = oh0;
}

inline Epilogue conv_epilogue(const Conv2dArgs& a) {
  Epilogue e;
  e.bias = a.bias;
  e.bias_mode = a.bias ? BiasMode::per_row : BiasMode::none;
  e.act = a.act;
  return e;
}

inline void fill_tap_offsets(const Conv2dArgs& a, const PhaseLayout& L, int64_t* offs) {
  for (int64_t kh = 0; kh < a.kh; ++kh)
    for (int64_t kw = 0; kw < a.kw; ++kw) offs[kh * a.kw + kw] = L.tap_offset(a, kh, kw);
}

// One output tile task of the dense/grouped direct convolution.
template <int NV>
inline void direct_task(const Conv2dArgs& a, const PhaseLayout& L, const float* phases, const int64_t* offs,
                        int64_t g, int64_t tile, int64_t block, float* y_image, const Epilogue& epi) {
  constexpr int MR = kDirectMR, T = NV * VecF::kWidth;
  const int64_t cin_g = a.c_in / a.groups, cout_g = a.c_out / a.groups, taps = a.kh * a.kw;
  const int64_t j0 = tile * T, co = g * cout_g + block * MR;
  const int m = static_cast<int>(imin(MR, cout_g - block * MR));
  VecF acc[MR][NV];
  direct_tile<MR, NV>(phases + g * cin_g * L.channel_stride + j0, cin_g, L.channel_stride, offs,
                      static_cast<int>(taps), a.weight + co * cin_g * taps, cin_g * taps, m, acc);
  int64_t oh = j0 / L.wq;
  store_direct_tile<MR, NV>(acc, m, co, j0, L, a, y_image, epi, oh);
}

template <int NV>
void conv2d_direct_nv(const Conv2dArgs& a) {
  constexpr int MR = kDirectMR, T = NV * VecF::kWidth;
  const PhaseLayout L(a, kDirectNV * VecF::kWidth);
  const int64_t cout_g = a.c_out / a.groups, taps = a.kh * a.kw;
  const int64_t blocks = ceil_div(cout_g, MR), tiles = ceil_div(L.flat_outputs, T);
  const int64_t tasks = a.groups * tiles * blocks;
  const int64_t image_in = a.c_in * a.h * a.w, image_out = a.c_out * a.h_out * a.w_out;
  const int threads = a.threads;
  const Epilogue epi = conv_epilogue(a);

  AlignedBuffer offs_buf(taps * 2);  // int64 offsets stored in float-sized slots
  auto* offs = reinterpret_cast<int64_t*>(offs_buf.data());
  fill_tap_offsets(a, L, offs);

  const int64_t phase_floats = per_thread_floats(L.buffer_floats(a.c_in));
  if (a.n >= threads && threads > 1) {
    // Many images: each thread takes whole images with its own phase buffer.
    AlignedBuffer phases(checked_mul(threads, phase_floats), true);
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
    for (int64_t n = 0; n < a.n; ++n) {
      float* ph = phases.data() + omp_get_thread_num() * phase_floats;
      for (int64_t c = 0; c < a.c_in; ++c)
        fill_phase_channel(a, L, a.x + n * image_in + c * a.h * a.w, ph + c * L.channel_stride);
      for (int64_t t = 0; t < tasks; ++t) {
        const int64_t block = t % blocks, tile = (t / blocks) % tiles, g = t / (blocks * tiles);
        direct_task<NV>(a, L, ph, offs, g, tile, block, a.y + n * image_out, epi);
      }
    }
    return;
  }
  AlignedBuffer phases(phase_floats, true);
  for (int64_t n = 0; n < a.n; ++n) {
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
#pragma omp for schedule(static)
      for (int64_t c = 0; c < a.c_in; ++c)
        fill_phase_channel(a, L, a.x + n * image_in + c * a.h * a.w, phases.data() + c * L.channel_stride);
      // Tile-major order: consecutive tasks of a thread share their input tile.
#pragma omp for schedule(static)
      for (int64_t t = 0; t < tasks; ++t) {
        const int64_t block = t % blocks, tile = (t / blocks) % tiles, g = t / (blocks * tiles);
        direct_task<NV>(a, L, phases.data(), offs, g, tile, block, a.y + n * image_out, epi);
      }
    }
  }
}

// Tiles of NV and NV/2 vectors run at the same speed (measured), so the
// narrower one is used whenever it computes fewer discarded lanes (on AVX2 the
// narrow tile would leave too few accumulators to hide FMA latency).
inline void conv2d_direct(const Conv2dArgs& a) {
  constexpr int T = kDirectNV * VecF::kWidth;
  const int64_t flat = PhaseLayout(a, T).flat_outputs;
  if (kDirectNV >= 4 && round_up(flat, T / 2) < round_up(flat, T))
    conv2d_direct_nv<kDirectNV / 2>(a);
  else
    conv2d_direct_nv<kDirectNV>(a);
}

// Depthwise (groups == c_in, any channel multiplier): one job per input plane,
// phase-split into a thread-local buffer, then MR = 1 direct tiles per output
// channel. With only taps FMAs per vector, the flat-to-row store logic would cost
// more than the arithmetic, so tiles go to a thread-local "wide" plane (h_out x wq,
// epilogue applied) that is then compacted row by row.
inline void conv2d_depthwise(const Conv2dArgs& a) {
  constexpr int NV = kDepthwiseNV, L = VecF::kWidth, T = NV * L;
  const PhaseLayout P(a, T);
  const int64_t mult = a.c_out / a.c_in, taps = a.kh * a.kw;
  const int64_t tiles = ceil_div(P.flat_outputs, T);
  const int64_t image_in = a.c_in * a.h * a.w, image_out = a.c_out * a.h_out * a.w_out;
  const int threads = a.threads;
  const Epilogue epi = conv_epilogue(a);
  const int64_t per_thread = per_thread_floats(P.buffer_floats(1) + tiles * T);

  AlignedBuffer offs_buf(taps * 2);
  auto* offs = reinterpret_cast<int64_t*>(offs_buf.data());
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
      const float* w = a.weight + co * taps;
      for (int64_t tile = 0; tile < tiles; ++tile) {
        VecF acc[1][NV];
        direct_tile<1, NV>(ph + tile * T, 1, P.channel_stride, offs, static_cast<int>(taps), w, taps, 1, acc);
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) apply_epilogue(acc[0][v], epi, co, 0, L).store(wide + tile * T + v * L);
      }
      float* yc = a.y + n * image_out + co * a.h_out * a.w_out;
      for (int64_t oh = 0; oh < a.h_out; ++oh)
        std::memcpy(yc + oh * a.w_out, wide + oh * P.wq, sizeof(float) * a.w_out);
    }
  }
}

}  // namespace FC_NS
}  // namespace fastconv
