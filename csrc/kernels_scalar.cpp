// The scalar reference path: plain loops over the packed layout, same arithmetic as the SIMD paths.
#include <vector>

#include "attention.h"
#include "kernels.h"
#include "scale_load.h"
#include "thread_pool.h"

namespace nybble {
namespace {

void a16w4_scalar(const PackedView& w, const A16Args& a, int nthreads) {
  const int64_t nb = w.nblocks(), G = w.groups();
  parallel_run(nthreads, [&](int tid, int nt) {
    long long b0, b1;
    split_range(nb, tid, nt, 1, &b0, &b1);
    std::vector<float> wcol(w.k);
    for (long long b = b0; b < b1; ++b) {
      for (int c = 0; c < 16; ++c) {
        const int64_t n = b * 16 + c;
        if (n >= w.n) break;
        for (int64_t g = 0; g < G; ++g) {
          const float s = packed_scale(w, b, g, c);
          const int z = packed_zero(w, b, g, c);
          for (int64_t kk = g * w.gl; kk < (g + 1) * w.gl; ++kk)
            wcol[kk] = static_cast<float>(packed_code(w, b, kk, c) - z) * s;
        }
        for (int64_t r = 0; r < a.m; ++r) {
          const float* x = a.x + r * a.ldx;
          float acc = 0.f;
          for (int64_t kk = 0; kk < w.k; ++kk) acc += x[kk] * wcol[kk];
          if (a.bias) acc += a.bias[n];
          a.y[r * a.ldy + n] = acc;
        }
      }
    }
  });
}

void a8w4_scalar(const PackedView& w, const A8Args& a, int nthreads) {
  const int64_t nb = w.nblocks(), G = w.groups(), K = w.k;
  parallel_run(nthreads, [&](int tid, int nt) {
    long long b0, b1;
    split_range(nb, tid, nt, 1, &b0, &b1);
    std::vector<int> codes(K);
    for (long long b = b0; b < b1; ++b) {
      for (int c = 0; c < 16; ++c) {
        const int64_t n = b * 16 + c;
        if (n >= w.n) break;
        for (int64_t kk = 0; kk < K; ++kk) codes[kk] = packed_code(w, b, kk, c);
        for (int64_t r = 0; r < a.m; ++r) {
          const uint8_t* q = a.a.q + r * K;
          const int32_t za = a.a.za[r];
          float facc = 0.f;
          for (int64_t g = 0; g < G; ++g) {
            const int zw = packed_zero(w, b, g, c);
            int32_t acc = 0;
            for (int64_t kk = g * w.gl; kk < (g + 1) * w.gl; ++kk) {
              const int qa = a.a.asym ? static_cast<int>(q[kk]) : static_cast<int>(static_cast<int8_t>(q[kk]));
              acc += (qa - za) * (codes[kk] - zw);
            }
            facc += static_cast<float>(acc) * packed_scale(w, b, g, c);
          }
          float out = facc * a.a.sa[r];
          if (a.bias) out += a.bias[n];
          a.y[r * a.ldy + n] = out;
        }
      }
    }
  });
}

struct AttnOpsScalar {
  static void to_f32(const void* src, int kind, float* dst, int64_t n) { to_f32_scalar(src, kind, dst, n); }
  static void from_f32(const float* src, void* dst, int kind, int64_t n) { from_f32_scalar(src, dst, kind, n); }
  static float dot(const float* a, const float* b, int64_t n) {
    float s = 0.f;
    for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
    return s;
  }
  static void axpy(float alpha, const float* x, float* y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
  }
};

void attn_decode_scalar(const AttnArgs& a, int nthreads) { attn_decode_impl<AttnOpsScalar>(a, nthreads); }

}  // namespace

IsaKernels kernels_scalar() {
  IsaKernels t{a16w4_scalar, a8w4_scalar, to_f32_scalar, from_f32_scalar, quantize_row_scalar};
  t.attn_decode = attn_decode_scalar;
  return t;
}

}  // namespace nybble
