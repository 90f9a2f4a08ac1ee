"""Eager wall time per call of A8W4 at M = 1 on the benchmark shapes: the TMA-stream GEMV (a Gluon launch,
TMA descriptors built per call, no eager launch plan) against the older plannable configs, next to the
GPU time of the same call replayed from a CUDA graph.

    PYTHONPATH=src python3 benchmarks/gpu/eager_tma_a8.py      # on the H100
"""
from __future__ import annotations

import torch

from nybble.bench.gpu import _wall_per_call, graph_time_us
from nybble.kernels.base import LinearSpec
from nybble.kernels.triton import ops
from nybble.kernels.triton.configs import TMA_GEMV_A8, TileConfig
from nybble.kernels.triton.kernel import TritonKernel
from nybble.plain import PlainInt4Weight

OLD = {(4096, 14336): TileConfig(-1, 64, 128, 4, 4, 3), (8192, 28672): TileConfig(2, 64, 128, 2, 4, 97),
       (4096, 4096): None}
for (k, n), old in OLD.items():
    plain = PlainInt4Weight.from_float(torch.randn(n, k, device="cuda") * 0.02, 128, "int", torch.bfloat16)
    kern = TritonKernel(LinearSpec.for_weight(plain, "a8_sym"))
    p = kern.prepack(plain)
    x = torch.randn(1, k, device="cuda").to(torch.bfloat16)
    res = {}
    for name, cfg in (("tma", TileConfig(TMA_GEMV_A8, 128, 256, 1, 8, 4)), ("old", old), ("apply", None)):
        if name == "apply":
            fn = lambda: kern.apply(x, p, None)  # noqa: E731  (the layer's path: table, plan)
        else:
            fn = lambda cfg=cfg: ops.launch_a8w4(x, p["qweight"], p["scale"], p["zero_point"], p["wsum"], 128,  # noqa: E731
                                                 False, None, cfg, p["locks"])
        res[name] = (_wall_per_call(fn, 300, torch), graph_time_us([fn], 20, torch))
    print(f"K={k} N={n}: " + "  ".join(f"{kk}: eager {w:.1f} us / graph {g:.1f} us" for kk, (w, g) in res.items()),
          flush=True)
