"""A16W4 at small M (1 <= M <= 16) on ``mma.sync`` tensor cores, fed straight from registers.

Why: at M <= 16 the weights are read once, so the kernel must stream them at HBM speed with few
instructions per weight word.  ``tl.dot`` makes Triton move every dequantized tile through shared
memory into the MMA fragment layout; here each thread instead loads exactly the weight words whose
codes form its own A fragment of ``mma.sync.m16n8k16`` (the blocked layout already holds them: see
below), dequantizes them in registers with packed 16-bit PTX and issues the MMA in inline PTX.

Thread bookkeeping: the kernel works on ``[NW * 32]`` tensors that hold one element per thread; the
thread's own index is read with ``mov %tid.x`` (inline PTX), so every address below is a function of
(program, warp, lane) whatever layout Triton picks, and the ``mma.sync`` calls (elementwise inline
PTX) are executed by all 32 lanes of each warp in the same order.

Weight layout (``kernel.py``'s blocked layout, LN = 16 rows x LW = 32 words per 2 KiB block): warp
``w`` owns ``RB`` row-blocks of 16 rows; lane ``(g, c) = (lane // 4, lane % 4)`` loads, per K tile of
``32 * KW`` values, the ``KW`` consecutive words ``c*KW ..`` of rows ``g`` and ``g + 8`` (16-byte
loads).  A word holds 8 consecutive K values of one row, least significant nibble first.  The MMA's
16 logical K columns are mapped onto physical K so that each thread's words give its fragment
(the order of K inside a dot product is free; x is fetched in the same order):

* word bits ``4i`` and ``4i + 16`` (nibbles i and i + 4) -> one packed register
  ``(OFF + q_i, OFF + q_{i+4})`` by one shift and one and/or (``OFF`` = 128 for bf16, 1024 for fp16);
* ``(v - (OFF + z)) * s`` in packed bf16x2 / f16x2: exactly the reference's ``round((q - z) * s)``;
* MMA 1 of a word: A = {row g: nibbles (0,4); row g+8: (0,4); row g: (1,5); row g+8: (1,5)},
  B = {x(0, 4), x(1, 5)} of the same 8 K positions; MMA 2: nibbles (2,6) / (3,7), x(2,6) / x(3,7).
  x's 8 values come with one 16-byte load and two ``prmt`` per register pair.
* B's 8 columns are 8 rows of x (``NB`` MMAs per A fragment for M <= 8 * NB); fp32 accumulation.

Output: lane (g, c) holds y[m = 8 nb + 2c + {0, 1}, n = row g / g + 8]; stored masked, or (``ATOMIC``,
split-K) as fp32 partials into slice ``pid_k`` of a (SPLIT_K, M, N) workspace summed by
``jit.finish_kernel``.
"""
from __future__ import annotations

import triton
import triton.language as tl


def _mma2_asm(bf16: bool) -> tl.constexpr:
    t = "bf16" if bf16 else "f16"
    lines = ["{", ".reg .b32 a0, a1, a2, a3;"]

    def deq(reg, src, shift, zz, ss):
        # (w >> shift) & 0x000F000F | magic: one shift and one lop3 (the magic comes in a register,
        # $18, since a SASS LOP3 takes one immediate)
        if shift:
            lines.append(f"shr.u32 {reg}, {src}, {shift};")
            lines.append(f"lop3.b32 {reg}, {reg}, 0x000F000F, $18, 0xEA;")
        else:
            lines.append(f"lop3.b32 {reg}, {src}, 0x000F000F, $18, 0xEA;")
        lines.append(f"sub.rn.{t}x2 {reg}, {reg}, {zz};")
        lines.append(f"mul.rn.{t}x2 {reg}, {reg}, {ss};")

    # operands: $0-$3 out acc, $4 wg, $5 wg8, $6 zzg, $7 zzg8, $8 ssg, $9 ssg8,
    #           $10-$13 x pairs (0,1), (2,3), (4,5), (6,7), $14-$17 in acc, $18 the magic 0x4300/0x6400 twice
    for first, (s0, s1, b0, b1) in ((True, (0, 4, "$10", "$11")), (False, (8, 12, "$12", "$13"))):
        deq("a0", "$4", s0, "$6", "$8")      # row g,     K pair (lo)
        deq("a1", "$5", s0, "$7", "$9")      # row g + 8, K pair (lo)
        deq("a2", "$4", s1, "$6", "$8")      # row g,     K pair (hi)
        deq("a3", "$5", s1, "$7", "$9")      # row g + 8, K pair (hi)
        c = "{$14, $15, $16, $17}" if first else "{$0, $1, $2, $3}"
        lines.append(f"mma.sync.aligned.m16n8k16.row.col.f32.{t}.{t}.f32 {{$0, $1, $2, $3}}, "
                     f"{{a0, a1, a2, a3}}, {{{b0}, {b1}}}, {c};")
    lines.append("}")
    return tl.constexpr(" ".join(lines))


