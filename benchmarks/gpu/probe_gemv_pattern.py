"""Is the A16W4 M = 1 GEMV limited by its memory access pattern or by its work?  Times, per shape and
in one process (CUDA graphs over rotated weight copies, as ``nybble bench gpu``):

* ``read_once``: ``jit.read_kernel``, the benchmark's one-pass read floor of the packed bytes (best
  of its configs);
* ``pattern``: a kernel that loads exactly the weight words the mma GEMV loads, with the same grid,
  programs, warps, split-K and 16-byte loads per lane (``mma._load_w``), and only XORs them (no
  dequantization, no MMA, no scales, no x, no split-K reduction);
* ``+scales``: the same, also loading each K tile's scales and zero points as the GEMV does
  (``mma._load_s``, per group and row: 2-byte scale, 1-byte zero point, (G, N) layout);
* ``+compute``: the GEMV's whole K loop (words, scales, x, dequantization, MMAs: ``mma._tile``) with
  no epilogue (no split-K partials, no reduction, no output);
* ``gemv``: the mma GEMV (``ops.launch_a16w4``) with the same config.

    PYTHONPATH=src python3 benchmarks/gpu/probe_gemv_pattern.py [--configs KxN:CFG,...]   # GPU machine
"""
from __future__ import annotations

import argparse
import sys

import triton
import triton.language as tl

from nybble.kernels.triton.mma import _gemv_lanes, _load_s, _load_w, _tile

#: (K, N, config) — the shipped table's A16W4 M = 1 entries of the benchmark's shapes
DEFAULT = ("4096x14336:2x64x512x4x4x1,14336x4096:2x64x512x14x4x1,8192x28672:2x64x512x2x4x1,"
           "4096x4096:2x128x256x8x8x1,8192x28672:2x64x256x2x4x1")


