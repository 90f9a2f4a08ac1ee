"""GPU benchmark of the int4 linear kernels (``nybble bench gpu`` / ``python -m nybble.bench.gpu``).

For each weight shape (K x N) and batch M it times, in the same run:

* ``triton_a16w4``: nybble's Triton A16W4 kernel (bf16 activations);
* ``triton_a8w4``: nybble's Triton A8W4 (fused per-token int8 quantization + int8 matmul), symmetric;
* ``tinygemm``: PyTorch's ``aten._weight_int4pack_mm`` (bf16, symmetric weights);
* ``cublas_bf16``: ``F.linear`` on the dequantized bf16 weight (cuBLAS);
* ``read_floor``: the one-pass HBM read of the int4 kernel's bytes at the bandwidth measured below.

Method: each kernel is captured ``R`` times in one CUDA graph over ``R`` different copies of the
weights (more bytes than 3x the L2 cache, so every call reads its weights from HBM); one replay is
timed with CUDA events (after a GPU sleep so that the launch is queued before the first event) and
divided by ``R``; the median over ``--reps`` replays is reported.  The HBM read bandwidth is measured
in the same run with a one-pass Triton read kernel (16-byte loads) over a 2 GiB buffer.  Eager
per-call overhead (Python + launch, wall clock per call of a loop of calls at M = 1) is reported
separately.  Results: CSV, PNG (speedup vs cuBLAS bf16) and a markdown table in ``--out-dir``.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
import time
from pathlib import Path

SHAPES = ((4096, 4096), (4096, 14336), (14336, 4096), (8192, 28672))  # (K, N)
MS = (1, 2, 4, 8, 16, 32, 64, 128, 512, 2048)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shapes", default=",".join(f"{k}x{n}" for k, n in SHAPES),
                        help="comma-separated KxN weight shapes (default: Llama-3-8B and 70B shapes)")
    parser.add_argument("--m", default=",".join(map(str, MS)), help="comma-separated batch sizes M")
    parser.add_argument("--group-size", type=int, default=128, help="int4 group size (default 128)")
    parser.add_argument("--domain", default="int", choices=["int", "none"],
                        help="zero-point domain of nybble's weights (tinygemm always gets 'none')")
    parser.add_argument("--reps", type=int, default=30, help="timed graph replays per point (median)")
    parser.add_argument("--out-dir", default="benchmarks/gpu", help="where the CSV/PNG/markdown go")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG")
    parser.add_argument("--tune-table", default=None,
                        help="also write the tile configs used in this run as a shipped-table JSON here")


def _parse(args):
    """``(shapes [(K, N)], ms [M])`` from ``--shapes`` / ``--m`` (ValueError naming the bad item)."""
    from .common import parse_int_list, parse_shapes
    if args.group_size != -1 and args.group_size not in (32, 64, 128, 256):
        raise ValueError(f"--group-size {args.group_size}: use 32, 64, 128, 256 or -1 (per-channel)")
    shapes = parse_shapes(args.shapes)
    for k, n in shapes:
        if args.group_size != -1 and k % args.group_size:
            raise ValueError(f"shape {k}x{n}: K={k} is not a multiple of --group-size {args.group_size}")
    return shapes, parse_int_list(args.m)


def _sleep_then(fn, torch):
    torch.cuda._sleep(200_000)  # ~100 us of GPU time: the CPU queues events + launch meanwhile
    return fn()


def graph_time_us(calls, reps, torch) -> float:
    """Median GPU time per call (us) of ``calls`` (a list of zero-arg callables, one per weight copy)
    captured back to back in one CUDA graph."""
    for c in calls:
        c()
    torch.cuda.synchronize()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for c in calls:  # warm-up on the capture stream too
            c()
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for c in calls:
            c()
    g.replay()
    torch.cuda.synchronize()
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(reps):
        torch.cuda._sleep(200_000)
        e0.record()
        g.replay()
        e1.record()
        e1.synchronize()
        times.append(e0.elapsed_time(e1) * 1000.0 / len(calls))
    del g
    return statistics.median(times)


def measure_bandwidth(torch, ops, reps) -> dict:
    """One-pass read (Triton, 16-byte loads) and device copy bandwidths over 2 GiB, in GB/s."""
    n_words = 2**29  # 2 GiB of int32
    buf = torch.randint(-2**31, 2**31 - 1, (n_words,), dtype=torch.int32, device="cuda")
    t_read = graph_time_us([lambda: ops.launch_read(buf)], reps, torch)
    half = buf[: n_words // 2]
    dst = torch.empty_like(half)
    t_copy = graph_time_us([lambda: dst.copy_(half)], reps, torch)
    del buf, dst
    torch.cuda.empty_cache()
    return {"read_gbps": 4 * n_words / t_read / 1e3, "copy_gbps": 2 * 4 * (n_words // 2) / t_copy / 1e3,
            "read_us_2gib": t_read}


def read_once_us(torch, nbytes: int, l2_bytes: int, reps: int) -> tuple[float, tuple[int, int, int]]:
    """The one-pass-read floor of ``nbytes``: GPU time (us) of ``jit.read_kernel`` (16-byte loads)
    reading exactly that many bytes once, over rotated copies (from HBM), timed like the kernels
    (:func:`graph_time_us`); the best over block size (1-8 K words), programs (1-16 per SM) and
    warps (4 / 8), so the floor is the fastest this probe reads those bytes.  Returns (us,
    (block, programs, warps))."""
    import triton
    from ..kernels.triton import jit
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    words = -(-nbytes // 16) * 4
    bufs = [torch.randint(-2**31, 2**31 - 1, (words,), dtype=torch.int32, device="cuda")
            for _ in range(_copies(words * 4, l2_bytes))]
    best = None
    for block in (1024, 2048, 4096, 8192):
        for mult in (1, 2, 4, 8, 16):
            progs = min(sms * mult, triton.cdiv(words, block))
            out = torch.empty(progs, dtype=torch.int32, device="cuda")
            for warps in (4, 8):
                us = graph_time_us([lambda b=b, o=out, p=progs, bl=block, w=warps:
                                    jit.read_kernel[(p,)](b, o, words, BLOCK=bl, num_warps=w) for b in bufs],
                                   reps, torch)
                if best is None or us < best[0]:
                    best = (us, (block, progs, warps))
    del bufs
    torch.cuda.empty_cache()
    return best


def _copies(nbytes, l2_bytes):
    return max(2, min(64, math.ceil(3 * l2_bytes / max(nbytes, 1))))


def bench_shape(torch, F, k, n, ms, args, bw_gbps, l2, rows, configs_used):
    from ..kernels.base import LinearSpec
    from ..kernels.torch_int4_cuda import TorchInt4CudaKernel
    from ..kernels.triton import ops
    from ..kernels.triton.configs import make_key
    from ..kernels.triton.kernel import TritonKernel
    from ..plain import PlainInt4Weight

    g = args.group_size
    dt = torch.bfloat16
    w = torch.randn(n, k, device="cuda", dtype=torch.float32) * 0.02
    plain = PlainInt4Weight.from_float(w, g, args.domain, dt)
    plain_sym = PlainInt4Weight.from_float(w, g, "none", dt)
    del w
    a16 = TritonKernel(LinearSpec.for_weight(plain, "a16"))
    a8 = TritonKernel(LinearSpec.for_weight(plain, "a8_sym"))
    p16, p8 = a16.prepack(plain), a8.prepack(plain)
    int4_bytes = plain.nbytes()
    r4 = _copies(int4_bytes, l2)
    c16 = [p16] + [{kk: v.clone() for kk, v in p16.items()} for _ in range(r4 - 1)]
    c8 = [p8] + [{kk: v.clone() for kk, v in p8.items()} for _ in range(r4 - 1)]
    tg_spec = LinearSpec.for_weight(plain_sym, "a16")
    tg_ok = TorchInt4CudaKernel.is_supported("cuda")[0] and TorchInt4CudaKernel.can_implement(tg_spec)[0]
    if tg_ok:
        tg = TorchInt4CudaKernel(tg_spec)
        ptg = tg.prepack(plain_sym)
        ptg = {"weight_int4pack": ptg["weight_int4pack"], "scale_and_zeros": ptg["scale_and_zeros"]}
        ctg = [ptg] + [{kk: v.clone() for kk, v in ptg.items()} for _ in range(r4 - 1)]
    wbytes = sum(p16[kk].numel() * p16[kk].element_size() for kk in ("qweight", "scale", "zero_point"))
    read_once, probe_cfg = read_once_us(torch, wbytes, l2, args.reps)
    print(f"K={k:6d} N={n:6d}: one-pass read of the {wbytes} packed weight bytes {read_once:.1f} us "
          f"(read_kernel block/programs/warps {probe_cfg})", flush=True)
    wd = plain.dequantize(dt)
    r16 = _copies(wd.numel() * 2, l2)
    cw = [wd] + [wd.clone() for _ in range(r16 - 1)]
    del plain_sym
    for m in ms:
        x = torch.randn(m, k, device="cuda").to(dt)
        res = {}
        res["triton_a16w4"] = graph_time_us([lambda p=p: a16.apply(x, p, None) for p in c16], args.reps, torch)
        res["triton_a8w4"] = graph_time_us([lambda p=p: a8.apply(x, p, None) for p in c8], args.reps, torch)
        if tg_ok:
            res["tinygemm"] = graph_time_us([lambda p=p: tg.apply(x, p, None) for p in ctg], args.reps, torch)
        res["cublas_bf16"] = graph_time_us([lambda wi=wi: F.linear(x, wi) for wi in cw], args.reps, torch)
        moved = int4_bytes + x.numel() * 2 + m * n * 2
        res["read_floor"] = moved / bw_gbps / 1e3
        res["read_once"] = read_once
        for op in ("a16w4", "a8w4"):
            key = make_key(op, n, k, g, m)
            cfg = ops.store_for(x.device).get(key)
            if cfg is not None:
                configs_used[key] = cfg
        for meth, us in res.items():
            cfg = configs_used.get(make_key({"triton_a16w4": "a16w4", "triton_a8w4": "a8w4"}.get(meth, ""),
                                            n, k, g, m)) if meth.startswith("triton") else None
            rows.append({
                "K": k, "N": n, "M": m, "method": meth, "median_us": round(us, 2),
                "pct_of_read_floor": round(100 * res["read_floor"] / us, 1),
                "pct_of_read_once": round(100 * res["read_once"] / us, 1),
                "speedup_vs_cublas_bf16": round(res["cublas_bf16"] / us, 3),
                "speedup_vs_tinygemm": round(res["tinygemm"] / us, 3) if "tinygemm" in res else "",
                "tflops": round(2 * m * n * k / us / 1e6, 1),
                "config": "" if cfg is None else "x".join(map(str, cfg.to_json())),
            })
        print(f"K={k:6d} N={n:6d} M={m:5d}  " + "  ".join(f"{kk}={v:8.1f}us" for kk, v in res.items())
              + f"  a16 {res['cublas_bf16'] / res['triton_a16w4']:.2f}x  a8 {res['cublas_bf16'] / res['triton_a8w4']:.2f}x"
              f"  a16 {100 * res['read_once'] / res['triton_a16w4']:.0f}% of one-pass read "
              f"({100 * res['read_floor'] / res['triton_a16w4']:.0f}% of the 2 GiB read rate)", flush=True)
    del c16, c8, cw, wd
    torch.cuda.empty_cache()


def eager_overhead(torch, F, reps=1000, size=1024, rounds=15) -> dict:
    """Wall-clock microseconds per eager call at M = 1 on a small ``size x size`` layer (group 128), so
    that the GPU time (a few us) stays below the CPU time and the loop measures Python + launch.
    ``triton_<act>_apply``: ``TritonKernel.apply`` (the layer's cached launch plan, ``eager_plan.py``);
    ``triton_<act>_module``: the whole ``Int4Linear`` call (its eager shortcut, then the plan, replayed
    in C by ``plan_runner.py``); ``*_graph_gpu_us``: the GPU time of the same call; next to them a bare
    1-program launch (Triton's JIT path, FastLaunch, and Triton's compiled launcher with integer
    addresses), ``F.linear`` and ``torch.empty``.  Every path is timed once per round (``reps`` calls),
    in ``rounds`` rounds, and keeps its fastest round: all paths see the same moments of the host's
    load, so their ratios hold even when the host's CPU is busy (15 short rounds rather than 5 long
    ones: in the eleventh session's final run the A16 path read 15.2 us next to 9.5 us for the A8
    paths, which run the same plan machinery; more, shorter rounds make it less likely that a slow
    stretch of the host decides one path's figure).  ``<path> median`` keys: the median round."""
    from ..kernels.base import LinearSpec
    from ..kernels.triton.kernel import TritonKernel
    from ..plain import PlainInt4Weight
    w = torch.randn(size, size, device="cuda") * 0.02
    plain = PlainInt4Weight.from_float(w, 128, "int", torch.bfloat16)
    wd = plain.dequantize(torch.bfloat16)
    x = torch.randn(1, size, device="cuda").to(torch.bfloat16)
    paths, gpu_us = {}, {}
    from ..tensor import Int4Linear
    for act in ("a16", "a8_sym", "a8_asym"):
        kern = TritonKernel(LinearSpec.for_weight(plain, act))
        p = kern.prepack(plain)
        zp = p.get("zero_point")
        layer = Int4Linear(plain, None, act_mode=act, force_kernel="triton")
        # apply: the layer's cached eager launch plan (kernels/triton/eager_plan.py); module: Int4Linear(x)
        apply = (lambda kern=kern, p=p: kern.apply(x, p, None))
        paths[f"triton_{act}_apply"] = apply
        gpu_us[f"triton_{act}_graph_gpu_us"] = graph_time_us([apply], 20, torch)
        paths[f"triton_{act}_module"] = (lambda layer=layer: layer(x))
        if act == "a16":
            paths["triton_a16_torch_op"] = lambda p=p, zp=zp: torch.ops.nybble.triton_a16w4(
                x, p["qweight"], p["scale"], zp, 128, None)
        elif act == "a8_sym":
            paths["triton_a8_torch_op"] = lambda p=p, zp=zp: torch.ops.nybble.triton_a8w4(
                x, p["qweight"], p["scale"], zp, p["wsum"], 128, False, None)
    # one launch of a 1-program kernel: through triton's JIT path and through nybble's FastLaunch
    from ..kernels.triton import jit, ops
    ws = torch.zeros(1, 1, 64, device="cuda")
    o = torch.empty(1, 64, dtype=torch.bfloat16, device="cuda")
    paths["launch_only_triton_jit"] = (
        lambda: jit.finish_kernel[(1,)](ws, ws, o, 64, 64, 1, HAS_BIAS=False, IS_BF16=True, BLOCK=1024))
    paths["launch_only_fastlaunch"] = lambda: ops._finish(ws, None, o)
    from ..kernels.triton.launch import direct_launcher, recording
    with recording() as recs:  # the same launch through the compiled launcher with integer addresses
        ops._finish(ws, None, o)
    launch, tail = direct_launcher(recs[0].compiled)
    dargs = [a.data_ptr() if isinstance(a, torch.Tensor) else a for a in recs[0].args]
    raw = torch._C._cuda_getCurrentRawStream
    paths["launch_only_direct"] = lambda: launch(1, 1, 1, raw(0), *tail, *dargs)
    paths["cublas_bf16_F.linear"] = lambda: F.linear(x, wd)
    paths["torch.empty_1x1024 (machine reference)"] = lambda: torch.empty(1, size, dtype=torch.float32, device="cuda")
    paths["empty_python_loop"] = lambda: None
    best, median = _wall_per_call_rounds(paths, reps, rounds, torch)
    out = {}
    for name, us in best.items():
        out[name] = us
        out[f"{name} median"] = median[name]
        if name.endswith("_apply"):
            key = name.replace("_apply", "_graph_gpu_us")
            out[key] = gpu_us[key]
    return out


def _wall_per_call_rounds(paths: dict, reps: int, rounds: int, torch) -> tuple[dict, dict]:
    """``({name: fastest round's us per call}, {name: median round's us per call})``: each round times
    every path once (``reps`` calls, then a synchronize), after 50 warm-up calls of each."""
    for fn in paths.values():
        for _ in range(50):
            fn()
    torch.cuda.synchronize()
    per_round: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(rounds):
        for name, fn in paths.items():
            t0 = time.perf_counter()
            for _ in range(reps):
                fn()
            torch.cuda.synchronize()
            per_round[name].append((time.perf_counter() - t0) / reps * 1e6)
    return ({n: min(v) for n, v in per_round.items()}, {n: statistics.median(v) for n, v in per_round.items()})


def write_outputs(rows, meta, out_dir: Path, plot: bool) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "results.csv", "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=list(rows[0]))
        wr.writeheader()
        wr.writerows(rows)
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=1))
    shapes = sorted({(r["K"], r["N"]) for r in rows}, key=lambda s: s[0] * s[1])
    lines = [f"# GPU kernel benchmark ({meta['gpu']})", "",
             f"torch {meta['torch']}, triton {meta['triton']}; group {meta['group_size']}, nybble weights "
             f"zero_point={meta['domain']}; read bandwidth {meta['bandwidth']['read_gbps']:.0f} GB/s "
             f"(copy {meta['bandwidth']['copy_gbps']:.0f} GB/s); median of CUDA-graph replays over "
             "rotated weight copies (HBM-resident).", "",
             "Time in us (speedup vs cuBLAS bf16; for A16W4 also % of the one-pass read of the packed "
             "weight bytes measured for the shape (`read once`), then % of those bytes + x + y at the 2 GiB "
             "read rate (`rate floor`)).", ""]
    for k, n in shapes:
        lines += [f"## K={k} N={n}", "",
                  "| M | triton A16W4 | triton A8W4 | tinygemm | cuBLAS bf16 | read once | rate floor |",
                  "|---:|---:|---:|---:|---:|---:|---:|"]
        for m in sorted({r["M"] for r in rows if (r["K"], r["N"]) == (k, n)}):
            rr = {r["method"]: r for r in rows if (r["K"], r["N"], r["M"]) == (k, n, m)}

            def cell(name, floor=False):
                r = rr.get(name)
                if r is None:
                    return "-"
                s = f"{r['median_us']:.1f} ({r['speedup_vs_cublas_bf16']:.2f}x"
                return s + (f", {r['pct_of_read_once']:.0f}% / {r['pct_of_read_floor']:.0f}%)" if floor else ")")
            lines.append(f"| {m} | {cell('triton_a16w4', True)} | {cell('triton_a8w4')} | {cell('tinygemm')} | "
                         f"{rr['cublas_bf16']['median_us']:.1f} | {rr['read_once']['median_us']:.1f} | "
                         f"{rr['read_floor']['median_us']:.1f} |")
        lines.append("")
    lines += ["## Eager per-call wall time at M=1 (1024x1024 layer, group 128), us", "", "| path | us |", "|---|---:|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in meta["eager_us"].items()]
    (out_dir / "results.md").write_text("\n".join(lines) + "\n")
    if plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, axes = plt.subplots(1, len(shapes), figsize=(4.2 * len(shapes), 3.6), squeeze=False)
        for ax, (k, n) in zip(axes[0], shapes):
            for meth, style in (("triton_a16w4", "o-"), ("triton_a8w4", "s-"), ("tinygemm", "^--")):
                pts = sorted((r["M"], r["speedup_vs_cublas_bf16"]) for r in rows
                             if (r["K"], r["N"], r["method"]) == (k, n, meth))
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=meth, ms=4)
            ax.axhline(1.0, color="gray", lw=0.8)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log", base=2)
            ax.set_title(f"K={k} N={n}")
            ax.set_xlabel("M")
        axes[0][0].set_ylabel("speedup vs cuBLAS bf16")
        axes[0][0].legend(fontsize=8)
        fig.suptitle(f"int4 linear on {meta['gpu']} (CUDA graphs, HBM-resident weights)")
        fig.tight_layout()
        fig.savefig(out_dir / "speedup.png", dpi=110)


