// Runtime ISA dispatch: names, availability from CPUID, and the kernel table of each path.
#pragma once
#include <string>
#include <vector>

#include "kernels.h"

namespace nybble {

// Paths from lowest to highest: "scalar", "avx2", "avx512", "avx512_vnni", "avx512_bf16".
const std::vector<std::string>& isa_names();
// The paths this CPU can run (CPUID + XGETBV), lowest first.
std::vector<std::string> available_isas();
// The kernel table of a path; throws std::invalid_argument for an unknown name or one this CPU lacks.
IsaKernels isa_kernels(const std::string& name);

}  // namespace nybble
