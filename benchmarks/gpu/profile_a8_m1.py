"""The program Nsight Compute runs for the M = 1 A8W4 / A16W4 comparison (GPU machine): A16W4 and A8W4
(symmetric) at M = 1 with their table configs on ``K`` x ``N`` (env, default 4096x4096), twice each.

    K=4096 N=4096 ncu --section SpeedOfLight --section WarpStateStats --section SourceCounters \
        -k regex:mma_gemv python3 benchmarks/gpu/profile_a8_m1.py
"""
import os

import torch

from nybble.kernels.base import LinearSpec
from nybble.kernels.triton import ops
from nybble.kernels.triton.configs import make_key
from nybble.kernels.triton.kernel import TritonKernel
from nybble.plain import PlainInt4Weight

k, n = int(os.environ.get("K", 4096)), int(os.environ.get("N", 4096))
torch.manual_seed(0)
plain = PlainInt4Weight.from_float(torch.randn(n, k, device="cuda") * 0.02, 128, "int", torch.bfloat16)
p16 = TritonKernel(LinearSpec.for_weight(plain, "a16")).prepack(plain)
p8 = TritonKernel(LinearSpec.for_weight(plain, "a8_sym")).prepack(plain)
store = ops.store_for(torch.device("cuda", 0))
c16, c8 = store.get(make_key("a16w4", n, k, 128, 1)), store.get(make_key("a8w4", n, k, 128, 1))
x = torch.randn(1, k, device="cuda").to(torch.bfloat16)
print("a16", c16, "a8", c8, flush=True)
for _ in range(2):
    ops.launch_a16w4(x, p16["qweight"], p16["scale"], p16["zero_point"], 128, None, c16, p16["locks"])
for _ in range(2):
    ops.launch_a8w4(x, p8["qweight"], p8["scale"], p8["zero_point"], p8["wsum"], 128, False, None, c8, p8["locks"])
torch.cuda.synchronize()
