"""Large-M sweep (GPU machine): A8W4 and A16W4 GEMM configs against cuBLAS bf16, timed the way
``nybble bench gpu`` times (CUDA graph over rotated weight copies, median of replays), in one process.

Paths (``kind`` column):
  a8_table / a16_table  the shipped-table (or cached / heuristic) config of the key
  a8_gemm               ``gemm_a8.a8w4_gemm_kernel`` (config ``block_k == 0``), quantization included
  a8_old                ``jit.a8w4_kernel`` with a forced config, quantization included
  a16_old               ``jit.a16w4_kernel`` (swap-AB, weights as the register operand)
  a16_deq               dequantize slices + cuBLAS (config ``block_m == 0``)
  a8_wg                 the A8W4 Gluon int8 wgmma GEMM of ``wgmma_a8.py`` (config ``block_m == 4``; ``--ops a8wg``
                        times only it and the table's config)
  a16_wg                the Gluon TMA + async wgmma GEMM of ``wgmma.py`` (config ``block_m == 3``; ``--ops a16wg``
                        times only it and the table's config, ``--ops a16,wg`` adds it to the others)
Every config is first checked against the reference on the first 64 rows (``err`` column: max
abs difference / max abs reference).  The fastest correct config per (op, shape, M) goes to
``--table`` (shipped-table JSON entries) and is printed.

Usage (repo root, on the GPU machine; ``benchmarks/gpu/run_gemm.sh`` runs it after the GEMM tests):
    PYTHONPATH=src python3 benchmarks/gpu/sweep_gemm.py --out $OUT/sweep_gemm.csv --table $OUT/tuned_gemm.json \
        [--m 64,128,512,2048] [--ops a8,a16] [--shapes 4096x4096,...]
The candidate lists are those of the last run (``sweeps/sweep_gemm_v7``: 8-warp A8W4 tiles); earlier
runs' lists are in the logs ``sweeps/sweep_gemm_v1..v6.log``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from sweep_common import rotated_copies, write_rows

SHAPES = ((4096, 4096), (4096, 14336), (14336, 4096), (8192, 28672))  # (K, N)


def a8_cands(m=2048):
    """``split_k`` 5 / 9: register caps 168 / 128 (three / four 128-thread programs per SM)."""
    from nybble.kernels.triton.configs import TileConfig as T
    if m <= 64:
        return [("a8_gemm", T(64, 64, 0, 1, 4, 4)), ("a8_gemm", T(64, 64, 0, 1, 4, 3)),
                ("a8_gemm", T(64, 128, 0, 1, 4, 4)), ("a8_gemm", T(64, 32, 0, 1, 4, 4)),
                ("a8_gemm", T(64, 128, 0, 5, 4, 3)), ("a8_gemm", T(64, 64, 0, 1, 4, 5))]
    return [("a8_gemm", T(128, 64, 0, 1, 4, 4)), ("a8_gemm", T(256, 64, 0, 1, 8, 4)),
            ("a8_gemm", T(64, 128, 0, 5, 4, 3)), ("a8_gemm", T(128, 64, 0, 1, 8, 4)),
            ("a8_gemm", T(128, 64, 0, 1, 8, 3)), ("a8_gemm", T(64, 128, 0, 1, 8, 4)),
            ("a8_gemm", T(128, 64, 0, 1, 8, 5)), ("a8_gemm", T(64, 64, 0, 1, 8, 4))]


def a16_mid_cands(m):
    """M <= 128 (A16W4 at M = 64 / 128): swap-AB tiles of ``m`` activation rows, split-K, deeper
    pipelines."""
    from nybble.kernels.triton.configs import TileConfig as T
    bm = max(64, m)
    if bm >= 128:
        return [("a16_old", T(bm, 128, 64, 1, 8, 5)), ("a16_old", T(bm, 128, 64, 1, 8, 4)),
                ("a16_old", T(bm, 128, 64, 1, 8, 6)), ("a16_old", T(bm, 64, 64, 2, 4, 5)),
                ("a16_old", T(bm, 64, 64, 4, 4, 4)), ("a16_old", T(bm, 128, 64, 2, 8, 5))]
    return [("a16_old", T(bm, 64, 64, 2, 4, 5)), ("a16_old", T(bm, 64, 64, 2, 4, 4)),
            ("a16_old", T(bm, 32, 128, 2, 4, 4)), ("a16_old", T(bm, 32, 64, 4, 4, 4)),
            ("a16_old", T(bm, 32, 128, 1, 4, 5)), ("a16_old", T(bm, 64, 64, 2, 2, 4)),
            ("a16_old", T(bm, 64, 128, 1, 4, 4)), ("a16_old", T(bm, 64, 64, 3, 4, 5)),
            ("a16_old", T(bm, 32, 256, 1, 4, 3)), ("a16_old", T(bm, 64, 128, 1, 8, 5))]


def a16_cands(m=2048):
    from nybble.kernels.triton.configs import TileConfig as T
    if m <= 128:
        return a16_mid_cands(m)
    return [("a16_old", T(128, 128, 64, 1, 8, 4)), ("a16_old", T(128, 128, 64, 1, 8, 5)),
            ("a16_deq", T(0, 2048, 0, 1, 4, 1)), ("a16_deq", T(0, 4096, 0, 1, 4, 1)),
            ("a16_deq", T(0, 8192, 0, 1, 4, 1)), ("a16_deq", T(0, 1024, 0, 1, 4, 0)),
            ("a16_deq", T(0, 2048, 0, 1, 4, 0)), ("a16_deq", T(0, 512, 0, 1, 4, 0))]


def wg_cands(m):
    """The Gluon wgmma GEMM (``wgmma.py``, config ``block_m == WGMMA``)."""
    from nybble.kernels.triton.configs import wgmma_configs
    return [("a16_wg", c) for c in wgmma_configs(m)]


def a8wg_cands():
    """The A8W4 Gluon int8 wgmma GEMM (``wgmma_a8.py``, config ``block_m == WGMMA_A8``; group 128):
    128 / 64 tokens, 3-5 TMA slots, with and without turns (16), weights through shared memory (32) or
    the A-operand registers; ``PAIRED=1`` (ninth session): only the table's kind (32, 4 slots) and the
    paired loop (64 | 32), 128 / 64 tokens, 3-5 slots."""
    import os
    from nybble.kernels.triton.configs import WGMMA_A8, TileConfig as T
    if os.environ.get("PAIRED") == "1":
        out = [T(WGMMA_A8, 128, 128, bm, 4, 4 | 32) for bm in (128, 64)]
        out += [T(WGMMA_A8, 128, 128, bm, 4, s | 32 | 64) for bm in (128, 64) for s in (3, 4, 5)]
        return [("a8_wg", c) for c in out]
    out = [T(WGMMA_A8, 128, 128, bm, 4, s | t | 32) for t in (16, 0) for bm in (128, 64) for s in (3, 4, 5)]
    out += [T(WGMMA_A8, 128, 128, 128, 4, 4 | t) for t in (16, 0)]
    return [("a8_wg", c) for c in out]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--table", default=None)
    ap.add_argument("--m", default="512,2048")
    ap.add_argument("--shapes", default=",".join(f"{k}x{n}" for k, n in SHAPES))
    ap.add_argument("--ops", default="a8,a16")
    ap.add_argument("--reps", type=int, default=20)
    args = ap.parse_args()
    import torch
    import torch.nn.functional as F
    from nybble.bench.gpu import _copies, graph_time_us
    from nybble.kernels import reference  # noqa: F401  (registers the nybble::reference_* ops)
    from nybble.kernels.base import LinearSpec
    from nybble.kernels.triton import ops
    from nybble.kernels.triton.configs import make_key
    from nybble.kernels.triton.kernel import TritonKernel
    from nybble.plain import PlainInt4Weight

    ms = [int(v) for v in args.m.split(",")]
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    want = args.ops.split(",")
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    rows, best = [], {}
    g, dt = 128, torch.bfloat16
    t_start = time.time()
    for k, n in shapes:
        w = torch.randn(n, k, device="cuda") * 0.02
        plain = PlainInt4Weight.from_float(w, g, "int", dt)
        del w
        k16 = TritonKernel(LinearSpec.for_weight(plain, "a16"))
        k8 = TritonKernel(LinearSpec.for_weight(plain, "a8_sym"))
        p16, p8 = k16.prepack(plain), k8.prepack(plain)
        r4 = _copies(plain.nbytes(), l2)
        c16 = rotated_copies(p16, r4)
        c8 = rotated_copies(p8, r4)
        wd = plain.dequantize(dt)
        cw = [wd] + [wd.clone() for _ in range(_copies(wd.numel() * 2, l2) - 1)]
        for m in ms:
            x = torch.randn(m, k, device="cuda").to(dt)
            t_cub = graph_time_us([lambda wi=wi: F.linear(x, wi) for wi in cw], args.reps, torch)
            xs = x[:64]
            refs = {"a16": torch.ops.nybble.reference_a16w4(xs, plain.qdata, plain.scale, plain.zero_point, g, None),
                    "a8": torch.ops.nybble.reference_a8w4(xs, plain.qdata, plain.scale, plain.zero_point, g, False,
                                                          None)}
            st = ops.store_for(x.device)
            cands = []
            if ("a8" in want or "a8wg" in want) and m >= 32:
                cands += [("a8_table", st.get(make_key("a8w4", n, k, g, m)))]
            if "a8" in want and m >= 32:
                cands += a8_cands(m)
            if "a8wg" in want and m >= 64:
                cands += a8wg_cands()
            if "a16" in want or "a16wg" in want:
                cands += [("a16_table", st.get(make_key("a16w4", n, k, g, m)))]
            if "a16" in want:
                cands += a16_cands(m)
            if "a16wg" in want or "wg" in want:
                cands += wg_cands(m)
            line = [f"K={k} N={n} M={m} cublas={t_cub:.1f}us"]
            for kind, cfg in cands:
                op = "a8" if kind.startswith("a8") else "a16"
                if op == "a8":
                    run = lambda p, cfg=cfg: ops.launch_a8w4(x, p["qweight"], p["scale"], p["zero_point"], p["wsum"],
                                                             g, False, None, cfg)
                    cs = c8
                else:
                    run = lambda p, cfg=cfg: ops.launch_a16w4(x, p["qweight"], p["scale"], p["zero_point"], g, None,
                                                              cfg, p["locks"])
                    cs = c16
                try:
                    y = run(cs[0])
                    torch.cuda.synchronize()
                    ref = refs[op]
                    err = ((y[:64].float() - ref.float()).abs().max() / ref.float().abs().max()).item()
                    us = graph_time_us([lambda p=p: run(p) for p in cs], args.reps, torch)
                except Exception as exc:  # e.g. out of shared memory for this tile
                    print(f"  skip {kind} {cfg}: {type(exc).__name__}: {str(exc)[:120]}", flush=True)
                    continue
                ok = err < 2 * 2.0 ** -7
                cfgs = "x".join(map(str, cfg.to_json()))
                rows.append(dict(K=k, N=n, M=m, kind=kind, config=cfgs, us=round(us, 2), cublas_us=round(t_cub, 2),
                                 speedup=round(t_cub / us, 3), err=f"{err:.2e}", ok=ok))
                print(f"  {kind:9s} {cfgs:22s} {us:9.1f} us  {t_cub / us:5.2f}x  err {err:.1e}{'' if ok else ' BAD'}",
                      flush=True)
                key = make_key("a8w4" if op == "a8" else "a16w4", n, k, g, m)
                if ok and (key not in best or us < best[key][1]):
                    best[key] = (cfg, us, kind, t_cub)
            del x
        del c16, c8, cw, wd, p16, p8
        torch.cuda.empty_cache()
    write_rows(args.out, rows)
    print(f"\nbest per key ({time.time() - t_start:.0f} s):")
    for key, (cfg, us, kind, t_cub) in sorted(best.items()):
        print(f"  {key:28s} {kind:9s} {'x'.join(map(str, cfg.to_json())):22s} {us:9.1f} us  {t_cub / us:5.2f}x bf16")
    if args.table:
        with open(args.table, "w") as f:
            json.dump({"configs": {k: v[0].to_json() for k, v in sorted(best.items())}}, f, indent=0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
