"""Page faults and context switches per compiled decode step, unfused vs fused (seventh session).

    python benchmarks/cpu/seventh-e2e/faults.py [variant=nybble_a8w4] [steps=48] [order=UF]

getrusage(RUSAGE_SELF) deltas (minor faults, voluntary / involuntary context switches) and ms/step over
`steps` steps of each compiled model (after a warm-up block), 3 alternating blocks. Run under flock -x.
"""
import os
import resource
import sys
import time

import torch

import nybble
from nybble.bench.e2e_cpu import Decoder, build_model
from nybble.kernels.cpu_attention import use_decode_attention
from nybble.kernels.cpu_fuse import fuse_siblings

torch.set_num_threads(int(os.environ.get("THREADS", "2")))
if os.environ.get("CHUNKCACHE"):  # nybble._C's CPython stack-chunk cache (seventh session)
    from nybble import _C
    print("stack chunk cache installed:", _C.install_stack_chunk_cache())
if os.environ.get("MALLOPT"):  # glibc: no heap trimming, no mmap for blocks < 32 MiB (diagnosis only)
    import ctypes
    libc = ctypes.CDLL(None)
    print("mallopt trim/mmap thresholds:", libc.mallopt(-1, 1 << 30), libc.mallopt(-3, 32 << 20))
VARIANT = sys.argv[1] if len(sys.argv) > 1 else "nybble_a8w4"
STEPS = int(sys.argv[2]) if len(sys.argv) > 2 else 48
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
    d = Decoder(m, compile=True, max_len=STEPS + 32)
    with torch.inference_mode():
        tok = d.start(torch.randint(0, 32000, (1, 16), generator=gen))
        for _ in range(3):
            tok = d.step(tok)
    ds[f"{kind}{i}"] = d
print(f"start {time.strftime('%H:%M:%S', time.gmtime())} UTC {VARIANT} threads {torch.get_num_threads()}")
for b in range(3):
    for name in (list(ds) if b % 2 == 0 else list(ds)[::-1]):
        d = ds[name]
        with torch.inference_mode():
            tok = d.start(torch.randint(0, 32000, (1, 16), generator=gen))
            for _ in range(3):
                tok = d.step(tok)
            r0 = resource.getrusage(resource.RUSAGE_SELF)
            t = time.perf_counter()
            for _ in range(STEPS):
                tok = d.step(tok)
            dt = (time.perf_counter() - t) / STEPS * 1e3
            r1 = resource.getrusage(resource.RUSAGE_SELF)
        print(f"block {b} {name}: {dt:6.2f} ms/step, per step: minflt {(r1.ru_minflt - r0.ru_minflt) / STEPS:7.1f} "
              f"vcsw {(r1.ru_nvcsw - r0.ru_nvcsw) / STEPS:6.1f} ivcsw {(r1.ru_nivcsw - r0.ru_nivcsw) / STEPS:6.1f} "
              f"utime {(r1.ru_utime - r0.ru_utime) / STEPS * 1e3:6.2f} ms stime {(r1.ru_stime - r0.ru_stime) / STEPS * 1e3:6.2f} ms", flush=True)
if os.environ.get("CHUNKCACHE"):
    print("chunk cache stats:", _C.stack_chunk_cache_stats())
