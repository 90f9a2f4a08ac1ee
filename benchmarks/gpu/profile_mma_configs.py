"""Run the A16W4 mma GEMV at M = 1 on one layer shape once per given config (for Nsight Compute), e.g.
to compare a config with and without the weight ring.

Usage on the GPU machine:
  ncu --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section Occupancy \
      -k regex:mma_gemv python3 benchmarks/gpu/profile_mma_configs.py --k 8192 --n 28672 2x64x512x2x4x1 2x64x512x2x4x513
Each config runs twice (the second launch is the one to read: warm instruction cache, same inputs).
"""
import argparse

import torch

from nybble.kernels.base import LinearSpec
from nybble.kernels.triton import ops
from nybble.kernels.triton.configs import TileConfig
from nybble.kernels.triton.kernel import TritonKernel
from nybble.plain import PlainInt4Weight

ap = argparse.ArgumentParser()
ap.add_argument("--k", type=int, default=8192)
ap.add_argument("--n", type=int, default=28672)
ap.add_argument("configs", nargs="+")
args = ap.parse_args()
torch.manual_seed(0)
plain = PlainInt4Weight.from_float(torch.randn(args.n, args.k, device="cuda") * 0.02, 128, "int", torch.bfloat16)
p = TritonKernel(LinearSpec.for_weight(plain, "a16")).prepack(plain)
x = torch.randn(1, args.k, device="cuda").to(torch.bfloat16)
for text in args.configs:
    cfg = TileConfig(*map(int, text.split("x")))
    print(cfg, flush=True)
    for _ in range(2):
        ops.launch_a16w4(x, p["qweight"], p["scale"], p["zero_point"], 128, None, cfg, p["locks"])
torch.cuda.synchronize()
