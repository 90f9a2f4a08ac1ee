// AVX2 + FMA + F16C path; compiled with those flags only, run only when CPUID reports them.
#include "simd_avx2.h"
#include "x86_kernels.h"

namespace nybble {
IsaKernels kernels_avx2() { return X86Kernels<V256x2>::table(); }
}  // namespace nybble
