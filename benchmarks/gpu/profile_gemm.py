"""The program Nsight Compute runs for the large-M profiles (GPU machine): one A8W4 int8 GEMM
(``gemm_a8``, 128 x 64 tiles) and one A16W4 swap-AB GEMM (``jit.a16w4_kernel``) call on 8192x28672 at
M = 2048, after a warm-up call each.

    ncu --section SpeedOfLight ... -k regex:"a8w4_gemm|a16w4_kernel" python3 benchmarks/gpu/profile_gemm.py
"""
import torch

from nybble.kernels.base import LinearSpec
from nybble.kernels.triton import ops
from nybble.kernels.triton.configs import TileConfig
from nybble.kernels.triton.kernel import TritonKernel
from nybble.plain import PlainInt4Weight

k, n, m = 8192, 28672, 2048
w = torch.randn(n, k, device="cuda") * 0.02
plain = PlainInt4Weight.from_float(w, 128, "int", torch.bfloat16)
p8 = TritonKernel(LinearSpec.for_weight(plain, "a8_sym")).prepack(plain)
p16 = TritonKernel(LinearSpec.for_weight(plain, "a16")).prepack(plain)
x = torch.randn(m, k, device="cuda").to(torch.bfloat16)
c8 = TileConfig(128, 64, 0, 1, 4, 4)
c16 = TileConfig(128, 128, 64, 1, 8, 4)
for _ in range(2):
    ops.launch_a8w4(x, p8["qweight"], p8["scale"], p8["zero_point"], p8["wsum"], 128, False, None, c8)
    ops.launch_a16w4(x, p16["qweight"], p16["scale"], p16["zero_point"], 128, None, c16, p16["locks"])
torch.cuda.synchronize()
