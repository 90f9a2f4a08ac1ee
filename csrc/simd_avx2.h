// 16-lane vector operations on two ymm registers, for x86_kernels.h (AVX2 + FMA + F16C).
// Include only from a translation unit compiled with the AVX2 flags.
#pragma once
#include <immintrin.h>

#include <cstdint>
#include <cstring>

namespace nybble {
namespace {  // internal linkage: see thread_pool.h

struct V256x2 {
  struct F {
    __m256 a, b;
  };
  struct I {
    __m256i a, b;
  };
  static constexpr int kGemmMR = 3;
  static constexpr int kGemvNB = 2;

  static F fzero() { return {_mm256_setzero_ps(), _mm256_setzero_ps()}; }
  static F fset1(float v) { const __m256 s = _mm256_set1_ps(v); return {s, s}; }
  static F fmadd(F x, F y, F z) { return {_mm256_fmadd_ps(x.a, y.a, z.a), _mm256_fmadd_ps(x.b, y.b, z.b)}; }
  static F fnmadd(F x, F y, F z) { return {_mm256_fnmadd_ps(x.a, y.a, z.a), _mm256_fnmadd_ps(x.b, y.b, z.b)}; }
  static F fmsub(F x, F y, F z) { return {_mm256_fmsub_ps(x.a, y.a, z.a), _mm256_fmsub_ps(x.b, y.b, z.b)}; }
  static F fmul(F x, F y) { return {_mm256_mul_ps(x.a, y.a), _mm256_mul_ps(x.b, y.b)}; }
  static F fadd(F x, F y) { return {_mm256_add_ps(x.a, y.a), _mm256_add_ps(x.b, y.b)}; }
  static F fload(const float* p) { return {_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)}; }
  static void fstore_full(float* p, F v) { _mm256_storeu_ps(p, v.a); _mm256_storeu_ps(p + 8, v.b); }
  static F fload_part(const float* p, int n) {
    if (n >= 16) return fload(p);
    alignas(32) float t[16] = {};
    std::memcpy(t, p, sizeof(float) * n);
    return fload(t);
  }
  static void fstore_part(float* p, F v, int n) {
    if (n >= 16) return fstore_full(p, v);
    alignas(32) float t[16];
    fstore_full(t, v);
    std::memcpy(p, t, sizeof(float) * n);
  }

  static I iload(const void* p) {
    const __m256i* q = static_cast<const __m256i*>(p);
    return {_mm256_loadu_si256(q), _mm256_loadu_si256(q + 1)};
  }
  static I iset1(int32_t v) { const __m256i s = _mm256_set1_epi32(v); return {s, s}; }
  static I izero() { return {_mm256_setzero_si256(), _mm256_setzero_si256()}; }
  template <int S>
  static I srli(I v) { return S == 0 ? v : I{_mm256_srli_epi32(v.a, S), _mm256_srli_epi32(v.b, S)}; }
  static I iand(I x, I y) { return {_mm256_and_si256(x.a, y.a), _mm256_and_si256(x.b, y.b)}; }
  static I iadd(I x, I y) { return {_mm256_add_epi32(x.a, y.a), _mm256_add_epi32(x.b, y.b)}; }
  static I isub(I x, I y) { return {_mm256_sub_epi32(x.a, y.a), _mm256_sub_epi32(x.b, y.b)}; }
  static I imullo(I x, I y) { return {_mm256_mullo_epi32(x.a, y.a), _mm256_mullo_epi32(x.b, y.b)}; }
  static F cvt(I v) { return {_mm256_cvtepi32_ps(v.a), _mm256_cvtepi32_ps(v.b)}; }
  static I i32load(const int32_t* p) { return iload(p); }
  static I zp_load(const int8_t* p) {
    return {_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))),
            _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + 8)))};
  }
  static F scale_load(const void* base, int64_t idx, int kind) {
    if (kind == 0) return fload(static_cast<const float*>(base) + idx);
    const __m128i* h = reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(base) + idx);
    const __m128i lo = _mm_loadu_si128(h), hi = _mm_loadu_si128(h + 1);
    if (kind == 2) return {_mm256_cvtph_ps(lo), _mm256_cvtph_ps(hi)};
    return {_mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(lo), 16)),
            _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(hi), 16))};
  }

  struct Lut {
    __m256i offset;
  };
  static Lut make_lut(int offset) { return {_mm256_set1_epi32(offset)}; }
  template <int S>
  static F code(I raw, const Lut& l) {
    const __m256i m = _mm256_set1_epi32(0xf);
    const I s = srli<S>(raw);
    return {_mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_and_si256(s.a, m), l.offset)),
            _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_and_si256(s.b, m), l.offset))};
  }
  static I dot(I acc, I u8, I s8) {
    const __m256i one = _mm256_set1_epi16(1);
    return {_mm256_add_epi32(acc.a, _mm256_madd_epi16(_mm256_maddubs_epi16(u8.a, s8.a), one)),
            _mm256_add_epi32(acc.b, _mm256_madd_epi16(_mm256_maddubs_epi16(u8.b, s8.b), one))};
  }
  static void prefetch(const void* p) { _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T0); }
};

}  // namespace
}  // namespace nybble
