// Convolution as GEMM over up to three spatial dimensions, float or double.
//
// Per image and group, with K = cin_g * taps and P = output volume:
//   forward          y[g] (cout_g x P)  = W[g] (cout_g x K) * col (K x P)
//   backward data    col (K x P)        = W[g]^T * dy[g]        then col2im into dx
//   backward weight  dW[g] (cout_g x K) += dy[g] (cout_g x P) * col^T
// "im2col" builds col explicitly, a block of output rows (od, oh) at a time, so
// that the GEMM reads each block from cache; a pointwise convolution (1x1, stride
// 1, no padding) uses the input planes as col directly. Bias and activation ride
// in the forward GEMM's epilogue.
#pragma once
#include <omp.h>

#include <cstdint>
#include <cstring>

#include "gemm/driver.h"

namespace fastconv {
namespace FC_NS {

// Bytes of one block of col (about a Zen 4 core's L2; 0.5 and 2 MiB measured no
// better). A whole col of 3x3x3 x 32 channels over a 16^3 output is 14 MiB per
// image, and the GEMM reading it ran well below its speed: conv3d 16 -> 32 channels
// over 32x64x64 1.5x faster in blocks, float64 3x3 64@56 1.3x.
constexpr int64_t kColBlockBytes = 1 << 20;

template <class T>
struct ConvShape {
  int64_t groups, cin_g, cout_g, taps, K, P, in_vol, image_in, image_out;
  int64_t wo, rows, block_rows;  // output row length, output rows (od, oh), rows per col block
  bool pointwise;

  explicit ConvShape(const ConvNdArgs<T>& a) {
    groups = a.groups;
    cin_g = a.c_in / a.groups;
    cout_g = a.c_out / a.groups;
    taps = a.kernel[0] * a.kernel[1] * a.kernel[2];
    K = cin_g * taps;
    P = a.out[0] * a.out[1] * a.out[2];
    in_vol = a.in[0] * a.in[1] * a.in[2];
    image_in = a.c_in * in_vol;
    image_out = a.c_out * P;
    pointwise = taps == 1;
    for (int d = 0; d < 3; ++d) pointwise = pointwise && a.stride[d] == 1 && a.pad[d] == 0 && a.out[d] == a.in[d];
    wo = a.out[2];
    rows = a.out[0] * a.out[1];
    block_rows = pointwise ? rows : imax(1, imin(rows, kColBlockBytes / int64_t(sizeof(T)) / imax(1, K * wo)));
  }

