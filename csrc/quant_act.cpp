// Per-token int8 activation quantization, bit-exact with nybble.primitives.quantize_activations:
// IEEE fp32 divisions, round half to even (nearbyint in the default rounding mode), clamps.
#include <cmath>

#include "kernels.h"
#include "thread_pool.h"

namespace nybble {

void quantize_row_scalar(const float* x, int64_t k, int64_t gl, bool asym, uint8_t* q, float* sa, int32_t* za,
                  int32_t* sums) {
  if (asym) {
    float lo = 0.f, hi = 0.f;
    for (int64_t i = 0; i < k; ++i) {
      lo = std::fmin(lo, x[i]);
      hi = std::fmax(hi, x[i]);
    }
    const float range = hi - lo;
    float s = range / 255.0f;
    if (s == 0.f) s = 1.f;
    float z = std::nearbyint(-lo / s);
    z = std::fmin(std::fmax(z, 0.f), 255.f);
    for (int64_t i = 0; i < k; ++i) {
      float v = std::nearbyint(x[i] / s) + z;
      v = std::fmin(std::fmax(v, 0.f), 255.f);
      q[i] = static_cast<uint8_t>(static_cast<int>(v));
    }
    *sa = s;
    *za = static_cast<int32_t>(z);
    for (int64_t g = 0; g < k / gl; ++g) {
      int32_t acc = 0;
      for (int64_t i = g * gl; i < (g + 1) * gl; ++i) acc += q[i];
      sums[g] = acc;
    }
  } else {
    float amax = 0.f;
    for (int64_t i = 0; i < k; ++i) amax = std::fmax(amax, std::fabs(x[i]));
    float s = amax / 127.0f;
    if (s == 0.f) s = 1.f;
    for (int64_t i = 0; i < k; ++i) {
      float v = std::nearbyint(x[i] / s);
      v = std::fmin(std::fmax(v, -127.f), 127.f);
      q[i] = static_cast<uint8_t>(static_cast<int8_t>(static_cast<int>(v)));
    }
    *sa = s;
    *za = 0;
    for (int64_t g = 0; g < k / gl; ++g) {
      int32_t acc = 0;
      for (int64_t i = g * gl; i < (g + 1) * gl; ++i) acc += static_cast<int8_t>(q[i]);
      sums[g] = acc;
    }
  }
}

void quantize_activations(QuantRowFn row, const float* x, int64_t m, int64_t ldx, int64_t k, int64_t gl, bool asym,
                          uint8_t* q, float* sa, int32_t* za, int32_t* sums, int nthreads) {
  const int64_t groups = k / gl;
  const int nt = m < nthreads ? static_cast<int>(m) : nthreads;
  parallel_run(nt < 1 ? 1 : nt, [&](int tid, int n) {
    long long lo, hi;
    split_range(m, tid, n, 1, &lo, &hi);
    for (long long r = lo; r < hi; ++r)
      row(x + r * ldx, k, gl, asym, q + r * k, sa + r, za + r, sums + r * groups);
  });
}

}  // namespace nybble
