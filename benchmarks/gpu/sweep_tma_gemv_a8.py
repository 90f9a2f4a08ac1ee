"""A8W4 at M = 1 on the TMA-stream GEMV (``tma_gemv_a8.py``) against A16W4 and the current A8W4 choice.

    PYTHONPATH=src python3 benchmarks/gpu/sweep_tma_gemv_a8.py --out $OUT/sweep_tma_a8.csv [--table F]

Per benchmark shape (group 128, int zero points, bf16), timed like ``nybble bench gpu`` (one CUDA
graph over rotated weight copies, median of replays): A16W4 with its table config, A8W4 (symmetric)
with the config the ordinary path picks now, and every ``configs.tma_gemv_a8_configs`` candidate;
the best is also timed with asymmetric activations.  Every A8 result is checked against the
reference op.  Prints one line per shape with the A8 / A16 time ratios; ``--table`` writes the
winners (where they beat the current choice) as a JSON table fragment.
"""
from __future__ import annotations

import argparse
import json
import sys

from sweep_a8_m1 import SHAPES, _a8, _prepack, shape_setup
from sweep_common import precompile, write_rows


def _compile_one(job):
    import torch
    from nybble.kernels.triton import ops
    cfg, k = job
    try:
        if not ops.tma_gemv_a8_ok(torch.empty(1, k, device="cuda", dtype=torch.bfloat16), torch.empty(1, 1, 16, 32),
                                  torch.empty(1, 256), torch.empty(1), 128, cfg):
            return None
        p, _ = _prepack(256, k, "a8_sym")
        _a8(torch.randn(1, k, device="cuda").to(torch.bfloat16), p, cfg)
        torch.cuda.synchronize()
        return None
    except Exception as exc:
        return f"{cfg} K={k}: {type(exc).__name__}: {exc}"[:400]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--table", default=None)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--jobs", type=int, default=14)
    args = ap.parse_args()
    import torch
    from nybble.bench.gpu import graph_time_us
    from nybble.kernels import reference  # noqa: F401  (registers nybble::reference_a8w4)
    from nybble.kernels.triton import ops
    from nybble.kernels.triton.configs import make_key, tma_gemv_a8_configs
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    cands = tma_gemv_a8_configs()
    precompile(_compile_one, sorted({(c, k) for k, _ in SHAPES for c in cands}, key=str), args.jobs,
               "TMA GEMV configs", 5)
    rows, table = [], {}
    torch.manual_seed(0)
    with torch.no_grad():
        for k, n in SHAPES:
            x, a16, p8, cp, refs = shape_setup(k, n, args.reps, l2)
            rows.append({"K": k, "N": n, "kind": "a16-table", "config": "", "us": round(a16, 2), "rel_err": ""})
            best, now_us = None, None
            for c in [None] + cands:
                if c is not None and not ops.tma_gemv_a8_ok(x, p8["qweight"], p8["scale"], p8["zero_point"], 128, c):
                    continue  # the launcher would take another kernel
                try:
                    y = _a8(x, p8, c)
                    err = ((y.float() - refs[False].float()).norm() / refs[False].float().norm()).item()
                    us = graph_time_us([lambda q=q, c=c: _a8(x, q, c) for q in cp], args.reps, torch)
                except Exception as exc:
                    print(f"  skip {c}: {type(exc).__name__}: {exc}"[:300], flush=True)
                    continue
                rows.append({"K": k, "N": n, "kind": "a8-now" if c is None else "a8-tma",
                             "config": "" if c is None else "x".join(map(str, c.to_json())),
                             "us": round(us, 2), "rel_err": f"{err:.2e}"})
                if err > 2 ** -7:
                    print(f"  WRONG {c}: rel err {err:.3g}", flush=True)
                elif c is None:
                    now_us = us
                elif best is None or us < best[1]:
                    best = (c, us)
            if best is None:
                print(f"K={k:5d} N={n:5d}: no TMA GEMV config ran", flush=True)
                continue
            y = _a8(x, p8, best[0], True)
            err = ((y.float() - refs[True].float()).norm() / refs[True].float().norm()).item()
            asym = graph_time_us([lambda q=q: _a8(x, q, best[0], True) for q in cp], args.reps, torch)
            rows.append({"K": k, "N": n, "kind": "a8-tma-asym", "config": "x".join(map(str, best[0].to_json())),
                         "us": round(asym, 2), "rel_err": f"{err:.2e}"})
            if now_us is None or best[1] < now_us:
                table[make_key("a8w4", n, k, 128, 1)] = best[0].to_json()
            print(f"K={k:5d} N={n:5d} M=1: A16 {a16:6.1f} us | A8 now {now_us or 0:6.1f} us "
                  f"{(now_us or 0) / a16:.2f}x | A8 TMA best {best[1]:6.1f} us {'x'.join(map(str, best[0].to_json()))} "
                  f"{best[1] / a16:.2f}x | asym {asym:6.1f} us {asym / a16:.2f}x (err {err:.1e})", flush=True)
            del cp, p8
            torch.cuda.empty_cache()
    write_rows(args.out, rows)
    if args.table:
        with open(args.table, "w") as f:
            json.dump(table, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
