"""Where the decode attention op's ~40-60 us per call (compiled 0.85B model) goes (seventh session, item 3).

    python benchmarks/cpu/seventh-e2e/attncall.py [calls=5000] [length=48]

Shapes of the 0.85B model's decode step (q (1, 32, 1, 64), static K/V cache (1, 8, 64, 64) bf16 of which
`length` positions are valid, bool mask (1, 1, 1, 64)): the torch op, the Python function, the raw _C call
with a prepared fp32 mask (mask_kind 1, since the seventh session's signature), with 2 and 1 threads; median us per call over alternating rounds. Run under flock -x.
"""
import math
import statistics
import sys
import time

import torch

from nybble.kernels import cpu_attention as A
from nybble.kernels.cpu import selected_isa

CALLS = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
LENGTH = int(sys.argv[2]) if len(sys.argv) > 2 else 48
q = torch.randn(1, 32, 1, 64, dtype=torch.bfloat16)
k = torch.randn(1, 8, 64, 64, dtype=torch.bfloat16)
v = torch.randn(1, 8, 64, 64, dtype=torch.bfloat16)
mask = torch.zeros(1, 1, 1, 64, dtype=torch.bool)
mask[..., :LENGTH] = True
m32 = torch.zeros(64).masked_fill_(~mask.reshape(-1), -math.inf)
out = torch.empty(1, 1, 32, 64, dtype=torch.bfloat16)
isa = selected_isa()


def raw(nt):
    return lambda: A._ops._C.decode_attention(isa, q.data_ptr(), q.stride(1), k.data_ptr(), k.stride(1), k.stride(2),
                                              v.data_ptr(), v.stride(1), v.stride(2), m32.data_ptr(), 1, out.data_ptr(),
                                              64, 1, 32, 8, 64, 64, 0.125, nt)


fns = {"torch.ops.nybble.cpu_decode_attention": lambda: torch.ops.nybble.cpu_decode_attention(q, k, v, 0.125, mask),
       "decode_attention (Python)": lambda: A.decode_attention(q, k, v, 0.125, mask),
       "raw _C, 2 threads": raw(2), "raw _C, 1 thread": raw(1)}
torch.set_num_threads(2)
res = {n: [] for n in fns}
with torch.inference_mode():
    for r in range(8):
        for n in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
            f = fns[n]
            t = time.perf_counter()
            for _ in range(CALLS):
                f()
            res[n].append((time.perf_counter() - t) / CALLS * 1e6)
print(f"{time.strftime('%H:%M:%S', time.gmtime())} UTC, {CALLS} calls x 8 rounds, valid length {LENGTH}, torch threads 2")
for n, vals in res.items():
    print(f"  {n:40s} median {statistics.median(vals):6.2f} us/call")
