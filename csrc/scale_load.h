// Scalar helpers for reading the packed layout (used by the scalar path and the tails).
#pragma once
#include <cstdint>
#include <cstring>

#include "kernels.h"

namespace nybble {

inline float bf16_to_f32(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline float f16_to_f32(uint16_t h) {
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

// Scale of (block b, group g, column c) as fp32.
inline float packed_scale(const PackedView& w, int64_t b, int64_t g, int c) {
  const int64_t idx = (b * w.groups() + g) * 16 + c;
  switch (w.scale_kind) {
    case kScaleBF16: return bf16_to_f32(static_cast<const uint16_t*>(w.scale)[idx]);
    case kScaleF16: return f16_to_f32(static_cast<const uint16_t*>(w.scale)[idx]);
    default: return static_cast<const float*>(w.scale)[idx];
  }
}

inline int packed_zero(const PackedView& w, int64_t b, int64_t g, int c) {
  return w.zp ? w.zp[(b * w.groups() + g) * 16 + c] : 8;
}

// Code 0..15 of (input feature kk, column c of block b).
inline int packed_code(const PackedView& w, int64_t b, int64_t kk, int c) {
  const int64_t chunk = kk >> 3;
  const int r = static_cast<int>(kk & 7);
  const uint8_t byte = w.qw[(b * (w.k >> 3) + chunk) * 64 + 4 * c + (r & 3)];
  return r < 4 ? (byte & 0xf) : (byte >> 4);
}

}  // namespace nybble
