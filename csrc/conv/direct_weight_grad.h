// Weight gradient of a 2-D convolution over the phase-split input (phase.h), the
// direct kernel's layout: with j = oh * wq + ow the flat output index,
//   dW[co][ci][tap] = sum over images and j of gy[co][j] * phases[ci][j + offs[tap]],
// where gy is grad_y laid out on the flat outputs (zero where ow >= w_out). A
// register tile holds MR output channels x NT (input channel, tap) pairs as vector
// partial sums along j: per vector of j, MR grad_y loads and NT input loads feed
// MR * NT FMAs. No im2col matrix is built. Lanes that are not outputs (ow >= w_out,
// or past the last output) load zero input, so an Inf or NaN that the convolution
// never reads cannot reach the sums.
#pragma once
#include <omp.h>

#include <cstdint>
#include <cstring>

#include "conv/direct.h"
#include "conv/phase.h"
#include "simd/vec_math.h"

namespace fastconv {
namespace FC_NS {

// Register tile, and when this kernel beats im2col + GEMM. Its horizontal sums cost
// per gradient element and slice, while the GEMM's im2col and transposing B packing
// cost per input element and tap: it wins once each sum runs over enough vectors.
// Measured, weight gradient alone at 2 threads (Zen 4), GEMM time / this kernel's:
// AVX-512, by vectors per sum (images in a slice x vectors per image): 3x3 512@7
// batch 1 (4) 0.50, 256@14 (14) 0.73, 512@7 batch 8 (32) 1.16, 128@28 (51) 1.01,
// 256@14 batch 8 (112) 1.03, 128@28 batch 8 (408) 1.33, 64@56 (203) 1.4-1.9, stem
// 7x7/2 3.0, VGG 64@224 3.3-3.8. AVX2 gains less per vector: 64@56 0.71-0.88, 128@28
// batch 8 0.80, stem 1.1, VGG 2.2, LeNet 5x5 1->6@28 2.8, so there it takes only planes
// of at least 100 outputs per output channel. Scalar: 0.4-0.7 everywhere, so never.
// 1x1 convolutions gain less (one tap per input channel): at batch 8, 14x14 planes
// (13 vectors per image) ran 0.78-1.04 and 7x7 ones 0.39-0.67, while 28x28 and larger
// ran 1.0-2.4; so on AVX-512 a 1x1 kernel also needs 32 vectors per image. Reading the
// planes in place (WgradPlan::raw) made 28x28 and larger 1.2-2.2x faster again, but
// left 14x14 at 0.96-1.20 and 7x7 at 0.42-0.87 of the GEMM, so the rule stands.
#if defined(__AVX512F__)
constexpr int kWgradMR = 4, kWgradNT = 6;
#elif defined(__AVX2__)
constexpr int kWgradMR = 2, kWgradNT = 6;
#else
constexpr int kWgradMR = 4, kWgradNT = 4;
#endif

// The shape of the computation, shared by every image of a call. Images are taken in
// slices held in memory together: a tile sums over every image of its slice before
// its one horizontal sum per element, so small planes (few vectors per image) still
// give long sums.
struct WgradPlan {
  static constexpr int L = VecF::kWidth;
  PhaseLayout phase;
  // A 1x1 convolution with stride 1 and no padding: its phase layout is the input
  // itself (one phase, wq = w) and its flat outputs are grad_y's planes, so the
  // tiles read x and grad_y where they lie, P = h * w floats a channel, and nothing
  // is copied. The copies cost more than the sums of one tap.
  bool raw;
  int64_t taps, cin_g, cout_g, K;  // K = cin_g * taps: columns of a group's gradient
  int64_t vecs;                    // vectors of flat outputs per image
  int64_t gy_stride;               // floats per channel of the flat grad_y
  int64_t x_image, gy_image;       // floats per image: its phase block, its flat grad_y
  int64_t co_blocks, k_groups;     // tiles per group: MR-channel blocks x NT-column groups
  int64_t k_splits;                // column ranges per channel block: tasks = groups x co_blocks x k_splits
  int64_t chunk;                   // vectors per pass over one image's j (a cache block)
  int64_t images;                  // images per slice
  Scratch<int64_t> offs;           // input offset per tap
  Scratch<unsigned> masks;         // per vector: its lanes that are outputs

