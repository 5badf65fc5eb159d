// Weight gradient of a Winograd-shaped convolution (3x3, stride 1, no dilation, one group,
// float32) through the same F(4x4, 3x3) transforms as the forward (winograd.h).
//
// The forward tile is y = A^T [ (G g G^T) .* (B^T d B) ] A, linear in the filter g, so its
// adjoint gives the filter's gradient from the tile's output gradient dy (4x4, zero past the
// plane's edge):
//   dg = G^T [ (A dy A^T) .* (B^T d B) ] G,
// summed over tiles and images. With Z = A dy A^T (per output channel) and V = B^T d B (per
// input channel, the forward's input transform), the sum over tiles is 36 GEMMs
//   S[e] (K x C) = Z[e] (K x tiles) * V[e]^T (tiles x C),  e = one of the 6 x 6 positions,
// 36 multiply-adds per tile and channel pair where the direct kernel makes 16 x 9 = 144,
// then dW[k][c] = G^T S[.][k][c] G, once per filter.
//
// Tiles go in blocks of a fixed size (from the shape alone). Per block the threads first
// share the transforms (one channel each), then the 36 GEMMs (each thread owns some e and
// adds the block into S[e]). So every sum runs over the same tiles in the same order
// whatever the thread count.
#pragma once
#include <omp.h>

#include <cstdint>

#include "conv/winograd.h"

