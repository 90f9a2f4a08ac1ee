"""Quick timing of the ``nybble_cpu`` kernels against torch in the same run (a developer check; the
full benchmark is ``nybble bench cpu``).

    python -m nybble.kernels.cpu_quickbench --k 4096 --n 14336 --m 1 512 --group 128

Weights are rotated through enough copies (> 4 x the L3 size given by ``--l3-mib``) that each
call reads them from DRAM; the median of ``--reps`` calls is reported.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from ..plain import PlainInt4Weight
from .base import LinearSpec
from .cpu import NybbleCpuKernel, selected_isa


def _median_time(fn, reps: int, warmup: int = 2) -> float:
    for i in range(warmup):
        fn(i)
    ts = []
    for i in range(reps):
        t0 = time.perf_counter()
        fn(i)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=4096)
    ap.add_argument("--n", type=int, default=14336)
    ap.add_argument("--m", type=int, nargs="+", default=[1, 512])
    ap.add_argument("--group", type=int, default=128)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--l3-mib", type=float, default=32)
    ap.add_argument("--no-torch", action="store_true", help="skip the torch baselines")
    args = ap.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    k, n = args.k, args.n
    wbytes = n * k // 2
    copies = max(2, int(4 * args.l3_mib * 2**20 / wbytes) + 1)
    torch.manual_seed(0)
    w = torch.randn(n, k) * 0.02
    plain = PlainInt4Weight.from_float(w, args.group, "none", dtype)
    print(f"K={k} N={n} group={args.group} dtype={args.dtype} threads={torch.get_num_threads()} "
          f"isa={selected_isa()} weight copies={copies} ({wbytes / 1e6:.1f} MB int4 each)")
    kernels = {}
    for act in ("a16", "a8_sym"):
        spec = LinearSpec.for_weight(plain, act)
        kern = NybbleCpuKernel(spec)
        kernels[act] = (kern, [kern.prepack(plain) for _ in range(copies)])
    tw = None
    if not args.no_torch:
        codes = plain.codes().to(torch.int32)
        ref_copies = max(2, int(4 * args.l3_mib * 2**20 / (n * k * 2)) + 1)
        wdense = [w.to(dtype).clone() for _ in range(ref_copies)]
        wdense32 = [w.clone() for _ in range(max(2, int(4 * args.l3_mib * 2**20 / (n * k * 4)) + 1))]
        try:
            packed_t = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1)
            sz = torch.stack([plain.scale.float(), torch.zeros_like(plain.scale.float())], -1)
            sz = sz.transpose(0, 1).contiguous().to(dtype)   # (G, N, 2): scale, zero (zero - 8 offset)
            tw = [(packed_t.clone(), sz) for _ in range(copies)]
        except Exception as exc:  # pragma: no cover
            print("torch int4 kernel unavailable:", exc)
    for m in args.m:
        x = torch.randn(m, k).to(dtype)
        row = [f"M={m:5d}"]
        for act, (kern, packs) in kernels.items():
            t = _median_time(lambda i: kern.apply(x, packs[i % len(packs)], None), args.reps)
            row.append(f"{act}: {t * 1e3:8.3f} ms {wbytes / t / 1e9:6.1f} GB/s {2 * m * n * k / t / 1e9:7.1f} GFLOP/s")
        if not args.no_torch:
            t = _median_time(lambda i: F.linear(x, wdense[i % len(wdense)]), args.reps)
            row.append(f"torch {args.dtype}: {t * 1e3:8.3f} ms")
            x32 = x.float()
            t = _median_time(lambda i: F.linear(x32, wdense32[i % len(wdense32)]), args.reps)
            row.append(f"torch fp32: {t * 1e3:8.3f} ms ({2 * m * n * k / t / 1e9:.0f} GFLOP/s)")
            if tw is not None:
                t = _median_time(lambda i: torch.ops.aten._weight_int4pack_mm_for_cpu(
                    x, tw[i % len(tw)][0], args.group, tw[i % len(tw)][1]), args.reps)
                row.append(f"torch int4: {t * 1e3:8.3f} ms")
        print(" | ".join(row), flush=True)


if __name__ == "__main__":
    main()
