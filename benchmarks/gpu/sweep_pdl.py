"""Programmatic dependent launch (PDL) of the mma.sync GEMV, on and off, on the benchmark shapes.

    PYTHONPATH=src python3 benchmarks/gpu/sweep_pdl.py --out $OUT/sweep_pdl.csv     # GPU machine

Timed like ``nybble bench gpu``: R copies of the weights (more than 3x L2) called back to back in one
CUDA graph, median of replays divided by R, so each kernel follows another GEMV as in a decoder
layer.  With PDL the next kernel's programs start (and bulk-prefetch their weights into L2) while
the previous kernel's last programs finish.  A16W4 at M = 1 and 16 and A8W4 at M = 1, the configs
the ordinary path picks; % of the one-pass read floor (int4 + scales + zero points + x + y bytes
over the read bandwidth measured in the same run); results checked against the reference op.
"""
from __future__ import annotations

import argparse
import sys
from sweep_common import rotated_copies, write_rows

SHAPES = ((4096, 4096), (4096, 14336), (14336, 4096), (8192, 28672))  # (K, N)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--reps", type=int, default=30)
    args = ap.parse_args()
    import torch
    from nybble.bench.gpu import _copies, graph_time_us, measure_bandwidth
    from nybble.kernels import reference  # noqa: F401
    from nybble.kernels.base import LinearSpec
    from nybble.kernels.triton import ops
    from nybble.kernels.triton.kernel import TritonKernel
    from nybble.plain import PlainInt4Weight
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    torch.manual_seed(0)
    bw = measure_bandwidth(torch, ops, 10)["read_gbps"]
    print(f"read bandwidth {bw:.0f} GB/s", flush=True)
    rows = []
    with torch.no_grad():
        for k, n in SHAPES:
            w = torch.randn(n, k, device="cuda") * 0.02
            plain = PlainInt4Weight.from_float(w, 128, "int", torch.bfloat16)
            packs = {act: TritonKernel(LinearSpec.for_weight(plain, act)).prepack(plain) for act in ("a16", "a8_sym")}
            r = _copies(plain.nbytes(), l2)
            copies = {a: rotated_copies(p, r) for a, p in packs.items()}
            line = []
            for act, m in (("a16", 1), ("a16", 16), ("a8_sym", 1)):
                x = torch.randn(m, k, device="cuda").to(torch.bfloat16)
                if act == "a16":
                    run = lambda q: ops.launch_a16w4(x, q["qweight"], q["scale"], q["zero_point"], 128, None,  # noqa: E731
                                                     None, q["locks"])
                    ref = torch.ops.nybble.reference_a16w4(x, plain.qdata, plain.scale, plain.zero_point, 128, None)
                else:
                    run = lambda q: ops.launch_a8w4(x, q["qweight"], q["scale"], q["zero_point"], q["wsum"], 128,  # noqa: E731
                                                    False, None, None, q["locks"])
                    ref = torch.ops.nybble.reference_a8w4(x, plain.qdata, plain.scale, plain.zero_point, 128, False,
                                                          None)
                floor = (plain.nbytes() + x.numel() * 2 + m * n * 2) / bw / 1e3
                res = {}
                for pdl in (False, True):
                    ops.set_pdl(pdl)
                    y = run(packs[act])
                    err = ((y.float() - ref.float()).norm() / ref.float().norm()).item()
                    us = graph_time_us([lambda q=q: run(q) for q in copies[act]], args.reps, torch)
                    res[pdl] = us
                    rows.append({"K": k, "N": n, "M": m, "act": act, "pdl": int(pdl), "us": round(us, 2),
                                 "pct_floor": round(100 * floor / us, 1), "rel_err": f"{err:.2e}"})
                    if err > 2 ** -7:
                        print(f"  WRONG K={k} N={n} {act} M={m} pdl={pdl}: rel err {err:.3g}", flush=True)
                line.append(f"{act} M={m}: {res[False]:6.1f} -> {res[True]:6.1f} us "
                            f"({100 * floor / res[False]:.0f}% -> {100 * floor / res[True]:.0f}%)")
            ops.set_pdl(True)
            print(f"K={k:5d} N={n:5d} | " + " | ".join(line), flush=True)
            del copies, packs
            torch.cuda.empty_cache()
    write_rows(args.out, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
