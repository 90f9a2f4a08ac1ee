"""A16W4 at small M on ``mma.sync`` tensor cores, fed straight from registers (16 rows of x per program).

Why: at M <= 16 the weights are read once, so the kernel must stream them at HBM speed with few
instructions per weight word.  ``tl.dot`` makes Triton move every dequantized tile through shared
memory into the MMA fragment layout; here each thread instead loads exactly the weight words whose
codes form its own A fragment of ``mma.sync.m16n8k16`` (the blocked layout already holds them: see
below), dequantizes them in registers with packed 16-bit PTX and issues the MMA in inline PTX.

Thread bookkeeping: the kernel works on ``[NW * 32]`` tensors that hold one element per thread; the
thread's own index is read with ``mov %tid.x`` (inline PTX), so every address below is a function of
(program, warp, lane) whatever layout Triton picks, and the ``mma.sync`` calls (elementwise inline
PTX) are executed by all 32 lanes of each warp in the same order.

Weight layout (``kernel.py``'s blocked layout, LN = 16 rows x LW = 32 words per 2 KiB block; A16W4
words hold their codes in the paired nibble order of ``layout.PAIR_K``): warp ``w`` owns ``RB``
row-blocks of 16 rows; lane ``(g, c) = (lane // 4, lane % 4)`` loads, per v-block of 128 K values,
the 4 words ``16 v + 4 c ..`` of rows ``g`` and ``g + 8`` (one 16-byte load each; a warp's load
instruction covers 64 contiguous bytes of 8 rows).  The MMA's 16 logical K columns are mapped onto
physical K so that each thread's words give its own fragment (the order of K inside a dot product
is free; x is fetched in the same order):

* word bits ``4i`` and ``4i + 16`` (nibbles i and i + 4: K offsets 2i and 2i + 1 of the word) -> one
  packed register ``(OFF + q, OFF + q')`` by one shift and one lop3 (``OFF`` = 128 for bf16, 1024 for
  fp16);
* ``(v - (OFF + z)) * s`` in packed bf16x2 / f16x2: exactly the reference's ``round((q - z) * s)``;
* MMA 1 of a word: A = {row g: K (0,1); row g+8: (0,1); row g: (2,3); row g+8: (2,3)}, B = the x
  registers (x0, x1), (x2, x3) of the same K positions (one 16-byte load of x gives 4 registers);
  MMA 2: K (4,5) / (6,7).
* B's 8 columns are 8 rows of x (``NB`` = 2 MMAs per A fragment for 16 rows); fp32 accumulation.

Output: lane (g, c) holds y[m = 8 nb + 2c + {0, 1}, n = row g / g + 8]; stored masked, or (split-K)
as fp32 partials into slice ``pid_k`` of a (SPLIT_K, M, N) workspace, summed by the last program of
the tile (int32 counter per tile) or by ``jit.finish_kernel``.
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
    r0, r1, r2, r3 = tl.inline_asm_elementwise(_LD4P, "=r,=r,=r,=r,l,r", [ptr, pred.to(tl.int32)],
                                               dtype=(tl.int32, tl.int32, tl.int32, tl.int32), is_pure=False, pack=1)
    return r0, r1, r2, r3


@triton.jit
def _ld4(ptr, EVICT: tl.constexpr):
    """16 bytes at ``ptr`` (16-byte aligned, always in bounds) as 4 int32 per thread."""
    if EVICT:
        r0, r1, r2, r3 = tl.inline_asm_elementwise(_LD4_EVICT, "=r,=r,=r,=r,l", [ptr],
                                                   dtype=(tl.int32, tl.int32, tl.int32, tl.int32), is_pure=False,
                                                   pack=1)
    else:
        r0, r1, r2, r3 = tl.inline_asm_elementwise(_LD4, "=r,=r,=r,=r,l", [ptr],
                                                   dtype=(tl.int32, tl.int32, tl.int32, tl.int32), is_pure=False,
                                                   pack=1)
    return r0, r1, r2, r3


@triton.jit
def _prefetch_l2(ptr, lane, SIZE: tl.constexpr):
    """Lane 0: ``cp.async.bulk.prefetch.L2`` of ``SIZE`` bytes at ``ptr`` (16-byte aligned)."""
    if SIZE == 2048:
        asm: tl.constexpr = ("{ .reg .pred p; setp.eq.s32 p, $2, 0; @p cp.async.bulk.prefetch.L2.global [$1], 2048; "
                             "mov.u32 $0, 0; }")
    else:
        asm: tl.constexpr = ("{ .reg .pred p; setp.eq.s32 p, $2, 0; @p cp.async.bulk.prefetch.L2.global [$1], 4096; "
                             "mov.u32 $0, 0; }")
    return tl.inline_asm_elementwise(asm, "=r,l,r", [ptr, lane], dtype=tl.int32, is_pure=False, pack=1)


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
def _load_w(qa, qb, it, c, K8P, EVICT: tl.constexpr, RB: tl.constexpr, NV: tl.constexpr):
    """The weight words of K tile ``it`` for this lane: a tuple, entry ``((v * RB + r) * 2 + h) * 4 + j``
    = word j of v-block v, row-block r, row g (h = 0) or g + 8 (h = 1).  ``qa``/``qb``: row g of
    row-blocks 0 / 1 (in bounds); word columns past the padded row are clamped (x is 0 there)."""
    out = ()
    for v in tl.static_range(NV):
        w = tl.minimum(it * (NV * 16) + v * 16 + c * 4, K8P - 4)
        off = (w // 32) * 512 + w % 32
        out = out + _ld4(qa + off, EVICT) + _ld4(qa + off + 256, EVICT)
        if RB == 2:
            out = out + _ld4(qb + off, EVICT) + _ld4(qb + off + 256, EVICT)
    return out


@triton.jit
def _load_x(xa, xb, it, c, K, ma_ok, mb_ok, NB: tl.constexpr, NV: tl.constexpr):
    """x of K tile ``it`` for this lane: a tuple, entry ``((v * 4 + j) * NB + nb) * 4 + i`` = register i
    (the bf16 / fp16 pair 2i, 2i + 1) of word j of v-block v for activation row g (nb = 0) or 8 + g."""
    out = ()
    for v in tl.static_range(NV):
        kl = it * (NV * 128) + v * 128 + c * 32
        for j in tl.static_range(4):
            kk = kl + 8 * j
            out = out + _ld4_pred(xa + kk, (kk < K) & ma_ok)
            if NB == 2:
                out = out + _ld4_pred(xb + kk, (kk < K) & mb_ok)
    return out


@triton.jit
def _load_s(s_ptr, z_ptr, it, c, row0, row1, N, K, HAS_ZERO: tl.constexpr, IS_BF16: tl.constexpr,
            GROUP: tl.constexpr, RB: tl.constexpr, NV: tl.constexpr):
    """Packed scales / zero points of K tile ``it``: a tuple, entry ``(v * 2 + r) * 4 + {0: zz(g),
    1: zz(g + 8), 2: ss(g), 3: ss(g + 8)}`` (loaded where a group starts, else repeated)."""
    out = ()
    for v in tl.static_range(NV):
        if (v * 128) % GROUP == 0:
            kl = it * (NV * 128) + v * 128 + c * 32
            gi = kl // GROUP
            klive = kl < K
            zza, ssa = _sz(s_ptr, z_ptr, gi, row0, N, klive, HAS_ZERO, IS_BF16)
            zza8, ssa8 = _sz(s_ptr, z_ptr, gi, row0 + 8, N, klive, HAS_ZERO, IS_BF16)
            if RB == 2:
                zzb, ssb = _sz(s_ptr, z_ptr, gi, row1, N, klive, HAS_ZERO, IS_BF16)
                zzb8, ssb8 = _sz(s_ptr, z_ptr, gi, row1 + 8, N, klive, HAS_ZERO, IS_BF16)
            else:
                zzb = zza
                zzb8 = zza8
                ssb = ssa
                ssb8 = ssa8
        out = out + (zza, zza8, ssa, ssa8, zzb, zzb8, ssb, ssb8)
    return out


@triton.jit
def _compute(W, X, S, a00, a01, a02, a03, a10, a11, a12, a13, b00, b01, b02, b03, b10, b11, b12, b13, magic,
             IS_BF16: tl.constexpr, NB: tl.constexpr, RB: tl.constexpr, NV: tl.constexpr):
    """All MMAs of one K tile (tuples from :func:`_load_w`, :func:`_load_x`, :func:`_load_s`; the
    indices are written inline so that they stay compile-time constants)."""
    for v in tl.static_range(NV):
        for j in tl.static_range(4):
            a00, a01, a02, a03 = _mma2(
                W[v * RB * 8 + j], W[v * RB * 8 + 4 + j], S[v * 8], S[v * 8 + 1], S[v * 8 + 2], S[v * 8 + 3],
                X[(v * 4 + j) * NB * 4], X[(v * 4 + j) * NB * 4 + 1], X[(v * 4 + j) * NB * 4 + 2],
                X[(v * 4 + j) * NB * 4 + 3], a00, a01, a02, a03, magic, IS_BF16)
            if NB == 2:
                a10, a11, a12, a13 = _mma2(
                    W[v * RB * 8 + j], W[v * RB * 8 + 4 + j], S[v * 8], S[v * 8 + 1], S[v * 8 + 2], S[v * 8 + 3],
                    X[(v * 4 + j) * NB * 4 + 4], X[(v * 4 + j) * NB * 4 + 5], X[(v * 4 + j) * NB * 4 + 6],
                    X[(v * 4 + j) * NB * 4 + 7], a10, a11, a12, a13, magic, IS_BF16)
            if RB == 2:
                b00, b01, b02, b03 = _mma2(
                    W[v * RB * 8 + 8 + j], W[v * RB * 8 + 12 + j], S[v * 8 + 4], S[v * 8 + 5], S[v * 8 + 6],
                    S[v * 8 + 7], X[(v * 4 + j) * NB * 4], X[(v * 4 + j) * NB * 4 + 1],
                    X[(v * 4 + j) * NB * 4 + 2], X[(v * 4 + j) * NB * 4 + 3], b00, b01, b02, b03, magic, IS_BF16)
                if NB == 2:
                    b10, b11, b12, b13 = _mma2(
                        W[v * RB * 8 + 8 + j], W[v * RB * 8 + 12 + j], S[v * 8 + 4], S[v * 8 + 5], S[v * 8 + 6],
                        S[v * 8 + 7], X[(v * 4 + j) * NB * 4 + 4], X[(v * 4 + j) * NB * 4 + 5],
                        X[(v * 4 + j) * NB * 4 + 6], X[(v * 4 + j) * NB * 4 + 7], b10, b11, b12, b13, magic,
                        IS_BF16)
    return a00, a01, a02, a03, a10, a11, a12, a13, b00, b01, b02, b03, b10, b11, b12, b13


@triton.jit
def _frag_ptrs(base, m0, row, M, N, stride):
    """Pointers / masks of the C fragment y[m0, row], y[m0 + 1, row], y[m0, row + 8], y[m0 + 1, row + 8]."""
    r8 = row + 8
    m1 = m0 + 1
    p0 = base + m0.to(tl.int64) * stride + row
    p1 = base + m1.to(tl.int64) * stride + row
    p2 = base + m0.to(tl.int64) * stride + r8
    p3 = base + m1.to(tl.int64) * stride + r8
    return p0, p1, p2, p3, (m0 < M) & (row < N), (m1 < M) & (row < N), (m0 < M) & (r8 < N), (m1 < M) & (r8 < N)


@triton.jit
def _store_out(out_ptr, b_ptr, d0, d1, d2, d3, m0, row, M, N, stride_om, HAS_BIAS: tl.constexpr,
               IS_BF16: tl.constexpr):
    """y (+ bias) of one C fragment in the output dtype."""
    DT: tl.constexpr = tl.bfloat16 if IS_BF16 else tl.float16
    if HAS_BIAS:
        bg = tl.load(b_ptr + row, mask=row < N, other=0.0).to(tl.float32)
        bg8 = tl.load(b_ptr + row + 8, mask=row + 8 < N, other=0.0).to(tl.float32)
        d0 += bg
        d1 += bg
        d2 += bg8
        d3 += bg8
    p0, p1, p2, p3, k0, k1, k2, k3 = _frag_ptrs(out_ptr, m0, row, M, N, stride_om)
    tl.store(p0, d0.to(DT), mask=k0)
    tl.store(p1, d1.to(DT), mask=k1)
    tl.store(p2, d2.to(DT), mask=k2)
    tl.store(p3, d3.to(DT), mask=k3)


@triton.jit
def _store_ws(ws_ptr, d0, d1, d2, d3, m0, row, M, N):
    """One C fragment's fp32 partial into a (M, N) slice of the split-K workspace."""
    p0, p1, p2, p3, k0, k1, k2, k3 = _frag_ptrs(ws_ptr, m0, row, M, N, N)
    tl.store(p0, d0, mask=k0)
    tl.store(p1, d1, mask=k1)
    tl.store(p2, d2, mask=k2)
    tl.store(p3, d3, mask=k3)


