"""A/B of e2e_cpu.Decoder's options on the fused compiled models (seventh-e2e/opts_ab.py + eighth session variants).

Eighth session ("overhead") additions: cppw1t = cppw + inductor `cpp.threads=1` (the graph's own small kernels
without OpenMP regions: no fork/join per norm / rotary / silu kernel; nybble's and torch's ops keep their
threads); `shim` as 6th argument (1 = nybble.kernels.cpu_shim enabled for every variant).

    python benchmarks/cpu/eighth-e2e/overhead_opts_ab.py [rounds=12] [steps=12] [kinds=nybble_a8w4,torch_int4] [variants=base,stance,cppw,frz]

For each kind one fused 0.85B model (nybble decode attention), and on it one Decoder per variant:
base = skip_guard_eval=False (the code of the 17:54 run), stance = skip_guard_eval=True,
cppw = stance + inductor cpp_wrapper, cpp0 = cpp_wrapper without the stance, frz = stance + inductor freezing, cppfrz = both.
Every Decoder's first step compiles (shared lock); rounds under the exclusive lock, order rotating;
per round every variant: 16-token prompt, 3 warm-up steps, `steps` timed; a DRAM probe before / after.
Prints the per-round ms/step and the medians of per-round ratios against `base` of the same kind, and
checks that every variant's tokens equal the first variant's (8 greedy steps).
`small` as 5th argument: a 16-layer model of hidden 512 (8 heads, 2 kv heads, intermediate 1408,
vocab 1024): its linears are cheap, so the step is dominated by the per-step overhead the options target.
"""
import fcntl
import statistics
import sys
import time

import torch

import nybble
from nybble.bench.e2e_cpu import Decoder, build_model
from nybble.kernels.cpu_attention import use_decode_attention
from nybble.kernels.cpu_fuse import fuse_siblings

torch.set_num_threads(2)
ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 12
STEPS = int(sys.argv[2]) if len(sys.argv) > 2 else 12
KINDS = (sys.argv[3] if len(sys.argv) > 3 else "nybble_a8w4,torch_int4").split(",")
VARIANTS = (sys.argv[4] if len(sys.argv) > 4 else "base,stance,cppw,frz").split(",")
if len(sys.argv) > 6 and sys.argv[6] == "1":
    from nybble.kernels import cpu_shim
    assert cpu_shim.enable(), cpu_shim.status()
SMALL = len(sys.argv) > 5 and sys.argv[5] == "small"  # 16 layers of hidden 512 (overhead-bound)
SHAPE = (16, 512, 1408, 8, 2, 1024) if SMALL else (16, 2048, 5632, 32, 8, 32000)
CFG = {
    "nybble_a16w4": (lambda: nybble.Int4WeightOnlyConfig(group_size=128, zero_point="int"), "nybble_cpu"),
    "nybble_a8w4": (lambda: nybble.Int8DynamicActivationInt4WeightConfig(group_size=128, zero_point="int",
                                                                           act_mapping="symmetric"), "nybble_cpu"),
    "torch_int4": (lambda: nybble.Int4WeightOnlyConfig(group_size=128, zero_point="none"), "torch_int4_cpu"),
}
OPTS = {
    "base": dict(skip_guard_eval=False),
    "stance": dict(skip_guard_eval=True),
    "cppw": dict(skip_guard_eval=True, inductor_options={"cpp_wrapper": True}),
    "cppw1t": dict(skip_guard_eval=True, inductor_options={"cpp_wrapper": True, "cpp.threads": 1}),
    "frz": dict(skip_guard_eval=True, inductor_options={"freezing": True}),
    "cpp0": dict(skip_guard_eval=False, inductor_options={"cpp_wrapper": True}),
    "cppfrz": dict(skip_guard_eval=True, inductor_options={"cpp_wrapper": True, "freezing": True}),
}
lock = open("/tmp/nybble_bench.lock", "a+")
fcntl.flock(lock, fcntl.LOCK_SH)
print(f"setup {time.strftime('%H:%M:%S', time.gmtime())} UTC", flush=True)
prompt = torch.randint(0, SHAPE[5], (1, 16), generator=torch.Generator().manual_seed(1))
ds = {}
for kind in KINDS:
    cfg, kernel = CFG[kind]
    m = build_model(*SHAPE)
    nybble.quantize(m, cfg(), force_kernel=kernel, show_progress=False)
    assert fuse_siblings(m) == 32
    use_decode_attention(m)
    ref = None  # the first variant's tokens (compiled A8W4 may differ from eager in bf16 rounding)
    for v in VARIANTS:
        t0 = time.perf_counter()
        try:
            d = Decoder(m, compile=True, max_len=16 + 3 + STEPS + 8, **OPTS[v])
            with torch.inference_mode():
                tok = d.start(prompt)
                got = [tok]
                for _ in range(8):
                    tok = d.step(tok)
                    got.append(tok)
        except Exception as exc:  # report and go on without this variant
            print(f"  {kind}/{v}: FAILED {type(exc).__name__}: {str(exc)[:400]}", flush=True)
            continue
        ref = ref or got
        same = all(torch.equal(a, b) for a, b in zip(ref, got))
        ds[f"{kind}/{v}"] = d
        print(f"  {kind}/{v}: ready in {time.perf_counter() - t0:.1f} s, tokens equal the first variant's: {same}", flush=True)
bufs = [torch.ones(32 * 2**18) for _ in range(4)]


def probe():
    ts = []
    for i in range(16):
        t = time.perf_counter()
        bufs[i % 4].sum()
        if i >= 4:
            ts.append(time.perf_counter() - t)
    return 32 * 2**20 / statistics.median(ts) / 1e9


fcntl.flock(lock, fcntl.LOCK_UN)
fcntl.flock(lock, fcntl.LOCK_EX)
names = list(ds)
g0 = Decoder.graphs()
print(f"rounds {time.strftime('%H:%M:%S', time.gmtime())} UTC, {ROUNDS} rounds x {STEPS} steps", flush=True)
rows = []
for r in range(ROUNDS):
    p0 = probe()
    ms = {}
    for n in names[r % len(names):] + names[:r % len(names)]:
        d = ds[n]
        with torch.inference_mode():
            tok = d.start(prompt)
            for _ in range(3):
                tok = d.step(tok)
            t = time.perf_counter()
            for _ in range(STEPS):
                tok = d.step(tok)
            ms[n] = (time.perf_counter() - t) / STEPS * 1e3
    p1 = probe()
    rows.append(ms)
    print(f"round {r:2d} probe {p0:5.1f}/{p1:5.1f} | " + "  ".join(f"{n} {ms[n]:6.2f}" for n in names), flush=True)
print(f"end {time.strftime('%H:%M:%S', time.gmtime())} UTC, graphs compiled during the rounds: {Decoder.graphs() - g0}")
fcntl.flock(lock, fcntl.LOCK_UN)
for n in names:
    base = n.split("/")[0] + "/base"
    med = statistics.median(t[n] for t in rows)
    line = f"  {n:22s} {med:6.2f} ms/step (median)"
    if base in ds:
        line += f"   base/this {statistics.median(t[base] / t[n] for t in rows):5.3f}x" \
                f"   saves {statistics.median(t[base] - t[n] for t in rows):6.3f} ms/step"
    print(line)
