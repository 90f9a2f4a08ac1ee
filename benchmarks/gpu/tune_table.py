"""Fill keys missing from the shipped tile-config table (GPU machine): time every candidate config the
first-call autotuner would try, the way ``nybble bench gpu`` times (one CUDA graph over rotated weight
copies, so the weights come from HBM; median of replays), and write the winners into a copy of the table.

    PYTHONPATH=src:benchmarks/gpu python3 benchmarks/gpu/tune_table.py --out $OUT/table.json \\
        --csv $OUT/tune.csv [--shapes 4096x1024,8192x8192] [--m 1,2,4,256,1024] [--ops a16w4,a8w4]

For each (op, K x N, M bucket) that the shipped table lacks (group 128, int zero points, bf16, symmetric
A8): the candidates are those of ``ops``' own autotuner (``configs.candidates``, or
``configs.a8_m1_configs`` for A8W4 at M = 1 on sm_90), compiled first in ``--procs`` worker processes
(Triton's disk cache), then each is timed at M = the bucket's top.  The winner's result is checked
against the reference op; the CSV has, per key, the winner, its time, the config a first call picks with
tuning off (the heuristic / ``a8_m1_default``) and that config's time, so the table's gain is measured.
Keys already in the table are left as they are (listed as ``table`` in the CSV).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from sweep_common import precompile, rotated_copies, write_rows

#: Llama-3 shapes (K, N) the table lacked: 8B k/v_proj; 70B q/o_proj, k/v_proj, down_proj; and the
#: benchmark shapes (for the M buckets 256 and 1024)
SHAPES = ((4096, 1024), (8192, 8192), (8192, 1024), (28672, 8192),
          (4096, 4096), (4096, 14336), (14336, 4096), (8192, 28672))
MS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
GROUP = 128


def _pack(n, k, op):
    """A random layer's packed tensors for ``op`` and its plain weight (group 128, int zero points)."""
    import torch
    from nybble.kernels.base import LinearSpec
    from nybble.kernels.triton.kernel import TritonKernel
    from nybble.plain import PlainInt4Weight
    w = torch.randn(n, k, device="cuda") * 0.02
    plain = PlainInt4Weight.from_float(w, GROUP, "int", torch.bfloat16)
    return TritonKernel(LinearSpec.for_weight(plain, "a16" if op == "a16w4" else "a8_sym")).prepack(plain), plain


def _run(op, p, x, cfg):
    from nybble.kernels.triton import ops
    if op == "a16w4":
        return ops.launch_a16w4(x, p["qweight"], p["scale"], p["zero_point"], GROUP, None, cfg, p["locks"])
    return ops.launch_a8w4(x, p["qweight"], p["scale"], p["zero_point"], p["wsum"], GROUP, False, None, cfg,
                           p["locks"])


def _cands_and_guess(op, n, k, m, sms):
    """``(candidates, guess)``: what ``ops`` would tune over for this key, and what it picks untuned."""
    from nybble.kernels.triton import configs as C
    if op == "a8w4" and m == 1:  # sm_90, bf16, group 128: the fused mma GEMV's domain (ops.mma_a8_ok)
        return C.a8_m1_configs(n, k, sms, GROUP), C.a8_m1_default(n, k, sms)
    return C.candidates(op, n, k, GROUP, m, sms), C.heuristic(op, n, k, GROUP, m, sms, hopper=True)


_WORKER: dict = {}


