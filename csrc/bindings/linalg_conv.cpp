// GEMM and convolution (forward and backward) bindings.
#include <stdexcept>
#include <type_traits>

#include "bindings/common.h"

namespace fastconv {
namespace {

int64_t elem_stride(const py::array& a, int axis, size_t itemsize, const char* name) {
  const auto s = a.strides(axis);
  if (s % static_cast<py::ssize_t>(itemsize) != 0)
    throw py::value_error(std::string(name) + " has strides that are not a multiple of its item size");
  return s / static_cast<py::ssize_t>(itemsize);
}

void gemm(const Backend& be, const py::array& a, const py::array& b, py::array& out, const py::object& bias,
          int bias_mode, int act, bool accumulate) {
  dispatch_float(a, "a", [&](auto tag) {
    using T = decltype(tag);
    if (a.ndim() != 2 || b.ndim() != 2 || out.ndim() != 2) throw py::value_error("a, b and out must be 2-D");
    if (!b.dtype().is(py::dtype::of<T>())) throw py::type_error("a and b must have the same dtype");
    GemmArgsT<T> g;
    g.m = a.shape(0);
    g.k = a.shape(1);
    g.n = b.shape(1);
    if (b.shape(0) != g.k) throw py::value_error("a and b have incompatible shapes");
    g.a = static_cast<const T*>(a.data());
    g.a_rs = elem_stride(a, 0, sizeof(T), "a");
    g.a_cs = elem_stride(a, 1, sizeof(T), "a");
    g.b = static_cast<const T*>(b.data());
    g.b_rs = elem_stride(b, 0, sizeof(T), "b");
    g.b_cs = elem_stride(b, 1, sizeof(T), "b");
    g.c = out_ptr<T>(out, "out", g.m * g.n);
    if (out.shape(0) != g.m) throw py::value_error("out has the wrong shape");
    g.ldc = g.n;
    g.accumulate = accumulate;
    g.epi.act = to_activation(act);
    if (bias_mode < 0 || bias_mode > 2) throw py::value_error("bias_mode must be 0, 1 or 2");
    g.epi.bias_mode = static_cast<BiasMode>(bias_mode);
    if (g.epi.bias_mode != BiasMode::none)
      g.epi.bias = in_ptr<T>(py::reinterpret_borrow<py::array>(bias), "bias",
                             g.epi.bias_mode == BiasMode::per_row ? g.m : g.n);
    g.threads = get_num_threads();
    py::gil_scoped_release release;
    be.table->of<T>().gemm(g);
  });
}

// Spatial geometry from the arrays' shapes: (N, C, *spatial) with 1 to 3 spatial
// dimensions, right-aligned into three.
template <class T>
ConvNdArgs<T> conv_geometry(const py::array& input_like, const py::array& weight, const py::array& output_like,
                            Triple stride, Triple pad, Triple dil, int64_t groups) {
  const py::ssize_t nd = input_like.ndim();
  if (nd < 3 || nd > 5 || weight.ndim() != nd || output_like.ndim() != nd)
    throw py::value_error("input, weight and output must all be 3-, 4- or 5-D");
  ConvNdArgs<T> g;
  g.n = input_like.shape(0);
  g.c_in = input_like.shape(1);
  g.c_out = weight.shape(0);
  g.groups = groups;
  spatial_dims(input_like, g.in);
  spatial_dims(output_like, g.out);
  spatial_dims(weight, g.kernel);
  for (int d = 0; d < 3; ++d) {
    g.stride[d] = stride[d];
    g.pad[d] = pad[d];
    g.dil[d] = dil[d];
    if (g.stride[d] < 1 || g.dil[d] < 1) throw py::value_error("stride and dilation must be >= 1");
    if (g.pad[d] < 0) throw py::value_error("padding must be >= 0");
    if (g.kernel[d] < 1) throw py::value_error("kernel size must be >= 1");
  }
  if (groups < 1 || g.c_in % groups || g.c_out % groups || weight.shape(1) * groups != g.c_in)
    throw py::value_error("groups does not match the input and weight channels");
  if (output_like.shape(0) != g.n || output_like.shape(1) != g.c_out) throw py::value_error("output has the wrong shape");
  g.threads = get_num_threads();
  return g;
}

ConvAlgo to_algo(int algo) {
  if (algo < 0 || algo > static_cast<int>(ConvAlgo::winograd)) throw py::value_error("unknown algorithm code");
  return static_cast<ConvAlgo>(algo);
}

template <class T>
void check_algo(const ConvNdArgs<T>& g, ConvAlgo algo) {
  if (algo == ConvAlgo::pointwise) {
    bool ok = true;
    for (int d = 0; d < 3; ++d) ok = ok && g.kernel[d] == 1 && g.stride[d] == 1 && g.pad[d] == 0 && g.out[d] == g.in[d];
    if (!ok) throw py::value_error("pointwise needs a 1x1 kernel, stride 1 and no padding");
  }
  if (algo == ConvAlgo::depthwise && g.groups != g.c_in) throw py::value_error("depthwise needs groups == input channels");
  if (algo == ConvAlgo::winograd) {
    bool ok = g.groups == 1 && g.in[0] == 1 && g.kernel[0] == 1 && g.out[0] == 1;
    for (int d = 1; d < 3; ++d) ok = ok && g.kernel[d] == 3 && g.stride[d] == 1 && g.dil[d] == 1;
    if (!ok) throw py::value_error("winograd needs a 2-D 3x3 kernel, stride 1, dilation 1 and groups 1");
  }
}

template <class T>
int64_t weight_numel(const ConvNdArgs<T>& g) {
  return g.c_out * (g.c_in / g.groups) * g.kernel[0] * g.kernel[1] * g.kernel[2];
}

// The floats of (c_out, c_in, 3, 3) filters transformed for this kernel set's Winograd kernel
// (-1: none, float64).
template <class T>
int64_t winograd_filters_size(const Backend& be, int64_t c_in, int64_t c_out) {
  ConvForward<T> f;
  f.g.c_in = c_in;
  f.g.c_out = c_out;
  return be.table->of<T>().conv_winograd_filters(f, nullptr);
}

// `weight` (c_out, c_in, 3, 3) transformed for the Winograd kernel into `out` (1-D, of
// winograd_filters_size floats; written with streaming stores where it is large and 64-byte aligned).
void conv_winograd_filters(const Backend& be, const py::array& weight, py::array& out) {
  if (weight.ndim() != 4 || weight.shape(2) != 3 || weight.shape(3) != 3)
    throw py::value_error("the Winograd filters need a (C_out, C_in, 3, 3) weight");
  ConvForward<float> f;
  f.g.c_out = weight.shape(0);
  f.g.c_in = weight.shape(1);
  f.g.kernel[1] = f.g.kernel[2] = 3;
  f.g.threads = get_num_threads();
  f.weight = in_ptr<float>(weight, "weight");
  float* u = out_ptr<float>(out, "out", winograd_filters_size<float>(be, f.g.c_in, f.g.c_out));
  if (f.g.c_in == 0 || f.g.c_out == 0) return;
  py::gil_scoped_release release;
  be.table->f32.conv_winograd_filters(f, u);
}

void conv_forward(const Backend& be, const py::array& x, const py::array& weight, const py::object& bias,
                  py::array& out, Triple stride, Triple pad, Triple dil, int64_t groups, int act, int algo,
                  const py::object& winograd_filters) {
  dispatch_float(x, "input", [&](auto tag) {
    using T = decltype(tag);
    ConvForward<T> f;
    f.g = conv_geometry<T>(x, weight, out, stride, pad, dil, groups);
    const ConvAlgo a = to_algo(algo);
    check_algo(f.g, a);
    f.x = in_ptr<T>(x, "input");
    f.weight = in_ptr<T>(weight, "weight", weight_numel(f.g));
    f.bias = opt_in_ptr<T>(bias, "bias", f.g.c_out);
    f.y = out_ptr<T>(out, "out");
    f.act = to_activation(act);
    if (!winograd_filters.is_none()) {
      if (a != ConvAlgo::winograd || !std::is_same_v<T, float>)
        throw py::value_error("winograd_filters go with algo 'winograd' on float32");
      f.winograd_filters = opt_in_ptr<T>(winograd_filters, "winograd_filters",
                                         winograd_filters_size<T>(be, f.g.c_in, f.g.c_out));
    }
    if (numel(out) == 0) return;
    py::gil_scoped_release release;
    be.table->of<T>().conv_forward(f, a);
  });
}

// Gradients of a convolution. The input's shape comes from grad_x when it is
// wanted, else from x; weight is always given (it fixes the kernel size). `algo` runs
// the gradients, except grad_weight, which runs `weight_algo` where that is given (>= 0).
void conv_backward(const Backend& be, const py::array& grad_y, const py::object& x, const py::array& weight,
                   const py::object& grad_x, const py::object& grad_w, const py::object& grad_b, Triple stride,
                   Triple pad, Triple dil, int64_t groups, int algo, int weight_algo) {
  dispatch_float(grad_y, "grad_output", [&](auto tag) {
    using T = decltype(tag);
    const py::object& shape_src = grad_x.is_none() ? x : grad_x;
    if (shape_src.is_none()) throw py::value_error("either x or grad_input must be given");
    const auto input_like = py::reinterpret_borrow<py::array>(shape_src);
    ConvBackward<T> b;
    b.g = conv_geometry<T>(input_like, weight, grad_y, stride, pad, dil, groups);
    const ConvAlgo a = to_algo(algo);
    check_algo(b.g, a);
    b.weight_algo = weight_algo < 0 ? a : to_algo(weight_algo);
    check_algo(b.g, b.weight_algo);
    const int64_t in_numel = numel(input_like);
    b.grad_y = in_ptr<T>(grad_y, "grad_output");
    b.weight = in_ptr<T>(weight, "weight", weight_numel(b.g));
    b.x = opt_in_ptr<T>(x, "input", in_numel);
    b.grad_x = opt_out_ptr<T>(grad_x, "grad_input", in_numel);
    b.grad_w = opt_out_ptr<T>(grad_w, "grad_weight", weight_numel(b.g));
    b.grad_b = opt_out_ptr<T>(grad_b, "grad_bias", b.g.c_out);
    if (b.grad_w && !b.x) throw py::value_error("grad_weight needs the input x");
    py::gil_scoped_release release;
    be.table->of<T>().conv_backward(b, a);
  });
}

}  // namespace

void register_linalg_conv(BackendClass& cls) {
  cls.def("gemm", &gemm, py::arg("a"), py::arg("b"), py::arg("out"), py::arg("bias"), py::arg("bias_mode"),
          py::arg("activation"), py::arg("accumulate") = false);
  cls.def("conv_forward", &conv_forward, py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("out"),
          py::arg("stride"), py::arg("padding"), py::arg("dilation"), py::arg("groups"), py::arg("activation"),
          py::arg("algo"), py::arg("winograd_filters") = py::none());
  cls.def("conv_winograd_filters", &conv_winograd_filters, py::arg("weight"), py::arg("out"));
  cls.def("conv_winograd_filters_size", &winograd_filters_size<float>, py::arg("c_in"), py::arg("c_out"));
  cls.def("conv_backward", &conv_backward, py::arg("grad_output"), py::arg("x"), py::arg("weight"),
          py::arg("grad_input"), py::arg("grad_weight"), py::arg("grad_bias"), py::arg("stride"), py::arg("padding"),
          py::arg("dilation"), py::arg("groups"), py::arg("algo"), py::arg("weight_algo") = -1);
}

}  // namespace fastconv
