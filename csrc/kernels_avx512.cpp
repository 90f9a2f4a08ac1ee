// AVX512 (F/BW/VL/DQ) path; compiled with those flags only, run only when CPUID reports them.
#include "simd_avx512.h"
#include "x86_kernels.h"

namespace nybble {
IsaKernels kernels_avx512() { return X86Kernels<V512<false>>::table(); }
}  // namespace nybble
