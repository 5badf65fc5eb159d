// Plain parameter structs shared by the bindings and every ISA's kernels.
// Sizes are 64-bit throughout; the Python layer validates before filling these.
#pragma once
#include <cstdint>

namespace fastconv {

enum class Activation : int { none = 0, relu = 1, relu6 = 2 };

// Where the epilogue's bias vector runs: one value per output row or per column.
enum class BiasMode : int { none = 0, per_row = 1, per_col = 2 };

template <class T>
struct EpilogueT {
  const T* bias = nullptr;
  BiasMode bias_mode = BiasMode::none;
  Activation act = Activation::none;
};
using Epilogue = EpilogueT<float>;

// C[m x n] = A[m x k] * B[k x n], with element (i, p) of A at a[i * a_rs + p * a_cs]
// (and likewise B), so transposed operands need no copy. C is row-major with
// leading dimension ldc; the epilogue is applied before C is stored. With
// `accumulate`, C += A * B instead (the epilogue then sees the sum).
template <class T>
struct GemmArgsT {
  int64_t m = 0, n = 0, k = 0;
  const T* a = nullptr;
  int64_t a_rs = 0, a_cs = 0;
  const T* b = nullptr;
  int64_t b_rs = 0, b_cs = 0;
  T* c = nullptr;
  int64_t ldc = 0;
  bool accumulate = false;
  EpilogueT<T> epi;
  int threads = 1;
};

enum class ConvAlgo : int { direct = 0, im2col = 1, pointwise = 2, depthwise = 3, winograd = 4 };

// NCHW float32 convolution. Output sizes are computed (and checked) by the caller;
// bottom/right padding is implied by h_out/w_out, which allows PyTorch's asymmetric
// 'same' padding for even kernels.
struct Conv2dArgs {
  int64_t n = 0, c_in = 0, h = 0, w = 0;
  int64_t c_out = 0, kh = 0, kw = 0;
  int64_t h_out = 0, w_out = 0;
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_top = 0, pad_left = 0;
  int64_t dil_h = 1, dil_w = 1;
  int64_t groups = 1;
  const float* x = nullptr;
  const float* weight = nullptr;  // (c_out, c_in / groups, kh, kw)
  const float* bias = nullptr;    // (c_out) or null
  float* y = nullptr;
  Activation act = Activation::none;
  int threads = 1;
  // Direct kernel only: `weight` holds instead the filters of the convolution whose
  // data gradient this one is, read in place: (c_out, c_in / groups, kh, kw) is then
  // that convolution's (c_in, c_out / groups, kh, kw) with in/out channels swapped
  // within each group and every filter flipped.
  bool weight_transposed = false;
  // Winograd only: the filters already transformed (conv_winograd_filters' layout), or null to
  // transform them in the call.
  const float* winograd_filters = nullptr;
};

// A convolution over up to three spatial dimensions (1-D and 2-D set the leading
// ones to 1), NC(D)HW, any float type: the layout shared by the GEMM-based
// forward and both backward passes. Index 0/1/2 = depth/height/width.
template <class T>
struct ConvNdArgs {
  int64_t n = 0, c_in = 0, c_out = 0, groups = 1;
  int64_t in[3] = {1, 1, 1};
  int64_t out[3] = {1, 1, 1};
  int64_t kernel[3] = {1, 1, 1};
  int64_t stride[3] = {1, 1, 1};
  int64_t pad[3] = {0, 0, 0};  // before; the far side is implied by `out`
  int64_t dil[3] = {1, 1, 1};
  int threads = 1;
};

// Forward: y = conv(x, weight) + bias, activation.
template <class T>
struct ConvForward {
  ConvNdArgs<T> g;
  const T* x = nullptr;
  const T* weight = nullptr;  // (c_out, c_in / groups, kd, kh, kw)
  const T* bias = nullptr;
  T* y = nullptr;
  Activation act = Activation::none;
  const T* winograd_filters = nullptr;  // see Conv2dArgs::winograd_filters
};

// Backward: any of grad_x, grad_w, grad_b may be null (not wanted).
template <class T>
struct ConvBackward {
  ConvNdArgs<T> g;
  const T* grad_y = nullptr;
  const T* x = nullptr;       // needed for grad_w
  const T* weight = nullptr;  // needed for grad_x
  T* grad_x = nullptr;
  T* grad_w = nullptr;
  T* grad_b = nullptr;
  // The weight gradient's kernel family where it is not the call's (conv_backward's `algo`):
  // 'winograd' for a Winograd-shaped float32 convolution, whatever runs the data gradient.
  ConvAlgo weight_algo = ConvAlgo::direct;
};

// Pooling over up to three spatial dimensions of `planes` = N * C independent
// planes (1-D and 2-D set the leading ones to 1). Windows are clipped to the
// input; the output sizes (ceil_mode included) are the caller's.
struct PoolArgs {
  int64_t planes = 0;
  int64_t in[3] = {1, 1, 1};
  int64_t out[3] = {1, 1, 1};
  int64_t kernel[3] = {1, 1, 1};
  int64_t stride[3] = {1, 1, 1};
  int64_t pad[3] = {0, 0, 0};
  int64_t dil[3] = {1, 1, 1};
  bool count_include_pad = true;  // average pooling's divisor
  int64_t divisor_override = 0;   // > 0 replaces the divisor
  int threads = 1;

  int64_t in_volume() const { return in[0] * in[1] * in[2]; }
  int64_t out_volume() const { return out[0] * out[1] * out[2]; }
};

// One torch.optim.SGD step: weight decay, momentum (with dampening, Nesterov), maximize;
// `first`: the momentum buffer starts as the gradient.
struct SgdArgs {
  double lr = 0, momentum = 0, dampening = 0, weight_decay = 0;
  bool nesterov = false, maximize = false, first = false;
};

// BatchNorm over x laid out (n, c, s): statistics per channel c over n * s values.
struct BatchNormArgs {
  int64_t n = 0, c = 0, s = 1;
  double eps = 1e-5, momentum = 0.1;
  int threads = 1;
};

enum class EltwiseKind : int { relu = 0, relu6 = 1, leaky_relu = 2, sigmoid = 3, tanh = 4, gelu = 5, gelu_tanh = 6 };

}  // namespace fastconv
