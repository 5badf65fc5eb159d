// Pooling bindings: max / avg / adaptive, 1-3 spatial dimensions, forward and backward.
#include "bindings/common.h"

namespace fastconv {
namespace {

enum class PoolMode { max, avg, adaptive_max, adaptive_avg };

PoolMode to_mode(const std::string& m) {
  if (m == "max") return PoolMode::max;
  if (m == "avg") return PoolMode::avg;
  if (m == "adaptive_max") return PoolMode::adaptive_max;
  if (m == "adaptive_avg") return PoolMode::adaptive_avg;
  throw py::value_error("unknown pooling mode '" + m + "'");
}

PoolArgs pool_geometry(const py::array& input_like, const py::array& output_like, Triple kernel, Triple stride,
                       Triple pad, Triple dil, bool count_include_pad, int64_t divisor_override) {
  const py::ssize_t nd = input_like.ndim();
  if (nd < 3 || nd > 5 || output_like.ndim() != nd) throw py::value_error("input and output must both be 3-, 4- or 5-D");
  if (output_like.shape(0) != input_like.shape(0) || output_like.shape(1) != input_like.shape(1))
    throw py::value_error("input and output must have the same N and C");
  PoolArgs a;
  a.planes = input_like.shape(0) * input_like.shape(1);
  spatial_dims(input_like, a.in);
  spatial_dims(output_like, a.out);
  for (int d = 0; d < 3; ++d) {
    a.kernel[d] = kernel[d];
    a.stride[d] = stride[d];
    a.pad[d] = pad[d];
    a.dil[d] = dil[d];
    if (a.kernel[d] < 1 || a.stride[d] < 1 || a.dil[d] < 1 || a.pad[d] < 0)
      throw py::value_error("kernel, stride and dilation must be >= 1 and padding >= 0");
  }
  a.count_include_pad = count_include_pad;
  a.divisor_override = divisor_override;
  a.threads = get_num_threads();
  return a;
}

void pool_forward(const Backend& be, const std::string& mode, const py::array& x, py::array& out,
                  const py::object& indices, Triple kernel, Triple stride, Triple pad, Triple dil,
                  bool count_include_pad, int64_t divisor_override) {
  const PoolMode m = to_mode(mode);
  dispatch_float(x, "input", [&](auto tag) {
    using T = decltype(tag);
    const PoolArgs a = pool_geometry(x, out, kernel, stride, pad, dil, count_include_pad, divisor_override);
    const T* xp = in_ptr<T>(x, "input");
    T* yp = out_ptr<T>(out, "out");
    int64_t* ip = nullptr;
    if (!indices.is_none()) {
      auto arr = py::reinterpret_borrow<py::array>(indices);
      ip = out_ptr<int64_t>(arr, "indices", numel(out));
    }
    if (a.in_volume() == 0 && a.out_volume() > 0) throw py::value_error("cannot pool an empty input");
    py::gil_scoped_release release;
    const KernelSet<T>& k = be.table->of<T>();
    switch (m) {
      case PoolMode::max: k.max_pool_forward(a, xp, yp, ip); break;
      case PoolMode::avg: k.avg_pool_forward(a, xp, yp); break;
      case PoolMode::adaptive_max: k.adaptive_pool_forward(a, true, xp, yp, ip); break;
      case PoolMode::adaptive_avg: k.adaptive_pool_forward(a, false, xp, yp, nullptr); break;
    }
  });
}

void pool_backward(const Backend& be, const std::string& mode, const py::array& grad_y, const py::object& indices,
                   py::array& grad_x, Triple kernel, Triple stride, Triple pad, Triple dil, bool count_include_pad,
                   int64_t divisor_override) {
  const PoolMode m = to_mode(mode);
  dispatch_float(grad_y, "grad_output", [&](auto tag) {
    using T = decltype(tag);
    const PoolArgs a = pool_geometry(grad_x, grad_y, kernel, stride, pad, dil, count_include_pad, divisor_override);
    const T* gy = in_ptr<T>(grad_y, "grad_output");
    T* gx = out_ptr<T>(grad_x, "grad_input");
    const KernelSet<T>& k = be.table->of<T>();
    if (m == PoolMode::max || m == PoolMode::adaptive_max) {
      if (indices.is_none()) throw py::value_error("max pooling's backward needs the indices");
      const int64_t* ip = in_ptr<int64_t>(py::reinterpret_borrow<py::array>(indices), "indices", numel(grad_y));
      bool ok;
      {
        py::gil_scoped_release release;
        ok = k.max_pool_backward(a, gy, ip, gx);
      }
      if (!ok) throw py::value_error("indices holds a position outside its input plane");
      return;
    }
    py::gil_scoped_release release;
    if (m == PoolMode::avg)
      k.avg_pool_backward(a, gy, gx);
    else
      k.adaptive_avg_pool_backward(a, gy, gx);
  });
}

}  // namespace

void register_pool(BackendClass& cls) {
  cls.def("pool_forward", &pool_forward, py::arg("mode"), py::arg("x"), py::arg("out"), py::arg("indices"),
          py::arg("kernel"), py::arg("stride"), py::arg("padding"), py::arg("dilation"),
          py::arg("count_include_pad"), py::arg("divisor_override"));
  cls.def("pool_backward", &pool_backward, py::arg("mode"), py::arg("grad_output"), py::arg("indices"),
          py::arg("grad_input"), py::arg("kernel"), py::arg("stride"), py::arg("padding"), py::arg("dilation"),
          py::arg("count_include_pad"), py::arg("divisor_override"));
}

}  // namespace fastconv