@triton.jit
def pattern_read_kernel(qw_ptr, s_ptr, z_ptr, x_ptr, out_ptr, N, K, stride_qn, SPLIT_K, EVICT: tl.constexpr,
                        RB: tl.constexpr, NV: tl.constexpr, NW: tl.constexpr, MODE: tl.constexpr):
    """The weight loads of ``mma.mma_gemv_kernel`` (same program / warp / lane -> words mapping, same
    K slices), XOR-folded into one int32 per thread and stored (so the loads stay); ``MODE`` 1: also
    the scales / zero points (bf16, int8 zero points, groups of 128); 2: the whole K loop of the
    GEMV at M = 1 (bf16 x), its fp32 accumulators summed and stored instead of the epilogue."""
    pid0 = tl.program_id(0)
    pid_k = tl.program_id(1)
    CK: tl.constexpr = 128 * NV
    t, tid, lane, warp, g, c, K8P, per_split, t0, t1, ROWS, QP = _gemv_lanes(qw_ptr, N, K, stride_qn, SPLIT_K, pid0,
                                                                             pid_k, NW, RB, NV)
    acc = tl.zeros([NW * 32], dtype=tl.int32)
    zero = tl.zeros([NW * 32], dtype=tl.float32)
    facc = ()
    for i in tl.static_range(RB * 4):
        facc = facc + (zero,)
    magic = tl.full([NW * 32], 0x43004300, tl.int32)
    XP = (x_ptr + g * 0,)
    for it in range(t0, t1):
        W = _load_w(QP, it, c, K8P, EVICT, RB, NV)
        if MODE == 0:
            for i in tl.static_range(NV * RB * 8):
                acc = acc ^ W[i]
        else:
            S = _load_s(s_ptr, z_ptr, it, c, ROWS, N, K, True, True, 128, RB, NV, False)
            if MODE == 1:
                for i in tl.static_range(NV * RB * 8):
                    acc = acc ^ W[i]
                for i in tl.static_range(NV * RB * 4):
                    acc = acc ^ S[i]
            else:
                facc = _tile(W, S, facc, XP, it * CK, c, K, magic, True, 1, RB, NV, False)
    if MODE == 2:
        tot = zero
        for i in tl.static_range(RB * 4):
            tot += facc[i]
        acc = tot.to(tl.int32, bitcast=True)
    tl.store(out_ptr + (pid0 * SPLIT_K + pid_k) * (NW * 32) + t, acc)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", default=DEFAULT)
    ap.add_argument("--reps", type=int, default=30)
    args = ap.parse_args()
    import torch
    from nybble.bench.gpu import _copies, graph_time_us, read_once_us
    from nybble.kernels.base import LinearSpec
    from nybble.kernels.triton import ops
    from nybble.kernels.triton.configs import TileConfig, mma_k_warps, mma_row_blocks, mma_v_blocks
    from nybble.kernels.triton.kernel import TritonKernel
    from nybble.plain import PlainInt4Weight
    from sweep_common import rotated_copies
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    torch.manual_seed(0)
    for item in args.configs.split(","):
        shape, text = item.split(":")
        k, n = map(int, shape.split("x"))
        cfg = TileConfig(*map(int, text.split("x")))
        if mma_k_warps(cfg) > 1:  # pattern_read_kernel maps one warp per row group
            raise SystemExit(f"{text}: configs with K warps (flag bits 12-13) are not probed")
        plain = PlainInt4Weight.from_float(torch.randn(n, k, device="cuda") * 0.02, 128, "int", torch.bfloat16)
        p = TritonKernel(LinearSpec.for_weight(plain, "a16")).prepack(plain)
        wbytes = sum(p[kk].numel() * p[kk].element_size() for kk in ("qweight", "scale", "zero_point"))
        floor, _ = read_once_us(torch, wbytes, l2, args.reps)
        cps = rotated_copies(p, _copies(sum(v.numel() * v.element_size() for v in p.values()), l2))
        x = torch.randn(1, k, device="cuda").to(torch.bfloat16)
        nw, rb, nv = cfg.num_warps, mma_row_blocks(cfg), mma_v_blocks(cfg)
        tiles = triton.cdiv(triton.cdiv(n, 16), nw * rb)
        out = torch.empty(tiles * cfg.split_k * nw * 32, dtype=torch.int32, device="cuda")

        def pattern(q, mode):
            pattern_read_kernel[(tiles, cfg.split_k)](q["qweight"], q["scale"], q["zero_point"], x, out, n, k,
                                                      q["qweight"].stride(0), cfg.split_k,
                                                      EVICT=bool(cfg.num_stages & 1), RB=rb, NV=nv, NW=nw, MODE=mode,
                                                      num_warps=nw, num_stages=1)

        t_pat = graph_time_us([lambda q=q: pattern(q, 0) for q in cps], args.reps, torch)
        t_sc = graph_time_us([lambda q=q: pattern(q, 1) for q in cps], args.reps, torch)
        t_loop = graph_time_us([lambda q=q: pattern(q, 2) for q in cps], args.reps, torch)
        t_gemv = graph_time_us([lambda q=q: ops.launch_a16w4(x, q["qweight"], q["scale"], q["zero_point"], 128, None,
                                                             cfg, q["locks"]) for q in cps], args.reps, torch)
        qbytes = p["qweight"].numel() * 4
        print(f"K={k:5d} N={n:5d} {text}: read_once {floor:6.1f} us | pattern {t_pat:6.1f} us "
              f"({100 * floor / t_pat:.0f}% of read_once; weight words only, {qbytes / t_pat / 1e3:.0f} GB/s) | "
              f"+scales {t_sc:6.1f} us ({100 * floor / t_sc:.0f}%) | +compute {t_loop:6.1f} us "
              f"({100 * floor / t_loop:.0f}%) | gemv {t_gemv:6.1f} us ({100 * floor / t_gemv:.0f}%)", flush=True)
        del cps, p
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
