"""CPU linear-layer benchmark: nybble's int4 kernels against torch fp32/bf16 linear and torch's int4 op.

Usage: ``nybble bench cpu [--quick] [--e2e] ...`` or ``python -m nybble.bench.cpu ...``.

For each weight shape K x N (Llama-3-8B: 4096x4096, 4096x14336, 14336x4096) and each number of
activation rows M, every mode computes ``y = x @ W.T`` (x: (M, K), W: (N, K)):

* ``nybble_a16w4_bf16`` / ``nybble_a16w4_fp32``: nybble's kernel (``--kernel``, default the C++
  ``nybble_cpu``), int4 weights (group ``--group``, zero-point domain ``--zero-point``), bf16 / fp32
  activations, scales in the activation dtype.
* ``nybble_a8w4``: the same kernel with per-token dynamic int8 activations (symmetric), bf16 in/out.
* ``torch_int4``: ``aten._weight_int4pack_mm_for_cpu`` called directly (bf16 activations, scale and
  float zero per group in bf16: ``w = (q - 8) * s + z``).
* ``torch_fp32`` / ``torch_bf16``: ``F.linear`` with a dense fp32 / bf16 weight (oneDNN/MKL).

Each mode rotates through enough independent copies of its weight (together > ``--cache-factor``
x the last-level cache) that every call reads its weight from DRAM. Each cell reports the median
per-call time, the weight bytes streamed per second (``weight GB/s`` = bytes of the weight in the
mode's own storage: int4 codes + scales (+ zero points) for the int4 modes, the dense matrix for
F.linear), that rate as % of the DRAM read bandwidth measured alongside (``%BW``, see below),
GFLOP/s-equivalent (2*M*N*K / t), and speedups against the three torch baselines of the same shape
and M.

The DRAM read probe (``dram_probe``) is timed as one more mode, interleaved with the kernels at
every M: ``torch.sum`` over fp32 buffers of the int4 weight's size, rotated like the weights
(copies totalling > ``--cache-factor`` x L3), with the same threads. ``%BW`` divides by the median
of the probe calls of the same shape and M (timed in the same interleaved rounds as the cell), so
a kernel is compared with what DRAM delivered while it ran; ``%BWrun`` by the median over the whole
run. ``bandwidth.csv`` has the per-(shape, M) probe, each shape's pooled median ("block"), the run
median, and a probe over one large buffer at the start and the end (reference only).

Outputs (under ``--out``): ``kernels.csv``, ``speedup.png`` (speedup vs torch bf16 linear and vs
torch int4 against M), ``RESULTS.md`` and, with ``--e2e``, ``e2e.csv`` (see :mod:`nybble.bench.e2e_cpu`).
"""
from __future__ import annotations

import argparse
import csv
import gc
import json
import re
import shlex
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from ..progress import progress
from ..types import dtype_name
from . import common as C

SHAPES: tuple[tuple[int, int], ...] = ((4096, 4096), (4096, 14336), (14336, 4096))
M_VALUES: tuple[int, ...] = (1, 2, 4, 8, 16, 64, 256, 512, 1024)
MODES: tuple[str, ...] = ("nybble_a16w4_bf16", "nybble_a16w4_fp32", "nybble_a8w4",
                          "torch_int4", "torch_fp32", "torch_bf16")
#: speedup column -> the baseline mode it divides by
BASELINES: dict[str, str] = {"x_fp32": "torch_fp32", "x_bf16": "torch_bf16", "x_int4": "torch_int4"}

QUICK_SHAPES = ((1024, 2048),)
QUICK_M = (1, 16, 128)

#: max relative error (max |y - ref| / max |ref|) accepted by the built-in sanity check
CHECK_TOL = {torch.float32: 1e-3, torch.bfloat16: 3e-2}


# ---------------------------------------------------------------------------------------------
# one mode on one shape
# ---------------------------------------------------------------------------------------------


@dataclass
class Case:
    """One mode built for one shape: ``copies`` independent weights and how to run one of them.

    ``run(x, i)`` computes ``x @ W_i.T`` for copy ``i % len(copies)``; ``x``: (M, K) in ``dtype``.
    ``weight_bytes``: bytes of one copy of the weight as the mode stores it.
    """

    mode: str
    kernel: str
    dtype: torch.dtype
    weight_bytes: int
    copies: list = field(repr=False)
    fn: Callable = field(repr=False)
    check_err: float | None = None
    check_ok: bool | None = None

    def run(self, x: torch.Tensor, i: int) -> torch.Tensor:
        return self.fn(x, self.copies[i % len(self.copies)])


class ModeUnavailable(Exception):
    """A mode cannot run here (kernel missing or refusing the spec); the message says why."""


