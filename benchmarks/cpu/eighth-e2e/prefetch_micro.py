"""Micro-experiment for the cross-op weight prefetch (csrc/prefetch.h), eighth session.

    python benchmarks/cpu/eighth-e2e/prefetch_micro.py ROUNDS STEPS GAP_US ACT MODES [LAYERS]

A decode-like chain of nybble linears with the 0.85B model's shapes (per layer: fused qkv 2048x3072,
o_proj 2048x2048, fused gate_up 2048x11264, down 5632x2048; LAYERS layers (default 16) with their own
random weights, then lm_head 2048x32000; env PF_SHAPES=KxN,... replaces the per-layer shapes and drops lm_head), bf16 activations, group 128, int zero points, 2 threads,
called through the kernel's `apply` (as in eager). Between two linears the main thread busy-waits
GAP_US microseconds (stands for the graph's non-linear work; the DRAM is idle then). ACT: a16 | a8.
MODES: comma list of prefetch settings, each `off`, `dA16/A8` (cross-op prefetch off, the kernels' M = 1
prefetch distances in bytes; defaults d4096/0 until commit b4a6cf8, d4096/2048 since), or `cap:hint[:spin[:pace_gbps]]` (cap in KiB, hint t0|t1|t2|nta|w; pace 0 = unpaced),
e.g. off,2048:t1,4096:t1. One process; per round (order rotating) a DRAM probe (torch.sum over
128 MiB), every mode for STEPS steps (one step untimed first), a probe. Prints per mode the median
ms/step and the median per-round ratio off / mode, over all rounds and over fast rounds (both probes
> 55 GB/s). Timed rounds under the exclusive bench lock (taken here).
"""
import fcntl
import os
import statistics
import sys
import time

import torch

from nybble import _C
from nybble.bench.cpu import _random_plain
from nybble.kernels import registry
from nybble.kernels.base import LinearSpec

torch.set_num_threads(2)
ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 10
STEPS = int(sys.argv[2]) if len(sys.argv) > 2 else 4
GAP_US = float(sys.argv[3]) if len(sys.argv) > 3 else 30.0
ACT = sys.argv[4] if len(sys.argv) > 4 else "a16"
MODES = (sys.argv[5] if len(sys.argv) > 5 else "off,2048:t1").split(",")
LAYERS = int(sys.argv[6]) if len(sys.argv) > 6 else 16
DEFAULT_DIST = tuple(_C.gemv_prefetch())
HINTS = {"t0": 0, "t1": 1, "t2": 2, "nta": 3, "w": 4}
SHAPES = [(2048, 3072), (2048, 2048), (2048, 11264), (5632, 2048)]
LM_HEAD = [(2048, 32000)]
if os.environ.get("PF_SHAPES"):  # e.g. PF_SHAPES=4096x14336,14336x4096: these per layer, no lm_head
    SHAPES = [tuple(int(v) for v in s.split("x")) for s in os.environ["PF_SHAPES"].split(",")]
    LM_HEAD = []


def log(*a):
    print(*a, flush=True)


def build():
    gen = torch.Generator().manual_seed(0)
    ops = []
    shapes = SHAPES * LAYERS + LM_HEAD
    for k, n in shapes:
        plain = _random_plain(n, k, 128, "int", torch.bfloat16, gen)
        spec = LinearSpec.for_weight(plain, "a16" if ACT == "a16" else "a8_sym", name=f"{k}x{n}")
        kern = registry.choose(spec, force="nybble_cpu")(spec)
        ops.append((k, kern, kern.prepack(plain)))
    return ops


def spin(us):
    t_end = time.perf_counter_ns() + int(us * 1000)
    while time.perf_counter_ns() < t_end:
        pass


def step(ops, xs):
    for k, kern, packed in ops:
        kern.apply(xs[k], packed, None)
        spin(GAP_US)


