"""Profile of one compiled (+ nybble attention) decode step, unfused vs fused, for one int4 variant.

    python benchmarks/cpu/sixth-e2e/cnaf_profile.py [variant=nybble_a8w4] [steps=24] [compile=1] [fused_first=0]

One model, built and quantized once; compiled unfused, then fuse_siblings and compiled again (a new
Decoder: its own code object). For each: block-timed steps (alternating unfused / fused blocks, 6 blocks
each) and a torch.profiler table of `steps` steps (self CPU time per op name). Run it under
`flock -x /tmp/nybble_bench.lock`.
"""
import statistics
import sys
import time

import torch

import nybble
from nybble.bench.e2e_cpu import Decoder, build_model
from nybble.kernels.cpu_attention import use_decode_attention
from nybble.kernels.cpu_fuse import fuse_siblings

torch.set_num_threads(2)
VARIANT = sys.argv[1] if len(sys.argv) > 1 else "nybble_a8w4"
STEPS = int(sys.argv[2]) if len(sys.argv) > 2 else 24
COMPILE = bool(int(sys.argv[3])) if len(sys.argv) > 3 else True
FUSED_FIRST = bool(int(sys.argv[4])) if len(sys.argv) > 4 else False  # build order of the two models
cfg = {"nybble_a16w4": (nybble.Int4WeightOnlyConfig(group_size=128, zero_point="int"), "nybble_cpu"),
       "nybble_a8w4": (nybble.Int8DynamicActivationInt4WeightConfig(group_size=128, zero_point="int",
                                                                   act_mapping="symmetric"), "nybble_cpu"),
       "torch_int4": (nybble.Int4WeightOnlyConfig(group_size=128, zero_point="none"), "torch_int4_cpu")}[VARIANT]
gen = torch.Generator().manual_seed(1)
print(f"start {time.strftime('%H:%M:%S', time.gmtime())} UTC {VARIANT} compile={int(COMPILE)} fused_first={int(FUSED_FIRST)}", flush=True)
ds = {}
for fused in ((True, False) if FUSED_FIRST else (False, True)):
    m = build_model(16, 2048, 5632, 32, 8, 32000)
    nybble.quantize(m, cfg[0], force_kernel=cfg[1], show_progress=False)
    if fused:
        fuse_siblings(m)
    use_decode_attention(m)
    d = Decoder(m, compile=COMPILE, max_len=16 + 3 + STEPS + 8)
    with torch.inference_mode():
        tok = d.start(torch.randint(0, 32000, (1, 16), generator=gen))
        for _ in range(3):
            tok = d.step(tok)
    ds["fused" if fused else "unfused"] = d


def block(d, steps, prof=None):
    with torch.inference_mode():
        tok = d.start(torch.randint(0, 32000, (1, 16), generator=gen))
        for _ in range(3):
            tok = d.step(tok)
        t = time.perf_counter()
        for _ in range(steps):
            tok = d.step(tok)
            if prof is not None:
                prof.step()
        return (time.perf_counter() - t) / steps * 1e3


ms = {k: [] for k in ("unfused", "fused")}
for r in range(6):
    for k in (list(ms) if r % 2 == 0 else list(ms)[::-1]):
        ms[k].append(block(ds[k], STEPS))
print("ms/step per block: " + "; ".join(f"{k} " + " ".join(f"{v:.2f}" for v in vs) for k, vs in ms.items()))
print("median ms/step: " + ", ".join(f"{k} {statistics.median(v):.2f}" for k, v in ms.items()), flush=True)
for k, d in ds.items():
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
        block(d, STEPS)
    print(f"\n== {k}: profiler (self CPU, {STEPS} steps + 3 warm-up + 16-token eager prompt)")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18, max_name_column_width=60))
    print(f"-- {k}: nybble linear ops by input shapes (x, packed weight, ...): calls, mean self us")
    for ev in prof.key_averages(group_by_input_shape=True):
        if ev.key.startswith("nybble::") and "attention" not in ev.key:
            print(f"   {ev.key} {str(ev.input_shapes[:2]):40s} {ev.count:5d} {ev.self_cpu_time_total / ev.count:8.1f}")
print(f"end {time.strftime('%H:%M:%S', time.gmtime())} UTC")
