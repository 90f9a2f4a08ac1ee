// The SIMD CPU kernels, written once over a 16-lane vector abstraction V (simd_avx512.h: one zmm;
// simd_avx2.h: two ymm). Each ISA translation unit includes this with its own flags.
//
// A16W4
//   GEMV (M <= 16, row tiles of up to 4): every weight byte is streamed once per row tile; a 64-byte
//   chunk (8 k x 16 columns) is decoded nibble by nibble (shift + 16-entry table / mask +
//   convert) and multiplied into per-group fp32 accumulators (two partial sums per accumulator
//   for 1-2 rows); per group y += s * (acc - z * sum(x)), the group sums of x computed once per
//   call. (bf16 activations on the avx512_bf16 path: kernels_avx512_bf16.cpp, vdpbf16ps.)
//   GEMM (M > 16): a KC x 128-column panel of weights is dequantized to fp32 once (kept in L2) and
//   reused by an MR x 32 register-blocked fp32 microkernel over all rows of the task.
// GEMV memory access: the packed layout is tile-interleaved (kernels.h: tiles of 4 blocks), so each
// tile of a GEMV call is one sequential stream of codes (and one of scales, one of zero points);
// at M = 1 (group 128) two tiles run side by side (2 streams), at M = 2..4 one whole tile (with 3-4
// rows its blocks are accumulated 2 at a time, group by group, so the tile is still read once); the
// A8W4 M = 1 two-tile path prefetches g_gemv_prefetch[1] bytes ahead in each stream (kernels.h), the
// fp32 A16W4 paths do not (benchmarks/cpu/NOTES.md has the measurements).
// Each thread owns a contiguous range of whole tiles and then helps with the others' remaining
// chunks (parallel_owned_chunks).
// A8W4
//   Activations are quantized per token first (quant_act.cpp). A tile of MR rows x NB blocks runs
//   over all of K: per group, u8 x s8 dot products (vpdpbusd or maddubs+madd) into exact int32
//   sums, then the zero-point compensation (integer), int32 -> fp32, times the weight scale, added
//   to fp32 accumulators; at the end times the activation scale, plus bias. GEMV = one tile of M
//   rows; GEMM = tiles of MR rows over 128..256 KiB column panels.
#pragma once
#include <cstdlib>
#include <cstring>

#include "attention.h"
#include "kernels.h"
#include "scale_load.h"
#include "thread_pool.h"

namespace nybble {
namespace {  // internal linkage: see thread_pool.h

inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }

// NB consecutive blocks from b0, as the GEMV tiles read them. Either NB <= kTileBlocks and the
// blocks lie in one tile (b0 % NB == 0): one stream, block j's chunk 64 j bytes into the tile's
// chunk; or NB is a multiple of kTileBlocks from a tile-aligned b0: NB / kTileBlocks full tiles, one
// sequential stream each, tile_bytes apart. j is a compile-time constant in the kernels' unrolled
// loops, so the divisions fold away.
struct BlockRun {
  static constexpr int64_t T = PackedView::kTileBlocks;
  const uint8_t* q0;   // chunk 0 of block b0
  int64_t cs;          // bytes from one chunk (8 k) to the next in a stream
  int64_t tile_bytes;  // bytes from one tile's stream to the next
  int64_t tile_meta;   // elements from one tile's scales / zero points / wcomp to the next
  BlockRun(const PackedView& w, int64_t b0)
      : q0(w.codes(b0)), cs(w.code_stride(b0)), tile_bytes(cs * (w.k >> 3)), tile_meta(T * w.groups() * 16) {}
  // chunk c of block b0 + j
  const uint8_t* chunk(int j, int64_t c) const { return q0 + (j / T) * tile_bytes + c * cs + 64 * (j % T); }
  // chunk c of the j-th tile's stream (stream = j / T of chunk(j, c))
  const uint8_t* stream(int t, int64_t c) const { return q0 + t * tile_bytes + c * cs; }
  // element of (block b0 + j, group g, column 0) in scale / zp / wcomp, from mb0 = w.meta(b0, g)
  int64_t meta(int64_t mb0, int j) const { return mb0 + (j / T) * tile_meta + 16 * (j % T); }
};

template <class V>
struct X86Kernels {
  using F = typename V::F;
  using I = typename V::I;
  static constexpr int kMR = V::kGemmMR;
  static constexpr int kGemvMaxM = 4;
  // A16 rows up to which decoding the weights in registers (per 4-row tile, blocks hot in cache)
  // beats dequantizing panels to fp32 for the GEMM microkernel
  static constexpr int64_t kA16DirectMaxM = 16;
  static constexpr int64_t kKC = 256;         // K rows of a dequantized A16 panel
  static constexpr int64_t kNCB = 8;          // 16-column blocks of a dequantized A16 panel