  explicit WgradPlan(const Conv2dArgs& a)
      : phase(a, L),
        raw(a.kh == 1 && a.kw == 1 && a.stride_h == 1 && a.stride_w == 1 && a.pad_top == 0 && a.pad_left == 0 &&
            a.h_out == a.h && a.w_out == a.w),
        taps(a.kh * a.kw),
        cin_g(a.c_in / a.groups),
        cout_g(a.c_out / a.groups),
        K(cin_g * taps),
        vecs(ceil_div(phase.flat_outputs, L)),
        gy_stride(raw ? phase.flat_outputs : vecs * L),
        x_image(raw ? checked_mul(a.c_in, phase.channel_stride)
                    : per_thread_floats(checked_mul(a.c_in, phase.channel_stride))),
        gy_image(checked_mul(a.c_out, gy_stride)),
        co_blocks(ceil_div(cout_g, kWgradMR)),
        k_groups(ceil_div(K, kWgradNT)),
        offs(taps),
        masks(vecs) {
    fill_tap_offsets(a, phase, offs.data());
    for (int64_t v = 0; v < vecs; ++v) {
      unsigned bits = 0;
      for (int l = 0; l < L; ++l) {
        const int64_t j = v * L + l;
        if (j < phase.flat_outputs && j % phase.wq < a.w_out) bits |= 1u << l;
      }
      masks.data()[v] = bits;
    }
    // A pass reads MR grad_y rows and a group's input channels over `chunk` vectors:
    // keep the input part within about half of a 1 MB L2.
    const int64_t bytes_per_vec = cin_g * L * static_cast<int64_t>(sizeof(float));
    chunk = imax(128, (512 << 10) / imax(1, bytes_per_vec));
    if (chunk >= vecs) chunk = vecs;
    // Small planes share a slice: enough images for sums of about 128 vectors, within
    // 16 MB. Larger planes run image by image, where their data stays in cache.
    constexpr int64_t kSliceFloats = int64_t(4) << 20;
    images = vecs >= 64 ? 1 : imax(1, imin(imin(a.n, ceil_div(128, vecs)), kSliceFloats / (x_image + gy_image)));
    // At least two tasks per thread where the channel blocks alone give fewer.
    const int64_t base = a.groups * co_blocks;
    k_splits = base >= 2 * a.threads ? 1 : imin(k_groups, ceil_div(2 * a.threads, base));
  }

  int64_t chunks() const { return ceil_div(vecs, chunk); }

