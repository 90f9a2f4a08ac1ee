"""Paired A/B: packed weights in torch's memory (clone) vs nybble's prepack output (huge pages), M=1."""
import sys, os, torch
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from abcommon import report, run_modes, mk
nt = int(sys.argv[1]); rounds = int(sys.argv[2]); shapes = sys.argv[3].split(","); ops = sys.argv[4].split(",")
M = int(sys.argv[5]) if len(sys.argv) > 5 else 1
torch.set_num_threads(nt)
L3 = 32 << 20
for shp in shapes:
    k, n = map(int, shp.split("x"))
    wb0 = n * k // 2 + n * k // 128 * 3
    copies = int(4 * L3 / wb0) + 2
    bufs = [torch.ones(wb0 // 4) for _ in range(copies)]
    modes = {'probe': lambda i: bufs[i % copies].sum()}
    for op in ops:
        dt = {"a16f32": torch.float32}.get(op, torch.bfloat16)
        kern, packs, wb = mk(k, n, "a8_sym" if op == "a8" else "a16", dt, copies)
        plain = [{kk: v.clone() for kk, v in p.items()} for p in packs]
        x = torch.randn(M, k).to(dt)
        assert torch.equal(kern.apply(x, packs[0], None), kern.apply(x, plain[0], None))
        for lab, P in (("4k", plain), ("thp", packs)):
            modes[f"{op}_{lab}"] = (lambda kern, P, x: lambda i: kern.apply(x, P[i % copies], None))(kern, P, x)
    report(f"{k}x{n} M={M} {nt}thr", wb0, run_modes(modes, rounds))
    print(open('/proc/self/smaps_rollup').read().split('AnonHugePages:')[1].split('\n')[0].strip(), flush=True)
