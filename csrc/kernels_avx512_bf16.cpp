// AVX512-BF16 path: everything of the AVX512-VNNI path, plus an A16W4 kernel for bf16 activations
// (M <= kMaxM) that keeps x in bf16 and multiplies with vdpbf16ps. Compiled with the VNNI flags plus
// -mavx512bf16; run only when CPUID reports AVX512_BF16.
//
// Arithmetic (still "compute in fp32"): each 4-bit code becomes the bf16 of the exact integer
// t = q - 8 (zero-point domain none) or t = q (domain int) through a 32-entry vpermw table; the
// products x * t (bf16 x integer |t| <= 15) are exact in fp32 and vdpbf16ps sums them in fp32. Per
// group and column: acc = sum_k x[k] t[k]; y += s * (acc - z * sum_k x[k]) (the z term in the int
// domain only, with the fp32 per-group sums of x), as the fp32 path does. vdpbf16ps treats bf16
// subnormal inputs (|x| < 1.2e-38) as zero and flushes subnormal fp32 results to zero.
//
// Data flow of one 64-byte weight chunk (8 k x 16 columns, layout in kernels.h): lane `col` holds
// two 16-bit words, word 0 = nibbles (k0, k4, k1, k5) from low to high bits, word 1 = (k2, k6, k3,
// k7). vpermw looks up the low 5 bits of every word, so with the table repeated in entries 16..31
// the words of `raw`, `raw >> 4`, `raw >> 8`, `raw >> 12` (16-bit shifts) decode to the bf16 pairs
// (k0, k2), (k4, k6), (k1, k3), (k5, k7). x is reordered once per call so that each of those pairs of
// activations is one 32-bit word, broadcast to all lanes: 4 vdpbf16ps per chunk and row (32 MACs
// each) against 8 FMAs + 8 float conversions in the fp32 path.
#include <cstdlib>

#include "simd_avx512.h"
#include "x86_kernels.h"

namespace nybble {
namespace {

struct A16Bf16 {
  using V = V512<true>;
  using Base = X86Kernels<V>;
  using F = __m512;
  using I = __m512i;
  static constexpr int64_t kMaxM = 16;  // above: the fp32 GEMM of the VNNI path
  // Software prefetch distance of the 2-tile M = 1 path (bytes ahead in each tile's code stream:
  // 16 chunks = one group at group 128). Its loop issues ~13 vector instructions per 64-byte line,
  // so the out-of-order window alone runs only a few lines ahead of its loads; prefetching one
  // page ahead raised one core's DRAM rate by 3-7 points of the probe, and prefetching each
  // stream's first page when a tile pair starts by another 1.5-2.5 (benchmarks/cpu/NOTES.md, fourth
  // session). A8W4 (~5 instructions per line) did not gain (it lost 1-3 points) and has none.
  // (default 4096: g_gemv_prefetch[0], kernels.h)

  // bf16 bits of t = i - offset for index i mod 16 (|t| <= 15 is exact in bf16)
  static I make_table(int offset) {
    alignas(64) uint16_t t[32];
    for (int i = 0; i < 32; ++i) {
      const float v = static_cast<float>((i & 15) - offset);
      uint32_t bits;
      std::memcpy(&bits, &v, 4);
      t[i] = static_cast<uint16_t>(bits >> 16);  // exact: the low 16 bits are zero
    }
    return _mm512_load_si512(t);
  }

  static F dp(F acc, I w, uint32_t xpair) {
    return _mm512_dpbf16_ps(acc, (__m512bh)w, (__m512bh)_mm512_set1_epi32(static_cast<int>(xpair)));
  }

