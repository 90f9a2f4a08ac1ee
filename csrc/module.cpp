// The nybble._C extension module: Python bindings of the CPU kernels (no PyTorch headers).
//
// Tensors cross the boundary as raw addresses (Python ints from torch.Tensor.data_ptr()) with
// explicit sizes and row strides; the Python side (nybble.kernels.cpu) checks dtypes, shapes,
// contiguity and devices before calling. The GIL is released while a kernel runs.
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <Python.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <mutex>
#include <stdexcept>
#include <vector>

#include "cpu_features.h"
#include "dispatch.h"
#include "kernels.h"
#include "prefetch.h"
#include "thread_pool.h"

namespace nb = nanobind;
using std::int64_t;

namespace {

// Below this many multiply-adds a second thread costs more (wake-up, split) than it saves.
constexpr int64_t kMinParallelMacs = int64_t(1) << 18;

int pick_threads(int nthreads, int64_t m, int64_t n, int64_t k) {
  if (nthreads < 1 || m * n * k < kMinParallelMacs) return 1;
  return nthreads;
}

template <class T>
T* ptr(uintptr_t p) {
  return reinterpret_cast<T*>(p);
}

// Set while a C entry point of kernel_api() runs (see there): the kernels then leave the GIL alone.
thread_local bool t_in_c_api = false;

// Releases the GIL while a kernel runs (the nanobind bindings are called with it held); inside a
// kernel_api() entry point, whose caller need not hold it, does nothing.
struct GilRelease {
  PyThreadState* state = t_in_c_api ? nullptr : PyEval_SaveThread();
  GilRelease() = default;
  GilRelease(const GilRelease&) = delete;
  GilRelease& operator=(const GilRelease&) = delete;
  ~GilRelease() {
    if (state) PyEval_RestoreThread(state);
  }
};

nybble::PackedView packed_view(uintptr_t qw, uintptr_t scale, int scale_kind, uintptr_t zp, uintptr_t wcomp,
                               int64_t n, int64_t k, int64_t gl) {
  if (n < 1 || k < 8 || k % 8 || gl < 8 || gl % 8 || k % gl)
    throw std::invalid_argument("nybble._C: bad shape (need N >= 1, K and group length multiples of 8, K % group == 0)");
  if (scale_kind < 0 || scale_kind > 2) throw std::invalid_argument("nybble._C: scale_kind must be 0, 1 or 2");
  return {ptr<const uint8_t>(qw), ptr<const void>(scale), scale_kind, ptr<const int8_t>(zp),
          ptr<const int32_t>(wcomp), n, k, gl};
}

// fp32 views of the input and output: converted (threaded, in C++) when x / y are bf16 or fp16,
// so that no torch op (and no OpenMP region of torch's) runs around the kernel.
// Per-thread scratch buffers of the op calls, grown as needed and kept (a call used to allocate
// and zero-fill fresh std::vectors for the fp32 output, the fp32 input and the A8W4 activation codes:
// ~1 us per decode call at N = 11264). Contents are always written before they are read.
template <class T>
struct Scratch {
  T* p = nullptr;
  size_t cap = 0;
  T* get(size_t n) {
    if (n > cap) {
      std::free(p);
      p = static_cast<T*>(std::malloc(sizeof(T) * (n < 16 ? 16 : n)));
      if (!p) {
        cap = 0;
        throw std::bad_alloc();
      }
      cap = n < 16 ? 16 : n;
    }
    return p;
  }
  ~Scratch() { std::free(p); }
};
struct OpScratch {
  Scratch<float> x, y, sa;
  Scratch<uint8_t> q;
  Scratch<int32_t> za, sums;
};
thread_local OpScratch t_scratch;

struct F32Io {
  const float* x = nullptr;
  int64_t ldx = 0;
  float* y = nullptr;
  int64_t ldy = 0;
};

void check_kind(int kind, const char* what) {
  if (kind < 0 || kind > 2) throw std::invalid_argument(std::string("nybble._C: bad dtype kind for ") + what);
}

// io.y / io.ldy: y itself when it is fp32, else an (M, N) fp32 scratch buffer of this thread.
void f32_output_buffer(F32Io& io, uintptr_t y, int y_kind, int64_t m, int64_t n, int64_t ldy) {
  if (y_kind == nybble::kScaleF32) {
    io.y = ptr<float>(y);
    io.ldy = ldy;
  } else {
    io.y = t_scratch.y.get(static_cast<size_t>(m * n));
    io.ldy = n;
  }
}

F32Io f32_inputs(const nybble::IsaKernels& kern, uintptr_t x, int x_kind, int64_t m, int64_t ldx, int64_t k,
                 uintptr_t y, int y_kind, int64_t n, int64_t ldy, int nt) {
  F32Io io;
  if (x_kind == nybble::kScaleF32) {
    io.x = ptr<const float>(x);
    io.ldx = ldx;
  } else {
    float* dst = t_scratch.x.get(static_cast<size_t>(m * k));
    const uint16_t* src = ptr<const uint16_t>(x);
    nybble::parallel_chunks(nt, m, 1 + (1 << 16) / k, [&](long long lo, long long hi) {
      for (long long r = lo; r < hi; ++r) kern.to_f32(src + r * ldx, x_kind, dst + r * k, k);
    });
    io.x = dst;
    io.ldx = k;
  }
  f32_output_buffer(io, y, y_kind, m, n, ldy);
  return io;
}

void f32_outputs(const nybble::IsaKernels& kern, const F32Io& io, uintptr_t y, int y_kind, int64_t m, int64_t n,
                 int64_t ldy, int nt) {
  if (y_kind == nybble::kScaleF32) return;
  uint16_t* dst = ptr<uint16_t>(y);
  nybble::parallel_chunks(nt, m, 1 + (1 << 16) / n, [&](long long lo, long long hi) {
    for (long long r = lo; r < hi; ++r) kern.from_f32(io.y + r * n, dst + r * ldy, y_kind, n);
  });
}

// The weight arrays of a call (codes, scales, zero points, compensation sums) for the cross-op
// prefetch (prefetch.h); on_entry now, on_exit when the call returns (after the kernel).
struct PrefetchScope {
  nybble::prefetch::OpWeights w;
  int64_t m;
  PrefetchScope(const nybble::PackedView& v, int64_t rows) : m(rows) {
    const int64_t meta = v.nblocks() * v.groups() * 16;
    w.add(reinterpret_cast<uintptr_t>(v.qw), v.nblocks() * v.k * 8);
    w.add(reinterpret_cast<uintptr_t>(v.scale), meta * (v.scale_kind == nybble::kScaleF32 ? 4 : 2));
    w.add(reinterpret_cast<uintptr_t>(v.zp), meta);
    w.add(reinterpret_cast<uintptr_t>(v.wcomp), meta * 4);
    nybble::prefetch::Prefetcher::get().on_entry(w, m);
  }
  ~PrefetchScope() { nybble::prefetch::Prefetcher::get().on_exit(w, m); }
};

void a16w4(const std::string& isa, uintptr_t x, int x_kind, int64_t m, int64_t ldx, uintptr_t qw, uintptr_t scale,
           int scale_kind, uintptr_t zp, int64_t n, int64_t k, int64_t gl, uintptr_t bias, uintptr_t y,
           int y_kind, int64_t ldy, int nthreads) {
  const nybble::IsaKernels kern = nybble::isa_kernels(isa);
  const nybble::PackedView w = packed_view(qw, scale, scale_kind, zp, 0, n, k, gl);
  check_kind(x_kind, "x");
  check_kind(y_kind, "y");
  if (m <= 0) return;
  const PrefetchScope pf(w, m);
  GilRelease release;
  const int nt = pick_threads(nthreads, m, n, k);
  if (x_kind == nybble::kScaleBF16 && kern.a16w4_bf16 && m <= kern.a16w4_bf16_max_m) {
    // bf16 activations stay bf16 (vdpbf16ps path): only the output goes through fp32
    F32Io io;
    f32_output_buffer(io, y, y_kind, m, n, ldy);
    const nybble::A16Bf16Args a{ptr<const uint16_t>(x), m, ldx, io.y, io.ldy, ptr<const float>(bias)};
    kern.a16w4_bf16(w, a, nt);
    f32_outputs(kern, io, y, y_kind, m, n, ldy, nt);
    return;
  }
  const F32Io io = f32_inputs(kern, x, x_kind, m, ldx, k, y, y_kind, n, ldy, nt);
  const nybble::A16Args a{io.x, m, io.ldx, io.y, io.ldy, ptr<const float>(bias)};
  kern.a16w4(w, a, nt);
  f32_outputs(kern, io, y, y_kind, m, n, ldy, nt);
}

void a8w4(const std::string& isa, uintptr_t x, int x_kind, int64_t m, int64_t ldx, uintptr_t qw, uintptr_t scale,
          int scale_kind, uintptr_t zp, uintptr_t wcomp, int64_t n, int64_t k, int64_t gl, bool asym,
          uintptr_t bias, uintptr_t y, int y_kind, int64_t ldy, int nthreads) {
  const nybble::IsaKernels kern = nybble::isa_kernels(isa);
  if (asym && !wcomp) throw std::invalid_argument("nybble._C.a8w4: asymmetric activations need the wcomp sums");
  const nybble::PackedView w = packed_view(qw, scale, scale_kind, zp, wcomp, n, k, gl);
  check_kind(x_kind, "x");
  check_kind(y_kind, "y");
  if (m <= 0) return;
  const PrefetchScope pf(w, m);
  GilRelease release;
  const int nt = pick_threads(nthreads, m, n, k);
  const F32Io io = f32_inputs(kern, x, x_kind, m, ldx, k, y, y_kind, n, ldy, nt);
  uint8_t* q = t_scratch.q.get(static_cast<size_t>(m * k));
  float* sa = t_scratch.sa.get(static_cast<size_t>(m));
  int32_t* za = t_scratch.za.get(static_cast<size_t>(m));
  int32_t* sums = t_scratch.sums.get(static_cast<size_t>(m * (k / gl)));
  nybble::quantize_activations(kern.quant_row, io.x, m, io.ldx, k, gl, asym, q, sa, za, sums, nt);
  const nybble::A8Args a{{q, sa, za, sums, asym}, m, io.y, io.ldy, ptr<const float>(bias)};
  kern.a8w4(w, a, nt);
  f32_outputs(kern, io, y, y_kind, m, n, ldy, nt);
}

void quantize_acts(const std::string& isa, uintptr_t x, int64_t m, int64_t ldx, int64_t k, int64_t gl, bool asym, uintptr_t q,
                   uintptr_t sa, uintptr_t za, uintptr_t sums, int nthreads) {
  if (k % gl) throw std::invalid_argument("nybble._C.quantize_activations: K must be a multiple of the group");
  nb::gil_scoped_release release;
  nybble::quantize_activations(nybble::isa_kernels(isa).quant_row, ptr<const float>(x), m, ldx, k, gl, asym, ptr<uint8_t>(q), ptr<float>(sa),
                               ptr<int32_t>(za), ptr<int32_t>(sums), nthreads < 1 ? 1 : nthreads);
}

// mask_kind: 0 = no mask, 1 = fp32 (L,) added to the scores, 2 = bool bytes (L,) (nonzero = attend).
// Positions with a -inf / false mask are not visited at all (see csrc/attention.h); when every
// position is masked the output is NaN, as softmax over -inf scores gives.
void decode_attention(const std::string& isa, uintptr_t q, int64_t q_head, uintptr_t k, int64_t k_head, int64_t k_pos,
                      uintptr_t v, int64_t v_head, int64_t v_pos, uintptr_t mask, int mask_kind, uintptr_t out,
                      int64_t o_head, int kind, int64_t h, int64_t hkv, int64_t l, int64_t d, double scale,
                      int nthreads) {
  const nybble::IsaKernels kern = nybble::isa_kernels(isa);
  check_kind(kind, "q/k/v");
  if (h < 1 || hkv < 1 || h % hkv || l < 1 || d < 1)
    throw std::invalid_argument("nybble._C.decode_attention: need H, Hkv, L, D >= 1 and H a multiple of Hkv");
  if (mask_kind < 0 || mask_kind > 2 || (mask_kind != 0 && mask == 0))
    throw std::invalid_argument("nybble._C.decode_attention: mask_kind must be 0 (none), 1 (fp32) or 2 (bool) with a mask");
  std::vector<int32_t> pos;  // the attended positions, when a mask leaves some out
  const float* madd = mask_kind == 1 ? ptr<const float>(mask) : nullptr;
  if (mask_kind != 0) {
    const uint8_t* mb = ptr<const uint8_t>(mask);
    pos.reserve(static_cast<size_t>(l));
    for (int64_t i = 0; i < l; ++i) {
      const bool attend = mask_kind == 2 ? mb[i] != 0 : !(std::isinf(madd[i]) && madd[i] < 0);
      if (attend) pos.push_back(static_cast<int32_t>(i));
    }
    if (pos.empty()) {  // softmax over -inf everywhere: NaN (as before this change, and as sdpa)
      const std::vector<float> nan_row(static_cast<size_t>(d), std::nanf(""));
      const int64_t esz = kind == nybble::kScaleF32 ? 4 : 2;
      for (int64_t i = 0; i < h; ++i)
        kern.from_f32(nan_row.data(), static_cast<char*>(ptr<void>(out)) + i * o_head * esz, kind, d);
      return;
    }
  }
  const bool use_pos = !pos.empty() && static_cast<int64_t>(pos.size()) < l;
  const nybble::AttnArgs a{ptr<const void>(q), q_head, ptr<const void>(k), k_head, k_pos, ptr<const void>(v), v_head,
                           v_pos, madd, use_pos ? pos.data() : nullptr, use_pos ? static_cast<int64_t>(pos.size()) : 0,
                           ptr<void>(out), o_head, kind, h, hkv, l, d, static_cast<float>(scale)};
  GilRelease release;
  kern.attn_decode(a, nthreads < 1 ? 1 : nthreads);
}

// ---------------------------------------------------------------- C entry points (kernel_api)
// The kernels above as plain C functions, for the optional torch dispatcher shim
// (nybble.kernels.cpu_shim: a CPU kernel of the nybble ops compiled at run time against the
// installed torch, so that the ops run without a Python frame; this module itself stays free of
// PyTorch). Same arguments as the bindings (isa as a C string, asym as int) plus an error buffer:
// each returns 0, or 1 with the error message in err (no C++ exception crosses the library
// boundary). They touch no Python state, so the caller need not hold the GIL.
#include "../src/nybble/kernels/cpu_kernel_api.h"  // struct KernelApi, NYBBLE_KERNEL_API_VERSION

template <class F>
int c_entry(char* err, int errlen, F&& f) {
  t_in_c_api = true;
  int rc = 0;
  try {
    f();
  } catch (const std::exception& e) {
    if (err && errlen > 0) std::snprintf(err, static_cast<size_t>(errlen), "%s", e.what());
    rc = 1;
  } catch (...) {
    if (err && errlen > 0) std::snprintf(err, static_cast<size_t>(errlen), "nybble._C: unknown error");
    rc = 1;
  }
  t_in_c_api = false;
  return rc;
}

const KernelApi g_kernel_api{
    NYBBLE_KERNEL_API_VERSION, static_cast<int>(sizeof(KernelApi)),
    [](const char* isa, uintptr_t x, int x_kind, int64_t m, int64_t ldx, uintptr_t qw, uintptr_t scale, int scale_kind,
       uintptr_t zp, int64_t n, int64_t k, int64_t gl, uintptr_t bias, uintptr_t y, int y_kind, int64_t ldy,
       int nthreads, char* err, int errlen) {
      return c_entry(err, errlen, [&] {
        a16w4(isa, x, x_kind, m, ldx, qw, scale, scale_kind, zp, n, k, gl, bias, y, y_kind, ldy, nthreads);
      });
    },
    [](const char* isa, uintptr_t x, int x_kind, int64_t m, int64_t ldx, uintptr_t qw, uintptr_t scale, int scale_kind,
       uintptr_t zp, uintptr_t wcomp, int64_t n, int64_t k, int64_t gl, int asym, uintptr_t bias, uintptr_t y,
       int y_kind, int64_t ldy, int nthreads, char* err, int errlen) {
      return c_entry(err, errlen, [&] {
        a8w4(isa, x, x_kind, m, ldx, qw, scale, scale_kind, zp, wcomp, n, k, gl, asym != 0, bias, y, y_kind, ldy,
             nthreads);
      });
    },
    [](const char* isa, uintptr_t q, int64_t q_head, uintptr_t k, int64_t k_head, int64_t k_pos, uintptr_t v,
       int64_t v_head, int64_t v_pos, uintptr_t mask, int mask_kind, uintptr_t out, int64_t o_head, int kind, int64_t h,
       int64_t hkv, int64_t l, int64_t d, double scale, int nthreads, char* err, int errlen) {
      return c_entry(err, errlen, [&] {
        decode_attention(isa, q, q_head, k, k_head, k_pos, v, v_head, v_pos, mask, mask_kind, out, o_head, kind, h, hkv,
                         l, d, scale, nthreads);
      });
    },
};

// ---------------------------------------------------------------- Python stack-chunk cache
// CPython 3.11+ keeps the frames of Python functions in per-thread "data stack" chunks of 16 KiB
// taken from the arena allocator (mmap) and gives a chunk back (munmap) as soon as the first frame
// in it returns. A call that starts just below a chunk's end therefore maps and unmaps a fresh
// chunk every time (a syscall pair plus 4 page faults on first touch, ~10-20 us in this VM). The
// nybble torch ops are Python functions that the compiled graph calls from one fixed depth, so
// whether every op call of a model pays that depends on where that depth falls (measured: 243
// faults and ~4 ms of system time per decode step of the 0.85B fused A8W4 model, none for the
// unfused one; benchmarks/cpu/NOTES.md, seventh session). install_stack_chunk_cache() wraps the
// arena allocator so that up to kChunkCacheMax freed blocks of exactly one chunk's size are kept
// (still mapped) and handed out again; every other size, and blocks beyond the cache, go to the
// original allocator unchanged. Semantics of Python's memory are unchanged (a block is reused
// instead of unmapped and mapped again). All calls hold the GIL; a mutex guards anyway.
constexpr size_t kStackChunkBytes = 16 * 1024;  // CPython's DATA_STACK_CHUNK_SIZE (3.11-3.13)
constexpr int kChunkCacheMax = 8;

struct ChunkCache {
  PyObjectArenaAllocator orig{};
  void* blocks[kChunkCacheMax] = {};
  int count = 0;
  bool installed = false;
  long long hits = 0, misses = 0, kept = 0, passed = 0;
  std::mutex mu;
};
ChunkCache g_chunks;

void* chunk_alloc(void*, size_t size) {
  if (size == kStackChunkBytes) {
    std::lock_guard<std::mutex> lock(g_chunks.mu);
    if (g_chunks.count > 0) {
      ++g_chunks.hits;
      return g_chunks.blocks[--g_chunks.count];
    }
    ++g_chunks.misses;
  }
  return g_chunks.orig.alloc(g_chunks.orig.ctx, size);
}

void chunk_free(void*, void* p, size_t size) {
  if (p != nullptr && size == kStackChunkBytes) {
    std::lock_guard<std::mutex> lock(g_chunks.mu);
    if (g_chunks.count < kChunkCacheMax) {
      ++g_chunks.kept;
      g_chunks.blocks[g_chunks.count++] = p;
      return;
    }
    ++g_chunks.passed;
  }
  g_chunks.orig.free(g_chunks.orig.ctx, p, size);
}

bool install_stack_chunk_cache() {
  if (g_chunks.installed) return false;
  PyObject_GetArenaAllocator(&g_chunks.orig);
  PyObjectArenaAllocator mine{nullptr, chunk_alloc, chunk_free};
  PyObject_SetArenaAllocator(&mine);
  g_chunks.installed = true;
  return true;
}

nb::dict stack_chunk_cache_stats() {
  std::lock_guard<std::mutex> lock(g_chunks.mu);
  nb::dict d;
  d["installed"] = g_chunks.installed;
  d["cached"] = g_chunks.count;
  d["hits"] = g_chunks.hits;
  d["misses"] = g_chunks.misses;
  d["kept"] = g_chunks.kept;
  d["passed"] = g_chunks.passed;
  return d;
}

}  // namespace

