"""C++ source of the torch dispatcher shim (:mod:`nybble.kernels.cpu_shim`, on by default), compiled at run time.

Kept as a string in a Python module so that every install of nybble (wheel or editable) has it. The
shim includes PyTorch's headers and links libtorch (that is why it is not part of ``nybble._C``, which
must not: issue 3, item 1). It registers C++ CPU kernels for the decode ops ``nybble::cpu_a16w4``,
``nybble::cpu_a8w4``, ``nybble::cpu_decode_attention`` and the baseline's
``nybble::torch_int4_cpu_a16w4``: the same checks and the same kernels as their Python
implementations (:mod:`nybble.kernels.cpu_ops`, :mod:`nybble.kernels.cpu_attention`,
:mod:`nybble.kernels.torch_int4_cpu`), minus the Python frame. nybble's kernels are reached through
the C entry points of ``nybble._C.kernel_api()``, whose ABI (struct ``KernelApi``) is defined once, in
``cpu_kernel_api.h`` next to this module: ``csrc/module.cpp`` includes it, and :data:`SOURCE` splices it
in; PyTorch's int4 op is called as ``at::_weight_int4pack_mm_for_cpu``.

Each op gets a ``torch::Library`` registration of its own (``install(api, attn_isa, ops mask)`` /
``uninstall(ops mask)``, so that the ops can be installed one by one as their modules define them); the
attention kernel's ISA path is an interned string swapped atomically (``set_attention_isa``, at every trace
of the op), because compiled graphs of other threads may be calling the kernel meanwhile.
"""
from pathlib import Path

