"""A8W4 large-M GEMM on int8 tensor cores (Hopper ``wgmma`` through ``tl.dot``).

Why a second A8W4 matmul kernel (see ``benchmarks/gpu/LARGE_M.md`` for the profiles): the older
``jit.a8w4_kernel`` puts the dequantized weights in the register (A) operand of a swapped product,
unpacks each nibble with its own shift/mask/convert and packs the bytes back together, reloads the
activation tile from global memory in every K step without a software pipeline, and waits for each
group's MMA before its fp32 rescale.  This kernel

* computes ``acc[BLOCK_M, BLOCK_N] = A_tile @ W_tile^T`` with the activations as the A operand
  (``BLOCK_M`` rows of int8 codes, loaded through Triton's cp.async pipeline into shared memory) and
  the dequantized weights as the shared-memory B operand;
* unpacks the int4 words four codes at a time with 32-bit byte arithmetic: for a word ``q`` (eight
  codes, nibble i = K offset i) and zero point ``z``,
  ``lo = (((q & 0x0F0F0F0F) | 0x80808080) - z * 0x01010101) ^ 0x80808080`` holds the int8 values
  ``q_i - z`` of the even K offsets 0, 2, 4, 6 as its four bytes (``0x80 + q_i - z`` never borrows
  from the next byte; the xor turns the biased byte into two's complement), ``hi`` the same of
  ``q >> 4`` (odd offsets 1, 3, 5, 7).  The eight bytes of a word therefore hold the K offsets
  ``PERM8 = (0, 2, 4, 6, 1, 3, 5, 7)``; the activation codes are written by the quantization kernel
  in the same order (``jit.quantize_act_perm8_kernel``), which leaves every group sum
  unchanged (integer sums do not depend on the order);
* loads each group's scales / zero points / weight sums one group ahead, and reads clamped rows
  (tile rows past M or N repeat the last row) so no load needs a mask; only the store is masked;
* ``UNROLL == 2`` computes the sums of two groups before rescaling either (Triton 3.6 still waits for
  each MMA right after it, so this measured slower; kept as a config option);
* walks the output tiles in groups of ``GROUP_M`` tile rows (L2 reuse of the weight tiles).

Exactness: each group's int32 sum ``sum_k (qa_k - za) (q_k - z)`` is exact (|sum| < 2**22 for
groups of <= 256), converted to fp32 exactly and scaled by the fp32 weight scale; the activation scale
is applied once at the end -- the same arithmetic as ``jit.a8w4_kernel`` and the reference.

Tensors (GPU layout of ``jit.py``): qa int8 (M, K) in PERM8 order per 8 codes (for ``ASYM`` the uint8
code minus 128), sa fp32 (M,), za int32 (M,); qw int32 blocked (N/16, K8/32, 16, 32) A8W4 words in
plain K order; s (G, N) bf16/fp16; z int8 (G, N) or unused; ws int32 (G, N) the per-group sums of
``q - z``; bias (N,) or unused; out (M, N) in the activations' dtype, row stride ``stride_om``.
Grouped weights only (``GROUP`` >= 32 divides K); per-channel weights use ``jit.a8w4_kernel``.
"""
from __future__ import annotations

import triton
import triton.language as tl

from .jit import _interleave8, _qcol, _qrow

#: K offset held by byte j of the eight int8 codes unpacked from one word (and of the activations)
PERM8 = (0, 2, 4, 6, 1, 3, 5, 7)


@triton.jit
def _bytes4(v, J: tl.constexpr):
    """Byte ``J`` of each int32 in ``v`` as int8."""
    return (v >> (8 * J)).to(tl.int8)


