// Scalar helpers: the packed layout's scales / codes and fp32 <-> bf16 / f16 conversions (used by
// the scalar path and by the SIMD paths' tails). Everything is static: see thread_pool.h.
#pragma once
#include <cstdint>
#include <cstring>

#include "kernels.h"

namespace nybble {

static inline float bf16_to_f32(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

static inline float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
  if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else {  // subnormal: renormalize
      int e = -1;
      do {
        ++e;
        man <<= 1;
      } while (!(man & 0x400));
      bits = sign | static_cast<uint32_t>(127 - 15 - e) << 23 | (man & 0x3ff) << 13;
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | man << 13;
  } else {
    bits = sign | (exp + 127 - 15) << 23 | man << 13;
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// fp32 -> bf16 bits, round to nearest even; NaN -> quiet NaN (as torch / c10::BFloat16).
static inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

// fp32 -> IEEE half bits, round to nearest even (subnormals, overflow to inf, NaN kept).
static inline uint16_t f32_to_f16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);
  if (a >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to >= 65520: inf
  if (a < 0x38800000u) {  // result subnormal or zero: value = a_float / 2^-24 rounded
    if (a < 0x33000000u) return sign;  // < 2^-25: rounds to 0
    const uint32_t e = a >> 23, m = (a & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - e;  // mantissa bits dropped: (e - 127) + 24 = exponent of 1 ulp
    const uint32_t q = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    const uint32_t r = q + ((rem > half || (rem == half && (q & 1u))) ? 1u : 0u);
    return static_cast<uint16_t>(sign | r);
  }
  const uint32_t r = a + 0xfffu + ((a >> 13) & 1u);  // round mantissa to 10 bits, nearest even
  return static_cast<uint16_t>(sign | (((r >> 23) - 112) << 10 | ((r >> 13) & 0x3ffu)));
}

static inline void to_f32_scalar(const void* src, int kind, float* dst, int64_t count) {
  const uint16_t* h = static_cast<const uint16_t*>(src);
  if (kind == kScaleBF16) {
    for (int64_t i = 0; i < count; ++i) dst[i] = bf16_to_f32(h[i]);
  } else if (kind == kScaleF16) {
    for (int64_t i = 0; i < count; ++i) dst[i] = f16_to_f32(h[i]);
  } else {
    std::memcpy(dst, src, sizeof(float) * count);
  }
}

static inline void from_f32_scalar(const float* src, void* dst, int kind, int64_t count) {
  uint16_t* h = static_cast<uint16_t*>(dst);
  if (kind == kScaleBF16) {
    for (int64_t i = 0; i < count; ++i) h[i] = f32_to_bf16(src[i]);
  } else if (kind == kScaleF16) {
    for (int64_t i = 0; i < count; ++i) h[i] = f32_to_f16(src[i]);
  } else {
    std::memcpy(dst, src, sizeof(float) * count);
  }
}

// Scale of (block b, group g, column c) as fp32.
static inline float packed_scale(const PackedView& w, int64_t b, int64_t g, int c) {
  const int64_t idx = w.meta(b, g) + c;
  switch (w.scale_kind) {
    case kScaleBF16: return bf16_to_f32(static_cast<const uint16_t*>(w.scale)[idx]);
    case kScaleF16: return f16_to_f32(static_cast<const uint16_t*>(w.scale)[idx]);
    default: return static_cast<const float*>(w.scale)[idx];
  }
}

static inline int packed_zero(const PackedView& w, int64_t b, int64_t g, int c) {
  return w.zp ? w.zp[w.meta(b, g) + c] : 8;
}

// Code 0..15 of (input feature kk, column c of block b).
static inline int packed_code(const PackedView& w, int64_t b, int64_t kk, int c) {
  const int64_t chunk = kk >> 3;
  const int r = static_cast<int>(kk & 7);
  const uint8_t byte = w.codes(b)[chunk * w.code_stride(b) + 4 * c + (r & 3)];
  return r < 4 ? (byte & 0xf) : (byte >> 4);
}

}  // namespace nybble
