"""M = 1 on the GPU machine: the per-shape one-pass read floor, and the mma GEMV with and without the
register double buffer (config flag bit 5, ``mma.mma_gemv_kernel``'s ``PF``), for A16W4 and for
the fused A8W4 mode, and the A8W4 mode with the quantization in its own one-program kernel before a
PDL-launched GEMV (flag bit 6, ``A8PRE``).  Options: ``--shared-codes`` (A8W4: private global code
rows vs the shared-memory code row, flags 256 / 2048, each with and without the whole-block sweep),
``--a16-table-only`` (A16W4: time the table's choice only, as the reference for the A8W4 ratio),
``--no-pdl`` (skip the PDL reruns), ``--k-warps`` (only the candidates whose warps split the
program's K slice, flag bits 12-13; A8W4 with the shared-memory code row, or private rows where it
does not fit, each with and without the whole-block sweep), ``--wide`` (with ``--k-warps``, A16W4:
also 16-warp programs, K tiles of 1024, the register double buffer), ``--configs`` / ``--a8-configs``
(only the given A16W4 / A8W4 configs).

    PYTHONPATH=src python3 benchmarks/gpu/sweep_m1_floor.py --out $OUT/m1_floor.csv   # GPU machine

Per shape (K x N, group 128, int zero points, bf16 x):

* ``floor``: the time of a one-pass read of exactly the packed weight bytes of the layer (qweight +
  scale + zero point), by ``jit.read_kernel`` (16-byte loads) over rotated copies, timed like the
  kernels (one CUDA graph of back-to-back calls, median of replays); the minimum over block size,
  programs per SM and warps, so the floor is the best this probe can do on those bytes.  Also
  ``torch.sum`` over the same bytes (int32) as a second reading.
* every ``configs.mma_configs`` candidate for A16W4 with flags {evict-first} x {fp32 per-group
  zero point/scale (bit 4)}, and for A8W4 (symmetric) x {register double buffer (bit 5)} x
  {quantization kernel + PDL GEMV (bit 6)}; each checked against the reference op before it is timed.
"""
from __future__ import annotations

import argparse
import sys
from sweep_common import precompile, rotated_copies, write_rows

SHAPES = ((4096, 14336), (14336, 4096), (8192, 28672), (4096, 4096))  # (K, N)


