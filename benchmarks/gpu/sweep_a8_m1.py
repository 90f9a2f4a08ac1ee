"""A8W4 at M = 1 against A16W4 at M = 1 on the benchmark shapes (issue 6: A8W4 within 10% of A16W4).

    PYTHONPATH=src python3 benchmarks/gpu/sweep_a8_m1.py --out $OUT/sweep_a8_m1.csv     # GPU machine
        [--flags 0,256,384] [--shapes 4096x4096,14336x4096]

Per shape (group 128, int zero points, bf16), timed like ``nybble bench gpu`` (one CUDA graph over
rotated weight copies so the weights come from HBM, median of replays): A16W4 with its table
config, A8W4 (symmetric) with the config the ordinary path picks now, and every mma.sync GEMV
config of ``configs.mma_configs`` in its fused-quantization ``A8`` mode (one launch; ``--flags``: each
also with those flag bits, e.g. 256 = private code rows, 128 = the whole-block sweep); the best is
also timed with asymmetric activations.  Each A8 result is checked against the reference op.
Prints one line per shape with the A8 / A16 time ratio; the CSV holds every point.
"""
from __future__ import annotations

import argparse
import sys
from sweep_common import precompile, rotated_copies, write_rows

SHAPES = ((4096, 4096), (4096, 14336), (14336, 4096), (8192, 28672))  # (K, N)


def _cands(n, k, sms, flags=(0,)):
    """``configs.mma_configs`` at M = 1, each with every entry of ``flags`` or-ed into its flag bits."""
    from nybble.kernels.triton.configs import TileConfig, mma_configs
    return [TileConfig(*c.to_json()[:5], c.num_stages | f) for c in mma_configs(n, k, sms, 128, 1) for f in flags]


def _prepack(n, k, act):
    import torch
    from nybble.kernels.base import LinearSpec
    from nybble.kernels.triton.kernel import TritonKernel
    from nybble.plain import PlainInt4Weight
    w = torch.randn(n, k, device="cuda") * 0.02
    plain = PlainInt4Weight.from_float(w, 128, "int", torch.bfloat16)
    return TritonKernel(LinearSpec.for_weight(plain, act)).prepack(plain), plain


def _a8(x, q, cfg, asym=False):
    from nybble.kernels.triton import ops
    return ops.launch_a8w4(x, q["qweight"], q["scale"], q["zero_point"], q["wsum"], 128, asym, None, cfg, q["locks"])


def shape_setup(k, n, reps, l2):
    """The per-shape part both M = 1 A8W4 sweeps share: x (1, K) bf16, A16W4's time with its table
    config (graph over rotated copies), the symmetric A8W4 packed weight, its plain weight, its rotated
    copies, and the reference outputs ``{asymmetric: (1, N)}``."""
    import torch
    from nybble.bench.gpu import _copies, graph_time_us
    from nybble.kernels.triton import ops
    x = torch.randn(1, k, device="cuda").to(torch.bfloat16)
    p16, _ = _prepack(n, k, "a16")
    r = _copies(sum(v.numel() * v.element_size() for v in p16.values()), l2)
    cp = rotated_copies(p16, r)
    a16 = graph_time_us([lambda q=q: ops.launch_a16w4(x, q["qweight"], q["scale"], q["zero_point"], 128, None,
                                                      None, q["locks"]) for q in cp], reps, torch)
    del cp, p16
    p8, plain = _prepack(n, k, "a8_sym")
    cp = rotated_copies(p8, r)
    refs = {a: torch.ops.nybble.reference_a8w4(x, plain.qdata, plain.scale, plain.zero_point, 128, a, None)
            for a in (False, True)}
    return x, a16, p8, cp, refs


def _compile_one(job):
    import torch
    cfg, asym = job
    try:
        p, _ = _prepack(256, 1024, "a8_asym" if asym else "a8_sym")
        _a8(torch.randn(1, 1024, device="cuda").to(torch.bfloat16), p, cfg, asym)
        torch.cuda.synchronize()
        return None
    except Exception as exc:
        return f"{cfg}: {type(exc).__name__}: {exc}"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--jobs", type=int, default=14)
    ap.add_argument("--flags", default="0", help="comma-separated flag sets or-ed into every candidate "
                    "(e.g. 0,256,384: as is, private code rows, and those with the whole-block sweep)")
    ap.add_argument("--shapes", default=",".join(f"{k}x{n}" for k, n in SHAPES), help="K x N, comma-separated")
    args = ap.parse_args()
    import torch
    from nybble.bench.gpu import graph_time_us
    from nybble.kernels import reference  # noqa: F401
    from nybble.kernels.triton import ops
    from nybble.kernels.triton.configs import make_key
    props = torch.cuda.get_device_properties(0)
    sms, l2 = props.multi_processor_count, props.L2_cache_size
    store = ops.store_for(torch.device("cuda", 0))
    flags = tuple(int(f) for f in args.flags.split(","))
    shapes = [tuple(map(int, s.split("x"))) for s in args.shapes.split(",")]
    jobs = sorted({(c, False) for k, n in shapes for c in _cands(n, k, sms, flags)}, key=str)
    precompile(_compile_one, jobs, args.jobs, "A8 mma configs", 5)
    rows = []
    torch.manual_seed(0)
    with torch.no_grad():
        for k, n in shapes:
            x, a16, p8, cp, refs = shape_setup(k, n, args.reps, l2)
            now = store.get(make_key("a8w4", n, k, 128, 1))
            rows.append({"K": k, "N": n, "kind": "a16-table", "config": "", "us": round(a16, 2), "rel_err": ""})
            best = None
            for c in [None] + _cands(n, k, sms, flags):
                try:
                    y = _a8(x, p8, c)
                    err = ((y.float() - refs[False].float()).norm() / refs[False].float().norm()).item()
                    us = graph_time_us([lambda q=q, c=c: _a8(x, q, c) for q in cp], args.reps, torch)
                except Exception as exc:
                    print(f"  skip {c}: {type(exc).__name__}: {exc}", flush=True)
                    continue
                tag = "a8-now" if c is None else "a8-mma"
                rows.append({"K": k, "N": n, "kind": tag, "config": "x".join(map(str, (c or now).to_json())),
                             "us": round(us, 2), "rel_err": f"{err:.2e}"})
                if err > 2 ** -7:
                    print(f"  WRONG {c}: rel err {err:.3g}", flush=True)
                elif c is not None and (best is None or us < best[1]):
                    best = (c, us)
                if c is None:
                    now_us = us
            y = _a8(x, p8, best[0], True)
            err = ((y.float() - refs[True].float()).norm() / refs[True].float().norm()).item()
            asym = graph_time_us([lambda q=q: _a8(x, q, best[0], True) for q in cp], args.reps, torch)
            rows.append({"K": k, "N": n, "kind": "a8-mma-asym", "config": "x".join(map(str, best[0].to_json())),
                         "us": round(asym, 2), "rel_err": f"{err:.2e}"})
            print(f"K={k:5d} N={n:5d} M=1: A16 {a16:6.1f} us | A8 now {now_us:6.1f} us "
                  f"({'x'.join(map(str, now.to_json())) if now else 'heuristic'}) {now_us / a16:.2f}x | A8 best mma "
                  f"{best[1]:6.1f} us {'x'.join(map(str, best[0].to_json()))} {best[1] / a16:.2f}x | asym "
                  f"{asym:6.1f} us {asym / a16:.2f}x", flush=True)
            del cp, p8
            torch.cuda.empty_cache()
    write_rows(args.out, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
