// Shared declarations of nybble's CPU int4 linear kernels (no PyTorch headers).
//
// Packed weight layout (made by nybble.kernels.cpu_layout.prepack, identical for every ISA):
//   Columns (output features) are grouped in blocks of 16; Nb = ceil(N / 16), padded columns hold
//   code 0 and scale 0 and are never written to the output. Blocks are grouped in tiles of
//   kTileBlocks = 4 (the last tile may be narrower: w = Nb - 4 * (ntiles - 1)), and every array
//   below stores a tile's blocks interleaved, so that a GEMV running over whole tiles (k from 0 to
//   K) reads one sequential stream per tile and array (256 bytes of codes per 8 k) instead of one
//   per block (benchmarks/cpu/NOTES.md has the measurements).
//   qw     uint8, Nb * K/8 * 64 bytes (tensor shape (Nb, K/8, 64), memory order (tile, K/8, w, 64)):
//          chunk c of block b (64 bytes, covers k = 8c .. 8c+7 of its 16 columns) is at
//          codes(b) + c * code_stride(b); byte 4*col + j holds code[8c+j, col] in its low nibble
//          and code[8c+4+j, col] in its high nibble (j = 0..3). Read as 16 int32 lanes, lane `col`
//          then has the 4 consecutive k of a VNNI dot product in each nibble half.
//   scale  Nb * G * 16 values in the model dtype (fp32 / bf16 / fp16 bits), G = K / group_len,
//          tensor shape (Nb, G, 16), memory order (tile, G, w, 16): the 16 column scales of
//          (block b, group g) start at element meta(b, g).
//   zp     int8, same order as scale: zero points 0..15 (int domain) or null (none: zero point 8).
//   wcomp  int32, same order: sum of the group's codes - group_len * zero point; needed only by
//          A8W4 with asymmetric activations (else null).
#pragma once
#include <cstdint>

