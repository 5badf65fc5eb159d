// Winograd F(4x4, 3x3) convolution: 3x3 filters, stride 1, no dilation, one group, float32.
//
// The output is cut into 4x4 tiles; tile t reads the 6x6 input patch d at its corner.
// With the transforms of Lavin & Gray (2016), for every output channel k,
//   y_tile = A^T [ sum_c (G g_kc G^T) .* (B^T d_c B) ] A,
// and the sum over c of the 36 element-wise products is 36 independent GEMMs:
//   M[e] (tiles x K) = V[e]^T (tiles x C) * U[e] (C x K),  e = one of the 6 x 6 positions,
// with U = G g G^T (the filters, transformed once per call, straight into the GEMM's packed
// layout) and V = B^T d B (the input). That is 36 multiply-adds per tile and channel pair
// where the direct convolution makes 16 x 9 = 144: a quarter, paid for by the transforms,
// which are O(C + K) per tile, and the filters' O(C K) per call. (Tiles are the GEMM's rows,
// so a call with few tiles still fills the micro-kernel's wide columns with channels.)
//
// Each thread takes blocks of consecutive tiles (a block's V and M stay in its L2 and the
// L3) and for each runs the input transform, the 36 GEMMs and the output transform with
// the bias and activation; nothing is shared but U. Where there are many channels and few
// tiles, every block would read all of U again, so the threads instead share one block of
// all tiles and split the output channels, transforming the filters as their GEMMs use them
// (conv2d_winograd_shared; winograd_shares_tiles says where).
//
// The input transform holds one tile per vector lane, tiles along a row of tiles: the input
// rows are first split by column phase (x mod 4), so that every value a lane needs is a
// plain vector load. The output transform holds one output channel per lane (M's rows), then
// writes each lane's 4x4 to its plane.
//
// The transforms' fractions (1/4, 1/6, 1/24 in G) cost accuracy: the sum over c runs in
// float32 on transformed values up to ~6x the inputs' size, so the error is a few times the
// direct kernel's (tests/test_winograd.py bounds it against the float64 reference).
#pragma once
#include <omp.h>

#include <cstdint>

#include "core/params.h"
#include "gemm/driver.h"
#include "simd/vec.h"

