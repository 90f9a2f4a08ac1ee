"""Is the torch int4 baseline slowed by nybble's op wrapper? (seventh session, fairness check)

    python benchmarks/cpu/seventh-e2e/ti4_direct.py [steps=24] [blocks=8]

One fused torch int4 model (q/k/v and gate/up fused, nybble decode attention), compiled twice: (a) as the
benchmarks run it, each linear a call of the op `nybble::torch_int4_cpu_a16w4` (a Python implementation
around aten._weight_int4pack_mm_for_cpu), (b) with TorchInt4CpuKernel.apply patched (before the second
compile) to put `aten._weight_int4pack_mm_for_cpu` itself into the graph (no Python in the call: what a
graph of PyTorch's own int4 path would hold). Alternating blocks of `steps` steps, a DRAM probe before each
pair; median ms/step and the median per-block ratio. Setup under the shared lock, blocks under the exclusive one.
"""
import fcntl
import statistics
import sys
import time

import torch

import nybble
from nybble.bench.e2e_cpu import Decoder, build_model, dram_probe_gbps
from nybble.kernels import torch_int4_cpu as T
from nybble.kernels.cpu_attention import use_decode_attention
from nybble.kernels.cpu_fuse import fuse_siblings
from nybble.kernels.torch_int4_common import torch_group_size

torch.set_num_threads(2)
STEPS = int(sys.argv[1]) if len(sys.argv) > 1 else 24
BLOCKS = int(sys.argv[2]) if len(sys.argv) > 2 else 8
lock = open("/tmp/nybble_bench.lock", "a+")
fcntl.flock(lock, fcntl.LOCK_SH)
print(f"setup {time.strftime('%H:%M:%S', time.gmtime())} UTC", flush=True)
gen = torch.Generator().manual_seed(1)
m = build_model(16, 2048, 5632, 32, 8, 32000)
nybble.quantize(m, nybble.Int4WeightOnlyConfig(group_size=128, zero_point="none"), force_kernel="torch_int4_cpu",
                show_progress=False)
fuse_siblings(m)
use_decode_attention(m)


def warm(d):
    with torch.inference_mode():
        tok = d.start(torch.randint(0, 32000, (1, 16), generator=gen))
        for _ in range(3):
            tok = d.step(tok)


ds = {"wrapper op": Decoder(m, compile=True, max_len=16 + 3 + STEPS + 8)}
warm(ds["wrapper op"])
orig_apply = T.TorchInt4CpuKernel.apply


def direct_apply(self, x, packed, bias):
    if not torch.compiler.is_compiling():
        return orig_apply(self, x, packed, bias)
    s = self.spec
    y = torch.ops.aten._weight_int4pack_mm_for_cpu(x.reshape(-1, s.k).contiguous(), packed["weight_int4pack"],
                                                   torch_group_size(s.group_size, s.k), packed["scale_and_zeros"])
    if bias is not None:
        y = y + bias.to(y.dtype)
    return y.reshape(*x.shape[:-1], s.n)


T.TorchInt4CpuKernel.apply = direct_apply
ds["aten op in graph"] = Decoder(m, compile=True, max_len=16 + 3 + STEPS + 8)
warm(ds["aten op in graph"])
T.TorchInt4CpuKernel.apply = orig_apply


def block(d):
    with torch.inference_mode():
        tok = d.start(torch.randint(0, 32000, (1, 16), generator=gen))
        for _ in range(3):
            tok = d.step(tok)
        t = time.perf_counter()
        for _ in range(STEPS):
            tok = d.step(tok)
        return (time.perf_counter() - t) / STEPS * 1e3


fcntl.flock(lock, fcntl.LOCK_UN)
fcntl.flock(lock, fcntl.LOCK_EX)
print(f"blocks {time.strftime('%H:%M:%S', time.gmtime())} UTC", flush=True)
ms = {k: [] for k in ds}
probes = []
for r in range(BLOCKS):
    probes.append(dram_probe_gbps(calls=12))
    for k in (list(ds) if r % 2 == 0 else list(ds)[::-1]):
        ms[k].append(block(ds[k]))
fcntl.flock(lock, fcntl.LOCK_UN)
print("probe GB/s " + " ".join(f"{p:.0f}" for p in probes))
for k, v in ms.items():
    print(f"{k:18s} ms/step " + " ".join(f"{x:.2f}" for x in v) + f"   median {statistics.median(v):.2f}")
print(f"median per-block ratio (wrapper / aten in graph): "
      f"{statistics.median(a / b for a, b in zip(ms['wrapper op'], ms['aten op in graph'])):.3f}")
print(f"end {time.strftime('%H:%M:%S', time.gmtime())} UTC")