  // k offset, within an 8-k chunk, of the nibble at bit shift 4*T of a lane
  static constexpr int koff(int t) { return (t & 1) * 4 + t / 2; }

  static int ncols(const PackedView& w, int64_t b) {
    const int64_t c = w.n - b * 16;
    return c >= 16 ? 16 : static_cast<int>(c);
  }

  // ------------------------------------------------------------------ A16W4 GEMV
  // Per group: acc = sum_k x[k] * t[q[k]] with t = q - 8 (none) or q (int), then
  // y += s * (acc - z * sum_k x[k]) (the second term only in the int domain).
  template <int MR, int NB, int P, int T>
  static inline void a16_step(const I& raw, const typename V::Lut& lut, const float* xk, int64_t ldx,
                              F (&acc)[MR][NB][P], int j) {
    const F qv = V::template code<4 * T>(raw, lut);
#pragma GCC unroll 4
    for (int r = 0; r < MR; ++r)
      acc[r][j][T % P] = V::fmadd(V::fset1(xk[r * ldx + koff(T)]), qv, acc[r][j][T % P]);
  }

  // Rows m0 .. m0+MR-1, blocks b0 .. b0+NB-1, all of K.
  // sx: (M, G) fp32 per-group sums of x (int domain only, else unused).
  template <int MR, int NB>
  static void a16_gemv_tile(const PackedView& w, const A16Args& a, const float* sx, int64_t m0, int64_t b0,
                            const typename V::Lut& lut) {
    constexpr int P = MR <= 2 ? 2 : 1;  // independent partial sums per accumulator
    const int64_t G = w.groups(), cpg = w.gl >> 3, ldx = a.ldx;
    const float* x0 = a.x + m0 * ldx;
    F tot[MR][NB];
    const BlockRun run(w, b0);  // the NB blocks' streams
#pragma GCC unroll 4
    for (int j = 0; j < NB; ++j) {
      for (int r = 0; r < MR; ++r) tot[r][j] = V::fzero();
    }
    for (int64_t g = 0; g < G; ++g) {
      F acc[MR][NB][P];
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r)
        for (int j = 0; j < NB; ++j)
          for (int p = 0; p < P; ++p) acc[r][j][p] = V::fzero();
      for (int64_t c = g * cpg; c < (g + 1) * cpg; ++c) {
        const float* xk = x0 + c * 8;
#pragma GCC unroll 4
        for (int j = 0; j < NB; ++j) {
          const I raw = V::iload(run.chunk(j, c));
          a16_step<MR, NB, P, 0>(raw, lut, xk, ldx, acc, j);
          a16_step<MR, NB, P, 1>(raw, lut, xk, ldx, acc, j);
          a16_step<MR, NB, P, 2>(raw, lut, xk, ldx, acc, j);
          a16_step<MR, NB, P, 3>(raw, lut, xk, ldx, acc, j);
          a16_step<MR, NB, P, 4>(raw, lut, xk, ldx, acc, j);
          a16_step<MR, NB, P, 5>(raw, lut, xk, ldx, acc, j);
          a16_step<MR, NB, P, 6>(raw, lut, xk, ldx, acc, j);
          a16_step<MR, NB, P, 7>(raw, lut, xk, ldx, acc, j);
        }
      }
#pragma GCC unroll 4
      for (int j = 0; j < NB; ++j) {
        const int64_t si = run.meta(w.meta(b0, g), j);
        const F s = V::scale_load(w.scale, si, w.scale_kind);
        const F zf = w.zp ? V::cvt(V::zp_load(w.zp + si)) : V::fzero();
#pragma GCC unroll 4
        for (int r = 0; r < MR; ++r) {
          F v = acc[r][j][0];
          if (P == 2) v = V::fadd(v, acc[r][j][P - 1]);
          if (w.zp) v = V::fnmadd(zf, V::fset1(sx[(m0 + r) * G + g]), v);
          tot[r][j] = V::fmadd(v, s, tot[r][j]);
        }
      }
    }
    for (int j = 0; j < NB; ++j) {
      const int nc = ncols(w, b0 + j);
      const int64_t col = (b0 + j) * 16;
      for (int r = 0; r < MR; ++r) {
        F v = tot[r][j];
        if (a.bias) v = V::fadd(v, V::fload_part(a.bias + col, nc));
        V::fstore_part(a.y + (m0 + r) * a.ldy + col, v, nc);
      }
    }
  }

  // Blocks [lo, hi) for rows [m0, m0 + MR).
  template <int MR, int NB>
  static void a16_gemv_range(const PackedView& w, const A16Args& a, const float* sx, int64_t m0, int64_t lo,
                             int64_t hi, const typename V::Lut& lut) {
    int64_t b = lo;
    for (; b + NB <= hi; b += NB) a16_gemv_tile<MR, NB>(w, a, sx, m0, b, lut);
    for (; b < hi; ++b) a16_gemv_tile<MR, 1>(w, a, sx, m0, b, lut);
  }