  // Offsets of a job's (image, group) block: its input channels, output channels, filters.
  int64_t in_offset(int64_t job) const { return (job / groups) * image_in + (job % groups) * cin_g * in_vol; }
  int64_t out_offset(int64_t job) const { return (job / groups) * image_out + (job % groups) * cout_g * P; }
  int64_t weight_offset(int64_t job) const { return (job % groups) * cout_g * K; }
  // Elements of one explicit col block (none for a pointwise convolution).
  int64_t col_elems() const { return pointwise ? 0 : checked_mul(K, block_rows * wo); }
  // Calls fn(first output row, end row, columns) for each col block in order.
  template <class Fn>
  void for_each_block(Fn fn) const {
    for (int64_t r0 = 0; r0 < rows; r0 += block_rows) {
      const int64_t r1 = imin(rows, r0 + block_rows);
      fn(r0, r1, (r1 - r0) * wo);
    }
  }
};

// Output positions o along axis d whose input coordinate o * stride + off lies in
// [0, in): the half-open range [lo, hi).
template <class T>
inline void valid_range(const ConvNdArgs<T>& a, int d, int64_t off, int64_t* lo, int64_t* hi) {
  const int64_t s = a.stride[d], n = a.in[d], out = a.out[d];
  *lo = imin(out, imax(0, ceil_div(-off, s)));
  *hi = imax(*lo, imin(out, off >= n ? 0 : ceil_div(n - off, s)));
}

// Walks the (output row, input row) pairs of one col row over output rows
// [r0, r1): for every output (od, oh) whose input (id, ih) is inside, calls
// fn(output row - r0, input row index, input column offset, ow_lo, ow_hi); rows
// outside go to pad(output row - r0).
template <class T, class Inside, class Outside>
inline void for_each_col_row(const ConvNdArgs<T>& a, int64_t tap, int64_t r0, int64_t r1, Inside fn, Outside pad) {
  const int64_t kx = tap % a.kernel[2], ky = (tap / a.kernel[2]) % a.kernel[1], kz = tap / (a.kernel[2] * a.kernel[1]);
  const int64_t off = kx * a.dil[2] - a.pad[2];
  int64_t ow_lo, ow_hi;
  valid_range(a, 2, off, &ow_lo, &ow_hi);
  for (int64_t orow = r0; orow < r1; ++orow) {
    const int64_t od = orow / a.out[1], oh = orow % a.out[1];
    const int64_t id = od * a.stride[0] + kz * a.dil[0] - a.pad[0];
    const int64_t ih = oh * a.stride[1] + ky * a.dil[1] - a.pad[1];
    if (id < 0 || id >= a.in[0] || ih < 0 || ih >= a.in[1])
      pad(orow - r0);
    else
      fn(orow - r0, id * a.in[1] + ih, off, ow_lo, ow_hi);
  }
}

// Rows [k0, k1) of the im2col block of output rows [r0, r1) (row length
// (r1 - r0) * wo) of the channels starting at x (one image, one group).
// `ld`: the distance between col's rows, when not (r1 - r0) * wo.
template <class T>
void im2col_rows(const ConvNdArgs<T>& a, const T* x, T* col, int64_t k0, int64_t k1, int64_t r0, int64_t r1,
                 int64_t ld = 0) {
  const ConvShape<T> s(a);
  const int64_t wo = a.out[2], sw = a.stride[2], w = a.in[2], pc = ld ? ld : (r1 - r0) * wo;
  for (int64_t row = k0; row < k1; ++row) {
    const T* xc = x + (row / s.taps) * s.in_vol;
    T* dst = col + row * pc;
    for_each_col_row(
        a, row % s.taps, r0, r1,
        [&](int64_t orow, int64_t irow, int64_t off, int64_t lo, int64_t hi) {
          // Rows are short (a 3-D output's are often 16 wide): inline copies, not libc calls.
          T* d = dst + orow * wo;
          const T* src = xc + irow * w + off;
          fill_floats(d, T(0), lo);
          if (sw == 1) {
            copy_floats(d + lo, src + lo, hi - lo);
          } else {
            for (int64_t ow = lo; ow < hi; ++ow) d[ow] = src[ow * sw];
          }
          fill_floats(d + hi, T(0), wo - hi);
        },
        [&](int64_t orow) { fill_floats(dst + orow * wo, T(0), wo); });
  }
}

// Col rows per im2col_rows call where calls are split across threads: one call per row spent a
// third of its time on the call itself (a ConvShape and a walk over the output rows).
constexpr int64_t kIm2colRun = 64;

// The im2col block of output rows [r0, r1) of `images` consecutive images (one group: image i's
// input image_in further on, its columns (r1 - r0) * wo further right, col's rows ld apart when
// ld is given), its rows split across threads in runs.
template <class T>
void im2col_parallel(const ConvNdArgs<T>& a, const T* x, T* col, int64_t r0, int64_t r1, int threads,
                     int64_t images = 1, int64_t ld = 0) {
  const ConvShape<T> s(a);
  const int64_t rows = s.K, width = (r1 - r0) * a.out[2];
  const int64_t run = imax(1, imin(kIm2colRun, rows * images / (4 * threads)));  // still >= 4 runs a thread
  const int64_t runs = ceil_div(rows, run);
#pragma omp parallel for collapse(2) num_threads(threads) schedule(static) if (threads > 1)
  for (int64_t img = 0; img < images; ++img)
    for (int64_t r = 0; r < runs; ++r)
      im2col_rows(a, x + img * s.image_in, col + img * width, r * run, imin(rows, (r + 1) * run), r0, r1, ld);
}

// dx channel ci (one image, one group) += the sum of the rows of a col block
// (output rows [r0, r1)) for that channel, each scattered back to the input
// positions it was gathered from.
// `ld`: the distance between col's rows, when not (r1 - r0) * wo.
template <class T>
void col2im_channel(const ConvNdArgs<T>& a, const T* col, T* dx, int64_t ci, int64_t r0, int64_t r1,
                    int64_t ld = 0) {
  const ConvShape<T> s(a);
  const int64_t wo = a.out[2], sw = a.stride[2], w = a.in[2], pc = ld ? ld : (r1 - r0) * wo;
  T* dc = dx + ci * s.in_vol;
  for (int64_t tap = 0; tap < s.taps; ++tap) {
    const T* src = col + (ci * s.taps + tap) * pc;
    for_each_col_row(
        a, tap, r0, r1,
        [&](int64_t orow, int64_t irow, int64_t off, int64_t lo, int64_t hi) {
          T* __restrict d = dc + irow * w + off;
          const T* __restrict c = src + orow * wo;
          if (sw == 1) {
#pragma omp simd
            for (int64_t ow = lo; ow < hi; ++ow) d[ow] += c[ow];
          } else {
            for (int64_t ow = lo; ow < hi; ++ow) d[ow * sw] += c[ow];
          }
        },
        [](int64_t) {});
  }
}

// Per-thread scratch: GEMM packing buffers, then (if needed) a col matrix.
template <class T>
struct ConvScratch {
  int64_t per_thread;
  Scratch<T> buf;
  ConvScratch(int threads, int64_t col_elems)
      : per_thread(per_thread_floats(gemm_scratch_per_thread<T>() + col_elems)),
        buf(checked_mul(threads, per_thread)) {}
  GemmScratch<T> gemm(int t) const { return GemmScratch<T>(buf.data() + t * per_thread); }
  T* col(int t) const { return buf.data() + t * per_thread + gemm_scratch_per_thread<T>(); }
};

// A pointwise convolution with one group over planes narrower than a few
// micro-kernel tiles: per-image GEMMs would pad every plane to whole NR-column
// tiles (a 7x7 plane fills 49 of 64 columns), so one GEMM runs over all the
// images' columns side by side (PackBImages) into an M x (n * P) buffer, which
// is then copied out plane by plane.
template <class T>
bool batch_small_planes(const ConvNdArgs<T>& a, const ConvShape<T>& s) {
  return s.pointwise && a.groups == 1 && a.n > 1 && s.P < 4 * gemm_nr<T>();
}

// dst[img][m][p] = src[m][img * P + p] for a (rows x n * P) matrix src.
template <class T>
void scatter_image_columns(const T* src, int64_t rows, int64_t n, int64_t P, T* dst, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static) collapse(2) if (threads > 1)
  for (int64_t img = 0; img < n; ++img)
    for (int64_t r = 0; r < rows; ++r) copy_floats(dst + (img * rows + r) * P, src + r * n * P + img * P, P);
}

// out[img] (m x P) = A (m x k) * b[img] (k x P) for every image, as one GEMM over the
// images' columns side by side, through an m x (n * P) buffer.
template <class PackA, class T>
void gemm_image_columns(int64_t m, int64_t k, const PackA& pack_a, const T* b, int64_t n, int64_t P, T* out,
                        const EpilogueT<T>& epi, int threads) {
  Scratch<T> c(checked_mul(m, n * P));
  gemm_parallel(m, n * P, k, pack_a, PackBImages<T>{b, P, P, k * P}, c.data(), n * P, epi, threads);
  scatter_image_columns(c.data(), m, n, P, out, threads);
}

template <class T>
void conv_gemm_forward(const ConvForward<T>& f) {
  const ConvNdArgs<T>& a = f.g;
  const ConvShape<T> s(a);
  const int64_t jobs = a.n * a.groups;
  const int threads = a.threads;
  const int64_t col_elems = s.col_elems();

  auto epilogue = [&](int64_t g) {
    EpilogueT<T> e;
    e.bias = f.bias ? f.bias + g * s.cout_g : nullptr;
    e.bias_mode = f.bias ? BiasMode::per_row : BiasMode::none;
    e.act = f.act;
    return e;
  };
  auto input = [&](int64_t job) { return f.x + s.in_offset(job); };
  // B of a block: the input planes themselves (pointwise: one block of every row), or the col block.
  auto operand_b = [&](int64_t job, const T* col, int64_t pc) {
    return s.pointwise ? PackBStrided<T>{input(job), s.P, 1} : PackBStrided<T>{col, pc, 1};
  };
  auto operand_a = [&](int64_t job) { return PackAStrided<T>{f.weight + s.weight_offset(job), s.K, 1}; };
  if (batch_small_planes(a, s)) {
    gemm_image_columns(a.c_out, s.K, operand_a(0), f.x, a.n, s.P, f.y, epilogue(0), threads);
    return;
  }

  if (jobs >= threads && threads > 1) {
    // Enough (image, group) jobs to give each thread whole GEMMs of its own.
    ConvScratch<T> scratch(threads, col_elems);
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
    for (int64_t job = 0; job < jobs; ++job) {
      const int t = omp_get_thread_num();
      s.for_each_block([&](int64_t r0, int64_t r1, int64_t pc) {
        if (!s.pointwise) im2col_rows(a, input(job), scratch.col(t), 0, s.K, r0, r1);
        gemm_serial(s.cout_g, pc, s.K, operand_a(job), operand_b(job, scratch.col(t), pc),
                    f.y + s.out_offset(job) + r0 * s.wo, s.P, epilogue(job % a.groups), 0, 0, scratch.gemm(t));
      });
    }
    return;
  }
  Scratch<T> col(col_elems);
  for (int64_t job = 0; job < jobs; ++job)
    s.for_each_block([&](int64_t r0, int64_t r1, int64_t pc) {
      if (!s.pointwise) im2col_parallel(a, input(job), col.data(), r0, r1, threads);
      gemm_parallel(s.cout_g, pc, s.K, operand_a(job), operand_b(job, col.data(), pc),
                    f.y + s.out_offset(job) + r0 * s.wo, s.P, epilogue(job % a.groups), threads);
    });
}

// Bytes of a col that holds several images side by side for one GEMM.
constexpr int64_t kImagesColBytes = int64_t{8} << 20;

// Images per GEMM of a backward pass whose per-image GEMMs would be narrow: images whose cols fit
// in kImagesColBytes go side by side, so that the GEMM runs over all their output positions. 1:
// one GEMM per image. The weight gradient (positions along k) takes planes under 64 outputs: there
// each per-image product has a short k and reads and writes all of grad_w (9.4 MB on 3x3 512 @7);
// the data gradient (positions along n) planes under four micro-kernel tiles, which per image
// would pad a 7x7 plane's 49 columns to 64 and a 14x14 plane's 196 to 256 (a pointwise data
// gradient has batch_small_planes for that instead). A pointwise weight gradient gains too: at
// batch 8 @7 1.03-1.24x (320->1280 1.24x, 160->960 1.14x, 2048->512 1.13x); taking @14 planes
// as well lost there (0.81-1.01x), the col being a copy of every input plane.
template <class T>
int64_t images_per_gemm(const ConvNdArgs<T>& a, const ConvShape<T>& s, int64_t max_outputs) {
  if (a.groups != 1 || a.n < 2 || s.P >= max_outputs) return 1;
  return imax(1, imin(a.n, kImagesColBytes / imax(1, checked_mul(s.K, s.P) * int64_t(sizeof(T)))));
}
template <class T>
int64_t wgrad_images_per_gemm(const ConvNdArgs<T>& a, const ConvShape<T>& s) {
  return images_per_gemm(a, s, 64);
}

// grad_x = the transpose of the forward convolution applied to grad_y.
template <class T>
void conv_gemm_backward_data(const ConvBackward<T>& b) {
  const ConvNdArgs<T>& a = b.g;
  const ConvShape<T> s(a);
  const int64_t jobs = a.n * a.groups;
  const int threads = a.threads;
  const int64_t col_elems = s.col_elems();
  const EpilogueT<T> none;

  // W[g]^T: element (k, o) of the K x cout_g matrix at weight[o * K + k].
  auto operand_a = [&](int64_t job) { return PackAStrided<T>{b.weight + s.weight_offset(job), 1, s.K}; };
  // grad_y's columns from output row r0 on.
  auto operand_b = [&](int64_t job, int64_t r0) {
    return PackBStrided<T>{b.grad_y + s.out_offset(job) + r0 * s.wo, s.P, 1};
  };
  auto grad_x = [&](int64_t job) { return b.grad_x + s.in_offset(job); };
  if (batch_small_planes(a, s)) {
    gemm_image_columns(s.K, a.c_out, operand_a(0), b.grad_y, a.n, s.P, b.grad_x, none, threads);
    return;
  }
  if (const int64_t per_gemm = images_per_gemm(a, s, 4 * gemm_nr<T>()); per_gemm > 1) {
    // col holds images n0 .. n0 + g side by side (row k: each image's P positions in turn), from
    // their grad_y planes side by side; each image's columns are then scattered back.
    Scratch<T> col(checked_mul(s.K, per_gemm * s.P));
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (int64_t img = 0; img < a.n; ++img) std::memset(grad_x(img), 0, sizeof(T) * s.image_in);
    for (int64_t n0 = 0; n0 < a.n; n0 += per_gemm) {
      const int64_t g = imin(per_gemm, a.n - n0), pc = g * s.P;
      gemm_parallel(s.K, pc, a.c_out, operand_a(0), PackBImages<T>{b.grad_y + n0 * s.image_out, s.P, s.P, s.image_out},
                    col.data(), pc, none, threads);
#pragma omp parallel for collapse(2) num_threads(threads) schedule(static) if (threads > 1)
      for (int64_t img = 0; img < g; ++img)
        for (int64_t ci = 0; ci < a.c_in; ++ci)
          col2im_channel(a, col.data() + img * s.P, grad_x(n0 + img), ci, 0, s.rows, pc);
    }
    return;
  }

  // A pointwise convolution's col is grad_x itself; otherwise grad_x is zeroed and each
  // col block (W^T times a block of grad_y's columns) is added back into it.
  if (jobs >= threads && threads > 1) {
    ConvScratch<T> scratch(threads, col_elems);
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
    for (int64_t job = 0; job < jobs; ++job) {
      const int t = omp_get_thread_num();
      if (s.pointwise) {
        gemm_serial(s.K, s.P, s.cout_g, operand_a(job), operand_b(job, 0), grad_x(job), s.P, none, 0, 0,
                    scratch.gemm(t));
        continue;
      }
      std::memset(grad_x(job), 0, sizeof(T) * s.cin_g * s.in_vol);
      s.for_each_block([&](int64_t r0, int64_t r1, int64_t pc) {
        gemm_serial(s.K, pc, s.cout_g, operand_a(job), operand_b(job, r0), scratch.col(t), pc, none, 0, 0,
                    scratch.gemm(t));
        for (int64_t ci = 0; ci < s.cin_g; ++ci) col2im_channel(a, scratch.col(t), grad_x(job), ci, r0, r1);
      });
    }
    return;
  }
  Scratch<T> col_buf(col_elems);
  for (int64_t job = 0; job < jobs; ++job) {
    if (s.pointwise) {
      gemm_parallel(s.K, s.P, s.cout_g, operand_a(job), operand_b(job, 0), grad_x(job), s.P, none, threads);
      continue;
    }
    std::memset(grad_x(job), 0, sizeof(T) * s.cin_g * s.in_vol);
    s.for_each_block([&](int64_t r0, int64_t r1, int64_t pc) {
      gemm_parallel(s.K, pc, s.cout_g, operand_a(job), operand_b(job, r0), col_buf.data(), pc, none, threads);
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
      for (int64_t ci = 0; ci < s.cin_g; ++ci) col2im_channel(a, col_buf.data(), grad_x(job), ci, r0, r1);
    });
  }
}

// grad_w = sum over images of grad_y[g] * col^T.
template <class T>
void conv_gemm_backward_weight(const ConvBackward<T>& b) {
  const ConvNdArgs<T>& a = b.g;
  const ConvShape<T> s(a);
  const int64_t jobs = a.n * a.groups;
  const int threads = a.threads;
  const int64_t col_elems = s.col_elems();
  const int64_t w_elems = a.c_out * s.K;
  const EpilogueT<T> none;

  auto input = [&](int64_t job) { return b.x + s.in_offset(job); };
  if (const int64_t per_gemm = wgrad_images_per_gemm(a, s); per_gemm > 1) {
    // col holds images n0 .. n0 + g side by side (row k: each image's P positions in turn); A is
    // grad_y over the same images' columns.
    Scratch<T> col(checked_mul(s.K, per_gemm * s.P));
    for (int64_t n0 = 0; n0 < a.n; n0 += per_gemm) {
      const int64_t g = imin(per_gemm, a.n - n0), pc = g * s.P;
      im2col_parallel(a, input(n0), col.data(), 0, s.rows, threads, g, pc);
      gemm_parallel(a.c_out, s.K, pc, PackAImages<T>{b.grad_y + n0 * s.image_out, s.P, s.P, s.image_out},
                    PackBStrided<T>{col.data(), 1, pc}, b.grad_w, s.K, none, threads, n0 > 0);
    }
    return;
  }
  // grad_y's columns from output row r0 on, and the transposed col block (element (p, k) at
  // col[k * pc + p]; pointwise: the input planes).
  auto operand_a = [&](int64_t job, int64_t r0) {
    return PackAStrided<T>{b.grad_y + s.out_offset(job) + r0 * s.wo, s.P, 1};
  };
  auto operand_b = [&](int64_t job, const T* col, int64_t pc) {
    return s.pointwise ? PackBStrided<T>{input(job), 1, s.P} : PackBStrided<T>{col, 1, pc};
  };

  if (jobs >= threads && threads > 1) {
    // Each thread sums its images into a private copy of grad_w; the copies are added at the end.
    ConvScratch<T> scratch(threads, col_elems);
    const int64_t part_stride = per_thread_floats(w_elems);
    Scratch<T> parts(checked_mul(threads, part_stride), true);
#pragma omp parallel num_threads(threads)
    {
      const int t = omp_get_thread_num();
      T* mine = parts.data() + t * part_stride;
#pragma omp for schedule(static)
      for (int64_t job = 0; job < jobs; ++job)
        s.for_each_block([&](int64_t r0, int64_t r1, int64_t pc) {
          if (!s.pointwise) im2col_rows(a, input(job), scratch.col(t), 0, s.K, r0, r1);
          gemm_serial(s.cout_g, s.K, pc, operand_a(job, r0), operand_b(job, scratch.col(t), pc),
                      mine + s.weight_offset(job), s.K, none, 0, 0, scratch.gemm(t), true);
        });
      sum_thread_parts(parts.data(), part_stride, threads, w_elems, b.grad_w);
    }
    return;
  }
  // The threaded jobs above overwrite grad_w with their sum; here every job accumulates into it.
  std::memset(b.grad_w, 0, sizeof(T) * w_elems);
  Scratch<T> col(col_elems);
  for (int64_t job = 0; job < jobs; ++job)
    s.for_each_block([&](int64_t r0, int64_t r1, int64_t pc) {
      if (!s.pointwise) im2col_parallel(a, input(job), col.data(), r0, r1, threads);
      gemm_parallel(s.cout_g, s.K, pc, operand_a(job, r0), operand_b(job, col.data(), pc),
                    b.grad_w + s.weight_offset(job), s.K, none, threads, true);
    });
}

// grad_b[o] = sum of grad_y over images and output positions of channel o.
template <class T>
void conv_backward_bias(const ConvBackward<T>& b) {
  const ConvNdArgs<T>& a = b.g;
  const ConvShape<T> s(a);
#pragma omp parallel for num_threads(a.threads) schedule(static) if (a.threads > 1 && a.c_out * s.P * a.n > (1 << 16))
  for (int64_t o = 0; o < a.c_out; ++o) {
    T sum = 0;
    for (int64_t n = 0; n < a.n; ++n) {
      const T* p = b.grad_y + n * s.image_out + o * s.P;
      T part = 0;
#pragma omp simd reduction(+ : part)
      for (int64_t i = 0; i < s.P; ++i) part += p[i];
      sum += part;
    }
    b.grad_b[o] = sum;
  }
}

}  // namespace FC_NS
}  // namespace fastconv