_MMA2_BF16 = _mma2_asm(True)
_MMA2_F16 = _mma2_asm(False)
_LD4P = tl.constexpr("{ .reg .pred p; setp.ne.b32 p, $5, 0; mov.b32 $0, 0; mov.b32 $1, 0; mov.b32 $2, 0; "
                     "mov.b32 $3, 0; @p ld.global.nc.v4.b32 {$0, $1, $2, $3}, [$4]; }")
_LD4 = tl.constexpr("ld.global.nc.v4.b32 {$0, $1, $2, $3}, [$4];")
_LD4_EVICT = tl.constexpr("ld.global.nc.L1::no_allocate.v4.b32 {$0, $1, $2, $3}, [$4];")


@triton.jit
def _ld4_pred(ptr, pred):
    """16 bytes at ``ptr`` (16-byte aligned) as 4 int32 per thread; zeros where ``pred`` is false."""
    return tl.inline_asm_elementwise(_LD4P, "=r,=r,=r,=r,l,r", [ptr, pred.to(tl.int32)],
                                     dtype=(tl.int32, tl.int32, tl.int32, tl.int32), is_pure=False, pack=1)


@triton.jit
def _ld4(ptr, EVICT: tl.constexpr):
    """16 bytes at ``ptr`` (16-byte aligned, always in bounds) as 4 int32 per thread."""
    if EVICT:
        return tl.inline_asm_elementwise(_LD4_EVICT, "=r,=r,=r,=r,l", [ptr],
                                         dtype=(tl.int32, tl.int32, tl.int32, tl.int32), is_pure=False, pack=1)
    else:
        return tl.inline_asm_elementwise(_LD4, "=r,=r,=r,=r,l", [ptr],
                                         dtype=(tl.int32, tl.int32, tl.int32, tl.int32), is_pure=False, pack=1)


@triton.jit
def _mma2(wg, wg8, zzg, zzg8, ssg, ssg8, x01, x23, x45, x67, d0, d1, d2, d3, magic, IS_BF16: tl.constexpr):
    """Dequantize one word of rows g / g+8 each and accumulate their two MMAs into (d0..d3)."""
    if IS_BF16:
        return tl.inline_asm_elementwise(_MMA2_BF16, "=f,=f,=f,=f,r,r,r,r,r,r,r,r,r,r,f,f,f,f,r",
                                         [wg, wg8, zzg, zzg8, ssg, ssg8, x01, x23, x45, x67, d0, d1, d2, d3, magic],
                                         dtype=(tl.float32, tl.float32, tl.float32, tl.float32), is_pure=True, pack=1)
    else:
        return tl.inline_asm_elementwise(_MMA2_F16, "=f,=f,=f,=f,r,r,r,r,r,r,r,r,r,r,f,f,f,f,r",
                                         [wg, wg8, zzg, zzg8, ssg, ssg8, x01, x23, x45, x67, d0, d1, d2, d3, magic],
                                         dtype=(tl.float32, tl.float32, tl.float32, tl.float32), is_pure=True, pack=1)


@triton.jit
def _pack2(v):
    """16-bit float tensor -> int32 holding its bits twice."""
    b = v.to(tl.int16, bitcast=True).to(tl.int32) & 0xFFFF
    return b | (b << 16)


