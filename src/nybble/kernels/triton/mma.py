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

from .jit import _act_codes, row_qparams
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait
from triton.runtime.jit import constexpr_function


def _deq_asm(bf16: bool) -> tl.constexpr:
    """Two words (rows g and g + 8, 8 codes each) -> the A fragments of their two MMAs."""
    t = "bf16" if bf16 else "f16"
    lines = ["{", ".reg .b32 t0, t1, t2, t3, t4, t5, t6, t7;"]
    # operands: $0-$3 A of MMA 1 (K pairs (0,1) / (2,3)), $4-$7 A of MMA 2 (K pairs (4,5) / (6,7));
    #           $8 word of row g, $9 word of row g + 8, $10 / $11 packed OFF + z, $12 / $13 packed s,
    #           $14 the magic (0x4300 / 0x6400 twice: a SASS LOP3 takes one immediate)
    for i, (src, shift, zz, ss) in enumerate((("$8", 0, "$10", "$12"), ("$9", 0, "$11", "$13"),
                                              ("$8", 4, "$10", "$12"), ("$9", 4, "$11", "$13"),
                                              ("$8", 8, "$10", "$12"), ("$9", 8, "$11", "$13"),
                                              ("$8", 12, "$10", "$12"), ("$9", 12, "$11", "$13"))):
        r = f"t{i}"
        # (w >> shift) & 0x000F000F | magic: two codes as the 16-bit floats OFF + q
        if shift:
            lines.append(f"shr.u32 {r}, {src}, {shift};")
            lines.append(f"lop3.b32 {r}, {r}, 0x000F000F, $14, 0xEA;")
        else:
            lines.append(f"lop3.b32 {r}, {src}, 0x000F000F, $14, 0xEA;")
        lines.append(f"sub.rn.{t}x2 {r}, {r}, {zz};")   # exact: q - z
        lines.append(f"mul.rn.{t}x2 {r}, {r}, {ss};")   # one rounding: round((q - z) * s)
    for i in range(8):
        lines.append(f"mov.b32 ${i}, t{i};")
    lines.append("}")
    return tl.constexpr(" ".join(lines))


def _raw_asm() -> tl.constexpr:
    """Two words (rows g, g + 8) -> the A fragments of their two MMAs as ``OFF + q`` (no zero point,
    no scale: those are applied per group in fp32, see ``FOLD``)."""
    lines = ["{"]
    for i, (src, shift) in enumerate((("$8", 0), ("$9", 0), ("$8", 4), ("$9", 4), ("$8", 8), ("$9", 8),
                                      ("$8", 12), ("$9", 12))):
        if shift:
            lines.append(f"shr.u32 ${i}, {src}, {shift};")
            lines.append(f"lop3.b32 ${i}, ${i}, 0x000F000F, $10, 0xEA;")
        else:
            lines.append(f"lop3.b32 ${i}, {src}, 0x000F000F, $10, 0xEA;")
    lines.append("}")
    return tl.constexpr(" ".join(lines))


def _zsub_asm() -> tl.constexpr:
    """Two words (rows g, g + 8) -> the A fragments of their two MMAs as the exact bf16 integers
    ``q - z`` (no scale: A8W4 applies it per group in fp32).  Operands: $8 / $9 the words, $10 / $11
    packed ``128 + z`` of rows g / g + 8, $12 the magic."""
    lines = ["{"]
    for i, (src, shift, zz) in enumerate((("$8", 0, "$10"), ("$9", 0, "$11"), ("$8", 4, "$10"), ("$9", 4, "$11"),
                                          ("$8", 8, "$10"), ("$9", 8, "$11"), ("$8", 12, "$10"),
                                          ("$9", 12, "$11"))):
        if shift:
            lines.append(f"shr.u32 ${i}, {src}, {shift};")
            lines.append(f"lop3.b32 ${i}, ${i}, 0x000F000F, $12, 0xEA;")
        else:
            lines.append(f"lop3.b32 ${i}, {src}, 0x000F000F, $12, 0xEA;")
        lines.append(f"sub.rn.bf16x2 ${i}, ${i}, {zz};")   # exact: (128 + q) - (128 + z)
    lines.append("}")
    return tl.constexpr(" ".join(lines))


_ZSUB = _zsub_asm()
_RAW = _raw_asm()
_DEQ_BF16 = _deq_asm(True)
_DEQ_F16 = _deq_asm(False)
_MMA_BF16 = tl.constexpr("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {$0, $1, $2, $3}, "
                         "{$4, $5, $6, $7}, {$8, $9}, {$10, $11, $12, $13};")
_MMA_F16 = tl.constexpr("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {$0, $1, $2, $3}, "
                        "{$4, $5, $6, $7}, {$8, $9}, {$10, $11, $12, $13};")
_LD4P = tl.constexpr("{ .reg .pred p; setp.ne.b32 p, $5, 0; mov.b32 $0, 0; mov.b32 $1, 0; mov.b32 $2, 0; "
                     "mov.b32 $3, 0; @p ld.global.nc.v4.b32 {$0, $1, $2, $3}, [$4]; }")
_LD4P_EVICT = tl.constexpr("{ .reg .pred p; setp.ne.b32 p, $5, 0; mov.b32 $0, 0; mov.b32 $1, 0; mov.b32 $2, 0; "
                           "mov.b32 $3, 0; @p ld.global.nc.L1::no_allocate.v4.b32 {$0, $1, $2, $3}, [$4]; }")
_LD4 = tl.constexpr("ld.global.nc.v4.b32 {$0, $1, $2, $3}, [$4];")
_LD4_EVICT = tl.constexpr("ld.global.nc.L1::no_allocate.v4.b32 {$0, $1, $2, $3}, [$4];")


@triton.jit
def _ld4_pred(ptr, pred, EVICT: tl.constexpr = False):
    """16 bytes at ``ptr`` (16-byte aligned) as 4 int32 per thread; zeros (and no memory access) where
    ``pred`` is false; ``EVICT``: not kept in L1 (the weight stream's loads)."""
    r0, r1, r2, r3 = tl.inline_asm_elementwise(_LD4P_EVICT if EVICT else _LD4P, "=r,=r,=r,=r,l,r",
                                               [ptr, pred.to(tl.int32)],
                                               dtype=(tl.int32, tl.int32, tl.int32, tl.int32), is_pure=False, pack=1)
    return r0, r1, r2, r3


