"""The program Nsight Compute runs for the missed-target profiles (GPU machine, sixteenth session).

One process per target, ``TARGET=<what>_<K>x<N>`` with ``what`` one of

* ``a16m1`` / ``a8m1`` / ``a16m512`` / ``a16m2048`` / ``a8m2048``: nybble's A16W4 / A8W4 (symmetric)
  call at that M through ``TritonKernel.apply`` (the shipped table's config, as ``nybble bench gpu``
  runs it; A8W4 at large M is two launches: the activation quantizer, then the int8 GEMM);
* ``read``: the benchmark's one-pass read probe (``jit.read_kernel``) over the packed A16W4 weight
  bytes of that shape, with the block / programs / warps that won in the fifteenth session's benchmark
  (the floor the M = 1 target is measured against);
* ``cublas``: ``F.linear`` on the dequantized bf16 weight at M = ``CUBLAS_M`` (default 2048).

Weights: ``PlainInt4Weight.from_float(randn * 0.02, 128, "int", bf16)``, activations ``randn`` bf16.
Two warm-up calls, then the profiled call between ``cudaProfilerStart`` / ``Stop`` (run Nsight Compute
with ``--profile-from-start off``; it flushes the caches before each replay, so the weights come
from HBM as in the benchmark's rotated copies)::

    TARGET=a16m1_14336x4096 ncu --profile-from-start off --metrics ... python3 benchmarks/gpu/profile_targets.py

``profile_targets.sh`` runs every missed target and summarises the metrics (``summarize_ncu.py``).
"""
import os

import torch
import torch.nn.functional as F

from nybble.kernels.base import LinearSpec
from nybble.kernels.triton import jit
from nybble.kernels.triton.kernel import TritonKernel
from nybble.plain import PlainInt4Weight

#: the read probe's (block, programs per SM, warps) that won per shape in the fifteenth session's benchmark
READ_PROBE = {(4096, 4096): (2048, 8, 8), (4096, 14336): (2048, 16, 8), (14336, 4096): (2048, 16, 8),
              (8192, 28672): (4096, 16, 8)}


def main() -> None:
    what, _, shape = os.environ["TARGET"].partition("_")
    k, n = map(int, shape.split("x"))
    torch.manual_seed(0)
    plain = PlainInt4Weight.from_float(torch.randn(n, k, device="cuda") * 0.02, 128, "int", torch.bfloat16)
    if what == "read":
        p = TritonKernel(LinearSpec.for_weight(plain, "a16")).prepack(plain)
        nbytes = sum(p[kk].numel() * p[kk].element_size() for kk in ("qweight", "scale", "zero_point"))
        words = -(-nbytes // 16) * 4
        buf = torch.randint(-2**31, 2**31 - 1, (words,), dtype=torch.int32, device="cuda")
        block, per_sm, warps = READ_PROBE[(k, n)]
        progs = min(torch.cuda.get_device_properties(0).multi_processor_count * per_sm, -(-words // block))
        out = torch.empty(progs, dtype=torch.int32, device="cuda")

        def call():
            jit.read_kernel[(progs,)](buf, out, words, BLOCK=block, num_warps=warps)
    elif what == "cublas":
        wd = plain.dequantize(torch.bfloat16)
        x = torch.randn(int(os.environ.get("CUBLAS_M", 2048)), k, device="cuda").to(torch.bfloat16)

        def call():
            F.linear(x, wd)
    else:
        mode = "a16" if what.startswith("a16") else "a8_sym"
        m = int(what.split("m", 1)[1])
        kern = TritonKernel(LinearSpec.for_weight(plain, mode))
        p = kern.prepack(plain)
        x = torch.randn(m, k, device="cuda").to(torch.bfloat16)

        def call():
            kern.apply(x, p, None)
    for _ in range(2):
        call()
    torch.cuda.synchronize()
    torch.cuda.cudart().cudaProfilerStart()
    call()
    torch.cuda.synchronize()
    torch.cuda.cudart().cudaProfilerStop()
    print("profiled", os.environ["TARGET"], flush=True)


if __name__ == "__main__":
    main()
