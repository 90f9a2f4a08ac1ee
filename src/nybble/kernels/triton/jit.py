"""The Triton kernels (imported only when the registry considers CUDA kernels).

GPU weight layout (made by ``TritonKernel.prepack``; see ``kernel.py``):

* ``qweight`` int32 ``(N, K/8)``, row-major: row n's codes run along K, 8 per word, least
  significant nibble first (the plain packing: each row is K-contiguous, so a tile of
  ``[BLOCK_N, BLOCK_K/8]`` words is read with 16-byte vector loads, 4 words per thread).
* ``scale`` ``(G, N)`` in the activation dtype (transposed: a tile's ``BLOCK_N`` scales of one group
  are contiguous); ``zero`` int8 ``(G, N)`` (``int`` domain only); A8W4 also ``wsum`` int32 ``(G, N)``
  = sum over the group of ``(q - z)``, for the asymmetric-activation compensation.

All matrix kernels compute the transposed product ``acc[BLOCK_N, BLOCK_M] = W_tile @ X_tile^T``
("swap AB"): the dequantized weight tile is the left operand (kept in registers), so small M only
needs a narrow right operand (BLOCK_M = 16) and one kernel serves decode and prefill.  Split-K
programs add fp32 partials into an fp32 workspace with atomics.
"""
from __future__ import annotations

import os

import triton
import triton.language as tl

try:
    from triton.language.extra import libdevice
except ImportError:  # older layouts of triton
    from triton.language.extra.cuda import libdevice

if os.environ.get("TRITON_INTERPRET") == "1":  # the CPU interpreter (tests of the logic) has no libdevice
    @triton.jit
    def _rint(v):
        """Round half to even for |v| < 2**22: adding 1.5 * 2**23 leaves no fraction bits."""
        return (v + 12582912.0) - 12582912.0
else:
    @triton.jit
    def _rint(v):
        return libdevice.rint(v)


@triton.jit
def _dequant_a16(q, s3, z3, IS_BF16: tl.constexpr):
    """q int32 [BN, W] (8 codes per word) -> weights [BN, W, 8] in bf16/fp16, exactly
    ``round((q - z) * s)`` as the reference computes it in fp32 (the product of a 16-bit float and
    a 5-bit integer is exact in fp32, so one rounding either way).  ``z3`` holds ``OFF + z``."""
    shifts = tl.arange(0, 8) * 4
    nib = (q[:, :, None] >> shifts[None, None, :]) & 0xF
    if IS_BF16:
        # 0x4300 | q is the bf16 number 128 + q (exact): no int->float conversion instruction
        v = (nib | 0x4300).to(tl.int16).to(tl.bfloat16, bitcast=True)
    else:
        v = (nib | 0x6400).to(tl.int16).to(tl.float16, bitcast=True)  # 1024 + q
    return (v - z3) * s3


