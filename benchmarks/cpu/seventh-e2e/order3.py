"""Three compiled A8W4 models in one process, built in the order U1 (unfused), F (fused), U2 (unfused)
(seventh session, fusion diagnosis).

    python benchmarks/cpu/seventh-e2e/order3.py [variant=nybble_a8w4] [steps=24] [blocks=8] [order=UFU]

Each model: build_model (0.85B Llama), quantize, optional fuse_siblings, nybble decode attention,
e2e_cpu.Decoder(compile=True). Then alternating blocks of `steps` steps (order rotating), a DRAM probe
before each round; per-model median ms/step and median per-round ratios to U1; then a torch.profiler pass
per model (nybble linear ops by input shape: calls, mean us). Also the AnonHugePages of the mapping that
holds each model's lm_head weight. Setup under the shared lock, blocks under the exclusive one.
"""
import fcntl
import statistics
import sys
import time

import torch

import nybble
from nybble.bench.e2e_cpu import Decoder, build_model, dram_probe_gbps
from nybble.kernels.cpu_attention import use_decode_attention
from nybble.kernels.cpu_fuse import fuse_siblings

import os
torch.set_num_threads(int(os.environ.get("THREADS", "2")))
VARIANT = sys.argv[1] if len(sys.argv) > 1 else "nybble_a8w4"
STEPS = int(sys.argv[2]) if len(sys.argv) > 2 else 24
BLOCKS = int(sys.argv[3]) if len(sys.argv) > 3 else 8
ORDER = sys.argv[4] if len(sys.argv) > 4 else "UFU"
cfg = {"nybble_a16w4": (nybble.Int4WeightOnlyConfig(group_size=128, zero_point="int"), "nybble_cpu"),
       "nybble_a8w4": (nybble.Int8DynamicActivationInt4WeightConfig(group_size=128, zero_point="int",
                                                                   act_mapping="symmetric"), "nybble_cpu"),
       "torch_int4": (nybble.Int4WeightOnlyConfig(group_size=128, zero_point="none"), "torch_int4_cpu")}[VARIANT]


def vma_huge_kib(addr):
    """(AnonHugePages kB, Rss kB, size kB) of the mapping holding addr."""
    cur = None
    out = None
    for line in open("/proc/self/smaps"):
        parts = line.split()
        if "-" in parts[0] and len(parts) >= 5 and ":" not in parts[0]:
            lo, hi = (int(v, 16) for v in parts[0].split("-"))
            cur = lo <= addr < hi
            if cur:
                out = {"size": (hi - lo) // 1024}
        elif cur and parts[0] in ("AnonHugePages:", "Rss:"):
            out[parts[0][:-1]] = int(parts[1])
    return out


lock = open("/tmp/nybble_bench.lock", "a+")
fcntl.flock(lock, fcntl.LOCK_SH)
gen = torch.Generator().manual_seed(1)
print(f"setup {time.strftime('%H:%M:%S', time.gmtime())} UTC {VARIANT} order {ORDER} threads {torch.get_num_threads()}", flush=True)
ds = {}
for i, kind in enumerate(ORDER):
    m = build_model(16, 2048, 5632, 32, 8, 32000)
    nybble.quantize(m, cfg[0], force_kernel=cfg[1], show_progress=False)
    if kind == "F":
        fuse_siblings(m)
    use_decode_attention(m)
    d = Decoder(m, compile=True, max_len=16 + 3 + STEPS + 8)
    with torch.inference_mode():
        tok = d.start(torch.randint(0, 32000, (1, 16), generator=gen))
        for _ in range(3):
            tok = d.step(tok)
    name = f"{kind}{i}"
    ds[name] = d
    qw = m.lm_head.packed()["qw"]
    print(f"  {name}: lm_head qw at {qw.data_ptr():#x}: {vma_huge_kib(qw.data_ptr())}", flush=True)


def block(d, steps, prof=None):
    with torch.inference_mode():
        tok = d.start(torch.randint(0, 32000, (1, 16), generator=gen))
        for _ in range(3):
            tok = d.step(tok)
        t = time.perf_counter()
        for _ in range(steps):
            tok = d.step(tok)
        return (time.perf_counter() - t) / steps * 1e3


fcntl.flock(lock, fcntl.LOCK_UN)
fcntl.flock(lock, fcntl.LOCK_EX)
names = list(ds)
ms = {k: [] for k in names}
probes = []
print(f"blocks {time.strftime('%H:%M:%S', time.gmtime())} UTC", flush=True)
for r in range(BLOCKS):
    probes.append(dram_probe_gbps(calls=12))
    for k in names[r % len(names):] + names[:r % len(names)]:
        ms[k].append(block(ds[k], STEPS))
print("probe GB/s " + " ".join(f"{p:.0f}" for p in probes))
for k in names:
    print(f"{k:4s} ms/step " + " ".join(f"{x:6.2f}" for x in ms[k]) + f"   median {statistics.median(ms[k]):.2f}"
          f"   per-block ratio to {names[0]} {statistics.median(a / b for a, b in zip(ms[k], ms[names[0]])):.3f}")
for k in names:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
        block(ds[k], STEPS)
    tot = sum(e.self_cpu_time_total for e in prof.key_averages())
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14, max_name_column_width=50))
    print(f"-- {k}: self CPU total {tot / 1e3:.1f} ms; nybble ops by input shapes: calls, mean us")
    for ev in prof.key_averages(group_by_input_shape=True):
        if ev.key.startswith("nybble::"):
            print(f"   {ev.key:28s} {str(ev.input_shapes[:2]):40s} {ev.count:5d} {ev.self_cpu_time_total / ev.count:8.1f}")
print(f"end {time.strftime('%H:%M:%S', time.gmtime())} UTC")
fcntl.flock(lock, fcntl.LOCK_UN)
