// CPU feature detection (CPUID + XGETBV) for runtime ISA dispatch.
#pragma once
#include <string>

namespace nybble {

struct CpuFeatures {
  bool avx2 = false;
  bool fma = false;
  bool f16c = false;
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512vl = false;
  bool avx512dq = false;
  bool avx512_vnni = false;
  bool avx512_bf16 = false;
  bool amx_tile = false;
};

// Detected once; OS support for the AVX/AVX-512 register state is checked with XGETBV.
const CpuFeatures& cpu_features();

}  // namespace nybble
