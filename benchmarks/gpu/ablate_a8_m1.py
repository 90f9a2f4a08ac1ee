"""Where the A8W4 M = 1 mma GEMV loses time against A16W4 (GPU machine; twelfth session).

    PYTHONPATH=src:benchmarks/gpu python3 benchmarks/gpu/ablate_a8_m1.py --out $OUT/ablate.csv \
        [--shapes 4096x4096,14336x4096] [--cases 't8@0,t8|256@0,2:128:256:8:8:1@0']

The ablations (``@1`` .. ``@3`` and the other ``ops._ABL`` bits) need the experimental build the twelfth
session measured them on: ``git checkout f0eaf74 -- src && git apply
benchmarks/gpu/sweeps/twelfth/ablation_build.patch`` (the shipped kernels have no ``_ABL`` switch; on
them only ``@0`` cases run: configs and flags, e.g. ``t8|256``).

Per shape (K x N, group 128, int zero points, bf16, M = 1), timed like ``nybble bench gpu`` (one CUDA
graph over rotated weight copies, median of replays), all in one process:

* A16W4 with its table config, and the same config with ``FOLD`` (fp32 per-group zero point / scale,
  the inner loop the A8 mode uses);
* A8W4 (symmetric, or with ``--asym`` asymmetric) with its table config, fused quantization (``ablation 0``), and with parts of the
  fused prologue removed through ``ops._ABL`` (results wrong on purpose, timing only): 1 no prologue
  (x read as if it held the codes), 2 the row's scale only (no codes written, no second barrier),
  3 the codes written with a fixed scale (no sweep of the row for its maximum);
* every candidate of ``extra`` configs (``--cfgs``) in A8 mode, checked against the reference.
"""
from __future__ import annotations

import argparse
import sys

from sweep_common import rotated_copies, write_rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--shapes", default="4096x4096,14336x4096")
    ap.add_argument("--asym", action="store_true", help="asymmetric activations (default symmetric)")
    ap.add_argument("--cases", default="t8@0,t8@1,t8@2,t8@3",
                    help="A8 cases 'CFG@ABL,...': CFG t8 / t16 (the shape's A8 / A16 table config) or "
                         "'b_m:b_n:b_k:split:warps:stages', optionally '|flags' (or-ed into num_stages); ABL the "
                         "value of ops._ABL (bits 0-1 ablation 1-3, bit 2 private code rows, bit 3 the ZSUB loop, "
                         "bit 4 QB capped at 32 values per thread)")
    args = ap.parse_args()
    import torch
    from nybble.bench.gpu import _copies, graph_time_us
    from nybble.kernels import reference  # noqa: F401
    from nybble.kernels.triton import ops
    from nybble.kernels.triton.configs import TileConfig, make_key
    from sweep_a8_m1 import _a8 as a8, _prepack
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    store = ops.store_for(torch.device("cuda", 0))
    rows = []
    torch.manual_seed(0)

    def a16(x, q, c):
        return ops.launch_a16w4(x, q["qweight"], q["scale"], q["zero_point"], 128, None, c, q["locks"])

    with torch.no_grad():
        for shape in args.shapes.split(","):
            k, n = map(int, shape.split("x"))
            x = torch.randn(1, k, device="cuda").to(torch.bfloat16)
            p16, plain = _prepack(n, k, "a16")
            r = _copies(sum(v.numel() * v.element_size() for v in p16.values()), l2)
            c16 = store.get(make_key("a16w4", n, k, 128, 1))
            c8 = store.get(make_key("a8w4", n, k, 128, 1))
            cp = rotated_copies(p16, r)
            ref16 = torch.ops.nybble.reference_a16w4(x, plain.qdata, plain.scale, plain.zero_point, 128, None)
            for tag, c in (("a16-table", c16), ("a16-fold", TileConfig(*c16.to_json()[:5], c16.num_stages | 16))):
                err = ((a16(x, p16, c).float() - ref16.float()).norm() / ref16.float().norm()).item()
                us = graph_time_us([lambda q=q, c=c: a16(x, q, c) for q in cp], args.reps, torch)
                rows.append({"K": k, "N": n, "kind": tag, "config": "x".join(map(str, c.to_json())),
                             "us": round(us, 2), "rel_err": f"{err:.2e}"})
                print(f"K={k} N={n} {tag:12s} {rows[-1]['config']:22s} {us:7.2f} us err {err:.1e}", flush=True)
            del cp, p16
            p8, plain = _prepack(n, k, "a8_sym")
            cp = rotated_copies(p8, r)
            ref8 = torch.ops.nybble.reference_a8w4(x, plain.qdata, plain.scale, plain.zero_point, 128, args.asym,
                                                   None)
            cands = []
            for item in args.cases.split(","):
                spec, abl = item.split("@")
                base, _, flags = spec.partition("|")
                c = {"t8": c8, "t16": c16}.get(base) or TileConfig(*map(int, base.split(":")))
                if flags:
                    c = TileConfig(*c.to_json()[:5], c.num_stages | int(flags))
                if c.block_m == 2 or abl == "0":
                    cands.append((f"a8-{base}-abl{abl}", c, int(abl)))
            for tag, c, abl in cands:
                if abl and not hasattr(ops, "_ABL"):
                    print(f"  skip {tag}: ablations need the experimental build (see the docstring)", flush=True)
                    continue
                if hasattr(ops, "_ABL"):
                    ops._ABL[0] = abl
                try:
                    err = ((a8(x, p8, c, args.asym).float() - ref8.float()).norm() / ref8.float().norm()).item()
                    us = graph_time_us([lambda q=q, c=c: a8(x, q, c, args.asym) for q in cp], args.reps, torch)
                except Exception as exc:  # noqa: BLE001
                    print(f"  skip {tag} {c}: {type(exc).__name__}: {exc}", flush=True)
                    continue
                finally:
                    if hasattr(ops, "_ABL"):
                        ops._ABL[0] = 0
                rows.append({"K": k, "N": n, "kind": tag, "config": "x".join(map(str, c.to_json())),
                             "us": round(us, 2), "rel_err": f"{err:.2e}"})
                print(f"K={k} N={n} {tag:12s} {rows[-1]['config']:22s} {us:7.2f} us err {err:.1e}", flush=True)
            del cp, p8
            torch.cuda.empty_cache()
    write_rows(args.out, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