  // Whether this kernel is the faster one for `a` (see the measurements above).
  bool beats_gemm(const Conv2dArgs& a) const {
#if defined(__AVX512F__)
    return images * vecs >= 32 && (a.kh * a.kw > 1 || vecs >= 32);
#elif defined(__AVX2__)
    return a.h_out * a.w_out >= 100 * cout_g;
#else
    (void)a;
    return false;
#endif
  }
  int64_t tasks(int64_t groups) const { return groups * co_blocks * k_splits; }
  int64_t max_task_groups() const { return ceil_div(k_groups, k_splits); }
};

// One tile over vectors [v0, v1) of `images` images: rows i < m of `gy` (rows
// `gy_stride` apart) against the input runs x[k], k < nt, the next image's
// `gy_image` and `x_image` floats further. The sums start from `part` (MR x NT
// vectors) and go back there; without `part` they start at zero and are added to
// dw[i * ldw + k]. Rows and columns past m and nt repeat the last valid one; their
// sums are dropped. kMaskGy masks grad_y's partial vectors as well as x's: in the raw
// layout their other lanes hold the next channel (the flat grad_y has zeros there).
template <int MR, int NT, bool kMaskGy>
inline void wgrad_tile(const float* gy, int64_t gy_stride, int m, const float* const* x, int nt, int64_t images,
                       int64_t gy_image, int64_t x_image, const unsigned* masks, int64_t v0, int64_t v1, VecF* part,
                       float* dw, int64_t ldw) {
  constexpr int L = VecF::kWidth;
  constexpr unsigned kAll = L >= 32 ? ~0u : (1u << L) - 1u;
  const float* g[MR];
  const float* xs[NT];
  VecF acc[MR][NT];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) g[i] = gy + (i < m ? i : m - 1) * gy_stride;
#pragma GCC unroll 8
  for (int k = 0; k < NT; ++k) xs[k] = x[k < nt ? k : nt - 1];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int k = 0; k < NT; ++k) acc[i][k] = part ? part[i * NT + k] : VecF::zero();
  for (int64_t n = 0; n < images; ++n) {
    for (int64_t v = v0; v < v1; ++v) {
      const int64_t off = v * L;
      const unsigned bits = masks[v];
      VecF gv[MR];
      if (bits == kAll) {
#pragma GCC unroll 8
        for (int i = 0; i < MR; ++i) gv[i] = VecF::load(g[i] + off);
#pragma GCC unroll 8
        for (int k = 0; k < NT; ++k) {
          const VecF xv = VecF::load(xs[k] + off);
#pragma GCC unroll 8
          for (int i = 0; i < MR; ++i) acc[i][k] = VecF::fmadd(gv[i], xv, acc[i][k]);
        }
      } else {
#pragma GCC unroll 8
        for (int i = 0; i < MR; ++i) gv[i] = kMaskGy ? VecF::load_mask(g[i] + off, bits) : VecF::load(g[i] + off);
#pragma GCC unroll 8
        for (int k = 0; k < NT; ++k) {
          const VecF xv = VecF::load_mask(xs[k] + off, bits);
#pragma GCC unroll 8
          for (int i = 0; i < MR; ++i) acc[i][k] = VecF::fmadd(gv[i], xv, acc[i][k]);
        }
      }
    }
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) g[i] += gy_image;
#pragma GCC unroll 8
    for (int k = 0; k < NT; ++k) xs[k] += x_image;
  }
  if (part) {
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
      for (int k = 0; k < NT; ++k) part[i * NT + k] = acc[i][k];
    return;
  }
  // Every sum at a constant index first: indexing `acc` by the run-time m and nt
  // would make the compiler keep it in memory throughout the loop above.
  float sums[MR][NT];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int k = 0; k < NT; ++k) sums[i][k] = reduce_add(acc[i][k]);
  for (int i = 0; i < m; ++i)
    for (int k = 0; k < nt; ++k) dw[i * ldw + k] += sums[i][k];
}