namespace fastconv {
namespace FC_NS {

// Tiles per block: as many as fill kWinoGradBlockBytes with V and Z (shared by the threads, so
// in the L3), but at least kWinoGradMinTiles, the depth of the sums that each block adds into S
// (which is read and written once per block). Measured against 2 MiB and 8 MiB blocks, and 16
// tiles at least (weight gradient alone, in-process, alternated, 2 threads): 2 MiB 5-10 %
// slower at 64 @56 (batch 1 and 8), 128 @28 and VGG 64 @224; 8 MiB within 3 % but for 256 @14
// at batch 8, where the 64 tiles at least made 4 MiB 1.16x faster.
constexpr int64_t kWinoGradBlockBytes = int64_t{4} << 20, kWinoGradMinTiles = 64;

// o = A m for one column of four values (each a vector of tiles): six values.
template <class V>
inline void winograd_grad_1d(const V* m, int ms, V* o, int os) {
  const V m0 = m[0], m1 = m[ms], m2 = m[2 * ms], m3 = m[3 * ms];
  const V even = V::add(m0, m2), odd = V::add(m1, m3);
  const V even4 = V::fmadd(V::set1(4.0f), m2, m0), odd8 = V::fmadd(V::set1(8.0f), m3, V::mul(V::set1(2.0f), m1));
  o[0] = m0;
  o[os] = V::add(even, odd);
  o[2 * os] = V::sub(even, odd);
  o[3 * os] = V::add(even4, odd8);
  o[4 * os] = V::sub(even4, odd8);
  o[5 * os] = m3;
}

// o = G^T s for one column of six values: three (the adjoint of winograd_filter_1d).
template <class V>
inline void winograd_filter_grad_1d(const V* s, int ss, V* o, int os) {
  const V sum12 = V::add(s[ss], s[2 * ss]), dif12 = V::sub(s[ss], s[2 * ss]);
  const V sum34 = V::add(s[3 * ss], s[4 * ss]), dif34 = V::sub(s[3 * ss], s[4 * ss]);
  const V sixth = V::set1(1.0f / 6);
  o[0] = V::fmadd(V::set1(0.25f), s[0], V::fmadd(V::set1(1.0f / 24), sum34, V::mul(V::set1(-1.0f / 6), sum12)));
  o[os] = V::fmadd(V::set1(1.0f / 12), dif34, V::mul(V::set1(-1.0f / 6), dif12));
  o[2 * os] = V::add(V::mul(sixth, V::sub(sum34, sum12)), s[5 * ss]);
}

// Z[e][k][tb .. tb + cols) for one run of tiles of output channel k (its grad_y plane):
// the four grad_y rows of the tiles split by column phase into `split` (4 rows x 4 phases x
// `stride` floats; lane j holds columns 4 (col + j) .. + 3), then Z = A dy A^T per lane.
inline void winograd_grad_run(const Conv2dArgs& a, const float* plane, int64_t row, int64_t col, int64_t cols,
                              float* split, int64_t stride, float* z, int64_t z_stride) {
  using V = VecF;
  constexpr int L = V::kWidth;
  const int64_t x0 = col * kWinoM;
  const int64_t inside = imax(0, imin(cols, (a.w_out - x0) / kWinoM));  // lanes with all four columns
  for (int r = 0; r < kWinoM; ++r) {
    const int64_t y = row * kWinoM + r;
    float* __restrict ph = split + r * kWinoM * stride;
    if (y >= a.h_out) {
      for (int p = 0; p < kWinoM; ++p) fill_floats(ph + p * stride, 0.0f, cols);
      continue;
    }
    const float* __restrict src = plane + y * a.w_out + x0;
    for (int64_t j = 0; j < inside; j += L) winograd_split4<V>(src + kWinoM * j, imin(L, inside - j), ph + j, stride);
    for (int64_t j = inside; j < cols; ++j)
      for (int p = 0; p < kWinoM; ++p) ph[p * stride + j] = x0 + kWinoM * j + p < a.w_out ? src[kWinoM * j + p] : 0.0f;
  }
  for (int64_t j = 0; j < cols; j += L) {
    V d[kWinoM * kWinoM], t[kWinoM * kWinoA], o[kWinoE];
    for (int i = 0; i < kWinoM * kWinoM; ++i) d[i] = V::load(split + i * stride + j);
    for (int r = 0; r < kWinoM; ++r) winograd_grad_1d(d + r * kWinoM, 1, t + r * kWinoA, 1);  // dy A^T, per row
    for (int i = 0; i < kWinoA; ++i) winograd_grad_1d(t + i, kWinoA, o + i, kWinoA);          // A (dy A^T)
    const int64_t n = imin(L, cols - j);
    for (int e = 0; e < kWinoE; ++e) store_n(o[e], z + e * z_stride + j, n);
  }
}

// dw (K, C, 3, 3) of the convolution `a` (its forward arguments) from grad_y `gy`; overwrites dw.
inline void conv2d_winograd_weight_grad(const Conv2dArgs& a, const float* gy, float* dw) {
  using V = VecF;
  constexpr int L = V::kWidth;
  const int64_t K = a.c_out, C = a.c_in;
  if (K == 0 || C == 0) return;
  const WinoTiles tiles(a);
  // Equal blocks (see kWinoGradBlockBytes).
  const int64_t fit = imax(kWinoGradMinTiles, kWinoGradBlockBytes / (kWinoE * (C + K) * int64_t(sizeof(float))));
  const int64_t block = ceil_div(tiles.total, ceil_div(tiles.total, fit));
  const int64_t blocks = ceil_div(tiles.total, block);
  // GEMM tasks: the 36 positions, each cut into `parts` slices of S's rows where there are
  // many threads, so that the tasks share out evenly.
  const int64_t parts = imax(1, imin(ceil_div(K, kGemmMR), ceil_div(4 * int64_t(a.threads), kWinoE)));
  const int64_t part_rows = round_up(ceil_div(K, parts), kGemmMR);
  const int64_t split_stride = round_up(tiles.tw + 1, L) + L;
  // V[e], Z[e] (rows of `block` floats) and S[e] lie a cache line more than whole rows apart
  // (kCacheLineFloats).
  const int64_t ev = C * block + kCacheLineFloats, ez = K * block + kCacheLineFloats, es = K * C + kCacheLineFloats;
  const int64_t per_thread = kWinoA * kWinoM * split_stride + gemm_scratch_per_thread<float>();
  Scratch<float> vz(checked_mul(kWinoE, ev + ez));
  Scratch<float> S(checked_mul(kWinoE, es));
  Scratch<float> scratch(checked_mul(a.threads, per_thread));
  float* v = vz.data();
  float* z = v + kWinoE * ev;
  const int64_t plane_out = a.h_out * a.w_out;
  const Epilogue none;
#pragma omp parallel num_threads(a.threads)
  {
    float* split = scratch.data() + omp_get_thread_num() * per_thread;
    float* gemm_buf = split + kWinoA * kWinoM * split_stride;
    fill_floats(split, 0.0f, kWinoA * kWinoM * split_stride);  // lanes past a run read these
    for (int64_t bi = 0; bi < blocks; ++bi) {
      const int64_t t0 = bi * block, t1 = imin(tiles.total, t0 + block), nt = t1 - t0;
#pragma omp for schedule(dynamic, 1)
      for (int64_t job = 0; job < C + K; ++job) {
        if (job < C) {
          winograd_input_tiles(a, tiles, t0, t1, job, split, split_stride, v + job * block, ev);
        } else {
          tiles.for_each_run(t0, t1, [&](int64_t img, int64_t row, int64_t col, int64_t cols, int64_t tb) {
            winograd_grad_run(a, gy + (img * K + job - C) * plane_out, row, col, cols, split, split_stride,
                              z + (job - C) * block + tb, ez);
          });
        }
      }
#pragma omp for schedule(static)
      for (int64_t task = 0; task < kWinoE * parts; ++task) {
        const int64_t e = task / parts, r0 = task % parts * part_rows, rows = imin(part_rows, K - r0);
        if (rows <= 0) continue;
        // S[e] (+)= Z[e] (K x nt, rows `block` apart) * V[e]^T (nt x C, V's rows `block` apart)
        gemm_serial(rows, C, nt, PackAStrided<float>{z + e * ez, block, 1},
                    PackBStrided<float>{v + e * ev, 1, block}, S.data() + e * es + r0 * C, C, none, r0, 0,
                    GemmScratch<float>(gemm_buf), bi > 0);
      }
    }
    // dW[k][c] = G^T S[.][k][c] G, a vector of input channels at a time; their 9 taps lie
    // together in dw, so each lane's are written through `taps` (9 x L floats).
    float* taps = gemm_buf;
#pragma omp for schedule(static)
    for (int64_t k = 0; k < K; ++k) {
      for (int64_t c0 = 0; c0 < C; c0 += L) {
        const int64_t n = imin(L, C - c0);
        V s[kWinoE], q[3 * kWinoA], g[9];
        for (int e = 0; e < kWinoE; ++e) s[e] = load_n<V>(S.data() + e * es + k * C + c0, n);
        for (int j = 0; j < kWinoA; ++j) winograd_filter_grad_1d(s + j, kWinoA, q + j, kWinoA);  // G^T s: 3 x 6
        for (int r = 0; r < 3; ++r) winograd_filter_grad_1d(q + r * kWinoA, 1, g + r * 3, 1);    // (G^T s) G
        for (int i = 0; i < 9; ++i) g[i].store(taps + i * L);
        float* dst = dw + (k * C + c0) * 9;
        for (int64_t l = 0; l < n; ++l)
          for (int i = 0; i < 9; ++i) dst[l * 9 + i] = taps[i * L + l];
      }
    }
  }
}

}  // namespace FC_NS
}  // namespace fastconv