@triton.jit
def _unpack_i8(q, zz):
    """q int32 ``[BN, W]`` A8W4 words, zz int32 ``[BN, 1]`` = ``z * 0x01010101`` -> int8 ``[BN, 8W]``,
    element ``8j + i`` = ``q_PERM8[i] - z`` of word j."""
    lo = (((q & 0x0F0F0F0F) | -2139062144) - zz) ^ -2139062144        # 0x80808080
    hi = ((((q >> 4) & 0x0F0F0F0F) | -2139062144) - zz) ^ -2139062144
    return _interleave8(_bytes4(lo, 0), _bytes4(lo, 1), _bytes4(lo, 2), _bytes4(lo, 3),
                        _bytes4(hi, 0), _bytes4(hi, 1), _bytes4(hi, 2), _bytes4(hi, 3))


@triton.jit
def _group_params(s_ptr, z_ptr, ws_ptr, g, n_groups, N, offs_n, mask_n,
                  HAS_ZERO: tl.constexpr, ASYM: tl.constexpr, BLOCK_N: tl.constexpr):
    """Per-column parameters of group ``g`` (clamped to the last group, so the prefetch past the end
    reads valid memory): the fp32 scales, the int32 zero points times 0x01010101 (8 without zero
    points), the int32 sums of ``q - z`` (``ASYM``; else zeros).  Loaded one group ahead of their use,
    so their latency overlaps the current group."""
    off = tl.minimum(g, n_groups - 1) * N + offs_n
    sw = tl.load(s_ptr + off, mask=mask_n, other=0.0).to(tl.float32)
    if HAS_ZERO:
        z = tl.load(z_ptr + off, mask=mask_n, other=0).to(tl.int32)
    else:
        z = tl.full([BLOCK_N], 8, tl.int32)
    if ASYM:
        wsum = tl.load(ws_ptr + off, mask=mask_n, other=0)
    else:
        wsum = tl.zeros([BLOCK_N], dtype=tl.int32)
    return sw, z * 0x01010101, wsum