// Adds a slice's contribution to the gradient of one task: group g, channel block b,
// a range of column groups. With one chunk per image, each tile sums the whole slice
// at once; with more, a tile runs per image and chunk and its sums wait in `part`
// (max_task_groups() * MR * NT vectors) until the slice is done.
inline void wgrad_task(const WgradPlan& p, const float* phases, const float* gy, int64_t images, int64_t task,
                       VecF* part, float* dw) {
  constexpr int MR = kWgradMR, NT = kWgradNT;
  const int64_t split = task % p.k_splits, b = (task / p.k_splits) % p.co_blocks;
  const int64_t g = task / (p.k_splits * p.co_blocks);
  const int64_t per_split = p.max_task_groups();
  const int64_t kg0 = split * per_split, kg1 = imin(p.k_groups, kg0 + per_split);
  const int64_t co = g * p.cout_g + b * MR;
  const int m = static_cast<int>(imin(MR, p.cout_g - b * MR));
  const float* gy_rows = gy + co * p.gy_stride;
  float* dw_rows = dw + co * p.K;
  const float* group_in = phases + g * p.cin_g * p.phase.channel_stride;
  const bool staged = p.chunks() > 1;
  if (staged) std::memset(static_cast<void*>(part), 0, sizeof(VecF) * (kg1 - kg0) * MR * NT);
  for (int64_t n = 0; n < (staged ? images : 1); ++n) {
    for (int64_t v0 = 0; v0 < p.vecs; v0 += p.chunk) {
      const int64_t v1 = imin(p.vecs, v0 + p.chunk);
      for (int64_t kg = kg0; kg < kg1; ++kg) {
        const int64_t k0 = kg * NT;
        const int nt = static_cast<int>(imin(NT, p.K - k0));
        const float* x[NT];
        for (int k = 0; k < nt; ++k) {
          const int64_t col = k0 + k;
          x[k] = group_in + n * p.x_image + (col / p.taps) * p.phase.channel_stride + p.offs.data()[col % p.taps];
        }
        VecF* tile_part = staged ? part + (kg - kg0) * MR * NT : nullptr;
        const int64_t tile_images = staged ? 1 : images;
        if (p.raw)
          wgrad_tile<MR, NT, true>(gy_rows + n * p.gy_image, p.gy_stride, m, x, nt, tile_images, p.gy_image,
                                   p.x_image, p.masks.data(), v0, v1, tile_part, dw_rows + k0, p.K);
        else
          wgrad_tile<MR, NT, false>(gy_rows + n * p.gy_image, p.gy_stride, m, x, nt, tile_images, p.gy_image,
                                    p.x_image, p.masks.data(), v0, v1, tile_part, dw_rows + k0, p.K);
      }
    }
  }
  if (!staged) return;
  for (int64_t kg = kg0; kg < kg1; ++kg) {
    const int64_t k0 = kg * NT;
    const int nt = static_cast<int>(imin(NT, p.K - k0));
    for (int i = 0; i < m; ++i)
      for (int k = 0; k < nt; ++k) dw_rows[i * p.K + k0 + k] += reduce_add(part[((kg - kg0) * MR + i) * NT + k]);
  }
}

// Output channel c's grad_y plane laid out on the flat outputs, zero elsewhere.
inline void fill_flat_grad(const Conv2dArgs& a, const WgradPlan& p, const float* plane, float* dst) {
  const int64_t wq = p.phase.wq;
  for (int64_t oh = 0; oh < a.h_out; ++oh) {
    float* row = dst + oh * wq;
    copy_floats(row, plane + oh * a.w_out, a.w_out);
    std::memset(row + a.w_out, 0, sizeof(float) * (wq - a.w_out));
  }
  std::memset(dst + a.h_out * wq, 0, sizeof(float) * (p.gy_stride - a.h_out * wq));
}

