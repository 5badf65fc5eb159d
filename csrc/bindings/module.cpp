// fastconv._core: module set-up, machine facts and the Backend object. The ops
// are bound in the other files of this folder (common.h has their shared checks);
// every kernel call releases the GIL.
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "bindings/common.h"
#include "core/buffer.h"
#include "core/cpu.h"

using namespace fastconv;

namespace {

Backend make_backend(const std::string& name) {
  Isa isa;
  if (!parse_isa(name, &isa)) throw py::value_error("unknown ISA '" + name + "'; expected avx512, avx2 or scalar");
  if (!isa_supported(isa))
    throw py::value_error("this CPU cannot run the '" + name + "' kernels (best: " + isa_name(detected_isa()) + ")");
  return Backend{isa, kernel_table(isa)};
}

// An uninitialised array whose memory comes from fastconv's block cache (see
// core/buffer.h) and returns there when numpy frees the array. Small arrays are
// numpy's own.
py::array cached_empty(const std::vector<py::ssize_t>& shape, const py::object& dtype_like) {
  const py::dtype dt = py::dtype::from_args(dtype_like);
  int64_t bytes = dt.itemsize();
  for (py::ssize_t d : shape) {
    if (d < 0) throw py::value_error("negative dimensions are not allowed");
    bytes = checked_mul(bytes, d);
  }
  if (block_bytes(bytes) < kCacheMinBytes) {
    py::array a(dt, shape);
    if (fill_poison()) std::memset(a.mutable_data(), 0xFF, static_cast<size_t>(bytes));
    return a;
  }
  struct Owner {
    void* p;
    int64_t bytes;
  };
  auto* owner = new Owner{cache_alloc(bytes), bytes};
  py::capsule base(owner, [](void* o) {
    auto* own = static_cast<Owner*>(o);
    cache_free(own->p, own->bytes);
    delete own;
  });
  return py::array(dt, shape, owner->p, base);
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

  BackendClass cls(m, "Backend");
  cls.def_property_readonly("isa", [](const Backend& b) { return std::string(isa_name(b.isa)); })
      .def("__repr__", [](const Backend& b) { return "<fastconv._core.Backend isa='" + std::string(isa_name(b.isa)) + "'>"; });
  register_linalg_conv(cls);
  register_pool(cls);
  register_norm_eltwise(cls);

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
  // (pybind11 raises std::invalid_argument as ValueError.)
  m.def("set_num_threads", &set_num_threads, py::arg("n"));
  m.def("parallel_copy", [](py::array src, py::array dst) {
    if (!(src.flags() & py::array::c_style) || !(dst.flags() & py::array::c_style))
      throw py::value_error("parallel_copy: src and dst must be C-contiguous");
    if (!dst.writeable()) throw py::value_error("parallel_copy: dst is read-only");
    if (src.nbytes() != dst.nbytes())
      throw py::value_error("parallel_copy: src has " + std::to_string(src.nbytes()) + " bytes, dst " +
                            std::to_string(dst.nbytes()));
    const void* s = src.data();
    void* d = dst.mutable_data();
    const auto n = static_cast<std::size_t>(src.nbytes());
    py::gil_scoped_release release;
    parallel_copy(d, s, n);
  }, py::arg("src"), py::arg("dst"), "Copies src's bytes into dst on fastconv's threads (the copy-bandwidth probe).");
  m.def("empty", &cached_empty, py::arg("shape"), py::arg("dtype"),
        "An uninitialised C-contiguous array; large ones are backed by fastconv's block cache.");
  m.def("cache_stats", [] {
    const CacheStats s = cache_stats();
    return py::dict(py::arg("cache_limit") = s.limit, py::arg("cached_bytes") = s.cached_bytes,
                    py::arg("cached_blocks") = s.cached_blocks, py::arg("hits") = s.hits, py::arg("misses") = s.misses);
  });
  m.def("set_cache_limit", &set_cache_limit, py::arg("nbytes"));
  m.def("empty_cache", &empty_cache);
  m.def("default_cache_limit", &default_cache_limit);
  m.def("set_fill_poison", &set_fill_poison, py::arg("on"),
        "Testing aid: fill every array and scratch block fastconv allocates with 0xFF bytes (NaN).");
  m.attr("CACHE_MIN_BYTES") = kCacheMinBytes;
  m.attr("ACTIVATIONS") = py::dict(py::arg("none") = 0, py::arg("relu") = 1, py::arg("relu6") = 2);
  m.attr("ALGORITHMS") = py::dict(py::arg("direct") = 0, py::arg("im2col") = 1, py::arg("pointwise") = 2,
                                  py::arg("depthwise") = 3, py::arg("winograd") = 4);
}
