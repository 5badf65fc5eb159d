#include "core/dispatch.h"

#include <stdexcept>
#include <string>

namespace fastconv {

const KernelTable* kernel_table(Isa isa) {
  switch (isa) {
    case Isa::avx512: return kernel_table_avx512();
    case Isa::avx2: return kernel_table_avx2();
    default: return kernel_table_scalar();
  }
}

Isa resolve_isa_request(const std::string& requested, Isa detected) {
  if (requested.empty()) return detected;
  Isa want;
  if (!parse_isa(requested, &want))
    throw std::runtime_error("FASTCONV_ISA='" + requested +
                             "' is not one of 'avx512', 'avx2', 'scalar'");
  if (static_cast<int>(want) > static_cast<int>(detected))
    throw std::runtime_error("FASTCONV_ISA='" + requested + "' was requested but this CPU supports at most '" +
                             std::string(isa_name(detected)) + "'; unset FASTCONV_ISA or choose a lower path");
  return want;
}

}  // namespace fastconv
