"""The Triton kernels (imported only when the registry considers CUDA kernels).

GPU weight layout (made by ``TritonKernel.prepack``; see ``kernel.py``):

* ``qweight`` int32, blocked ``(N/LN, K8/LW, LN, LW)`` (LN = 16 rows, LW = 32 words; K8 = K/8): the
  plain words (row n's codes along K, 8 per word, least significant nibble first) in 2 KiB blocks,
  addressed through :func:`_qrow` / :func:`_qcol`; or plain 2-D ``(N, K/8)`` (LN = LW = 1).  A tile
  of ``[BLOCK_N, BLOCK_K/8]`` words is read with 16-byte vector loads (4 words per thread).
* A16W4 words hold their codes in the paired nibble order of ``layout.PAIR_K``; A8W4 words in K order.
* Dequantized tiles are built from the 8 codes of each word with :func:`_interleave8` (packed
  bf16x2/f16x2 PTX for A16, int8 for A8), which keeps 8 consecutive K values in one thread.
* ``scale`` ``(G, N)`` in the activation dtype (transposed: a tile's ``BLOCK_N`` scales of one group
  are contiguous); ``zero`` int8 ``(G, N)`` (``int`` domain only); A8W4 also ``wsum`` int32 ``(G, N)``
  = sum over the group of ``(q - z)``, for the asymmetric-activation compensation.

All matrix kernels compute the transposed product ``acc[BLOCK_N, BLOCK_M] = W_tile @ X_tile^T``
("swap AB"): the dequantized weight tile is the left operand (kept in registers), so small M only
needs a narrow right operand (BLOCK_M = 16) and one kernel serves decode and prefill.  Split-K
programs store fp32 partials into a (SPLIT_K, M, N) workspace that one small kernel sums.
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
def _qcol(wcol, LN: tl.constexpr, LW: tl.constexpr):
    """Offset of word column ``wcol`` inside a row-block of the blocked weight layout (see kernel.py)."""
    return (wcol // LW) * (LN * LW) + wcol % LW


@triton.jit
def _qrow(offs_n, stride_nb, LN: tl.constexpr, LW: tl.constexpr):
    """Offset of row ``offs_n`` (its row-block, then its row inside the block) -> ``[BN, 1]`` int64."""
    return ((offs_n // LN).to(tl.int64) * stride_nb + (offs_n % LN) * LW)[:, None]


@triton.jit
def _interleave8(n0, n1, n2, n3, n4, n5, n6, n7):
    """Eight ``[BN, W]`` tensors -> ``[BN, 8W]`` with ``out[:, 8j + i] = n_i[:, j]`` (nibble i of word
    j is element ``8j + i`` along K).  ``tl.interleave`` keeps the pairs in one thread, so the result
    has 8 consecutive K elements per thread (16-byte shared-memory stores for the matmul)."""
    a = tl.interleave(tl.interleave(n0, n4), tl.interleave(n2, n6))
    b = tl.interleave(tl.interleave(n1, n5), tl.interleave(n3, n7))
    return tl.interleave(a, b)


@triton.jit
def _nib16(q, SHIFT: tl.constexpr, s2, z2, IS_BF16: tl.constexpr):
    """Codes at bit ``SHIFT`` of the words ``q`` -> ``round((q - z) * s)`` in bf16/fp16, exactly as the
    reference (the product of a 16-bit float and a 5-bit integer is exact in fp32: one rounding)."""
    nib = (q >> SHIFT) & 0xF
    if IS_BF16:
        # 0x4300 | q is the bf16 number 128 + q (exact): no int->float conversion instruction
        v = (nib | 0x4300).to(tl.int16).to(tl.bfloat16, bitcast=True)
    else:
        v = (nib | 0x6400).to(tl.int16).to(tl.float16, bitcast=True)  # 1024 + q
    return (v - z2) * s2


def _pair_asm(shift: int, bf16: bool) -> tl.constexpr:
    magic, op = ("0x43004300", "bf16x2") if bf16 else ("0x64006400", "f16x2")
    return tl.constexpr(
        f"{{ .reg .b32 t; shr.u32 t, $2, {shift}; and.b32 t, t, 0x000F000F; or.b32 t, t, {magic}; "
        f"sub.rn.{op} t, t, $3; mul.rn.{op} t, t, $4; mov.b32 {{$0, $1}}, t; }}")


_ASM_B0, _ASM_B4, _ASM_B8, _ASM_B12 = (_pair_asm(s, True) for s in (0, 4, 8, 12))
_ASM_H0, _ASM_H4, _ASM_H8, _ASM_H12 = (_pair_asm(s, False) for s in (0, 4, 8, 12))


@triton.jit
def _pair16_asm(q, SHIFT: tl.constexpr, zz, ss, IS_BF16: tl.constexpr):
    """Packed variant of :func:`_nib16` for the codes at bits ``SHIFT`` and ``SHIFT + 16`` of ``q``:
    one and/or makes two bf16 (fp16) values ``OFF + q``, then ``sub``/``mul`` on the pair (``zz``,
    ``ss``: int32 words holding ``OFF + z`` and ``s`` twice).  Same rounding as :func:`_nib16`."""
    if IS_BF16:
        if SHIFT == 0:
            asm: tl.constexpr = _ASM_B0
        elif SHIFT == 4:
            asm: tl.constexpr = _ASM_B4
        elif SHIFT == 8:
            asm: tl.constexpr = _ASM_B8
        else:
            asm: tl.constexpr = _ASM_B12
        lo, hi = tl.inline_asm_elementwise(asm, "=h,=h,r,r,r", [q, zz, ss], dtype=(tl.bfloat16, tl.bfloat16),
                                           is_pure=True, pack=1)
    else:
        if SHIFT == 0:
            asm: tl.constexpr = _ASM_H0
        elif SHIFT == 4:
            asm: tl.constexpr = _ASM_H4
        elif SHIFT == 8:
            asm: tl.constexpr = _ASM_H8
        else:
            asm: tl.constexpr = _ASM_H12
        lo, hi = tl.inline_asm_elementwise(asm, "=h,=h,r,r,r", [q, zz, ss], dtype=(tl.float16, tl.float16),
                                           is_pure=True, pack=1)
    return lo, hi


@triton.jit
def _pack2(v):
    """A 16-bit float tensor -> int32 words holding its bits twice (for the packed asm)."""
    b = v.to(tl.int16, bitcast=True).to(tl.int32) & 0xFFFF
    return b | (b << 16)


@triton.jit
def _dequant_a16(q, s2, z2, IS_BF16: tl.constexpr, USE_ASM: tl.constexpr):
    """q int32 ``[BN, W]`` (8 codes per word in the paired order of ``layout.PAIR_K``), s2/z2
    (``OFF + z``) 16-bit floats broadcastable to ``[BN, W]`` -> the dequantized weight tile ``[BN, 8W]``
    (natural K order)."""
    if USE_ASM:
        zz = tl.broadcast_to(_pack2(z2), q.shape)
        ss = tl.broadcast_to(_pack2(s2), q.shape)
        w0, w4 = _pair16_asm(q, 0, zz, ss, IS_BF16)
        w1, w5 = _pair16_asm(q, 4, zz, ss, IS_BF16)
        w2, w6 = _pair16_asm(q, 8, zz, ss, IS_BF16)
        w3, w7 = _pair16_asm(q, 12, zz, ss, IS_BF16)
    else:
        w0 = _nib16(q, 0, s2, z2, IS_BF16)
        w1 = _nib16(q, 4, s2, z2, IS_BF16)
        w2 = _nib16(q, 8, s2, z2, IS_BF16)
        w3 = _nib16(q, 12, s2, z2, IS_BF16)
        w4 = _nib16(q, 16, s2, z2, IS_BF16)
        w5 = _nib16(q, 20, s2, z2, IS_BF16)
        w6 = _nib16(q, 24, s2, z2, IS_BF16)
        w7 = _nib16(q, 28, s2, z2, IS_BF16)
    # A16W4 words are in the paired nibble order (layout.PAIR_K): nibbles 0, 4, 1, 5, 2, 6, 3, 7 hold
    # K offsets 0..7, so this interleave gives the tile in natural K order
    return _interleave8(w0, w4, w1, w5, w2, w6, w3, w7)


@triton.jit
def _dequant_i8(q, z2):
    """q int32 ``[BN, W]``, z2 int32 broadcastable -> int8 ``[BN, 8W]`` of ``q - z`` (K order)."""
    return _interleave8(((q & 0xF) - z2).to(tl.int8), (((q >> 4) & 0xF) - z2).to(tl.int8),
                        (((q >> 8) & 0xF) - z2).to(tl.int8), (((q >> 12) & 0xF) - z2).to(tl.int8),
                        (((q >> 16) & 0xF) - z2).to(tl.int8), (((q >> 20) & 0xF) - z2).to(tl.int8),
                        (((q >> 24) & 0xF) - z2).to(tl.int8), (((q >> 28) & 0xF) - z2).to(tl.int8))


@triton.jit
def _a16_tile_sz(s_ptr, z_ptr, t, t_end, N, K8, offs_n, offs_w, mask_n, GROUP: tl.constexpr, HAS_ZERO: tl.constexpr,
                 EVEN_K: tl.constexpr, DT: tl.constexpr, OFF: tl.constexpr, BLOCK_N: tl.constexpr,
                 BLOCK_K: tl.constexpr):
    """Scales ``s2`` and ``OFF + z`` ``z2`` (16-bit floats) of K tile ``t`` of :func:`a16w4_kernel`
    (grouped weights): ``[BLOCK_N, 1]`` when the tile lies in one group, else ``[BLOCK_N, W]``; zeros
    for ``t >= t_end`` (the prefetch past the last tile)."""
    W: tl.constexpr = BLOCK_K // 8
    k0 = t * BLOCK_K
    live = t < t_end
    if GROUP >= BLOCK_K:
        gi = k0 // GROUP
        msk = mask_n & live
        s2 = tl.load(s_ptr + gi * N + offs_n, mask=msk, other=0.0)[:, None]
        if HAS_ZERO:
            z2 = (tl.load(z_ptr + gi * N + offs_n, mask=msk, other=0).to(tl.float32) + OFF).to(DT)[:, None]
        else:
            z2 = tl.full([BLOCK_N, 1], 8.0 + OFF, DT)
    else:
        wcol = k0 // 8 + offs_w
        gi = (k0 + offs_w * 8) // GROUP
        sz_off = gi[None, :] * N + offs_n[:, None]
        if EVEN_K:
            sz_mask = mask_n[:, None] & live
        else:  # the K tail lies past the last group: scale 0 there (x is 0 there too)
            sz_mask = mask_n[:, None] & (wcol[None, :] < K8) & live
        s2 = tl.load(s_ptr + sz_off, mask=sz_mask, other=0.0)
        if HAS_ZERO:
            z2 = (tl.load(z_ptr + sz_off, mask=sz_mask, other=0).to(tl.float32) + OFF).to(DT)
        else:
            z2 = tl.full([BLOCK_N, W], 8.0 + OFF, DT)
    return s2, z2


@triton.jit
def a16w4_kernel(x_ptr, qw_ptr, s_ptr, z_ptr, b_ptr, out_ptr,
                 M, N, K, stride_xm, stride_om, stride_qn,
                 GROUP: tl.constexpr, PER_CHANNEL: tl.constexpr, HAS_ZERO: tl.constexpr,
                 HAS_BIAS: tl.constexpr, IS_BF16: tl.constexpr, EVEN_K: tl.constexpr,
                 ATOMIC: tl.constexpr, SPLIT_K: tl.constexpr, USE_ASM: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                 LN: tl.constexpr, LW: tl.constexpr):
    """y (M, N) = x (M, K) @ dequant(W).T (+ bias).

    x: bf16/fp16 (M, K), row stride ``stride_xm``, K contiguous.  qw/s/z: the GPU layout above.
    out: (M, N) row stride ``stride_om``; in x's dtype, or fp32 workspace when ``ATOMIC``
    (split-K: each split stores its partial into slice ``pid_k`` of an fp32 workspace (SPLIT_K, M, N),
    summed with the bias by :func:`finish_kernel`).
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
    K8 = K // 8  # words per weight row
    k_tiles = tl.cdiv(K, BLOCK_K)
    per_split = tl.cdiv(k_tiles, SPLIT_K)
    t0 = pid_k * per_split
    t1 = tl.minimum(t0 + per_split, k_tiles)
    qw_rows = qw_ptr + _qrow(offs_n, stride_qn, LN, LW)
    x_rows = x_ptr + offs_m[:, None].to(tl.int64) * stride_xm
    if PER_CHANNEL:
        s_c = tl.load(s_ptr + offs_n, mask=mask_n, other=0.0)
        if HAS_ZERO:
            z_c = (tl.load(z_ptr + offs_n, mask=mask_n, other=0).to(tl.float32) + OFF).to(DT)
        else:
            z_c = tl.full([BLOCK_N], 8.0 + OFF, DT)
    acc = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
    if PER_CHANNEL:
        s2 = s_c[:, None]
        z2 = z_c[:, None]
    else:  # the scales / zero points of the first tile; later ones are loaded one tile ahead
        s2, z2 = _a16_tile_sz(s_ptr, z_ptr, t0, t1, N, K8, offs_n, offs_w, mask_n, GROUP, HAS_ZERO, EVEN_K, DT, OFF,
                              BLOCK_N, BLOCK_K)
    for t in range(t0, t1):
        k0 = t * BLOCK_K
        wcol = k0 // 8 + offs_w
        kk = k0 + offs_k
        if EVEN_K:
            q = tl.load(qw_rows + _qcol(wcol, LN, LW)[None, :], mask=mask_n[:, None], other=0)
            xt = tl.load(x_rows + kk[None, :], mask=mask_m[:, None], other=0.0)
        else:
            q = tl.load(qw_rows + _qcol(wcol, LN, LW)[None, :], mask=mask_n[:, None] & (wcol[None, :] < K8), other=0)
            xt = tl.load(x_rows + kk[None, :], mask=mask_m[:, None] & (kk[None, :] < K), other=0.0)
        if not PER_CHANNEL:
            s2n, z2n = _a16_tile_sz(s_ptr, z_ptr, t + 1, t1, N, K8, offs_n, offs_w, mask_n, GROUP, HAS_ZERO, EVEN_K,
                                    DT, OFF, BLOCK_N, BLOCK_K)
        w = _dequant_a16(q, s2, z2, IS_BF16, USE_ASM)
        acc = tl.dot(w, tl.trans(xt), acc)
        if not PER_CHANNEL:
            s2 = s2n
            z2 = z2n
    out_ptrs = out_ptr + offs_m[None, :].to(tl.int64) * stride_om + offs_n[:, None]
    mask = mask_n[:, None] & mask_m[None, :]
    if ATOMIC:  # split-K: this split's fp32 partial goes to its own slice of the workspace
        tl.store(out_ptrs + pid_k.to(tl.int64) * M * stride_om, acc, mask=mask)
    else:
        if HAS_BIAS:
            acc += tl.load(b_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[:, None]
        tl.store(out_ptrs, acc.to(DT), mask=mask)


@triton.jit
def row_qparams(row, offs, K, ASYM: tl.constexpr, BLOCK: tl.constexpr):
    """Per-token int8 quantization parameters of one activation row, bit-exact with
    ``primitives.quantize_activations``: returns (s, z), fp32 scalars.

    row: pointer to the row's K float values (contiguous); offs: ``tl.arange(0, BLOCK)``, the lanes
    that sweep it.  Symmetric: s = max|x| / 127 (1 where that is 0), z = 0.  ``ASYM``:
    s = (max x - min x) / 255 (1 where 0), z = clamp(rint(-min x / s), 0, 255).  Divisions are IEEE
    (div_rn), rounding is rint (half to even).
    """
    if ASYM:
        lo = tl.zeros([BLOCK], dtype=tl.float32)
        hi = tl.zeros([BLOCK], dtype=tl.float32)
        for k0 in range(0, K, BLOCK):
            v = tl.load(row + k0 + offs, mask=k0 + offs < K, other=0.0).to(tl.float32)
            lo = tl.minimum(lo, v)
            hi = tl.maximum(hi, v)
        return _qparams_asym(tl.min(lo, axis=0), tl.max(hi, axis=0))
    amax = tl.zeros([BLOCK], dtype=tl.float32)
    for k0 in range(0, K, BLOCK):
        v = tl.load(row + k0 + offs, mask=k0 + offs < K, other=0.0).to(tl.float32)
        amax = tl.maximum(amax, tl.abs(v))
    return _qparams_sym(tl.max(amax, axis=0))


@triton.jit
def _qparams_sym(amax):
    """(s, z) of a row whose largest |x| is ``amax`` (fp32 scalar): s = amax / 127 (1 where 0), z = 0."""
    s = tl.math.div_rn(amax, 127.0)
    s = tl.where(s == 0.0, 1.0, s)
    return s, s * 0.0


@triton.jit
def _qparams_asym(lo, hi):
    """(s, z) of a row with minimum ``lo`` <= 0 and maximum ``hi`` >= 0 (fp32 scalars, 0 counted in):
    s = (hi - lo) / 255 (1 where 0), z = clamp(rint(-lo / s), 0, 255)."""
    s = tl.math.div_rn(hi - lo, 255.0)
    s = tl.where(s == 0.0, 1.0, s)
    z = _rint(tl.math.div_rn(-lo, s))
    return s, tl.minimum(tl.maximum(z, 0.0), 255.0)


@triton.jit
def _act_codes(v, s, z, ASYM: tl.constexpr):
    """fp32 activations -> their int8 codes as fp32 integers: clamp(rint(v / s), -127, 127), or
    (``ASYM``) the uint8 code minus 128, clamp(rint(v / s) + z, 0, 255) - 128 (IEEE division, rint)."""
    r = _rint(tl.math.div_rn(v, s))
    if ASYM:
        return tl.minimum(tl.maximum(r + z, 0.0), 255.0) - 128.0
    return tl.minimum(tl.maximum(r, -127.0), 127.0)


@triton.jit
def _store_perm8_words(q32_row, v, r8, s, z, K, ASYM: tl.constexpr):
    """Codes of ``v`` (fp32 (R, 8): K runs ``r8`` (R, 1) of 8 values) stored as two int32 words per run
    in the PERM8 byte order (word 0: K offsets 0, 2, 4, 6; word 1: 1, 3, 5, 7) at ``q32_row`` (int32);
    runs at or past K are not stored (K % 8 == 0)."""
    j = tl.arange(0, 8)[None, :]
    c = (_act_codes(v, s, z, ASYM).to(tl.int32) & 0xFF) << ((j // 2) * 8)
    even = (j % 2) == 0
    w0 = tl.sum(tl.where(even, c, 0), axis=1)  # disjoint byte fields: the sum is their OR
    w1 = tl.sum(tl.where(even, 0, c), axis=1)
    words = tl.join(w0, w1)  # (R, 2)
    offs = r8 * 2 + tl.arange(0, 2)[None, :]
    tl.store(q32_row + offs, words, mask=r8 * 8 < K)


@triton.jit
def quantize_act_kernel(x_ptr, q_ptr, s_ptr, z_ptr, K, stride_xm,
                        ASYM: tl.constexpr, BLOCK: tl.constexpr, DEINT: tl.constexpr = False):
    """Per-row dynamic int8 quantization, bit-exact with ``primitives.quantize_activations``.

    x: (M, K) float, row stride ``stride_xm``.  Writes q int8 (M, K) contiguous -- for ``ASYM`` the
    uint8 code minus 128 (so the matmul can feed signed int8) --, s fp32 (M,), z int32 (M,) (the
    uint8 zero point 0..255, or 0).  Divisions are IEEE (div_rn), rounding is rint (half to even).
    ``DEINT``: q is written in the dp4a layout of :func:`gemv_dp4a_kernel` instead: (M, 2, K/8, 4) bytes,
    ``q[m, p, j, b]`` the code of ``x[m, 8 j + 2 b + p]`` (K % 8 == 0).
    The large-M GEMMs' order (``PERM8``) is written by :func:`quantize_act_perm8_kernel`.
    """
    m = tl.program_id(0)
    row = x_ptr + m.to(tl.int64) * stride_xm
    qrow = q_ptr + m.to(tl.int64) * K
    offs = tl.arange(0, BLOCK)
    s, z = row_qparams(row, offs, K, ASYM=ASYM, BLOCK=BLOCK)
    for k0 in range(0, K, BLOCK):
        msk = k0 + offs < K
        v = tl.load(row + k0 + offs, mask=msk, other=0.0).to(tl.float32)
        r = _act_codes(v, s, z, ASYM)
        if DEINT:
            kk = k0 + offs
            tl.store(qrow + (kk % 2) * (K // 2) + (kk // 8) * 4 + (kk % 8) // 2, r.to(tl.int8), mask=msk)
        else:
            tl.store(qrow + k0 + offs, r.to(tl.int8), mask=msk)
    tl.store(s_ptr + m, s)
    tl.store(z_ptr + m, z.to(tl.int32))


@triton.jit
def quantize_act_perm8_kernel(x_ptr, q32_ptr, s_ptr, z_ptr, K, stride_xm, ASYM: tl.constexpr,
                              BLOCK: tl.constexpr, ONE_PASS: tl.constexpr):
    """:func:`quantize_act_kernel`'s codes, bit for bit, in the order the large-M int8 GEMMs read
    (``gemm_a8.PERM8``: each run of 8 codes as K offsets 0, 2, 4, 6, 1, 3, 5, 7, the byte order in which
    :func:`gemm_a8.a8w4_gemm_kernel` unpacks a weight word), written as whole words: per run two int32 (``q32_ptr``: int32 (M, K / 4), the int8 codes
    in the PERM8 order), K % 8 == 0.  ``ONE_PASS`` (K <= BLOCK): the row is read once and its codes
    are computed from the same registers; else the scale takes one sweep and the codes a second,
    ``BLOCK`` values per step.  One program per row."""
    m = tl.program_id(0)
    row = x_ptr + m.to(tl.int64) * stride_xm
    q32_row = q32_ptr + m.to(tl.int64) * (K // 4)
    R: tl.constexpr = BLOCK // 8
    r8 = tl.arange(0, R)[:, None]
    kk = r8 * 8 + tl.arange(0, 8)[None, :]
    if ONE_PASS:
        v = tl.load(row + kk, mask=kk < K, other=0.0).to(tl.float32)
        if ASYM:  # 0 counted in, as row_qparams does
            s, z = _qparams_asym(tl.minimum(tl.min(tl.min(v, axis=1), axis=0), 0.0),
                                 tl.maximum(tl.max(tl.max(v, axis=1), axis=0), 0.0))
        else:
            s, z = _qparams_sym(tl.max(tl.max(tl.abs(v), axis=1), axis=0))
        _store_perm8_words(q32_row, v, r8, s, z, K, ASYM)
    else:
        s, z = row_qparams(row, tl.arange(0, BLOCK), K, ASYM=ASYM, BLOCK=BLOCK)
        for k0 in range(0, K, BLOCK):
            v = tl.load(row + k0 + kk, mask=k0 + kk < K, other=0.0).to(tl.float32)
            _store_perm8_words(q32_row + k0 // 4, v, r8, s, z, K - k0, ASYM)
    tl.store(s_ptr + m, s)
    tl.store(z_ptr + m, z.to(tl.int32))


@triton.jit
def a8w4_kernel(qa_ptr, sa_ptr, za_ptr, qw_ptr, s_ptr, z_ptr, ws_ptr, b_ptr, out_ptr,
                M, N, K, stride_om, stride_qn,
                GROUP: tl.constexpr, PER_CHANNEL: tl.constexpr, HAS_ZERO: tl.constexpr,
                HAS_BIAS: tl.constexpr, ASYM: tl.constexpr, IS_BF16: tl.constexpr, EVEN_K: tl.constexpr,
                ATOMIC: tl.constexpr, SPLIT_K: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                LN: tl.constexpr, LW: tl.constexpr):
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
    mask_n = offs_n < N
    mask_m = offs_m < M
    K8 = K // 8  # words per weight row
    k_tiles = tl.cdiv(K, BLOCK_K)
    per_split = tl.cdiv(k_tiles, SPLIT_K)
    t0 = pid_k * per_split
    t1 = tl.minimum(t0 + per_split, k_tiles)
    qw_rows = qw_ptr + _qrow(offs_n, stride_qn, LN, LW)
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
                q = tl.load(qw_rows + _qcol(wcol, LN, LW)[None, :], mask=mask_n[:, None], other=0)
                a = tl.load(a_rows + kk[None, :], mask=mask_m[:, None], other=0)
            else:
                q = tl.load(qw_rows + _qcol(wcol, LN, LW)[None, :], mask=mask_n[:, None] & (wcol[None, :] < K8), other=0)
                a = tl.load(a_rows + kk[None, :], mask=mask_m[:, None] & (kk[None, :] < K), other=0)
            acc_i = tl.dot(_dequant_i8(q, z_c[:, None]), tl.trans(a), acc_i, out_dtype=tl.int32)
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
            q = tl.load(qw_rows + _qcol(wcol, LN, LW)[None, :], mask=mask_n[:, None], other=0)
            a = tl.load(a_rows + kk[None, :], mask=mask_m[:, None], other=0)
            if HAS_ZERO:
                z_t = tl.load(z_ptr + t * N + offs_n, mask=mask_n, other=0).to(tl.int32)
            else:
                z_t = tl.full([BLOCK_N], 8, tl.int32)
            part = tl.dot(_dequant_i8(q, z_t[:, None]), tl.trans(a), out_dtype=tl.int32)
            if ASYM:
                wsum = tl.load(ws_ptr + t * N + offs_n, mask=mask_n, other=0)
                part -= za_s[None, :] * wsum[:, None]
            sw = tl.load(s_ptr + t * N + offs_n, mask=mask_n, other=0.0).to(tl.float32)
            # exact int32 -> fp32 for |part| < 2**22 (a group of <= 256 products of |qa| <= 128 and
            # |q - z| <= 15, plus the compensation, stays below 2**20): add the bits of 1.5 * 2**23
            # and subtract it as a float -- two full-rate ops instead of a quarter-rate I2F.
            pf = (part + 0x4B400000).to(tl.int32).to(tl.float32, bitcast=True) - 12582912.0
            acc += pf * sw[:, None]
    sa = tl.load(sa_ptr + offs_m, mask=mask_m, other=0.0)
    acc = acc * sa[None, :]
    out_ptrs = out_ptr + offs_m[None, :].to(tl.int64) * stride_om + offs_n[:, None]
    mask = mask_n[:, None] & mask_m[None, :]
    if ATOMIC:  # split-K: this split's fp32 partial goes to its own slice of the workspace
        tl.store(out_ptrs + pid_k.to(tl.int64) * M * stride_om, acc, mask=mask)
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


@triton.jit
def dequant_kernel(qw_ptr, s_ptr, z_ptr, out_ptr, N, K, stride_qn, row0,
                   GROUP: tl.constexpr, PER_CHANNEL: tl.constexpr, HAS_ZERO: tl.constexpr,
                   IS_BF16: tl.constexpr, EVEN_K: tl.constexpr, USE_ASM: tl.constexpr,
                   BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, LN: tl.constexpr, LW: tl.constexpr):
    """Rows ``row0 ..`` of the weight, dequantized: out (rows, K) bf16/fp16 contiguous, exactly the
    reference's ``round((q - z) * s)``.  Used by the large-M path (dequantize an L2-sized slice of W,
    then a cuBLAS matmul on it while it is still in L2)."""
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    W: tl.constexpr = BLOCK_K // 8
    DT: tl.constexpr = tl.bfloat16 if IS_BF16 else tl.float16
    OFF: tl.constexpr = 128.0 if IS_BF16 else 1024.0
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_n = row0 + rows
    mask_n = offs_n < N
    k0 = pid_k * BLOCK_K
    wcol = k0 // 8 + tl.arange(0, W)
    kk = k0 + tl.arange(0, BLOCK_K)
    if EVEN_K:
        q = tl.load(qw_ptr + _qrow(offs_n, stride_qn, LN, LW) + _qcol(wcol, LN, LW)[None, :], mask=mask_n[:, None],
                    other=0)
    else:
        q = tl.load(qw_ptr + _qrow(offs_n, stride_qn, LN, LW) + _qcol(wcol, LN, LW)[None, :],
                    mask=mask_n[:, None] & (wcol[None, :] < K // 8), other=0)
    if PER_CHANNEL:
        gi = 0
    else:
        gi = k0 // GROUP
    if PER_CHANNEL or GROUP >= BLOCK_K:
        s2 = tl.load(s_ptr + gi * N + offs_n, mask=mask_n, other=0.0)[:, None]
        if HAS_ZERO:
            z2 = (tl.load(z_ptr + gi * N + offs_n, mask=mask_n, other=0).to(tl.float32) + OFF).to(DT)[:, None]
        else:
            z2 = tl.full([BLOCK_N, 1], 8.0 + OFF, DT)
    else:
        gw = (k0 + tl.arange(0, W) * 8) // GROUP
        sz_off = gw[None, :] * N + offs_n[:, None]
        sz_mask = mask_n[:, None] & (wcol[None, :] < K // 8)
        s2 = tl.load(s_ptr + sz_off, mask=sz_mask, other=0.0)
        if HAS_ZERO:
            z2 = (tl.load(z_ptr + sz_off, mask=sz_mask, other=0).to(tl.float32) + OFF).to(DT)
        else:
            z2 = tl.full([BLOCK_N, W], 8.0 + OFF, DT)
    w = _dequant_a16(q, s2, z2, IS_BF16, USE_ASM)
    optr = out_ptr + rows[:, None].to(tl.int64) * K + kk[None, :]
    if EVEN_K:
        tl.store(optr, w, mask=mask_n[:, None])
    else:
        tl.store(optr, w, mask=mask_n[:, None] & (kk[None, :] < K))


@triton.jit
def finish_kernel(ws_ptr, b_ptr, out_ptr, total, N, splits, HAS_BIAS: tl.constexpr, IS_BF16: tl.constexpr,
                  BLOCK: tl.constexpr):
    """Split-K epilogue: out (M, N) bf16/fp16 = sum over ``splits`` fp32 partials ws (splits, M, N)
    (+ bias (N,)), one pass."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    msk = offs < total
    v = tl.zeros([BLOCK], dtype=tl.float32)
    for sp in range(splits):
        v += tl.load(ws_ptr + sp * total + offs, mask=msk, other=0.0)
    if HAS_BIAS:
        v += tl.load(b_ptr + offs % N, mask=msk, other=0.0).to(tl.float32)
    tl.store(out_ptr + offs, v.to(tl.bfloat16 if IS_BF16 else tl.float16), mask=msk)


@triton.jit
def gemv_kernel(x_ptr, sa_ptr, za_ptr, qw_ptr, s_ptr, z_ptr, b_ptr, out_ptr, N, K, stride_qn,
                GROUP: tl.constexpr, PER_CHANNEL: tl.constexpr, HAS_ZERO: tl.constexpr,
                HAS_BIAS: tl.constexpr, IS_BF16: tl.constexpr, A8: tl.constexpr, ASYM: tl.constexpr,
                EVEN_K: tl.constexpr, ATOMIC: tl.constexpr, SPLIT_K: tl.constexpr,
                BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, LN: tl.constexpr, LW: tl.constexpr):
    """M = 1 (decode) on CUDA cores: y (1, N) = x (1, K) @ W.T, streaming each weight word once.

    A16: x bf16/fp16.  A8: x is the int8 row from :func:`quantize_act_kernel` (asymmetric: code - 128),
    ``sa``/``za`` its scale and zero point; the per-word products ``(qa - za) * (q - z)`` are exact
    integers in fp32 (a group of <= 256 of them stays below 2**24).  Codes become floats with the
    magic-number trick (``(q | 0x4B000000)`` is the float ``2**23 + q``, minus ``2**23 + z``: exact),
    the scale is applied once per word (``acc += s * sum_i (q_i - z) * x_i``), and the ``[BLOCK_N,
    BLOCK_K/8]`` accumulator is reduced once at the end.  Split-K partials go to an fp32 workspace.
    """
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    W: tl.constexpr = BLOCK_K // 8
    MAGIC: tl.constexpr = 8388608.0
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_w = tl.arange(0, W)
    mask_n = offs_n < N
    K8 = K // 8
    k_tiles = tl.cdiv(K, BLOCK_K)
    per_split = tl.cdiv(k_tiles, SPLIT_K)
    t0 = pid_k * per_split
    t1 = tl.minimum(t0 + per_split, k_tiles)
    qw_rows = qw_ptr + _qrow(offs_n, stride_qn, LN, LW)
    if A8:
        if ASYM:
            zx = (tl.load(za_ptr) - 128).to(tl.float32)
        else:
            zx = 0.0
    if PER_CHANNEL:
        s_c = tl.load(s_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[:, None]
        if HAS_ZERO:
            z_c = (tl.load(z_ptr + offs_n, mask=mask_n, other=0).to(tl.float32) + MAGIC)[:, None]
        else:
            z_c = tl.full([BLOCK_N, 1], MAGIC + 8.0, tl.float32)
    acc = tl.zeros([BLOCK_N, W], dtype=tl.float32)
    for t in range(t0, t1):
        k0 = t * BLOCK_K
        wcol = k0 // 8 + offs_w
        if EVEN_K:
            q = tl.load(qw_rows + _qcol(wcol, LN, LW)[None, :], mask=mask_n[:, None], other=0)
            kmask = offs_w < W
        else:
            kmask = wcol < K8
            q = tl.load(qw_rows + _qcol(wcol, LN, LW)[None, :], mask=mask_n[:, None] & kmask[None, :], other=0)
        if PER_CHANNEL:
            s2 = s_c
            z2 = z_c
        elif GROUP >= BLOCK_K:
            gi = k0 // GROUP
            s2 = tl.load(s_ptr + gi * N + offs_n, mask=mask_n, other=0.0).to(tl.float32)[:, None]
            if HAS_ZERO:
                z2 = (tl.load(z_ptr + gi * N + offs_n, mask=mask_n, other=0).to(tl.float32) + MAGIC)[:, None]
            else:
                z2 = tl.full([BLOCK_N, 1], MAGIC + 8.0, tl.float32)
        else:
            gw = (k0 + offs_w * 8) // GROUP
            sz_off = gw[None, :] * N + offs_n[:, None]
            sz_mask = mask_n[:, None] & kmask[None, :]
            s2 = tl.load(s_ptr + sz_off, mask=sz_mask, other=0.0).to(tl.float32)
            if HAS_ZERO:
                z2 = tl.load(z_ptr + sz_off, mask=sz_mask, other=0).to(tl.float32) + MAGIC
            else:
                z2 = tl.full([BLOCK_N, W], MAGIC + 8.0, tl.float32)
        xb = x_ptr + k0 + offs_w * 8
        part = tl.zeros([BLOCK_N, W], dtype=tl.float32)
        for i in tl.static_range(8):
            if A8:
                xi = tl.load(xb + i, mask=kmask, other=0).to(tl.float32)
                xi = tl.where(kmask, xi - zx, 0.0)
            else:  # A16W4 words: nibble i holds K offset PAIR_K[i] (layout.py)
                xi = tl.load(xb + (i % 4) * 2 + i // 4, mask=kmask, other=0).to(tl.float32)
            wi = (((q >> (4 * i)) & 0xF) | 0x4B000000).to(tl.float32, bitcast=True) - z2
            part += wi * xi[None, :]
        acc += part * s2
    y = tl.sum(acc, axis=1)
    if A8:
        y = y * tl.load(sa_ptr)
    if ATOMIC:  # split-K: partial of this split into its own row of the workspace
        tl.store(out_ptr + pid_k.to(tl.int64) * N + offs_n, y, mask=mask_n)
    else:
        if HAS_BIAS:
            y += tl.load(b_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)
        tl.store(out_ptr + offs_n, y.to(tl.bfloat16 if IS_BF16 else tl.float16), mask=mask_n)



if os.environ.get("TRITON_INTERPRET") == "1":  # the CPU interpreter runs no inline PTX
    @triton.jit
    def _dp4a(a, b, c, B_SIGNED: tl.constexpr):
        """``c + sum_j a.byte[j] * b.byte[j]`` (bytes of a unsigned; of b signed or unsigned)."""
        for j in tl.static_range(4):
            aj = (a >> (8 * j)) & 0xFF
            if B_SIGNED:
                bj = (b << (24 - 8 * j)) >> 24
            else:
                bj = (b >> (8 * j)) & 0xFF
            c += aj * bj
        return c
else:
    @triton.jit
    def _dp4a(a, b, c, B_SIGNED: tl.constexpr):
        """``c + sum_j a.byte[j] * b.byte[j]`` (bytes of a unsigned; of b signed or unsigned): one
        ``dp4a`` instruction."""
        if B_SIGNED:
            return tl.inline_asm_elementwise("dp4a.u32.s32 $0, $1, $2, $3;", "=r,r,r,r", [a, b, c],
                                             dtype=tl.int32, is_pure=True, pack=1)
        else:
            return tl.inline_asm_elementwise("dp4a.u32.u32 $0, $1, $2, $3;", "=r,r,r,r", [a, b, c],
                                             dtype=tl.int32, is_pure=True, pack=1)


@triton.jit
def _gemv_tile(qw_rows, s_ptr, z_ptr, offs_n, offs_w, mask_n, t, t_end, N, K8,
               GROUP: tl.constexpr, PER_CHANNEL: tl.constexpr, HAS_ZERO: tl.constexpr, EVEN_K: tl.constexpr,
               EVICT: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, LN: tl.constexpr,
               LW: tl.constexpr):
    """K tile ``t`` of :func:`gemv_dp4a_kernel` (nothing is read when ``t >= t_end``): the words q int32
    ``[BN, W]``, the fp32 scales ``s2`` and the int32 zero points ``z2`` (8 without zero points);
    ``[BN, 1]`` when the tile lies in one group, else ``[BN, W]``.  Per-channel: placeholders (the
    caller holds the per-row values)."""
    W: tl.constexpr = BLOCK_K // 8
    k0 = t * BLOCK_K
    live = t < t_end
    wcol = k0 // 8 + offs_w
    qp = qw_rows + _qcol(wcol, LN, LW)[None, :]
    if EVEN_K:
        qmask = mask_n[:, None] & live
    else:
        qmask = mask_n[:, None] & (wcol < K8)[None, :] & live
    if EVICT:
        q = tl.load(qp, mask=qmask, other=0, eviction_policy="evict_first")
    else:
        q = tl.load(qp, mask=qmask, other=0)
    if PER_CHANNEL:
        s2 = tl.zeros([BLOCK_N, 1], dtype=tl.float32)
        z2 = tl.zeros([BLOCK_N, 1], dtype=tl.int32)
    elif GROUP >= BLOCK_K:
        gi = k0 // GROUP
        smask = mask_n & live
        s2 = tl.load(s_ptr + gi * N + offs_n, mask=smask, other=0.0).to(tl.float32)[:, None]
        if HAS_ZERO:
            zi = tl.load(z_ptr + gi * N + offs_n, mask=smask, other=0)[:, None]
        else:
            zi = tl.full([BLOCK_N, 1], 8, tl.int8)
        z2 = zi.to(tl.int32)
    else:
        gw = (k0 + offs_w * 8) // GROUP
        sz_off = gw[None, :] * N + offs_n[:, None]
        s2 = tl.load(s_ptr + sz_off, mask=qmask, other=0.0).to(tl.float32)
        if HAS_ZERO:
            zi = tl.load(z_ptr + sz_off, mask=qmask, other=0)
        else:
            zi = tl.full([BLOCK_N, W], 8, tl.int8)
        z2 = zi.to(tl.int32)
    return q, s2, z2


@triton.jit
def gemv_dp4a_kernel(x_ptr, sa_ptr, za_ptr, qw_ptr, s_ptr, z_ptr, b_ptr, out_ptr, M, N, K, stride_xm, stride_om,
                 stride_qn, SPLIT_K,
                 GROUP: tl.constexpr, PER_CHANNEL: tl.constexpr, HAS_ZERO: tl.constexpr,
                 HAS_BIAS: tl.constexpr, IS_BF16: tl.constexpr, A8: tl.constexpr, ASYM: tl.constexpr,
                 EVEN_K: tl.constexpr, ATOMIC: tl.constexpr, EVICT: tl.constexpr,
                 PREFETCH: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                 LN: tl.constexpr, LW: tl.constexpr):
    """A8W4 at small M (1 <= M <= ``BLOCK_M`` <= 8) on CUDA cores with ``dp4a``: y (M, N) = x (M, K) @
    W.T, each weight word read once and used for all M rows.

    x is the int8 codes of :func:`quantize_act_kernel` written in the dp4a layout (``DEINT``):
    (M, 2, K/8) int32, plane p holding the bytes ``x[8j + 2b + p]`` (b = 0..3) of word j, so the even
    nibbles ``q & 0x0F0F0F0F`` and the odd ones ``(q >> 4) & 0x0F0F0F0F`` meet their activations in
    one ``dp4a`` each: the exact integer word sum ``sum_i (q_i - z)(a_i - za) = D - z * Xa - za * (Q -
    8 z)`` (D the two dp4a, Xa / Q the byte sums of activations / codes; asymmetric activations use
    the unsigned codes, symmetric ones za = 0) is converted to fp32 exactly and scaled per word:
    about 10 instructions per 8 weights instead of ~36 for the float GEMV.  ``sa``/``za``: fp32 /
    int32 (M,) activation scales / zero points.  ``A8`` must be true (kept for the launcher's
    argument set).  ``PREFETCH``: the next K tile's words are loaded before the current one is used.
    ``EVICT``: ``evict_first`` weight loads.  out: (M, N) row stride ``stride_om``, or (``ATOMIC``,
    split-K) fp32 partials into slice ``pid_k`` of a (SPLIT_K, M, N) workspace summed by
    :func:`finish_kernel`.  ``BLOCK_M == 1`` keeps a ``[BLOCK_N, W]`` accumulator reduced once at the
    end; ``BLOCK_M > 1`` reduces each row's tile product into a ``[BLOCK_N, BLOCK_M]`` accumulator.
    """
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    W: tl.constexpr = BLOCK_K // 8
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_w = tl.arange(0, W)
    offs_m = tl.arange(0, BLOCK_M)
    mask_n = offs_n < N
    K8 = K // 8
    k_tiles = tl.cdiv(K, BLOCK_K)
    per_split = tl.cdiv(k_tiles, SPLIT_K)
    t0 = pid_k * per_split
    t1 = tl.minimum(t0 + per_split, k_tiles)
    qw_rows = qw_ptr + _qrow(offs_n, stride_qn, LN, LW)
    if PER_CHANNEL:
        s_c = tl.load(s_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[:, None]
        if HAS_ZERO:
            zc_i = tl.load(z_ptr + offs_n, mask=mask_n, other=0)[:, None]
        else:
            zc_i = tl.full([BLOCK_N, 1], 8, tl.int8)
        z_c = zc_i.to(tl.int32)
    if BLOCK_M == 1:
        acc = tl.zeros([BLOCK_N, W], dtype=tl.float32)
    else:
        acc = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
    if PREFETCH:
        q, s2, z2 = _gemv_tile(qw_rows, s_ptr, z_ptr, offs_n, offs_w, mask_n, t0, t1, N, K8, GROUP, PER_CHANNEL,
                               HAS_ZERO, EVEN_K, EVICT, BLOCK_N, BLOCK_K, LN, LW)
    for t in range(t0, t1):
        if PREFETCH:
            qn, sn, zn = _gemv_tile(qw_rows, s_ptr, z_ptr, offs_n, offs_w, mask_n, t + 1, t1, N, K8, GROUP,
                                    PER_CHANNEL, HAS_ZERO, EVEN_K, EVICT, BLOCK_N, BLOCK_K, LN, LW)
        else:
            q, s2, z2 = _gemv_tile(qw_rows, s_ptr, z_ptr, offs_n, offs_w, mask_n, t, t1, N, K8, GROUP, PER_CHANNEL,
                                   HAS_ZERO, EVEN_K, EVICT, BLOCK_N, BLOCK_K, LN, LW)
        if PER_CHANNEL:
            sc = s_c
            zc = z_c
        else:
            sc = s2
            zc = z2
        wcol = t * (BLOCK_K // 8) + offs_w
        if EVEN_K:
            kmask = offs_w < W
        else:
            kmask = wcol < K8
        lo = q & 0x0F0F0F0F
        hi = (q >> 4) & 0x0F0F0F0F
        if ASYM:
            qsum = _dp4a(lo, tl.full([1, 1], 0x01010101, tl.int32), _dp4a(hi, tl.full([1, 1], 0x01010101, tl.int32),
                                                                        tl.zeros([1, 1], tl.int32), False), False)
        for mm in tl.static_range(BLOCK_M):
            xmask = kmask & (mm < M)
            xe = tl.load(x_ptr + (mm * 2) * K8 + wcol, mask=xmask, other=0)
            xo = tl.load(x_ptr + (mm * 2 + 1) * K8 + wcol, mask=xmask, other=0)
            if ASYM:
                # signed (code - 128) bytes -> the unsigned codes; padding words stay 0
                xe = tl.where(xmask, xe ^ -2139062144, 0)  # 0x80808080
                xo = tl.where(xmask, xo ^ -2139062144, 0)
            ones = tl.full([W], 0x01010101, tl.int32)
            xsum = _dp4a(ones, xe, _dp4a(ones, xo, tl.zeros([W], tl.int32), not ASYM), not ASYM)
            d = _dp4a(lo, xe[None, :], _dp4a(hi, xo[None, :], tl.zeros([BLOCK_N, W], tl.int32), not ASYM),
                      not ASYM)
            d -= zc * xsum[None, :]
            if ASYM:
                za = tl.load(za_ptr + mm, mask=mm < M, other=0)
                d -= tl.where(kmask[None, :], za * (qsum - 8 * zc), 0)  # K padding contributes 0
            # exact int32 -> fp32 (|d| < 2**22): two full-rate ops instead of a quarter-rate I2F
            df = (d + 0x4B400000).to(tl.float32, bitcast=True) - 12582912.0
            if BLOCK_M == 1:
                acc += df * sc
            else:
                r = tl.sum(df * sc, axis=1)
                acc += tl.where(offs_m[None, :] == mm, r[:, None], 0.0)
        if PREFETCH:
            q = qn
            s2 = sn
            z2 = zn
    if BLOCK_M == 1:
        y = tl.sum(acc, axis=1)
        y = y * tl.load(sa_ptr)
        if ATOMIC:
            tl.store(out_ptr + pid_k.to(tl.int64) * N + offs_n, y, mask=mask_n)
        else:
            if HAS_BIAS:
                y += tl.load(b_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)
            tl.store(out_ptr + offs_n, y.to(tl.bfloat16 if IS_BF16 else tl.float16), mask=mask_n)
    else:
        mask_m = offs_m < M
        acc = acc * tl.load(sa_ptr + offs_m, mask=mask_m, other=0.0)[None, :]
        out_ptrs = out_ptr + offs_m[None, :].to(tl.int64) * stride_om + offs_n[:, None]
        mask = mask_n[:, None] & mask_m[None, :]
        if ATOMIC:
            tl.store(out_ptrs + pid_k.to(tl.int64) * M * stride_om, acc, mask=mask)
        else:
            if HAS_BIAS:
                acc += tl.load(b_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[:, None]
            tl.store(out_ptrs, acc.to(tl.bfloat16 if IS_BF16 else tl.float16), mask=mask)
