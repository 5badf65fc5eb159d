// Convolution entries for this ISA.
#include "conv/conv.h"

#include <type_traits>

#include "conv/conv_gemm.h"
#include "conv/depthwise_backward.h"
#include "conv/direct.h"

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

static bool is_2d(const ConvNdArgs<float>& g) { return g.in[0] == 1 && g.out[0] == 1 && g.kernel[0] == 1; }

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
  return a;
}

template <class T>
void conv_forward(const ConvForward<T>& f, ConvAlgo algo) {
  if (f.g.n == 0 || f.g.c_out == 0) return;
  ConvForward<T> a = f;
  a.g = sized_for_threads(f.g);
  if constexpr (std::is_same_v<T, float>) {
    if (is_2d(a.g) && algo == ConvAlgo::direct) return conv2d_direct(to_conv2d(a));
    if (is_2d(a.g) && algo == ConvAlgo::depthwise) return conv2d_depthwise(to_conv2d(a));
  }
  conv_gemm_forward(a);
}

// With stride 1 and one filter per channel, a depthwise grad_x is the depthwise
// convolution of grad_y with every filter flipped, padded by dil * (k - 1) - pad
// before: the forward kernel computes it. Needs that padding to be >= 0.
static bool data_grad_is_a_forward(const ConvBackward<float>& b) {
  const ConvNdArgs<float>& g = b.g;
  bool ok = b.grad_x && g.c_out == g.c_in;
  for (int d = 1; d < 3; ++d) ok = ok && g.stride[d] == 1 && g.pad[d] <= g.dil[d] * (g.kernel[d] - 1);
  return ok;
}

static void depthwise_data_grad_as_forward(const ConvBackward<float>& b) {
  const ConvNdArgs<float>& g = b.g;
  const int64_t taps = g.kernel[1] * g.kernel[2];
  Scratch<float> flipped(checked_mul(g.c_out, taps));
  for (int64_t o = 0; o < g.c_out; ++o)
    for (int64_t t = 0; t < taps; ++t) flipped.data()[o * taps + t] = b.weight[o * taps + taps - 1 - t];
  ConvForward<float> f;
  f.g = g;
  for (int d = 1; d < 3; ++d) {
    f.g.in[d] = g.out[d];
    f.g.out[d] = g.in[d];
    f.g.pad[d] = g.dil[d] * (g.kernel[d] - 1) - g.pad[d];
  }
  f.x = b.grad_y;
  f.weight = flipped.data();
  f.y = b.grad_x;
  conv2d_depthwise(to_conv2d(f));
}

template <class T>
void conv_backward(const ConvBackward<T>& b, ConvAlgo algo) {
  ConvBackward<T> a = b;
  a.g = sized_for_threads(b.g);
  if (a.grad_b) conv_backward_bias(a);
  if (algo == ConvAlgo::depthwise && a.g.kernel[0] == 1 && a.g.in[0] == 1) {
    if constexpr (std::is_same_v<T, float>) {
      if (data_grad_is_a_forward(a)) {
        depthwise_data_grad_as_forward(a);
        a.grad_x = nullptr;
      }
    }
    if (a.grad_x || a.grad_w) depthwise_backward(a);
    return;
  }
  if (a.grad_x) conv_gemm_backward_data(a);
  if (a.grad_w) conv_gemm_backward_weight(a);
}

template void conv_forward<float>(const ConvForward<float>&, ConvAlgo);
template void conv_forward<double>(const ConvForward<double>&, ConvAlgo);
template void conv_backward<float>(const ConvBackward<float>&, ConvAlgo);
template void conv_backward<double>(const ConvBackward<double>&, ConvAlgo);

}  // namespace FC_NS
}  // namespace fastconv
