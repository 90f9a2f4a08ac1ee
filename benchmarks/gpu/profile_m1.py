"""Run the M=1 A16W4 kernels on 8192x28672 once per variant (for Nsight Compute).

Usage on the GPU machine:
  ncu --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats \
      --section LaunchStats --section Occupancy -k regex:"gemv|a16w4" python3 benchmarks/gpu/profile_m1.py
"""
import torch

from nybble.kernels.base import LinearSpec
from nybble.kernels.triton import ops
from nybble.kernels.triton.configs import TileConfig
from nybble.kernels.triton.kernel import TritonKernel
from nybble.plain import PlainInt4Weight

torch.manual_seed(0)
w = torch.randn(28672, 8192, device="cuda") * 0.02
plain = PlainInt4Weight.from_float(w, 128, "int", torch.bfloat16)
kern = TritonKernel(LinearSpec.for_weight(plain, "a16"))
p = kern.prepack(plain)
x = torch.randn(1, 8192, device="cuda").to(torch.bfloat16)
for cfg in (TileConfig(1, 32, 256, 1, 4, 3), TileConfig(1, 64, 128, 1, 4, 3), TileConfig(16, 64, 128, 1, 4, 4)):
    for _ in range(2):
        ops.launch_a16w4(x, p["qweight"], p["scale"], p["zero_point"], 128, None, cfg)
torch.cuda.synchronize()
