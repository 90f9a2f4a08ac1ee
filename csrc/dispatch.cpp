#include "dispatch.h"

#include <stdexcept>

#include "cpu_features.h"

namespace nybble {

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

IsaKernels isa_kernels(const std::string& name) {
  bool known = false;
  for (const auto& n : isa_names()) known |= n == name;
  if (!known) throw std::invalid_argument("unknown CPU ISA path '" + name + "'; use scalar, avx2, avx512, avx512_vnni or avx512_bf16");
  bool ok = false;
  for (const auto& n : available_isas()) ok |= n == name;
  if (!ok) throw std::invalid_argument("CPU ISA path '" + name + "' is not supported by this CPU");
#ifdef NYBBLE_X86_PATHS
  if (name == "avx512_bf16") return kernels_avx512_bf16();
  if (name == "avx512_vnni") return kernels_avx512_vnni();
  if (name == "avx512") return kernels_avx512();
  if (name == "avx2") return kernels_avx2();
#endif
  return kernels_scalar();
}

}  // namespace nybble