@triton.jit
def a16w4_kernel(x_ptr, qw_ptr, s_ptr, z_ptr, b_ptr, out_ptr,
                 M, N, K, stride_xm, stride_om,
                 GROUP: tl.constexpr, PER_CHANNEL: tl.constexpr, HAS_ZERO: tl.constexpr,
                 HAS_BIAS: tl.constexpr, IS_BF16: tl.constexpr, EVEN_K: tl.constexpr,
                 ATOMIC: tl.constexpr, SPLIT_K: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """y (M, N) = x (M, K) @ dequant(W).T (+ bias).

    x: bf16/fp16 (M, K), row stride ``stride_xm``, K contiguous.  qw/s/z: the GPU layout above.
    out: (M, N) row stride ``stride_om``; in x's dtype, or fp32 workspace when ``ATOMIC``
    (split-K partials added atomically; bias then added by the caller).
    """
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    pid_k = tl.program_id(2)
    W: tl.constexpr = BLOCK_K // 8
    DT: tl.constexpr = tl.bfloat16 if IS_BF16 else tl.float16
    OFF: tl.constexpr = 128.0 if IS_BF16 else 1024.0
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_w = tl.arange(0, W)
    offs_k = tl.arange(0, BLOCK_K)
    mask_n = offs_n < N
    mask_m = offs_m < M
    K8 = K // 8
    k_tiles = tl.cdiv(K, BLOCK_K)
    per_split = tl.cdiv(k_tiles, SPLIT_K)
    t0 = pid_k * per_split
    t1 = tl.minimum(t0 + per_split, k_tiles)
    qw_rows = qw_ptr + offs_n[:, None].to(tl.int64) * K8
    x_rows = x_ptr + offs_m[:, None].to(tl.int64) * stride_xm
    if PER_CHANNEL:
        s_c = tl.load(s_ptr + offs_n, mask=mask_n, other=0.0)
        if HAS_ZERO:
            z_c = (tl.load(z_ptr + offs_n, mask=mask_n, other=0).to(tl.float32) + OFF).to(DT)
        else:
            z_c = tl.full([BLOCK_N], 8.0 + OFF, DT)
    acc = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
    for t in range(t0, t1):
        k0 = t * BLOCK_K
        wcol = k0 // 8 + offs_w
        kk = k0 + offs_k
        if EVEN_K:
            q = tl.load(qw_rows + wcol[None, :], mask=mask_n[:, None], other=0)
            xt = tl.load(x_rows + kk[None, :], mask=mask_m[:, None], other=0.0)
        else:
            q = tl.load(qw_rows + wcol[None, :], mask=mask_n[:, None] & (wcol[None, :] < K8), other=0)
            xt = tl.load(x_rows + kk[None, :], mask=mask_m[:, None] & (kk[None, :] < K), other=0.0)
        if PER_CHANNEL:
            s3 = s_c[:, None, None]
            z3 = z_c[:, None, None]
        elif GROUP >= BLOCK_K:
            gi = k0 // GROUP
            s_t = tl.load(s_ptr + gi * N + offs_n, mask=mask_n, other=0.0)
            s3 = s_t[:, None, None]
            if HAS_ZERO:
                z_t = (tl.load(z_ptr + gi * N + offs_n, mask=mask_n, other=0).to(tl.float32) + OFF).to(DT)
                z3 = z_t[:, None, None]
            else:
                z3 = 8.0 + OFF
        else:
            gi = (k0 + offs_w * 8) // GROUP
            sz_off = gi[None, :] * N + offs_n[:, None]
            if EVEN_K:
                sz_mask = mask_n[:, None]
            else:  # the K tail lies past the last group: scale 0 there (x is 0 there too)
                sz_mask = mask_n[:, None] & (wcol[None, :] < K8)
            s_t = tl.load(s_ptr + sz_off, mask=sz_mask, other=0.0)
            s3 = s_t[:, :, None]
            if HAS_ZERO:
                z_t = (tl.load(z_ptr + sz_off, mask=sz_mask, other=0).to(tl.float32) + OFF).to(DT)
                z3 = z_t[:, :, None]
            else:
                z3 = 8.0 + OFF
        w = _dequant_a16(q, s3, z3, IS_BF16).to(DT)
        w = tl.reshape(w, (BLOCK_N, BLOCK_K))
        acc = tl.dot(w, tl.trans(xt), acc)
    out_ptrs = out_ptr + offs_m[None, :].to(tl.int64) * stride_om + offs_n[:, None]
    mask = mask_n[:, None] & mask_m[None, :]
    if ATOMIC:
        tl.atomic_add(out_ptrs, acc, mask=mask, sem="relaxed")
    else:
        if HAS_BIAS:
            acc += tl.load(b_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[:, None]
        tl.store(out_ptrs, acc.to(DT), mask=mask)


@triton.jit
def quantize_act_kernel(x_ptr, q_ptr, s_ptr, z_ptr, K, stride_xm,
                        ASYM: tl.constexpr, BLOCK: tl.constexpr):
    """Per-row dynamic int8 quantization, bit-exact with ``primitives.quantize_activations``.

    x: (M, K) float, row stride ``stride_xm``.  Writes q int8 (M, K) contiguous -- for ``ASYM`` the
    uint8 code minus 128 (so the matmul can feed signed int8) --, s fp32 (M,), z int32 (M,) (the
    uint8 zero point 0..255, or 0).  Divisions are IEEE (div_rn), rounding is rint (half to even).
    """
    m = tl.program_id(0)
    row = x_ptr + m.to(tl.int64) * stride_xm
    qrow = q_ptr + m.to(tl.int64) * K
    offs = tl.arange(0, BLOCK)
    if ASYM:
        lo = tl.zeros([BLOCK], dtype=tl.float32)
        hi = tl.zeros([BLOCK], dtype=tl.float32)
        for k0 in range(0, K, BLOCK):
            v = tl.load(row + k0 + offs, mask=k0 + offs < K, other=0.0).to(tl.float32)
            lo = tl.minimum(lo, v)
            hi = tl.maximum(hi, v)
        lo_r = tl.min(lo, axis=0)
        hi_r = tl.max(hi, axis=0)
        s = tl.math.div_rn(hi_r - lo_r, 255.0)
        s = tl.where(s == 0.0, 1.0, s)
        z = _rint(tl.math.div_rn(-lo_r, s))
        z = tl.minimum(tl.maximum(z, 0.0), 255.0)
    else:
        amax = tl.zeros([BLOCK], dtype=tl.float32)
        for k0 in range(0, K, BLOCK):
            v = tl.load(row + k0 + offs, mask=k0 + offs < K, other=0.0).to(tl.float32)
            amax = tl.maximum(amax, tl.abs(v))
        s = tl.math.div_rn(tl.max(amax, axis=0), 127.0)
        s = tl.where(s == 0.0, 1.0, s)
        z = 0.0
    for k0 in range(0, K, BLOCK):
        msk = k0 + offs < K
        v = tl.load(row + k0 + offs, mask=msk, other=0.0).to(tl.float32)
        r = _rint(tl.math.div_rn(v, s))
        if ASYM:
            r = tl.minimum(tl.maximum(r + z, 0.0), 255.0) - 128.0
        else:
            r = tl.minimum(tl.maximum(r, -127.0), 127.0)
        tl.store(qrow + k0 + offs, r.to(tl.int8), mask=msk)
    tl.store(s_ptr + m, s)
    tl.store(z_ptr + m, z.to(tl.int32))


@triton.jit
def a8w4_kernel(qa_ptr, sa_ptr, za_ptr, qw_ptr, s_ptr, z_ptr, ws_ptr, b_ptr, out_ptr,
                M, N, K, stride_om,
                GROUP: tl.constexpr, PER_CHANNEL: tl.constexpr, HAS_ZERO: tl.constexpr,
                HAS_BIAS: tl.constexpr, ASYM: tl.constexpr, IS_BF16: tl.constexpr, EVEN_K: tl.constexpr,
                ATOMIC: tl.constexpr, SPLIT_K: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """y[m, n] = sa[m] * sum_g float(acc[m, n, g]) * sw[n, g] (+ bias), acc the exact int32 group sum
    of (qa - za) * (qw - zw) on int8 tensor cores.

    qa: int8 (M, K) contiguous from :func:`quantize_act_kernel` (signed; for ``ASYM`` the uint8 code
    minus 128, so ``qa - za = qa_s - (za - 128)`` and the group sum is ``dot(qa_s, w) - (za - 128) *
    wsum[g, n]``).  Grouped weights: ``BLOCK_K == GROUP`` (one tile per group).  Per-channel: one
    int32 sum over this program's K range (the compensation is added by split 0 only).
    """
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    pid_k = tl.program_id(2)
    W: tl.constexpr = BLOCK_K // 8
    DT: tl.constexpr = tl.bfloat16 if IS_BF16 else tl.float16
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_w = tl.arange(0, W)
    offs_k = tl.arange(0, BLOCK_K)
    shifts = tl.arange(0, 8) * 4
    mask_n = offs_n < N
    mask_m = offs_m < M
    K8 = K // 8
    k_tiles = tl.cdiv(K, BLOCK_K)
    per_split = tl.cdiv(k_tiles, SPLIT_K)
    t0 = pid_k * per_split
    t1 = tl.minimum(t0 + per_split, k_tiles)
    qw_rows = qw_ptr + offs_n[:, None].to(tl.int64) * K8
    a_rows = qa_ptr + offs_m[:, None].to(tl.int64) * K
    if ASYM:
        za_s = tl.load(za_ptr + offs_m, mask=mask_m, other=128) - 128
    if PER_CHANNEL:
        if HAS_ZERO:
            z_c = tl.load(z_ptr + offs_n, mask=mask_n, other=0).to(tl.int32)
        else:
            z_c = tl.full([BLOCK_N], 8, tl.int32)
        acc_i = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.int32)
        for t in range(t0, t1):
            k0 = t * BLOCK_K
            wcol = k0 // 8 + offs_w
            kk = k0 + offs_k
            if EVEN_K:
                q = tl.load(qw_rows + wcol[None, :], mask=mask_n[:, None], other=0)
                a = tl.load(a_rows + kk[None, :], mask=mask_m[:, None], other=0)
            else:
                q = tl.load(qw_rows + wcol[None, :], mask=mask_n[:, None] & (wcol[None, :] < K8), other=0)
                a = tl.load(a_rows + kk[None, :], mask=mask_m[:, None] & (kk[None, :] < K), other=0)
            nib = (q[:, :, None] >> shifts[None, None, :]) & 0xF
            w8 = tl.reshape((nib - z_c[:, None, None]).to(tl.int8), (BLOCK_N, BLOCK_K))
            acc_i = tl.dot(w8, tl.trans(a), acc_i, out_dtype=tl.int32)
        if ASYM:
            wsum = tl.load(ws_ptr + offs_n, mask=mask_n, other=0)
            first = (pid_k == 0).to(tl.int32)
            acc_i -= (za_s[None, :] * wsum[:, None]) * first
        sw = tl.load(s_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)
        acc = acc_i.to(tl.float32) * sw[:, None]
    else:
        acc = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
        for t in range(t0, t1):
            k0 = t * BLOCK_K
            wcol = k0 // 8 + offs_w
            kk = k0 + offs_k
            q = tl.load(qw_rows + wcol[None, :], mask=mask_n[:, None], other=0)
            a = tl.load(a_rows + kk[None, :], mask=mask_m[:, None], other=0)
            if HAS_ZERO:
                z_t = tl.load(z_ptr + t * N + offs_n, mask=mask_n, other=0).to(tl.int32)
            else:
                z_t = tl.full([BLOCK_N], 8, tl.int32)
            nib = (q[:, :, None] >> shifts[None, None, :]) & 0xF
            w8 = tl.reshape((nib - z_t[:, None, None]).to(tl.int8), (BLOCK_N, BLOCK_K))
            part = tl.dot(w8, tl.trans(a), out_dtype=tl.int32)
            if ASYM:
                wsum = tl.load(ws_ptr + t * N + offs_n, mask=mask_n, other=0)
                part -= za_s[None, :] * wsum[:, None]
            sw = tl.load(s_ptr + t * N + offs_n, mask=mask_n, other=0.0).to(tl.float32)
            acc += part.to(tl.float32) * sw[:, None]
    sa = tl.load(sa_ptr + offs_m, mask=mask_m, other=0.0)
    acc = acc * sa[None, :]
    out_ptrs = out_ptr + offs_m[None, :].to(tl.int64) * stride_om + offs_n[:, None]
    mask = mask_n[:, None] & mask_m[None, :]
    if ATOMIC:
        tl.atomic_add(out_ptrs, acc, mask=mask, sem="relaxed")
    else:
        if HAS_BIAS:
            acc += tl.load(b_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[:, None]
        tl.store(out_ptrs, acc.to(DT), mask=mask)


@triton.jit
def read_kernel(src_ptr, out_ptr, n_words, BLOCK: tl.constexpr):
    """One pass over ``n_words`` int32 words (16-byte loads), writing one int32 per program: the
    HBM read-bandwidth probe of the benchmark."""
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    offs = tl.arange(0, BLOCK)
    acc = tl.zeros([BLOCK], dtype=tl.int32)
    for start in range(pid * BLOCK, n_words, nprog * BLOCK):
        acc ^= tl.load(src_ptr + start + offs, mask=start + offs < n_words, other=0)
    tl.store(out_ptr + pid, tl.sum(acc, axis=0))