@triton.jit
def _reduce_out(ws_ptr, out_ptr, b_ptr, m0, row, M, N, stride_om, SPLIT_K, HAS_BIAS: tl.constexpr,
                IS_BF16: tl.constexpr):
    """Sum of one C fragment over the SPLIT_K workspace slices (L2 reads: ``.cg``) -> output."""
    p0, p1, p2, p3, k0, k1, k2, k3 = _frag_ptrs(ws_ptr, m0, row, M, N, N)
    d0 = tl.zeros(m0.shape, tl.float32)
    d1 = d0
    d2 = d0
    d3 = d0
    for sp in range(SPLIT_K):
        sl = (sp * M).to(tl.int64) * N
        d0 += tl.load(p0 + sl, mask=k0, other=0.0, cache_modifier=".cg")
        d1 += tl.load(p1 + sl, mask=k1, other=0.0, cache_modifier=".cg")
        d2 += tl.load(p2 + sl, mask=k2, other=0.0, cache_modifier=".cg")
        d3 += tl.load(p3 + sl, mask=k3, other=0.0, cache_modifier=".cg")
    _store_out(out_ptr, b_ptr, d0, d1, d2, d3, m0, row, M, N, stride_om, HAS_BIAS, IS_BF16)


@triton.jit
def mma_gemv_kernel(x_ptr, qw_ptr, s_ptr, z_ptr, b_ptr, out_ptr, ws_ptr, lock_ptr, M, N, K, stride_xm, stride_om,
                    stride_qn, SPLIT_K, MB,
                    GROUP: tl.constexpr, PER_CHANNEL: tl.constexpr, HAS_ZERO: tl.constexpr,
                    HAS_BIAS: tl.constexpr, IS_BF16: tl.constexpr, SPLIT: tl.constexpr, SERIAL: tl.constexpr,
                    EVICT: tl.constexpr, PREFETCH: tl.constexpr, NB: tl.constexpr, RB: tl.constexpr,
                    NV: tl.constexpr, NW: tl.constexpr):
    """y (M, N) = x (M, K) @ dequant(W).T (+ bias); each program takes 16 rows of x (``MB`` =
    ceil(M / 16) programs share a weight tile and run next to each other: program id = tile * MB +
    m-block), ``NB`` = 1 when M <= 8 (one MMA per weight fragment), else 2.

    x: bf16/fp16 (M, K), row stride ``stride_xm`` (a multiple of 8 elements, 16-byte aligned base),
    K % 8 == 0.  qw: int32 blocked (N/16, K8/32, 16, 32) layout in the paired nibble order,
    ``stride_qn`` its row-block stride in words (N and K8 zero padded to the block).  s: (G, N) in
    x's dtype; z: int8 (G, N) or unused.  out: (M, N) row stride ``stride_om``.  A program covers
    ``NW * RB * 16`` output rows (``RB`` = 1 or 2 row-blocks per warp) and ``1/SPLIT_K`` of the K
    tiles of ``128 * NV`` values; per tile, lane c of a warp reads words ``16 v + 4 c .. + 3`` of its
    two rows for v < NV (64 contiguous bytes per row and load instruction).
    ``SPLIT`` (SPLIT_K > 1): fp32 partials go to slice ``pid_k`` of ws (SPLIT_K, M, N); with
    ``SERIAL`` the last program of a tile to finish (int32 counter ``lock_ptr[tile]``, zero before
    and after the launch) sums the slices into out, else ``jit.finish_kernel`` does.
    ``PREFETCH`` > 0: lane 0 of each warp asks for the weight blocks of tile ``it + PREFETCH`` to be
    brought into L2 (``cp.async.bulk.prefetch``) while tile ``it`` is computed.
    """
    pid0 = tl.program_id(0)
    pid_k = tl.program_id(1)
    pid_m = pid0 % MB
    pid_n = pid0 // MB
    t = tl.arange(0, NW * 32)
    tid = tl.inline_asm_elementwise("mov.u32 $0, %tid.x;", "=r,r", [t], dtype=tl.int32, is_pure=True, pack=1)
    lane = tid % 32
    warp = tid // 32
    g = lane // 4
    c = lane % 4
    CK: tl.constexpr = 128 * NV
    NRB = tl.cdiv(N, 16)
    K8P = stride_qn // 16               # padded words per row
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
    mrow = pid_m * 16 + g
    ma_ok = mrow < M
    mb_ok = mrow + 8 < M
    xa = x_ptr + tl.minimum(mrow, M - 1).to(tl.int64) * stride_xm
    xb = x_ptr + tl.minimum(mrow + 8, M - 1).to(tl.int64) * stride_xm
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
        allk = ma_ok | True
        zza, ssa = _sz(s_ptr, z_ptr, 0, row0, N, allk, HAS_ZERO, IS_BF16)
        zza8, ssa8 = _sz(s_ptr, z_ptr, 0, row0 + 8, N, allk, HAS_ZERO, IS_BF16)
        zzb, ssb = _sz(s_ptr, z_ptr, 0, row1, N, allk, HAS_ZERO, IS_BF16)
        zzb8, ssb8 = _sz(s_ptr, z_ptr, 0, row1 + 8, N, allk, HAS_ZERO, IS_BF16)
        S = ()
        for v in tl.static_range(NV):
            S = S + (zza, zza8, ssa, ssa8, zzb, zzb8, ssb, ssb8)
    pa = qw_ptr + tl.minimum(rb0, NRB - 1).to(tl.int64) * stride_qn
    pb = qw_ptr + tl.minimum(rb0 + 1, NRB - 1).to(tl.int64) * stride_qn
    for it in range(t0, t1):
        if PREFETCH > 0:  # L2 prefetch of the 2 KiB blocks that tile it + PREFETCH reads
            PB: tl.constexpr = 2 if NV == 4 else 1      # blocks per tile (NV = 1: half a block)
            bcol = tl.minimum(((it + PREFETCH) * (NV * 16)) // 32, K8P // 32 - PB)
            _prefetch_l2(pa + bcol * 512, lane, PB * 2048)
            if RB == 2:
                _prefetch_l2(pb + bcol * 512, lane, PB * 2048)
        W = _load_w(qa, qb, it, c, K8P, EVICT, RB, NV)
        X = _load_x(xa, xb, it, c, K, ma_ok, mb_ok, NB, NV)
        if not PER_CHANNEL:
            S = _load_s(s_ptr, z_ptr, it, c, row0, row1, N, K, HAS_ZERO, IS_BF16, GROUP, RB, NV)
        (a00, a01, a02, a03, a10, a11, a12, a13,
         b00, b01, b02, b03, b10, b11, b12, b13) = _compute(
            W, X, S, a00, a01, a02, a03, a10, a11, a12, a13, b00, b01, b02, b03, b10, b11, b12, b13, magic,
            IS_BF16, NB, RB, NV)
    m0 = pid_m * 16 + 2 * c
    if SPLIT:
        wsl = ws_ptr + pid_k.to(tl.int64) * M * N
        _store_ws(wsl, a00, a01, a02, a03, m0, row0, M, N)
        if NB == 2:
            _store_ws(wsl, a10, a11, a12, a13, m0 + 8, row0, M, N)
        if RB == 2:
            _store_ws(wsl, b00, b01, b02, b03, m0, row1, M, N)
            if NB == 2:
                _store_ws(wsl, b10, b11, b12, b13, m0 + 8, row1, M, N)
        if SERIAL:
            # every thread's partial stores, then (one thread, gpu scope) release + count; the last
            # program of the tile acquires and sums the slices from L2
            tl.debug_barrier()
            prev = tl.atomic_add(lock_ptr + pid0, 1, sem="acq_rel", scope="gpu")
            if prev == SPLIT_K - 1:   # every other split of this tile has stored its partial
                tl.atomic_xchg(lock_ptr + pid0, 0, sem="relaxed", scope="gpu")
                _reduce_out(ws_ptr, out_ptr, b_ptr, m0, row0, M, N, stride_om, SPLIT_K, HAS_BIAS, IS_BF16)
                if NB == 2:
                    _reduce_out(ws_ptr, out_ptr, b_ptr, m0 + 8, row0, M, N, stride_om, SPLIT_K, HAS_BIAS, IS_BF16)
                if RB == 2:
                    _reduce_out(ws_ptr, out_ptr, b_ptr, m0, row1, M, N, stride_om, SPLIT_K, HAS_BIAS, IS_BF16)
                    if NB == 2:
                        _reduce_out(ws_ptr, out_ptr, b_ptr, m0 + 8, row1, M, N, stride_om, SPLIT_K, HAS_BIAS,
                                    IS_BF16)
    else:
        _store_out(out_ptr, b_ptr, a00, a01, a02, a03, m0, row0, M, N, stride_om, HAS_BIAS, IS_BF16)
        if NB == 2:
            _store_out(out_ptr, b_ptr, a10, a11, a12, a13, m0 + 8, row0, M, N, stride_om, HAS_BIAS, IS_BF16)
        if RB == 2:
            _store_out(out_ptr, b_ptr, b00, b01, b02, b03, m0, row1, M, N, stride_om, HAS_BIAS, IS_BF16)
            if NB == 2:
                _store_out(out_ptr, b_ptr, b10, b11, b12, b13, m0 + 8, row1, M, N, stride_om, HAS_BIAS, IS_BF16)