@triton.jit
def _sz(s_ptr, z_ptr, gi, row, N, live, HAS_ZERO: tl.constexpr, IS_BF16: tl.constexpr):
    """Packed (s, s) and (OFF + z, OFF + z) of weight row ``row`` in group ``gi`` (0 where not live)."""
    ok = live & (row < N)
    s = tl.load(s_ptr + gi * N + row, mask=ok, other=0.0)
    if HAS_ZERO:
        z = tl.load(z_ptr + gi * N + row, mask=ok, other=0).to(tl.int32)
    else:
        z = tl.full(row.shape, 8, tl.int32)
    if IS_BF16:
        zz = (z | 0x4300) * 65537
    else:
        zz = (z | 0x6400) * 65537
    return zz, _pack2(s)


@triton.jit
def _word(v0, v1, v2, v3, J: tl.constexpr):
    if J == 0:
        return v0
    elif J == 1:
        return v1
    elif J == 2:
        return v2
    else:
        return v3


@triton.jit
def _block4(qa, qb, xa, xb, zza, zza8, ssa, ssa8, zzb, zzb8, ssb, ssb8,
            a00, a01, a02, a03, a10, a11, a12, a13, b00, b01, b02, b03, b10, b11, b12, b13,
            ma_ok, mb_ok, K, kk, magic, IS_BF16: tl.constexpr, EVICT: tl.constexpr, NB: tl.constexpr, RB: tl.constexpr):
    """4 consecutive words per lane (K values ``kk .. kk + 31`` of this lane): rows g / g+8 of
    row-block a (word pointer ``qa``) and b (``qb``, when RB == 2), x rows g / 8 + g at ``xa`` / ``xb``
    (pointers to x[m, kk]); every MMA of them into the accumulators (a.., b..: row-block, then m-block)."""
    g0, g1, g2, g3 = _ld4(qa, EVICT)
    h0, h1, h2, h3 = _ld4(qa + 256, EVICT)
    if RB == 2:
        e0, e1, e2, e3 = _ld4(qb, EVICT)
        f0, f1, f2, f3 = _ld4(qb + 256, EVICT)
    for j in tl.static_range(4):
        xr0, xr1, xr2, xr3 = _ld4_pred(xa + 8 * j, (kk + 8 * j < K) & ma_ok)
        wg = _word(g0, g1, g2, g3, j)
        wg8 = _word(h0, h1, h2, h3, j)
        a00, a01, a02, a03 = _mma2(wg, wg8, zza, zza8, ssa, ssa8, xr0, xr1, xr2, xr3, a00, a01, a02, a03, magic, IS_BF16)
        if RB == 2:
            vg = _word(e0, e1, e2, e3, j)
            vg8 = _word(f0, f1, f2, f3, j)
            b00, b01, b02, b03 = _mma2(vg, vg8, zzb, zzb8, ssb, ssb8, xr0, xr1, xr2, xr3, b00, b01, b02, b03,
                                       magic, IS_BF16)
        if NB == 2:
            yr0, yr1, yr2, yr3 = _ld4_pred(xb + 8 * j, (kk + 8 * j < K) & mb_ok)
            a10, a11, a12, a13 = _mma2(wg, wg8, zza, zza8, ssa, ssa8, yr0, yr1, yr2, yr3, a10, a11, a12, a13, magic, IS_BF16)
            if RB == 2:
                b10, b11, b12, b13 = _mma2(vg, vg8, zzb, zzb8, ssb, ssb8, yr0, yr1, yr2, yr3, b10, b11, b12, b13,
                                           magic, IS_BF16)
    return a00, a01, a02, a03, a10, a11, a12, a13, b00, b01, b02, b03, b10, b11, b12, b13


