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

// Register tile, and the smallest output plane (in outputs per output channel of a
// group) from which this kernel beats im2col + GEMM. Its horizontal sums cost per
// gradient element and image, while the GEMM's im2col and transposing B packing
// cost per input element and tap, so it wins on large planes against few channels.
// Measured, weight gradient alone at 2 threads (Zen 4), GEMM time / this kernel's:
// AVX-512: 3x3 64@56 1.64, 128@28 1.15, 256@14 0.76, 512@7 0.42; stem 7x7/2 3.0,
// VGG 64@224 3.3. AVX2: 64@56 0.88, 128@28 0.77, stem 1.09-1.14, VGG 2.2, LeNet
// 5x5 1->6@28 2.8. Scalar: 0.4-0.7 everywhere, so never.
#if defined(__AVX512F__)
constexpr int kWgradMR = 4, kWgradNT = 6;
constexpr int64_t kWgradMinOutputsPerChannel = 2;
#elif defined(__AVX2__)
constexpr int kWgradMR = 2, kWgradNT = 6;
constexpr int64_t kWgradMinOutputsPerChannel = 100;
#else
constexpr int kWgradMR = 4, kWgradNT = 4;
constexpr int64_t kWgradMinOutputsPerChannel = -1;
#endif

inline bool weight_grad_prefers_direct(const Conv2dArgs& a) {
  return kWgradMinOutputsPerChannel >= 0 &&
         a.h_out * a.w_out >= kWgradMinOutputsPerChannel * (a.c_out / a.groups);
}

// The shape of the computation, shared by every image of a call.
struct WgradPlan {
  static constexpr int L = VecF::kWidth;
  PhaseLayout phase;
  int64_t taps, cin_g, cout_g, K;  // K = cin_g * taps: columns of a group's gradient
  int64_t vecs;                    // vectors of flat outputs
  int64_t gy_stride;               // floats per channel of the flat grad_y
  int64_t co_blocks, k_groups;     // tiles per group: MR-channel blocks x NT-column groups
  int64_t chunk;                   // vectors per pass over j (a cache block)
  Scratch<int64_t> offs;           // input offset per tap
  Scratch<unsigned> masks;         // per vector: its lanes that are outputs

  explicit WgradPlan(const Conv2dArgs& a)
      : phase(a, L),
        taps(a.kh * a.kw),
        cin_g(a.c_in / a.groups),
        cout_g(a.c_out / a.groups),
        K(cin_g * taps),
        vecs(ceil_div(phase.flat_outputs, L)),
        gy_stride(vecs * L),
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
    // keep the input part within about half of a 1 MB L2. One pass covers small planes.
    const int64_t bytes_per_vec = cin_g * L * static_cast<int64_t>(sizeof(float));
    chunk = imax(128, (512 << 10) / imax(1, bytes_per_vec));
    if (chunk >= vecs) chunk = vecs;
  }

  int64_t chunks() const { return ceil_div(vecs, chunk); }
};

