"""Paired A/B: per round every mode once (rotating order), ratio to the probe call(s) of the same round."""
import sys, time, statistics, ctypes, torch
nt = int(sys.argv[1]); rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 200
torch.set_num_threads(nt)
lib = ctypes.CDLL('/tmp/k3/mb3.so')
from nybble.kernels import cpu_ops as O
L3 = 32 << 20
g = torch.Generator().manual_seed(0)
P = ctypes.c_void_p; I = ctypes.c_int64
def report(label, wb, res):
    modes = list(res)
    pr = res['probe']
    # per-round probe = probe call of that round
    fast = [i for i in range(len(pr)) if wb / pr[i] / 1e9 > 55]
    slow = [i for i in range(len(pr)) if wb / pr[i] / 1e9 <= 55]
    out = [f"{label} probe med {wb/statistics.median(pr)/1e9:.1f} GB/s ({len(fast)} fast/{len(slow)} slow rounds)"]
    for m in modes:
        if m == 'probe': continue
        r_all = [pr[i] / res[m][i] for i in range(len(pr))]
        s = f"  {m:10s} all {100*statistics.median(r_all):5.1f}%"
        for nm, idx in (("fast", fast), ("slow", slow)):
            if len(idx) >= 5: s += f" {nm} {100*statistics.median([r_all[i] for i in idx]):5.1f}%"
        s += f"  ({wb/statistics.median(res[m])/1e9:.1f} GB/s)"
        out.append(s)
    print("\n".join(out), flush=True)
def run_modes(modes, rounds):
    res = {m: [] for m in modes}
    names = list(modes); i = 0
    for f in modes.values():
        for _ in range(3): f(i); i += 1
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for m in order:
            f = modes[m]; t0 = time.perf_counter(); f(i); res[m].append(time.perf_counter() - t0); i += 1
    return res
if __name__ == "__main__":
    for k, n in [(4096, 14336), (14336, 4096)]:
        nb, G = (n + 15) // 16, k // 128
        wb = n * k // 2 + nb * 16 * G * 3
        copies = int(4 * L3 / wb) + 2
        ws = [(torch.randint(0, 256, (nb * k * 8 + nb * G * 48 + 4096,), dtype=torch.uint8, generator=g),
               ((torch.rand(nb, G, 16, generator=g) + 0.5) / 64).bfloat16(),
               torch.randint(0, 16, (nb, G, 16), dtype=torch.int8, generator=g)) for _ in range(copies)]
        bufs = [torch.ones(wb // 4) for _ in range(copies)]
        qa = torch.randint(-127, 128, (k,), dtype=torch.int8); sums = torch.zeros(G, dtype=torch.int32)
        y = torch.empty(n); xb = torch.randn(1, k).bfloat16()
        def kern(mode, pf):
            return lambda i: lib.a8(P(ws[i%copies][0].data_ptr()), P(ws[i%copies][1].data_ptr()), P(ws[i%copies][2].data_ptr()),
                                    I(nb), I(k), P(qa.data_ptr()), P(sums.data_ptr()), P(y.data_ptr()), mode, I(pf), nt)
        qws = [w[0][:nb*k*8].view(nb, k//8, 64) for w in ws]
        modes = {'probe': lambda i: bufs[i % copies].sum(),
                 'lin': lambda i: lib.lin(P(ws[i%copies][0].data_ptr()), I(nb*k*8), nt),
                 'kern_a8': lambda i: O.a8w4_impl(xb, qws[i % copies], ws[i % copies][1], ws[i % copies][2], None, n, 128, False, None, 'avx512_bf16'),
                                  'm0_pf2k': kern(0, 2048), 'm2_pf0': kern(2, 0), 'm2_own': kern(2, -2), 'm4_own': kern(4, -2), 'm5_own': kern(5, -2)}
        report(f"{k}x{n} {nt}thr", wb, run_modes(modes, rounds))