  // Rows m0 .. m0+MR-1 (xp row stride K/2 words), blocks b0 .. b0+NB-1, all of K.
  // CPG: chunks (of 8 k) per group when known at compile time (group 128: 16), else 0
  // NBH: blocks accumulated at a time (a divisor of NB; all callers now use NB), see below
  template <int MR, int NB, int CPG = 0, int NBH = NB>
  static void tile(const PackedView& w, const A16Bf16Args& a, const uint32_t* xp, const float* sx, int64_t m0,
                   int64_t b0, const I& table) {
    // independent partial sums per accumulator: with one, the 4 vdpbf16ps of a chunk form one
    // dependency chain (4 x ~6 cycles per chunk and block); the M = 1 two-tile path (NB = 8) keeps
    // 16 chains with two (~30 zmm live): +3-5% with the weights in L3 on one core,
    // tenth session (benchmarks/cpu/tenth-e2e/NOTES.md)
    constexpr int P = MR == 1 || (MR <= 2 && NB <= 4) ? 2 : 1;
    const int64_t K2 = w.k >> 1, G = w.groups(), cpg = CPG ? CPG : w.gl >> 3;
    const uint32_t* x0 = xp + m0 * K2;
    F tot[MR][NB];
    const BlockRun run(w, b0);  // the NB blocks' streams (x86_kernels.h)
#pragma GCC unroll 4
    for (int j = 0; j < NB; ++j) {
      for (int r = 0; r < MR; ++r) tot[r][j] = _mm512_setzero_ps();
    }
    const int64_t kPrefetch = g_gemv_prefetch[0];
    if constexpr (NB > BlockRun::T) {  // 2-tile M = 1 path: the first kPrefetch bytes of each stream
      for (int st = 0; st < NB / BlockRun::T; ++st)
        for (int64_t l = 0; l < kPrefetch; l += 64)
          _mm_prefetch(reinterpret_cast<const char*>(run.stream(st, 0) + l), _MM_HINT_T0);
    }
    for (int64_t g = 0; g < G; ++g) {
      const int64_t mb0 = w.meta(b0, g);
      // NBH < NB: the group's blocks in parts of NBH (fewer accumulators), each part right after
      // the other, so that the tile's chunks of this group are still in cache for the next part
#pragma GCC unroll 4
      for (int h = 0; h < NB; h += NBH) {
        F acc[MR][NBH][P];
#pragma GCC unroll 8
        for (int r = 0; r < MR; ++r)
          for (int jj = 0; jj < NBH; ++jj)
            for (int p = 0; p < P; ++p) acc[r][jj][p] = _mm512_setzero_ps();
        for (int64_t c = g * cpg; c < (g + 1) * cpg; ++c) {
          const uint32_t* xc = x0 + c * 4;
          if constexpr (NB > BlockRun::T) {  // 2-tile M = 1 path: every line of each stream, kPrefetch bytes ahead
            if (kPrefetch) {
#pragma GCC unroll 8
              for (int st = 0; st < NB / BlockRun::T; ++st)
                for (int l = 0; l < BlockRun::T; ++l)
                  _mm_prefetch(reinterpret_cast<const char*>(run.stream(st, c) + kPrefetch + 64 * l), _MM_HINT_T0);
            }
          }
#pragma GCC unroll 8
          for (int jj = 0; jj < NBH; ++jj) {
            const int j = h + jj;
            const I raw = _mm512_loadu_si512(run.chunk(j, c));
            const I w0 = _mm512_permutexvar_epi16(raw, table);
            const I w1 = _mm512_permutexvar_epi16(_mm512_srli_epi16(raw, 4), table);
            const I w2 = _mm512_permutexvar_epi16(_mm512_srli_epi16(raw, 8), table);
            const I w3 = _mm512_permutexvar_epi16(_mm512_srli_epi16(raw, 12), table);
#pragma GCC unroll 4
            for (int r = 0; r < MR; ++r) {
              const uint32_t* xr = xc + r * K2;
              acc[r][jj][0] = dp(acc[r][jj][0], w0, xr[0]);
              acc[r][jj][P - 1] = dp(acc[r][jj][P - 1], w1, xr[1]);
              acc[r][jj][0] = dp(acc[r][jj][0], w2, xr[2]);
              acc[r][jj][P - 1] = dp(acc[r][jj][P - 1], w3, xr[3]);
            }
          }
        }
#pragma GCC unroll 8
        for (int jj = 0; jj < NBH; ++jj) {
          const int j = h + jj;
          const int64_t si = run.meta(mb0, j);
          const F s = V::scale_load(w.scale, si, w.scale_kind);
          const F zf = w.zp ? V::cvt(V::zp_load(w.zp + si)) : _mm512_setzero_ps();
#pragma GCC unroll 4
          for (int r = 0; r < MR; ++r) {
            F v = acc[r][jj][0];
            if (P == 2) v = _mm512_add_ps(v, acc[r][jj][P - 1]);
            if (w.zp) v = _mm512_fnmadd_ps(zf, _mm512_set1_ps(sx[(m0 + r) * G + g]), v);
            tot[r][j] = _mm512_fmadd_ps(v, s, tot[r][j]);
          }
        }
      }
    }
    for (int j = 0; j < NB; ++j) {
      const int nc = Base::ncols(w, b0 + j);
      const int64_t col = (b0 + j) * 16;
      for (int r = 0; r < MR; ++r) {
        F v = tot[r][j];
        if (a.bias) v = _mm512_add_ps(v, V::fload_part(a.bias + col, nc));
        V::fstore_part(a.y + (m0 + r) * a.ldy + col, v, nc);
      }
    }
  }

  template <int MR, int NB, bool NB2 = false, int NBH = NB>
  static void range(const PackedView& w, const A16Bf16Args& a, const uint32_t* xp, const float* sx, int64_t m0,
                    int64_t lo, int64_t hi, const I& table) {
    int64_t b = lo;
    if (w.gl == 128) {
      if constexpr (NB2) {  // 8 blocks = 2 tiles at a time (2 sequential code streams; lo is a
                            // multiple of 8, so b + 8 <= hi means 2 full tiles)
        for (; b + 8 <= hi; b += 8) tile<MR, 8, 16>(w, a, xp, sx, m0, b, table);
      }
      for (; b + NB <= hi; b += NB) tile<MR, NB, 16, NBH>(w, a, xp, sx, m0, b, table);
    } else {
      for (; b + NB <= hi; b += NB) tile<MR, NB, 0, NBH>(w, a, xp, sx, m0, b, table);
    }
    for (; b < hi; ++b) tile<MR, 1>(w, a, xp, sx, m0, b, table);
  }

