// fastconv._core: the only file that knows about Python. Buffer checks here are
// a last line of defence (fastconv.ops validates first); every kernel call
// releases the GIL.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdlib>
#include <stdexcept>
#include <string>

#include "core/cpu.h"
#include "core/dispatch.h"
#include "core/threading.h"

namespace py = pybind11;
using namespace fastconv;

namespace {

// A set of kernels for one ISA. Python holds the default one (chosen at import)
// and may ask for others, e.g. to test every path in one process.
struct Backend {
  Isa isa;
  const KernelTable* table;
};

void require_float32(const py::array& a, const char* name) {
  if (!a.dtype().is(py::dtype::of<float>()))
    throw py::type_error(std::string(name) + " must be float32, got " + std::string(py::str(a.dtype())));
}

const float* cdata(const py::array& a, const char* name, py::ssize_t ndim) {
  require_float32(a, name);
  if (a.ndim() != ndim)
    throw py::value_error(std::string(name) + " must have " + std::to_string(ndim) + " dimensions");
  if (!(a.flags() & py::array::c_style)) throw py::value_error(std::string(name) + " must be C-contiguous");
  return static_cast<const float*>(a.data());
}

float* mdata(py::array& a, const char* name, py::ssize_t ndim) {
  cdata(a, name, ndim);
  if (!a.writeable()) throw py::value_error(std::string(name) + " must be writeable");
  return static_cast<float*>(a.mutable_data());
}

int64_t elem_stride(const py::array& a, int axis, const char* name) {
  const auto s = a.strides(axis);
  if (s % static_cast<py::ssize_t>(sizeof(float)) != 0)
    throw py::value_error(std::string(name) + " has strides that are not a multiple of 4 bytes");
  return s / static_cast<py::ssize_t>(sizeof(float));
}

Activation to_activation(int act) {
  if (act < 0 || act > 2) throw py::value_error("activation code must be 0 (none), 1 (relu) or 2 (relu6)");
  return static_cast<Activation>(act);
}

void gemm(const Backend& be, const py::array& a, const py::array& b, py::array& out, const py::object& bias,
          int bias_mode, int act) {
  require_float32(a, "a");
  require_float32(b, "b");
  if (a.ndim() != 2 || b.ndim() != 2) throw py::value_error("a and b must be 2-D");
  GemmArgs g;
  g.m = a.shape(0);
  g.k = a.shape(1);
  g.n = b.shape(1);
  if (b.shape(0) != g.k) throw py::value_error("a and b have incompatible shapes");
  g.a = static_cast<const float*>(a.data());
  g.a_rs = elem_stride(a, 0, "a");
  g.a_cs = elem_stride(a, 1, "a");
  g.b = static_cast<const float*>(b.data());
  g.b_rs = elem_stride(b, 0, "b");
  g.b_cs = elem_stride(b, 1, "b");
  g.c = mdata(out, "out", 2);
  if (out.shape(0) != g.m || out.shape(1) != g.n) throw py::value_error("out has the wrong shape");
  g.ldc = g.n;
  g.epi.act = to_activation(act);
  if (bias_mode < 0 || bias_mode > 2) throw py::value_error("bias_mode must be 0, 1 or 2");
  g.epi.bias_mode = static_cast<BiasMode>(bias_mode);
  py::array bias_arr;
  if (g.epi.bias_mode != BiasMode::none) {
    bias_arr = py::reinterpret_borrow<py::array>(bias);
    g.epi.bias = cdata(bias_arr, "bias", 1);
    const int64_t want = g.epi.bias_mode == BiasMode::per_row ? g.m : g.n;
    if (bias_arr.shape(0) != want) throw py::value_error("bias has the wrong length");
  }
  g.threads = get_num_threads();
  py::gil_scoped_release release;
  be.table->sgemm(g);
}

void conv2d(const Backend& be, const py::array& x, const py::array& weight, const py::object& bias, py::array& out,
            std::pair<int64_t, int64_t> stride, std::pair<int64_t, int64_t> pad_tl,
            std::pair<int64_t, int64_t> dilation, int64_t groups, int act, int algo) {
  Conv2dArgs a;
  a.x = cdata(x, "input", 4);
  a.weight = cdata(weight, "weight", 4);
  a.y = mdata(out, "out", 4);
  a.n = x.shape(0);
  a.c_in = x.shape(1);
  a.h = x.shape(2);
  a.w = x.shape(3);
  a.c_out = weight.shape(0);
  a.kh = weight.shape(2);
  a.kw = weight.shape(3);
  a.h_out = out.shape(2);
  a.w_out = out.shape(3);
  std::tie(a.stride_h, a.stride_w) = stride;
  std::tie(a.pad_top, a.pad_left) = pad_tl;
  std::tie(a.dil_h, a.dil_w) = dilation;
  a.groups = groups;
  if (groups < 1 || a.c_in % groups || a.c_out % groups || weight.shape(1) * groups != a.c_in)
    throw py::value_error("groups does not match the input and weight channels");
  if (out.shape(0) != a.n || out.shape(1) != a.c_out) throw py::value_error("out has the wrong shape");
  if (a.stride_h < 1 || a.stride_w < 1 || a.dil_h < 1 || a.dil_w < 1)
    throw py::value_error("stride and dilation must be >= 1");
  if (a.pad_top < 0 || a.pad_left < 0) throw py::value_error("padding must be >= 0");
  if (a.kh < 1 || a.kw < 1) throw py::value_error("kernel size must be >= 1");
  py::array bias_arr;
  if (!bias.is_none()) {
    bias_arr = py::reinterpret_borrow<py::array>(bias);
    a.bias = cdata(bias_arr, "bias", 1);
    if (bias_arr.shape(0) != a.c_out) throw py::value_error("bias must have c_out elements");
  }
  a.act = to_activation(act);
  if (algo < 0 || algo > 3) throw py::value_error("unknown algorithm code");
  const auto conv_algo = static_cast<ConvAlgo>(algo);
  if (conv_algo == ConvAlgo::pointwise &&
      (a.kh != 1 || a.kw != 1 || a.stride_h != 1 || a.stride_w != 1 || a.pad_top || a.pad_left ||
       a.h_out != a.h || a.w_out != a.w))
    throw py::value_error("pointwise needs a 1x1 kernel, stride 1 and no padding");
  if (conv_algo == ConvAlgo::depthwise && a.groups != a.c_in)
    throw py::value_error("depthwise needs groups == input channels");
  if (a.h_out < 1 || a.w_out < 1) return;
  a.threads = get_num_threads();
  py::gil_scoped_release release;
  be.table->conv2d(a, conv_algo);
}

Backend make_backend(const std::string& name) {
  Isa isa;
  if (!parse_isa(name, &isa)) throw py::value_error("unknown ISA '" + name + "'; expected avx512, avx2 or scalar");
  if (!isa_supported(isa))
    throw py::value_error("this CPU cannot run the '" + name + "' kernels (best: " + isa_name(detected_isa()) + ")");
  return Backend{isa, kernel_table(isa)};
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "fastconv's compiled kernels (C++/OpenMP, per-ISA dispatch)";

  Isa active;
  const char* requested = std::getenv("FASTCONV_ISA");
  try {
    active = resolve_isa_request(requested ? requested : "", detected_isa());
  } catch (const std::runtime_error& e) {
    throw py::import_error(std::string("fastconv: ") + e.what());
  }

  py::class_<Backend>(m, "Backend")
      .def_property_readonly("isa", [](const Backend& b) { return std::string(isa_name(b.isa)); })
      .def("gemm", &gemm, py::arg("a"), py::arg("b"), py::arg("out"), py::arg("bias"), py::arg("bias_mode"),
           py::arg("activation"))
      .def("conv2d", &conv2d, py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("out"), py::arg("stride"),
           py::arg("padding"), py::arg("dilation"), py::arg("groups"), py::arg("activation"), py::arg("algo"))
      .def("__repr__", [](const Backend& b) { return "<fastconv._core.Backend isa='" + std::string(isa_name(b.isa)) + "'>"; });

  m.attr("default_backend") = Backend{active, kernel_table(active)};
  m.def("backend", &make_backend, py::arg("isa"), "Kernels for one ISA; ValueError if this CPU cannot run it.");
  m.def("resolve_isa_request", [](const std::string& req, const std::string& detected) {
    Isa det;
    if (!parse_isa(detected, &det)) throw py::value_error("unknown ISA '" + detected + "'");
    try {
      return std::string(isa_name(resolve_isa_request(req, det)));
    } catch (const std::runtime_error& e) {
      throw py::value_error(e.what());
    }
  }, py::arg("requested"), py::arg("detected"), "How a FASTCONV_ISA request resolves on a CPU whose best ISA is `detected`.");
  m.def("detected_isa", [] { return std::string(isa_name(detected_isa())); });
  m.def("supported_isas", [] {
    std::vector<std::string> out;
    for (Isa i : supported_isas()) out.emplace_back(isa_name(i));
    return out;
  });
  m.def("cpu_model", &cpu_model_name);
  m.def("num_cores", &num_cores);
  m.def("get_num_threads", &get_num_threads);
  m.def("set_num_threads", [](int n) {
    try {
      set_num_threads(n);
    } catch (const std::invalid_argument& e) {
      throw py::value_error(e.what());
    }
  }, py::arg("n"));
  m.attr("ACTIVATIONS") = py::dict(py::arg("none") = 0, py::arg("relu") = 1, py::arg("relu6") = 2);
  m.attr("ALGORITHMS") = py::dict(py::arg("direct") = 0, py::arg("im2col") = 1, py::arg("pointwise") = 2,
                                  py::arg("depthwise") = 3);
}
