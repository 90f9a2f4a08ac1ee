"""Run the small-M A16W4 kernels on 8192x28672 once per variant (for Nsight Compute).

Usage on the GPU machine:
  ncu --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats \
      --section LaunchStats --section Occupancy -k regex:"mma_gemv|gemv_kernel" python3 benchmarks/gpu/profile_m1.py
Variants: the mma.sync GEMV at M = 1 and M = 16 (table configs of this shape) and the older CUDA-core
GEMV at M = 1 (``block_m == 1``).
"""
import torch

from nybble.kernels.base import LinearSpec
from nybble.kernels.triton import ops
from nybble.kernels.triton.configs import TileConfig, make_key
from nybble.kernels.triton.kernel import TritonKernel
from nybble.plain import PlainInt4Weight

torch.manual_seed(0)
w = torch.randn(28672, 8192, device="cuda") * 0.02
plain = PlainInt4Weight.from_float(w, 128, "int", torch.bfloat16)
kern = TritonKernel(LinearSpec.for_weight(plain, "a16"))
p = kern.prepack(plain)
store = ops.store_for(torch.device("cuda", 0))
for m, cfg in ((1, store.get(make_key("a16w4", 28672, 8192, 128, 1))),
               (16, store.get(make_key("a16w4", 28672, 8192, 128, 16))),
               (1, TileConfig(1, 64, 128, 4, 4, 3))):
    x = torch.randn(m, 8192, device="cuda").to(torch.bfloat16)
    print(m, cfg, flush=True)
    for _ in range(2):
        ops.launch_a16w4(x, p["qweight"], p["scale"], p["zero_point"], 128, None, cfg, p["locks"])
torch.cuda.synchronize()
