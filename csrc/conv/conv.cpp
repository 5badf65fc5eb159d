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

template <class T>
void conv_backward(const ConvBackward<T>& b, ConvAlgo algo) {
  ConvBackward<T> a = b;
  a.g = sized_for_threads(b.g);
  if (a.grad_b) conv_backward_bias(a);
  if (algo == ConvAlgo::depthwise && a.g.kernel[0] == 1 && a.g.in[0] == 1) {
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
