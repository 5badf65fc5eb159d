// The dispatch table: one KernelTable per ISA, each built from the same kernel
// sources compiled with that ISA's flags (see CMakeLists.txt), with one
// KernelSet per element type.
#pragma once
#include <string>

#include "core/cpu.h"
#include "core/params.h"

namespace fastconv {

template <class T>
struct KernelSet {
  void (*gemm)(const GemmArgsT<T>&);
  void (*conv_forward)(const ConvForward<T>&, ConvAlgo);
  void (*conv_backward)(const ConvBackward<T>&, ConvAlgo);
  int64_t (*conv_winograd_filters)(const ConvForward<T>&, T*);
  void (*max_pool_forward)(const PoolArgs&, const T*, T*, int64_t*);
  bool (*max_pool_backward)(const PoolArgs&, const T*, const int64_t*, T*);
  void (*avg_pool_forward)(const PoolArgs&, const T*, T*);
  void (*avg_pool_backward)(const PoolArgs&, const T*, T*);
  void (*adaptive_pool_forward)(const PoolArgs&, bool, const T*, T*, int64_t*);
  void (*adaptive_avg_pool_backward)(const PoolArgs&, const T*, T*);
  void (*batch_norm_forward)(const BatchNormArgs&, bool, const T*, const T*, const T*, T*, T*, T*, T*, T*,
                             Activation);
  void (*batch_norm_backward)(const BatchNormArgs&, bool, const T*, const T*, const T*, const T*, const T*, T*, T*,
                              T*, Activation, const T*);
  void (*activation_forward)(EltwiseKind, int64_t, const T*, T*, double, int);
  void (*activation_backward)(EltwiseKind, int64_t, const T*, const T*, T*, double, int);
  void (*softmax_forward)(int64_t, int64_t, int64_t, const T*, T*, bool, int);
  void (*softmax_backward)(int64_t, int64_t, int64_t, const T*, const T*, T*, bool, int);
  bool (*cross_entropy_forward)(int64_t, int64_t, int64_t, const T*, const int64_t*, T*, int64_t, double, int);
  void (*cross_entropy_backward)(int64_t, int64_t, int64_t, const T*, const int64_t*, const T*, T*, int64_t, double,
                                 int);
  void (*dropout_forward)(int64_t, const T*, T*, uint8_t*, double, uint64_t, int);
  void (*dropout_backward)(int64_t, const T*, const uint8_t*, T*, double, int);
  void (*add)(int64_t, const T*, const T*, T*, int);
  void (*sgd_step)(int64_t, T*, const T*, T*, const SgdArgs&, int);
};

struct KernelTable {
  const char* isa;
  KernelSet<float> f32;
  KernelSet<double> f64;

  template <class T>
  const KernelSet<T>& of() const {
    if constexpr (sizeof(T) == sizeof(float)) return f32;
    else return f64;
  }
};

const KernelTable* kernel_table_scalar();
const KernelTable* kernel_table_avx2();
const KernelTable* kernel_table_avx512();

// Table for an ISA; the caller checks isa_supported() first.
const KernelTable* kernel_table(Isa isa);

// Resolves a FASTCONV_ISA request ("" = best detected) against what the CPU supports.
// Throws std::runtime_error with a message naming the request and the detected ISA.
Isa resolve_isa_request(const std::string& requested, Isa detected);

}  // namespace fastconv