  // All rows (in tiles of up to 4) over blocks [lo, hi), a few blocks at a time so that the
  // weights of those blocks stay in L1/L2 while every row tile uses them.
  static void a16_gemv_rows(const PackedView& w, const A16Args& a, const float* sx, int64_t lo, int64_t hi,
                            const typename V::Lut& lut) {
    if (a.m == 3 || a.m == 4) {  // row pairs over one whole tile at a time (the second pair from cache)
      for (int64_t b = lo; b < hi; b += PackedView::kTileBlocks) {
        const int64_t be = imin(hi, b + PackedView::kTileBlocks);
        a16_gemv_range<2, V::kGemvNB>(w, a, sx, 0, b, be, lut);
        if (a.m == 4) a16_gemv_range<2, V::kGemvNB>(w, a, sx, 2, b, be, lut);
        else a16_gemv_range<1, V::kGemvNB>(w, a, sx, 2, b, be, lut);
      }
      return;
    }
    const int64_t step = a.m <= 4 ? hi - lo : 4;
    for (int64_t b = lo; b < hi; b += step) {
      const int64_t be = imin(hi, b + step);
      for (int64_t m0 = 0; m0 < a.m; m0 += 4) {
        switch (imin(4, a.m - m0)) {
          case 1: a16_gemv_range<1, V::kGemvNB>(w, a, sx, m0, b, be, lut); break;
          case 2: a16_gemv_range<2, V::kGemvNB>(w, a, sx, m0, b, be, lut); break;
          case 3: a16_gemv_range<3, 2>(w, a, sx, m0, b, be, lut); break;
          default: a16_gemv_range<4, 2>(w, a, sx, m0, b, be, lut); break;
        }
      }
    }
  }

  // Per-group sums of x: sx[r * G + g] = sum of x[r, g*gl .. (g+1)*gl) (fp32, 16 lanes then across).
  // Sum of the 16 lanes of v, lane 0 first (the same order everywhere, so results are reproducible).
  static float hsum(F v) {
    alignas(64) float t[16];
    V::fstore_full(t, v);
    float sum = 0.f;
    for (int l = 0; l < 16; ++l) sum += t[l];
    return sum;
  }

  static void group_sums(const float* x, int64_t m, int64_t ldx, int64_t k, int64_t gl, float* sx) {
    const int64_t G = k / gl;
    for (int64_t r = 0; r < m; ++r) {
      for (int64_t g = 0; g < G; ++g) {
        const float* xr = x + r * ldx + g * gl;
        F sv = V::fzero();
        int64_t i = 0;
        for (; i + 16 <= gl; i += 16) sv = V::fadd(sv, V::fload(xr + i));
        if (i < gl) sv = V::fadd(sv, V::fload_part(xr + i, static_cast<int>(gl - i)));
        sx[r * G + g] = hsum(sv);
      }
    }
  }

  static void a16_gemv(const PackedView& w, const A16Args& a, int nthreads) {
    const auto lut = V::make_lut(w.zp ? 0 : 8);
    float* sx = nullptr;
    if (w.zp) {
      sx = static_cast<float*>(std::malloc(sizeof(float) * a.m * w.groups()));
      group_sums(a.x, a.m, a.ldx, w.k, w.gl, sx);
    }
    parallel_owned_chunks(nthreads, w.nblocks(), gemv_chunk(w, nthreads),
                    [&](long long lo, long long hi) { a16_gemv_rows(w, a, sx, lo, hi, lut); });
    std::free(sx);
  }

  // Blocks per GEMV chunk: about 128 KiB of weights, at least 8 chunks per thread, a multiple of 8.
  static int64_t gemv_chunk(const PackedView& w, int nthreads) {
    int64_t c = imax(4, (128 * 1024) / (w.k * 8));
    const int64_t per = w.nblocks() / (8 * int64_t(nthreads));
    if (c > per) c = imax(4, per);
    return (c + 7) & ~int64_t(7);  // whole pairs of tiles
  }

  // ------------------------------------------------------------------ A16W4 GEMM
  // Dequantize rows [k0, k0+kc) of blocks [b0, b0+nbk) to fp32: panel[jb][kk][16].
  template <int T>
  static inline void deq_step(const I& raw, const F& s, const F& zs, const typename V::Lut& lut, float* dst) {
    V::fstore_full(dst + koff(T) * 16, V::fmsub(V::template code<4 * T>(raw, lut), s, zs));
  }

