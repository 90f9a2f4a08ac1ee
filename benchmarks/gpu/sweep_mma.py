"""Small-M A16W4 sweep (GPU machine): the shipped-table config of each (shape, M <= 16) against the
mma.sync GEMV candidates (``block_m == 2``, ``mma.py``), all timed side by side in one process the
way ``nybble bench gpu`` times (CUDA graph over rotated weight copies, so weights come from HBM;
median of replays).  Winners go to the config cache (so a benchmark run afterwards uses them) and to
``--table`` (shipped-table JSON).  Also prints the eager per-call cost of a bare ``F.linear``, a bare
1-program Triton launch and nybble's A16W4 call at M = 1 (same process).

Usage (repo root, on the GPU machine):
    PYTHONPATH=src python3 benchmarks/gpu/sweep_mma.py --out $OUT/sweep_mma.csv --table $OUT/tuned_mma.json
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
from sweep_common import precompile, rotated_copies, write_rows

SHAPES = ((4096, 4096), (4096, 14336), (14336, 4096), (8192, 28672))  # (K, N)
MS = (1, 2, 4, 8, 16, 32, 64)


def _cands(n, k, sms, m):
    """mma_configs (evict-first loads, split-K summed in-kernel), each also with the per-group fp32
    zero point / scale (flag bit 4)."""
    from nybble.kernels.triton.configs import TileConfig, mma_configs
    out = []
    for c in mma_configs(n, k, sms, 128, m):
        out.append(c)
        out.append(TileConfig(c.block_m, c.block_n, c.block_k, c.split_k, c.num_warps, c.num_stages | 16))
    return out


def _from_csv(path, top, flags):
    """{(K, N, M): [configs]}: the ``top`` fastest mma configs of an earlier sweep per point, each
    with every flag value in ``flags`` (bit 0 evict-first, bit 1 finish kernel, bit 4 fp32 per-group
    zero point / scale) and its own x-rows bits (2-3)."""
    from nybble.kernels.triton.configs import TileConfig
    best = {}
    with open(path) as f:
        for r in csv.DictReader(f):
            if r["kind"] != "mma":
                continue
            c = TileConfig(*map(int, r["config"].split("x")))
            base = TileConfig(c.block_m, c.block_n, c.block_k, c.split_k, c.num_warps, c.num_stages & 12)
            key = (int(r["K"]), int(r["N"]), int(r["M"]))
            d = best.setdefault(key, {})
            d[base] = min(d.get(base, 1e9), float(r["us"]))
    out = {}
    for key, d in best.items():
        bases = sorted(d, key=d.get)[:top]
        out[key] = [TileConfig(b.block_m, b.block_n, b.block_k, b.split_k, b.num_warps, fl | b.num_stages)
                    for b in bases for fl in flags if b.split_k > 1 or not fl & 2]
    return out


def _run(p, x, cfg, g=128):
    from nybble.kernels.triton import ops
    return ops.launch_a16w4(x, p["qweight"], p["scale"], p["zero_point"], g, None, cfg, p["locks"])


def _weights(n, k):
    import torch
    from nybble.kernels.base import LinearSpec
    from nybble.kernels.triton.kernel import TritonKernel
    from nybble.plain import PlainInt4Weight
    w = torch.randn(n, k, device="cuda") * 0.02
    plain = PlainInt4Weight.from_float(w, 128, "int", torch.bfloat16)
    kern = TritonKernel(LinearSpec.for_weight(plain, "a16"))
    return kern.prepack(plain), plain


def _compile_one(job):
    """Compile (by running once on a small weight with the same specializations) in a worker."""
    import torch
    cfg, m = job
    try:
        p, _ = _weights(256, 1024)
        x = torch.randn(m, 1024, device="cuda").to(torch.bfloat16)
        _run(p, x, cfg)
        torch.cuda.synchronize()
        return None
    except Exception as exc:  # reported; the sweep skips configs that fail
        return f"{cfg} M={m}: {type(exc).__name__}: {exc}"


def eager_probe(torch, ops):
    """Wall-clock us per eager call (loop of 2000 calls, after warm-up) of a bare F.linear (1024^2),
    a bare 1-program Triton kernel launch, and nybble's A16W4 at M = 1 on 4096x4096."""
    import triton
    import triton.language as tl
    import torch.nn.functional as F

    @triton.jit
    def _nop(p, n):
        tl.store(p + tl.program_id(0), n)

    def per_call(fn, iters=2000):
        for _ in range(50):
            fn()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        torch.cuda.synchronize()
        return (time.perf_counter() - t0) / iters * 1e6

    w = torch.randn(1024, 1024, device="cuda").to(torch.bfloat16)
    x1 = torch.randn(1, 1024, device="cuda").to(torch.bfloat16)
    buf = torch.empty(1, dtype=torch.int32, device="cuda")
    p, _ = _weights(4096, 4096)
    x = torch.randn(1, 4096, device="cuda").to(torch.bfloat16)
    res = {}
    for _ in range(2):
        res["F.linear"] = per_call(lambda: F.linear(x1, w))
        res["triton_nop"] = per_call(lambda: _nop[(1,)](buf, 1))
        res["torch.empty"] = per_call(lambda: torch.empty(1, 4096, device="cuda", dtype=torch.bfloat16))
        res["x.new_empty"] = per_call(lambda: x.new_empty(1, 4096))
        res["nybble_a16_m1"] = per_call(lambda: ops.launch_a16w4(x, p["qweight"], p["scale"], p["zero_point"], 128,
                                                                 None, None, p["locks"]))
    return res