@triton.jit
def _store_frag(out_ptr, b_ptr, d0, d1, d2, d3, m0, row, M, N, stride_om, slice_off,
                HAS_BIAS: tl.constexpr, ATOMIC: tl.constexpr, IS_BF16: tl.constexpr):
    """Store y[m0, row], y[m0 + 1, row], y[m0, row + 8], y[m0 + 1, row + 8] (the C fragment)."""
    DT: tl.constexpr = tl.bfloat16 if IS_BF16 else tl.float16
    r8 = row + 8
    if ATOMIC:
        base = out_ptr + slice_off
        tl.store(base + m0.to(tl.int64) * stride_om + row, d0, mask=(m0 < M) & (row < N))
        tl.store(base + (m0 + 1).to(tl.int64) * stride_om + row, d1, mask=(m0 + 1 < M) & (row < N))
        tl.store(base + m0.to(tl.int64) * stride_om + r8, d2, mask=(m0 < M) & (r8 < N))
        tl.store(base + (m0 + 1).to(tl.int64) * stride_om + r8, d3, mask=(m0 + 1 < M) & (r8 < N))
    else:
        if HAS_BIAS:
            bg = tl.load(b_ptr + row, mask=row < N, other=0.0).to(tl.float32)
            bg8 = tl.load(b_ptr + r8, mask=r8 < N, other=0.0).to(tl.float32)
            d0 += bg
            d1 += bg
            d2 += bg8
            d3 += bg8
        tl.store(out_ptr + m0.to(tl.int64) * stride_om + row, d0.to(DT), mask=(m0 < M) & (row < N))
        tl.store(out_ptr + (m0 + 1).to(tl.int64) * stride_om + row, d1.to(DT), mask=(m0 + 1 < M) & (row < N))
        tl.store(out_ptr + m0.to(tl.int64) * stride_om + r8, d2.to(DT), mask=(m0 < M) & (r8 < N))
        tl.store(out_ptr + (m0 + 1).to(tl.int64) * stride_om + r8, d3.to(DT), mask=(m0 + 1 < M) & (r8 < N))