NB_MODULE(_C, m) {
  m.doc() = "nybble C++ CPU kernels (independent of PyTorch)";
  if (const char* e = std::getenv("NYBBLE_CPU_GEMV_PREFETCH")) {  // "A16,A8" bytes (A/B runs; see kernels.h)
    long long a16 = -1, a8 = -1;
    if (std::sscanf(e, "%lld,%lld", &a16, &a8) == 2 && a16 >= 0 && a8 >= 0 && a16 % 64 == 0 && a8 % 64 == 0 &&
        a16 <= (1 << 16) && a8 <= (1 << 16)) {
      nybble::g_gemv_prefetch[0] = a16;
      nybble::g_gemv_prefetch[1] = a8;
    }
  }
  m.def("cpu_features", []() {
    const auto& f = nybble::cpu_features();
    nb::dict d;
    d["avx2"] = f.avx2 && f.fma && f.f16c;
    d["avx512"] = f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq;
    d["avx512_vnni"] = f.avx512f && f.avx512bw && f.avx512vl && f.avx512_vnni;
    d["avx512_bf16"] = f.avx512_bf16;
    d["amx"] = f.amx_tile;
    return d;
  });
  m.def("isa_names", &nybble::isa_names, "All CPU paths, lowest first.");
  m.def("available_isas", &nybble::available_isas, "The CPU paths this machine can run, lowest first.");
  m.def("a16w4", &a16w4,
        "y (M,N) = x (M,K) @ W^T + bias, W in the packed layout (see csrc/kernels.h), computed in fp32. "
        "Arguments: isa, x, x_kind, m, ldx, qw, scale, scale_kind, zp, n, k, group_len, bias (fp32), y, y_kind, "
        "ldy, nthreads; pointers are addresses (0 = absent), kinds 0/1/2 = fp32/bf16/fp16, strides in elements.");
  m.def("a8w4", &a8w4,
        "As a16w4 with per-token int8 (asym: uint8 + zero point) activation quantization inside. "
        "Arguments: isa, x, x_kind, m, ldx, qw, scale, scale_kind, zp, wcomp, n, k, group_len, asymmetric, "
        "bias, y, y_kind, ldy, nthreads.");
  m.def("from_f32", [](const std::string& isa, uintptr_t src, uintptr_t dst, int kind, int64_t count) {
    check_kind(kind, "dst");
    nybble::isa_kernels(isa).from_f32(ptr<const float>(src), ptr<void>(dst), kind, count);
  }, "fp32 -> bf16/f16 bits (round to nearest even) of `count` values, as the ops convert outputs (for tests).");
  m.def("to_f32", [](const std::string& isa, uintptr_t src, int kind, uintptr_t dst, int64_t count) {
    check_kind(kind, "src");
    nybble::isa_kernels(isa).to_f32(ptr<const void>(src), kind, ptr<float>(dst), count);
  }, "bf16/f16 bits -> fp32 of `count` values, as the ops convert inputs (for tests).");
  m.def("decode_attention", &decode_attention,
        "One query token per head against a KV cache (see csrc/attention.h): isa, q, q_head, k, k_head, k_pos, v, "
        "v_head, v_pos, mask (address or 0), mask_kind (0 none, 1 fp32 (L,) additive, 2 bool bytes (L,)), out, o_head, "
        "kind (0/1/2 = fp32/bf16/fp16 for q, k, v, out), "
        "H, Hkv, L, D, scale, nthreads; strides in elements, rows of D contiguous.");
  m.def("kernel_api", []() { return nb::capsule(&g_kernel_api, "nybble._C.kernel_api"); },
        "PyCapsule \"nybble._C.kernel_api\" of the C entry points of a16w4 / a8w4 / decode_attention (struct "
        "KernelApi in csrc/module.cpp, version 1) for the optional torch dispatcher shim (nybble.kernels.cpu_shim).");
  m.def("install_stack_chunk_cache", &install_stack_chunk_cache,
        "Wrap CPython's arena allocator so that freed 16 KiB frame-stack chunks are kept and reused instead of "
        "unmapped (see the comment in csrc/module.cpp); True if installed now, False if it already was.");
  m.def("stack_chunk_cache_stats", &stack_chunk_cache_stats,
        "{installed, cached, hits, misses, kept, passed} of the stack-chunk cache (for tests and diagnosis).");
  m.def("prefetch_configure", [](int enabled, long long cap, int hint, int spin_us, double pace_gbps) {
    nybble::prefetch::Prefetcher::get().configure(enabled, cap, hint, spin_us, pace_gbps);
  }, nb::arg("enabled") = -1, nb::arg("cap") = -1, nb::arg("hint") = -1, nb::arg("spin_us") = -1,
        nb::arg("pace_gbps") = -1.0,
        "Cross-op weight prefetch (csrc/prefetch.h; off by default): enabled 0/1, cap (bytes per call), hint (0 t0, "
        "1 t1, 2 t2, 3 nta, 4 prefetchw), spin_us (idle spin of a prefetch thread), pace_gbps (issue-rate cap, 0 = "
        "none); a negative value keeps a setting.");
  m.def("prefetch_info", []() {
    auto& p = nybble::prefetch::Prefetcher::get();
    const auto& c = p.config();
    const auto& st = p.stats();
    static const char* hints[] = {"t0", "t1", "t2", "nta", "w"};
    nb::dict d;
    d["enabled"] = c.enabled;
    d["cap"] = c.cap;
    d["hint"] = hints[c.hint];
    d["spin_us"] = c.spin_us;
    d["pace_gbps"] = c.pace_gbps;
    d["max_m"] = c.max_m;
    d["threads"] = p.threads();
    d["calls"] = st.calls.load();
    d["predicted"] = st.predicted.load();
    d["posted"] = st.posted.load();
    d["done"] = st.done.load();
    d["cancelled"] = st.cancelled.load();
    d["lines"] = st.lines.load();
    d["no_thread"] = st.no_thread.load();
    d["busy_ns"] = st.busy_ns.load();
    return d;
  }, "Settings and counters of the cross-op weight prefetch (csrc/prefetch.h).");
  m.def("prefetch_reset", []() { nybble::prefetch::Prefetcher::get().reset(); },
        "Forget the learnt call order of the cross-op prefetch (tests).");
  m.def("prefetch_next", [](uintptr_t qw) { return nybble::prefetch::Prefetcher::get().next_of(qw); },
        "Code address of the call learnt to follow the call with codes at qw (0: none; tests).");
  m.def("prefetch_drain", []() {
    nb::gil_scoped_release release;
    nybble::prefetch::Prefetcher::get().drain();
  }, "Wait until no prefetch job runs (tests, benchmarks).");
  m.def("set_gemv_prefetch", [](int64_t a16_bf16, int64_t a8) {
    if (a16_bf16 < 0 || a8 < 0 || a16_bf16 % 64 || a8 % 64 || a16_bf16 > (1 << 16) || a8 > (1 << 16))
      throw std::invalid_argument("nybble._C.set_gemv_prefetch: distances must be multiples of 64 in [0, 65536]");
    nybble::g_gemv_prefetch[0] = a16_bf16;
    nybble::g_gemv_prefetch[1] = a8;
  }, "Software prefetch distances (bytes) of the M = 1 GEMV paths: A16W4 bf16 (default 4096), A8W4 (default 2048); 0 = none; "
     "not while a kernel runs (A/B benchmarks, tests).");
  m.def("gemv_prefetch", []() { return std::vector<int64_t>{nybble::g_gemv_prefetch[0], nybble::g_gemv_prefetch[1]}; },
        "The M = 1 GEMV prefetch distances [A16W4 bf16, A8W4] in bytes.");
  m.def("quantize_activations", &quantize_acts,
        "Per-token activation quantization (for tests): isa, x, m, ldx, k, group_len, asymmetric, q (M,K) 1-byte, "
        "sa (M,) fp32, za (M,) int32, sums (M,G) int32, nthreads.");
}
