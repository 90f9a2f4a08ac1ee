"""Compile the A16W4 Gluon wgmma kernel (``wgmma.py``) for sm_90 on a machine without a GPU, and print
each config's registers, spills, shared memory and ptxas warnings (C7510-C7515 = a serialized wgmma).

Used before spending device time: a config that spills or whose wgmmas ptxas serializes is slow on
the H100 whatever the sweep says.  Needs Triton >= 3.5 (Gluon) with its bundled ``ptxas``; no CUDA
driver (a stand-in driver reports an sm_90 target; nothing is launched).

Usage (repo root):
    python benchmarks/gpu/offline_compile_wgmma.py [--m 512] [--k 8192] [--n 28672] [--configs all|table]
"""
from __future__ import annotations

import argparse
import re
import sys

import torch


class _Sm90Driver:
    """Just enough of a Triton driver for ``JITFunction.warmup``: device 0, stream 0, target sm_90."""

    def __init__(self):
        from triton.backends.compiler import GPUTarget
        self._target = GPUTarget("cuda", 90, 32)

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def get_current_target(self):
        return self._target

    def get_active_torch_device(self):
        return torch.device("cpu")


def compile_one(cfg, m: int, k: int, n: int, group: int = 128, zero: bool = True, dtype=torch.bfloat16):
    """Warm up (compile, never launch) :func:`wgmma.a16w4_wgmma_kernel` for ``cfg`` on CPU tensors of
    the layer's shapes; returns the compiled kernel (``.asm['ptx']``, ``.n_regs``, ``.n_spills``,
    ``.metadata.shared``)."""
    from nybble.kernels.triton import ops, wgmma
    from nybble.kernels.triton.configs import wgmma_splits, wgmma_tail_only
    x = torch.empty(m, k, dtype=dtype)
    qw = torch.empty(n // 16, -(-k // 256), 16, 32, dtype=torch.int32)  # the blocked words
    x_desc, w_desc = ops.wgmma_descs(x, qw, cfg)
    g = k // group
    scale = torch.empty(g, n, dtype=dtype)
    z = torch.empty(g, n, dtype=torch.int8)
    out = torch.empty(m, n, dtype=dtype)
    part = torch.empty(16, dtype=torch.float32)
    cnt = torch.empty(16, dtype=torch.int32)
    return wgmma.a16w4_wgmma_kernel.warmup(
        x_desc, w_desc, scale, z if zero else scale, scale, out, part, cnt, m, n, k, g, 0,
        **ops.wgmma_meta(cfg, group, zero, False, wgmma_splits(cfg), wgmma_tail_only(cfg)), grid=(1, ))


def ptxas_log(ptx: str) -> str:
    """``ptxas -v`` (Triton's bundled one, sm_90a) on ``ptx``: its register / spill report and warnings."""
    import os
    import subprocess
    import tempfile
    from triton.backends.nvidia.compiler import get_ptxas
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        r = subprocess.run([get_ptxas(90).path, "-v", "-arch=sm_90a", src, "-o", os.path.join(d, "k.cubin")],
                           capture_output=True, text=True)
    return r.stdout + r.stderr


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--m", type=int, default=512)
    ap.add_argument("--k", type=int, default=8192)
    ap.add_argument("--n", type=int, default=28672)
    ap.add_argument("--configs", default="all", help="'all' (the M bucket's candidates) or 'table' (shipped wgmma entries)")
    args = ap.parse_args(argv)
    from triton.runtime import driver
    from nybble.kernels.triton.configs import WGMMA, ConfigStore, wgmma_configs
    driver.set_active(_Sm90Driver())
    if args.configs == "table":
        cfgs = list(dict.fromkeys(c for c in ConfigStore("NVIDIA H100 80GB HBM3", cache=None).shipped.values()
                                  if c.block_m == WGMMA))
    else:
        cfgs = wgmma_configs(args.m)
    bad = 0
    for cfg in cfgs:
        try:
            kern = compile_one(cfg, args.m, args.k, args.n)
        except Exception as e:  # report and go on: the point is to see every config
            bad += 1
            print(f"{cfg}: FAILED {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            continue
        log = ptxas_log(kern.asm["ptx"])
        regs = re.search(r"Used (\d+) registers", log)
        spill = re.search(r"(\d+) bytes spill stores", log)
        warn = sorted(set(re.findall(r"C75\d\d", log)))
        print(f"{cfg}: regs {regs and regs.group(1)} spill stores {spill and spill.group(1)} "
              f"smem {kern.metadata.shared} {' '.join(warn)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
