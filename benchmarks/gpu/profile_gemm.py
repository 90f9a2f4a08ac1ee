"""The program Nsight Compute runs for the large-M profiles (GPU machine): one A8W4 int8 GEMM
(``gemm_a8``) call at M = 2048 and one A16W4 swap-AB GEMM (``jit.a16w4_kernel``) call at M =
``A16_M`` (default 2048) on ``K`` x ``N`` (default 8192x28672), after a warm-up call each; configs from ``A8_CFG`` /
``A16_CFG`` (``"128x64x0x1x4x4"`` style, default the values below).

    ncu --section SpeedOfLight ... -k regex:"a8w4_gemm|a16w4_kernel" python3 benchmarks/gpu/profile_gemm.py
"""
import os

import torch

from nybble.kernels.base import LinearSpec
from nybble.kernels.triton import ops
from nybble.kernels.triton.configs import TileConfig
from nybble.kernels.triton.kernel import TritonKernel
from nybble.plain import PlainInt4Weight

k, n, m = int(os.environ.get("K", 8192)), int(os.environ.get("N", 28672)), 2048
w = torch.randn(n, k, device="cuda") * 0.02
plain = PlainInt4Weight.from_float(w, 128, "int", torch.bfloat16)
p8 = TritonKernel(LinearSpec.for_weight(plain, "a8_sym")).prepack(plain)
p16 = TritonKernel(LinearSpec.for_weight(plain, "a16")).prepack(plain)
x = torch.randn(m, k, device="cuda").to(torch.bfloat16)
x16 = x[: int(os.environ.get("A16_M", m))]
c8 = TileConfig(*map(int, os.environ.get("A8_CFG", "128x64x0x1x4x4").split("x")))
c16 = TileConfig(*map(int, os.environ.get("A16_CFG", "128x128x64x1x8x4").split("x")))
for _ in range(2):
    ops.launch_a8w4(x, p8["qweight"], p8["scale"], p8["zero_point"], p8["wsum"], 128, False, None, c8)
    ops.launch_a16w4(x16, p16["qweight"], p16["scale"], p16["zero_point"], 128, None, c16, p16["locks"])
torch.cuda.synchronize()
