"""Kernel-level check of sibling fusion (sixth session, 3): 16 layers' q/k/v (2048 -> 2048/512/512) and
gate/up (2048 -> 5632 x 2) as separate Int4Linear calls vs one fused call per group, weights from DRAM.

    python benchmarks/cpu/sixth-e2e/fuse_kernels.py [variant=nybble_a8w4] [rounds=30] [compile=0]

compile=1: each group's 16-layer loop (separate and fused) runs as one torch.compile'd function
(inductor, fullgraph; the fused one through the traced path: one op per group).

Two copies of the same 16 random layers (the second fused with fuse_siblings). Per round: every layer's
group once, separate then fused (order alternating per round); us per layer group = median over rounds of
the round's mean. Also the share of each packed weight in huge pages (AnonHugePages of its mapping).
Run under `flock -x /tmp/nybble_bench.lock`.
"""
import statistics
import sys
import time

import torch
from torch import nn

import nybble
from nybble.kernels.cpu_fuse import fuse_siblings

torch.set_num_threads(2)
VARIANT = sys.argv[1] if len(sys.argv) > 1 else "nybble_a8w4"
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 30
COMPILE = bool(int(sys.argv[3])) if len(sys.argv) > 3 else False
cfg = {"nybble_a16w4": (nybble.Int4WeightOnlyConfig(group_size=128, zero_point="int"), "nybble_cpu"),
       "nybble_a8w4": (nybble.Int8DynamicActivationInt4WeightConfig(group_size=128, zero_point="int",
                                                                   act_mapping="symmetric"), "nybble_cpu"),
       "torch_int4": (nybble.Int4WeightOnlyConfig(group_size=128, zero_point="none"), "torch_int4_cpu")}[VARIANT]


class Layer(nn.Module):
    def __init__(self):
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj = nn.Linear(2048, 2048, False), nn.Linear(2048, 512, False), nn.Linear(2048, 512, False)
        self.gate_proj, self.up_proj = nn.Linear(2048, 5632, False), nn.Linear(2048, 5632, False)


def build():
    torch.manual_seed(0)
    m = nn.ModuleList(Layer() for _ in range(16)).to(torch.bfloat16)
    nybble.quantize(m, cfg[0], force_kernel=cfg[1], show_progress=False)
    return m


def huge_share(t):
    """Fraction of the bytes of t's mapping(s) in AnonHugePages (from /proc/self/smaps)."""
    lo, hi = t.data_ptr(), t.data_ptr() + t.numel() * t.element_size()
    size = huge = 0
    cur = None
    for line in open("/proc/self/smaps"):
        if "-" in line.split()[0] and not line.split()[0].endswith(":"):
            a, b = (int(v, 16) for v in line.split()[0].split("-"))
            cur = (a, b) if a < hi and b > lo else None
        elif cur and line.startswith("Size:"):
            size += int(line.split()[1])
        elif cur and line.startswith("AnonHugePages:"):
            huge += int(line.split()[1])
    return huge / size if size else float("nan")


sep, fus = build(), build()
assert fuse_siblings(fus) == 32
x = torch.randn(1, 1, 2048).bfloat16()
big = lambda mod: max((b for b in mod.buffers()), key=lambda b: b.numel() * b.element_size())
print(f"huge-page share of the largest packed buffer: separate q {huge_share(big(sep[3].q_proj)):.2f}, "
      f"gate {huge_share(big(sep[3].gate_proj)):.2f}; fused qkv {huge_share(big(getattr(fus[3], 'q_proj+k_proj+v_proj'))):.2f}, "
      f"gate/up {huge_share(big(getattr(fus[3], 'gate_proj+up_proj'))):.2f}")


def make(model, group):
    def fn(x):
        out = []
        for layer in model:
            for n in group:
                out.append(getattr(layer, n)(x))
        return out
    if COMPILE:
        fn = torch.compile(fn, fullgraph=True, dynamic=False)
    return fn


fns = {}


def run_sep(group):
    fn = fns.setdefault(("sep", group), make(sep, group))
    t = time.perf_counter()
    fn(x)
    return (time.perf_counter() - t) / 16 * 1e6


def run_fus(group):
    fn = fns.setdefault(("fus", group), make(fus, group))
    t = time.perf_counter()
    fn(x)
    return (time.perf_counter() - t) / 16 * 1e6


print(f"start {time.strftime('%H:%M:%S', time.gmtime())} UTC {VARIANT} {ROUNDS} rounds compile={int(COMPILE)}", flush=True)
res = {}
with torch.inference_mode():
    for name, group in (("q/k/v", ("q_proj", "k_proj", "v_proj")), ("gate/up", ("gate_proj", "up_proj"))):
        run_sep(group), run_fus(group)
        a, b = [], []
        for r in range(ROUNDS):
            if r % 2:
                b.append(run_fus(group)); a.append(run_sep(group))
            else:
                a.append(run_sep(group)); b.append(run_fus(group))
        ratio = statistics.median(y / z for y, z in zip(a, b))
        print(f"{name:8s} separate {statistics.median(a):7.1f} us  fused {statistics.median(b):7.1f} us per layer "
              f"(median of per-round ratios separate/fused {ratio:.3f})", flush=True)
print(f"end {time.strftime('%H:%M:%S', time.gmtime())} UTC")
