"""One fused model, two compiled decode steps: the traced path of 44af012 (one fused op per group, kept
views in a dict) vs the path before it (each member its own fused call, no state), same weights.

    python benchmarks/cpu/sixth-e2e/fuse_paths.py [variant=nybble_a8w4] [steps=24] [blocks=10]

Both Decoders share the model (no build-order / placement difference); alternating blocks of `steps`
steps; ms/step per block and medians. Run under `flock -x /tmp/nybble_bench.lock`.
"""
import statistics
import sys
import time

import torch

import nybble
from nybble.bench.e2e_cpu import Decoder, build_model
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
m = build_model(16, 2048, 5632, 32, 8, 32000)
nybble.quantize(m, cfg[0], force_kernel=cfg[1], show_progress=False)
F.fuse_siblings(m)
use_decode_attention(m)
new_path = F.FusedInt4Linear._traced_member_output


def old_path(self, i, x):  # before 44af012: a fused call per member, its columns only
    return self._modules["linear"](x).narrow(-1, self.offsets[i], self.splits[i])


def warm(d):
    with torch.inference_mode():
        tok = d.start(torch.randint(0, 32000, (1, 16), generator=gen))
        for _ in range(3):
            tok = d.step(tok)


ds = {}
for name, path in (("one op per group", new_path), ("op per member", old_path)):
    F.FusedInt4Linear._traced_member_output = path
    ds[name] = Decoder(m, compile=True, max_len=16 + 3 + STEPS + 8)
    warm(ds[name])  # compiles with this path; the compiled graph keeps it


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
print(f"blocks {time.strftime('%H:%M:%S', time.gmtime())} UTC", flush=True)
for r in range(BLOCKS):
    for k in (list(ds) if r % 2 == 0 else list(ds)[::-1]):
        ms[k].append(block(ds[k]))
for k, v in ms.items():
    print(f"{k:18s} ms/step per block " + " ".join(f"{x:.2f}" for x in v) + f"   median {statistics.median(v):.2f}")
print(f"median per-block ratio (op per member / one op per group): "
      f"{statistics.median(b / a for a, b in zip(ms['one op per group'], ms['op per member'])):.3f}")
print(f"end {time.strftime('%H:%M:%S', time.gmtime())} UTC")