def _random_plain(n: int, k: int, group: int, domain: str, dtype: torch.dtype, gen: torch.Generator):
    """A PlainInt4Weight with uniformly random codes (every int32 bit pattern is 8 valid codes),
    scales in [0.5, 1.5) / 64 and, in the ``int`` domain, random zero points 0..15."""
    from ..plain import PlainInt4Weight
    g = k // group
    qdata = torch.randint(-2**31, 2**31 - 1, (n, k // 8), dtype=torch.int32, generator=gen)
    scale = ((torch.rand(n, g, generator=gen) + 0.5) / 64).to(dtype)
    zp = torch.randint(0, 16, (n, g), dtype=torch.int8, generator=gen) if domain == "int" else None
    return PlainInt4Weight(qdata, scale, zp, group, (n, k))


def _rel_err(y: torch.Tensor, ref: torch.Tensor) -> float:
    return float((y.float() - ref.float()).abs().max() / ref.float().abs().max().clamp_min(1e-30))


def build_nybble(mode: str, k: int, n: int, copies: int, args, gen: torch.Generator) -> Case:
    """A nybble-kernel mode: ``args.kernel`` forced through the registry, weights prepacked."""
    from ..kernels import registry
    from ..kernels.base import LinearSpec
    dtype = torch.float32 if mode == "nybble_a16w4_fp32" else torch.bfloat16
    act = "a8_sym" if mode == "nybble_a8w4" else "a16"
    plain0 = _random_plain(n, k, args.group, args.zero_point, dtype, gen)
    spec = LinearSpec.for_weight(plain0, act, name=f"bench {k}x{n}")
    try:
        kcls = registry.choose(spec, force=args.kernel)
    except registry.NoKernelError as exc:
        raise ModeUnavailable(str(exc)) from None
    kern = kcls(spec)
    packs = []
    for c in range(copies):
        plain = plain0 if c == 0 else _random_plain(n, k, args.group, args.zero_point, dtype, gen)
        # one kernel object per copy, as one per layer in a model: each keeps its own cached call
        # plan (one object over rotating copies rebuilt it on every call, ~5 us)
        packs.append((kern if c == 0 else kcls(spec), kern.prepack(plain)))
    case = Case(mode, kern.display_name, dtype, plain0.nbytes(), packs,
                lambda x, kp: kp[0].apply(x, kp[1], None))
    # sanity check of copy 0 against the reference kernel's ops (same arithmetic)
    x = torch.randn(3, k, generator=gen).to(dtype)
    zp = plain0.zero_point
    if act == "a16":
        ref = torch.ops.nybble.reference_a16w4(x.float(), plain0.qdata, plain0.scale.float(), zp, args.group, None)
    else:
        ref = torch.ops.nybble.reference_a8w4(x, plain0.qdata, plain0.scale, zp, args.group, False, None)
    case.check_err = _rel_err(case.run(x, 0), ref)
    case.check_ok = case.check_err <= CHECK_TOL[dtype]
    return case


def build_torch_int4(k: int, n: int, copies: int, args, gen: torch.Generator) -> Case:
    """``aten._weight_int4pack_mm_for_cpu``: codes (N, K) int32 -> packed uint8 (N, K/2);
    ``scale_and_zeros`` (K/g, N, 2) bf16 with ``w = (q - 8) * s + z``."""
    if not hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu"):
        raise ModeUnavailable("this PyTorch has no aten._weight_int4pack_mm_for_cpu")
    g = args.group
    if g not in (32, 64, 128, 256) or k % g or n % 16:
        raise ModeUnavailable(f"torch's int4 op needs group 32..256 dividing K and N % 16 == 0 "
                              f"(K={k} N={n} group={g})")
    packs = []
    codes = torch.randint(0, 16, (n, k), dtype=torch.int32, generator=gen)  # shared; each copy packs anew
    for _ in range(copies):
        s = (torch.rand(k // g, n, generator=gen) + 0.5) / 64
        z = (torch.rand(k // g, n, generator=gen) - 0.5) / 8
        sz = torch.stack([s, z], dim=-1).to(torch.bfloat16).contiguous()
        packs.append((torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1), sz))
    nbytes = packs[0][0].numel() * packs[0][0].element_size() + packs[0][1].numel() * 2

    def fn(x, p):
        return torch.ops.aten._weight_int4pack_mm_for_cpu(x, p[0], g, p[1])
    case = Case("torch_int4", "aten._weight_int4pack_mm_for_cpu", torch.bfloat16, nbytes, packs, fn)
    szf = packs[0][1].float()
    w = ((codes.float() - 8).reshape(n, k // g, g) * szf[..., 0].t()[..., None]
         + szf[..., 1].t()[..., None]).reshape(n, k)
    x = torch.randn(3, k, generator=gen).to(torch.bfloat16)
    case.check_err = _rel_err(case.run(x, 0), x.float() @ w.t())
    case.check_ok = case.check_err <= CHECK_TOL[torch.bfloat16]
    return case


def build_dense(mode: str, k: int, n: int, copies: int, gen: torch.Generator) -> Case:
    """``F.linear`` with a dense (N, K) weight in fp32 or bf16."""
    dtype = torch.float32 if mode == "torch_fp32" else torch.bfloat16
    ws = [(torch.randn(n, k, generator=gen) / 64).to(dtype) for _ in range(copies)]
    return Case(mode, f"F.linear {dtype_name(dtype)}", dtype, n * k * ws[0].element_size(), ws, lambda x, w: F.linear(x, w))


def weight_bytes_estimate(mode: str, k: int, n: int, group: int) -> int:
    """Bytes of one weight copy of ``mode`` (used to decide how many copies to rotate)."""
    if mode in ("torch_fp32",):
        return 4 * n * k
    if mode == "torch_bf16":
        return 2 * n * k
    per_group = 8 if mode == "nybble_a16w4_fp32" else (4 if mode == "torch_int4" else 3)
    return n * k // 2 + n * (k // group) * per_group


PROBE_MODE = "dram_probe"


def build_probe(k: int, n: int, l3: int, args) -> Case:
    """The DRAM read probe of shape K x N: ``torch.sum`` over fp32 buffers of the size of the int4
    weight (``nybble_a16w4_bf16``'s bytes), as many copies as the weights rotate through (together >
    ``args.cache_factor`` x L3), so that each call streams one buffer from DRAM like a kernel call
    streams its weight. ``run(x, i)`` ignores ``x``."""
    nbytes = max(4, weight_bytes_estimate("nybble_a16w4_bf16", k, n, args.group) // 4 * 4)
    copies = C.copies_for(nbytes, l3, args.cache_factor)
    bufs = [torch.ones(nbytes // 4) for _ in range(copies)]
    return Case(PROBE_MODE, "torch.sum float32", torch.float32, nbytes, bufs, lambda x, b: b.sum())


def build_case(mode: str, k: int, n: int, copies: int, args, gen: torch.Generator) -> Case:
    if mode.startswith("nybble_"):
        return build_nybble(mode, k, n, copies, args, gen)
    if mode == "torch_int4":
        return build_torch_int4(k, n, copies, args, gen)
    return build_dense(mode, k, n, copies, gen)


# ---------------------------------------------------------------------------------------------
# the DRAM bandwidth probe
# ---------------------------------------------------------------------------------------------


def probe_bandwidth(buf: torch.Tensor, reps: int = 15) -> dict:
    """DRAM read bandwidth (GB/s) of ``buf.sum()`` over one buffer much larger than the caches, with
    the benchmark's thread count and with one thread; ``median_gbps`` is the better of the two
    medians. Reference only (at the start and the end of the run): ``%BW`` uses the interleaved
    per-shape probe (:func:`build_probe`)."""
    nbytes = buf.numel() * buf.element_size()
    threads = torch.get_num_threads()
    res = {"buffer_mib": nbytes / 2**20, "reps": reps, "time_utc": time.strftime("%H:%M:%S", time.gmtime())}
    try:
        for label, nt in (("n", threads), ("1", 1)):
            torch.set_num_threads(nt)
            t = C.time_calls(lambda i: buf.sum(), budget_s=0.0, min_reps=reps, max_reps=reps, warmup=2)
            res[f"median_gbps_{label}thr"] = C.gbps(nbytes, t.median_us)
            res[f"best_gbps_{label}thr"] = C.gbps(nbytes, t.min_us)
    finally:
        torch.set_num_threads(threads)
    res["median_gbps"] = max(res["median_gbps_nthr"], res["median_gbps_1thr"])
    res["best_gbps"] = max(res["best_gbps_nthr"], res["best_gbps_1thr"])
    return res


# ---------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``nybble bench cpu`` flags."""
    p.add_argument("--shapes", default=None,
                   help="weight shapes KxN, comma separated (default: the Llama-3-8B shapes "
                        + ",".join(f"{k}x{n}" for k, n in SHAPES) + ")")
    p.add_argument("--m", default=None,
                   help="activation rows M, comma separated (default: " + ",".join(map(str, M_VALUES)) + ")")
    p.add_argument("--modes", default="all", help=f"comma separated subset of: {', '.join(MODES)}")
    p.add_argument("--kernel", default="nybble_cpu",
                   help="registry kernel name used for the nybble_* modes (default: %(default)s)")
    p.add_argument("--group", type=int, default=128, help="int4 group size (default: %(default)s)")
    p.add_argument("--zero-point", default="int", choices=("int", "none"),
                   help="zero-point domain of the nybble weights (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: torch.get_num_threads())")
    p.add_argument("--reps", type=int, default=50, help="max timed calls per cell (default: %(default)s)")
    p.add_argument("--min-reps", type=int, default=3, help="min timed calls per cell (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=3,
                   help="interleaved rounds over the modes per M; samples pooled (default: %(default)s)")
    p.add_argument("--cell-seconds", type=float, default=0.5,
                   help="time budget per cell; slow cells get --min-reps calls (default: %(default)s)")
    p.add_argument("--cache-factor", type=float, default=None,
                   help="rotate weight copies totalling > this x the last-level cache (default: 4, 1 with --quick)")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run: shape {QUICK_SHAPES[0][0]}x{QUICK_SHAPES[0][1]}, M in {QUICK_M}, "
                        "few reps (overrides --shapes/--m unless given explicitly)")
    p.add_argument("--out", default="bench-results/cpu", help="output directory (default: %(default)s)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    p.add_argument("--note", default=None, help="a sentence to put at the top of RESULTS.md")
    p.add_argument("--rerender", metavar="DIR", default=None,
                   help="measure nothing: rebuild RESULTS.md and the PNG in DIR from its CSVs and run.json")
    p.add_argument("--e2e", action="store_true",
                   help="also run the end-to-end ~1B Llama decode/prefill benchmark (nybble.bench.e2e_cpu)")
    p.add_argument("--e2e-only", action="store_true", help="run only the end-to-end benchmark")
    from . import e2e_cpu
    e2e_cpu.add_arguments(p, prefix="e2e-")


def _resolve(args) -> tuple[list[tuple[int, int]], list[int], list[str]]:
    shapes_text, m_text = args.shapes, args.m
    if shapes_text is None:
        shapes_text = ",".join(f"{k}x{n}" for k, n in (QUICK_SHAPES if args.quick else SHAPES))
    if m_text is None:
        m_text = ",".join(map(str, QUICK_M if args.quick else M_VALUES))
    shapes = C.parse_shapes(shapes_text)
    ms = sorted(set(C.parse_int_list(m_text)))
    modes = C.parse_choices(args.modes, MODES, "mode")
    for k, n in shapes:
        if k % args.group:
            raise ValueError(f"shape {k}x{n}: K={k} is not a multiple of --group {args.group}")
    return shapes, ms, modes


def run_kernels(args, log=print) -> dict:
    """Run the kernel table; returns ``{"rows", "probes", "skipped", "l3_bytes", "bandwidth_gbps"}``
    (``probes``: the rows of bandwidth.csv; ``bandwidth_gbps``: the run median of the interleaved probe)."""
    shapes, ms, modes = _resolve(args)
    if args.cache_factor is None:
        args.cache_factor = 1.0 if args.quick else 4.0
    if args.quick:
        args.reps = min(args.reps, 10)
        args.cell_seconds = min(args.cell_seconds, 0.1)
    l3 = C.cpu_cache_bytes()
    gen = torch.Generator().manual_seed(0)
    threads = torch.get_num_threads()
    probe_buf = torch.rand(max(16 * l3, 256 * 2**20) // 4, generator=gen)
    probes = [dict(kind="whole_buffer", **probe_bandwidth(probe_buf))]
    p0 = probes[0]
    log(f"DRAM read probe (torch.sum over {p0['buffer_mib']:.0f} MiB, reference only): median "
        f"{p0['median_gbps_nthr']:.1f} GB/s with {threads} threads, {p0['median_gbps_1thr']:.1f} GB/s with 1; "
        f"L3 {l3 / 2**20:.0f} MiB")
    rows: list[dict] = []
    skipped: dict[str, str] = {}
    run_samples_gbps: list[float] = []
    for k, n in shapes:
        cases: list[Case] = []
        for mode in progress(modes, desc=f"build {k}x{n}"):
            copies = C.copies_for(weight_bytes_estimate(mode, k, n, args.group), l3, args.cache_factor)
            try:
                case = build_case(mode, k, n, copies, args, gen)
            except ModeUnavailable as exc:
                skipped.setdefault(mode, str(exc))
                log(f"  skipping {mode} at {k}x{n}: {exc}")
                continue
            if case.check_ok is False:
                log(f"  WARNING {mode} ({case.kernel}) at {k}x{n}: relative error {case.check_err:.2e} "
                    f"against the reference exceeds {CHECK_TOL[case.dtype]:.0e}")
            cases.append(case)
        probe = build_probe(k, n, l3, args)
        shape_rows, block_us = [], []
        for m in progress(ms, desc=f"time {k}x{n}", unit="M"):
            xs = {dt: torch.randn(m, k, generator=gen).to(dt) for dt in (torch.float32, torch.bfloat16)}
            *timings, pt = time_interleaved(cases + [probe], xs, args)
            block_us.extend(pt.samples_us)
            pm = {"kind": "interleaved", "shape": f"{k}x{n}", "m": m,
                  "time_utc": time.strftime("%H:%M:%S", time.gmtime()), "reps": pt.n,
                  "buffer_mib": probe.weight_bytes / 2**20, "copies": len(probe.copies),
                  "threads": threads, "median_gbps": C.gbps(probe.weight_bytes, pt.median_us),
                  "best_gbps": C.gbps(probe.weight_bytes, pt.min_us)}
            probes.append(pm)
            for case, t in zip(cases, timings):
                us = t.median_us
                shape_rows.append({
                    "shape": f"{k}x{n}", "k": k, "n": n, "m": m, "mode": case.mode, "kernel": case.kernel,
                    "median_us": us, "min_us": t.min_us, "p90_us": t.quantile_us(0.9), "reps": t.n,
                    "copies": len(case.copies), "weight_bytes": case.weight_bytes,
                    "weight_gbps": C.gbps(case.weight_bytes, us), "gflops": C.gflops(m, n, k, us),
                    "check_rel_err": case.check_err,
                    "probe_gbps": pm["median_gbps"], "probe_best_gbps": pm["best_gbps"],
                })
        block = {"kind": "block", "shape": f"{k}x{n}", "time_utc": time.strftime("%H:%M:%S", time.gmtime()),
                 "reps": len(block_us), "buffer_mib": probe.weight_bytes / 2**20, "copies": len(probe.copies),
                 "threads": threads, "median_gbps": C.gbps(probe.weight_bytes, statistics.median(block_us)),
                 "best_gbps": C.gbps(probe.weight_bytes, min(block_us))}
        probes.append(block)
        run_samples_gbps.extend(C.gbps(probe.weight_bytes, us) for us in block_us)
        log(f"  DRAM probe {k}x{n} (interleaved, {block['buffer_mib']:.1f} MiB x {block['copies']} buffers): "
            f"median {block['median_gbps']:.1f} GB/s, best {block['best_gbps']:.1f}")
        del cases, probe
        gc.collect()
        rows.extend(shape_rows)
    probes.append(dict(kind="whole_buffer", **probe_bandwidth(probe_buf)))
    del probe_buf
    bw = statistics.median(run_samples_gbps) if run_samples_gbps else probes[0]["median_gbps"]
    probes.append({"kind": "run", "time_utc": time.strftime("%H:%M:%S", time.gmtime()),
                   "reps": len(run_samples_gbps), "threads": threads, "median_gbps": bw,
                   "best_gbps": max(run_samples_gbps) if run_samples_gbps else None})
    add_derived(rows, bw)
    return {"rows": rows, "probes": probes, "skipped": skipped, "l3_bytes": l3, "bandwidth_gbps": bw}


def time_interleaved(cases: list[Case], xs: dict, args) -> list[C.Timing]:
    """Time every case on one M in ``args.rounds`` interleaved rounds (order alternating), so that
    a burst of load from other processes hits all modes alike; samples of the rounds are pooled.
    Round 1 warms up with 2 calls; later rounds with 1, or none for calls slower than 0.2 s."""
    rounds = max(1, args.rounds)
    per_round_min = max(1, math.ceil(args.min_reps / rounds))
    per_round_max = max(per_round_min, math.ceil(max(args.reps, args.min_reps) / rounds))
    out = [C.Timing() for _ in cases]
    for r in range(rounds):
        order = list(range(len(cases)))
        if r % 2:
            order.reverse()
        for j in order:
            case, t = cases[j], out[j]
            x = xs[case.dtype]
            warm = 2 if r == 0 else (0 if t.estimate_s > 0.2 else 1)
            t.extend(C.time_calls(lambda i: case.run(x, i), budget_s=args.cell_seconds / rounds,
                                  min_reps=per_round_min, max_reps=per_round_max, warmup=warm,
                                  start=t.next_index, estimate_s=t.estimate_s if r else None))
    return out


def add_derived(rows: list[dict], bandwidth_gbps: float) -> None:
    """Add ``pct_bw`` (weight GB/s / the row's own probe median ``probe_gbps``, timed interleaved
    with the same shape and M; rows without one, from runs before the interleaved probe, use
    ``bandwidth_gbps``), ``pct_bw_run``
    (/ ``bandwidth_gbps``, the run's probe median) and the ``x_*`` speedups (baseline time / this
    time, same shape and M), from the median times; and the same from the minimum times (``*_min``:
    the least disturbed calls, worth reading on a shared machine; %BW then against the probe's
    fastest call)."""
    for stat, suffix in (("median_us", ""), ("min_us", "_min")):
        base = {(r["shape"], r["m"], r["mode"]): r[stat] for r in rows}
        for r in rows:
            probe = r.get("probe_best_gbps" if suffix else "probe_gbps") or bandwidth_gbps
            r["pct_bw" + suffix] = 100.0 * C.gbps(r["weight_bytes"], r[stat]) / probe
            for col, mode in BASELINES.items():
                b = base.get((r["shape"], r["m"], mode))
                r[col + suffix] = None if b is None else b / r[stat]
        for r in rows:
            if not suffix:
                r["pct_bw_run"] = 100.0 * C.gbps(r["weight_bytes"], r[stat]) / bandwidth_gbps


# ---------------------------------------------------------------------------------------------
# targets (issue 3) and reports
# ---------------------------------------------------------------------------------------------

TABLE_COLUMNS = (
    C.Column("shape", "KxN"), C.Column("m", "M", "{:d}"), C.Column("mode", "mode"),
    C.Column("median_us", "median us", "{:,.1f}"), C.Column("min_us", "min us", "{:,.1f}"),
    C.Column("weight_gbps", "wGB/s", "{:.1f}"),
    C.Column("pct_bw", "%BW", "{:.0f}%"), C.Column("pct_bw_run", "%BWrun", "{:.0f}%"),
    C.Column("gflops", "GFLOP/s", "{:.1f}"),
    C.Column("x_fp32", "vs fp32", "{:.2f}x"), C.Column("x_bf16", "vs bf16", "{:.2f}x"),
    C.Column("x_int4", "vs int4", "{:.2f}x"), C.Column("reps", "reps", "{:d}"),
)
CSV_KEYS = ("shape", "k", "n", "m", "mode", "kernel", "median_us", "min_us", "p90_us", "reps", "copies",
            "weight_bytes", "weight_gbps", "pct_bw", "gflops", "x_fp32", "x_bf16", "x_int4", "check_rel_err",
            "pct_bw_min", "x_fp32_min", "x_bf16_min", "x_int4_min", "probe_gbps", "probe_best_gbps", "pct_bw_run")
PROBE_CSV_KEYS = ("kind", "shape", "m", "time_utc", "reps", "buffer_mib", "copies", "threads", "median_gbps",
                  "best_gbps", "median_gbps_nthr", "best_gbps_nthr", "median_gbps_1thr", "best_gbps_1thr")


def targets(rows: list[dict], e2e_rows: list[dict] | None = None) -> list[dict]:
    """Issue 3's targets, each with the value reached in this run from the median times (``value``;
    None when not measured) and from the minimum times (``value_min``)."""
    by = {(r["shape"], r["m"], r["mode"]): r for r in rows}
    out = []

    def add(what, r, key, goal, fmt, value=None):
        if r is not None:
            value = r[key]
            vmin = r.get(key + "_min") if key != "gflops" else C.gflops(r["m"], r["n"], r["k"], r["min_us"])
        else:
            vmin = None
        out.append({"target": what, "value": value, "value_min": vmin, "goal": goal,
                    "met": None if value is None else value >= goal, "fmt": fmt})
    for shape in ("4096x14336", "14336x4096"):
        for mode in ("nybble_a16w4_bf16", "nybble_a8w4"):
            r = by.get((shape, 1, mode))
            add(f"decode M=1 {shape} {mode}: % of DRAM bandwidth", r, "pct_bw", 85.0, "{:.0f}%")
            add(f"decode M=1 {shape} {mode}: speedup vs torch int4", r, "x_int4", 1.5, "{:.2f}x")
            add(f"decode M=1 {shape} {mode}: speedup vs torch bf16", r, "x_bf16", 5.0, "{:.2f}x")
    for shape in ("4096x4096", "4096x14336", "14336x4096"):
        r = by.get((shape, 512, "nybble_a8w4"))
        add(f"prefill M=512 {shape} nybble_a8w4: speedup vs torch fp32", r, "x_fp32", 2.0, "{:.2f}x")
        add(f"prefill M=512 {shape} nybble_a8w4: GFLOP/s", r, "gflops", 420.0, "{:.0f}")
        for mode in ("nybble_a16w4_bf16", "nybble_a16w4_fp32"):
            r = by.get((shape, 512, mode))
            add(f"prefill M=512 {shape} {mode}: speedup vs torch fp32", r, "x_fp32", 1.0, "{:.2f}x")
    if e2e_rows:
        e = {r["variant"]: r for r in e2e_rows if r.get("decode_tok_s")}
        for v in ("nybble_a16w4", "nybble_a8w4"):
            for base, goal in (("bf16", 4.0), ("torch_int4", 1.5)):
                val = (e[v]["decode_tok_s"] / e[base]["decode_tok_s"]) if v in e and base in e else None
                add(f"end to end decode tok/s {v} vs {base}", None, "", goal, "{:.2f}x", value=val)
    return out


#: (shape, M, mode, "us" or "gflops", the issue's value)
ISSUE_REFERENCE = (
    ("4096x14336", 1, "torch_fp32", "us", 11200.0), ("4096x14336", 1, "torch_bf16", "us", 8300.0),
    ("4096x14336", 1, "torch_int4", "us", 2360.0), ("14336x4096", 1, "torch_int4", "us", 8000.0),
    ("4096x14336", 512, "torch_fp32", "gflops", 210.0), ("4096x14336", 512, "torch_int4", "gflops", 100.0),
    ("4096x14336", 512, "torch_bf16", "gflops", 48.0),
)


def baseline_comparison(rows: list[dict]) -> list[tuple[str, str, str]]:
    """``(what, issue value, this run's value)`` for the issue's quoted baseline numbers (shape
    unstated for the M=512 GFLOP/s figures: compared at 4096x14336)."""
    by = {(r["shape"], r["m"], r["mode"]): r for r in rows}
    out = []
    for shape, m, mode, kind, val in ISSUE_REFERENCE:
        r = by.get((shape, m, mode))
        if r is None:
            continue
        if kind == "us":
            out.append((f"{mode} {shape} M={m}", f"{val / 1e3:.2f} ms",
                        f"{r['median_us'] / 1e3:.2f} ms (min {r['min_us'] / 1e3:.2f})"))
        else:
            best = C.gflops(m, r["n"], r["k"], r["min_us"])
            out.append((f"{mode} {shape} M={m}", f"{val:.0f} GFLOP/s", f"{r['gflops']:.0f} GFLOP/s (best {best:.0f})"))
    return out


def _probe_keys(probes: list[dict]) -> list[str]:
    """bandwidth.csv columns: the known ones first, then any other key seen (older runs)."""
    keys = [k for k in PROBE_CSV_KEYS if any(k in p for p in probes)]
    return keys + sorted({k for p in probes for k in p} - set(keys))


def probe_summary(res: dict, markdown: bool = False) -> list[str]:
    """Lines describing the DRAM probes of a run (text, or rows of the markdown facts table)."""
    probes = res["probes"]
    blocks = [p for p in probes if p.get("kind") == "block"]
    whole = [p for p in probes if p.get("kind", "whole_buffer") == "whole_buffer"]
    out = []
    if blocks:
        blk = ", ".join(f"{p['shape']}: {p['median_gbps']:.1f}" for p in blocks)
        b0 = blocks[0]
        what = (f"torch.sum over fp32 buffers of the int4 weight's size ({b0['buffer_mib']:.1f} MiB x "
                f"{b0['copies']} for {b0['shape']}), rotated like the weights, {b0['threads']} threads, "
                "timed as one more mode interleaved with the kernels at every M")
        if markdown:
            out.append(f"| DRAM read bandwidth (denominator of %BW) | the median of the probe interleaved with the "
                       f"same shape and M (per M in each shape's section below; pooled per shape: {blk} GB/s) "
                       f"({what}) |")
            out.append(f"| DRAM read bandwidth, run median (denominator of %BWrun) | {res['bandwidth_gbps']:.1f} GB/s |")
        else:
            out.append(f"DRAM read bandwidth for %BW: the interleaved probe of the same shape and M "
                       f"(pooled per shape: {blk} GB/s); run median {res['bandwidth_gbps']:.1f} GB/s")
    elif markdown:
        out.append(f"| DRAM read bandwidth (used for %BW) | {res['bandwidth_gbps']:.1f} GB/s: the best median of "
                   f"{len(whole)} probes over one large buffer |")
    else:
        out.append(f"DRAM read bandwidth used for %BW: {res['bandwidth_gbps']:.1f} GB/s")
    if whole:
        txt = ", ".join(f"{p.get('time_utc', '?')}: {p['median_gbps_nthr']:.1f} / {p['median_gbps_1thr']:.1f}"
                        for p in whole if p.get("median_gbps_nthr") is not None)
        mib = whole[0].get("buffer_mib") or 0
        if markdown:
            out.append(f"| whole-buffer probes (torch.sum over {mib:.0f} MiB; UTC: GB/s with N threads / 1 thread) "
                       f"| {txt} |")
        else:
            out.append(f"whole-buffer probes (reference, UTC: N threads / 1 thread GB/s): {txt}")
    return out


def print_report(res: dict, log=print) -> None:
    rows = res["rows"]
    for shape in dict.fromkeys(r["shape"] for r in rows):
        log("")
        log(C.text_table([r for r in rows if r["shape"] == shape], TABLE_COLUMNS))
    log("")
    kernels = sorted({(r["mode"], r["kernel"]) for r in rows})
    log("kernels: " + "; ".join(f"{m} = {k}" for m, k in kernels))
    for line in probe_summary(res):
        log(line)
    over = [r for r in res["rows"] if r["pct_bw"] > 100 and r["m"] <= 16]
    if over:
        log(f"note: {len(over)} small-M cells exceed 100% of the probed bandwidth: the probe was slowed by "
            "other load, or those weights partly stayed in cache")
    for mode, why in res["skipped"].items():
        log(f"skipped {mode}: {why}")


def write_outputs(res: dict, e2e: dict | None, args, env: dict, command: str, out: Path, log=print) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rows = res["rows"] if res else []
    if rows:
        C.write_csv(rows, out / "kernels.csv", CSV_KEYS)
        C.write_csv(res["probes"], out / "bandwidth.csv", _probe_keys(res["probes"]))
        if not args.no_plot:
            plot_rows = [r for r in rows if r["mode"].startswith("nybble_") or r["mode"] == "torch_int4"]
            if plot_rows:
                _plot(plot_rows, out / "speedup.png")
    if e2e and e2e.get("rows"):
        from . import e2e_cpu
        C.write_csv(e2e["rows"], out / "e2e.csv", e2e_cpu.CSV_KEYS)
    (out / "RESULTS.md").write_text(results_markdown(res, e2e, args, env, command))
    meta = {"env": env, "command": command, "cache_factor": args.cache_factor, "group": args.group,
            "zero_point": args.zero_point, "note": getattr(args, "note", None)}
    if res:
        meta.update(l3_bytes=res["l3_bytes"], skipped=res["skipped"])
    if e2e:
        meta.update(e2e_opts=e2e["opts"], e2e_threads=e2e["threads"])
    (out / "run.json").write_text(json.dumps(meta, indent=1) + "\n")
    log(f"wrote {out}/ (RESULTS.md, run.json" + (", kernels.csv, bandwidth.csv, speedup.png" if rows else "")
        + (", e2e.csv" if e2e and e2e.get("rows") else "") + ")")


def _plot(rows: list[dict], path: Path) -> None:
    """Speedup of the nybble modes vs torch bf16 linear, fp32 linear and torch int4, against M."""
    C.plot_grid([dict(r, panel=f"K x N = {r['shape']}") for r in rows], path, x="m", panel="panel",
                series="mode", ys=(("x_bf16", "vs torch bf16 linear"), ("x_fp32", "vs torch fp32 linear"),
                                   ("x_int4", "vs torch int4 (_weight_int4pack_mm_for_cpu)")),
                title="nybble int4 CPU kernels: speedup vs M (weights from DRAM)",
                xlabel="M (activation rows)", ylabel="speedup (baseline time / time)", logy=True)


def results_markdown(res: dict | None, e2e: dict | None, args, env: dict, command: str) -> str:
    lines = ["# nybble CPU benchmark", "",
             f"Command: `{command}`", "",
             "| fact | value |", "|---|---|"]
    for k, v in env.items():
        lines.append(f"| {k} | {v} |")
    if res:
        lines.append(f"| L3 (last-level cache) | {res['l3_bytes'] / 2**20:.0f} MiB |")
        for line in probe_summary(res, markdown=True):
            lines.append(line)
        lines.append(f"| weight rotation | copies totalling > {args.cache_factor:g} x L3 per mode |")
        lines.append(f"| int4 weights | group {args.group}, nybble zero point `{args.zero_point}` |")
    lines.append("")
    if getattr(args, "note", None):
        lines += [args.note, ""]
    loads = [env.get("load_average", ""), env.get("load_average_end", "")]
    first = [float(x.split()[0]) for x in loads if x]
    if first and max(first) > 0.5:
        lines += [f"The machine was shared while this ran: 1-minute load average {loads[0].split()[0]} at the start "
                  f"and {loads[1].split()[0] if loads[1] else '?'} at the end on {env.get('logical_cpus', '?')} "
                  "logical CPUs, so other processes competed for the cores and timings are noisy.", ""]
    tg = targets(res["rows"] if res else [], e2e["rows"] if e2e else None)
    if any(t["value"] is not None for t in tg):
        lines += ["## Targets (issue 3)", "",
                  "`reached`: from the median times (the verdict); `from min times`: the same ratio from each "
                  "cell's fastest call, i.e. with the least interference from other processes.", "",
                  "| target | goal | reached | met | from min times |", "|---|---:|---:|---|---:|"]
        for t in tg:
            if t["value"] is None:
                continue
            vmin = "-" if t["value_min"] is None else t["fmt"].format(t["value_min"])
            lines.append(f"| {t['target']} | {t['fmt'].format(t['goal'])} | {t['fmt'].format(t['value'])} | "
                         f"{'yes' if t['met'] else 'NO'} | {vmin} |")
        lines.append("")
    if res and res["rows"]:
        ref = baseline_comparison(res["rows"])
        if ref:
            lines += ["## Baselines against the issue's reference measurements", "",
                      "The issue quotes numbers measured earlier on this machine; large gaps mean this run's "
                      "machine state (other load) differed.", "",
                      "| baseline | issue | this run: median (fastest call) |", "|---|---:|---:|"]
            lines += [f"| {what} | {issue} | {now} |" for what, issue, now in ref]
            lines.append("")
    if res and res["rows"]:
        rows = res["rows"]
        kernels = sorted({(r["mode"], r["kernel"]) for r in rows})
        lines += ["## Linear layers", "",
                  "Modes: " + "; ".join(f"`{m}` = {k}" for m, k in kernels) + ".", "",
                  "`wGB/s`: bytes of the weight as the mode stores it (int4 codes + scales + zero points for "
                  "int4 modes, dense matrix for F.linear) / median time. `%BW`: that / the median of the DRAM "
                  "probe interleaved with the same shape and M; `%BWrun`: that / the run's probe median. "
                  "`GFLOP/s`: 2*M*N*K / time. `vs X`: time of torch X / time of this "
                  "mode (same shape and M, same run). `min us`: the fastest call of the cell. `kernels.csv` "
                  "also has %BW and speedups computed from the fastest calls (`*_min`).", "",
                  "![speedup vs M](speedup.png)", ""]
        for shape in dict.fromkeys(r["shape"] for r in rows):
            lines += [f"### K x N = {shape}", ""]
            per_m = [p for p in res["probes"] if p.get("kind") == "interleaved" and p.get("shape") == shape]
            if per_m:
                blk = [p for p in res["probes"] if p.get("kind") == "block" and p.get("shape") == shape]
                lines += [f"DRAM probe interleaved with this shape's timings (the `%BW` denominator of each M): "
                          + ", ".join(f"M={p['m']}: {p['median_gbps']:.1f}" for p in per_m) + " GB/s"
                          + (f"; pooled median {blk[0]['median_gbps']:.1f} GB/s." if blk else "."), ""]
            lines += [C.markdown_table([r for r in rows if r["shape"] == shape], TABLE_COLUMNS), ""]
        over = [r for r in rows if r["pct_bw"] > 100 and r["m"] <= 16]
        if over:
            lines += [f"Note: {len(over)} small-M cells exceed 100% of the probed DRAM bandwidth "
                      f"({', '.join(sorted({r['mode'] + ' ' + r['shape'] for r in over}))}): the probe was "
                      "slowed by other load on the shared machine, or those weights partly stayed in cache.", ""]
        bad = [r for r in rows if r.get("check_rel_err") is not None and r["m"] == rows[0]["m"]
               and r["check_rel_err"] > CHECK_TOL.get(torch.float32 if "fp32" in r["mode"] else torch.bfloat16)]
        lines.append("Sanity check (each mode's output vs the reference arithmetic, 3 rows): "
                     + ("all within tolerance." if not bad else
                        "FAILED for " + ", ".join(f"{r['mode']} {r['shape']} ({r['check_rel_err']:.2e})" for r in bad)))
        for mode, why in res["skipped"].items():
            lines.append(f"\nSkipped `{mode}`: {why}")
        lines.append("")
    if e2e and e2e.get("rows"):
        from . import e2e_cpu
        lines += ["## End to end", "", e2e_cpu.describe(e2e), "",
                  C.markdown_table(e2e["rows"], e2e_cpu.TABLE_COLUMNS), ""]
    return "\n".join(lines)


def main(args, head: str = "nybble bench cpu") -> int:
    """Run the benchmark described by ``args`` (from :func:`add_arguments`); returns an exit code.
    ``head``: how the benchmark was invoked, for the command line recorded in RESULTS.md."""
    if args.rerender:
        return rerender(args, Path(args.rerender))
    command = command_line(args, head)
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    env = C.environment()
    print(f"nybble bench cpu: {env['cpu']}, {env['torch_threads']} threads, torch {env['torch']}, "
          f"load average {env.get('load_average', '?')}", flush=True)
    if os.getloadavg()[0] > 0.5:
        print(f"note: the machine is busy (1-minute load average {os.getloadavg()[0]:.1f} before starting): "
              "timings will be noisy", flush=True)
    res = None
    with torch.inference_mode():
        if not args.e2e_only:
            res = run_kernels(args, log=lambda s: print(s, flush=True))
            print_report(res)
    e2e = None
    if res and (args.e2e or args.e2e_only):
        write_outputs(res, None, args, env, command, Path(args.out))  # kept if the e2e part fails
    if args.e2e or args.e2e_only:
        from . import e2e_cpu
        e2e = e2e_cpu.run_all(args, prefix="e2e_", log=lambda s: print(s, flush=True))
        print("")
        print(C.text_table(e2e["rows"], e2e_cpu.TABLE_COLUMNS))
    env["load_average_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    if res:
        print("")
        for t in targets(res["rows"], e2e["rows"] if e2e else None):
            if t["value"] is not None:
                print(f"target {t['target']}: {t['fmt'].format(t['value'])} "
                      f"(goal {t['fmt'].format(t['goal'])}) {'met' if t['met'] else 'MISSED'}")
    write_outputs(res, e2e, args, env, command, Path(args.out))
    return 0


def _read_csv(path: Path) -> list[dict]:
    """A CSV written by :func:`common.write_csv` back as dicts of int/float/str/None."""
    rows = []
    with path.open(newline="") as f:
        for rec in csv.DictReader(f):
            row = {}
            for key, v in rec.items():
                if v == "":
                    row[key] = None
                    continue
                for conv in (int, float, str):
                    try:
                        row[key] = conv(v)
                        break
                    except ValueError:
                        continue
            rows.append(row)
    return rows


def _meta_from_markdown(path: Path) -> dict:
    """The run facts of a RESULTS.md written before run.json existed (command, environment, L3)."""
    text = path.read_text()
    meta: dict = {"env": {}, "command": "", "skipped": {}}
    m = re.search(r"^Command: `(.*)`$", text, re.M)
    if m:
        meta["command"] = m.group(1)
    facts = text.split("| fact | value |", 1)[-1].split("\n\n", 1)[0]
    for key, value in re.findall(r"^\| ([a-z_0-9]+) \| (.*) \|$", facts, re.M):
        meta["env"][key] = value
    m = re.search(r"^\| L3 \(last-level cache\) \| (\d+) MiB \|$", text, re.M)
    meta["l3_bytes"] = int(m.group(1)) * 2**20 if m else C.cpu_cache_bytes()
    m = re.search(r"copies totalling > ([0-9.]+) x L3", text)
    if m:
        meta["cache_factor"] = float(m.group(1))
    return meta


def rerender(args, out: Path, log=print) -> int:
    """Rebuild RESULTS.md and the PNG in ``out`` from its kernels.csv, bandwidth.csv, e2e.csv and
    run.json (or, for older runs, the facts in its RESULTS.md); nothing is measured."""
    if not (out / "kernels.csv").exists() and not (out / "e2e.csv").exists():
        raise ValueError(f"--rerender {out}: no kernels.csv or e2e.csv there")
    meta = (json.loads((out / "run.json").read_text()) if (out / "run.json").exists()
            else _meta_from_markdown(out / "RESULTS.md"))
    res = None
    if (out / "kernels.csv").exists():
        rows = _read_csv(out / "kernels.csv")
        probes = _read_csv(out / "bandwidth.csv")
        run = [p for p in probes if p.get("kind") == "run"]
        bw = run[-1]["median_gbps"] if run else max(p["median_gbps"] for p in probes)
        add_derived(rows, bw)
        res = {"rows": rows, "probes": probes, "skipped": meta.get("skipped", {}),
               "l3_bytes": meta["l3_bytes"], "bandwidth_gbps": bw}
    e2e = None
    if (out / "e2e.csv").exists():
        from . import e2e_cpu
        e2e_rows = _read_csv(out / "e2e.csv")
        opts = meta.get("e2e_opts") or {name.replace("-", "_"): e2e_cpu._opt(args, "e2e_", name)
                                        for name in e2e_cpu.OPTIONS}
        e2e = {"rows": e2e_rows, "opts": opts,
               "threads": meta.get("e2e_threads") or next((r["threads"] for r in e2e_rows if r.get("threads")), 0)}
    args.cache_factor = meta.get("cache_factor") or args.cache_factor or 4.0
    for key in ("group", "zero_point", "note"):
        if meta.get(key) is not None:
            setattr(args, key, meta[key])
    write_outputs(res, e2e, args, meta["env"], meta["command"], out, log=log)
    return 0


def command_line(args, head: str = "nybble bench cpu") -> str:
    """The command that reproduces ``args``: ``head`` plus every flag whose value is not the default."""
    ref = argparse.ArgumentParser(add_help=False)
    add_arguments(ref)
    parts = [head]
    for action in ref._actions:
        if not action.option_strings or action.dest.startswith("_"):
            continue
        value = getattr(args, action.dest, action.default)
        if value == action.default:
            continue
        flag = action.option_strings[-1]
        parts.append(flag if isinstance(action, argparse._StoreTrueAction) else f"{flag} {shlex.quote(str(value))}")
    return " ".join(parts)


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nybble.bench.cpu", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    try:
        return main(args, "python -m nybble.bench.cpu")
    except ValueError as exc:
        print(f"nybble bench cpu: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(cli())
