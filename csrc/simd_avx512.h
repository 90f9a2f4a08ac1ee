// 16-lane vector operations on one zmm register, for x86_kernels.h (AVX512F/BW/VL/DQ, optional VNNI).
// Include only from a translation unit compiled with the AVX512 flags.
#pragma once
#include <immintrin.h>

#include <cstdint>
#include <cstring>

namespace nybble {
namespace {  // internal linkage: see thread_pool.h

template <bool kVnni>
struct V512 {
  using F = __m512;
  using I = __m512i;
  static constexpr int kGemmMR = 6;  // rows of the register-blocked GEMM microkernels
  static constexpr int kGemvNB = 4;  // 16-column blocks per GEMV tile for 1-2 rows
  // all-lanes mask: the maskz_ forms avoid GCC 12's false -Wmaybe-uninitialized on the plain
  // intrinsics (whose pass-through operand is _mm512_undefined_*); same instructions
  static constexpr __mmask16 kAll = 0xffff;

  static F fzero() { return _mm512_setzero_ps(); }
  static F fset1(float v) { return _mm512_set1_ps(v); }
  static F fmadd(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
  static F fnmadd(F a, F b, F c) { return _mm512_fnmadd_ps(a, b, c); }
  static F fmsub(F a, F b, F c) { return _mm512_fmsub_ps(a, b, c); }
  static F fmul(F a, F b) { return _mm512_mul_ps(a, b); }
  static F fadd(F a, F b) { return _mm512_add_ps(a, b); }
  static F fload(const float* p) { return _mm512_loadu_ps(p); }
  static void fstore_full(float* p, F v) { _mm512_storeu_ps(p, v); }
  static __mmask16 mask(int n) { return n >= 16 ? __mmask16(0xffff) : __mmask16((1u << n) - 1); }
  static F fload_part(const float* p, int n) { return _mm512_maskz_loadu_ps(mask(n), p); }
  static void fstore_part(float* p, F v, int n) { _mm512_mask_storeu_ps(p, mask(n), v); }

  static I iload(const void* p) { return _mm512_loadu_si512(p); }
  static I iset1(int32_t v) { return _mm512_set1_epi32(v); }
  static I izero() { return _mm512_setzero_si512(); }
  template <int S>
  static I srli(I v) { return S == 0 ? v : _mm512_maskz_srli_epi32(kAll, v, S); }
  static I iand(I a, I b) { return _mm512_and_si512(a, b); }
  static I iadd(I a, I b) { return _mm512_add_epi32(a, b); }
  static I isub(I a, I b) { return _mm512_sub_epi32(a, b); }
  static I imullo(I a, I b) { return _mm512_mullo_epi32(a, b); }
  static F cvt(I v) { return _mm512_maskz_cvtepi32_ps(kAll, v); }
  static I i32load(const int32_t* p) { return _mm512_loadu_si512(p); }
  static I zp_load(const int8_t* p) { return _mm512_maskz_cvtepi8_epi32(kAll, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }

  // 16 scales (f32 / bf16 / f16 bits) -> fp32
  static F scale_load(const void* base, int64_t idx, int kind) {
    if (kind == 1) {
      const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(base) + idx));
      return _mm512_castsi512_ps(_mm512_maskz_slli_epi32(kAll, _mm512_maskz_cvtepu16_epi32(kAll, h), 16));
    }
    if (kind == 2) {
      const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(base) + idx));
      return _mm512_maskz_cvtph_ps(kAll, h);
    }
    return _mm512_loadu_ps(static_cast<const float*>(base) + idx);
  }

  // Code lookup: the low 4 bits of each lane select an entry of a 16-float table (q or q - 8).
  struct Lut {
    F table;
  };
  static Lut make_lut(int offset) {
    alignas(64) float t[16];
    for (int i = 0; i < 16; ++i) t[i] = static_cast<float>(i - offset);
    return {_mm512_load_ps(t)};
  }
  template <int S>
  static F code(I raw, const Lut& l) { return _mm512_maskz_permutexvar_ps(kAll, srli<S>(raw), l.table); }

  // acc += per-lane sum of 4 products u8 x s8 (vpdpbusd, or its AVX512BW emulation; no saturation
  // can occur because one operand is a 4-bit code).
  static I dot(I acc, I u8, I s8) {
    if constexpr (kVnni) {
      return _mm512_dpbusd_epi32(acc, u8, s8);
    } else {
      const __m512i p16 = _mm512_maddubs_epi16(u8, s8);
      return _mm512_add_epi32(acc, _mm512_madd_epi16(p16, _mm512_set1_epi16(1)));
    }
  }
  static void prefetch(const void* p) { _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T0); }
};

}  // namespace
}  // namespace nybble