@triton.jit
def mma_gemv_kernel(x_ptr, qw_ptr, s_ptr, z_ptr, b_ptr, out_ptr, M, N, K, stride_xm, stride_om, stride_qn,
                    SPLIT_K,
                    GROUP: tl.constexpr, PER_CHANNEL: tl.constexpr, HAS_ZERO: tl.constexpr,
                    HAS_BIAS: tl.constexpr, IS_BF16: tl.constexpr, ATOMIC: tl.constexpr, EVICT: tl.constexpr,
                    NB: tl.constexpr, RB: tl.constexpr, KW: tl.constexpr, NW: tl.constexpr):
    """y (M, N) = x (M, K) @ dequant(W).T (+ bias) for M <= 8 * NB (NB = 1 or 2).

    x: bf16/fp16 (M, K), row stride ``stride_xm`` (a multiple of 8 elements, 16-byte aligned base),
    K % 8 == 0.  qw: int32 blocked (N/16, K8/32, 16, 32) layout in the paired nibble order,
    ``stride_qn`` its row-block stride in words (N and K8 zero padded to the block).  s: (G, N) in
    x's dtype; z: int8 (G, N) or unused.  A program covers ``NW * RB * 16`` output rows (``RB`` = 1
    or 2 row-blocks per warp) and ``1/SPLIT_K`` of the K tiles of ``32 * KW`` values (KW = 4 or 8;
    each lane's ``8 * KW`` values lie inside one group: 8 * KW <= GROUP).
    """
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    t = tl.arange(0, NW * 32)
    tid = tl.inline_asm_elementwise("mov.u32 $0, %tid.x;", "=r,r", [t], dtype=tl.int32, is_pure=True, pack=1)
    lane = tid % 32
    warp = tid // 32
    g = lane // 4
    c = lane % 4
    CK: tl.constexpr = 32 * KW
    NRB = tl.cdiv(N, 16)
    rb0 = (pid_n * NW + warp) * RB
    k_tiles = tl.cdiv(K, CK)
    per_split = tl.cdiv(k_tiles, SPLIT_K)
    t0 = pid_k * per_split
    t1 = tl.minimum(t0 + per_split, k_tiles)
    row0 = rb0 * 16 + g
    row1 = row0 + 16
    # row-blocks past the (padded) weight read the last one: always in bounds, their outputs are masked
    qa = qw_ptr + tl.minimum(rb0, NRB - 1).to(tl.int64) * stride_qn + g * 32
    qb = qw_ptr + tl.minimum(rb0 + 1, NRB - 1).to(tl.int64) * stride_qn + g * 32
    ma_ok = g < M
    mb_ok = g + 8 < M
    xa = x_ptr + tl.minimum(g, M - 1).to(tl.int64) * stride_xm
    xb = x_ptr + tl.minimum(g + 8, M - 1).to(tl.int64) * stride_xm
    zero = tl.zeros([NW * 32], dtype=tl.float32)
    if IS_BF16:
        magic = tl.full([NW * 32], 0x43004300, tl.int32)
    else:
        magic = tl.full([NW * 32], 0x64006400, tl.int32)
    a00 = zero
    a01 = zero
    a02 = zero
    a03 = zero
    a10 = zero
    a11 = zero
    a12 = zero
    a13 = zero
    b00 = zero
    b01 = zero
    b02 = zero
    b03 = zero
    b10 = zero
    b11 = zero
    b12 = zero
    b13 = zero
    if PER_CHANNEL:
        zza, ssa = _sz(s_ptr, z_ptr, 0, row0, N, ma_ok | True, HAS_ZERO, IS_BF16)
        zza8, ssa8 = _sz(s_ptr, z_ptr, 0, row0 + 8, N, ma_ok | True, HAS_ZERO, IS_BF16)
        zzb, ssb = _sz(s_ptr, z_ptr, 0, row1, N, ma_ok | True, HAS_ZERO, IS_BF16)
        zzb8, ssb8 = _sz(s_ptr, z_ptr, 0, row1 + 8, N, ma_ok | True, HAS_ZERO, IS_BF16)
    for it in range(t0, t1):
        kl = it * CK + c * (8 * KW)           # first K value of this lane's words
        wc = it * (CK // 8) + c * KW          # their first word column
        if not PER_CHANNEL:
            gi = kl // GROUP
            klive = kl < K
            zza, ssa = _sz(s_ptr, z_ptr, gi, row0, N, klive, HAS_ZERO, IS_BF16)
            zza8, ssa8 = _sz(s_ptr, z_ptr, gi, row0 + 8, N, klive, HAS_ZERO, IS_BF16)
            if RB == 2:
                zzb, ssb = _sz(s_ptr, z_ptr, gi, row1, N, klive, HAS_ZERO, IS_BF16)
                zzb8, ssb8 = _sz(s_ptr, z_ptr, gi, row1 + 8, N, klive, HAS_ZERO, IS_BF16)
            else:
                zzb = zza
                ssb = ssa
                zzb8 = zza8
                ssb8 = ssa8
        for v in tl.static_range(KW // 4):
            w = wc + 4 * v
            off = (w // 32) * 512 + w % 32
            kk = kl + 32 * v
            (a00, a01, a02, a03, a10, a11, a12, a13,
             b00, b01, b02, b03, b10, b11, b12, b13) = _block4(
                qa + off, qb + off, xa + kk, xb + kk, zza, zza8, ssa, ssa8, zzb, zzb8, ssb, ssb8,
                a00, a01, a02, a03, a10, a11, a12, a13, b00, b01, b02, b03, b10, b11, b12, b13,
                ma_ok, mb_ok, K, kk, magic, IS_BF16, EVICT, NB, RB)
    slice_off = pid_k.to(tl.int64) * M * stride_om
    m0 = 2 * c
    _store_frag(out_ptr, b_ptr, a00, a01, a02, a03, m0, row0, M, N, stride_om, slice_off, HAS_BIAS, ATOMIC, IS_BF16)
    if NB == 2:
        _store_frag(out_ptr, b_ptr, a10, a11, a12, a13, m0 + 8, row0, M, N, stride_om, slice_off, HAS_BIAS, ATOMIC,
                    IS_BF16)
    if RB == 2:
        _store_frag(out_ptr, b_ptr, b00, b01, b02, b03, m0, row1, M, N, stride_om, slice_off, HAS_BIAS, ATOMIC,
                    IS_BF16)
        if NB == 2:
            _store_frag(out_ptr, b_ptr, b10, b11, b12, b13, m0 + 8, row1, M, N, stride_om, slice_off, HAS_BIAS,
                        ATOMIC, IS_BF16)
