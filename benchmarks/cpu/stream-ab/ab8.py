import sys, os, time, statistics, importlib.util, torch
sys.path.insert(0, '/tmp/k3'); from ab4 import report
nt = int(sys.argv[1]); rounds = int(sys.argv[2]); shapes = sys.argv[3]; M = int(sys.argv[4]); ops = sys.argv[5].split(",")
torch.set_num_threads(nt)
def load(path):
    spec = importlib.util.spec_from_file_location("_C", path); m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); return m
mods = {'old': (load("/tmp/k3/oldbuild/_C.cpython-311-x86_64-linux-gnu.so"), 1), 'nbh': (load("/tmp/k3/nbh_C.so"), 4)}
from nybble import _C as newC
mods['new'] = (newC, 4)
def inter(t, T):
    if T == 1: return t.clone()
    nb = t.shape[0]; full = nb // T * T; parts = []
    if full: parts.append(t[:full].reshape(full // T, T, *t.shape[1:]).transpose(1, 2).reshape(-1))
    if full < nb: parts.append(t[full:].transpose(0, 1).reshape(-1))
    return torch.cat(parts).reshape(t.shape)
L3 = 32 << 20
g = torch.Generator().manual_seed(0)
def call(C, a8, x, qw, sc, zp, n, k):
    m = x.shape[0]; y = torch.empty(m, n, dtype=x.dtype)
    if a8: C.a8w4('avx512_bf16', x.data_ptr(), 1, m, k, qw.data_ptr(), sc.data_ptr(), 1, zp.data_ptr(), 0, n, k, 128, False, 0, y.data_ptr(), 1, n, nt)
    else: C.a16w4('avx512_bf16', x.data_ptr(), 1, m, k, qw.data_ptr(), sc.data_ptr(), 1, zp.data_ptr(), n, k, 128, 0, y.data_ptr(), 1, n, nt)
    return y
for shp in shapes.split(","):
    k, n = map(int, shp.split("x"))
    nb, G = (n + 15) // 16, k // 128
    wb = n * k // 2 + nb * 16 * G * 3
    copies = int(4 * L3 / wb) + 2
    base = [(torch.randint(0, 256, (nb, k // 8, 64), dtype=torch.uint8, generator=g),
            ((torch.rand(nb, G, 16, generator=g) + 0.5) / 64).bfloat16(),
            torch.randint(0, 16, (nb, G, 16), dtype=torch.int8, generator=g)) for _ in range(copies)]
    W = {name: [tuple(inter(t, T) for t in w) for w in base] for name, (_, T) in mods.items()}
    bufs = [torch.ones(wb // 4) for _ in range(copies)]
    x = torch.randn(M, k).bfloat16()
    for a8 in (False, True):
        ys = [call(C, a8, x, *W[nm][0], n, k).float() for nm, (C, T) in mods.items()]
        for y in ys[1:]: assert torch.allclose(ys[0], y, rtol=1e-2, atol=1e-2)
    modes = {'probe': lambda i: bufs[i % copies].sum()}
    for op in ops:
        for nm, (C, T) in mods.items():
            modes[f"{nm}_{op}"] = (lambda C, Wn, a8: lambda i: call(C, a8, x, *Wn[i % copies], n, k))(C, W[nm], op == "a8")
    res = {m: [] for m in modes}; names = list(modes); i = 0
    for r in range(rounds + 2):
        order = names[r % len(names):] + names[:r % len(names)]
        for m in order:
            t0 = time.perf_counter(); modes[m](i); dt = time.perf_counter() - t0; i += 1
            if r >= 2: res[m].append(dt)
    report(f"{k}x{n} M={M} {nt}thr", wb, res)
