"""Where a compiled decode step's time goes: the whole step vs the same model's linears alone (tenth session).

    python benchmarks/cpu/tenth-e2e/decomp.py [rounds=30] [steps=12] [kinds=nybble_a8w4,torch_int4]

One process. Per kind: the 0.85B random Llama of the e2e benchmark, quantized, fused (q/k/v, gate/up),
nybble decode attention, compiled like the paired benchmark (e2e_cpu.Decoder, cpp_wrapper). Per round
(order rotating), between two DRAM probes: for every kind, `steps` decode steps (tok/s) and `steps` runs
of the model's own 65 Int4Linear layers in decode order called back to back through their kernel's
`apply` on (1, K) bf16 inputs (the same weights, no other work in between: the linears' share of a step).
Prints per regime (fast = both probes > 55 GB/s) the median ms/step, ms of the linear chain, their
difference (everything else of a step) and the chain's weight GB/s. Recipes: ``e2e_cpu.variant_config``
with nybble's zero point ``int`` (as the run in ``logs/decomp-1.log``); probe: ``e2e_cpu.dram_probe_gbps``
(that run used the paired harness's inline probe, the same ``torch.sum`` over 4 x 32 MiB buffers, median
of 12 calls).
"""
import fcntl
import statistics
import sys
import time

import torch

import nybble
from nybble.bench.e2e_cpu import Decoder, build_model, dram_probe_gbps, variant_config
from nybble.kernels.cpu_attention import use_decode_attention
from nybble.kernels.cpu_fuse import fuse_siblings
from nybble.tensor import Int4Linear

torch.set_num_threads(2)
ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 30
STEPS = int(sys.argv[2]) if len(sys.argv) > 2 else 12
KINDS = (sys.argv[3] if len(sys.argv) > 3 else "nybble_a8w4,torch_int4").split(",")
now = lambda: time.strftime("%H:%M:%S", time.gmtime())  # noqa: E731
lock = open("/tmp/nybble_bench.lock", "a+")
fcntl.flock(lock, fcntl.LOCK_SH)
print(f"setup {now()} UTC", flush=True)
gen = torch.Generator().manual_seed(1)
runs = {}
for kind in KINDS:
    cfg, kernel = variant_config(kind, "int", "nybble_cpu")
    m = build_model(16, 2048, 5632, 32, 8, 32000)
    nybble.quantize(m, cfg, force_kernel=kernel, show_progress=False)
    assert fuse_siblings(m) == 32
    use_decode_attention(m)
    d = Decoder(m, compile=True, max_len=16 + 3 + STEPS + 8, cpp_wrapper=True)
    with torch.inference_mode():
        tok = d.start(torch.randint(0, 32000, (1, 16), generator=gen))
        for _ in range(3):
            tok = d.step(tok)
    layers = [mod for mod in m.modules() if isinstance(mod, Int4Linear)]  # registration order = decode order
    calls = [(mod.kernel, mod.packed(), mod.bias, torch.randn(1, mod.in_features).to(torch.bfloat16)) for mod in layers]
    nbytes = sum(t.numel() * t.element_size() for _, p, _, _ in calls for t in p.values() if isinstance(t, torch.Tensor))
    runs[kind] = (d, calls, nbytes)
    print(f"  {kind}: {len(calls)} linears, {nbytes / 1e6:.1f} MB of weights as packed", flush=True)
probe = dram_probe_gbps


def chain(calls):
    for kern, p, b, x in calls:
        kern.apply(x, p, b)


fcntl.flock(lock, fcntl.LOCK_UN)
fcntl.flock(lock, fcntl.LOCK_EX)
print(f"rounds {now()} UTC", flush=True)
rows = []
with torch.inference_mode():
    for r in range(ROUNDS):
        p0 = probe()
        res = {}
        for kind in KINDS[r % len(KINDS):] + KINDS[:r % len(KINDS)]:
            d, calls, _ = runs[kind]
            step_ms = d.timed_steps(torch.randint(0, 32000, (1, 16), generator=gen), 3, STEPS)
            chain(calls)
            t = time.perf_counter()
            for _ in range(STEPS):
                chain(calls)
            res[kind] = (step_ms, (time.perf_counter() - t) / STEPS * 1e3)
        p1 = probe()
        regime = "fast" if min(p0, p1) > 55 else "slow" if max(p0, p1) < 55 else "mixed"
        rows.append((regime, res))
        print(f"round {r:2d} probe {p0:5.1f}/{p1:5.1f} {regime:5s} | " +
              "  ".join(f"{k} step {s:6.2f} chain {c:6.2f}" for k, (s, c) in res.items()), flush=True)
fcntl.flock(lock, fcntl.LOCK_UN)
print(f"end {now()} UTC")
for regime in ("fast", "slow", "all"):
    sel = [res for g, res in rows if g == regime or regime == "all"]
    if not sel:
        continue
    print(f"\n{regime} rounds: {len(sel)}")
    for kind in KINDS:
        st = statistics.median(x[kind][0] for x in sel)
        ch = statistics.median(x[kind][1] for x in sel)
        rest = statistics.median(x[kind][0] - x[kind][1] for x in sel)
        print(f"  {kind:14s} step {st:6.2f} ms ({1e3 / st:6.1f} tok/s)  linear chain {ch:6.2f} ms "
              f"({runs[kind][2] / ch / 1e6:5.1f} GB/s)  rest {rest:5.2f} ms")
    if len(KINDS) > 1:
        a, b = KINDS[0], KINDS[-1]
        print(f"  {a} vs {b}: step {statistics.median(x[b][0] / x[a][0] for x in sel):.3f}x, "
              f"chain {statistics.median(x[b][1] / x[a][1] for x in sel):.3f}x")
