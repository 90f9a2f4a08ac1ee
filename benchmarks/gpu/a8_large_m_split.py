"""Where A8W4's large-M time goes: the activation quantization launch vs the int8 GEMM (GPU machine).

    PYTHONPATH=src python3 benchmarks/gpu/a8_large_m_split.py [--ms 512,2048] [--out $OUT/a8_split.csv]

Per benchmark shape and M (group 128, int zero points, bf16, symmetric activations), timed like
``nybble bench gpu`` (one CUDA graph over rotated copies, median of replays), in one process:
``quantize`` (``ops.launch_quantize_act(x, perm8=True)`` alone, over rotated copies of x), ``gemm`` (the
table's int8 GEMM on codes quantized beforehand, over rotated weight copies), ``a8w4`` (the whole
``ops.launch_a8w4`` call as the benchmark times it) and cuBLAS bf16 (``F.linear``).
"""
from __future__ import annotations

import argparse
import sys

from sweep_common import rotated_copies, write_rows

SHAPES = ((4096, 4096), (4096, 14336), (14336, 4096), (8192, 28672))  # (K, N)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ms", default="512,2048")
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    import torch
    import torch.nn.functional as F
    from nybble.bench.gpu import _copies, graph_time_us
    from nybble.kernels.triton import ops
    from nybble.kernels.triton.configs import WGMMA_A8, make_key
    from sweep_a8_m1 import _prepack
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    store = ops.store_for(torch.device("cuda", 0))
    rows = []
    torch.manual_seed(0)
    with torch.no_grad():
        for k, n in SHAPES:
            p8, plain = _prepack(n, k, "a8_sym")
            r = _copies(sum(v.numel() * v.element_size() for v in p8.values()), l2)
            cp = rotated_copies(p8, r)
            wd = plain.dequantize(torch.bfloat16)
            wds = [wd] + [wd.clone() for _ in range(_copies(wd.numel() * 2, l2) - 1)]
            for m in map(int, args.ms.split(",")):
                cfg = store.get(make_key("a8w4", n, k, 128, m))
                xs = [torch.randn(m, k, device="cuda").to(torch.bfloat16) for _ in range(_copies(m * k * 2, l2))]
                x = xs[0]
                qa, sa, za = ops.launch_quantize_act(x, False, perm8=True)
                gemm = ops._wgmma_a8_gemm if cfg.block_m == WGMMA_A8 else ops._a8_gemm
                t = {
                    "quantize": graph_time_us([lambda x=x: ops.launch_quantize_act(x, False, perm8=True) for x in xs],
                                              args.reps, torch),
                    "gemm": graph_time_us([lambda q=q: gemm(qa, sa, za, q["qweight"], q["scale"], q["zero_point"],
                                                            q["wsum"], 128, False, None, torch.bfloat16, cfg)
                                           for q in cp], args.reps, torch),
                    "a8w4": graph_time_us([lambda q=q: ops.launch_a8w4(x, q["qweight"], q["scale"], q["zero_point"],
                                                                       q["wsum"], 128, False, None, None, q["locks"])
                                           for q in cp], args.reps, torch),
                    "cublas_bf16": graph_time_us([lambda w=w: F.linear(x, w) for w in wds], args.reps, torch),
                }
                for what, us in t.items():
                    rows.append({"K": k, "N": n, "M": m, "what": what, "us": round(us, 2),
                                 "config": "x".join(map(str, cfg.to_json()))})
                print(f"K={k:5d} N={n:5d} M={m:5d}: quantize {t['quantize']:7.1f} + gemm {t['gemm']:7.1f} us "
                      f"(whole call {t['a8w4']:7.1f}) | cuBLAS bf16 {t['cublas_bf16']:7.1f} us | "
                      f"gemm alone {t['cublas_bf16'] / t['gemm']:.2f}x, whole {t['cublas_bf16'] / t['a8w4']:.2f}x",
                      flush=True)
                del xs
            del cp, p8, wds, wd
            torch.cuda.empty_cache()
    if args.out:
        write_rows(args.out, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
