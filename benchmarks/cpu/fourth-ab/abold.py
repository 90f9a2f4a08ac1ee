"""Paired A/B of two builds of nybble._C: "old" = the build in $OLD (a directory with
_C.cpython-311-x86_64-linux-gnu.so, e.g. `cmake -S <git archive of a commit> -B $OLD
-DPython_EXECUTABLE=/work/venv/bin/python`), "new" = the installed one; group 128, int zero points.
The old build runs on the packed weights copied to torch's memory (4 KiB pages, as before this
session), the new one on prepack's (huge pages); SAME=1 gives both prepack's memory.

usage: OLD=dir [SAME=1] python abold.py NT ROUNDS SHAPES OPS [M]
  SHAPES: KxN,...; OPS: a16 (bf16 x), a8, a16f32, a16f16 (comma separated); M default 1"""
import sys, os, importlib.util, torch
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from abcommon import report, run_modes, mk
nt = int(sys.argv[1]); rounds = int(sys.argv[2]); shapes = sys.argv[3].split(","); ops = sys.argv[4].split(",")
M = int(sys.argv[5]) if len(sys.argv) > 5 else 1
torch.set_num_threads(nt)
def load(path):
    spec = importlib.util.spec_from_file_location("_C", path); m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); return m
from nybble import _C as newC
mods = {'old': load(os.environ.get("OLD", "/tmp/k4/oldbuild") + "/_C.cpython-311-x86_64-linux-gnu.so"), 'new': newC}
KIND = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}
L3 = 32 << 20
def call(C, a8, x, p, n, k):
    m = x.shape[0]; y = torch.empty(m, n, dtype=x.dtype); xk = KIND[x.dtype]; sk = KIND[p['scale'].dtype]
    if a8: C.a8w4('avx512_bf16', x.data_ptr(), xk, m, k, p['qw'].data_ptr(), p['scale'].data_ptr(), sk, p['zero_point'].data_ptr(), 0, n, k, 128, False, 0, y.data_ptr(), xk, n, nt)
    else: C.a16w4('avx512_bf16', x.data_ptr(), xk, m, k, p['qw'].data_ptr(), p['scale'].data_ptr(), sk, p['zero_point'].data_ptr(), n, k, 128, 0, y.data_ptr(), xk, n, nt)
    return y
for shp in shapes:
    k, n = map(int, shp.split("x"))
    wb0 = n * k // 2 + n * k // 128 * 3
    copies = int(4 * L3 / wb0) + 2
    bufs = [torch.ones(wb0 // 4) for _ in range(copies)]
    modes = {'probe': lambda i: bufs[i % copies].sum()}
    for op in ops:
        a8 = op == "a8"
        dt = {"a16f32": torch.float32, "a16f16": torch.float16}.get(op, torch.bfloat16)
        kern, packs, wb = mk(k, n, "a8_sym" if a8 else "a16", dt, copies)
        plain = [{kk: v.clone() for kk, v in p.items()} for p in packs]  # torch memory (4 KiB pages)
        x = torch.randn(M, k).to(dt)
        ys = [call(C, a8, x, packs[0], n, k).float() for C in mods.values()]
        assert torch.allclose(ys[0], ys[1], rtol=1e-3, atol=1e-3), (ys[0] - ys[1]).abs().max()
        for nm, C in mods.items():  # old: HEAD build on 4 KiB pages; new: this build on prepack's memory
            modes[f"{nm}_{op}"] = (lambda C, P, a8, x: lambda i: call(C, a8, x, P[i % copies], n, k))(C, plain if nm == 'old' and not os.environ.get('SAME') else packs, a8, x)
    report(f"{k}x{n} M={M} {nt}thr", wb0, run_modes(modes, rounds))
