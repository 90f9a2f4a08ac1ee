"""Fused vs unfused compiled models with the same allocation history (sixth session, 3).

    python benchmarks/cpu/sixth-e2e/fuse_history.py [variant=nybble_a8w4] [steps=24] [blocks=10]

Two models built and quantized alike, BOTH fused with fuse_siblings; the second then unfused again
(unfuse_siblings: exact original layers, new buffers). Both compiled (+ nybble attention); alternating
blocks of `steps` steps, a DRAM probe before each pair. Run under `flock -x /tmp/nybble_bench.lock`.
"""
import statistics
import sys
import time

import torch

import nybble
from nybble.bench.e2e_cpu import Decoder, build_model, dram_probe_gbps
from nybble.kernels import cpu_fuse as F
from nybble.kernels.cpu_attention import use_decode_attention

torch.set_num_threads(2)
VARIANT = sys.argv[1] if len(sys.argv) > 1 else "nybble_a8w4"
STEPS = int(sys.argv[2]) if len(sys.argv) > 2 else 24
BLOCKS = int(sys.argv[3]) if len(sys.argv) > 3 else 10
cfg = {"nybble_a16w4": (nybble.Int4WeightOnlyConfig(group_size=128, zero_point="int"), "nybble_cpu"),
       "nybble_a8w4": (nybble.Int8DynamicActivationInt4WeightConfig(group_size=128, zero_point="int",
                                                                   act_mapping="symmetric"), "nybble_cpu"),
       "torch_int4": (nybble.Int4WeightOnlyConfig(group_size=128, zero_point="none"), "torch_int4_cpu")}[VARIANT]
gen = torch.Generator().manual_seed(1)
print(f"start {time.strftime('%H:%M:%S', time.gmtime())} UTC {VARIANT}", flush=True)
ds = {}
for name in ("fused", "fused+unfused"):
    m = build_model(16, 2048, 5632, 32, 8, 32000)
    nybble.quantize(m, cfg[0], force_kernel=cfg[1], show_progress=False)
    F.fuse_siblings(m)
    if name == "fused+unfused":
        F.unfuse_siblings(m)
    use_decode_attention(m)
    d = Decoder(m, compile=True, max_len=16 + 3 + STEPS + 8)
    with torch.inference_mode():
        tok = d.start(torch.randint(0, 32000, (1, 16), generator=gen))
        for _ in range(3):
            tok = d.step(tok)
    ds[name] = d


def block(d):
    with torch.inference_mode():
        tok = d.start(torch.randint(0, 32000, (1, 16), generator=gen))
        for _ in range(3):
            tok = d.step(tok)
        t = time.perf_counter()
        for _ in range(STEPS):
            tok = d.step(tok)
        return (time.perf_counter() - t) / STEPS * 1e3


ms = {k: [] for k in ds}
probes = []
print(f"blocks {time.strftime('%H:%M:%S', time.gmtime())} UTC", flush=True)
for r in range(BLOCKS):
    probes.append(dram_probe_gbps(calls=12))
    for k in (list(ds) if r % 2 == 0 else list(ds)[::-1]):
        ms[k].append(block(ds[k]))
print("probe GB/s " + " ".join(f"{p:.0f}" for p in probes))
for k, v in ms.items():
    print(f"{k:14s} ms/step per block " + " ".join(f"{x:.2f}" for x in v) + f"   median {statistics.median(v):.2f}")
print(f"median per-block ratio (fused+unfused / fused): "
      f"{statistics.median(b / a for a, b in zip(ms['fused'], ms['fused+unfused'])):.3f}")
print(f"end {time.strftime('%H:%M:%S', time.gmtime())} UTC")
