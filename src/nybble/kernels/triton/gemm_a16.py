"""A16W4 large-M GEMM on bf16/fp16 tensor cores (Hopper ``wgmma`` through ``tl.dot``).

``acc[BLOCK_M, BLOCK_N] += X_tile @ dequant(W_tile)^T``: the activations are the A operand (loaded
through Triton's cp.async pipeline into shared memory), the weight tile is dequantized in registers
(``jit._dequant_a16``: packed bf16x2/f16x2 PTX, exactly the reference's ``round((q - z) * s)``) and
stored to shared memory as the B operand.  The fp32 accumulator is carried through the K loop, so
Triton keeps one ``wgmma`` in flight while the next tile is dequantized.  Output tiles are walked in
bands of ``GROUP_M`` tile rows (L2 reuse of the weight tiles).  ``SPLIT_K`` > 1 stores fp32 partials
(summed by ``jit.finish_kernel``).

Tensors (GPU layout of ``jit.py``): x (M, K) bf16/fp16, row stride ``stride_xm``, K contiguous; qw
int32 blocked (N/16, K8/32, 16, 32), A16W4 words in the paired nibble order; s (G, N); z int8 (G, N)
or unused; bias (N,) or unused; out (M, N) row stride ``stride_om`` in x's dtype, or the fp32
(SPLIT_K, M, N) workspace.
"""
from __future__ import annotations

import triton
import triton.language as tl

from .jit import _dequant_a16, _qcol, _qrow


@triton.jit
def a16w4_gemm_kernel(x_ptr, qw_ptr, s_ptr, z_ptr, b_ptr, out_ptr,
                      M, N, K, stride_xm, stride_om, stride_qn,
                      GROUP: tl.constexpr, PER_CHANNEL: tl.constexpr, HAS_ZERO: tl.constexpr,
                      HAS_BIAS: tl.constexpr, IS_BF16: tl.constexpr, EVEN_K: tl.constexpr,
                      SPLIT_K: tl.constexpr, USE_ASM: tl.constexpr, GROUP_M: tl.constexpr,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                      LN: tl.constexpr, LW: tl.constexpr):
    """y (M, N) = x (M, K) @ dequant(W).T (+ bias).  Grid: (``cdiv(M, BLOCK_M) * cdiv(N, BLOCK_N)``,
    ``SPLIT_K``).  Groups and ``BLOCK_K`` nest either way (``GROUP % BLOCK_K == 0`` or
    ``BLOCK_K % GROUP == 0``)."""
    pid = tl.program_id(0)
    pid_k = tl.program_id(1)
    tiles_m = tl.cdiv(M, BLOCK_M)
    tiles_n = tl.cdiv(N, BLOCK_N)
    per_band = GROUP_M * tiles_n
    band = pid // per_band
    first_m = band * GROUP_M
    rows = tl.minimum(tiles_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_band) % rows
    pid_n = (pid % per_band) // rows
    W: tl.constexpr = BLOCK_K // 8
    DT: tl.constexpr = tl.bfloat16 if IS_BF16 else tl.float16
    OFF: tl.constexpr = 128.0 if IS_BF16 else 1024.0
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_w = tl.arange(0, W)
    offs_k = tl.arange(0, BLOCK_K)
    mask_m = offs_m < M
    mask_n = offs_n < N
    K8 = K // 8
    k_tiles = tl.cdiv(K, BLOCK_K)
    per_split = tl.cdiv(k_tiles, SPLIT_K)
    t0 = pid_k * per_split
    t1 = tl.minimum(t0 + per_split, k_tiles)
    x_rows = x_ptr + offs_m[:, None].to(tl.int64) * stride_xm
    qw_rows = qw_ptr + _qrow(offs_n, stride_qn, LN, LW)
    if PER_CHANNEL:
        s_c = tl.load(s_ptr + offs_n, mask=mask_n, other=0.0)[:, None]
        if HAS_ZERO:
            z_c = (tl.load(z_ptr + offs_n, mask=mask_n, other=0).to(tl.float32) + OFF).to(DT)[:, None]
        else:
            z_c = tl.full([BLOCK_N, 1], 8.0 + OFF, DT)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for t in range(t0, t1):
        k0 = t * BLOCK_K
        wcol = k0 // 8 + offs_w
        kk = k0 + offs_k
        if EVEN_K:
            xt = tl.load(x_rows + kk[None, :], mask=mask_m[:, None], other=0.0)
            q = tl.load(qw_rows + _qcol(wcol, LN, LW)[None, :], mask=mask_n[:, None], other=0)
        else:
            xt = tl.load(x_rows + kk[None, :], mask=mask_m[:, None] & (kk[None, :] < K), other=0.0)
            q = tl.load(qw_rows + _qcol(wcol, LN, LW)[None, :], mask=mask_n[:, None] & (wcol[None, :] < K8), other=0)
        if PER_CHANNEL:
            s2 = s_c
            z2 = z_c
        elif GROUP >= BLOCK_K:
            gi = k0 // GROUP
            s2 = tl.load(s_ptr + gi * N + offs_n, mask=mask_n, other=0.0)[:, None]
            if HAS_ZERO:
                z2 = (tl.load(z_ptr + gi * N + offs_n, mask=mask_n, other=0).to(tl.float32) + OFF).to(DT)[:, None]
            else:
                z2 = tl.full([BLOCK_N, 1], 8.0 + OFF, DT)
        else:
            gi = (k0 + offs_w * 8) // GROUP
            sz_off = gi[None, :] * N + offs_n[:, None]
            if EVEN_K:
                sz_mask = mask_n[:, None]
            else:  # the K tail lies past the last group: scale 0 there (x is 0 there too)
                sz_mask = mask_n[:, None] & (wcol[None, :] < K8)
            s2 = tl.load(s_ptr + sz_off, mask=sz_mask, other=0.0)
            if HAS_ZERO:
                z2 = (tl.load(z_ptr + sz_off, mask=sz_mask, other=0).to(tl.float32) + OFF).to(DT)
            else:
                z2 = tl.full([BLOCK_N, W], 8.0 + OFF, DT)
        w = _dequant_a16(q, s2, z2, IS_BF16, USE_ASM)
        acc = tl.dot(xt, tl.trans(w), acc)
    out_ptrs = out_ptr + offs_m[:, None].to(tl.int64) * stride_om + offs_n[None, :]
    mask = mask_m[:, None] & mask_n[None, :]
    if SPLIT_K > 1:
        tl.store(out_ptrs + pid_k.to(tl.int64) * M * stride_om, acc, mask=mask)
    else:
        if HAS_BIAS:
            acc += tl.load(b_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
        tl.store(out_ptrs, acc.to(DT), mask=mask)
