"""Hot (L2-resident) per-core rate of the M=1 paths, by slope between two weight sizes (1 thread)."""
import sys, time, statistics, torch
import os; sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from abcommon import mk, med
torch.set_num_threads(1)
for act, dt, lab in (("a16", torch.bfloat16, "a16bf16"), ("a8_sym", torch.bfloat16, "a8"), ("a16", torch.float32, "a16fp32")):
    res = []
    for n in (128, 384):
        kern, packs, wb = mk(4096, n, act, dt, 1)
        x = torch.randn(1, 4096).to(dt)
        for _ in range(50): kern.apply(x, packs[0], None)
        t = min(med(lambda i: kern.apply(x, packs[0], None), 1000) for _ in range(3))
        res.append((wb, t))
    (w1, t1), (w2, t2) = res
    print(f"{lab:8s} hot slope {(w2-w1)/(t2-t1)/1e9:6.1f} GB/s/core  (t {t1*1e6:.1f} / {t2*1e6:.1f} us, intercept {(t1 - w1*(t2-t1)/(w2-w1))*1e6:.1f} us)", flush=True)