_PF_L2 = tl.constexpr("{ .reg .pred p; setp.ne.s32 p, $2, 0; @p cp.async.bulk.prefetch.L2.global [$1], $2; "
                      "mov.u32 $0, 0; }")


@triton.jit
def _prefetch_l2(ptr, nbytes):
    """``cp.async.bulk.prefetch.L2`` of ``nbytes`` (a multiple of 16; 0: nothing) at ``ptr`` (16-byte
    aligned) by every thread whose ``nbytes`` is not 0."""
    return tl.inline_asm_elementwise(_PF_L2, "=r,l,r", [ptr, nbytes], dtype=tl.int32, is_pure=False, pack=1)


_LD4C = tl.constexpr("ld.global.v4.b32 {$0, $1, $2, $3}, [$4];")


@triton.jit
def _ld4c(ptr):
    """16 bytes at ``ptr`` through the coherent path (data this program wrote before a barrier)."""
    r0, r1, r2, r3 = tl.inline_asm_elementwise(_LD4C, "=r,=r,=r,=r,l", [ptr],
                                               dtype=(tl.int32, tl.int32, tl.int32, tl.int32), is_pure=False,
                                               pack=1)
    return r0, r1, r2, r3


#: one 16-bit value (the low half of $3) to shared address $1 if $2 != 0
_STS16 = tl.constexpr("{ .reg .pred p; .reg .b16 h; setp.ne.b32 p, $2, 0; cvt.u16.u32 h, $3; "
                      "@p st.shared.b16 [$1], h; mov.u32 $0, 0; }")
_LDS4 = tl.constexpr("ld.shared.v4.b32 {$0, $1, $2, $3}, [$4];")


@constexpr_function
def _static_shared_asm(name, nbytes):
    """PTX declaring a static shared array ``name`` of ``nbytes`` (16-byte aligned) and returning its
    shared-window address: Triton gives inline PTX no shared memory of its own; ``ptxas`` allocates
    this one and the driver adds it to Triton's.  Used for the A8 mode's code row (``SMC``) and the
    cross-warp K sum (``KW``)."""
    return f"{{ .shared .align 16 .b8 {name}[{nbytes}]; mov.u32 $0, {name}; }}"


@triton.jit
def _lds4(addr):
    """16 bytes at shared address ``addr`` as 4 int32 per thread."""
    r0, r1, r2, r3 = tl.inline_asm_elementwise(_LDS4, "=r,=r,=r,=r,r", [addr],
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
def _deq(wg, wg8, zzg, zzg8, ssg, ssg8, magic, IS_BF16: tl.constexpr):
    """The 8 A-fragment registers (two MMAs) of one word of rows g and g + 8."""
    if IS_BF16:
        r = tl.inline_asm_elementwise(_DEQ_BF16, "=r,=r,=r,=r,=r,=r,=r,=r,r,r,r,r,r,r,r",
                                      [wg, wg8, zzg, zzg8, ssg, ssg8, magic], dtype=(tl.int32,) * 8,
                                      is_pure=True, pack=1)
    else:
        r = tl.inline_asm_elementwise(_DEQ_F16, "=r,=r,=r,=r,=r,=r,=r,=r,r,r,r,r,r,r,r",
                                      [wg, wg8, zzg, zzg8, ssg, ssg8, magic], dtype=(tl.int32,) * 8,
                                      is_pure=True, pack=1)
    return r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]


@triton.jit
def _raw(wg, wg8, magic):
    """The 8 A-fragment registers of one word of rows g and g + 8 as packed ``OFF + q``."""
    r = tl.inline_asm_elementwise(_RAW, "=&r,=&r,=&r,=&r,=&r,=&r,=&r,=&r,r,r,r", [wg, wg8, magic],
                                  dtype=(tl.int32,) * 8, is_pure=True, pack=1)
    return r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]


@triton.jit
def _zsub(wg, wg8, zzg, zzg8, magic):
    """The 8 A-fragment registers of one word of rows g and g + 8 as packed bf16 ``q - z`` (exact)."""
    r = tl.inline_asm_elementwise(_ZSUB, "=&r,=&r,=&r,=&r,=&r,=&r,=&r,=&r,r,r,r,r,r", [wg, wg8, zzg, zzg8, magic],
                                  dtype=(tl.int32,) * 8, is_pure=True, pack=1)
    return r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]


@triton.jit
def _mma(a0, a1, a2, a3, b0, b1, d0, d1, d2, d3, IS_BF16: tl.constexpr):
    """One ``mma.sync.m16n8k16`` (fp32 accumulators d0..d3)."""
    if IS_BF16:
        r = tl.inline_asm_elementwise(_MMA_BF16, "=f,=f,=f,=f,r,r,r,r,r,r,f,f,f,f",
                                      [a0, a1, a2, a3, b0, b1, d0, d1, d2, d3], dtype=(tl.float32,) * 4,
                                      is_pure=True, pack=1)
    else:
        r = tl.inline_asm_elementwise(_MMA_F16, "=f,=f,=f,=f,r,r,r,r,r,r,f,f,f,f",
                                      [a0, a1, a2, a3, b0, b1, d0, d1, d2, d3], dtype=(tl.float32,) * 4,
                                      is_pure=True, pack=1)
    return r[0], r[1], r[2], r[3]


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
def _szf(s_ptr, z_ptr, gi, row, N, live, HAS_ZERO: tl.constexpr, IS_BF16: tl.constexpr):
    """fp32 ``OFF + z`` and ``s`` of weight row ``row`` in group ``gi`` (0 where not live)."""
    ok = live & (row < N)
    s = tl.load(s_ptr + gi * N + row, mask=ok, other=0.0).to(tl.float32)
    if HAS_ZERO:
        z = tl.load(z_ptr + gi * N + row, mask=ok, other=0).to(tl.float32)
    else:
        z = tl.full(row.shape, 8.0, tl.float32)
    if IS_BF16:
        return z + 128.0, s
    else:
        return z + 1024.0, s


