// The dispatch table: one KernelTable per ISA, each built from the same kernel
// sources compiled with that ISA's flags (see CMakeLists.txt).
#pragma once
#include "core/cpu.h"
#include "core/params.h"

namespace fastconv {

struct KernelTable {
  const char* isa;
  void (*sgemm)(const GemmArgs&);
  void (*conv2d)(const Conv2dArgs&, ConvAlgo);
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
