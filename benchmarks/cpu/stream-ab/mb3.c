#include "omp.h"
#include <immintrin.h>
#include <stdint.h>
#include <string.h>
#include <pthread.h>
// prototype A8W4 M=1 GEMV, tiles of 4 blocks. mode: 0 block-major codes+meta (current), 1 codes tile-interleaved,
// meta block-major; 2 codes+meta tile-interleaved (3 streams); 3 single stream: per tile per group
// [codes 16x4x64][scales 4x16 bf16][zp 4x16]
typedef struct { const uint8_t* qw; const uint16_t* scale; const int8_t* zp; int64_t nb, K; const int8_t* qa;
  const int32_t* sums; float* y; int mode; int64_t pf, lo, hi; } Args;
static void run0(const Args* A) {
  const int64_t K = A->K, K8 = K >> 3, G = K / 128, cpg = 16, nb = A->nb;
  const __m512i nib = _mm512_set1_epi32(0x0f0f0f0f);
  const int mode = A->mode;
  for (int64_t b0 = A->lo; b0 < A->hi; b0 += 4) {
    const uint8_t* qp[4]; int64_t cs = 256, gstride = 0;
    const uint8_t* tile = A->qw + b0 * K8 * 64 + (mode == 3 ? b0 * G * 48 : 0);
    for (int j = 0; j < 4; ++j) qp[j] = mode == 0 ? A->qw + (b0 + j) * K8 * 64 : tile + j * 64;
    if (mode == 0) cs = 64;
    if (mode == 3) gstride = 192;  // extra bytes per group
    __m512 facc[4];
    for (int j = 0; j < 4; ++j) facc[j] = _mm512_setzero_ps();
    for (int64_t g = 0; g < G; ++g) {
      __m512i ia[4][2];
      for (int j = 0; j < 4; ++j) ia[j][0] = ia[j][1] = _mm512_setzero_si512();
      const int64_t goff = g * gstride;
      for (int64_t c = g * cpg; c < (g + 1) * cpg; ++c) {
        int32_t a0, a1; memcpy(&a0, A->qa + c * 8, 4); memcpy(&a1, A->qa + c * 8 + 4, 4);
        const __m512i va0 = _mm512_set1_epi32(a0), va1 = _mm512_set1_epi32(a1);
        if (A->pf) {
          if (mode == 0) for (int j = 0; j < 4; ++j) _mm_prefetch((const char*)qp[j] + c * cs + A->pf, _MM_HINT_T0);
          else { _mm_prefetch((const char*)qp[0] + goff + c * cs + A->pf, _MM_HINT_T0); _mm_prefetch((const char*)qp[0] + goff + c * cs + A->pf + 128, _MM_HINT_T0); }
        }
        for (int j = 0; j < 4; ++j) {
          const __m512i raw = _mm512_loadu_si512(qp[j] + goff + c * cs);
          const __m512i l = _mm512_and_si512(raw, nib), h = _mm512_and_si512(_mm512_srli_epi32(raw, 4), nib);
          ia[j][0] = _mm512_dpbusd_epi32(ia[j][0], l, va0);
          ia[j][1] = _mm512_dpbusd_epi32(ia[j][1], h, va1);
        }
      }
      for (int j = 0; j < 4; ++j) {
        const uint16_t* sp; const int8_t* zp;
        if (mode <= 1) { int64_t si = ((b0 + j) * G + g) * 16; sp = A->scale + si; zp = A->zp + si; }
        else if (mode == 2) { int64_t si = (b0 * G + g * 4 + j) * 16; sp = A->scale + si; zp = A->zp + si; }
        else { const uint8_t* m = tile + (g + 1) * (cpg * 256 + 192) - 192; sp = (const uint16_t*)m + j * 16; zp = (const int8_t*)(m + 128) + j * 16; }
        const __m256i hs = _mm256_loadu_si256((const __m256i*)sp);
        const __m512 sw = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(hs), 16));
        const __m512i zw = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)zp));
        __m512i tot = _mm512_add_epi32(ia[j][0], ia[j][1]);
        tot = _mm512_sub_epi32(tot, _mm512_mullo_epi32(zw, _mm512_set1_epi32(A->sums[g])));
        facc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(tot), sw, facc[j]);
      }
    }
    for (int j = 0; j < 4; ++j) _mm512_storeu_ps(A->y + (b0 + j) * 16, facc[j]);
  }
}