def set_mode(mode):
    _C.set_gemv_prefetch(*DEFAULT_DIST)  # the kernels' defaults (4096 / 0 until 19:54, then 4096 / 2048)
    if mode == "off":
        _C.prefetch_configure(enabled=0)
        return
    if mode.startswith("d"):  # dA16/A8: cross-op prefetch off, the M = 1 GEMV prefetch distances (bytes)
        _C.prefetch_configure(enabled=0)
        a16, a8 = mode[1:].split("/")
        _C.set_gemv_prefetch(int(a16), int(a8))
        return
    parts = mode.split(":")
    _C.prefetch_configure(enabled=1, cap=int(parts[0]) * 1024, hint=HINTS[parts[1]],
                          spin_us=int(parts[2]) if len(parts) > 2 else 0,
                          pace_gbps=float(parts[3]) if len(parts) > 3 else 0.0)


def probe(buf):
    ts = []
    for _ in range(6):
        t0 = time.perf_counter()
        buf.sum()
        ts.append(time.perf_counter() - t0)
    return buf.numel() * buf.element_size() / statistics.median(ts) / 1e9


def main():
    with open("/tmp/nybble_bench.lock") as lf:
        fcntl.flock(lf, fcntl.LOCK_SH)
        ops = build()
        buf = torch.ones(32 << 20, dtype=torch.float32)
        xs = {k: torch.randn(1, k).to(torch.bfloat16) for k in {k for k, _ in SHAPES} | {2048}}
        wbytes = sum(p["qw"].numel() * p["qw"].element_size() if isinstance(p, dict) else 0 for _, _, p in ops)
        fcntl.flock(lf, fcntl.LOCK_UN)
        log(f"# {' '.join(sys.argv)}; {len(ops)} linears, act {ACT}, gap {GAP_US} us; prefetch {_C.prefetch_info()}")
        import os
        log(f"# start {time.strftime('%H:%M:%S', time.gmtime())} load {os.getloadavg()}")
        fcntl.flock(lf, fcntl.LOCK_EX)
        times = {m: [] for m in MODES}
        probes = []
        for m in MODES:  # warm-up: learn the order
            set_mode(m)
            step(ops, xs)
        for r in range(ROUNDS):
            p0 = probe(buf)
            order = MODES[r % len(MODES):] + MODES[:r % len(MODES)]
            row = {}
            for m in order:
                set_mode(m)
                step(ops, xs)
                t0 = time.perf_counter()
                for _ in range(STEPS):
                    step(ops, xs)
                row[m] = (time.perf_counter() - t0) / STEPS * 1e3
            _C.prefetch_drain()
            p1 = probe(buf)
            probes.append((p0, p1))
            for m in MODES:
                times[m].append(row[m])
            log(f"round {r:2d} probe {p0:5.1f}/{p1:5.1f} GB/s " +
                " ".join(f"{m}={row[m]:.3f}" for m in MODES))
        fcntl.flock(lf, fcntl.LOCK_UN)
        log(f"# end {time.strftime('%H:%M:%S', time.gmtime())} load {os.getloadavg()}")
        _C.prefetch_configure(enabled=1)
        log(f"# prefetch counters {_C.prefetch_info()}")
        fast = [i for i, (a, b) in enumerate(probes) if a > 55 and b > 55]
        slow = [i for i, (a, b) in enumerate(probes) if a <= 55 and b <= 55]
        gap_ms = GAP_US * len(ops) / 1e3
        for label, idx in (("all", list(range(ROUNDS))), ("fast", fast), ("slow", slow)):
            if not idx:
                continue
            log(f"== {label} rounds ({len(idx)}); gap total {gap_ms:.2f} ms/step")
            for m in MODES:
                med = statistics.median(times[m][i] for i in idx)
                ratio = statistics.median(times[MODES[0]][i] / times[m][i] for i in idx)
                log(f"  {m:14s} {med:7.3f} ms/step  linears {med - gap_ms:7.3f}  {MODES[0]}/mode {ratio:.3f}")


main()