@triton.jit
def _group_sum(qa_rows, qw_rows, g, offs_k, offs_w, za_s, zz, wsum,
               GROUP: tl.constexpr, ASYM: tl.constexpr, LN: tl.constexpr, LW: tl.constexpr):
    """The exact int32 sums of group ``g``: ``[BLOCK_M, BLOCK_N]`` (zz / wsum: its parameters).  The
    row pointers are of clamped rows (tile rows past M / N repeat the last row; never stored)."""
    k0 = g * GROUP
    a = tl.load(qa_rows + (k0 + offs_k)[None, :])
    q = tl.load(qw_rows + _qcol(k0 // 8 + offs_w, LN, LW)[None, :])
    w = _unpack_i8(q, zz[:, None])
    part = tl.dot(a, tl.trans(w), out_dtype=tl.int32)
    if ASYM:
        part -= za_s[:, None] * wsum[None, :]
    return part


@triton.jit
def _rescale(acc, part, sw):
    """acc += fp32(part) * sw.  |part| < 2**22: adding the bits of 1.5 * 2**23 and subtracting it as
    a float converts exactly (two full-rate ops instead of a quarter-rate I2F)."""
    pf = (part + 0x4B400000).to(tl.int32).to(tl.float32, bitcast=True) - 12582912.0
    return acc + pf * sw[None, :]


@triton.jit
def a8w4_gemm_kernel(qa_ptr, sa_ptr, za_ptr, qw_ptr, s_ptr, z_ptr, ws_ptr, b_ptr, out_ptr,
                     M, N, K, stride_om, stride_qn,
                     GROUP: tl.constexpr, HAS_ZERO: tl.constexpr, HAS_BIAS: tl.constexpr, ASYM: tl.constexpr,
                     IS_BF16: tl.constexpr, UNROLL: tl.constexpr, GROUP_M: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, LN: tl.constexpr, LW: tl.constexpr,
                     MAXNREG: tl.constexpr):
    """y (M, N) = sa[m] * sum_g fp32(int32 group sum) * s[g, n] (+ bias); see the module docstring.
    Grid: ``cdiv(M, BLOCK_M) * cdiv(N, BLOCK_N)`` programs.  ``UNROLL`` 2 needs an even group count.
    ``MAXNREG``: the register cap the launcher compiled this specialization with (0: none; only part
    of the launcher's cache key, so two caps never share a compiled kernel)."""
    pid = tl.program_id(0)
    tiles_m = tl.cdiv(M, BLOCK_M)
    tiles_n = tl.cdiv(N, BLOCK_N)
    per_band = GROUP_M * tiles_n
    band = pid // per_band
    first_m = band * GROUP_M
    rows = tl.minimum(tiles_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_band) % rows
    pid_n = (pid % per_band) // rows
    W: tl.constexpr = GROUP // 8
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, GROUP)
    offs_w = tl.arange(0, W)
    mask_m = offs_m < M
    mask_n = offs_n < N
    offs_mc = tl.minimum(offs_m, M - 1)  # loads need no masks: rows past the end repeat the last one
    offs_nc = tl.minimum(offs_n, N - 1)
    qa_rows = qa_ptr + offs_mc[:, None].to(tl.int64) * K
    qw_rows = qw_ptr + _qrow(offs_nc, stride_qn, LN, LW)
    if ASYM:
        za_s = tl.load(za_ptr + offs_mc) - 128
    else:
        za_s = tl.zeros([BLOCK_M], dtype=tl.int32)
    n_groups = K // GROUP
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    sw0, zz0, wsum0 = _group_params(s_ptr, z_ptr, ws_ptr, 0, n_groups, N, offs_n, mask_n, HAS_ZERO, ASYM, BLOCK_N)
    if UNROLL == 2:
        sw1, zz1, wsum1 = _group_params(s_ptr, z_ptr, ws_ptr, 1, n_groups, N, offs_n, mask_n, HAS_ZERO, ASYM,
                                        BLOCK_N)
        for g in range(0, n_groups, 2):
            sw2, zz2, wsum2 = _group_params(s_ptr, z_ptr, ws_ptr, g + 2, n_groups, N, offs_n, mask_n, HAS_ZERO,
                                            ASYM, BLOCK_N)
            sw3, zz3, wsum3 = _group_params(s_ptr, z_ptr, ws_ptr, g + 3, n_groups, N, offs_n, mask_n, HAS_ZERO,
                                            ASYM, BLOCK_N)
            p0 = _group_sum(qa_rows, qw_rows, g, offs_k, offs_w, za_s, zz0, wsum0, GROUP, ASYM,
                            LN, LW)
            p1 = _group_sum(qa_rows, qw_rows, g + 1, offs_k, offs_w, za_s, zz1, wsum1, GROUP, ASYM,
                            LN, LW)
            acc = _rescale(acc, p0, sw0)
            acc = _rescale(acc, p1, sw1)
            sw0, zz0, wsum0 = sw2, zz2, wsum2
            sw1, zz1, wsum1 = sw3, zz3, wsum3
    else:
        for g in range(0, n_groups):
            sw1, zz1, wsum1 = _group_params(s_ptr, z_ptr, ws_ptr, g + 1, n_groups, N, offs_n, mask_n, HAS_ZERO,
                                            ASYM, BLOCK_N)
            p0 = _group_sum(qa_rows, qw_rows, g, offs_k, offs_w, za_s, zz0, wsum0, GROUP, ASYM,
                            LN, LW)
            acc = _rescale(acc, p0, sw0)
            sw0, zz0, wsum0 = sw1, zz1, wsum1
    acc = acc * tl.load(sa_ptr + offs_m, mask=mask_m, other=0.0)[:, None]
    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    out_ptrs = out_ptr + offs_m[:, None].to(tl.int64) * stride_om + offs_n[None, :]
    tl.store(out_ptrs, acc.to(tl.bfloat16 if IS_BF16 else tl.float16), mask=mask_m[:, None] & mask_n[None, :])
