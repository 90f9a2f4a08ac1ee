// The nybble._C extension module: Python bindings of the CPU kernels (no PyTorch headers).
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>

#include "cpu_features.h"

namespace nb = nanobind;

NB_MODULE(_C, m) {
  m.doc() = "nybble C++ CPU kernels (independent of PyTorch)";
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
}