  // All rows (tiles of up to 4) over blocks [lo, hi); with more than 4 rows a few blocks at a time,
  // so that their weights stay in L1/L2 while every row tile uses them.
  static void rows(const PackedView& w, const A16Bf16Args& a, const uint32_t* xp, const float* sx, int64_t lo,
                   int64_t hi, const I& table) {
    if (a.m == 3 || a.m == 4) {  // row pairs over one whole tile at a time (the second pair from cache)
      for (int64_t b = lo; b < hi; b += 4) {
        const int64_t be = imin(hi, b + 4);
        range<2, 4>(w, a, xp, sx, 0, b, be, table);
        if (a.m == 4) range<2, 4>(w, a, xp, sx, 2, b, be, table);
        else range<1, 4>(w, a, xp, sx, 2, b, be, table);
      }
      return;
    }
    const int64_t step = a.m <= 4 ? hi - lo : 4;
    for (int64_t b = lo; b < hi; b += step) {
      const int64_t be = imin(hi, b + step);
      for (int64_t m0 = 0; m0 < a.m; m0 += 4) {
        switch (imin(4, a.m - m0)) {
          case 1: range<1, 4, true>(w, a, xp, sx, m0, b, be, table); break;
          case 2: range<2, 4>(w, a, xp, sx, m0, b, be, table); break;
          // (M > 4, one tile per step) whole 4-block tiles, all 4 blocks accumulated at once: 16
          // independent vdpbf16ps chains for 4 rows. (NBH = 2, 2 blocks at a time with 8 chains,
          // was 1.5-1.8x slower: latency-bound; benchmarks/cpu/NOTES.md, fourth session.)
          case 3: range<3, 4>(w, a, xp, sx, m0, b, be, table); break;
          default: range<4, 4>(w, a, xp, sx, m0, b, be, table); break;
        }
      }
    }
  }

  // x (M, K) bf16 -> xp (M, K/2) 32-bit pairs, each 8-k chunk in the order (0,2) (4,6) (1,3) (5,7);
  // and, in the int domain, sx (M, G) = fp32 sums of each group of x.
  static void prepare(const PackedView& w, const A16Bf16Args& a, uint32_t* xp, float* sx) {
    const int64_t K = w.k, G = w.groups();
    const __m128i order = _mm_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15);
    for (int64_t r = 0; r < a.m; ++r) {
      const uint16_t* xr = a.x + r * a.ldx;
      uint32_t* dst = xp + r * (K >> 1);
      for (int64_t c = 0; c < (K >> 3); ++c) {
        const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(xr + 8 * c));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 4 * c), _mm_shuffle_epi8(v, order));
      }
      if (!sx) continue;
      for (int64_t g = 0; g < G; ++g) {
        __m256 sv = _mm256_setzero_ps();
        for (int64_t i = g * w.gl; i < (g + 1) * w.gl; i += 8) {  // gl is a multiple of 8
          const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(xr + i));
          sv = _mm256_add_ps(sv, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)));
        }
        // 8 lanes -> 1 (lo + hi halves, then pairs; 256-bit ops: GCC 12 warns falsely about the
        // 512-bit reduce intrinsics)
        __m128 q = _mm_add_ps(_mm256_castps256_ps128(sv), _mm256_extractf128_ps(sv, 1));
        q = _mm_add_ps(q, _mm_movehl_ps(q, q));
        q = _mm_add_ss(q, _mm_shuffle_ps(q, q, 1));
        sx[r * G + g] = _mm_cvtss_f32(q);
      }
    }
  }

  static void a16w4_bf16(const PackedView& w, const A16Bf16Args& a, int nthreads) {
    const I table = make_table(w.zp ? 0 : 8);
    uint32_t* xp = static_cast<uint32_t*>(std::malloc(sizeof(uint32_t) * a.m * (w.k >> 1)));
    float* sx = w.zp ? static_cast<float*>(std::malloc(sizeof(float) * a.m * w.groups())) : nullptr;
    prepare(w, a, xp, sx);
    parallel_owned_chunks(nthreads, w.nblocks(), Base::gemv_chunk(w, nthreads),
                    [&](long long lo, long long hi) { rows(w, a, xp, sx, lo, hi, table); });
    std::free(sx);
    std::free(xp);
  }
};

}  // namespace

IsaKernels kernels_avx512_bf16() {
  IsaKernels t = X86Kernels<V512<true>>::table();
  t.a16w4_bf16 = A16Bf16::a16w4_bf16;
  t.a16w4_bf16_max_m = A16Bf16::kMaxM;
  return t;
}

}  // namespace nybble