static void run_s(const Args* A, int S) {
  const int64_t K = A->K, K8 = K >> 3, G = K / 128, cpg = 16;
  const __m512i nib = _mm512_set1_epi32(0x0f0f0f0f);
  const int64_t Gs = G / S;
  for (int64_t b0 = A->lo; b0 < A->hi; b0 += 4) {
    const uint8_t* tile = A->qw + b0 * K8 * 64;
    __m512 facc[4];
    for (int j = 0; j < 4; ++j) facc[j] = _mm512_setzero_ps();
    for (int64_t gg = 0; gg < Gs; ++gg) {
      __m512i ia[4][4][2];
      for (int s = 0; s < S; ++s) for (int j = 0; j < 4; ++j) ia[s][j][0] = ia[s][j][1] = _mm512_setzero_si512();
      for (int64_t cc = 0; cc < cpg; ++cc) {
        for (int s = 0; s < S; ++s) {
          const int64_t c = (gg + s * Gs) * cpg + cc;
          int32_t a0, a1; memcpy(&a0, A->qa + c * 8, 4); memcpy(&a1, A->qa + c * 8 + 4, 4);
          const __m512i va0 = _mm512_set1_epi32(a0), va1 = _mm512_set1_epi32(a1);
          for (int j = 0; j < 4; ++j) {
            const __m512i raw = _mm512_loadu_si512(tile + c * 256 + 64 * j);
            const __m512i l = _mm512_and_si512(raw, nib), h = _mm512_and_si512(_mm512_srli_epi32(raw, 4), nib);
            ia[s][j][0] = _mm512_dpbusd_epi32(ia[s][j][0], l, va0);
            ia[s][j][1] = _mm512_dpbusd_epi32(ia[s][j][1], h, va1);
          }
        }
      }
      for (int s = 0; s < S; ++s) {
        const int64_t g = gg + s * Gs;
        for (int j = 0; j < 4; ++j) {
          int64_t si = (b0 * G + g * 4 + j) * 16;
          const __m256i hs = _mm256_loadu_si256((const __m256i*)(A->scale + si));
          const __m512 sw = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(hs), 16));
          const __m512i zw = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)(A->zp + si)));
          __m512i tot = _mm512_add_epi32(ia[s][j][0], ia[s][j][1]);
          tot = _mm512_sub_epi32(tot, _mm512_mullo_epi32(zw, _mm512_set1_epi32(A->sums[g])));
          facc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(tot), sw, facc[j]);
        }
      }
    }
    for (int j = 0; j < 4; ++j) _mm512_storeu_ps(A->y + (b0 + j) * 16, facc[j]);
  }
}
static void run(const Args* A) {
  if (A->mode == 4) { run_s(A, 2); return; }
  if (A->mode == 5) { run_s(A, 4); return; }
  run0(A);
}
static long long next_tile; static long long rnext[8];
static void ompa8(void* p) { Args a = *(const Args*)p; int t = gtn(), n = gnt();
  if (a.pf == -2) { a.pf = 0; int64_t ntile = (a.nb + 3) / 4;
    for (int q = 0; q < n; ++q) { int r = (t + q) % n; int64_t hi = ((r + 1) * ntile / n) * 4; if (hi > a.nb) hi = a.nb;
      for (;;) { long long lo = __atomic_fetch_add(&rnext[r], 4, __ATOMIC_RELAXED); if (lo >= hi) break; a.lo = lo; a.hi = lo + 4 < hi ? lo + 4 : hi; run(&a); } }
    return; }
  if (a.pf < 0) { a.pf = 0; for (;;) { long long lo = __atomic_fetch_add(&next_tile, 4, __ATOMIC_RELAXED); if (lo >= a.nb) break; a.lo = lo; a.hi = lo + 4 < a.nb ? lo + 4 : a.nb; run(&a); } return; }
  int64_t per = ((a.nb + 4 * n - 1) / (4 * n)) * 4; a.lo = t * per; a.hi = (t + 1) * per < a.nb ? (t + 1) * per : a.nb; if (a.lo < a.hi) run(&a); }
void a8(const uint8_t* qw, const uint16_t* scale, const int8_t* zp, int64_t nb, int64_t K, const int8_t* qa,
        const int32_t* sums, float* y, int mode, int64_t pf, int nt) {
  Args a = {qw, scale, zp, nb, K, qa, sums, y, mode, pf, 0, nb};
  if (nt == 1) { run(&a); return; }
  omp_init(); next_tile = 0; { int64_t ntile = (nb + 3) / 4; for (int r = 0; r < nt; ++r) rnext[r] = (r * ntile / nt) * 4; } gp(ompa8, &a, nt, 0);
}
// plain linear read, nt threads
typedef struct { const uint8_t* p; int64_t n; int64_t r; } LA;
static void* linr(void* v) { LA* a = (LA*)v; __m512i a0=_mm512_setzero_si512(),a1=a0,a2=a0,a3=a0;
  for (int64_t i=0;i<a->n;i+=256){ a0=_mm512_add_epi32(a0,_mm512_loadu_si512(a->p+i)); a1=_mm512_add_epi32(a1,_mm512_loadu_si512(a->p+i+64));
    a2=_mm512_add_epi32(a2,_mm512_loadu_si512(a->p+i+128)); a3=_mm512_add_epi32(a3,_mm512_loadu_si512(a->p+i+192)); }
  a->r = _mm512_reduce_add_epi32(_mm512_add_epi32(_mm512_add_epi32(a0,a1),_mm512_add_epi32(a2,a3))); return 0; }
static volatile int64_t sink; static void omplin(void* v) { LA a = *(LA*)v; int t = gtn(); int64_t h = (a.n / 512) * 256; if (t) { a.p += h; a.n -= h; } else a.n = h; linr(&a); sink = a.r; }
int64_t lin(const uint8_t* p, int64_t n, int nt) {
  LA a = {p, n, 0}; if (nt == 1) { linr(&a); return a.r; }
  omp_init(); gp(omplin, &a, nt, 0); return 0; }