namespace fastconv {
namespace FC_NS {

constexpr int kWinoM = 4, kWinoA = 6, kWinoE = kWinoA * kWinoA;
// Bytes of a block's V and M together (per thread): about the L2 of a Zen 4 core and a share
// of the L3.
constexpr int64_t kWinoBlockBytes = int64_t{3} << 19;
// Input channels per job of the filter transform (a divisor of kGemmKC): enough jobs for the
// threads at 128 x 128 channels.
constexpr int64_t kWinoFilterRows = 64;
// Input channels whose taps a filter-transform job gathers at a time (8 x 9 x 64 floats: 18 KiB).
constexpr int64_t kWinoFilterGather = 8;
// U's size from which the filter transform writes it with non-temporal stores: half the L3.
constexpr int64_t kWinoStreamBytes = int64_t{16} << 20;
// The whole batch's V and M up to which conv2d_winograd_shared runs where the channels are
// many, and up to which it runs at all.
constexpr int64_t kWinoSharedBytes = int64_t{6} << 20, kWinoSharedMaxBytes = int64_t{64} << 20;
static_assert(kGemmKC % kWinoFilterRows == 0, "a filter-transform job stays within one block of rows");
// One cache line of floats: the skew between the arrays of the 36 positions. A transform's 36
// loads or stores then fall in different cache sets, where a power of two apart they would
// all fall in one (as V[e] does at 256 channels and 16 tiles a block: 16 KiB apart).
constexpr int64_t kCacheLineFloats = 16;

// o = B^T d for one column of six values (each a vector of tiles).
template <class V>
inline void winograd_input_1d(const V* d, int ds, V* o, int os) {
  const V four = V::set1(4.0f), five = V::set1(5.0f), two = V::set1(2.0f);
  const V d0 = d[0], d1 = d[ds], d2 = d[2 * ds], d3 = d[3 * ds], d4 = d[4 * ds], d5 = d[5 * ds];
  const V t1 = V::sub(d4, V::mul(four, d2)), t2 = V::sub(d3, V::mul(four, d1));
  const V t3 = V::sub(d4, d2), t4 = V::mul(two, V::sub(d3, d1));
  o[0] = V::fmadd(four, d0, V::sub(d4, V::mul(five, d2)));
  o[os] = V::add(t1, t2);
  o[2 * os] = V::sub(t1, t2);
  o[3 * os] = V::add(t3, t4);
  o[4 * os] = V::sub(t3, t4);
  o[5 * os] = V::fmadd(four, d1, V::sub(d5, V::mul(five, d3)));
}

// o = A^T m for six values -> four.
template <class V>
inline void winograd_output_1d(const V* m, int ms, V* o, int os) {
  const V a = V::add(m[ms], m[2 * ms]), b = V::sub(m[ms], m[2 * ms]);
  const V c = V::add(m[3 * ms], m[4 * ms]), d = V::sub(m[3 * ms], m[4 * ms]);
  o[0] = V::add(V::add(m[0], a), c);
  o[os] = V::fmadd(V::set1(2.0f), d, b);
  o[2 * os] = V::fmadd(V::set1(4.0f), c, a);
  o[3 * os] = V::add(V::fmadd(V::set1(8.0f), d, b), m[5 * ms]);
}

// o = G g for one column of three values (each a vector of filters): six values.
template <class V>
inline void winograd_filter_1d(const V* g, int gs, V* o, int os) {
  const V g0 = g[0], g1 = g[gs], g2 = g[2 * gs];
  const V even = V::add(g0, g2), sixth = V::set1(-1.0f / 6);
  const V q = V::fmadd(V::set1(1.0f / 24), g0, V::mul(V::set1(1.0f / 6), g2)), h = V::mul(V::set1(1.0f / 12), g1);
  o[0] = V::mul(V::set1(0.25f), g0);
  o[os] = V::mul(sixth, V::add(even, g1));
  o[2 * os] = V::mul(sixth, V::sub(even, g1));
  o[3 * os] = V::add(q, h);
  o[4 * os] = V::sub(q, h);
  o[5 * os] = g2;
}

// Splits the 4 `lanes` values at src by phase (lanes <= L): lane j of ph[p] = src[4 j + p],
// for ph + p * stride .. + L (lanes past `lanes`: zero). Reads nothing past src + 4 lanes.
template <class V>
inline void winograd_split4(const float* src, int64_t lanes, float* ph, int64_t stride) {
  constexpr int L = V::kWidth;
  V q[kWinoM], e0, o0, e1, o1, p[kWinoM];
  for (int i = 0; i < kWinoM; ++i) {
    const int64_t n = kWinoM * lanes - i * L;
    q[i] = n >= L ? V::load(src + i * L) : n > 0 ? V::load_partial(src + i * L, static_cast<int>(n)) : V::zero();
  }
  V::deinterleave2(q[0], q[1], &e0, &o0);
  V::deinterleave2(q[2], q[3], &e1, &o1);
  V::deinterleave2(e0, e1, &p[0], &p[2]);
  V::deinterleave2(o0, o1, &p[1], &p[3]);
  for (int i = 0; i < kWinoM; ++i) p[i].store(ph + i * stride);
}

// The tiles of a call and how they are numbered: t = (image * tiles_h + tile row) * tiles_w + tile column.
struct WinoTiles {
  int64_t th, tw, per_image, total;
  explicit WinoTiles(const Conv2dArgs& a)
      : th(ceil_div(a.h_out, kWinoM)), tw(ceil_div(a.w_out, kWinoM)), per_image(th * tw), total(a.n * th * tw) {}
  // Calls fn(image, tile row, first column, columns, index of the first within [t0, t1)) for each
  // run of tiles of [t0, t1) along a row of tiles.
  template <class Fn>
  void for_each_run(int64_t t0, int64_t t1, Fn fn) const {
    for (int64_t t = t0; t < t1;) {
      const int64_t img = t / per_image, row = (t % per_image) / tw, col = t % tw;
      const int64_t cols = imin(tw - col, t1 - t);
      fn(img, row, col, cols, t - t0);
      t += cols;
    }
  }
};

// Rows [c0, c1) of U's NR-column sliver at output channel k0 (nk <= NR of them real, the
// rest zero: the slivers' padding): G g G^T for each filter g = (k, c), a vector of output
// channels at a time, row c of position e written to dst + e * e_stride + (c - c0) * NR
// (non-temporal stores with `stream`). The filters are first gathered tap-major into a small
// buffer, a few rows at a time, in the weight's own order. With a.weight_transposed, filter
// (k, c) is weight[c][k] flipped.
inline void winograd_filter_rows(const Conv2dArgs& a, int64_t c0, int64_t c1, int64_t k0, int64_t nk, float* dst,
                                 int64_t e_stride, bool stream) {
  using V = VecF;
  constexpr int L = V::kWidth, NR = gemm_nr<float>();
  const int64_t K = a.c_out, C = a.c_in;
  alignas(64) float taps[kWinoFilterGather * 9 * NR];  // taps[(c * 9 + i) * NR + k]
  for (int64_t cg = c0; cg < c1; cg += kWinoFilterGather) {
    const int64_t nc = imin(kWinoFilterGather, c1 - cg);
    if (a.weight_transposed) {  // filters (., c) lie together: nk of them, 9 floats each
      for (int64_t c = 0; c < nc; ++c) {
        const float* w = a.weight + ((cg + c) * K + k0) * 9;
        for (int64_t k = 0; k < nk; ++k)
          for (int i = 0; i < 9; ++i) taps[(c * 9 + i) * NR + k] = w[k * 9 + 8 - i];
      }
    } else {  // filters (k, .) lie together: nc of them, 9 floats each
      for (int64_t k = 0; k < nk; ++k) {
        const float* w = a.weight + ((k0 + k) * C + cg) * 9;
        for (int64_t j = 0; j < nc * 9; ++j) taps[j * NR + k] = w[j];
      }
    }
    for (int64_t j = 0; j < nc * 9; ++j) fill_floats(taps + j * NR + nk, 0.0f, NR - nk);
    for (int64_t c = 0; c < nc; ++c) {
      float* row = dst + (cg + c - c0) * NR;
      for (int l = 0; l < NR; l += L) {
        V g[9], t[kWinoA * 3], u[kWinoE];
        for (int i = 0; i < 9; ++i) g[i] = V::load(taps + (c * 9 + i) * NR + l);
        for (int j = 0; j < 3; ++j) winograd_filter_1d(g + j, 3, t + j, 3);                    // G g: 6 x 3
        for (int i = 0; i < kWinoA; ++i) winograd_filter_1d(t + i * 3, 1, u + i * kWinoA, 1);  // (G g) G^T
        if (stream) {
          for (int e = 0; e < kWinoE; ++e) u[e].stream(row + e * e_stride + l);
        } else {
          for (int e = 0; e < kWinoE; ++e) u[e].store(row + e * e_stride + l);
        }
      }
    }
  }
}

// The floats of U[e] (C x K) in the GEMM's packed layout, a cache line more than whole panels apart
// (see kCacheLineFloats): the distance between U[e] and U[e + 1].
inline int64_t winograd_filter_panel(int64_t C, int64_t K) {
  return PackBPacked<float>::elems(C, K) + kCacheLineFloats;
}

// U[e] (C x K) for every filter, in the GEMM's packed layout (PackBPacked, `panel` floats per
// e). A job is one sliver over up to kWinoFilterRows rows of one kGemmKC-deep block: its 36
// destinations are each one contiguous run, written in order. A U larger than
// kWinoStreamBytes, which would not stay in the cache for the GEMMs anyway, is written with
// non-temporal stores (for 512 x 512 channels: 4.8 -> 2.1-2.6 ms).
inline void winograd_filters(const Conv2dArgs& a, float* U, int64_t panel) {
  constexpr int NR = gemm_nr<float>();
  const int64_t K = a.c_out, C = a.c_in, slivers = ceil_div(K, int64_t{NR});
  const int64_t chunks = ceil_div(C, kWinoFilterRows);  // kWinoFilterRows divides kGemmKC
  const PackBPacked<float> packed(U, C, K);
  const int threads = static_cast<int>(imin(a.threads, imax(1, chunks * slivers)));
  const bool stream = kWinoE * panel * int64_t(sizeof(float)) > kWinoStreamBytes &&
                      reinterpret_cast<uintptr_t>(U) % (kCacheLineFloats * sizeof(float)) == 0;
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t job = 0; job < chunks * slivers; ++job) {
    const int64_t c0 = job / slivers * kWinoFilterRows, c1 = imin(C, c0 + kWinoFilterRows), s = job % slivers;
    const int64_t pc = c0 / kGemmKC * kGemmKC;  // the sliver's rows in this depth block, from row c0
    float* dst = const_cast<float*>(packed.packed(s * NR, pc)) + (c0 - pc) * NR;
    winograd_filter_rows(a, c0, c1, s * NR, imin(NR, K - s * NR), dst, panel, stream);
  }
  if (stream) stream_fence();
}

// V[e][c][tb .. tb + cols) for one run of tiles and channel c: the input rows split by column
// phase into `split` (6 rows x 4 phases x `stride` floats), then the transform per lane.
inline void winograd_input_run(const Conv2dArgs& a, const float* plane, int64_t row, int64_t col, int64_t cols,
                               float* split, int64_t stride, float* v, int64_t v_stride) {
  using V = VecF;
  constexpr int L = V::kWidth;
  // Lane j holds input columns x0 + 4 j .. x0 + 4 j + 3 (j <= cols: the last tile's columns 4
  // and 5 are the next lane's 0 and 1). Lanes [lo, hi) lie inside the row: a plain
  // de-interleaving copy; the others test each column.
  const int64_t x0 = col * kWinoM - a.pad_left, last = a.w - kWinoM - x0;
  const int64_t lo = imin(cols + 1, imax(0, ceil_div(-x0, kWinoM)));
  const int64_t hi = imax(lo, imin(cols + 1, last < 0 ? 0 : last / kWinoM + 1));
  for (int r = 0; r < kWinoA; ++r) {
    const int64_t y = row * kWinoM - a.pad_top + r;
    float* __restrict ph = split + r * kWinoM * stride;
    if (y < 0 || y >= a.h) {
      for (int p = 0; p < kWinoM; ++p) fill_floats(ph + p * stride, 0.0f, cols + 1);
      continue;
    }
    const float* __restrict src = plane + y * a.w;
    for (int64_t j = lo; j < hi; j += L) winograd_split4<V>(src + x0 + kWinoM * j, imin(L, hi - j), ph + j, stride);
    const auto edge = [&](int64_t j) {
      for (int p = 0; p < kWinoM; ++p) {
        const int64_t x = x0 + kWinoM * j + p;
        ph[p * stride + j] = x >= 0 && x < a.w ? src[x] : 0.0f;
      }
    };
    for (int64_t j = 0; j < lo; ++j) edge(j);
    for (int64_t j = hi; j <= cols; ++j) edge(j);
  }
  for (int64_t j = 0; j < cols; j += L) {
    V d[kWinoE], t[kWinoE];
    for (int r = 0; r < kWinoA; ++r)
      for (int i = 0; i < kWinoA; ++i)
        d[r * kWinoA + i] = V::load(split + (r * kWinoM + i % kWinoM) * stride + j + i / kWinoM);
    for (int r = 0; r < kWinoA; ++r) winograd_input_1d(d + r * kWinoA, 1, t + r * kWinoA, 1);    // d B, per row
    for (int i = 0; i < kWinoA; ++i) winograd_input_1d(t + i, kWinoA, d + i, kWinoA);            // B^T (d B)
    const int64_t n = imin(L, cols - j);
    for (int e = 0; e < kWinoE; ++e) store_n(d[e], v + e * v_stride + j, n);
  }
}

// y for one run of tiles from M[e][tb ..][k] (rows of K): per tile, a vector of output
// channels at a time, the inverse transform, bias and activation, then each lane's 4x4
// outputs written to its plane (through out16, 16 x L floats).
inline void winograd_output_run(const Conv2dArgs& a, const float* m, int64_t m_stride, float* y_image, int64_t row,
                                int64_t col, int64_t cols, float* out16) {
  using V = VecF;
  constexpr int L = V::kWidth;
  const int64_t K = a.c_out, plane = a.h_out * a.w_out, y0 = row * kWinoM;
  const int rows = static_cast<int>(imin(kWinoM, a.h_out - y0));
  for (int64_t j = 0; j < cols; ++j) {
    const int64_t x0 = (col + j) * kWinoM;
    const int w = static_cast<int>(imin(kWinoM, a.w_out - x0));
    float* corner = y_image + y0 * a.w_out + x0;
    for (int64_t k0 = 0; k0 < K; k0 += L) {
      const int64_t n = imin(L, K - k0);
      V s[kWinoE], t[kWinoM * kWinoA];
      for (int e = 0; e < kWinoE; ++e) s[e] = load_n<V>(m + e * m_stride + j * K + k0, n);
      const V b = a.bias ? load_n<V>(a.bias + k0, n) : V::zero();
      for (int i = 0; i < kWinoA; ++i) winograd_output_1d(s + i, kWinoA, t + i, kWinoA);  // A^T s: 4 x 6
      for (int r = 0; r < rows; ++r) {
        V o[kWinoM];
        winograd_output_1d(t + r * kWinoA, 1, o, 1);  // (A^T s) A: one output row of the tile
        for (int i = 0; i < kWinoM; ++i) apply_activation(V::add(o[i], b), a.act).store(out16 + (r * kWinoM + i) * L);
      }
      for (int64_t l = 0; l < n; ++l) {
        float* dst = corner + (k0 + l) * plane;
        for (int r = 0; r < rows; ++r)
          for (int i = 0; i < w; ++i) dst[r * a.w_out + i] = out16[(r * kWinoM + i) * L + l];
      }
    }
  }
}

// V[e][c] for input channel c over tiles [t0, t1): tile t's column at v_c + (t - t0), the
// positions e v_stride apart.
inline void winograd_input_tiles(const Conv2dArgs& a, const WinoTiles& tiles, int64_t t0, int64_t t1, int64_t c,
                                 float* split, int64_t split_stride, float* v_c, int64_t v_stride) {
  tiles.for_each_run(t0, t1, [&](int64_t img, int64_t row, int64_t col, int64_t cols, int64_t tb) {
    winograd_input_run(a, a.x + (img * a.c_in + c) * a.h * a.w, row, col, cols, split, split_stride, v_c + tb,
                       v_stride);
  });
}

// y for tiles [t0, t1) from M, tile t's row (K floats) at m + (t - t0) * K, the positions e
// m_stride apart.
inline void winograd_output_tiles(const Conv2dArgs& a, const WinoTiles& tiles, int64_t t0, int64_t t1,
                                  const float* m, int64_t m_stride, float* out16) {
  const int64_t K = a.c_out;
  tiles.for_each_run(t0, t1, [&](int64_t img, int64_t row, int64_t col, int64_t cols, int64_t tb) {
    winograd_output_run(a, m + tb * K, m_stride, a.y + img * K * a.h_out * a.w_out, row, col, cols, out16);
  });
}

// All tiles in one block, shared by the threads. They transform the input (a channel per job),
// then split the output channels' NR-column slivers: for its sliver a thread transforms the
// filters of one kGemmKC-deep block of input channels at a time into its own U panels and
// adds their 36 products into M[e]'s columns, so U is never written out whole and each filter
// is transformed once. (The blocks are gemm_serial's, so every sum is grouped as in
// conv2d_winograd's blocked GEMMs: the two give bitwise the same output.) Then each thread
// transforms the output of a share of the tiles.
inline void conv2d_winograd_shared(const Conv2dArgs& a, const WinoTiles& tiles) {
  const int64_t K = a.c_out, C = a.c_in, block = tiles.total;
  constexpr int L = VecF::kWidth, NR = gemm_nr<float>();
  const int64_t split_stride = round_up(tiles.tw + 1, L) + L;
  const int64_t ev = C * block + kCacheLineFloats, em = K * block + kCacheLineFloats;
  Scratch<float> vm(checked_mul(kWinoE, ev + em));
  float* v = vm.data();
  float* m = v + kWinoE * ev;
  const int64_t rows = imax(1, imin(C, kGemmKC));
  // A thread's U panel per position e (none where the filters came transformed).
  const int64_t up = a.winograd_filters != nullptr ? 0 : rows * NR + kCacheLineFloats;
  const int64_t per_thread = kWinoE * up + kWinoA * kWinoM * split_stride + kWinoM * kWinoM * L +
                             gemm_scratch_per_thread<float>();
  const int threads = a.threads;
  Scratch<float> scratch(checked_mul(threads, per_thread));
  const int64_t slivers = ceil_div(K, NR);
  const Epilogue none;
  const int64_t panel = winograd_filter_panel(C, K);  // of a.winograd_filters
  if (C == 0) fill_floats(m, 0.0f, kWinoE * em);  // an empty sum, where gemm_serial writes nothing
#pragma omp parallel num_threads(threads)
  {
    const int tid = omp_get_thread_num();
    float* u = scratch.data() + tid * per_thread;
    float* split = u + kWinoE * up;
    float* out16 = split + kWinoA * kWinoM * split_stride;
    float* gemm_buf = out16 + kWinoM * kWinoM * L;
    fill_floats(split, 0.0f, kWinoA * kWinoM * split_stride);  // lanes past a run read these
#pragma omp for schedule(static)
    for (int64_t c = 0; c < C; ++c) winograd_input_tiles(a, tiles, 0, block, c, split, split_stride, v + c * block, ev);
#pragma omp for schedule(static)
    for (int64_t s = 0; s < slivers; ++s) {
      const int64_t k0 = s * NR, nk = imin(NR, K - k0);
      for (int64_t c0 = 0; c0 < C; c0 += rows) {
        const int64_t kc = imin(rows, C - c0);
        // This block's sliver of U: transformed now into the thread's panels, or where the
        // filters came transformed, read in place (winograd_filters' layout: the same rows x NR).
        const float* us = u;
        int64_t us_stride = up;
        if (a.winograd_filters != nullptr) {
          us = PackBPacked<float>(a.winograd_filters, C, K).packed(k0, c0);
          us_stride = panel;
        } else {
          winograd_filter_rows(a, c0, c0 + kc, k0, nk, u, up, false);
        }
        // M[e][:, k0 .. k0 + nk) (+)= V[e]^T (tiles x these channels) * U[e] (these channels x nk)
        for (int e = 0; e < kWinoE; ++e)
          gemm_serial(block, nk, kc, PackAStrided<float>{v + e * ev + c0 * block, 1, block},
                      PackBPacked<float>(us + e * us_stride, kc, nk), m + e * em + k0, K, none, 0, 0,
                      GemmScratch<float>(gemm_buf), c0 > 0);
      }
    }
    const int64_t t0 = block * tid / threads, t1 = block * (tid + 1) / threads;
    winograd_output_tiles(a, tiles, t0, t1, m + t0 * K, em, out16);
  }
}

// Whether conv2d_winograd shares one block of all tiles among the threads
// (conv2d_winograd_shared) rather than giving each thread blocks of its own, every one of which
// reads all of U: where U would not stay in the L3 (over kWinoStreamBytes) and the whole
// batch's V and M are not huge, or where the channels are many (C + K >= 512: blocks of 21
// tiles or fewer) and V and M are small. Every thread needs a sliver of output channels. Measured
// (in-process, alternated, 2 threads, AVX-512; shared / blocked, each against the direct
// kernel): 512 @7 batch 4 1.30x / 0.83x, batch 8 1.49x / 1.00x, batch 16 1.64x / 1.13x, batch
// 32 1.75x / 1.30x; 256 -> 512 @14 batch 4 1.82x / 1.48x; 256 @14 batch 2 1.48x / 1.22x, batch
// 4 1.71-1.76x / 1.56-1.62x; left blocked: 256 @14 batch 8 1.45-1.75x / 1.53-1.76x, batch 16
// 1.51x / 1.56x, 128 @28 batch 2 1.06x / 1.34x, batch 8 1.79x / 2.00x.
inline bool winograd_shares_tiles(const Conv2dArgs& a, const WinoTiles& tiles) {
  const int64_t K = a.c_out, C = a.c_in;
  if (ceil_div(K, int64_t{gemm_nr<float>()}) < a.threads) return false;
  const int64_t u_bytes = kWinoE * C * K * int64_t(sizeof(float));
  const int64_t vm_bytes = kWinoE * (C + K) * tiles.total * int64_t(sizeof(float));
  return (u_bytes > kWinoStreamBytes && vm_bytes <= kWinoSharedMaxBytes) ||
         (C + K >= 512 && vm_bytes <= kWinoSharedBytes);
}

inline void conv2d_winograd(const Conv2dArgs& a) {
  const int64_t K = a.c_out, C = a.c_in;
  const WinoTiles tiles(a);
  constexpr int L = VecF::kWidth;
  if (winograd_shares_tiles(a, tiles)) {
    conv2d_winograd_shared(a, tiles);
    return;
  }
  const int64_t panel = winograd_filter_panel(C, K);
  const float* U = a.winograd_filters;
  Scratch<float> own;  // the filters transformed here, where none came transformed
  if (U == nullptr) {
    own = Scratch<float>(checked_mul(kWinoE, panel));
    winograd_filters(a, own.data(), panel);
    U = own.data();
  }
  // Blocks of at most kWinoBlockBytes, as many for each thread, of equal size.
  const int64_t fit = imax(kGemmMR, kWinoBlockBytes / (kWinoE * (C + K) * int64_t(sizeof(float))));
  const int64_t block = ceil_div(tiles.total, round_up(ceil_div(tiles.total, fit), a.threads));
  const int64_t blocks = ceil_div(tiles.total, block);
  const int threads = static_cast<int>(imin(a.threads, blocks));
  const int64_t split_stride = round_up(tiles.tw + 1, L) + L;
  // V[e] and M[e] lie a cache line more than whole rows apart (see kCacheLineFloats).
  const int64_t ev = C * block + kCacheLineFloats, em = K * block + kCacheLineFloats;
  const int64_t per_thread = checked_mul(kWinoE, ev + em) + kWinoA * kWinoM * split_stride +
                             kWinoM * kWinoM * L + gemm_scratch_per_thread<float>();
  Scratch<float> scratch(checked_mul(threads, per_thread));
  const Epilogue none;
#pragma omp parallel num_threads(threads)
  {
    float* v = scratch.data() + omp_get_thread_num() * per_thread;
    float* m = v + kWinoE * ev;
    float* split = m + kWinoE * em;
    float* out16 = split + kWinoA * kWinoM * split_stride;
    float* gemm_buf = out16 + kWinoM * kWinoM * L;
    fill_floats(split, 0.0f, kWinoA * kWinoM * split_stride);  // lanes past a run read these
#pragma omp for schedule(static)
    for (int64_t bi = 0; bi < blocks; ++bi) {
      const int64_t t0 = bi * block, t1 = imin(tiles.total, t0 + block), nt = t1 - t0;
      for (int64_t c = 0; c < C; ++c) winograd_input_tiles(a, tiles, t0, t1, c, split, split_stride, v + c * block, ev);
      // M[e] (tiles x K) = V[e]^T (tiles x C) * U[e] (C x K); zero without input channels (an
      // empty sum, where gemm_serial writes nothing).
      if (C == 0) {
        fill_floats(m, 0.0f, kWinoE * em);
      } else {
        for (int e = 0; e < kWinoE; ++e)
          gemm_serial(nt, K, C, PackAStrided<float>{v + e * ev, 1, block},
                      PackBPacked<float>(U + e * panel, C, K), m + e * em, K, none, 0, 0,
                      GemmScratch<float>(gemm_buf));
      }
      winograd_output_tiles(a, tiles, t0, t1, m, em, out16);
    }
  }
}

}  // namespace FC_NS
}  // namespace fastconv