  static void a16_dequant_panel(const PackedView& w, int64_t b0, int64_t nbk, int64_t k0, int64_t kc,
                                const typename V::Lut& lut, float* panel) {
    for (int64_t jb = 0; jb < nbk; ++jb) {
      const int64_t b = b0 + jb;
      const uint8_t* q = w.codes(b);
      const int64_t cs = w.code_stride(b);
      int64_t cur_g = -1;
      F s = V::fzero(), zs = V::fzero();
      for (int64_t c = k0 >> 3; c < (k0 + kc) >> 3; ++c) {
        const int64_t g = (c * 8) / w.gl;
        if (g != cur_g) {
          cur_g = g;
          const int64_t si = w.meta(b, g);
          s = V::scale_load(w.scale, si, w.scale_kind);
          zs = w.zp ? V::fmul(V::cvt(V::zp_load(w.zp + si)), s) : V::fzero();
        }
        const I raw = V::iload(q + c * cs);
        float* dst = panel + (jb * kKC + (c * 8 - k0)) * 16;
        deq_step<0>(raw, s, zs, lut, dst);
        deq_step<1>(raw, s, zs, lut, dst);
        deq_step<2>(raw, s, zs, lut, dst);
        deq_step<3>(raw, s, zs, lut, dst);
        deq_step<4>(raw, s, zs, lut, dst);
        deq_step<5>(raw, s, zs, lut, dst);
        deq_step<6>(raw, s, zs, lut, dst);
        deq_step<7>(raw, s, zs, lut, dst);
      }
    }
  }

