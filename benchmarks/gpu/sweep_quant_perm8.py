"""Launch shapes of the large-M activation quantizer (``jit.quantize_act_perm8_kernel``) on the GPU machine.

    PYTHONPATH=src:benchmarks/gpu python3 benchmarks/gpu/sweep_quant_perm8.py [--out $OUT/quant.csv]

Per K (the benchmark shapes' 4096 / 8192 / 14336) and M (512, 2048), bf16 x over rotated copies (so x comes
from HBM), CUDA-graph median per call: every (block, one pass or two sweeps, warps) candidate, each
checked bit for bit against ``ops.launch_quantize_act`` as shipped; the GB/s are (x bytes + code bytes)
per us.
"""
from __future__ import annotations

import argparse
import sys

from sweep_common import write_rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ks", default="4096,8192,14336")
    ap.add_argument("--ms", default="512,2048")
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    import torch
    import triton
    from nybble.bench.gpu import _copies, graph_time_us
    from nybble.kernels.triton import ops
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    rows = []
    for k in map(int, args.ks.split(",")):
        for m in map(int, args.ms.split(",")):
            xs = [torch.randn(m, k, device="cuda").to(torch.bfloat16) for _ in range(_copies(m * k * 2, l2))]
            want = ops.launch_quantize_act(xs[0], False, perm8=True)
            cands = []
            for one in (True, False):
                for block in (1024, 2048, 4096, 8192, 16384):
                    if one and block < k or not one and block >= k:
                        continue
                    for warps in (4, 8, 16, 32):
                        if block // (32 * warps) < 4 or block // (32 * warps) > 64:
                            continue
                        cands.append((one, block if not one else triton.next_power_of_2(k), warps))
            for one, block, warps in dict.fromkeys(cands):
                def run(x, one=one, block=block, warps=warps):
                    q = torch.empty(m, k, dtype=torch.int8, device="cuda")
                    s = torch.empty(m, dtype=torch.float32, device="cuda")
                    z = torch.empty(m, dtype=torch.int32, device="cuda")
                    ops._QUANT_PERM8((m,), (x, q.view(torch.int32), s, z, k, x.stride(0)),
                                     dict(ASYM=False, BLOCK=block, ONE_PASS=one), warps, 1)
                    return q, s, z
                got = run(xs[0])
                ok = all(torch.equal(a, b) for a, b in zip(got, want))
                us = graph_time_us([lambda x=x: run(x) for x in xs], args.reps, torch)
                gbps = m * k * 3 / us / 1e3
                rows.append({"K": k, "M": m, "one_pass": int(one), "block": block, "warps": warps,
                             "us": round(us, 2), "gbps": round(gbps), "exact": int(ok)})
                print(f"K={k:5d} M={m:5d} {'one pass' if one else 'two sweeps'} block {block:5d} warps {warps:2d}: "
                      f"{us:7.2f} us {gbps:5.0f} GB/s {'' if ok else 'DIFFERS'}", flush=True)
            del xs
            torch.cuda.empty_cache()
    if args.out:
        write_rows(args.out, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
