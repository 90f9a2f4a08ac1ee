"""Where the eager per-call time of the Triton kernels goes at M = 1 (issue 6, eager overhead).

    PYTHONPATH=src python benchmarks/gpu/eager_profile.py      # on a CUDA machine

For a 1024x1024 layer (group 128, int zero points, bf16) and each activation mode: the wall time per
``TritonKernel.apply`` call, then a cProfile of 2000 calls (top functions by own time), so the Python
part (config lookup, argument handling, allocations) can be told apart from the launch itself.
"""
import cProfile
import io
import pstats
import time

import torch

from nybble.kernels.base import LinearSpec
from nybble.kernels.triton.kernel import TritonKernel
from nybble.plain import PlainInt4Weight


def wall_us(fn, reps=2000):
    for _ in range(100):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / reps * 1e6


def main():
    torch.manual_seed(0)
    w = torch.randn(1024, 1024, device="cuda") * 0.02
    plain = PlainInt4Weight.from_float(w, 128, "int", torch.bfloat16)
    x = torch.randn(1, 1024, device="cuda").to(torch.bfloat16)
    for act in ("a16", "a8_sym"):
        kern = TritonKernel(LinearSpec.for_weight(plain, act))
        p = kern.prepack(plain)
        fn = lambda: kern.apply(x, p, None)  # noqa: E731
        print(f"== {act}: {wall_us(fn):.1f} us per eager apply (wall, 2000 calls)", flush=True)
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(2000):
            fn()
        torch.cuda.synchronize()
        prof.disable()
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(18)
        print(s.getvalue(), flush=True)


if __name__ == "__main__":
    main()