SOURCE = r"""
// nybble CPU dispatcher shim (generated from nybble/kernels/cpu_shim_src.py; see its docstring).
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/_weight_int4pack_mm_for_cpu.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

@KERNEL_API@

namespace {

const KernelApi* g_api = nullptr;
// the attention op's ISA path: an interned name (never freed), swapped atomically (set at install and at each
// trace of the op, while compiled graphs of other threads may be calling the kernel)
std::atomic<const std::string*> g_attn_isa{nullptr};
std::mutex g_mu;                      // install / uninstall / set_attention_isa
std::vector<std::string*> g_isas;     // the interned names
torch::Library* g_libs[4] = {nullptr, nullptr, nullptr, nullptr};  // one registration per op (bit i)

int kind_of(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return 0;
    case at::kBFloat16: return 1;
    case at::kHalf: return 2;
    default: return -1;
  }
}

uintptr_t addr(const at::Tensor& t) { return reinterpret_cast<uintptr_t>(t.data_ptr()); }
uintptr_t addr(const std::optional<at::Tensor>& t) { return t.has_value() && t->defined() ? addr(*t) : 0; }
bool given(const std::optional<at::Tensor>& t) { return t.has_value() && t->defined(); }

void check_rc(int rc, const char* err) {
  TORCH_CHECK_VALUE(rc == 0, err);  // nybble._C's errors are std::invalid_argument: ValueError as from Python
}

// cpu_ops._prepare: the common checks; x with unit column stride, y, fp32 bias, k, group length
struct Prepared {
  at::Tensor x, y, b32;
  int64_t k, gl;
};

Prepared prepare(const at::Tensor& x_in, const at::Tensor& qw, const at::Tensor& scale,
                 const std::optional<at::Tensor>& zp, int64_t n, int64_t group_size,
                 const std::optional<at::Tensor>& bias) {
  TORCH_CHECK_VALUE(x_in.dim() == 2 && x_in.device().is_cpu() && kind_of(x_in.scalar_type()) >= 0,
                    "nybble cpu op: x must be a 2-D float32/bfloat16/float16 CPU tensor, got ", x_in.scalar_type(),
                    " ", x_in.sizes(), " on ", x_in.device());
  TORCH_CHECK_VALUE(qw.dim() == 3, "nybble cpu op: qw must be the 3-D blocked codes");
  const int64_t k = qw.size(1) * 8;
  TORCH_CHECK_VALUE(x_in.size(1) == k, "nybble cpu op: x has ", x_in.size(1), " features, the weight expects K=", k);
  TORCH_CHECK_TYPE(kind_of(scale.scalar_type()) >= 0, "nybble cpu op: scale dtype ", scale.scalar_type(),
                   " not in float32/bfloat16/float16");
  TORCH_CHECK_VALUE(qw.is_contiguous() && scale.is_contiguous() && qw.scalar_type() == at::kByte,
                    "nybble cpu op: packed tensors must be contiguous (qw uint8)");
  TORCH_CHECK_VALUE(!given(zp) || (zp->is_contiguous() && zp->scalar_type() == at::kChar),
                    "nybble cpu op: zero_point must be contiguous int8");
  Prepared p;
  p.k = k;
  p.gl = group_size == -1 ? k : group_size;
  p.x = x_in.size(0) > 0 && x_in.stride(1) != 1 ? x_in.contiguous() : x_in;
  if (given(bias)) {
    TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == n, "nybble cpu op: bias must be (", n, ",), got ",
                      bias->sizes());
    p.b32 = bias->scalar_type() == at::kFloat && bias->is_contiguous() ? *bias : bias->to(at::kFloat).contiguous();
  }
  p.y = at::empty({x_in.size(0), n}, x_in.options());
  return p;
}

at::Tensor cpu_a16w4(const at::Tensor& x, const at::Tensor& qw, const at::Tensor& scale,
                     const std::optional<at::Tensor>& zp, int64_t n, int64_t group_size,
                     const std::optional<at::Tensor>& bias, c10::string_view isa) {
  Prepared p = prepare(x, qw, scale, zp, n, group_size, bias);
  const int64_t m = p.x.size(0);
  const int kind = kind_of(p.x.scalar_type());
  char err[512];
  const std::string isa_s(isa);
  check_rc(g_api->a16w4(isa_s.c_str(), addr(p.x), kind, m, m ? p.x.stride(0) : p.k, addr(qw), addr(scale),
                        kind_of(scale.scalar_type()), addr(zp), n, p.k, p.gl, p.b32.defined() ? addr(p.b32) : 0,
                        addr(p.y), kind, n, at::get_num_threads(), err, sizeof(err)), err);
  return p.y;
}

at::Tensor cpu_a8w4(const at::Tensor& x, const at::Tensor& qw, const at::Tensor& scale,
                    const std::optional<at::Tensor>& zp, const std::optional<at::Tensor>& wcomp, int64_t n,
                    int64_t group_size, bool asymmetric, const std::optional<at::Tensor>& bias, c10::string_view isa) {
  Prepared p = prepare(x, qw, scale, zp, n, group_size, bias);
  TORCH_CHECK_VALUE(!asymmetric || (given(wcomp) && wcomp->scalar_type() == at::kInt && wcomp->is_contiguous()),
                    "nybble cpu op: asymmetric activations need the int32 wcomp of prepack(with_wcomp=True)");
  const int64_t m = p.x.size(0);
  const int kind = kind_of(p.x.scalar_type());
  char err[512];
  const std::string isa_s(isa);
  check_rc(g_api->a8w4(isa_s.c_str(), addr(p.x), kind, m, m ? p.x.stride(0) : p.k, addr(qw), addr(scale),
                       kind_of(scale.scalar_type()), addr(zp), asymmetric ? addr(wcomp) : 0, n, p.k, p.gl,
                       asymmetric ? 1 : 0, p.b32.defined() ? addr(p.b32) : 0, addr(p.y), kind, n,
                       at::get_num_threads(), err, sizeof(err)), err);
  return p.y;
}

// cpu_attention.decode_attention (_check + _run)
at::Tensor cpu_decode_attention(const at::Tensor& query_in, const at::Tensor& key_in, const at::Tensor& value_in,
                                std::optional<double> scaling, const std::optional<at::Tensor>& mask) {
  TORCH_CHECK_VALUE(query_in.dim() == 4 && key_in.dim() == 4 && value_in.dim() == 4,
                    "decode_attention: query, key and value must be 4-D (batch, heads, tokens, head dim)");
  const int64_t h = query_in.size(1), d = query_in.size(3), hkv = key_in.size(1), length = key_in.size(2);
  TORCH_CHECK_VALUE(query_in.size(0) == 1 && query_in.size(2) == 1 && key_in.size(0) == 1 &&
                        value_in.sizes() == key_in.sizes() && key_in.size(3) == d,
                    "decode_attention: needs query (1, H, 1, D) and key/value (1, Hkv, L, D), got ", query_in.sizes(),
                    ", ", key_in.sizes(), ", ", value_in.sizes());
  TORCH_CHECK_VALUE(h % hkv == 0, "decode_attention: ", h, " query heads is not a multiple of ", hkv,
                    " key/value heads");
  const int kind = kind_of(query_in.scalar_type());
  TORCH_CHECK_TYPE(kind >= 0 && key_in.scalar_type() == query_in.scalar_type() &&
                       value_in.scalar_type() == query_in.scalar_type(),
                   "decode_attention: query/key/value must share one dtype of float32/bfloat16/float16, got ",
                   query_in.scalar_type(), ", ", key_in.scalar_type(), ", ", value_in.scalar_type());
  TORCH_CHECK_VALUE(query_in.device().is_cpu() && key_in.device().is_cpu() && value_in.device().is_cpu(),
                    "decode_attention: CPU tensors only");
  const at::Tensor query = query_in.stride(-1) == 1 ? query_in : query_in.contiguous();
  const at::Tensor key = key_in.stride(-1) == 1 ? key_in : key_in.contiguous();
  const at::Tensor value = value_in.stride(-1) == 1 ? value_in : value_in.contiguous();
  at::Tensor m;
  int mask_kind = 0;
  if (given(mask)) {
    TORCH_CHECK_VALUE(mask->numel() == length, "decode_attention: mask must broadcast to (1, 1, 1, ", length,
                      "), got ", mask->sizes());
    m = mask->reshape({-1});
    if (m.scalar_type() == at::kBool) {
      m = m.contiguous();
      mask_kind = 2;
    } else {
      m = m.to(at::kFloat).contiguous();
      mask_kind = 1;
    }
  }
  at::Tensor out = at::empty({1, 1, h, d}, query.options());
  const double scale = scaling.has_value() ? *scaling : 1.0 / std::sqrt(static_cast<double>(d));
  char err[512];
  const std::string* isa = g_attn_isa.load(std::memory_order_acquire);
  check_rc(g_api->decode_attention(isa ? isa->c_str() : "", addr(query), query.stride(1), addr(key), key.stride(1),
                                   key.stride(2), addr(value), value.stride(1), value.stride(2),
                                   m.defined() ? addr(m) : 0, mask_kind, addr(out), d, kind, h, hkv, length, d, scale,
                                   at::get_num_threads(), err, sizeof(err)), err);
  return out;
}

// torch_int4_cpu.torch_int4_cpu_a16w4: PyTorch's own int4 op (the baseline), no Python either
at::Tensor torch_int4_cpu_a16w4(const at::Tensor& x, const at::Tensor& weight_int4pack,
                                const at::Tensor& scale_and_zeros, int64_t group_size,
                                const std::optional<at::Tensor>& bias) {
  at::Tensor y = at::_weight_int4pack_mm_for_cpu(x.contiguous(), weight_int4pack, group_size, scale_and_zeros);
  if (given(bias)) y = y.add(bias->to(y.scalar_type()));
  return y;
}

void set_isa_locked(c10::string_view name) {
  const std::string* cur = g_attn_isa.load(std::memory_order_acquire);
  if (cur != nullptr && *cur == name) return;
  for (const std::string* s : g_isas) {
    if (*s == name) {
      g_attn_isa.store(s, std::memory_order_release);
      return;
    }
  }
  g_isas.push_back(new std::string(name));
  g_attn_isa.store(g_isas.back(), std::memory_order_release);
}

// ops: bit 0 cpu_a16w4, 1 cpu_a8w4, 2 cpu_decode_attention, 3 torch_int4_cpu_a16w4; each op gets a
// registration of its own (the caller has removed its Python kernel first); returns the installed mask
int64_t install(int64_t api_address, c10::string_view attn_isa, int64_t ops) {
  std::lock_guard<std::mutex> lock(g_mu);
  const auto* api = reinterpret_cast<const KernelApi*>(api_address);
  if (ops & 7) {
    TORCH_CHECK(api != nullptr && api->version == NYBBLE_KERNEL_API_VERSION &&
                    api->size == static_cast<int>(sizeof(KernelApi)),
                "nybble cpu shim: nybble._C.kernel_api() has another layout (version ", api ? api->version : -1,
                "); rebuild the shim");
    g_api = api;
  }
  if (ops & 4) set_isa_locked(attn_isa);
  static const char* names[4] = {"cpu_a16w4", "cpu_a8w4", "cpu_decode_attention", "torch_int4_cpu_a16w4"};
  for (int i = 0; i < 4; ++i) {
    if (!(ops & (int64_t{1} << i)) || g_libs[i] != nullptr) continue;
    auto* lib = new torch::Library(torch::Library::IMPL, "nybble", c10::DispatchKey::CPU, __FILE__, __LINE__);
    try {
      switch (i) {
        case 0: lib->impl(names[i], TORCH_FN(cpu_a16w4)); break;
        case 1: lib->impl(names[i], TORCH_FN(cpu_a8w4)); break;
        case 2: lib->impl(names[i], TORCH_FN(cpu_decode_attention)); break;
        default: lib->impl(names[i], TORCH_FN(torch_int4_cpu_a16w4)); break;
      }
    } catch (...) {
      delete lib;  // deregisters what was registered
      throw;
    }
    g_libs[i] = lib;
  }
  int64_t mask = 0;
  for (int i = 0; i < 4; ++i) mask |= g_libs[i] != nullptr ? (int64_t{1} << i) : 0;
  return mask;
}

// removes the registrations of the ops in the mask (the caller gives them their Python kernels back);
// returns the mask still installed
int64_t uninstall(int64_t ops) {
  std::lock_guard<std::mutex> lock(g_mu);
  int64_t mask = 0;
  for (int i = 0; i < 4; ++i) {
    if ((ops & (int64_t{1} << i)) && g_libs[i] != nullptr) {
      delete g_libs[i];  // deregisters the kernel
      g_libs[i] = nullptr;
    }
    mask |= g_libs[i] != nullptr ? (int64_t{1} << i) : 0;
  }
  return mask;
}

int64_t set_attention_isa(c10::string_view isa) {
  std::lock_guard<std::mutex> lock(g_mu);
  set_isa_locked(isa);
  return 0;
}

}  // namespace

TORCH_LIBRARY(nybble_cpu_shim, m) {
  m.def("install(int api_address, str attn_isa, int ops) -> int", &install);
  m.def("uninstall(int ops) -> int", &uninstall);
  m.def("set_attention_isa(str isa) -> int", &set_attention_isa);
}
"""

#: the shim's source with the kernel ABI header in place (the header is package data next to this module;
#: were it missing, the build fails on the marker and cpu_shim.enable() keeps the Python kernels)
_HEADER = Path(__file__).with_name("cpu_kernel_api.h")
if _HEADER.is_file():
    SOURCE = SOURCE.replace("@KERNEL_API@", _HEADER.read_text())