def _compile_one(job):
    """Run one candidate once (compiling it) in a worker, on a 256-row weight with the key's K."""
    import torch
    op, k, m, cfg = job
    try:
        if (op, k) not in _WORKER:
            _WORKER[(op, k)] = _pack(256, k, op)[0]
        x = torch.randn(m, k, device="cuda").to(torch.bfloat16)
        _run(op, _WORKER[(op, k)], x, cfg)
        torch.cuda.synchronize()
        return None
    except Exception as exc:  # such a config is skipped when timing (as the autotuner skips it)
        return f"{op} K={k} M={m} {cfg.to_json()}: {type(exc).__name__}: {str(exc)[:200]}"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True, help="the table with the new keys (JSON)")
    ap.add_argument("--csv", required=True)
    ap.add_argument("--shapes", default=",".join(f"{k}x{n}" for k, n in SHAPES))
    ap.add_argument("--m", default=",".join(map(str, MS)), help="M buckets")
    ap.add_argument("--ops", default="a16w4,a8w4")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--procs", type=int, default=16)
    ap.add_argument("--budget-s", type=float, default=1e9, help="stop tuning new keys after this many seconds")
    args = ap.parse_args()
    os.environ["NYBBLE_TRITON_AUTOTUNE"] = "0"  # every config is given explicitly here
    import torch
    from nybble.bench.common import parse_int_list, parse_shapes
    from nybble.bench.gpu import _copies, graph_time_us
    __import__("nybble.kernels.reference")  # registers the reference ops
    from nybble.kernels.triton import ops
    from nybble.kernels.triton.configs import M_BUCKETS, make_key, write_table

    t_start = time.time()
    shapes, ms, op_list = parse_shapes(args.shapes), parse_int_list(args.m), args.ops.split(",")
    if any(m not in M_BUCKETS for m in ms):
        raise SystemExit(f"--m: give M buckets {M_BUCKETS}")
    dev = torch.device("cuda", 0)
    props = torch.cuda.get_device_properties(0)
    sms, l2 = props.multi_processor_count, getattr(props, "L2_cache_size", 50 * 2**20)
    store = ops.store_for(dev)
    keys = [(op, k, n, m) for k, n in shapes for op in op_list for m in ms]
    todo = [key for key in keys if store.get(make_key(key[0], key[2], key[1], GROUP, key[3])) is None]
    print(f"{props.name}: {len(keys)} keys, {len(todo)} not in the table", flush=True)
    jobs = list(dict.fromkeys((op, k, m, c) for op, k, n, m in todo for c in _cands_and_guess(op, n, k, m, sms)[0]))
    precompile(_compile_one, jobs, args.procs, show=5)  # a config that failed is skipped again when timed
    rows, winners = [], {}
    for k, n in shapes:
        for op in op_list:
            mine = [m for (o, kk, nn, m) in todo if (o, kk, nn) == (op, k, n)]
            for m in ms:
                if m not in mine:
                    rows.append({"op": op, "K": k, "N": n, "M": m, "source": "table", "config": "", "us": "",
                                 "guess": "", "guess_us": "", "gain": "", "candidates": 0, "max_err": ""})
            if not mine:
                continue
            p, plain = _pack(n, k, op)
            cp = rotated_copies(p, _copies(sum(v.numel() * v.element_size() for v in p.values()), l2))
            for m in mine:
                if time.time() - t_start > args.budget_s:
                    print(f"budget reached: {op} {k}x{n} M={m} and later keys left out", flush=True)
                    break
                x = torch.randn(m, k, device="cuda").to(torch.bfloat16)
                cands, guess = _cands_and_guess(op, n, k, m, sms)
                times = {}
                for c in dict.fromkeys(cands + [guess]):
                    try:
                        times[c] = graph_time_us([lambda q=q, c=c: _run(op, q, x, c) for q in cp], args.reps, torch)
                    except Exception:
                        torch.cuda.synchronize()
                        continue
                best = min(times, key=times.get)
                y = _run(op, p, x, best).float()
                ref = (torch.ops.nybble.reference_a16w4(x, plain.qdata, plain.scale, plain.zero_point, GROUP, None)
                       if op == "a16w4" else
                       torch.ops.nybble.reference_a8w4(x, plain.qdata, plain.scale, plain.zero_point, GROUP, False,
                                                       None)).float()
                err = ((y - ref).abs().max() / ref.abs().max().clamp_min(1e-6)).item()
                if err > 2e-2:
                    print(f"  {op} {k}x{n} M={m}: winner {best.to_json()} is off the reference ({err:.3g}); "
                          "not kept", flush=True)
                    continue
                winners[make_key(op, n, k, GROUP, m)] = best
                g_us = times.get(guess)
                rows.append({"op": op, "K": k, "N": n, "M": m, "source": "tuned", "config": best.to_json(),
                             "us": round(times[best], 2), "guess": guess.to_json(),
                             "guess_us": "" if g_us is None else round(g_us, 2),
                             "gain": "" if g_us is None else round(g_us / times[best], 3),
                             "candidates": len(times), "max_err": f"{err:.2e}"})
                print(f"{op} K={k:5d} N={n:5d} M={m:4d}: {len(times):3d} timed, best {times[best]:8.1f} us "
                      f"{best.to_json()}, untuned pick {g_us if g_us is None else round(g_us, 1)} us "
                      f"{guess.to_json()}", flush=True)
            del cp, p, plain
            torch.cuda.empty_cache()
    write_rows(args.csv, rows)
    table = dict(store.shipped)
    table.update(winners)
    write_table(__import__("pathlib").Path(args.out), props.name, table)
    print(f"{len(winners)} keys tuned; table of {len(table)} keys written to {args.out} "
          f"({time.time() - t_start:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