namespace nybble {

enum ScaleKind : int { kScaleF32 = 0, kScaleBF16 = 1, kScaleF16 = 2 };

struct PackedView {
  const uint8_t* qw;
  const void* scale;
  int scale_kind;
  const int8_t* zp;
  const int32_t* wcomp;
  int64_t n, k, gl;  // out features, in features, group length (K for per-channel)
  static constexpr int64_t kTileBlocks = 4;
  int64_t nblocks() const { return (n + 15) / 16; }
  int64_t groups() const { return k / gl; }
  // first block and width (blocks) of the tile holding block b
  int64_t tile_start(int64_t b) const { return b & ~(kTileBlocks - 1); }
  int64_t tile_width(int64_t b) const {
    const int64_t r = nblocks() - tile_start(b);
    return r < kTileBlocks ? r : kTileBlocks;
  }
  // chunk 0 of block b's codes; chunk c is at codes(b) + c * code_stride(b)
  const uint8_t* codes(int64_t b) const {
    const int64_t t0 = tile_start(b);
    return qw + (t0 * (k >> 3) + (b - t0)) * 64;
  }
  int64_t code_stride(int64_t b) const { return tile_width(b) * 64; }
  // element index of (block b, group g, column 0) in scale / zp / wcomp
  int64_t meta(int64_t b, int64_t g) const {
    const int64_t t0 = tile_start(b);
    return (t0 * groups() + g * tile_width(b) + (b - t0)) * 16;
  }
};

// A16W4: y (M, N) fp32 (row stride ldy) = x (M, K) fp32 (row stride ldx) @ W^T + bias (fp32 or null).
struct A16Args {
  const float* x;
  int64_t m, ldx;
  float* y;
  int64_t ldy;
  const float* bias;
};

// Per-token quantized activations for A8W4 (see quantize_activations in quant_act.cpp).
struct QActView {
  const uint8_t* q;     // (M, K) int8 (symmetric) or uint8 (asymmetric) codes, row stride k
  const float* sa;      // (M,) scales
  const int32_t* za;    // (M,) zero points (0 when symmetric)
  const int32_t* sums;  // (M, G) per-group sums of the codes (signed or unsigned)
  bool asym;
};

struct A8Args {
  QActView a;
  int64_t m;
  float* y;
  int64_t ldy;
  const float* bias;
};

// A16W4 with bf16 activations kept in bf16 (the avx512_bf16 path): x (M, K) bf16 bits (row stride
// ldx); y (M, N) fp32 (row stride ldy); bias fp32 or null. Products bf16 x small integer are exact,
// sums are fp32 (vdpbf16ps), the group scale is applied in fp32.
struct A16Bf16Args {
  const uint16_t* x;
  int64_t m, ldx;
  float* y;
  int64_t ldy;
  const float* bias;
};

// Decode attention (attention.h): one query token per head, fp32 softmax; see attention.h.
struct AttnArgs {
  const void* q;
  int64_t q_head;
  const void* k;
  int64_t k_head, k_pos;
  const void* v;
  int64_t v_head, v_pos;
  const float* mask;  // (L,) additive fp32 or null
  const int32_t* pos;  // the positions to visit, ascending (npos of them), or null: all L
  int64_t npos;
  void* out;
  int64_t o_head;
  int kind;  // ScaleKind of q, k, v and out
  int64_t h, hkv, l, d;
  float scale;
};

using A16Fn = void (*)(const PackedView&, const A16Args&, int nthreads);
using A16Bf16Fn = void (*)(const PackedView&, const A16Bf16Args&, int nthreads);
using A8Fn = void (*)(const PackedView&, const A8Args&, int nthreads);
// dst[i] = float(src[i]) for `count` values of kind (ScaleKind: f32 / bf16 / f16 bits)
using ToF32Fn = void (*)(const void* src, int kind, float* dst, int64_t count);
// dst[i] = round-to-nearest-even(src[i]) in kind (bf16 / f16; NaN stays NaN, overflow -> inf)
using FromF32Fn = void (*)(const float* src, void* dst, int kind, int64_t count);

using AttnFn = void (*)(const AttnArgs&, int nthreads);

// Per-token quantization of one row (see quantize_activations below): x (K) -> q (K), *sa, *za,
// sums (K / gl).
using QuantRowFn = void (*)(const float* x, int64_t k, int64_t gl, bool asym, uint8_t* q, float* sa, int32_t* za,
                            int32_t* sums);

struct IsaKernels {
  A16Fn a16w4;
  A8Fn a8w4;
  ToF32Fn to_f32;
  FromF32Fn from_f32;
  QuantRowFn quant_row;
  // bf16 activations without the fp32 copy (null on paths without AVX512-BF16), used for
  // M <= a16w4_bf16_max_m
  A16Bf16Fn a16w4_bf16 = nullptr;
  int64_t a16w4_bf16_max_m = 0;
  AttnFn attn_decode = nullptr;  // decode attention (attention.h)
};

// Software prefetch distances (bytes ahead in each code stream) of the M = 1 two-tile GEMV paths:
// [0] A16W4 with bf16 activations (avx512_bf16 path), [1] A8W4 (x86 paths); 0 = no prefetch.
// Defaults 4096 (fourth session, benchmarks/cpu/NOTES.md) / 2048 (eighth session: the paired e2e of the
// 0.85B model +1.9% in fast-DRAM rounds, +2.3% in slow ones against none; the Llama-3-8B shapes' chain
// +4.8% slow; benchmarks/cpu/eighth-e2e/NOTES-prefetch.md). set_gemv_prefetch() in module.cpp or
// NYBBLE_CPU_GEMV_PREFETCH="A16,A8" (read when the module loads) change them (A/B runs).
extern int64_t g_gemv_prefetch[2];

// One per translation unit (each compiled with its ISA's flags only).
IsaKernels kernels_scalar();
IsaKernels kernels_avx2();
IsaKernels kernels_avx512();
IsaKernels kernels_avx512_vnni();
IsaKernels kernels_avx512_bf16();  // avx512_vnni plus the vdpbf16ps A16W4 path for bf16 activations

// Exact per-token quantization (nybble.primitives.quantize_activations), threaded over rows with
// the row function of an ISA path. x (M, K) fp32 row stride ldx -> q (M, K), sa (M), za (M),
// sums (M, K/gl).
void quantize_activations(QuantRowFn row, const float* x, int64_t m, int64_t ldx, int64_t k, int64_t gl, bool asym,
                          uint8_t* q, float* sa, int32_t* za, int32_t* sums, int nthreads);
// The scalar row function (quant_act.cpp).
void quantize_row_scalar(const float* x, int64_t k, int64_t gl, bool asym, uint8_t* q, float* sa, int32_t* za,
                         int32_t* sums);

}  // namespace nybble
