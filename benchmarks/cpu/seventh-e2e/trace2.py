"""Chronological op trace of one compiled decode step's first layers, unfused vs fused (seventh session).

    python benchmarks/cpu/seventh-e2e/trace2.py [variant=nybble_a8w4] [layers_shown=2] [order=UF]

Builds the models (order: U = unfused, F = fused), compiles them (e2e_cpu.Decoder, nybble attention),
warms up, then for each model profiles 8 steps with torch.profiler and prints, for the 5th step, every
top-level op event of the compiled region with its start offset and duration (us), for the first
`layers_shown` layers; plus per-step medians of each op kind's duration. Run under flock -x.
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
SHOW = int(sys.argv[2]) if len(sys.argv) > 2 else 2
ORDER = sys.argv[3] if len(sys.argv) > 3 else "UF"
cfg = {"nybble_a16w4": (nybble.Int4WeightOnlyConfig(group_size=128, zero_point="int"), "nybble_cpu"),
       "nybble_a8w4": (nybble.Int8DynamicActivationInt4WeightConfig(group_size=128, zero_point="int",
                                                                   act_mapping="symmetric"), "nybble_cpu"),
       "torch_int4": (nybble.Int4WeightOnlyConfig(group_size=128, zero_point="none"), "torch_int4_cpu")}[VARIANT]
gen = torch.Generator().manual_seed(1)
ds = {}
for i, kind in enumerate(ORDER):
    m = build_model(16, 2048, 5632, 32, 8, 32000)
    nybble.quantize(m, cfg[0], force_kernel=cfg[1], show_progress=False)
    if kind == "F":
        fuse_siblings(m)
    use_decode_attention(m)
    d = Decoder(m, compile=True, max_len=64)
    with torch.inference_mode():
        tok = d.start(torch.randint(0, 32000, (1, 16), generator=gen))
        for _ in range(3):
            tok = d.step(tok)
    ds[f"{kind}{i}"] = d

for name, d in ds.items():
    with torch.inference_mode():
        tok = d.start(torch.randint(0, 32000, (1, 16), generator=gen))
        for _ in range(5):
            tok = d.step(tok)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
            for _ in range(8):
                with torch.profiler.record_function("STEP"):
                    tok = d.step(tok)
    evs = [e for e in prof.events()]
    steps = sorted([e for e in evs if e.name == "STEP"], key=lambda e: e.time_range.start)
    per_kind = {}
    for si, st in enumerate(steps):
        lo, hi = st.time_range.start, st.time_range.end
        inside = sorted([e for e in evs if lo <= e.time_range.start < hi and e.name.startswith(("nybble::", "aten::"))
                         and e.cpu_parent is not None and not e.cpu_parent.name.startswith(("nybble::", "aten::"))],
                        key=lambda e: e.time_range.start)
        for e in inside:
            key = e.name + str(e.input_shapes[:2] if e.input_shapes else "")
            per_kind.setdefault(key, []).append(e.time_range.elapsed_us())
        if si == 4:
            print(f"\n== {name}: step {si}: {(hi - lo):.0f} us; first ops:")
            n_lin = 0
            prev_end = lo
            for e in inside:
                gap = e.time_range.start - prev_end
                print(f"  +{e.time_range.start - lo:8.1f} gap {gap:6.1f}  {e.time_range.elapsed_us():7.1f} us  {e.name} "
                      f"{e.input_shapes[:2] if e.input_shapes else ''}")
                prev_end = e.time_range.end
                if e.name == "nybble::cpu_decode_attention":
                    n_lin += 1
                if n_lin > SHOW:
                    break
    print(f"== {name}: per op kind (calls over 8 steps, median us, total us/step)")
    for k, v in sorted(per_kind.items(), key=lambda kv: -sum(kv[1])):
        print(f"  {len(v):5d} {statistics.median(v):8.1f} {sum(v) / 8:9.1f}  {k}")
