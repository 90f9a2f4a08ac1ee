"""Small-M A8W4 sweep (GPU machine): the shipped-table config of each (shape, M <= 8) against the
dp4a GEMV (``jit.gemv_dp4a_kernel``, ``block_m < 0`` configs), all
timed side by side in one process the way ``nybble bench gpu`` times (CUDA graph over rotated weight
copies, so weights come from HBM; median of replays).  The winner of each key goes to the config
cache (``$NYBBLE_CACHE_DIR``), so a benchmark run afterwards uses it, and to ``--table`` (JSON, the
shipped-table format) to merge into ``kernels/triton/tables``.

Usage (repo root, on the GPU machine):
    PYTHONPATH=src python3 benchmarks/gpu/sweep_small_m.py --out $OUT/sweep.csv --table $OUT/tuned_small_m.json
"""
from __future__ import annotations

import argparse
import os
import sys
from sweep_common import precompile, rotated_copies, write_rows

SHAPES = ((4096, 4096), (4096, 14336), (14336, 4096), (8192, 28672))  # (K, N)
MS = (1, 2, 4, 8)
OPS = ("a8w4",)  # A16W4 keeps its table configs (no dp4a for 16-bit activations)


def _cands(op, n, k, m, sms):
    from nybble.kernels.triton.configs import dp4a_configs
    return dp4a_configs(n, k, m, sms, 128, flags=(0, 1, 2, 3) if m == 1 else (0, 1), op=op)


def _run(op, p, x, cfg, g=128):
    from nybble.kernels.triton import ops
    if op == "a16w4":
        return ops.launch_a16w4(x, p["qweight"], p["scale"], p["zero_point"], g, None, cfg)
    return ops.launch_a8w4(x, p["qweight"], p["scale"], p["zero_point"], p["wsum"], g, False, None, cfg)


def _weights(n, k, act):
    import torch
    from nybble.kernels.base import LinearSpec
    from nybble.kernels.triton.kernel import TritonKernel
    from nybble.plain import PlainInt4Weight
    w = torch.randn(n, k, device="cuda") * 0.02
    plain = PlainInt4Weight.from_float(w, 128, "int", torch.bfloat16)
    kern = TritonKernel(LinearSpec.for_weight(plain, act))
    return kern.prepack(plain)


def _compile_one(job):
    """Compile (by running once on a small weight with the same specializations) in a worker."""
    import torch
    op, cfg, m = job
    try:
        p = _weights(256, 1024, "a16" if op == "a16w4" else "a8_sym")
        x = torch.randn(m, 1024, device="cuda").to(torch.bfloat16)
        _run(op, p, x, cfg)
        torch.cuda.synchronize()
        return None
    except Exception as exc:  # reported; the sweep skips configs that fail
        return f"{op} {cfg} M={m}: {type(exc).__name__}: {exc}"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--table", required=True)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--jobs", type=int, default=12)
    args = ap.parse_args()
    import torch
    from nybble.bench.gpu import _copies, graph_time_us
    from nybble.kernels.triton import ops
    from nybble.kernels.triton.configs import TileConfig, make_key, write_table
    props = torch.cuda.get_device_properties(0)
    sms, l2 = props.multi_processor_count, props.L2_cache_size
    store = ops.store_for(torch.device("cuda", 0))

    jobs = sorted({(op, c, m) for op in OPS for k, n in SHAPES for m in MS for c in _cands(op, n, k, m, sms)},
                  key=str)
    precompile(_compile_one, jobs, args.jobs, "configs", 10)

    rows, winners = [], {}
    torch.manual_seed(0)
    with torch.no_grad():
        for k, n in SHAPES:
            for op in OPS:
                p = _weights(n, k, "a16" if op == "a16w4" else "a8_sym")
                r = _copies(sum(v.numel() * v.element_size() for v in p.values()), l2)
                cp = rotated_copies(p, r)
                for m in MS:
                    x = torch.randn(m, k, device="cuda").to(torch.bfloat16)
                    key = make_key(op, n, k, 128, m)
                    base = store.get(key)
                    cands = ([base] if base is not None else []) + _cands(op, n, k, m, sms)
                    best = None
                    for c in cands:
                        try:
                            us = graph_time_us([lambda q=q, c=c: _run(op, q, x, c) for q in cp], args.reps, torch)
                        except Exception as exc:
                            print(f"  skip {key} {c}: {type(exc).__name__}: {exc}", flush=True)
                            continue
                        tag = "table" if c is base else "dp4a"
                        rows.append({"K": k, "N": n, "M": m, "op": op, "kind": tag,
                                     "config": "x".join(map(str, c.to_json())), "us": round(us, 2)})
                        if best is None or us < best[1]:
                            best = (c, us)
                    base_us = next((rw["us"] for rw in rows if rw["kind"] == "table" and
                                    (rw["K"], rw["N"], rw["M"], rw["op"]) == (k, n, m, op)), float("nan"))
                    winners[key] = best[0]
                    store.put(key, best[0], persist=True)
                    print(f"{op} K={k:5d} N={n:5d} M={m}: table {base_us:7.1f} us -> best {best[1]:7.1f} us "
                          f"{'x'.join(map(str, best[0].to_json()))}", flush=True)
                del cp, p
                torch.cuda.empty_cache()
    write_rows(args.out, rows)
    write_table(__import__("pathlib").Path(args.table), props.name, winners)
    return 0


if __name__ == "__main__":
    sys.exit(main())
