// Decode attention: one query token per head against a KV cache, for the CPU decode path
// (nybble.kernels.cpu_attention). Compiled into every ISA path with that path's row operations.
//
// out[h] = softmax(scale * q[h] . K[kh]^T + mask) @ V[kh], kh = h / (H / Hkv) (grouped-query
// attention: the H / Hkv query heads of a KV head share its K and V rows, so each row is converted
// to fp32 once and used by all of them). Scores, softmax (max-subtracted, expf) and the weighted
// sum of V are fp32; the output is rounded once to the tensors' dtype. Threads split the KV heads.
//   q    (H, D) rows of `kind` (fp32 / bf16 / fp16 bits), head stride q_head elements
//   k, v (Hkv, L, D) rows of `kind`, strides k_head / k_pos, v_head / v_pos elements; the D
//        elements of a row are contiguous
//   mask (L,) fp32 added to every head's scores or null
//   pos  the positions l to visit (ascending), npos of them, or null for all L: positions whose
//        mask is -inf (false for a boolean mask) are left out by the caller (exp(-inf) = 0: they add
//        nothing to the sums), so a static cache's empty tail costs nothing
//   out  (H, D) of `kind`, head stride o_head elements
#pragma once
#include <cmath>
#include <cstdlib>

#include "kernels.h"
#include "thread_pool.h"

namespace nybble {
namespace {  // internal linkage: see thread_pool.h

// Ops: to_f32(src, kind, dst, n), dot(a, b, n) -> float, axpy(alpha, x, y, n) (y += alpha x),
// from_f32(src, dst, kind, n): the path's row operations on fp32 rows of n elements.
template <class Ops>
void attn_decode_impl(const AttnArgs& a, int nthreads) {
  const int64_t grp = a.h / a.hkv, D = a.d, L = a.pos ? a.npos : a.l;  // L: positions visited
  const int64_t esz = a.kind == kScaleF32 ? 4 : 2;
  const auto at = [esz](const void* base, int64_t elems) {
    return static_cast<const void*>(static_cast<const char*>(base) + elems * esz);
  };
  // one thread for small problems (the team's wake-up costs more than it saves)
  const int nt = a.hkv * L * D * grp < (int64_t(1) << 15) ? 1 : (nthreads < 1 ? 1 : nthreads);
  parallel_run(nt, [&](int tid, int n) {
    long long h0, h1;
    split_range(a.hkv, tid, n, 1, &h0, &h1);
    if (h0 >= h1) return;
    // q (grp, D), row (D), s (grp, L), acc (grp, D): plain malloc (no out-of-line std:: code here)
    float* buf = static_cast<float*>(std::malloc(sizeof(float) * (grp * D * 2 + D + grp * L)));
    float* q = buf;
    float* acc = q + grp * D;
    float* row = acc + grp * D;
    float* s = row + D;
    for (long long kh = h0; kh < h1; ++kh) {
      for (int64_t g = 0; g < grp; ++g) Ops::to_f32(at(a.q, (kh * grp + g) * a.q_head), a.kind, q + g * D, D);
      for (int64_t l = 0; l < L; ++l) {
        const int64_t p = a.pos ? a.pos[l] : l;  // the cache position of visited position l
        Ops::to_f32(at(a.k, kh * a.k_head + p * a.k_pos), a.kind, row, D);
        const float mk = a.mask ? a.mask[p] : 0.f;
        for (int64_t g = 0; g < grp; ++g) s[g * L + l] = Ops::dot(q + g * D, row, D) * a.scale + mk;
      }
      for (int64_t g = 0; g < grp; ++g) {
        float* sg = s + g * L;
        float mx = -INFINITY;
        for (int64_t l = 0; l < L; ++l) mx = sg[l] > mx ? sg[l] : mx;
        float sum = 0.f;
        for (int64_t l = 0; l < L; ++l) {
          sg[l] = expf(sg[l] - mx);
          sum += sg[l];
        }
        const float inv = 1.f / sum;
        for (int64_t l = 0; l < L; ++l) sg[l] *= inv;
        for (int64_t d = 0; d < D; ++d) acc[g * D + d] = 0.f;
      }
      for (int64_t l = 0; l < L; ++l) {
        Ops::to_f32(at(a.v, kh * a.v_head + (a.pos ? a.pos[l] : l) * a.v_pos), a.kind, row, D);
        for (int64_t g = 0; g < grp; ++g) Ops::axpy(s[g * L + l], row, acc + g * D, D);
      }
      for (int64_t g = 0; g < grp; ++g)
        Ops::from_f32(acc + g * D, static_cast<char*>(a.out) + (kh * grp + g) * a.o_head * esz, a.kind, D);
    }
    std::free(buf);
  });
}

}  // namespace
}  // namespace nybble
