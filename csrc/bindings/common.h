// Shared by the binding files: the Backend object, dtype dispatch and buffer
// checks. fastconv.ops validates every argument first; these checks are the last
// line of defence that keeps a kernel from reading or writing out of bounds.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <cstdint>
#include <string>

#include "core/dispatch.h"
#include "core/threading.h"

namespace fastconv {
namespace py = pybind11;

// A set of kernels for one ISA. Python holds the default one (chosen at import)
// and may ask for others, e.g. to test every path in one process.
struct Backend {
  Isa isa;
  const KernelTable* table;
};

using BackendClass = py::class_<Backend>;
using Triple = std::array<int64_t, 3>;

// Calls fn(T()) with T = float or double, the dtype of `a`; TypeError otherwise.
template <class F>
auto dispatch_float(const py::array& a, const char* name, F&& fn) {
  if (a.dtype().is(py::dtype::of<float>())) return fn(float());
  if (a.dtype().is(py::dtype::of<double>())) return fn(double());
  throw py::type_error(std::string(name) + " must be float32 or float64, got " + std::string(py::str(a.dtype())));
}

// The spatial sizes of an (N, C, *spatial) array with 1 to 3 spatial axes,
// right-aligned into dims (leading entries are left as they are, i.e. 1).
inline void spatial_dims(const py::array& a, int64_t (&dims)[3]) {
  const int lead = static_cast<int>(5 - a.ndim());
  for (int d = lead; d < 3; ++d) dims[d] = a.shape(d - lead + 2);
}

inline int64_t numel(const py::array& a) {
  int64_t n = 1;
  for (py::ssize_t d = 0; d < a.ndim(); ++d) n *= a.shape(d);
  return n;
}

// Pointer to a C-contiguous array of T with exactly `count` elements (count < 0: any).
template <class T>
const T* in_ptr(const py::array& a, const char* name, int64_t count = -1) {
  if (!a.dtype().is(py::dtype::of<T>()))
    throw py::type_error(std::string(name) + " must have dtype " + std::string(py::str(py::dtype::of<T>())) + ", got " +
                         std::string(py::str(a.dtype())));
  if (!(a.flags() & py::array::c_style)) throw py::value_error(std::string(name) + " must be C-contiguous");
  if (count >= 0 && numel(a) != count)
    throw py::value_error(std::string(name) + " has " + std::to_string(numel(a)) + " elements, expected " +
                          std::to_string(count));
  return static_cast<const T*>(a.data());
}

template <class T>
T* out_ptr(py::array& a, const char* name, int64_t count = -1) {
  in_ptr<T>(a, name, count);
  if (!a.writeable()) throw py::value_error(std::string(name) + " must be writeable");
  return static_cast<T*>(a.mutable_data());
}

// Optional array argument (None -> null).
template <class T>
const T* opt_in_ptr(const py::object& o, const char* name, int64_t count) {
  if (o.is_none()) return nullptr;
  return in_ptr<T>(py::reinterpret_borrow<py::array>(o), name, count);
}
template <class T>
T* opt_out_ptr(const py::object& o, const char* name, int64_t count) {
  if (o.is_none()) return nullptr;
  auto a = py::reinterpret_borrow<py::array>(o);
  return out_ptr<T>(a, name, count);
}

inline Activation to_activation(int act) {
  if (act < 0 || act > 2) throw py::value_error("activation code must be 0 (none), 1 (relu) or 2 (relu6)");
  return static_cast<Activation>(act);
}

void register_linalg_conv(BackendClass& cls);
void register_pool(BackendClass& cls);
void register_norm_eltwise(BackendClass& cls);

}  // namespace fastconv
