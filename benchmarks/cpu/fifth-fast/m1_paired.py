"""The issue's M = 1 cells, paired per round, split by DRAM regime (fifth session).

    flock -x /tmp/nybble_bench.lock python benchmarks/cpu/fifth-fast/m1_paired.py [rounds=150] [shapes=4096x14336,14336x4096] [modes]

modes: a comma separated subset of the four below (default all); a speedup column needs its baseline.

The same modes and weights as ``python -m nybble.bench.cpu`` (its ``build_case``: nybble A16W4 bf16,
nybble A8W4, torch int4 ``_weight_int4pack_mm_for_cpu``, torch bf16 ``F.linear``; group 128, copies
rotated through > 4 x L3, 2 threads) plus its DRAM probe (``torch.sum`` over buffers of the int4
weight's size). Every round calls each mode once (order rotating), so a round takes a few ms
(torch bf16: ~4-6 ms) and the DRAM regime, which flips within seconds, is the same for all of a
round's calls. Per round: % of the probe = probe time / kernel time x (probe bytes / kernel bytes),
and the speedups kernel vs torch int4 / torch bf16 of the same round. Medians over the rounds whose
probe read > 55 GB/s ("fast") and the others ("slow"). The kernel table's own %BW pools its samples
over 3 (or ``--rounds``) bursts instead, which the regime flips distort.
"""
import argparse
import statistics
import sys
import time

import torch

from nybble.bench import common as C
from nybble.bench.cpu import build_case, build_probe

MODES = ("nybble_a16w4_bf16", "nybble_a8w4", "torch_int4", "torch_bf16")
FAST = 55.0


def main() -> int:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 150
    shapes = C.parse_shapes(sys.argv[2] if len(sys.argv) > 2 else "4096x14336,14336x4096")
    modes = tuple(sys.argv[3].split(",")) if len(sys.argv) > 3 else MODES
    torch.set_num_threads(2)
    args = argparse.Namespace(kernel="nybble_cpu", group=128, zero_point="int", cache_factor=4.0)
    l3 = C.cpu_cache_bytes()
    gen = torch.Generator().manual_seed(0)
    print(f"start {time.strftime('%H:%M:%S', time.gmtime())} UTC, {rounds} rounds, 2 threads", flush=True)
    for k, n in shapes:
        from nybble.bench.cpu import weight_bytes_estimate
        cases = {m: build_case(m, k, n, C.copies_for(weight_bytes_estimate(m, k, n, 128), l3, 4.0), args, gen)
                 for m in modes}
        probe = build_probe(k, n, l3, args)
        x = torch.randn(1, k, generator=gen).to(torch.bfloat16)
        allc = dict(cases, probe=probe)
        names = list(allc)
        t = {m: [] for m in names}
        i = 0
        for m in names:  # warm-up
            for _ in range(3):
                allc[m].run(x, i)
                i += 1
        with torch.inference_mode():
            for r in range(rounds):
                for m in names[r % len(names):] + names[:r % len(names)]:
                    t0 = time.perf_counter()
                    allc[m].run(x, i)
                    t[m].append(time.perf_counter() - t0)
                    i += 1
        pb = probe.weight_bytes
        gbps = [pb / s / 1e9 for s in t["probe"]]
        print(f"{k}x{n}: probe median {statistics.median(gbps):.1f} GB/s, "
              f"{sum(g > FAST for g in gbps)} fast / {sum(g <= FAST for g in gbps)} slow rounds "
              f"(end {time.strftime('%H:%M:%S', time.gmtime())})", flush=True)
        for regime, sel in (("fast", [j for j, g in enumerate(gbps) if g > FAST]),
                            ("slow", [j for j, g in enumerate(gbps) if g <= FAST])):
            if len(sel) < 3:
                continue
            probe_gbps = statistics.median(gbps[j] for j in sel)
            print(f"  {regime} rounds ({len(sel)}), probe {probe_gbps:.1f} GB/s:")
            for m in modes:
                wb = cases[m].weight_bytes
                pct = statistics.median(100 * t["probe"][j] / t[m][j] * wb / pb for j in sel)
                us = statistics.median(t[m][j] for j in sel) * 1e6
                line = f"    {m:18s} {us:8.1f} us  {pct:5.1f}% of probe"
                for base, label in (("torch_int4", "torch int4"), ("torch_bf16", "torch bf16")):
                    if base in t:
                        line += f"  {statistics.median(t[base][j] / t[m][j] for j in sel):5.2f}x {label}"
                print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
