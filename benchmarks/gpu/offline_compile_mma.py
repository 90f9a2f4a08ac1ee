"""Compile the mma.sync GEMV (``mma.py``) for sm_90 on a machine without a GPU and print each config's
registers, spills, static shared memory (the A8 code row of flag 2048) and ptxas warnings, before
any device time is spent.  Uses the stand-in driver of ``offline_compile_wgmma.py``.

Usage (repo root):
    PYTHONPATH=src:benchmarks/gpu python benchmarks/gpu/offline_compile_mma.py [--k 8192] [--n 28672] [--a8] CONFIG [CONFIG ...]
CONFIG: ``2x64x512x2x4x1`` (the six integers of a tile config, as in the table).
"""
from __future__ import annotations

import argparse
import re
import sys

import torch

from offline_compile_wgmma import _Sm90Driver, ptxas_log


def compile_one(cfg, m: int, k: int, n: int, a8: bool, group: int = 128):
    """Warm up (compile, never launch) :func:`mma.mma_gemv_kernel` with the constexprs ``ops._mma_gemv``
    gives ``cfg`` (``ops.mma_meta``; bf16 x, int zero points, no bias, symmetric A8, split-K summed
    in-kernel); returns the compiled kernel."""
    from nybble.kernels.triton import mma, ops
    x = torch.empty(m, k, dtype=torch.bfloat16)
    qw = torch.empty(n // 16, -(-k // 256) * 512, dtype=torch.int32)
    s = torch.empty(k // group, n, dtype=torch.bfloat16)
    z = torch.empty(k // group, n, dtype=torch.int8)
    out = torch.empty(m, n, dtype=torch.bfloat16)
    ws = torch.empty(cfg.split_k, m, n, dtype=torch.float32)
    locks = torch.empty(n, dtype=torch.int32)
    qx = torch.empty(k + 1024, dtype=torch.bfloat16)
    meta = ops.mma_meta(cfg, m, k, group, True, True, False, False if a8 else None)
    meta["SERIAL"] = cfg.split_k > 1
    return mma.mma_gemv_kernel.warmup(x, qw, s, z, s, out, ws, locks, qx, m, n, k, k, n, qw.stride(0), cfg.split_k,
                                      1, **meta, grid=(1,), num_warps=cfg.num_warps, num_stages=1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=8192)
    ap.add_argument("--n", type=int, default=28672)
    ap.add_argument("--a8", action="store_true")
    ap.add_argument("configs", nargs="+")
    args = ap.parse_args(argv)
    from triton.runtime import driver
    from nybble.kernels.triton.configs import TileConfig
    driver.set_active(_Sm90Driver())
    for text in args.configs:
        cfg = TileConfig(*map(int, text.split("x")))
        log = ptxas_log(compile_one(cfg, 1, args.k, args.n, args.a8).asm["ptx"])
        regs = re.search(r"Used (\d+) registers", log)
        smem = re.search(r"(\d+) bytes smem", log)
        spill = re.search(r"(\d+) bytes spill stores", log)
        warn = [ln for ln in log.splitlines() if "warning" in ln.lower()]
        print(f"{text}: {regs and regs.group(1)} registers, {smem.group(1) if smem else 0} bytes smem, "
              f"{spill and spill.group(1)} bytes spilled" + (f"; {warn}" if warn else ""), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