  // C[MR x 16*NB] (+)= A[MR x kc] @ panel[kc x 16*NB]; bias added on the last K panel.
  template <int MR, int NB>
  static void a16_micro(const float* x, int64_t ldx, const float* panel, int64_t kc, float* y, int64_t ldy,
                        bool first, const float* bias, int nc_total) {
    F acc[MR][NB];
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r)
      for (int j = 0; j < NB; ++j) acc[r][j] = V::fzero();
    for (int64_t kk = 0; kk < kc; ++kk) {
      F bv[NB];
#pragma GCC unroll 2
      for (int j = 0; j < NB; ++j) bv[j] = V::fload(panel + (j * kKC + kk) * 16);
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r) {
        const F av = V::fset1(x[r * ldx + kk]);
        for (int j = 0; j < NB; ++j) acc[r][j] = V::fmadd(av, bv[j], acc[r][j]);
      }
    }
    for (int j = 0; j < NB; ++j) {
      const int nc = imin(16, nc_total - 16 * j);
      if (nc <= 0) break;
      for (int r = 0; r < MR; ++r) {
        F v = acc[r][j];
        float* out = y + r * ldy + 16 * j;
        if (!first) v = V::fadd(v, V::fload_part(out, nc));
        if (bias) v = V::fadd(v, V::fload_part(bias + 16 * j, nc));
        V::fstore_part(out, v, nc);
      }
    }
  }

  template <int R>
  static void a16_micro_rows(int mr, int nbb, const float* x, int64_t ldx, const float* panel, int64_t kc,
                             float* y, int64_t ldy, bool first, const float* bias, int nc) {
    if constexpr (R >= 1) {
      if (mr == R) {
        if (nbb == 2) a16_micro<R, 2>(x, ldx, panel, kc, y, ldy, first, bias, nc);
        else a16_micro<R, 1>(x, ldx, panel, kc, y, ldy, first, bias, nc);
      } else {
        a16_micro_rows<R - 1>(mr, nbb, x, ldx, panel, kc, y, ldy, first, bias, nc);
      }
    }
  }

  // Splits the work of a GEMM into (column chunk, row range) tasks for nthreads threads.
  struct GemmPlan {
    int64_t nchunks, chunk_blocks, msplit, mpart;
    int64_t tasks() const { return nchunks * msplit; }
  };
  static GemmPlan plan(int64_t m, int64_t nb, int64_t chunk_blocks, int nthreads) {
    GemmPlan p;
    p.chunk_blocks = chunk_blocks;
    p.nchunks = (nb + chunk_blocks - 1) / chunk_blocks;
    int64_t ms = p.nchunks >= 4 * nthreads ? 1 : (4 * nthreads + p.nchunks - 1) / p.nchunks;
    int64_t per = (m + ms - 1) / ms;
    per = (per + kMR - 1) / kMR * kMR;
    p.mpart = per;
    p.msplit = (m + per - 1) / per;
    return p;
  }

  static void a16_gemm(const PackedView& w, const A16Args& a, int nthreads) {
    const int64_t nb = w.nblocks();
    const auto lut = V::make_lut(w.zp ? 0 : 8);
    const GemmPlan p = plan(a.m, nb, kNCB, nthreads);
    const int nt = static_cast<int>(imin(nthreads, p.tasks()));
    long long next = 0;
    parallel_dynamic(nt, [&] {
      float* panel = static_cast<float*>(std::malloc(sizeof(float) * kKC * kNCB * 16));
      for (;;) {
        const int64_t task = __atomic_fetch_add(&next, 1, __ATOMIC_RELAXED);
        if (task >= p.tasks()) break;
        const int64_t chunk = task / p.msplit, mp = task % p.msplit;
        const int64_t b0 = chunk * p.chunk_blocks, nbk = imin(p.chunk_blocks, nb - b0);
        const int64_t m_lo = mp * p.mpart, m_hi = imin(a.m, m_lo + p.mpart);
        for (int64_t k0 = 0; k0 < w.k; k0 += kKC) {
          const int64_t kc = imin(kKC, w.k - k0);
          a16_dequant_panel(w, b0, nbk, k0, kc, lut, panel);
          const bool first = k0 == 0, last = k0 + kc >= w.k;
          for (int64_t m = m_lo; m < m_hi; m += kMR) {
            const int mr = static_cast<int>(imin(kMR, m_hi - m));
            for (int64_t jb = 0; jb < nbk; jb += 2) {
              const int nbb = static_cast<int>(imin(2, nbk - jb));
              const int64_t col = (b0 + jb) * 16;
              a16_micro_rows<kMR>(mr, nbb, a.x + m * a.ldx + k0, a.ldx, panel + jb * kKC * 16, kc,
                                  a.y + m * a.ldy + col, a.ldy, first, last && a.bias ? a.bias + col : nullptr,
                                  static_cast<int>(w.n - col));
            }
          }
        }
      }
      std::free(panel);
    });
  }

  static void a16w4(const PackedView& w, const A16Args& a, int nthreads) {
    if (a.m <= kA16DirectMaxM) a16_gemv(w, a, nthreads);
    else a16_gemm(w, a, nthreads);
  }

  // ------------------------------------------------------------------ A8W4
  // CPG: chunks (of 8 k) per group when known at compile time (group 128: 16), else 0
  // NBH: blocks accumulated at a time (a divisor of NB), see below
  template <int MR, int NB, bool ASYM, int CPG = 0, int NBH = NB>
  static void a8_tile(const PackedView& w, const A8Args& a, int64_t m0, int64_t b0) {
    constexpr int P = MR == 1 && NB <= 4 ? 2 : 1;  // independent partial sums per accumulator
    const int64_t K = w.k, G = w.groups(), cpg = CPG ? CPG : w.gl >> 3;
    const I nib = V::iset1(0x0f0f0f0f);
    const uint8_t* qa = a.a.q + m0 * K;
    const BlockRun run(w, b0);  // the NB blocks' streams
    F facc[MR][NB];
#pragma GCC unroll 4
    for (int j = 0; j < NB; ++j) {
      for (int r = 0; r < MR; ++r) facc[r][j] = V::fzero();
    }
    // M = 1 two-tile path: software prefetch g_gemv_prefetch[1] bytes ahead in each stream (default
    // 2048; 0 = none; kernels.h)
    const int64_t pf = (MR == 1 && NB > BlockRun::T) ? g_gemv_prefetch[1] : 0;
    if constexpr (MR == 1 && NB > BlockRun::T) {
      for (int st = 0; st < NB / BlockRun::T; ++st)
        for (int64_t l = 0; l < pf; l += 64) __builtin_prefetch(run.stream(st, 0) + l, 0, 3);
    }
    for (int64_t g = 0; g < G; ++g) {
      const int64_t mb0 = w.meta(b0, g);
      // NBH < NB: the group's blocks in parts of NBH (fewer accumulators), each part right after
      // the other, so that the tile's chunks of this group are still in cache for the next part
#pragma GCC unroll 4
      for (int h = 0; h < NB; h += NBH) {
        I iacc[MR][NBH][P];
#pragma GCC unroll 8
        for (int r = 0; r < MR; ++r)
          for (int jj = 0; jj < NBH; ++jj)
            for (int p = 0; p < P; ++p) iacc[r][jj][p] = V::izero();
        for (int64_t c = g * cpg; c < (g + 1) * cpg; ++c) {
          if constexpr (MR == 1 && NB > BlockRun::T) {
            if (pf) {
#pragma GCC unroll 8
              for (int st = 0; st < NB / BlockRun::T; ++st)
                for (int l = 0; l < BlockRun::T; ++l) __builtin_prefetch(run.stream(st, c) + pf + 64 * l, 0, 3);
            }
          }
#pragma GCC unroll 8
          for (int jj = 0; jj < NBH; ++jj) {
            const int j = h + jj;
            const I raw = V::iload(run.chunk(j, c));
            const I lo = V::iand(raw, nib), hi = V::iand(V::template srli<4>(raw), nib);
#pragma GCC unroll 8
            for (int r = 0; r < MR; ++r) {
              int32_t a0, a1;
              std::memcpy(&a0, qa + r * K + c * 8, 4);
              std::memcpy(&a1, qa + r * K + c * 8 + 4, 4);
              const I va0 = V::iset1(a0), va1 = V::iset1(a1);
              if (ASYM) {  // activations u8, codes 0..15 as s8
                iacc[r][jj][0] = V::dot(iacc[r][jj][0], va0, lo);
                iacc[r][jj][P - 1] = V::dot(iacc[r][jj][P - 1], va1, hi);
              } else {  // codes as u8, activations s8
                iacc[r][jj][0] = V::dot(iacc[r][jj][0], lo, va0);
                iacc[r][jj][P - 1] = V::dot(iacc[r][jj][P - 1], hi, va1);
              }
            }
          }
        }
        // sum (qa - za)(qw - zw) = dot - zw * sum(qa) - za * (sum(qw) - gl * zw)
#pragma GCC unroll 8
        for (int jj = 0; jj < NBH; ++jj) {
          const int j = h + jj;
          const int64_t si = run.meta(mb0, j);
          const F sw = V::scale_load(w.scale, si, w.scale_kind);
          const I zw = w.zp ? V::zp_load(w.zp + si) : V::iset1(8);
          I wc = V::izero();
          if (ASYM) wc = V::i32load(w.wcomp + si);
#pragma GCC unroll 8
          for (int r = 0; r < MR; ++r) {
            I tot = iacc[r][jj][0];
            if (P == 2) tot = V::iadd(tot, iacc[r][jj][P - 1]);
            I corr = V::imullo(zw, V::iset1(a.a.sums[(m0 + r) * G + g]));
            if (ASYM) corr = V::iadd(corr, V::imullo(V::iset1(a.a.za[m0 + r]), wc));
            facc[r][j] = V::fmadd(V::cvt(V::isub(tot, corr)), sw, facc[r][j]);
          }
        }
      }
    }
    for (int j = 0; j < NB; ++j) {
      const int nc = ncols(w, b0 + j);
      const int64_t col = (b0 + j) * 16;
      for (int r = 0; r < MR; ++r) {
        F v = V::fmul(facc[r][j], V::fset1(a.a.sa[m0 + r]));
        if (a.bias) v = V::fadd(v, V::fload_part(a.bias + col, nc));
        V::fstore_part(a.y + (m0 + r) * a.ldy + col, v, nc);
      }
    }
  }

  // rows [m0, m0 + MR), blocks [lo, hi)
  template <int MR, int NB, bool ASYM>
  static void a8_gemv_range(const PackedView& w, const A8Args& a, int64_t m0, int64_t lo, int64_t hi) {
    int64_t b = lo;
    if (w.gl == 128) {
      if constexpr (MR == 1 && V::kGemvNB == 4) {
        // 8 blocks = 2 tiles at a time (2 sequential code streams; lo is a multiple of 8, so
        // b + 8 <= hi means 2 full tiles)
        for (; b + 8 <= hi; b += 8) a8_tile<MR, 8, ASYM, 16>(w, a, m0, b);
      }
      for (; b + NB <= hi; b += NB) a8_tile<MR, NB, ASYM, 16>(w, a, m0, b);
    } else {
      for (; b + NB <= hi; b += NB) a8_tile<MR, NB, ASYM>(w, a, m0, b);
    }
    for (; b < hi; ++b) a8_tile<MR, 1, ASYM>(w, a, m0, b);
  }

  template <bool ASYM>
  static void a8_gemv(const PackedView& w, const A8Args& a, int nthreads) {
    parallel_owned_chunks(nthreads, w.nblocks(), gemv_chunk(w, nthreads), [&](long long lo, long long hi) {
      switch (a.m) {
        case 1: a8_gemv_range<1, V::kGemvNB, ASYM>(w, a, 0, lo, hi); break;
        case 2: a8_gemv_range<2, V::kGemvNB, ASYM>(w, a, 0, lo, hi); break;
        default:  // 3-4 rows: row pairs over one whole tile at a time (the second pair from cache)
          for (long long b = lo; b < hi; b += PackedView::kTileBlocks) {
            const long long be = b + PackedView::kTileBlocks < hi ? b + PackedView::kTileBlocks : hi;
            a8_gemv_range<2, V::kGemvNB, ASYM>(w, a, 0, b, be);
            if (a.m == 4) a8_gemv_range<2, V::kGemvNB, ASYM>(w, a, 2, b, be);
            else a8_gemv_range<1, V::kGemvNB, ASYM>(w, a, 2, b, be);
          }
          break;
      }
    });
  }

  template <int R, bool ASYM>
  static void a8_tile_rows(int mr, int nbb, const PackedView& w, const A8Args& a, int64_t m0, int64_t b0) {
    if constexpr (R >= 1) {
      if (mr == R) {
        if (nbb == 2) a8_tile<R, 2, ASYM>(w, a, m0, b0);
        else a8_tile<R, 1, ASYM>(w, a, m0, b0);
      } else {
        a8_tile_rows<R - 1, ASYM>(mr, nbb, w, a, m0, b0);
      }
    }
  }

  template <bool ASYM>
  static void a8_gemm(const PackedView& w, const A8Args& a, int nthreads) {
    const int64_t nb = w.nblocks();
    // column chunks of about 192 KiB of packed weights (stay in L2 while all row tiles use them)
    int64_t cb = (192 * 1024) / (w.k * 8);
    cb = imax(2, cb & ~int64_t(1));
    const GemmPlan p = plan(a.m, nb, cb, nthreads);
    const int nt = static_cast<int>(imin(nthreads, p.tasks()));
    long long next = 0;
    parallel_dynamic(nt, [&] {
      for (;;) {
        const int64_t task = __atomic_fetch_add(&next, 1, __ATOMIC_RELAXED);
        if (task >= p.tasks()) break;
        const int64_t chunk = task / p.msplit, mp = task % p.msplit;
        const int64_t b0 = chunk * p.chunk_blocks, nbk = imin(p.chunk_blocks, nb - b0);
        const int64_t m_lo = mp * p.mpart, m_hi = imin(a.m, m_lo + p.mpart);
        for (int64_t m = m_lo; m < m_hi; m += kMR) {
          const int mr = static_cast<int>(imin(kMR, m_hi - m));
          for (int64_t jb = 0; jb < nbk; jb += 2)
            a8_tile_rows<kMR, ASYM>(mr, static_cast<int>(imin(2, nbk - jb)), w, a, m, b0 + jb);
        }
      }
    });
  }

  static void a8w4(const PackedView& w, const A8Args& a, int nthreads) {
    if (a.m <= kGemvMaxM) {
      if (a.a.asym) a8_gemv<true>(w, a, nthreads);
      else a8_gemv<false>(w, a, nthreads);
    } else {
      if (a.a.asym) a8_gemm<true>(w, a, nthreads);
      else a8_gemm<false>(w, a, nthreads);
    }
  }

  // ------------------------------------------------------------------ dtype conversions
  static void to_f32(const void* src, int kind, float* dst, int64_t count) {
    if (kind == kScaleF32) return to_f32_scalar(src, kind, dst, count);
    int64_t i = 0;
    for (; i + 16 <= count; i += 16) V::fstore_full(dst + i, V::scale_load(src, i, kind));
    to_f32_scalar(static_cast<const uint16_t*>(src) + i, kind, dst + i, count - i);
  }

  static void from_f32(const float* src, void* dst, int kind, int64_t count) {
    uint16_t* h = static_cast<uint16_t*>(dst);
    int64_t i = 0;
    if (kind == kScaleF16) {
      for (; i + 8 <= count; i += 8)  // F16C: IEEE round to nearest even
        _mm_storeu_si128(reinterpret_cast<__m128i*>(h + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    } else if (kind == kScaleBF16) {
      const __m256i bias = _mm256_set1_epi32(0x7fff), one = _mm256_set1_epi32(1),
                    qnan = _mm256_set1_epi32(0x7fc0);
      for (; i + 16 <= count; i += 16) {
        __m256i r[2];
        for (int half = 0; half < 2; ++half) {
          const __m256 v = _mm256_loadu_ps(src + i + 8 * half);
          const __m256i u = _mm256_castps_si256(v);
          __m256i t = _mm256_add_epi32(u, _mm256_add_epi32(bias, _mm256_and_si256(_mm256_srli_epi32(u, 16), one)));
          t = _mm256_srli_epi32(t, 16);
          const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
          r[half] = _mm256_blendv_epi8(t, qnan, nan);
        }
        // pack 2 x 8 int32 (each < 65536) to 16 uint16 in order
        const __m256i p = _mm256_permute4x64_epi64(_mm256_packus_epi32(r[0], r[1]), 0xd8);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(h + i), p);
      }
    }
    from_f32_scalar(src + i, kind == kScaleF32 ? static_cast<void*>(static_cast<float*>(dst) + i)
                                               : static_cast<void*>(h + i), kind, count - i);
  }

  // ------------------------------------------------------------------ activation quantization
  // Bit-exact with nybble.primitives.quantize_activations: max/min are order independent, the
  // divisions are IEEE (vdivps), rounding is to nearest even (vroundps), clamps as documented.
  static float hmax8(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
    return _mm_cvtss_f32(m);
  }
  static float hmin8(__m256 v) {
    __m128 m = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_min_ps(m, _mm_movehl_ps(m, m));
    m = _mm_min_ss(m, _mm_shuffle_ps(m, m, 1));
    return _mm_cvtss_f32(m);
  }
  static float rne(float v) { return __builtin_nearbyintf(v); }
  static float clampf(float v, float lo, float hi) { return v < lo ? lo : (v > hi ? hi : v); }

  static void quant_row(const float* x, int64_t k, int64_t gl, bool asym, uint8_t* q, float* sa, int32_t* za,
                        int32_t* sums) {
    const int64_t k8 = k & ~int64_t(7);  // K is a multiple of 8; kept general for the tail loop
    constexpr int kRound = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    float s, z = 0.f, qlo, qhi;
    if (asym) {
      __m256 vlo = _mm256_setzero_ps(), vhi = _mm256_setzero_ps();
      for (int64_t i = 0; i < k8; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        vlo = _mm256_min_ps(vlo, v);
        vhi = _mm256_max_ps(vhi, v);
      }
      float lo = hmin8(vlo), hi = hmax8(vhi);
      for (int64_t i = k8; i < k; ++i) {
        lo = x[i] < lo ? x[i] : lo;
        hi = x[i] > hi ? x[i] : hi;
      }
      const float range = hi - lo;
      s = range / 255.0f;
      if (s == 0.f) s = 1.f;
      z = clampf(rne(-lo / s), 0.f, 255.f);
      qlo = 0.f;
      qhi = 255.f;
    } else {
      const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
      __m256 vmax = _mm256_setzero_ps();
      for (int64_t i = 0; i < k8; i += 8) vmax = _mm256_max_ps(vmax, _mm256_and_ps(absmask, _mm256_loadu_ps(x + i)));
      float amax = hmax8(vmax);
      for (int64_t i = k8; i < k; ++i) {
        const float a = x[i] < 0.f ? -x[i] : x[i];
        amax = a > amax ? a : amax;
      }
      s = amax / 127.0f;
      if (s == 0.f) s = 1.f;
      qlo = -127.f;
      qhi = 127.f;
    }
    const __m256 vs = _mm256_set1_ps(s), vz = _mm256_set1_ps(z), vqlo = _mm256_set1_ps(qlo),
                 vqhi = _mm256_set1_ps(qhi);
    for (int64_t i = 0; i < k8; i += 8) {
      __m256 v = _mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(x + i), vs), kRound);
      v = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(v, vz), vqlo), vqhi);
      const __m256i iv = _mm256_cvtps_epi32(v);
      const __m128i w16 = _mm_packs_epi32(_mm256_castsi256_si128(iv), _mm256_extracti128_si256(iv, 1));
      _mm_storel_epi64(reinterpret_cast<__m128i*>(q + i), asym ? _mm_packus_epi16(w16, w16) : _mm_packs_epi16(w16, w16));
    }
    for (int64_t i = k8; i < k; ++i) {
      const int v = static_cast<int>(clampf(rne(x[i] / s) + z, qlo, qhi));
      q[i] = static_cast<uint8_t>(v);
    }
    *sa = s;
    *za = static_cast<int32_t>(z);
    for (int64_t g = 0; g < k / gl; ++g) {
      int32_t acc = 0;
      if (asym) {
        for (int64_t i = g * gl; i < (g + 1) * gl; ++i) acc += q[i];
      } else {
        for (int64_t i = g * gl; i < (g + 1) * gl; ++i) acc += static_cast<int8_t>(q[i]);
      }
      sums[g] = acc;
    }
  }

  // ------------------------------------------------------------------ decode attention rows
  struct AttnOps {
    static void to_f32(const void* src, int kind, float* dst, int64_t n) { X86Kernels::to_f32(src, kind, dst, n); }
    static void from_f32(const float* src, void* dst, int kind, int64_t n) { X86Kernels::from_f32(src, dst, kind, n); }
    static float dot(const float* a, const float* b, int64_t n) {
      F acc0 = V::fzero(), acc1 = V::fzero();
      int64_t i = 0;
      for (; i + 32 <= n; i += 32) {
        acc0 = V::fmadd(V::fload(a + i), V::fload(b + i), acc0);
        acc1 = V::fmadd(V::fload(a + i + 16), V::fload(b + i + 16), acc1);
      }
      for (; i < n; i += 16) {
        const int c = static_cast<int>(imin(16, n - i));
        acc0 = V::fmadd(V::fload_part(a + i, c), V::fload_part(b + i, c), acc0);
      }
      return hsum(V::fadd(acc0, acc1));
    }
    static void axpy(float alpha, const float* x, float* y, int64_t n) {
      const F av = V::fset1(alpha);
      for (int64_t i = 0; i < n; i += 16) {
        const int c = static_cast<int>(imin(16, n - i));
        V::fstore_part(y + i, V::fmadd(av, V::fload_part(x + i, c), V::fload_part(y + i, c)), c);
      }
    }
  };
  static void attn_decode(const AttnArgs& a, int nthreads) { attn_decode_impl<AttnOps>(a, nthreads); }

  static IsaKernels table() {
    IsaKernels t{a16w4, a8w4, to_f32, from_f32, quant_row};
    t.attn_decode = attn_decode;
    return t;
  }
};

}  // namespace
}  // namespace nybble
