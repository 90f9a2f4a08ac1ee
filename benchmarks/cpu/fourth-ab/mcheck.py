"""Median time of the A16W4 bf16 kernel at several M (weights rotated from DRAM), one process per
build/variant: python mcheck.py NT KxN,... M,M,... CALLS"""
import sys, os, time, statistics, torch
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from abcommon import mk
nt = int(sys.argv[1]); torch.set_num_threads(nt)
L3 = 32 << 20
for shp in sys.argv[2].split(","):
    k, n = map(int, shp.split("x"))
    wb0 = n * k // 2 + n * k // 128 * 3
    copies = int(4 * L3 / wb0) + 2
    kern, packs, wb = mk(k, n, "a16", torch.bfloat16, copies)
    for M in map(int, sys.argv[3].split(",")):
        x = torch.randn(M, k).bfloat16()
        for _ in range(3): kern.apply(x, packs[0], None)
        ts = []
        for i in range(int(sys.argv[4])):
            t0 = time.perf_counter(); kern.apply(x, packs[i % copies], None); ts.append(time.perf_counter() - t0)
        print(f"{k}x{n} M={M} {nt}thr: {statistics.median(ts)*1e6:8.1f} us", flush=True)
