// The C entry points of nybble._C for the optional torch dispatcher shim (nybble.kernels.cpu_shim):
// the one definition of their ABI, included by csrc/module.cpp (which fills it) and spliced into the
// shim's run-time source by nybble/kernels/cpu_shim_src.py (which calls it). Plain C types only.
// Bump NYBBLE_KERNEL_API_VERSION with any change: the shim refuses a different version or size.
#ifndef NYBBLE_CPU_KERNEL_API_H
#define NYBBLE_CPU_KERNEL_API_H
#include <cstdint>

#define NYBBLE_KERNEL_API_VERSION 1

struct KernelApi {
  int version;  // NYBBLE_KERNEL_API_VERSION
  int size;     // sizeof(KernelApi)
  int (*a16w4)(const char* isa, uintptr_t x, int x_kind, int64_t m, int64_t ldx, uintptr_t qw, uintptr_t scale,
               int scale_kind, uintptr_t zp, int64_t n, int64_t k, int64_t gl, uintptr_t bias, uintptr_t y,
               int y_kind, int64_t ldy, int nthreads, char* err, int errlen);
  int (*a8w4)(const char* isa, uintptr_t x, int x_kind, int64_t m, int64_t ldx, uintptr_t qw, uintptr_t scale,
              int scale_kind, uintptr_t zp, uintptr_t wcomp, int64_t n, int64_t k, int64_t gl, int asym,
              uintptr_t bias, uintptr_t y, int y_kind, int64_t ldy, int nthreads, char* err, int errlen);
  int (*decode_attention)(const char* isa, uintptr_t q, int64_t q_head, uintptr_t k, int64_t k_head, int64_t k_pos,
                          uintptr_t v, int64_t v_head, int64_t v_pos, uintptr_t mask, int mask_kind, uintptr_t out,
                          int64_t o_head, int kind, int64_t h, int64_t hkv, int64_t l, int64_t d, double scale,
                          int nthreads, char* err, int errlen);
};

#endif  // NYBBLE_CPU_KERNEL_API_H