def sweep_a8(torch, store, sms, l2, reps, rows, winners):
    """A8W4 (symmetric) at M = 1: the table config (dp4a GEMV + quantization kernel) against the mma
    GEMV configs with the quantization fused in (one launch)."""
    from nybble.bench.gpu import _copies, graph_time_us
    from nybble.kernels import reference  # noqa: F401
    from nybble.kernels.base import LinearSpec
    from nybble.kernels.triton import ops
    from nybble.kernels.triton.configs import make_key, mma_configs
    from nybble.kernels.triton.kernel import TritonKernel
    from nybble.plain import PlainInt4Weight
    for k, n in SHAPES:
        w = torch.randn(n, k, device="cuda") * 0.02
        plain = PlainInt4Weight.from_float(w, 128, "int", torch.bfloat16)
        p = TritonKernel(LinearSpec.for_weight(plain, "a8_sym")).prepack(plain)
        r = _copies(sum(v.numel() * v.element_size() for v in p.values()), l2)
        cp = rotated_copies(p, r)
        x = torch.randn(1, k, device="cuda").to(torch.bfloat16)
        ref = torch.ops.nybble.reference_a8w4(x, plain.qdata, plain.scale, plain.zero_point, 128, False, None)
        key = make_key("a8w4", n, k, 128, 1)
        base = store.get(key)
        best = None
        for c in ([base] if base is not None else []) + mma_configs(n, k, sms, 128, 1):
            def run(q, c=c):
                return ops.launch_a8w4(x, q["qweight"], q["scale"], q["zero_point"], q["wsum"], 128, False, None, c,
                                       q["locks"])
            try:
                err = ((run(p).float() - ref.float()).norm() / ref.float().norm()).item()
                us = graph_time_us([lambda q=q: run(q) for q in cp], reps, torch)
            except Exception as exc:
                print(f"  skip {key} {c}: {type(exc).__name__}: {exc}", flush=True)
                continue
            rows.append({"K": k, "N": n, "M": 1, "kind": "a8-table" if c is base else "a8-mma",
                         "config": "x".join(map(str, c.to_json())), "us": round(us, 2), "rel_err": f"{err:.2e}"})
            if err <= 2 ** -7 and (best is None or us < best[1]):
                best = (c, us)
        base_us = next((rw["us"] for rw in rows if rw["kind"] == "a8-table" and (rw["K"], rw["N"]) == (k, n)),
                       float("nan"))
        winners[key] = best[0]
        store.put(key, best[0], persist=True)
        print(f"a8w4  K={k:5d} N={n:5d} M= 1: table {base_us:7.1f} us -> best {best[1]:7.1f} us "
              f"{'x'.join(map(str, best[0].to_json()))}", flush=True)
        del cp, p
        torch.cuda.empty_cache()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--table", required=True)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--jobs", type=int, default=14)
    ap.add_argument("--ms", default=",".join(map(str, MS)))
    ap.add_argument("--from-csv", default=None, help="time only the --top best configs of this earlier sweep")
    ap.add_argument("--top", type=int, default=4)
    ap.add_argument("--a8", action="store_true", help="also A8W4 at M = 1: table config vs the mma GEMV with fused quantization")
    ap.add_argument("--flags", default="1,3")
    ap.add_argument("--full-ms", default="", help="M values that get every mma_configs candidate even with --from-csv")
    args = ap.parse_args()
    ms = [int(v) for v in args.ms.split(",")]
    import torch
    from nybble.bench.gpu import _copies, graph_time_us
    from nybble.kernels.triton import ops
    from nybble.kernels import reference  # noqa: F401  (registers nybble::reference_a16w4)
    from nybble.kernels.triton.configs import make_key, write_table
    props = torch.cuda.get_device_properties(0)
    sms, l2 = props.multi_processor_count, props.L2_cache_size
    store = ops.store_for(torch.device("cuda", 0))

    if args.from_csv:
        chosen = _from_csv(args.from_csv, args.top, [int(f) for f in args.flags.split(",")])
        full = {int(v) for v in args.full_ms.split(",") if v}
        cands_of = lambda n, k, m: _cands(n, k, sms, m) if m in full else chosen.get((k, n, m), [])  # noqa: E731
    else:
        cands_of = lambda n, k, m: _cands(n, k, sms, m)  # noqa: E731
    # M specialisations: 1, 2..8 (NB = 1), 16 / 32 / 64 (NB = 2, divisible by 16)
    jobs = sorted({(c, j) for k, n in SHAPES for m in ms for c in cands_of(n, k, m)
                   for j in ({1} if m == 1 else {2} if m <= 8 else {m})}, key=str)
    precompile(_compile_one, jobs, args.jobs, "configs", 10)

    rows, winners = [], {}
    torch.manual_seed(0)
    with torch.no_grad():
        for k, n in SHAPES:
            p, plain = _weights(n, k)
            r = _copies(sum(v.numel() * v.element_size() for v in p.values()), l2)
            cp = rotated_copies(p, r)
            for m in ms:
                x = torch.randn(m, k, device="cuda").to(torch.bfloat16)
                ref = torch.ops.nybble.reference_a16w4(x, plain.qdata, plain.scale, plain.zero_point, 128, None)
                key = make_key("a16w4", n, k, 128, m)
                base = store.get(key)
                cands = ([base] if base is not None else []) + cands_of(n, k, m)
                best = None
                for c in cands:
                    try:
                        y = _run(p, x, c)
                        err = ((y.float() - ref.float()).norm() / ref.float().norm()).item()
                        us = graph_time_us([lambda q=q, c=c: _run(q, x, c) for q in cp], args.reps, torch)
                    except Exception as exc:
                        print(f"  skip {key} {c}: {type(exc).__name__}: {exc}", flush=True)
                        continue
                    tag = "table" if c is base else "mma"
                    rows.append({"K": k, "N": n, "M": m, "kind": tag, "config": "x".join(map(str, c.to_json())),
                                 "us": round(us, 2), "rel_err": f"{err:.2e}"})
                    if err > 2 ** -7:
                        print(f"  WRONG {key} {c}: rel err {err:.3g}", flush=True)
                        continue
                    if best is None or us < best[1]:
                        best = (c, us)
                base_us = next((rw["us"] for rw in rows if rw["kind"] == "table" and
                                (rw["K"], rw["N"], rw["M"]) == (k, n, m)), float("nan"))
                winners[key] = best[0]
                store.put(key, best[0], persist=True)
                print(f"a16w4 K={k:5d} N={n:5d} M={m:2d}: table {base_us:7.1f} us -> best {best[1]:7.1f} us "
                      f"{'x'.join(map(str, best[0].to_json()))}", flush=True)
            del cp, p
            torch.cuda.empty_cache()
        if args.a8:
            sweep_a8(torch, store, sms, l2, args.reps, rows, winners)
        print("eager us/call:", {kk: round(v, 1) for kk, v in eager_probe(torch, ops).items()}, flush=True)
    write_rows(args.out, rows)
    write_table(__import__("pathlib").Path(args.table), props.name, winners)
    return 0


if __name__ == "__main__":
    sys.exit(main())