def main(args) -> int:
    import torch
    import torch.nn.functional as F
    shapes, ms = _parse(args)  # bad flags get their error on any machine
    if not torch.cuda.is_available():
        print("nybble bench gpu: no CUDA device; run it on a GPU machine", file=sys.stderr)
        return 1
    import triton

    from ..kernels.triton import ops
    from ..kernels.triton.configs import write_table
    props = torch.cuda.get_device_properties(0)
    l2 = getattr(props, "L2_cache_size", 50 * 2**20)
    torch.manual_seed(0)
    bw = measure_bandwidth(torch, ops, args.reps)
    print(f"{props.name}: read {bw['read_gbps']:.0f} GB/s, copy {bw['copy_gbps']:.0f} GB/s "
          f"(2 GiB read in {bw['read_us_2gib']:.0f} us)", flush=True)
    rows, configs_used = [], {}
    with torch.no_grad():
        for k, n in shapes:
            bench_shape(torch, F, k, n, ms, args, bw["read_gbps"], l2, rows, configs_used)
        eager = eager_overhead(torch, F)
    print("eager per-call wall time (us):", {k: round(v, 1) for k, v in eager.items()}, flush=True)
    meta = {"gpu": props.name, "torch": torch.__version__, "triton": triton.__version__,
            "group_size": args.group_size, "domain": args.domain, "bandwidth": bw, "eager_us": eager,
            "l2_bytes": l2}
    write_outputs(rows, meta, Path(args.out_dir), not args.no_plot)
    if args.tune_table:
        write_table(Path(args.tune_table), props.name, configs_used)
    print(f"wrote {args.out_dir}/results.csv, results.md" + ("" if args.no_plot else ", speedup.png"))
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="python -m nybble.bench.gpu", description=__doc__.splitlines()[0])
    add_arguments(p)
    sys.exit(main(p.parse_args()))