def _cands(n, k, sms, a8, odd_splits=False, shared_codes=False, k_warps=False, wide=False):
    from nybble.kernels.triton.configs import TileConfig, _mma_k_warp_configs, mma_configs
    if k_warps:  # only the in-program K split candidates (flag bits 12-13)
        if not a8:
            return _mma_k_warp_configs(n, k, sms, wide=wide)
        from nybble.kernels.triton.configs import MMA_STATIC_SMEM_MAX, mma_code_row_bytes
        out = []
        for c in _mma_k_warp_configs(n, k, sms):  # A8W4: shared-memory code row, else private rows
            for fl in (2048, 2048 | 128):
                v = TileConfig(c.block_m, c.block_n, c.block_k, c.split_k, c.num_warps, c.num_stages | fl)
                if mma_code_row_bytes(v, k) > MMA_STATIC_SMEM_MAX:
                    v = TileConfig(c.block_m, c.block_n, c.block_k, c.split_k, c.num_warps, c.num_stages | fl ^ 2304)
                out.append(v)
        return list(dict.fromkeys(out))
    out = []
    for c in mma_configs(n, k, sms, 128, 1):
        for fl in ((0, 32, 96, 128, 160) if a8 else (0,)):
            out.append(TileConfig(c.block_m, c.block_n, c.block_k, c.split_k, c.num_warps, c.num_stages | fl))
    if shared_codes and a8:  # the A8W4 candidates: private global code rows vs the shared-memory row
        out = _a8_code_row_variants(n, k, sms)
    if odd_splits and not a8:  # split-K counts outside mma_configs' powers of two (one wave of programs)
        for bn, bk, warps in ((64, 128, 4), (64, 256, 4), (64, 512, 4), (128, 128, 8), (128, 256, 8)):
            for split in (3, 5, 6, 7, 10, 12, 14, 20, 24, 28):
                if -(-k // bk) >= 2 * split and -(-n // bn) * split <= 12 * sms:
                    out.append(TileConfig(2, bn, bk, split, warps, 1))
    return out


def _a8_code_row_variants(n, k, sms):
    """A8W4 mma candidates for the code-row sweep: 64 / 128-row programs of 4 / 8 warps and K tiles of
    128-512 at every split of ``mma_configs``, each with private global code rows (flag 256) and with
    the shared-memory code row (flag 2048), both with and without the whole-block sweep of x (flag 128);
    only those whose code row fits in the static shared memory."""
    from nybble.kernels.triton.configs import MMA_STATIC_SMEM_MAX, TileConfig, mma_code_row_bytes, mma_configs
    out = []
    for c in mma_configs(n, k, sms, 128, 1):
        if (c.block_n, c.block_k, c.num_warps) not in ((64, 256, 4), (128, 256, 8), (64, 512, 4), (128, 128, 8),
                                                       (64, 128, 4)):
            continue
        for fl in (256, 384, 2048, 2176):
            v = TileConfig(c.block_m, c.block_n, c.block_k, c.split_k, c.num_warps, c.num_stages | fl)
            if mma_code_row_bytes(v, k) <= MMA_STATIC_SMEM_MAX:
                out.append(v)
    return list(dict.fromkeys(out))


def _cfg(text):
    from nybble.kernels.triton.configs import TileConfig
    return TileConfig(*map(int, text.split("x")))


def _us(rows, k, n, c):
    return min(float(r["us"]) for r in rows if (r["K"], r["N"]) == (k, n) and r["config"] == "x".join(map(str, c.to_json())))


def _prepack(n, k, act):
    import torch
    from nybble.kernels.base import LinearSpec
    from nybble.kernels.triton.kernel import TritonKernel
    from nybble.plain import PlainInt4Weight
    w = torch.randn(n, k, device="cuda") * 0.02
    plain = PlainInt4Weight.from_float(w, 128, "int", torch.bfloat16)
    return TritonKernel(LinearSpec.for_weight(plain, act)).prepack(plain), plain


def _run(x, q, cfg, a8):
    from nybble.kernels.triton import ops
    if a8:
        return ops.launch_a8w4(x, q["qweight"], q["scale"], q["zero_point"], q["wsum"], 128, False, None, cfg,
                               q["locks"])
    return ops.launch_a16w4(x, q["qweight"], q["scale"], q["zero_point"], 128, None, cfg, q["locks"])



def _compile_one(job):
    import torch
    cfg, a8 = job
    try:
        p, _ = _prepack(256, 1024, "a8_sym" if a8 else "a16")
        _run(torch.randn(1, 1024, device="cuda").to(torch.bfloat16), p, cfg, a8)
        torch.cuda.synchronize()
        return None
    except Exception as exc:
        return f"{cfg} a8={a8}: {type(exc).__name__}: {exc}"


def _torch_sum_us(torch, nbytes, l2, reps):
    from nybble.bench.gpu import _copies, graph_time_us
    words = -(-nbytes // 16) * 4
    bufs = [torch.randint(-2**31, 2**31 - 1, (words,), dtype=torch.int32, device="cuda")
            for _ in range(_copies(words * 4, l2))]
    us = graph_time_us([lambda b=b: b.sum() for b in bufs], reps, torch)
    del bufs
    torch.cuda.empty_cache()
    return us


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--jobs", type=int, default=14)
    ap.add_argument("--no-a8", action="store_true")
    ap.add_argument("--odd-splits", action="store_true", help="A16W4 also with split-K counts 3..28")
    ap.add_argument("--shared-codes", action="store_true",
                    help="A8W4: private global code rows vs the shared-memory code row (flags 256 / 2048)")
    ap.add_argument("--no-pdl", action="store_true", help="skip the PDL reruns of the best A16W4 configs")
    ap.add_argument("--a16-table-only", action="store_true", help="A16W4: time the table's choice only")
    ap.add_argument("--k-warps", action="store_true",
                    help="A16W4: only the candidates with warps splitting K inside the program (flag bits 12-13)")
    ap.add_argument("--configs", default="", help="A16W4: only these configs (CONFIG,CONFIG,..., e.g. 2x16x512x1x4x8193)")
    ap.add_argument("--a8-configs", default="", help="A8W4: only these configs (CONFIG,CONFIG,...)")
    ap.add_argument("--wide", action="store_true",
                    help="with --k-warps: also 16-warp programs, K tiles of 1024 and the register double buffer")
    ap.add_argument("--shapes", default=",".join(f"{k}x{n}" for k, n in SHAPES), help="KxN,...")
    args = ap.parse_args()
    import torch
    from nybble.bench.gpu import _copies, graph_time_us, read_once_us
    from nybble.kernels import reference  # noqa: F401
    from nybble.kernels.triton import ops
    from nybble.kernels.triton.configs import make_key, mma_k_warps
    props = torch.cuda.get_device_properties(0)
    sms, l2 = props.multi_processor_count, props.L2_cache_size
    store = ops.store_for(torch.device("cuda", 0))
    modes = (False,) if args.no_a8 else (False, True)
    shapes = [tuple(int(v) for v in t.split("x")) for t in args.shapes.split(",")]
    def cands_of(n, k, a8):
        given = args.a8_configs if a8 else args.configs
        if given:
            return [_cfg(t) for t in given.split(",")]
        return _cands(n, k, sms, a8, args.odd_splits, args.shared_codes, args.k_warps, args.wide)

    jobs = sorted({(c, a8) for k, n in shapes for a8 in modes if a8 or not args.a16_table_only
                   for c in cands_of(n, k, a8)}, key=str)
    precompile(_compile_one, jobs, args.jobs, "configs", 5)
    rows = []
    # warm-up: the first kernel timed in a process reads slow (fourteenth session: 55 vs 47 us)
    read_once_us(torch, 64 << 20, l2, 5)
    torch.manual_seed(0)
    with torch.no_grad():
        for k, n in shapes:
            x = torch.randn(1, k, device="cuda").to(torch.bfloat16)
            line = f"K={k:5d} N={n:5d}:"
            for a8 in modes:
                p, plain = _prepack(n, k, "a8_sym" if a8 else "a16")
                wbytes = sum(p[kk].numel() * p[kk].element_size() for kk in ("qweight", "scale", "zero_point"))
                if not a8:
                    fl, fcfg = read_once_us(torch, wbytes, l2, args.reps)
                    fsum = _torch_sum_us(torch, wbytes, l2, args.reps)
                    rows.append({"K": k, "N": n, "kind": "floor_read_kernel", "config": "x".join(map(str, fcfg)),
                                 "us": round(fl, 2), "rel_err": "", "bytes": wbytes})
                    rows.append({"K": k, "N": n, "kind": "floor_torch_sum", "config": "", "us": round(fsum, 2),
                                 "rel_err": "", "bytes": wbytes})
                    line += f" floor {fl:6.1f} us ({fsum:6.1f} torch.sum)"
                r = _copies(sum(v.numel() * v.element_size() for v in p.values()), l2)
                cp = rotated_copies(p, r)
                if a8:
                    ref = torch.ops.nybble.reference_a8w4(x, plain.qdata, plain.scale, plain.zero_point, 128, False,
                                                          None)
                else:
                    ref = torch.ops.nybble.reference_a16w4(x, plain.qdata, plain.scale, plain.zero_point, 128, None)
                table = store.get(make_key("a8w4" if a8 else "a16w4", n, k, 128, 1))
                best = {}
                cands = [] if args.a16_table_only and not a8 else cands_of(n, k, a8)
                for c in [None] + cands:
                    try:
                        y = _run(x, p, c, a8)
                        err = ((y.float() - ref.float()).norm() / ref.float().norm()).item()
                        us = graph_time_us([lambda q=q, c=c: _run(x, q, c, a8) for q in cp], args.reps, torch)
                    except Exception as exc:
                        print(f"  skip {c}: {type(exc).__name__}: {exc}", flush=True)
                        continue
                    kind = ("a8" if a8 else "a16") + ("-table" if c is None else
                                                      f"-mma-f{c.num_stages & 224}"
                                                      + ("-smc" if c.num_stages & 2048 else "")
                                                      + ("-early" if c.num_stages & 512 else "")
                                                      + (f"-kw{mma_k_warps(c)}" if mma_k_warps(c) > 1 else ""))
                    rows.append({"K": k, "N": n, "kind": kind,
                                 "config": "x".join(map(str, (c or table).to_json())) if (c or table) else "",
                                 "us": round(us, 2), "rel_err": f"{err:.2e}", "bytes": wbytes})
                    if err > 2 ** -7:
                        print(f"  WRONG {c}: rel err {err:.3g}", flush=True)
                        continue
                    if kind not in best or us < best[kind][0]:
                        best[kind] = (us, c)
                if not a8 and not args.no_pdl:  # the best mma configs again, launched with PDL (late trigger), PF off / on
                    tops = sorted({c for r in rows if r["kind"].startswith("a16-mma") and (r["K"], r["N"]) == (k, n)
                                   for c in [_cfg(r["config"])]}, key=lambda c: _us(rows, k, n, c))[:3]
                    old = ops.set_pdl(True)
                    try:
                        for c0 in tops:
                            for pf in (0, 32):
                                c = type(c0)(*(c0.to_json()[:5] + [c0.num_stages | pf]))
                                y = _run(x, p, c, False)
                                err = ((y.float() - ref.float()).norm() / ref.float().norm()).item()
                                us = graph_time_us([lambda q=q, c=c: _run(x, q, c, False) for q in cp], args.reps,
                                                   torch)
                                kind = f"a16-pdl-f{pf}"
                                rows.append({"K": k, "N": n, "kind": kind, "config": "x".join(map(str, c.to_json())),
                                             "us": round(us, 2), "rel_err": f"{err:.2e}", "bytes": wbytes})
                                if err <= 2 ** -7 and (kind not in best or us < best[kind][0]):
                                    best[kind] = (us, c)
                    finally:
                        ops.set_pdl(old)
                for kind, (us, c) in sorted(best.items()):
                    line += f" | {kind} {us:6.1f}" + (f" {'x'.join(map(str, c.to_json()))}" if c else "")
                    if not a8:
                        line += f" ({100 * fl / us:.0f}%)"
                del cp, p
                torch.cuda.empty_cache()
            print(line, flush=True)
    write_rows(args.out, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
