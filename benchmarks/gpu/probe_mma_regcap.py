"""Probe (sixteenth session): the A16W4 M = 1 table configs of the mma GEMV with a register cap.

14336x4096's table config compiles to 69 registers: 7 programs of 128 threads per SM, so its 1024
programs are 1.11 waves (Nsight, ``sweeps/sixteenth/ncu_targets.md``); at <= 64 registers 8 fit per SM
and the grid is one wave.  This times each shape's table config as shipped and with ``maxnreg`` 64 / 56
(Triton's launch option, injected by wrapping ``ops._MMA``), CUDA-graph medians over rotated weight
copies like ``nybble bench gpu``, and checks each result against the uncapped one (bit-equal: the cap
changes registers, not arithmetic).

    PYTHONPATH=src python3 benchmarks/gpu/probe_mma_regcap.py
"""
import torch

from nybble.bench.gpu import _copies, graph_time_us
from nybble.kernels.base import LinearSpec
from nybble.kernels.triton import launch, mma, ops
from nybble.kernels.triton.configs import make_key
from nybble.kernels.triton.kernel import TritonKernel
from nybble.plain import PlainInt4Weight

from sweep_common import rotated_copies


class CappedLaunch(launch.FastLaunch):
    """``FastLaunch`` through Triton's own launcher with ``maxnreg`` (no cached fast path)."""

    def __init__(self, fn, cap):
        super().__init__(fn)
        self.cap = cap

    def __call__(self, grid, args, consts, num_warps, num_stages, pdl=False):
        opts = {"launch_pdl": True} if pdl else {}
        self.fn[grid](*args, **consts, num_warps=num_warps, num_stages=num_stages, maxnreg=self.cap, **opts)


def main():
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    plain_launch = ops._MMA
    for k, n in ((14336, 4096), (4096, 14336), (8192, 28672), (4096, 4096)):
        torch.manual_seed(0)
        plain = PlainInt4Weight.from_float(torch.randn(n, k, device="cuda") * 0.02, 128, "int", torch.bfloat16)
        p = TritonKernel(LinearSpec.for_weight(plain, "a16")).prepack(plain)
        cfg = ops.store_for(torch.device("cuda", 0)).get(make_key("a16w4", n, k, 128, 1))
        copies = rotated_copies(p, _copies(sum(t.nbytes for t in p.values()), l2))
        x = torch.randn(1, k, device="cuda").to(torch.bfloat16)

        def run(q):
            return ops.launch_a16w4(x, q["qweight"], q["scale"], q["zero_point"], 128, None, cfg, q["locks"])

        ref = None
        for cap in (None, 64, 56, None):
            ops._MMA = plain_launch if cap is None else CappedLaunch(mma.mma_gemv_kernel, cap)
            y = run(p)
            ref = y if ref is None else ref
            same = torch.equal(y, ref)
            us = graph_time_us([lambda q=q: run(q) for q in copies], 30, torch)
            print(f"{k}x{n} {cfg} maxnreg={cap}: {us:.2f} us  same bits as uncapped: {same}", flush=True)
        ops._MMA = plain_launch


if __name__ == "__main__":
    main()