// grad_w of a float32 2-D convolution where this kernel beats the GEMM (returns
// false, and does nothing, elsewhere): `a` describes the forward convolution (x,
// weight shape, geometry); gy is grad_y, dw the (c_out, c_in / groups, kh, kw) output.
// Image by image with at least as many images as threads, each thread takes whole
// images into a private gradient, and the private gradients are added at the end.
// Otherwise, per slice, the threads fill its phase-split input and flat grad_y (raw
// planes need neither), then share its tasks, each owning its gradient elements:
// every element is then summed in the same order whatever the thread count.
inline bool conv2d_weight_grad_direct(const Conv2dArgs& a, const float* gy, float* dw) {
  constexpr int MR = kWgradMR, NT = kWgradNT;
  const WgradPlan p(a);
  if (!p.beats_gemm(a)) return false;
  const int threads = a.threads;
  const int64_t image_in = a.c_in * a.h * a.w, plane_out = a.h_out * a.w_out;
  const int64_t tasks = p.tasks(a.groups);
  const int64_t per_image_fills = imax(a.c_in, a.c_out);
  const int64_t part_floats = p.chunks() > 1 ? per_thread_floats(p.max_task_groups() * MR * NT * VecF::kWidth) : 0;

  // Fill job c of image n: input channel c into its phase block `x_dst` (cleared
  // first with `clear`), output channel c of grad_y into the flat block `gy_dst`.
  auto fill = [&](int64_t n, int64_t c, float* x_dst, float* gy_dst, bool clear) {
    if (c < a.c_in)
      fill_phase_channel(a, p.phase, a.x + n * image_in + c * a.h * a.w, x_dst + c * p.phase.channel_stride, clear);
    if (c < a.c_out) fill_flat_grad(a, p, gy + (n * a.c_out + c) * plane_out, gy_dst + c * p.gy_stride);
  };

  const int64_t w_elems = a.c_out * p.K;
  if (p.images == 1 && a.n >= threads && threads > 1) {
    // Raw planes need no copies: only the staged sums and the private gradient.
    const int64_t x_floats = p.raw ? 0 : per_thread_floats(p.x_image + p.phase.slack);
    const int64_t gy_floats = p.raw ? 0 : p.gy_image;
    const int64_t mine_floats = per_thread_floats(w_elems);
    const int64_t per_thread = x_floats + gy_floats + part_floats + mine_floats;
    AlignedBuffer buf(checked_mul(threads, per_thread), true);
    auto mine_of = [&](int u) { return buf.data() + u * per_thread + per_thread - mine_floats; };
#pragma omp parallel num_threads(threads)
    {
      float* ph = buf.data() + omp_get_thread_num() * per_thread;
      float* flat = ph + x_floats;
      VecF* part = reinterpret_cast<VecF*>(flat + gy_floats);
      float* mine = mine_of(omp_get_thread_num());
      // A static split: which images a private gradient sums must not vary from call to call.
#pragma omp for schedule(static)
      for (int64_t n = 0; n < a.n; ++n) {
        const float* xs = p.raw ? a.x + n * p.x_image : ph;
        const float* gys = p.raw ? gy + n * p.gy_image : flat;
        if (!p.raw)
          for (int64_t c = 0; c < per_image_fills; ++c) fill(n, c, ph, flat, false);
        for (int64_t t = 0; t < tasks; ++t) wgrad_task(p, xs, gys, 1, t, part, mine);
      }
      sum_thread_parts(mine_of(0), per_thread, threads, w_elems, dw);
    }
    return true;
  }
  std::memset(dw, 0, sizeof(float) * w_elems);
  AlignedBuffer parts(checked_mul(threads, part_floats));
  // Raw planes are read where they lie. Otherwise the fills write only input positions,
  // and with shared padding columns (phase.h) a row's reads run on into the next row,
  // channel or image, or the slack past the last, where the padding must read as zero.
  // The first slice's fills clear their channels (in parallel); the few floats between
  // images and the slack are cleared here.
  AlignedBuffer phases, flat_gy;
  if (!p.raw) {
    const int64_t x_used = a.c_in * p.phase.channel_stride;
    phases = AlignedBuffer(checked_mul(p.images, p.x_image) + p.phase.slack);
    for (int64_t i = 0; i < p.images; ++i)
      std::memset(phases.data() + i * p.x_image + x_used, 0, sizeof(float) * (p.x_image - x_used));
    std::memset(phases.data() + p.images * p.x_image, 0, sizeof(float) * p.phase.slack);
    flat_gy = AlignedBuffer(checked_mul(p.images, p.gy_image));
  }
  for (int64_t n0 = 0; n0 < a.n; n0 += p.images) {
    const int64_t images = imin(p.images, a.n - n0);
    const float* xs = p.raw ? a.x + n0 * p.x_image : phases.data();
    const float* gys = p.raw ? gy + n0 * p.gy_image : flat_gy.data();
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
      VecF* part = reinterpret_cast<VecF*>(parts.data() + omp_get_thread_num() * part_floats);
      if (!p.raw) {  // the same branch on every thread, so every thread meets the loop
#pragma omp for schedule(static)
        for (int64_t job = 0; job < images * per_image_fills; ++job) {
          const int64_t i = job / per_image_fills;
          fill(n0 + i, job % per_image_fills, phases.data() + i * p.x_image, flat_gy.data() + i * p.gy_image, n0 == 0);
        }
      }
#pragma omp for schedule(dynamic, 1)
      for (int64_t t = 0; t < tasks; ++t) wgrad_task(p, xs, gys, images, t, part, dw);
    }
  }
  return true;
}

}  // namespace FC_NS
}  // namespace fastconv
