"""Per-call cost of the decode ops: Python CPU kernels vs the C++ dispatcher shim (eighth session, "overhead").

    python benchmarks/cpu/eighth-e2e/overhead_opcall.py [calls=20000] [rounds=8] [threads=1]

Tiny problems so that the kernels themselves take ~1 us: A8W4 / A16W4 at N = 64, K = 256 (bf16 x, 1 x 256),
torch int4 (nybble::torch_int4_cpu_a16w4) at the same shape, decode attention (q (1, 8, 1, 64), cache
(1, 2, 16, 64) bf16, bool mask). Each op called through torch.ops.nybble.<op>.default (a) with its Python
CPU kernel, (b) with the shim's C++ kernel (nybble.kernels.cpu_shim.enable()), plus a compiled graph
(inductor, cpp_wrapper) of 32 calls of each op, both ways; alternating rounds, median us per call; and the
raw nybble._C call with precomputed arguments (the floor). Results are checked equal first.
Run under flock -x.
"""
import os
import statistics
import sys
import time

import torch

import nybble
from nybble.kernels import cpu_ops, cpu_shim
from nybble.kernels.cpu import selected_isa
from nybble.kernels.cpu_attention import decode_attention

CALLS = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 8
torch.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else 1)
isa = selected_isa()


def quantized(cfg, kernel):
    m = torch.nn.Sequential(torch.nn.Linear(256, 64, bias=False).to(torch.bfloat16))
    nybble.quantize(m, cfg, force_kernel=kernel, show_progress=False)
    return m[0]


a8 = quantized(nybble.Int8DynamicActivationInt4WeightConfig(group_size=128, zero_point="int", act_mapping="symmetric"),
               "nybble_cpu").packed()
a16 = quantized(nybble.Int4WeightOnlyConfig(group_size=128, zero_point="int"), "nybble_cpu").packed()
ti = quantized(nybble.Int4WeightOnlyConfig(group_size=128, zero_point="none"), "torch_int4_cpu").packed()
x = torch.randn(1, 256, dtype=torch.bfloat16)
q = torch.randn(1, 8, 1, 64, dtype=torch.bfloat16)
kc, vc = torch.randn(2, 1, 2, 16, 64, dtype=torch.bfloat16)
mask = torch.ones(1, 1, 1, 16, dtype=torch.bool)
mask[..., 12:] = False
N = torch.ops.nybble
cases = {
    "cpu_a8w4": (N.cpu_a8w4.default, (x, a8["qw"], a8["scale"], a8.get("zero_point"), a8.get("wcomp"), 64, 128, False,
                                      None, isa)),
    "cpu_a16w4": (N.cpu_a16w4.default, (x, a16["qw"], a16["scale"], a16.get("zero_point"), 64, 128, None, isa)),
    "torch_int4_cpu_a16w4": (N.torch_int4_cpu_a16w4.default, (x, ti["weight_int4pack"], ti["scale_and_zeros"], 128,
                                                              None)),
    "cpu_decode_attention": (N.cpu_decode_attention.default, (q, kc, vc, None, mask)),
}


def graph_fn(op, args, reps=32):
    def f(*a):
        outs = [op(*a) for _ in range(reps)]
        return torch.stack(outs).sum(0)
    return torch.compile(f, fullgraph=True, dynamic=False, options={"cpp_wrapper": True, "size_asserts": False}), reps


with torch.inference_mode():
    ref = {k: op(*a) for k, (op, a) in cases.items()}
    graphs = {k: graph_fn(op, a) for k, (op, a) in cases.items()}
    gref = {k: g(*cases[k][1]) for k, (g, _) in graphs.items()}
    assert cpu_shim.enable(), cpu_shim.status()
    for k, (op, a) in cases.items():
        assert torch.equal(op(*a), ref[k]), k
        assert torch.equal(graphs[k][0](*a), gref[k]), k
    cpu_shim.disable()
    xd = x.contiguous()
    y = torch.empty(1, 64, dtype=torch.bfloat16)
    raw_args = (isa, xd.data_ptr(), 1, 1, 256, a8["qw"].data_ptr(), a8["scale"].data_ptr(), 1,
                a8["zero_point"].data_ptr(), 0, 64, 256, 128, False, 0, y.data_ptr(), 1, 64, 1)
    res: dict[str, list[float]] = {}

    def timed(label, fn, args, calls):
        t = time.perf_counter()
        for _ in range(calls):
            fn(*args)
        res.setdefault(label, []).append((time.perf_counter() - t) / calls * 1e6)

    for r in range(ROUNDS):
        for mode in (("python", "shim") if r % 2 == 0 else ("shim", "python")):
            if mode == "shim":
                assert cpu_shim.enable()
            else:
                cpu_shim.disable()
            for k, (op, a) in cases.items():
                timed(f"{k:22s} eager op, {mode}", op, a, CALLS)
                g, reps = graphs[k]
                timed(f"{k:22s} compiled, {mode}", g, a, CALLS // reps)
        timed("cpu_a8w4 raw nybble._C.a8w4 call", cpu_ops._C.a8w4, raw_args, CALLS)
    cpu_shim.disable()

print(f"{time.strftime('%H:%M:%S', time.gmtime())} UTC, {CALLS} calls x {ROUNDS} rounds, {torch.get_num_threads()} "
      f"thread(s), uptime: {os.popen('uptime').read().strip()}")
for k in sorted(res):
    v = res[k]
    if "compiled" in k:
        v = [t / graphs[k.split()[0]][1] for t in v]  # per op call (the graph's own work included)
    print(f"  {k:48s} median {statistics.median(v):7.2f} us/call  (min {min(v):.2f})")
