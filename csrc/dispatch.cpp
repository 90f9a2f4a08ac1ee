#include "dispatch.h"

#include <stdexcept>

#include "cpu_features.h"

namespace nybble {

int64_t g_gemv_prefetch[2] = {4096, 2048};

const std::vector<std::string>& isa_names() {
  static const std::vector<std::string> names = {"scalar", "avx2", "avx512", "avx512_vnni", "avx512_bf16"};
  return names;
}

std::vector<std::string> available_isas() {
  const CpuFeatures& f = cpu_features();
  std::vector<std::string> out = {"scalar"};
#ifdef NYBBLE_X86_PATHS
  if (f.avx2 && f.fma && f.f16c) out.push_back("avx2");
  const bool avx512 = f.avx2 && f.fma && f.f16c && f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq;
  if (avx512) out.push_back("avx512");
  if (avx512 && f.avx512_vnni) out.push_back("avx512_vnni");
  if (avx512 && f.avx512_vnni && f.avx512_bf16) out.push_back("avx512_bf16");
#else
  (void)f;
#endif
  return out;
}

namespace {

IsaKernels table_entry(const std::string& name) {
#ifdef NYBBLE_X86_PATHS
  if (name == "avx512_bf16") return kernels_avx512_bf16();
  if (name == "avx512_vnni") return kernels_avx512_vnni();
  if (name == "avx512") return kernels_avx512();
  if (name == "avx2") return kernels_avx2();
#endif
  (void)name;
  return kernels_scalar();
}

// Built once: for each path of isa_names(), whether this CPU runs it and its kernel table, so that
// the per-call lookup (every kernel call names its path) costs a few string compares.
struct IsaTable {
  bool ok[5] = {false, false, false, false, false};
  IsaKernels kern[5];
  IsaTable() {
    const auto& names = isa_names();
    const auto avail = available_isas();
    for (size_t i = 0; i < names.size() && i < 5; ++i) {
      for (const auto& a : avail) ok[i] |= a == names[i];
      if (ok[i]) kern[i] = table_entry(names[i]);
    }
  }
};

}  // namespace

IsaKernels isa_kernels(const std::string& name) {
  static const IsaTable table;
  const auto& names = isa_names();
  for (size_t i = 0; i < names.size() && i < 5; ++i) {
    if (names[i] != name) continue;
    if (!table.ok[i]) throw std::invalid_argument("CPU ISA path '" + name + "' is not supported by this CPU");
    return table.kern[i];
  }
  throw std::invalid_argument("unknown CPU ISA path '" + name + "'; use scalar, avx2, avx512, avx512_vnni or avx512_bf16");
}

}  // namespace nybble
