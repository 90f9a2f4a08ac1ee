"""Eager per-call wall time of the Triton kernels at M = 1 (issue 6, eager overhead), and where it goes.

    PYTHONPATH=src python benchmarks/gpu/eager_profile.py [--profile] [--csv FILE]     # on a CUDA machine

For each layer (4096x4096 and 1024x1024, group 128, int zero points, bf16) and activation mode
(a16, a8_sym, a8_asym), all in one process:

* ``plan``: ``TritonKernel.apply`` -- the layer's cached launch plan (``eager_plan.py``), what
  ``Int4Linear`` runs in eager mode;
* ``module``: the whole ``Int4Linear.__call__`` (nn.Module call, input checks, then ``apply``);
* ``ordinary``: the ordinary launcher path the plan replaces (``ops.launch_a16w4`` / ``launch_a8w4``:
  config lookup, FastLaunch, one allocation per scratch buffer);
* ``graph_gpu``: the GPU time of the same call replayed from a CUDA graph (so the wall times above
  can be read as CPU cost: they exceed it);
* next to them, in the same run: ``F.linear`` on the dense bf16 weight (one cuBLAS call), a bare
  1-program Triton launch through ``FastLaunch`` and through the plan's direct launcher, and
  ``torch.empty`` of the output.

Wall time: 2000 calls after a warm-up, then ``cuda.synchronize``; the best of 3 loops.  The GPU
time per call is below the wall time for these layers (checked: ``graph_gpu``), so the loop measures
the CPU side.  ``--profile`` adds a cProfile of 2000 plan calls per mode.
"""
from __future__ import annotations

import argparse
import cProfile
import csv
import io
import pstats
import sys

import torch
import torch.nn.functional as F

from nybble.kernels.base import LinearSpec
from nybble.kernels.triton import eager_plan, ops
from nybble.kernels.triton.kernel import TritonKernel
from nybble.kernels.triton.launch import direct_launcher, recording
from nybble.plain import PlainInt4Weight
from nybble.tensor import Int4Linear


def wall_us(fn, reps=2000):
    """Best of 3 loops of ``reps`` eager calls, wall us per call (the benchmark's own timer)."""
    from nybble.bench.gpu import _wall_per_call
    return _wall_per_call(fn, reps, torch)


def graph_gpu_us(fn, reps=20):
    from nybble.bench.gpu import graph_time_us
    return graph_time_us([fn], reps, torch)


def bare_launches():
    """A 1-program kernel (the split-K finish on a 1 x 64 output) launched through FastLaunch, and
    through the direct launcher with pre-built integer arguments (what a plan does per launch)."""
    ws = torch.zeros(1, 1, 64, device="cuda")
    o = torch.empty(1, 64, dtype=torch.bfloat16, device="cuda")
    ops._finish(ws, None, o)
    with recording() as recs:
        ops._finish(ws, None, o)
    rec = recs[0]
    launch, tail = direct_launcher(rec.compiled)
    args = [a.data_ptr() if isinstance(a, torch.Tensor) else a for a in rec.args]
    stream = torch._C._cuda_getCurrentRawStream
    gx, gy, gz = rec.grid

    def direct():
        launch(gx, gy, gz, stream(0), *tail, *args)

    return {"launch_fastlaunch": wall_us(lambda: ops._finish(ws, None, o)),
            "launch_direct": wall_us(direct)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--csv", default=None)
    ap.add_argument("--sizes", default="4096,1024")
    args = ap.parse_args()
    torch.manual_seed(0)
    rows = []
    with torch.no_grad():
        base = bare_launches()
        for size in (int(v) for v in args.sizes.split(",")):
            w = torch.randn(size, size, device="cuda") * 0.02
            plain = PlainInt4Weight.from_float(w, 128, "int", torch.bfloat16)
            wd = plain.dequantize(torch.bfloat16)
            x = torch.randn(1, size, device="cuda").to(torch.bfloat16)
            ref = {"F.linear": wall_us(lambda: F.linear(x, wd)),
                   "torch.empty": wall_us(lambda: torch.empty(1, size, dtype=torch.bfloat16, device="cuda")), **base}
            for name, us in ref.items():
                rows.append({"size": size, "act": "-", "path": name, "us": round(us, 2)})
            for act in ("a16", "a8_sym", "a8_asym"):
                kern = TritonKernel(LinearSpec.for_weight(plain, act))
                p = kern.prepack(plain)
                layer = Int4Linear(plain, None, act_mode=act, force_kernel="triton")
                x2 = x.reshape(-1, size)
                paths = {"plan": lambda: kern.apply(x, p, None),
                         "module": lambda: layer(x),
                         "ordinary": lambda: kern._launch(x2, p, None)}
                res = {k: wall_us(fn) for k, fn in paths.items()}
                res["graph_gpu"] = graph_gpu_us(paths["plan"])
                plan = kern._plans.plan_for(x.shape)
                launches = plan.num_launches if plan is not None else 0
                err = (kern.apply(x, p, None).float() - kern._launch(x2, p, None).float()).abs().max().item()
                for k, us in res.items():
                    rows.append({"size": size, "act": act, "path": k, "us": round(us, 2), "launches": launches,
                                 "plan_vs_ordinary_maxdiff": err})
                print(f"{size}x{size} {act:8s} plan {res['plan']:6.1f} us  module {res['module']:6.1f} us  "
                      f"ordinary {res['ordinary']:6.1f} us  graph GPU {res['graph_gpu']:5.1f} us  "
                      f"({launches} launch{'es' if launches != 1 else ''}; plan vs ordinary max diff {err:g})",
                      flush=True)
                if args.profile:
                    prof = cProfile.Profile()
                    prof.enable()
                    for _ in range(2000):
                        kern.apply(x, p, None)
                    torch.cuda.synchronize()
                    prof.disable()
                    s = io.StringIO()
                    pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(12)
                    print(s.getvalue(), flush=True)
            print(f"{size}x{size} same run: " + ", ".join(f"{k} {v:.1f} us" for k, v in ref.items()), flush=True)
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            wr = csv.DictWriter(f, fieldnames=["size", "act", "path", "us", "launches", "plan_vs_ordinary_maxdiff"])
            wr.writeheader()
            wr.writerows(rows)
    print(f"(plans keep <= {eager_plan.PERSIST_BYTES} B of scratch per layer)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
