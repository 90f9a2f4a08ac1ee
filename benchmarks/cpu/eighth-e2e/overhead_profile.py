"""Where the time of a compiled fused decode step goes outside the linear kernels (eighth session, "overhead").

    python benchmarks/cpu/eighth-e2e/overhead_profile.py [variants=nybble_a8w4,nybble_a16w4,torch_int4] [steps=48] [perf=1] [shim=both]

Each variant: the 0.85B random Llama of the e2e benchmark, quantized, fused (q/k/v, gate/up), nybble
decode attention, e2e_cpu.Decoder(compile=True, cpp_wrapper=True) as cnaf7_paired.py runs it. Setup under
the shared lock; then under the exclusive lock per variant: a DRAM probe, a timed block of `steps` steps
(ms/step), a torch.profiler block (top events by self CPU time; per-op mean us), and (perf=1) a
`perf record` of this process during another block: the main thread's samples by shared object and the
top symbols outside the kernels (perf report --tid <main>). shim: 0 = the ops' Python CPU kernels,
1 = nybble.kernels.cpu_shim (C++ dispatcher kernels of every decode op, torch int4's included), both = each
variant measured both ways on the same compiled decoder (the shim is switched on / off between blocks).
"""
import fcntl
import os
import signal
import subprocess
import sys
import time

import torch

import nybble
from nybble.bench.e2e_cpu import Decoder, build_model, dram_probe_gbps
from nybble.kernels.cpu_attention import use_decode_attention
from nybble.kernels.cpu_fuse import fuse_siblings

torch.set_num_threads(2)
VARIANTS = (sys.argv[1] if len(sys.argv) > 1 else "nybble_a8w4,nybble_a16w4,torch_int4").split(",")
STEPS = int(sys.argv[2]) if len(sys.argv) > 2 else 48
PERF = bool(int(sys.argv[3])) if len(sys.argv) > 3 else True
SHIM = sys.argv[4] if len(sys.argv) > 4 else "both"
MODES = {"0": ("python",), "1": ("shim",), "both": ("python", "shim")}[SHIM]
CFG = {"nybble_a16w4": (lambda: nybble.Int4WeightOnlyConfig(group_size=128, zero_point="int"), "nybble_cpu"),
       "nybble_a8w4": (lambda: nybble.Int8DynamicActivationInt4WeightConfig(group_size=128, zero_point="int",
                                                                             act_mapping="symmetric"), "nybble_cpu"),
       "torch_int4": (lambda: nybble.Int4WeightOnlyConfig(group_size=128, zero_point="none"), "torch_int4_cpu")}
now = lambda: time.strftime("%H:%M:%S", time.gmtime())  # noqa: E731
lock = open("/tmp/nybble_bench.lock", "a+")
fcntl.flock(lock, fcntl.LOCK_SH)
print(f"setup {now()} UTC, uptime: {os.popen('uptime').read().strip()}", flush=True)
from nybble.kernels import cpu_shim
if "shim" in MODES:
    assert cpu_shim.enable(), cpu_shim.status()
    cpu_shim.disable()
print(f"shim={SHIM}", flush=True)
gen = torch.Generator().manual_seed(1)
ds = {}
for v in VARIANTS:
    m = build_model(16, 2048, 5632, 32, 8, 32000)
    nybble.quantize(m, CFG[v][0](), force_kernel=CFG[v][1], show_progress=False)
    fuse_siblings(m)
    use_decode_attention(m)
    d = Decoder(m, compile=True, max_len=16 + 3 + 2 * STEPS + 8, cpp_wrapper=True)
    with torch.inference_mode():
        tok = d.start(torch.randint(0, 32000, (1, 16), generator=gen))
        for _ in range(3):
            tok = d.step(tok)
    ds[v] = d


def block(d, steps):
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
print(f"timed {now()} UTC, uptime: {os.popen('uptime').read().strip()}", flush=True)
for v, d in ds.items():
    for mode in MODES:
        if mode == "shim":
            assert cpu_shim.enable(), cpu_shim.status()
        else:
            cpu_shim.disable()
        p0 = dram_probe_gbps(calls=12)
        ms = [block(d, STEPS) for _ in range(3)]
        p1 = dram_probe_gbps(calls=12)
        print(f"\n==== {v} ({mode}): ms/step {' '.join(f'{x:.2f}' for x in ms)} (probe {p0:.0f} / {p1:.0f} GB/s)", flush=True)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            block(d, STEPS)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=16, max_name_column_width=60))
        if PERF:
            out = f"/tmp/overhead_perf_{v}_{mode}.data"
            rec = subprocess.Popen(["perf", "record", "-F", "999", "-p", str(os.getpid()), "-o", out],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)
            ms_perf = block(d, STEPS * 2)
            rec.send_signal(signal.SIGINT)
            rec.wait()
            print(f"-- perf block {ms_perf:.2f} ms/step; main thread by shared object:")
            rep = subprocess.run(["perf", "report", "-i", out, "--tid", str(os.getpid()), "--sort", "dso", "--stdio"],
                                 capture_output=True, text=True).stdout
            print("\n".join(line for line in rep.splitlines() if line.strip() and not line.startswith("#"))[:3000])
            print("-- main thread, top symbols:")
            rep = subprocess.run(["perf", "report", "-i", out, "--tid", str(os.getpid()), "--sort", "dso,sym", "--stdio"],
                                 capture_output=True, text=True).stdout
            print("\n".join([line for line in rep.splitlines() if line.strip() and not line.startswith("#")][:45]))
print(f"end {now()} UTC, uptime: {os.popen('uptime').read().strip()}")
fcntl.flock(lock, fcntl.LOCK_UN)