@triton.jit
def _load_w(QP, it, c, K8P, EVICT: tl.constexpr, RB: tl.constexpr, NV: tl.constexpr, live=None):
    """The weight words of K tile ``it`` for this lane: a tuple, entry ``((v * RB + r) * 2 + h) * 4 + j``
    = word j of v-block v, row-block r, row g (h = 0) or g + 8 (h = 1).  ``QP``: row g of each of the
    RB row-blocks (in bounds); word columns past the padded row are clamped (x is 0 there).  ``live``
    (int1, optional): where false, zeros and no memory access (a prefetch past the slice's end)."""
    out = ()
    for v in tl.static_range(NV):
        w = tl.minimum(it * (NV * 16) + v * 16 + c * 4, K8P - 4)
        off = (w // 32) * 512 + w % 32
        for r in tl.static_range(RB):
            if live is None:
                out = out + _ld4(QP[r] + off, EVICT) + _ld4(QP[r] + off + 256, EVICT)
            else:
                out = out + _ld4_pred(QP[r] + off, live, EVICT) + _ld4_pred(QP[r] + off + 256, live, EVICT)
    return out


@triton.jit
def _load_s(s_ptr, z_ptr, it, c, ROWS, N, K, HAS_ZERO: tl.constexpr, IS_BF16: tl.constexpr,
            GROUP: tl.constexpr, RB: tl.constexpr, NV: tl.constexpr, FOLD: tl.constexpr):
    """Scales / zero points of K tile ``it``: a tuple, entry ``(v * RB + r) * 4 + {0: zz(g),
    1: zz(g + 8), 2: ss(g), 3: ss(g + 8)}`` (loaded where a group starts, else repeated); packed
    16-bit pairs, or (``FOLD``) fp32 ``OFF + z`` and ``s``."""
    out = ()
    for v in tl.static_range(NV):
        if (v * 128) % GROUP == 0:
            kl = it * (NV * 128) + v * 128 + c * 32
            gi = kl // GROUP
            klive = kl < K
            cur = ()
            for r in tl.static_range(RB):
                if FOLD:
                    zz, ss = _szf(s_ptr, z_ptr, gi, ROWS[r], N, klive, HAS_ZERO, IS_BF16)
                    zz8, ss8 = _szf(s_ptr, z_ptr, gi, ROWS[r] + 8, N, klive, HAS_ZERO, IS_BF16)
                else:
                    zz, ss = _sz(s_ptr, z_ptr, gi, ROWS[r], N, klive, HAS_ZERO, IS_BF16)
                    zz8, ss8 = _sz(s_ptr, z_ptr, gi, ROWS[r] + 8, N, klive, HAS_ZERO, IS_BF16)
                cur = cur + (zz, zz8, ss, ss8)
        out = out + cur
    return out


@triton.jit
def _tile(W, S, acc, XP, kt, c, K, magic, IS_BF16: tl.constexpr, NB: tl.constexpr, RB: tl.constexpr,
          NV: tl.constexpr, EVEN_K: tl.constexpr):
    """All MMAs of one K tile: per word, the x fragments of the NB 8-row blocks (one 16-byte load
    each from ``XP``, their row pointers; rows past M repeat row M - 1, whose outputs are never
    stored), the words of every row-block dequantized once (exactly as the reference), then
    RB x NB x 2 MMAs.  ``acc``: tuple, entry ``(nb * RB + r) * 4 + i``."""
    for v in tl.static_range(NV):
        for j in tl.static_range(4):
            kk = kt + v * 128 + c * 32 + 8 * j
            X = ()
            for nb in tl.static_range(NB):
                if EVEN_K:
                    X = X + _ld4(XP[nb] + kk, False)
                else:
                    X = X + _ld4_pred(XP[nb] + kk, kk < K)
            D = ()
            for r in tl.static_range(RB):
                D = D + _deq(W[(v * RB + r) * 8 + j], W[(v * RB + r) * 8 + 4 + j], S[(v * RB + r) * 4],
                             S[(v * RB + r) * 4 + 1], S[(v * RB + r) * 4 + 2], S[(v * RB + r) * 4 + 3], magic,
                             IS_BF16)
            new = ()
            for nb in tl.static_range(NB):
                for r in tl.static_range(RB):
                    d0, d1, d2, d3 = _mma(D[r * 8], D[r * 8 + 1], D[r * 8 + 2], D[r * 8 + 3], X[nb * 4],
                                          X[nb * 4 + 1], acc[(nb * RB + r) * 4], acc[(nb * RB + r) * 4 + 1],
                                          acc[(nb * RB + r) * 4 + 2], acc[(nb * RB + r) * 4 + 3], IS_BF16)
                    new = new + _mma(D[r * 8 + 4], D[r * 8 + 5], D[r * 8 + 6], D[r * 8 + 7], X[nb * 4 + 2],
                                     X[nb * 4 + 3], d0, d1, d2, d3, IS_BF16)
            acc = new
    return acc


@triton.jit
def _tile_fold(W, S, acc, XP, kt, c, K, magic, ones, zero, IS_BF16: tl.constexpr, NB: tl.constexpr,
               RB: tl.constexpr, NV: tl.constexpr, EVEN_K: tl.constexpr):
    """``FOLD`` variant of :func:`_tile` (a v-block of 128 K values lies in one group: GROUP >= 128
    or per-channel): the MMAs multiply ``OFF + q`` (exact 16-bit values) by x into fresh fp32
    accumulators ``t``; MMAs of the all-ones matrix by x give the v-block's sums of x, ``xs``; then
    ``acc += s * (t - (OFF + z) * xs)`` in fp32 per row.  No packed sub/mul per weight (the weights
    are not rounded to 16 bits as the reference does; the products and sums are fp32)."""
    for v in tl.static_range(NV):
        t = ()
        for i in tl.static_range(NB * RB * 4):
            t = t + (zero,)
        xs = ()
        for i in tl.static_range(NB * 4):
            xs = xs + (zero,)
        for j in tl.static_range(4):
            kk = kt + v * 128 + c * 32 + 8 * j
            X = ()
            for nb in tl.static_range(NB):
                if EVEN_K:
                    X = X + _ld4(XP[nb] + kk, False)
                else:
                    X = X + _ld4_pred(XP[nb] + kk, kk < K)
            D = ()
            for r in tl.static_range(RB):
                D = D + _raw(W[(v * RB + r) * 8 + j], W[(v * RB + r) * 8 + 4 + j], magic)
            nxs = ()
            for nb in tl.static_range(NB):
                e0, e1, e2, e3 = _mma(ones, ones, ones, ones, X[nb * 4], X[nb * 4 + 1], xs[nb * 4], xs[nb * 4 + 1],
                                      xs[nb * 4 + 2], xs[nb * 4 + 3], IS_BF16)
                nxs = nxs + _mma(ones, ones, ones, ones, X[nb * 4 + 2], X[nb * 4 + 3], e0, e1, e2, e3, IS_BF16)
            xs = nxs
            new = ()
            for nb in tl.static_range(NB):
                for r in tl.static_range(RB):
                    d0, d1, d2, d3 = _mma(D[r * 8], D[r * 8 + 1], D[r * 8 + 2], D[r * 8 + 3], X[nb * 4],
                                          X[nb * 4 + 1], t[(nb * RB + r) * 4], t[(nb * RB + r) * 4 + 1],
                                          t[(nb * RB + r) * 4 + 2], t[(nb * RB + r) * 4 + 3], IS_BF16)
                    new = new + _mma(D[r * 8 + 4], D[r * 8 + 5], D[r * 8 + 6], D[r * 8 + 7], X[nb * 4 + 2],
                                     X[nb * 4 + 3], d0, d1, d2, d3, IS_BF16)
            t = new
        new = ()
        for nb in tl.static_range(NB):
            for r in tl.static_range(RB):
                for i in tl.static_range(4):
                    new = new + (acc[(nb * RB + r) * 4 + i] + S[(v * RB + r) * 4 + 2 + i // 2] *
                                 (t[(nb * RB + r) * 4 + i] - S[(v * RB + r) * 4 + i // 2] * xs[nb * 4 + i]),)
        acc = new
    return acc


@triton.jit
def _tile_a8(W, S, acc, QX, kt, c, magic, zero, RB: tl.constexpr, NV: tl.constexpr, SMC: tl.constexpr = 0):
    """All MMAs of one K tile in ``A8`` mode (one row of x, bf16; a v-block of 128 K values lies in one
    group): per word, the activation codes ``q_a - z_a`` (exact bf16 integers this program wrote at
    ``QX``, zeros past K) meet the exact bf16 integers ``q - z`` of the weights in fresh fp32
    accumulators ``t`` -- every product and partial sum is an integer below 2**24, so ``t`` is the
    reference's int32 sum of the v-block --, then ``acc += s * t`` per v-block in fp32 (one rounding,
    as the reference's ``float(group sum) * s``).  ``S``: :func:`_load_s` entries (packed 16-bit
    pairs); ``acc``: tuple, entry ``r * 4 + i``."""
    for v in tl.static_range(NV):
        t = ()
        for i in tl.static_range(RB * 4):
            t = t + (zero,)
        for j in tl.static_range(4):
            if SMC:  # QX: shared address of this program's code row (its first K at kt = 0)
                X = _lds4(QX + (kt + v * 128 + c * 32 + 8 * j) * 2)
            else:
                X = _ld4c(QX + kt + v * 128 + c * 32 + 8 * j)
            new = ()
            for r in tl.static_range(RB):
                D = _zsub(W[(v * RB + r) * 8 + j], W[(v * RB + r) * 8 + 4 + j], S[(v * RB + r) * 4],
                          S[(v * RB + r) * 4 + 1], magic)
                d0, d1, d2, d3 = _mma(D[0], D[1], D[2], D[3], X[0], X[1], t[r * 4], t[r * 4 + 1], t[r * 4 + 2],
                                      t[r * 4 + 3], True)
                new = new + _mma(D[4], D[5], D[6], D[7], X[2], X[3], d0, d1, d2, d3, True)
            t = new
        new = ()
        for r in tl.static_range(RB):
            # the packed bf16 pair (s, s) -> s in fp32 (the high half's bits, exact)
            sg = (S[(v * RB + r) * 4 + 2] & -65536).to(tl.float32, bitcast=True)
            sg8 = (S[(v * RB + r) * 4 + 3] & -65536).to(tl.float32, bitcast=True)
            new = new + (acc[r * 4] + sg * t[r * 4], acc[r * 4 + 1] + sg * t[r * 4 + 1],
                         acc[r * 4 + 2] + sg8 * t[r * 4 + 2], acc[r * 4 + 3] + sg8 * t[r * 4 + 3])
        acc = new
    return acc


@triton.jit
def _tile_any(W, S, acc, XP, QX, kt, c, K, magic, ones, zero, IS_BF16: tl.constexpr, NB: tl.constexpr,
              RB: tl.constexpr, NV: tl.constexpr, EVEN_K: tl.constexpr, A8: tl.constexpr, FOLD: tl.constexpr,
              SMC: tl.constexpr):
    """One K tile (``kt``: its first K value) in the kernel's mode: :func:`_tile_a8` (``A8``),
    :func:`_tile_fold` (``FOLD``) or :func:`_tile`."""
    if A8:
        out = _tile_a8(W, S, acc, QX, kt, c, magic, zero, RB, NV, SMC)
    elif FOLD:
        out = _tile_fold(W, S, acc, XP, kt, c, K, magic, ones, zero, IS_BF16, NB, RB, NV, EVEN_K)
    else:
        out = _tile(W, S, acc, XP, kt, c, K, magic, IS_BF16, NB, RB, NV, EVEN_K)
    return out


@triton.jit
def _act_code(v, sa, za, ASYM: tl.constexpr):
    """fp32 activations -> their int8 codes minus the zero point (``q - za``, exact fp32 integers):
    :func:`jit._act_codes`, whose asymmetric codes are ``q - 128``, moved to ``q - za`` (exact)."""
    q = _act_codes(v, sa, za, ASYM)
    if ASYM:
        return q + (128.0 - za)
    return q


@triton.jit
def _frag_pos(kk):
    """Where the code of K index ``kk`` goes in the MMA-ordered code row: within each run of 8,
    K offsets 0..3 -> 0, 2, 4, 6 and 4..7 -> 1, 3, 5, 7."""
    o = kk % 8
    return kk - o + tl.where(o < 4, 2 * o, 2 * o - 7)


@triton.jit
def _store_codes(x_ptr, qx_ptr, idx, kbeg, kend, kpad, sa, za, ASYM: tl.constexpr, STEP: tl.constexpr,
                 SMC: tl.constexpr = 0):
    """The codes ``q - za`` of x row 0 over K range [kbeg, kend) (zeros from ``kend`` up to ``kpad``)
    as bf16 at their MMA fragment positions (:func:`_frag_pos`) in ``qx_ptr``; ``idx``: the K
    offsets one step covers (``STEP`` of them), swept from ``kbeg`` in steps of ``STEP``.  ``SMC``:
    ``qx_ptr`` is the shared address (int32) of the program's code row, whose first entry is K ``kbeg``."""
    for k0 in range(kbeg, kpad, STEP):
        kk = k0 + idx
        live = kk < kend
        v = tl.load(x_ptr + kk, mask=live, other=0.0).to(tl.float32)
        q = tl.where(live, _act_code(v, sa, za, ASYM), 0.0).to(tl.bfloat16)
        if SMC:
            bits = q.to(tl.int16, bitcast=True).to(tl.int32)
            tl.inline_asm_elementwise(_STS16, "=r,r,r,r", [qx_ptr + (_frag_pos(kk) - kbeg) * 2,
                                                          (kk < kpad).to(tl.int32), bits],
                                      dtype=tl.int32, is_pure=False, pack=1)
        else:
            tl.store(qx_ptr + _frag_pos(kk), q, mask=kk < kpad)


@triton.jit
def _quantize_row(x_ptr, qx_ptr, tid, K, kbeg, kend, kpad, ASYM: tl.constexpr, NW: tl.constexpr,
                  QB: tl.constexpr = 0, SMC: tl.constexpr = 0):
    """Per-token int8 quantization of x row 0 (K,) bit for bit as ``primitives.quantize_activations``
    (IEEE divisions, rint); writes the codes ``q - za`` of K range [kbeg, kend) (and zeros up to
    ``kpad``, the end of this program's last K tile) as bf16 into ``qx_ptr`` at the position the MMA fragments
    read them (8 j + 2 i <- K 8 j + i, 8 j + 2 i + 1 <- K 8 j + i + 4), then a barrier.  Programs with
    the same K range write the same values.  Returns the activation scale (fp32 scalar).
    ``QB`` > 0: the row is swept in whole blocks of ``QB`` values (several 16-byte loads per thread
    in flight at once) and the codes written 8 per thread per step; else one value per thread per step.
    ``SMC``: ``qx_ptr`` is the shared address of the program's code row (entry 0 = K ``kbeg``)."""
    NT: tl.constexpr = NW * 32
    if QB > 0:
        sa, za = row_qparams(x_ptr, tl.arange(0, QB), K, ASYM=ASYM, BLOCK=QB)
        _store_codes(x_ptr, qx_ptr, tl.arange(0, NT * 8), kbeg, kend, kpad, sa, za, ASYM, NT * 8, SMC)
    else:
        sa, za = row_qparams(x_ptr, tid, K, ASYM=ASYM, BLOCK=NT)
        _store_codes(x_ptr, qx_ptr, tid, kbeg, kend, kpad, sa, za, ASYM, NT, SMC)
    tl.debug_barrier()
    return sa


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
    """Sum of one C fragment over the SPLIT_K workspace slices in slice order (L2 reads: ``.cg``; 8
    slices' loads per step, so one L2 round trip covers up to 8 slices) -> output."""
    p0, p1, p2, p3, k0, k1, k2, k3 = _frag_ptrs(ws_ptr, m0, row, M, N, N)
    d0 = tl.zeros(m0.shape, tl.float32)
    d1 = d0
    d2 = d0
    d3 = d0
    for sp0 in range(0, SPLIT_K, 8):
        for j in tl.static_range(8):
            live = sp0 + j < SPLIT_K
            sl = ((sp0 + j) * M).to(tl.int64) * N
            d0 += tl.load(p0 + sl, mask=k0 & live, other=0.0, cache_modifier=".cg")
            d1 += tl.load(p1 + sl, mask=k1 & live, other=0.0, cache_modifier=".cg")
            d2 += tl.load(p2 + sl, mask=k2 & live, other=0.0, cache_modifier=".cg")
            d3 += tl.load(p3 + sl, mask=k3 & live, other=0.0, cache_modifier=".cg")
    _store_out(out_ptr, b_ptr, d0, d1, d2, d3, m0, row, M, N, stride_om, HAS_BIAS, IS_BF16)


@triton.jit
def _live_only(S, live):
    """The scale / zero-point tuple of :func:`_load_s` where ``live``, else 0 (a tile that must count
    zero: ``s = 0`` makes every product 0, in the packed 16-bit and the fp32 ``FOLD`` forms alike)."""
    out = ()
    for i in tl.static_range(len(S)):
        out = out + (tl.where(live, S[i], 0),)
    return out


_STS4P = tl.constexpr("{ .reg .pred p; setp.ne.b32 p, $2, 0; @p st.shared.v4.b32 [$1], {$3, $4, $5, $6}; "
                      "mov.u32 $0, 0; }")
_LDS4P = tl.constexpr("{ .reg .pred p; setp.ne.b32 p, $5, 0; mov.b32 $0, 0; mov.b32 $1, 0; mov.b32 $2, 0; "
                      "mov.b32 $3, 0; @p ld.shared.v4.b32 {$0, $1, $2, $3}, [$4]; }")


@triton.jit
def _sum_k_warps(acc, tid, NW: tl.constexpr, KW: tl.constexpr):
    """Sum of the C fragments over the ``KW`` warps of each row group (``KW`` > 1; warp
    ``kw * NW / KW + row group``): every thread of warps ``kw > 0`` stores its fragments (4 fp32
    each, ``acc`` a tuple of ``[NW * 32]`` fp32, thread ``tid`` = element ``tid``) into a static
    shared array declared in inline PTX, one barrier, and the row group's first warp adds them to its
    own in ``kw`` order.  Returns the sums (valid in the first warps only) and ``keep`` (int1
    ``[NW * 32]``: this thread holds its row group's sums)."""
    RW: tl.constexpr = NW // KW
    NF: tl.constexpr = len(acc) // 4
    base = tl.inline_asm_elementwise(_static_shared_asm("nybble_ksum", (KW - 1) * RW * 32 * 16 * NF), "=r,r", [tid],
                                     dtype=tl.int32, is_pure=True, pack=1)
    keep = tid < RW * 32
    give = (~keep).to(tl.int32)
    for i in tl.static_range(NF):
        slot = base + (i * (KW - 1) * RW * 32 + tid - RW * 32) * 16
        tl.inline_asm_elementwise(_STS4P, "=r,r,r,r,r,r,r",
                                  [slot, give, acc[4 * i].to(tl.int32, bitcast=True),
                                   acc[4 * i + 1].to(tl.int32, bitcast=True), acc[4 * i + 2].to(tl.int32, bitcast=True),
                                   acc[4 * i + 3].to(tl.int32, bitcast=True)], dtype=tl.int32, is_pure=False, pack=1)
    tl.debug_barrier()
    out = ()
    for i in tl.static_range(NF):
        d0 = acc[4 * i]
        d1 = acc[4 * i + 1]
        d2 = acc[4 * i + 2]
        d3 = acc[4 * i + 3]
        for j in tl.static_range(1, KW):
            r0, r1, r2, r3 = tl.inline_asm_elementwise(
                _LDS4P, "=r,=r,=r,=r,r,r", [base + (i * (KW - 1) * RW * 32 + (j - 1) * RW * 32 + tid) * 16,
                                            keep.to(tl.int32)],
                dtype=(tl.int32, tl.int32, tl.int32, tl.int32), is_pure=False, pack=1)
            d0 += r0.to(tl.float32, bitcast=True)
            d1 += r1.to(tl.float32, bitcast=True)
            d2 += r2.to(tl.float32, bitcast=True)
            d3 += r3.to(tl.float32, bitcast=True)
        out = out + (d0, d1, d2, d3)
    return out, keep


@triton.jit
def _gemv_lanes(qw_ptr, N, K, stride_qn, SPLIT_K, pid_n, pid_k, NW: tl.constexpr, RB: tl.constexpr,
                NV: tl.constexpr, KW: tl.constexpr = 1):
    """Where this thread works in the mma GEMV's program (``pid_n``: its row tile, ``pid_k``: its K
    slice): ``t`` = ``tl.arange(0, NW * 32)``, the thread's ``tid`` / ``lane`` / ``warp`` and its
    fragment coordinates ``g = lane // 4``, ``c = lane % 4`` (int32 ``[NW * 32]``), the padded words
    per weight row ``K8P``, K tiles per slice and this slice's tiles ``[t0, t1)`` (of ``128 NV`` values),
    and per row-block r of the warp its row g (``ROWS[r]``; output rows ``ROWS[r]``, ``ROWS[r] + 8``)
    and the pointer to that row's words (``QP[r]``; row-blocks past the padded weight read the last one:
    always in bounds, their outputs are masked).  ``KW``: warps sharing the same rows (warp ``w`` has
    the rows of group ``w % (NW / KW)`` and takes every ``KW``-th K tile of the slice from
    ``w // (NW / KW)`` on)."""
    t = tl.arange(0, NW * 32)
    tid = tl.inline_asm_elementwise("mov.u32 $0, %tid.x;", "=r,r", [t], dtype=tl.int32, is_pure=True, pack=1)
    lane = tid % 32
    warp = tid // 32
    g = lane // 4
    c = lane % 4
    NRB = tl.cdiv(N, 16)
    K8P = stride_qn // 16
    rb0 = (pid_n * (NW // KW) + warp % (NW // KW)) * RB
    k_tiles = tl.cdiv(K, 128 * NV)
    per_split = tl.cdiv(k_tiles, SPLIT_K)
    t0 = pid_k * per_split
    t1 = tl.minimum(t0 + per_split, k_tiles)
    ROWS = ()
    QP = ()
    for r in tl.static_range(RB):
        ROWS = ROWS + (rb0 * 16 + r * 16 + g,)
        QP = QP + (qw_ptr + tl.minimum(rb0 + r, NRB - 1).to(tl.int64) * stride_qn + g * 32,)
    return t, tid, lane, warp, g, c, K8P, per_split, t0, t1, ROWS, QP


@triton.jit
def mma_gemv_kernel(x_ptr, qw_ptr, s_ptr, z_ptr, b_ptr, out_ptr, ws_ptr, lock_ptr, qx_ptr, M, N, K, stride_xm,
                    stride_om, stride_qn, SPLIT_K, MB,
                    GROUP: tl.constexpr, PER_CHANNEL: tl.constexpr, HAS_ZERO: tl.constexpr,
                    HAS_BIAS: tl.constexpr, IS_BF16: tl.constexpr, SPLIT: tl.constexpr, SERIAL: tl.constexpr,
                    EVICT: tl.constexpr, FOLD: tl.constexpr, EVEN_K: tl.constexpr, A8: tl.constexpr,
                    ASYM: tl.constexpr, NB: tl.constexpr, RB: tl.constexpr, NV: tl.constexpr, NW: tl.constexpr,
                    PDL: tl.constexpr = False, PF: tl.constexpr = False, A8PRE: tl.constexpr = False,
                    QB: tl.constexpr = 0, PRIV: tl.constexpr = False, SMC: tl.constexpr = 0,
                    KW: tl.constexpr = 1, EARLY: tl.constexpr = False):
    """y (M, N) = x (M, K) @ dequant(W).T (+ bias); each program takes ``8 * NB`` rows of x (NB = 1,
    2, 4 or 8 MMAs per weight fragment; ``MB`` = ceil(M / (8 NB)) programs share a weight tile and
    run next to each other: program id = tile * MB + m-block).

    x: bf16/fp16 (M, K), row stride ``stride_xm`` (a multiple of 8 elements, 16-byte aligned base),
    K % 8 == 0.  qw: int32 blocked (N/16, K8/32, 16, 32) layout in the paired nibble order,
    ``stride_qn`` its row-block stride in words (N and K8 zero padded to the block).  s: (G, N) in
    x's dtype; z: int8 (G, N) or unused.  out: (M, N) row stride ``stride_om``.  A program covers
    ``NW * RB * 16`` output rows (``RB`` = 1, 2 or 4 row-blocks per warp) and ``1/SPLIT_K`` of the K
    tiles of ``128 * NV`` values; per tile, lane c of a warp reads words ``16 v + 4 c .. + 3`` of its
    two rows for v < NV (64 contiguous bytes per row and load instruction).
    ``SPLIT`` (SPLIT_K > 1): fp32 partials go to slice ``pid_k`` of ws (SPLIT_K, M, N); with
    ``SERIAL`` the last program of a tile to finish (int32 counter ``lock_ptr[tile]``, zero before
    and after the launch) sums the slices into out, else ``jit.finish_kernel`` does.
    ``FOLD`` (GROUP >= 128 or per-channel): zero point and scale in fp32 per group (:func:`_tile_fold`)
    instead of per weight in packed 16-bit math.  ``EVEN_K``: K % (128 NV) == 0 (no K masks).
    ``A8`` (M = 1, bf16, FOLD; the weights in the plain nibble order of the A8W4 layout): A8W4 with the
    per-token activation quantization fused in (:func:`_quantize_row`): the codes ``q - za`` are
    exact bf16 integers, every product and every v-block sum (< 2**24) is an exact integer in fp32, so
    ``s_w * (t - (128 + z) xs)`` is the reference's ``float(int32 group sum) * s_w``; the result is
    multiplied by the activation scale.  ``qx_ptr``: bf16 scratch (K,) for the codes.
    ``PDL`` (launched with programmatic dependent launch): every program first loads its first K
    tile's weights into registers (``PF``) or else asks L2 for all of its weight blocks (one bulk
    prefetch per row-block: these are constant, not written by earlier kernels), and only then waits
    for the previous kernel (``griddepcontrol.wait``) before reading x, the counters or writing
    anything; so the weight stream of this kernel overlaps the tail of the previous one.  Each
    program lets the next kernel launch once its weight stream is done.  Off by default for A16W4
    (``ops._PDL``): on the H100, back-to-back GEMVs got 7-30% slower with it (trigger at the start
    or after the K loop alike).
    ``PF``: register double buffer: the words and scales of K tile ``it + 1`` are requested before
    the MMAs of tile ``it`` (measured slower on the H100 for A16W4 at M = 1: more registers, fewer
    programs per SM; used with ``A8PRE``, where it fills the wait for the quantization kernel).
    ``A8PRE`` (with ``A8``): the codes and the activation scale were written to ``qx`` by
    :func:`quantize_codes_kernel`, launched just before this kernel (which runs with ``PDL``).
    ``QB`` (with ``A8``, not ``A8PRE``): :func:`_quantize_row` sweeps x in blocks of ``QB`` values.
    ``SMC`` (``A8`` without ``A8PRE``; bytes, > 0): the program's codes go to a static shared-memory row
    of ``SMC`` bytes (its K slice, bf16, declared in inline PTX: Triton gives inline PTX no shared
    memory of its own) instead of the global scratch: written by ``st.shared``, one barrier, read back
    by ``ld.shared`` in the fragment order (no L2 round trip); ``qx_ptr`` is then unused.
    ``KW`` (2, 4 or 8 dividing ``NW``): split-K inside the program: the
    ``NW`` warps form ``NW / KW`` row groups of ``KW`` warps that read the same rows and take every
    ``KW``-th K tile of the slice (a warp past the slice's end re-reads its last tile with zero scales);
    the ``KW`` partial sums of a row meet in shared memory (:func:`_sum_k_warps`) before the store, so
    the program covers ``NW / KW * RB * 16`` rows.
    ``EARLY`` (not with ``PF``): each warp requests its first K tile's words and scales as the program
    starts, before the A8 quantization prologue (and, with ``PDL``, before the wait), so that prologue
    runs while they are in flight; that tile is computed before the loop over the others.
    """
    pid0 = tl.program_id(0)
    pid_k = tl.program_id(1)
    pid_m = pid0 % MB
    pid_n = pid0 // MB
    CK: tl.constexpr = 128 * NV
    t, tid, lane, warp, g, c, K8P, per_split, t0, t1, ROWS, QP = _gemv_lanes(qw_ptr, N, K, stride_qn, SPLIT_K, pid_n,
                                                                             pid_k, NW, RB, NV, KW)
    if KW > 1:
        kw = warp // (NW // KW)  # this warp's first K tile of the slice
    else:
        kw = 0
    # per 8-row block nb of x: row 8 nb + g of this program's rows (its B fragment column)
    XP = ()
    for nb in tl.static_range(NB):
        mrow = pid_m * (8 * NB) + nb * 8 + g
        XP = XP + (x_ptr + tl.minimum(mrow, M - 1).to(tl.int64) * stride_xm,)
    if PF or EARLY:
        # the first K tile's words and scales (constant data: safe before ``gdc_wait``); a warp with no
        # tile in the slice loads nothing (its scales are zeroed below)
        first = tl.maximum(tl.minimum(t0 + kw, t1 - 1), t0)
        first_live = t0 + kw < t1
        WN = _load_w(QP, first, c, K8P, EVICT, RB, NV, first_live)
        if not PER_CHANNEL:
            SN = _load_s(s_ptr, z_ptr, first, c, ROWS, N, K, HAS_ZERO, IS_BF16, GROUP, RB, NV, FOLD)
    if PDL:
        if not (PF or EARLY):
            kb0 = (t0 * CK) // 256
            kb1 = tl.minimum(tl.cdiv(t1 * CK, 256), stride_qn // 512)
            nbytes = tl.where((lane == 0) & (kw == 0) & (t1 > t0), (kb1 - kb0) * 2048, 0)
            for r in tl.static_range(RB):
                _prefetch_l2(QP[r] - g * 32 + kb0 * 512, nbytes)  # the row-block's first word of the slice
        gdc_wait()
    if IS_BF16:
        magic = tl.full([NW * 32], 0x43004300, tl.int32)
        ones = tl.full([NW * 32], 0x3F803F80, tl.int32)
    else:
        magic = tl.full([NW * 32], 0x64006400, tl.int32)
        ones = tl.full([NW * 32], 0x3C003C00, tl.int32)
    zero = tl.zeros([NW * 32], dtype=tl.float32)
    acc = ()
    for i in tl.static_range(NB * RB * 4):
        acc = acc + (zero,)
    if PER_CHANNEL:
        S = ()
        for v in tl.static_range(NV):
            for r in tl.static_range(RB):
                if FOLD:
                    zz, ss = _szf(s_ptr, z_ptr, 0, ROWS[r], N, g >= 0, HAS_ZERO, IS_BF16)
                    zz8, ss8 = _szf(s_ptr, z_ptr, 0, ROWS[r] + 8, N, g >= 0, HAS_ZERO, IS_BF16)
                else:
                    zz, ss = _sz(s_ptr, z_ptr, 0, ROWS[r], N, g >= 0, HAS_ZERO, IS_BF16)
                    zz8, ss8 = _sz(s_ptr, z_ptr, 0, ROWS[r] + 8, N, g >= 0, HAS_ZERO, IS_BF16)
                S = S + (zz, zz8, ss, ss8)
    if PRIV:  # this program's own code rows: (program, K slice) -> per_split * CK values
        qx_ptr = qx_ptr + (pid0 * SPLIT_K + pid_k).to(tl.int64) * (per_split * CK) - t0 * CK
    if A8:
        if A8PRE:  # codes and scale written by quantize_codes_kernel
            sa = tl.load((qx_ptr + tl.cdiv(K, 512) * 512).to(tl.pointer_type(tl.float32)))
        else:
            if SMC:  # the code row in shared memory, entry 0 = K t0 * CK
                qx_ptr = tl.inline_asm_elementwise(_static_shared_asm("nybble_codes", SMC), "=r,r", [pid0],
                                                   dtype=tl.int32, is_pure=True, pack=1) - t0 * CK * 2  # a scalar
            sa = _quantize_row(x_ptr, qx_ptr + (t0 * CK * 2 if SMC else 0), tid, K, t0 * CK,
                               tl.minimum(t1 * CK, K), t1 * CK, ASYM, NW, QB, SMC)
    start = t0
    if EARLY:  # the first tile, requested before the prologue (none in an empty slice)
        if t1 > t0:
            if not PER_CHANNEL:
                S = SN
            if KW > 1:
                ST = _live_only(S, first_live)
            else:
                ST = S
            acc = _tile_any(WN, ST, acc, XP, qx_ptr, first * CK, c, K, magic, ones, zero, IS_BF16, NB, RB, NV,
                            EVEN_K, A8, FOLD, SMC)
        start = t0 + KW
    for it0 in range(start, t1, KW):
        if KW > 1:
            it = tl.minimum(it0 + kw, t1 - 1)
        else:
            it = it0
        if PF:
            # register double buffer: the next K tile's words (and scales) are requested before this
            # tile's MMAs, so each thread keeps a tile of loads in flight while it computes (none past
            # the slice's end)
            W = WN
            nxt = it0 + KW + kw  # this warp's next tile (kw = 0 without K warps); none past the slice
            nxt_at = tl.minimum(nxt, t1 - 1)
            WN = _load_w(QP, nxt_at, c, K8P, EVICT, RB, NV, nxt < t1)
            if not PER_CHANNEL:
                S = SN
                SN = _load_s(s_ptr, z_ptr, nxt_at, c, ROWS, N, K, HAS_ZERO, IS_BF16, GROUP, RB, NV, FOLD)
        else:
            W = _load_w(QP, it, c, K8P, EVICT, RB, NV)
            if not PER_CHANNEL:
                S = _load_s(s_ptr, z_ptr, it, c, ROWS, N, K, HAS_ZERO, IS_BF16, GROUP, RB, NV, FOLD)
        if KW > 1:  # a warp past the slice's end: its clamped tile counts zero
            ST = _live_only(S, it0 + kw < t1)
        else:
            ST = S
        acc = _tile_any(W, ST, acc, XP, qx_ptr, it * CK, c, K, magic, ones, zero, IS_BF16, NB, RB, NV, EVEN_K, A8,
                        FOLD, SMC)
    if PDL:
        # the next kernel may launch once every program is past its weight stream (only the
        # epilogue is left): its programs take free slots, not those of this kernel's later programs
        gdc_launch_dependents()
    if KW > 1:  # the KW partials of each row group meet in its first warp
        acc, keep = _sum_k_warps(acc, tid, NW, KW)
        kept = ()
        for r in tl.static_range(RB):  # rows past N mask the other warps' stores
            kept = kept + (tl.where(keep, ROWS[r], N),)
        ROWS = kept
    if A8:
        scaled = ()
        for i in tl.static_range(NB * RB * 4):
            scaled = scaled + (acc[i] * sa,)
        acc = scaled
    if SPLIT:
        wsl = ws_ptr + pid_k.to(tl.int64) * M * N
        for nb in tl.static_range(NB):
            for r in tl.static_range(RB):
                _store_ws(wsl, acc[(nb * RB + r) * 4], acc[(nb * RB + r) * 4 + 1], acc[(nb * RB + r) * 4 + 2],
                          acc[(nb * RB + r) * 4 + 3], pid_m * (8 * NB) + nb * 8 + 2 * c, ROWS[r], M, N)
        if SERIAL:
            # every thread's partial stores, then (one thread, gpu scope) release + count; the last
            # program of the tile acquires and sums the slices from L2
            tl.debug_barrier()
            prev = tl.atomic_add(lock_ptr + pid0, 1, sem="acq_rel", scope="gpu")
            if prev == SPLIT_K - 1:   # every other split of this tile has stored its partial
                tl.atomic_xchg(lock_ptr + pid0, 0, sem="relaxed", scope="gpu")
                for nb in tl.static_range(NB):
                    for r in tl.static_range(RB):
                        _reduce_out(ws_ptr, out_ptr, b_ptr, pid_m * (8 * NB) + nb * 8 + 2 * c, ROWS[r], M, N,
                                    stride_om, SPLIT_K, HAS_BIAS, IS_BF16)
    else:
        for nb in tl.static_range(NB):
            for r in tl.static_range(RB):
                _store_out(out_ptr, b_ptr, acc[(nb * RB + r) * 4], acc[(nb * RB + r) * 4 + 1],
                           acc[(nb * RB + r) * 4 + 2], acc[(nb * RB + r) * 4 + 3], pid_m * (8 * NB) + nb * 8 + 2 * c,
                           ROWS[r], M, N, stride_om, HAS_BIAS, IS_BF16)


@triton.jit
def quantize_codes_kernel(x_ptr, qx_ptr, K, ASYM: tl.constexpr, BLOCK: tl.constexpr, PDL: tl.constexpr):
    """One program: per-token int8 quantization of x row 0 (bf16 (K,)) for the ``A8PRE`` mode of
    :func:`mma_gemv_kernel`, bit for bit as :func:`_quantize_row`: the codes ``q - za`` as exact
    bf16 integers at the MMA fragment positions (K padded with zeros to ``KP = ceil(K / 512) * 512``),
    then the activation scale as one fp32 at element ``KP`` (``qx``: bf16 (KP + 2,)).  ``BLOCK``
    values per step (>= K where it can: one pass for the scale, the second from L1).  With ``PDL``
    the GEMV launched after it may start at once (it loads its first weights, then waits for this
    kernel with ``griddepcontrol.wait``)."""
    if PDL:
        gdc_launch_dependents()
    offs = tl.arange(0, BLOCK)
    kp = tl.cdiv(K, 512) * 512
    sa, za = row_qparams(x_ptr, offs, K, ASYM=ASYM, BLOCK=BLOCK)
    _store_codes(x_ptr, qx_ptr, offs, 0, K, kp, sa, za, ASYM, BLOCK)
    tl.store((qx_ptr + kp).to(tl.pointer_type(tl.float32)), sa)