// One tile over vectors [v0, v1): rows i < m of `gy` (rows `gy_stride` apart) against
// the input runs x[k], k < nt. The sums start from `part` (MR x NT vectors) and go
// back there; without `part` they start at zero and are added to dw[i * ldw + k].
// Rows and columns past m and nt repeat the last valid one; their sums are dropped.
template <int MR, int NT>
inline void wgrad_tile(const float* gy, int64_t gy_stride, int m, const float* const* x, int nt,
                       const unsigned* masks, int64_t v0, int64_t v1, VecF* part, float* dw, int64_t ldw) {
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
  for (int64_t v = v0; v < v1; ++v) {
    const int64_t off = v * L;
    const unsigned bits = masks[v];
    VecF gv[MR];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) gv[i] = VecF::load(g[i] + off);
    if (bits == kAll) {
#pragma GCC unroll 8
      for (int k = 0; k < NT; ++k) {
        const VecF xv = VecF::load(xs[k] + off);
#pragma GCC unroll 8
        for (int i = 0; i < MR; ++i) acc[i][k] = VecF::fmadd(gv[i], xv, acc[i][k]);
      }
    } else {
#pragma GCC unroll 8
      for (int k = 0; k < NT; ++k) {
        const VecF xv = VecF::load_mask(xs[k] + off, bits);
#pragma GCC unroll 8
        for (int i = 0; i < MR; ++i) acc[i][k] = VecF::fmadd(gv[i], xv, acc[i][k]);
      }
    }
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

// Adds one image's contribution to the gradient rows of task (group g, channel block
// b): every column group over every chunk of j. `part` holds k_groups * MR * NT
// vectors when there is more than one chunk.
inline void wgrad_task(const WgradPlan& p, const float* phases, const float* gy, int64_t g, int64_t b, VecF* part,
                       float* dw) {
  constexpr int MR = kWgradMR, NT = kWgradNT;
  const int64_t co = g * p.cout_g + b * MR;
  const int m = static_cast<int>(imin(MR, p.cout_g - b * MR));
  const float* gy_rows = gy + co * p.gy_stride;
  float* dw_rows = dw + co * p.K;
  const float* group_in = phases + g * p.cin_g * p.phase.channel_stride;
  const bool staged = p.chunks() > 1;
  if (staged) std::memset(static_cast<void*>(part), 0, sizeof(VecF) * p.k_groups * MR * NT);
  for (int64_t v0 = 0; v0 < p.vecs; v0 += p.chunk) {
    const int64_t v1 = imin(p.vecs, v0 + p.chunk);
    for (int64_t kg = 0; kg < p.k_groups; ++kg) {
      const int64_t k0 = kg * NT;
      const int nt = static_cast<int>(imin(NT, p.K - k0));
      const float* x[NT];
      for (int k = 0; k < nt; ++k) {
        const int64_t col = k0 + k;
        x[k] = group_in + (col / p.taps) * p.phase.channel_stride + p.offs.data()[col % p.taps];
      }
      wgrad_tile<MR, NT>(gy_rows, p.gy_stride, m, x, nt, p.masks.data(), v0, v1,
                         staged ? part + kg * MR * NT : nullptr, dw_rows + k0, p.K);
    }
  }
  if (!staged) return;
  for (int64_t kg = 0; kg < p.k_groups; ++kg) {
    const int64_t k0 = kg * NT;
    const int nt = static_cast<int>(imin(NT, p.K - k0));
    for (int i = 0; i < m; ++i)
      for (int k = 0; k < nt; ++k) dw_rows[i * p.K + k0 + k] += reduce_add(part[(kg * MR + i) * NT + k]);
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

// grad_w of a float32 2-D convolution: `a` describes the forward convolution (x,
// weight shape, geometry); gy is grad_y, dw the (c_out, c_in / groups, kh, kw) output.
inline void conv2d_weight_grad_direct(const Conv2dArgs& a, const float* gy, float* dw) {
  constexpr int MR = kWgradMR, NT = kWgradNT;
  const WgradPlan p(a);
  const int threads = a.threads;
  const int64_t image_in = a.c_in * a.h * a.w, plane_out = a.h_out * a.w_out;
  const int64_t w_elems = a.c_out * p.K;
  const int64_t tasks = a.groups * p.co_blocks;
  const int64_t phase_floats = per_thread_floats(p.phase.buffer_floats(a.c_in));
  const int64_t gy_floats = per_thread_floats(checked_mul(a.c_out, p.gy_stride));
  const int64_t part_vecs = p.chunks() > 1 ? p.k_groups * MR * NT : 0;
  const int64_t part_floats = per_thread_floats(checked_mul(part_vecs, VecF::kWidth));
  auto part_of = [&](float* base) { return reinterpret_cast<VecF*>(base); };
  auto fill_image = [&](int64_t n, float* ph, float* flat_gy, int64_t c, bool clear) {
    if (c < a.c_in) fill_phase_channel(a, p.phase, a.x + n * image_in + c * a.h * a.w, ph + c * p.phase.channel_stride,
                                       clear);
    if (c < a.c_out) fill_flat_grad(a, p, gy + (n * a.c_out + c) * plane_out, flat_gy + c * p.gy_stride);
  };
  const int64_t fill_jobs = imax(a.c_in, a.c_out);

  if (a.n >= threads && threads > 1) {
    // Many images: each thread sums whole images into a private gradient; the
    // private gradients are added at the end.
    const int64_t mine_floats = per_thread_floats(w_elems);
    const int64_t per_thread = phase_floats + gy_floats + part_floats + mine_floats;
    AlignedBuffer buf(checked_mul(threads, per_thread), true);
#pragma omp parallel num_threads(threads)
    {
      float* base = buf.data() + omp_get_thread_num() * per_thread;
      float* ph = base;
      float* flat_gy = ph + phase_floats;
      VecF* part = part_of(flat_gy + gy_floats);
      float* mine = flat_gy + gy_floats + part_floats;
      // A static split: which images a private gradient sums must not vary from call to call.
#pragma omp for schedule(static)
      for (int64_t n = 0; n < a.n; ++n) {
        for (int64_t c = 0; c < fill_jobs; ++c) fill_image(n, ph, flat_gy, c, false);
        for (int64_t t = 0; t < tasks; ++t) wgrad_task(p, ph, flat_gy, t / p.co_blocks, t % p.co_blocks, part, mine);
      }
#pragma omp for schedule(static)
      for (int64_t i = 0; i < w_elems; ++i) {
        float sum = 0;
        for (int u = 0; u < threads; ++u) sum += buf.data()[u * per_thread + phase_floats + gy_floats + part_floats + i];
        dw[i] = sum;
      }
    }
    return;
  }
  // Few images: the threads share each image, each task owning its gradient rows.
  std::memset(dw, 0, sizeof(float) * w_elems);
  AlignedBuffer shared(phase_floats + gy_floats);
  float* ph = shared.data();
  float* flat_gy = ph + phase_floats;
  std::memset(ph + a.c_in * p.phase.channel_stride, 0, sizeof(float) * (phase_floats - a.c_in * p.phase.channel_stride));
  AlignedBuffer parts(checked_mul(threads, part_floats));
  for (int64_t n = 0; n < a.n; ++n) {
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
      VecF* part = part_of(parts.data() + omp_get_thread_num() * part_floats);
#pragma omp for schedule(static)
      for (int64_t c = 0; c < fill_jobs; ++c) fill_image(n, ph, flat_gy, c, n == 0);
#pragma omp for schedule(dynamic, 1)
      for (int64_t t = 0; t < tasks; ++t) wgrad_task(p, ph, flat_gy, t / p.co_blocks, t % p.co_blocks, part, dw);
    }
  }
}

}  // namespace FC_NS
}  // namespace fastconv
