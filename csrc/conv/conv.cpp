// Convolution entries for this ISA.
#include "conv/conv.h"

#include <type_traits>

#include "conv/conv_gemm.h"
#include "conv/depthwise_backward.h"
#include "conv/direct_flat.h"
#include "conv/direct_weight_grad.h"
#include "conv/winograd.h"
#include "conv/winograd_weight_grad.h"

namespace fastconv {
namespace FC_NS {

// Below this many multiply-adds, starting a parallel region costs more than it saves.
constexpr int64_t kMinParallelMacs = 1 << 16;

template <class T>
static ConvNdArgs<T> sized_for_threads(const ConvNdArgs<T>& g) {
  ConvNdArgs<T> a = g;
  const int64_t macs = a.n * a.c_out * a.out[0] * a.out[1] * a.out[2] * (a.c_in / a.groups) * a.kernel[0] *
                       a.kernel[1] * a.kernel[2];
  if (macs < kMinParallelMacs) a.threads = 1;
  return a;
}

template <class T>
static bool is_2d(const ConvNdArgs<T>& g) { return g.in[0] == 1 && g.out[0] == 1 && g.kernel[0] == 1; }

static Conv2dArgs to_conv2d(const ConvForward<float>& f) {
  const ConvNdArgs<float>& g = f.g;
  Conv2dArgs a;
  a.n = g.n;
  a.c_in = g.c_in;
  a.h = g.in[1];
  a.w = g.in[2];
  a.c_out = g.c_out;
  a.kh = g.kernel[1];
  a.kw = g.kernel[2];
  a.h_out = g.out[1];
  a.w_out = g.out[2];
  a.stride_h = g.stride[1];
  a.stride_w = g.stride[2];
  a.pad_top = g.pad[1];
  a.pad_left = g.pad[2];
  a.dil_h = g.dil[1];
  a.dil_w = g.dil[2];
  a.groups = g.groups;
  a.x = f.x;
  a.weight = f.weight;
  a.bias = f.bias;
  a.y = f.y;
  a.act = f.act;
  a.threads = g.threads;
  a.winograd_filters = f.winograd_filters;
  return a;
}

template <class T>
void conv_forward(const ConvForward<T>& f, ConvAlgo algo) {
  if (f.g.n == 0 || f.g.c_out == 0) return;
  ConvForward<T> a = f;
  a.g = sized_for_threads(f.g);
  if constexpr (std::is_same_v<T, float>) {
    if (is_2d(a.g) && algo == ConvAlgo::pointwise && flat_runs_pointwise(to_conv2d(a))) algo = ConvAlgo::direct;
    if (is_2d(a.g) && algo == ConvAlgo::direct) return conv2d_direct(to_conv2d(a));
    if (is_2d(a.g) && algo == ConvAlgo::depthwise) return conv2d_depthwise(to_conv2d(a));
    if (is_2d(a.g) && algo == ConvAlgo::winograd) return conv2d_winograd(to_conv2d(a));
  }
  conv_gemm_forward(a);
}

// With stride 1, grad_x is the convolution of grad_y with every filter flipped and
// its input and output channels swapped within each group, padded by
// dil * (k - 1) - pad before: that forward convolution.
static ConvForward<float> data_grad_forward(const ConvBackward<float>& b) {
  const ConvNdArgs<float>& g = b.g;
  ConvForward<float> f;
  f.g = g;
  f.g.c_in = g.c_out;
  f.g.c_out = g.c_in;
  for (int d = 1; d < 3; ++d) {
    f.g.in[d] = g.out[d];
    f.g.out[d] = g.in[d];
    f.g.pad[d] = g.dil[d] * (g.kernel[d] - 1) - g.pad[d];
  }
  f.x = b.grad_y;
  f.weight = b.weight;
  f.y = b.grad_x;
  return f;
}

// Whether a forward kernel computes grad_x: stride 1, and padding >= 0 in that forward.
// A 1x1 convolution's data gradient is a plain GEMM already (no col2im), which runs it
// unless the plane is small enough for the flat kernel to win (flat_runs_pointwise).
static bool data_grad_is_a_forward(const ConvBackward<float>& b) {
  const ConvNdArgs<float>& g = b.g;
  if (!b.grad_x || !is_2d(g)) return false;
  for (int d = 1; d < 3; ++d)
    if (g.stride[d] != 1 || g.pad[d] > g.dil[d] * (g.kernel[d] - 1)) return false;
  return !ConvShape<float>(g).pointwise || flat_runs_pointwise(to_conv2d(data_grad_forward(b)));
}

// Runs grad_x = that convolution: on the direct kernel, reading the filters in place
// (dense and grouped), or on the depthwise one (one filter per channel, where the
// swap is the identity; its row kernel reads filters in order, so they are flipped
// into a copy, a few floats per channel).
static void data_grad_as_forward(const ConvBackward<float>& b, ConvAlgo algo) {
  const ConvNdArgs<float>& g = b.g;
  ConvForward<float> f = data_grad_forward(b);
  if (algo != ConvAlgo::depthwise) {
    Conv2dArgs a = to_conv2d(f);
    a.weight_transposed = true;
    // 'winograd' comes only for a 3x3, stride-1, undilated, single-group convolution (check_algo),
    // and so is this one.
    return algo == ConvAlgo::winograd ? conv2d_winograd(a) : conv2d_direct(a);
  }
  const int64_t taps = g.kernel[1] * g.kernel[2];
  Scratch<float> flipped(checked_mul(g.c_out, taps));
  for (int64_t o = 0; o < g.c_out; ++o)
    for (int64_t t = 0; t < taps; ++t) flipped.data()[o * taps + t] = b.weight[o * taps + taps - 1 - t];
  f.weight = flipped.data();
  conv2d_depthwise(to_conv2d(f));
}

template <class T>
void conv_backward(const ConvBackward<T>& b, ConvAlgo algo) {
  ConvBackward<T> a = b;
  a.g = sized_for_threads(b.g);
  if (a.grad_b) conv_backward_bias(a);
  if constexpr (std::is_same_v<T, float>) {
    // Depthwise with a channel multiplier swaps into a grouped convolution: its own kernel below.
    // 'winograd' (the Python layer's choice for the data gradient) runs the rest as 'direct' does.
    const bool as_forward = algo == ConvAlgo::direct || algo == ConvAlgo::winograd ||
                            (algo == ConvAlgo::depthwise && a.g.c_out == a.g.c_in);
    if (as_forward && data_grad_is_a_forward(a)) {
      data_grad_as_forward(a, algo);
      a.grad_x = nullptr;
    }
  }
  if (algo == ConvAlgo::depthwise && is_2d(a.g)) {
    if (a.grad_x || a.grad_w) depthwise_backward(a);
    return;
  }
  if constexpr (std::is_same_v<T, float>) {
    ConvForward<float> f;
    f.g = a.g;
    f.x = a.x;
    // 'winograd' comes only for a 3x3, stride-1, undilated, single-group convolution (check_algo).
    if (a.grad_w && a.weight_algo == ConvAlgo::winograd) {
      conv2d_winograd_weight_grad(to_conv2d(f), a.grad_y, a.grad_w);
      a.grad_w = nullptr;
    }
    // Planes small enough for several images per GEMM (wgrad_images_per_gemm) run faster there:
    // 3x3 512 @7 at batch 8 1.3x, 256 -> 512 @14 stride 2 1.35x, 128 @4 batch 16 1.4x.
    if (a.weight_algo == ConvAlgo::direct && a.grad_w && is_2d(a.g) &&
        wgrad_images_per_gemm(a.g, ConvShape<float>(a.g)) == 1) {
      if (conv2d_weight_grad_direct(to_conv2d(f), a.grad_y, a.grad_w)) a.grad_w = nullptr;
    }
  }
  if (a.grad_x) conv_gemm_backward_data(a);
  if (a.grad_w) conv_gemm_backward_weight(a);
}

template <class T>
int64_t conv_winograd_filters(const ConvForward<T>& f, T* u) {
  if constexpr (std::is_same_v<T, float>) {
    const Conv2dArgs a = to_conv2d(f);
    const int64_t panel = winograd_filter_panel(a.c_in, a.c_out);
    if (u != nullptr) winograd_filters(a, u, panel);
    return kWinoE * panel;
  } else {
    (void)f, (void)u;
    return -1;
  }
}

template void conv_forward<float>(const ConvForward<float>&, ConvAlgo);
template void conv_forward<double>(const ConvForward<double>&, ConvAlgo);
template void conv_backward<float>(const ConvBackward<float>&, ConvAlgo);
template void conv_backward<double>(const ConvBackward<double>&, ConvAlgo);
template int64_t conv_winograd_filters<float>(const ConvForward<float>&, float*);
template int64_t conv_winograd_filters<double>(const ConvForward<double>&, double*);

}  // namespace FC_NS
}  // namespace fastconv
