// CPU feature detection (cpuid + xgetbv, so OS support for the wide registers is checked too).
#pragma once
#include <string>
#include <vector>

namespace fastconv {

enum class Isa : int { scalar = 0, avx2 = 1, avx512 = 2 };

const char* isa_name(Isa isa);
// Parses "scalar" | "avx2" | "avx512"; returns false for anything else.
bool parse_isa(const std::string& name, Isa* out);

// The best ISA this CPU and OS can run (detected once, cached).
Isa detected_isa();
bool isa_supported(Isa isa);
std::vector<Isa> supported_isas();
std::string cpu_model_name();

}  // namespace fastconv
