// AVX512-VNNI path (vpdpbusd for A8W4); compiled with those flags only, run only when CPUID reports them.
#include "simd_avx512.h"
#include "x86_kernels.h"

namespace nybble {
IsaKernels kernels_avx512_vnni() { return X86Kernels<V512<true>>::table(); }
}  // namespace nybble
