"""Paired A/B of several builds of nybble._C on the same prepacked weights (prepack's memory).

usage: BUILDS=name=dir,name=dir,... python abn.py NT ROUNDS SHAPES OPS [M]
  a dir holds _C.cpython-311-x86_64-linux-gnu.so (e.g. `cmake -S <tree> -B dir`); the name `inst`
  with an empty dir means the installed nybble._C. SHAPES: KxN,...; OPS: a16 (bf16 x), a8 (a8_sym,
  bf16 x), a8a (a8_asym); M default 1. ENV_<name>="VAR=val:..." sets environment variables while
  that build makes its first call (scratch builds with getenv switches). Method: ../fourth-ab/abcommon.py (each call divided into the
  same round's torch.sum probe call; medians of those ratios)."""
import sys, os, importlib.util, torch
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fourth-ab"))
from abcommon import report, run_modes, mk
nt = int(sys.argv[1]); rounds = int(sys.argv[2]); shapes = sys.argv[3].split(","); ops = sys.argv[4].split(",")
M = int(sys.argv[5]) if len(sys.argv) > 5 else 1
torch.set_num_threads(nt)
def load(name, path):
    if not path:
        from nybble import _C
        return _C
    spec = importlib.util.spec_from_file_location("_C", path + "/_C.cpython-311-x86_64-linux-gnu.so")
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); return m
mods = {nm: load(nm, d) for nm, d in (b.split("=", 1) for b in os.environ["BUILDS"].split(","))}
KIND = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}
L3 = 32 << 20
def call(C, op, x, p, n, k):
    m = x.shape[0]; y = torch.empty(m, n, dtype=x.dtype); xk = KIND[x.dtype]; sk = KIND[p['scale'].dtype]
    if op in ("a8", "a8a"):
        wc = p['wcomp'].data_ptr() if op == "a8a" else 0
        C.a8w4('avx512_bf16', x.data_ptr(), xk, m, k, p['qw'].data_ptr(), p['scale'].data_ptr(), sk, p['zero_point'].data_ptr(), wc, n, k, 128, op == "a8a", 0, y.data_ptr(), xk, n, nt)
    else:
        C.a16w4('avx512_bf16', x.data_ptr(), xk, m, k, p['qw'].data_ptr(), p['scale'].data_ptr(), sk, p['zero_point'].data_ptr(), n, k, 128, 0, y.data_ptr(), xk, n, nt)
    return y
for shp in shapes:
    k, n = map(int, shp.split("x"))
    wb0 = n * k // 2 + n * k // 128 * 3
    copies = int(4 * L3 / wb0) + 2
    bufs = [torch.ones(wb0 // 4) for _ in range(copies)]
    modes = {'probe': lambda i: bufs[i % copies].sum()}
    for op in ops:
        act = {"a8": "a8_sym", "a8a": "a8_asym"}.get(op, "a16")
        kern, packs, wb = mk(k, n, act, torch.bfloat16, copies)
        x = torch.randn(M, k).to(torch.bfloat16)
        ys = []
        for nm, C in mods.items():  # ENV_<name>="VAR=val:VAR=val": set while the build's first call reads them
            sets = [e.split("=", 1) for e in os.environ.get(f"ENV_{nm}", "").split(":") if e]
            for kk, v in sets: os.environ[kk] = v
            ys.append(call(C, op, x, packs[0], n, k).float())
            for kk, v in sets: del os.environ[kk]
        for y in ys[1:]:
            assert torch.allclose(ys[0], y, rtol=1e-3, atol=1e-3), (ys[0] - y).abs().max()
        for nm, C in mods.items():
            modes[f"{nm}_{op}"] = (lambda C, op, x, P: lambda i: call(C, op, x, P[i % copies], n, k))(C, op, x, packs)
    report(f"{k}x{n} M={M} {nt}thr", wb0, run_modes(modes, rounds))
