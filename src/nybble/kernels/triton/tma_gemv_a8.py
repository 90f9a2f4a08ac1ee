"""A8W4 at M = 1 on Hopper: a Gluon GEMV whose weights stream through a TMA ring while x is quantized.

Why: every A8W4 kernel must quantize the activation row (its maximum, then the codes) before the
first integer product, one dependent round trip that A16W4 does not have (the mma / dp4a GEMVs of
``mma.py`` / ``jit.py`` spend 1.11-1.26x A16W4's time at M = 1).  Here a loader warp first copies the
activation row into shared memory, then streams the program's weight words (and their group
parameters) through ``STAGES`` shared-memory slots by TMA, while the 4 or 8 compute warps quantize
the row (the codes of the K blocks the program uses, in a prologue); the products are cheap on dp4a.
Measured on the H100 (``benchmarks/gpu/README.md``, eighth session): 8192x28672 49.4 us against
A16W4's 48.5, 4096x14336 16.4 against 14.7 (the shipped table uses it there, during CUDA-graph capture
only: its Gluon launch costs ~150 us of CPU per eager call, see ``ops.launch_a8w4``); on the two 4096-row
shapes it is not faster than the older paths: a per-program cost of ~3-4 us remains (the quantization
prologue, and the row groups shared between programs, whose partials meet at the end).

What one program computes: the programs split the layer's *units* (``BOX_RB`` row blocks of 16 rows
x one 256-wide K block = ``BOX_RB`` x 2 KiB of the blocked layout ``(N/16, K8/32, 16, 32)``) into
equal contiguous ranges (so every SM gets the same bytes whatever the shape), walking a row group's
K blocks in order.  A row group that lies wholly in one program's range is finished there; one
shared by several programs is summed in program order by the last of them to finish (fp32 partials
in ``part_ptr``, one int32 counter per row group in ``cnt_ptr``, left at zero): deterministic.

Arithmetic (exact, like the reference): the activation codes ``qa`` (int8; asymmetric: the uint8
code minus 128) of a K block are written to shared memory in the ``PERM8`` order, as two int32 per
weight word: the codes of K offsets 0, 2, 4, 6 and 1, 3, 5, 7 of the word, i.e. of its even and its
odd nibbles.  Per word, ``dp4a(w & 0x0F0F0F0F, even) + dp4a((w >> 4) & 0x0F0F0F0F, odd)`` is the exact
sum of ``qa * q`` over its 8 codes; per group ``sum(qa * q) - z * xs[g]`` (``xs[g]`` = the group's sum
of ``qa``) is the exact ``sum(qa * (q - z))``, minus ``(za - 128) * wsum[g, n]``
for asymmetric activations: the reference's int32 group sum.  ``y = sa * sum_g fp32(sum_g) *
s[g, n] (+ bias)``, in the scale's dtype.  The quantization is bit-exact with
``primitives.quantize_activations`` (IEEE divisions, round half to even).

Inputs (``ops._tma_gemv_a8``): TMA descriptors of the activation row ``x`` ``(K,)`` bf16 / fp16,
block ``[256]``; of the blocked A8W4 words (plain nibble order) as ``(N/16, K8/32 * 16, 32)`` int32,
block ``[BOX_RB, 16, 32]``; of the scale ``(G, N)``, the zero point ``(G, N)`` int8 (``HAS_ZERO``) and
the weight sums ``(G, N)`` int64 (``ASYM``), blocks ``[256 / GROUP, BOX_RB * 16]`` (at least 128
bytes, so that every TMA slot starts 128-byte aligned);
``b_ptr`` ``(N,)``; ``out_ptr`` ``(1, N)``; ``part_ptr`` fp32 ``(programs, 2, BOX_RB * 16)``;
``cnt_ptr`` int32 (>= row groups, zero).  Constraints (``ops.tma_gemv_a8_ok``): sm_90, M = 1, groups
of 32, 64 or 128 (a group of 256 makes size-1 dimensions in the shared-memory views, which Triton 3.6's
layout code rejects), N % 16 == 0, K <= ``MAX_K``.
"""
from __future__ import annotations

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma
from triton.runtime.jit import constexpr_function

#: largest K served (the activation row stays in shared memory: 2 K bytes)
MAX_K = 32768

_DIV_RN = gl.constexpr("div.rn.f32 $0, $1, $2;")
_RINT = gl.constexpr("cvt.rni.f32.f32 $0, $1;")
#: the exact sum of qa * q over one word's 8 codes: even nibbles x the even codes, odd x odd
_DOT8 = gl.constexpr("{ .reg .b32 e, o; and.b32 e, $1, 0x0F0F0F0F; shr.u32 o, $1, 4; "
                     "and.b32 o, o, 0x0F0F0F0F; dp4a.s32.s32 $0, e, $2, 0; dp4a.s32.s32 $0, o, $3, $0; }")


@gluon.jit
def _div_rn(a, b):
    return gl.inline_asm_elementwise(_DIV_RN, "=f,f,f", [a, b], dtype=gl.float32, is_pure=True, pack=1)


@gluon.jit
def _rint(v):
    return gl.inline_asm_elementwise(_RINT, "=f,f", [v], dtype=gl.float32, is_pure=True, pack=1)


@gluon.jit
def _loader(x_desc, w_desc, s_desc, z_desc, ws_desc, xbuf, wbuf, sbuf, zbuf, wsbuf, xbar, ready, empty, u0,
            n_units, KB, BOX_RB: gl.constexpr, STAGES: gl.constexpr, GPB: gl.constexpr, HAS_ZERO: gl.constexpr,
            ASYM: gl.constexpr, XB: gl.constexpr):
    """Worker partition (one warp): the TMA of the activation row (``XB`` boxes of 256 values, zeros
    past K), then of the program's units, in order, each into a slot the compute warps released."""
    mbarrier.expect(xbar, XB * x_desc.block_type.nbytes)
    for j in range(XB):
        tma.async_copy_global_to_shared(x_desc, [j * 256], xbar, xbuf.index(j))
    NBYTES: gl.constexpr = (w_desc.block_type.nbytes + s_desc.block_type.nbytes
                            + z_desc.block_type.nbytes * HAS_ZERO + ws_desc.block_type.nbytes * ASYM)
    for i in range(n_units):
        slot = i % STAGES
        mbarrier.wait(empty.index(slot), ((i // STAGES) & 1) ^ 1, pred=i >= STAGES)
        u = u0 + i
        rg = u // KB
        kb = u - rg * KB
        bar = ready.index(slot)
        mbarrier.expect(bar, NBYTES)
        tma.async_copy_global_to_shared(w_desc, [rg * BOX_RB, kb * 16, 0], bar, wbuf.index(slot))
        tma.async_copy_global_to_shared(s_desc, [kb * GPB, rg * BOX_RB * 16], bar, sbuf.index(slot))
        if HAS_ZERO:
            tma.async_copy_global_to_shared(z_desc, [kb * GPB, rg * BOX_RB * 16], bar, zbuf.index(slot))
        if ASYM:
            tma.async_copy_global_to_shared(ws_desc, [kb * GPB, rg * BOX_RB * 16], bar, wsbuf.index(slot))


@constexpr_function
def _unit_layout(group, num_warps):
    """Layout of a unit's words as ``[BOX_RB, 16, 256 / GROUP, GROUP / 8]`` (row block, row, group,
    word in group): a thread holds 4 consecutive words of one row (one 16-byte shared load), the 8
    threads of a row's 32 words are lanes ``(lane % 8)``, rows spread over the other lanes and 4
    warps, row blocks over ``num_warps / 4`` warps."""
    gw = group // 8
    per = min(4, gw)
    tw = gw // per  # threads along the words of a group
    return gl.BlockedLayout([1, 1, 1, per], [1, 4, 8 // tw, tw], [num_warps // 4, 4, 1, 1], [3, 2, 1, 0])


@gluon.jit
def _chunk_codes(x4, j, s, z, codes_e, codes_o, xsum, ASYM: gl.constexpr, GROUP: gl.constexpr):
    """The codes of K blocks ``4 j .. 4 j + 3`` (see :func:`_quantize_row`)."""
    v = x4.index(j).load(s.type.layout).to(gl.float32)
    r = _rint(_div_rn(v, s))
    if ASYM:
        r = gl.minimum(gl.maximum(r + z, 0.0), 255.0) - 128.0
    else:
        r = gl.minimum(gl.maximum(r, -127.0), 127.0)
    q = r.to(gl.int32)
    # (K block, word, byte j, parity p): byte j of word p holds the code of K offset 8 w + 2 j + p
    q4 = gl.reshape(q & 0xFF, [4, 32, 4, 2])
    sh = gl.arange(0, 4, layout=gl.SliceLayout(0, gl.SliceLayout(0, gl.SliceLayout(3, q4.type.layout)))) * 8
    sh4 = gl.expand_dims(gl.expand_dims(gl.expand_dims(sh, 0), 0), 3)
    even, odd = gl.split(gl.sum(q4 << sh4, axis=2))
    codes_e.index(j).store(even)
    codes_o.index(j).store(odd)
    xsum.index(j).store(gl.sum(gl.reshape(q, [4, 256 // GROUP, GROUP]), axis=2))


@gluon.jit
def _chunk_needed(j, k0, n, KB):
    """Does the program use one of K blocks ``4 j .. 4 j + 3``: its ``n`` units start at K block ``k0``
    of a row group and go on cyclically (into the next row groups)?"""
    need = n >= KB
    for t in gl.static_range(4):
        need = need | ((4 * j + t < KB) & ((4 * j + t - k0 + KB) % KB < n))
    return need


@gluon.jit
def _quantize_row(xbuf, codes_e, codes_o, xsum, k0, n, KB, ASYM: gl.constexpr, GROUP: gl.constexpr,
                  XB: gl.constexpr, XBP: gl.constexpr, NW: gl.constexpr):
    """Quantize the activation row (``xbuf`` ``[XBP, 256]``, rows ``>= XB`` unused) into shared
    memory, bit-exact with ``quantize_activations``: per K block ``kb`` that the program's ``n`` units
    (from K block ``k0`` of a row group on) use, ``codes_e[kb]`` / ``codes_o[kb]`` the 32 words' codes
    of their even / odd K offsets (4 int8 per int32, the ``PERM8`` bytes) and ``xsum[kb]`` the group
    sums of the codes (the buffers viewed ``[XBP / 4, 4, ...]``).  Codes: int8; asymmetric: the uint8
    code minus 128.  Returns ``(sa, za - 128)``.  Up to 16 steps of 4 K blocks are unrolled (their
    shared-memory loads and divisions interleave)."""
    XL: gl.constexpr = gl.BlockedLayout([1, 32 // NW], [1, 32], [4, NW // 4], [1, 0])  # [4, 256] over NW warps
    RL: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, [1, 0])
    x4 = xbuf._reinterpret(xbuf.dtype, [XBP // 4, 4, 256], RL)
    rows = gl.expand_dims(gl.arange(0, 4, layout=gl.SliceLayout(1, XL)), 1)
    lo = gl.zeros([4, 256], gl.float32, layout=XL)
    hi = gl.zeros([4, 256], gl.float32, layout=XL)
    if XBP // 4 <= 16:
        for j in gl.static_range(XBP // 4):
            lo, hi = _minmax(gl.where(rows + 4 * j < XB, x4.index(j).load(XL).to(gl.float32), 0.0), lo, hi, ASYM)
    else:
        for j in range(XBP // 4):
            lo, hi = _minmax(gl.where(rows + 4 * j < XB, x4.index(j).load(XL).to(gl.float32), 0.0), lo, hi, ASYM)
    # the scale (and zero point) as tensors of equal values (inline PTX works on tensors)
    zero = gl.zeros([4, 256], gl.float32, layout=XL)
    if ASYM:
        lo_r = zero + gl.min(gl.min(lo, axis=1), axis=0)
        s = _div_rn(zero + gl.max(gl.max(hi, axis=1), axis=0) - lo_r, zero + 255.0)
        s = gl.where(s == 0.0, 1.0, s)
        z = _rint(_div_rn(-lo_r, s))
        z = gl.minimum(gl.maximum(z, 0.0), 255.0)
    else:
        s = _div_rn(zero + gl.max(gl.max(hi, axis=1), axis=0), zero + 127.0)
        s = gl.where(s == 0.0, 1.0, s)
        z = zero
    if XBP // 4 <= 16:
        for j in gl.static_range(XBP // 4):
            if _chunk_needed(j, k0, n, KB):
                _chunk_codes(x4, j, s, z, codes_e, codes_o, xsum, ASYM, GROUP)
    else:
        for j in range(XBP // 4):
            if _chunk_needed(j, k0, n, KB):
                _chunk_codes(x4, j, s, z, codes_e, codes_o, xsum, ASYM, GROUP)
    return gl.max(gl.max(s, axis=1), axis=0), gl.max(gl.max(z, axis=1), axis=0).to(gl.int32) - 128


@gluon.jit
def _minmax(v, lo, hi, ASYM: gl.constexpr):
    """Running minimum and maximum (``ASYM``) or maximum of |v| (symmetric, in ``hi``)."""
    if ASYM:
        return gl.minimum(lo, v), gl.maximum(hi, v)
    return lo, gl.maximum(hi, gl.abs(v))


@gluon.jit
def _flush(acc, rg, first, rg_first, pid, nprog, n_units, KB, sa, b_ptr, out_ptr, part_ptr, cnt_ptr, N,
           HAS_BIAS: gl.constexpr, ROWS: gl.constexpr):
    """Row group ``rg`` is done in this program: store it, or (shared with other programs) store the
    partial, and if this program is the last of them to finish, sum the partials in program order
    and store the sum.  ``acc`` fp32 ``[BOX_RB, 16]``; ``first``: is this group complete here."""
    L: gl.constexpr = acc.type.layout
    rb = gl.arange(0, acc.shape[0], layout=gl.SliceLayout(1, L))
    rr = gl.arange(0, 16, layout=gl.SliceLayout(0, L))
    local = gl.expand_dims(rb, 1) * 16 + gl.expand_dims(rr, 0)
    rows = rg * ROWS + local
    done = first
    if not first:
        slot = (rg != rg_first).to(gl.int32)
        gl.store(part_ptr + (pid * 2 + slot) * ROWS + local, acc)
        gl.thread_barrier()  # every thread's partial is written before the counter moves
        p_first = ((rg * KB + 1) * nprog - 1) // n_units  # the program holding the group's first unit
        p_last = (((rg + 1) * KB) * nprog - 1) // n_units
        done = gl.atomic_add(cnt_ptr + rg, 1, sem="acq_rel", scope="gpu") == p_last - p_first
        if done:
            total = gl.zeros_like(acc)
            for p in range(p_first, p_last + 1):
                s_p = ((((p * n_units) // nprog) // KB) != rg).to(gl.int32)  # the group is p's first: slot 0
                total += gl.load(part_ptr + (p * 2 + s_p) * ROWS + local, cache_modifier=".cg")
            gl.store(cnt_ptr + rg, 0)
            acc = total
    if done:
        y = acc * sa
        if HAS_BIAS:
            y += gl.load(b_ptr + rows, mask=rows < N, other=0.0).to(gl.float32)
        gl.store(out_ptr + rows, y.to(out_ptr.dtype.element_ty), mask=rows < N)


@gluon.jit
def _compute(b_ptr, out_ptr, part_ptr, cnt_ptr, xbuf, wbuf, sbuf, zbuf, wsbuf, codes_e, codes_o, xsum, xbar,
             ready, empty, u0, u1, pid, nprog, n_units, KB, N,
             GROUP: gl.constexpr, HAS_ZERO: gl.constexpr, HAS_BIAS: gl.constexpr, ASYM: gl.constexpr,
             BOX_RB: gl.constexpr, STAGES: gl.constexpr, XB: gl.constexpr, XBP: gl.constexpr,
             NW: gl.constexpr):
    """Default partition (``NW`` = 4 or 8 warps): quantize the row (:func:`_quantize_row`), then per unit the dp4a
    word sums, the exact group sums and their rescale, all in the layout of :func:`_unit_layout`
    (the unit's words and parameters are read from their slots in that layout: no conversions);
    flush each row group (:func:`_flush`)."""
    GPB: gl.constexpr = 256 // GROUP
    GW: gl.constexpr = GROUP // 8
    ROWS: gl.constexpr = BOX_RB * 16
    mbarrier.wait(xbar, 0)
    sa, zam = _quantize_row(xbuf, codes_e, codes_o, xsum, u0 % KB, u1 - u0, KB, ASYM, GROUP, XB, XBP, NW)
    gl.thread_barrier()  # every warp's codes are in shared memory
    L4: gl.constexpr = _unit_layout(GROUP, NW)
    GL: gl.constexpr = gl.SliceLayout(3, L4)       # [BOX_RB, 16, GPB]
    AL: gl.constexpr = gl.SliceLayout(2, GL)       # [BOX_RB, 16]
    CL: gl.constexpr = gl.SliceLayout(0, gl.SliceLayout(0, L4))  # [GPB, GW]
    XSL: gl.constexpr = gl.SliceLayout(0, gl.SliceLayout(0, GL))  # [GPB]
    # the codes as one row per K block (rank-1 layouts: indexed by K block)
    KL2: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, [1, 0])
    ce_kb = codes_e._reinterpret(gl.int32, [XBP, GPB, GW], KL2)
    co_kb = codes_o._reinterpret(gl.int32, [XBP, GPB, GW], KL2)
    xs_kb = xsum._reinterpret(gl.int32, [XBP, GPB], gl.SwizzledSharedLayout(1, 1, 1, [0]))
    rg_first = u0 // KB
    rg_last = (u1 - 1) // KB
    i = 0
    for rg in range(rg_first, rg_last + 1):
        k_lo = gl.maximum(u0, rg * KB) - rg * KB
        k_hi = gl.minimum(u1, (rg + 1) * KB) - rg * KB
        acc = gl.zeros([BOX_RB, 16], gl.float32, layout=AL)
        for kb in range(k_lo, k_hi):
            slot = i % STAGES
            mbarrier.wait(ready.index(slot), (i // STAGES) & 1)
            words = wbuf.index(slot).reshape([BOX_RB, 16, GPB, GW]).load(L4)
            s3 = _params(sbuf.index(slot), GPB, BOX_RB, GL).to(gl.float32)
            if HAS_ZERO:
                z3 = _params(zbuf.index(slot), GPB, BOX_RB, GL).to(gl.int32)
            if ASYM:
                w3 = _params(wsbuf.index(slot), GPB, BOX_RB, GL).to(gl.int32)
            gl.thread_barrier()  # every warp has read the slot
            mbarrier.arrive(empty.index(slot))
            i += 1
            ce = gl.expand_dims(gl.expand_dims(ce_kb.index(kb).load(CL), 0), 0)
            co = gl.expand_dims(gl.expand_dims(co_kb.index(kb).load(CL), 0), 0)
            d = gl.inline_asm_elementwise(_DOT8, "=r,r,r,r", [words, ce, co], dtype=gl.int32, is_pure=True, pack=1)
            gsum = gl.sum(d, axis=3)  # [BOX_RB, 16, GPB]: the exact sums of qa * q
            xs3 = gl.expand_dims(gl.expand_dims(xs_kb.index(kb).load(XSL), 0), 0)
            if HAS_ZERO:
                gsum = gsum - z3 * xs3
            else:
                gsum = gsum - 8 * xs3
            if ASYM:
                gsum = gsum - zam * w3
            acc += gl.sum(gsum.to(gl.float32) * s3, axis=2)
        whole = (k_lo == 0) & (k_hi == KB)
        _flush(acc, rg, whole, rg_first, pid, nprog, n_units, KB, sa, b_ptr, out_ptr, part_ptr, cnt_ptr, N,
               HAS_BIAS, ROWS)


@gluon.jit
def _params(slot_buf, GPB: gl.constexpr, BOX_RB: gl.constexpr, GL: gl.constexpr):
    """A unit's group parameters from their slot (``[GPB, BOX_RB * 16]``) as
    ``[BOX_RB, 16, GPB]`` in layout ``GL`` (read straight from shared memory through a permuted view)."""
    return slot_buf.reshape([GPB, BOX_RB, 16]).permute([1, 2, 0]).load(GL)


@gluon.jit
def a8w4_tma_gemv_kernel(x_desc, w_desc, s_desc, z_desc, ws_desc, b_ptr, out_ptr, part_ptr, cnt_ptr, N,
                         GROUP: gl.constexpr, HAS_ZERO: gl.constexpr, HAS_BIAS: gl.constexpr,
                         ASYM: gl.constexpr, STAGES: gl.constexpr, XB: gl.constexpr, XBP: gl.constexpr,
                         num_warps: gl.constexpr):
    """Grid ``(programs,)``: program ``p`` takes units ``[p U / P, (p + 1) U / P)`` of the ``U`` =
    ``n_units`` (row groups x ``KB`` K blocks).  ``XB``: boxes of 256 activation values (K blocks),
    ``XBP``: ``XB`` rounded up to a multiple of 4.  See the module docstring."""
    BOX_RB: gl.constexpr = w_desc.block_type.shape[0]
    KB: gl.constexpr = XB  # K blocks of 256 per row group
    n_units = gl.cdiv(gl.cdiv(N, 16), BOX_RB) * KB
    GPB: gl.constexpr = 256 // GROUP
    pid = gl.program_id(0)
    nprog = gl.num_programs(0)
    u0 = (pid * n_units) // nprog
    u1 = ((pid + 1) * n_units) // nprog
    xbuf = gl.allocate_shared_memory(x_desc.dtype, [XBP, 256], x_desc.layout)
    wbuf = gl.allocate_shared_memory(gl.int32, [STAGES] + w_desc.block_type.shape, w_desc.layout)
    sbuf = gl.allocate_shared_memory(s_desc.dtype, [STAGES] + s_desc.block_type.shape, s_desc.layout)
    zbuf = gl.allocate_shared_memory(z_desc.dtype, [STAGES] + z_desc.block_type.shape, z_desc.layout)
    wsbuf = gl.allocate_shared_memory(ws_desc.dtype, [STAGES] + ws_desc.block_type.shape, ws_desc.layout)
    # per K block: the codes of the words' even / odd K offsets, the group sums of the codes (by 4 blocks)
    CS: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, [1, 0])
    codes_e = gl.allocate_shared_memory(gl.int32, [XBP // 4, 4, 32], CS)
    codes_o = gl.allocate_shared_memory(gl.int32, [XBP // 4, 4, 32], CS)
    xsum = gl.allocate_shared_memory(gl.int32, [XBP // 4, 4, GPB], CS)
    xbar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    mbarrier.init(xbar, count=1)
    for i in gl.static_range(STAGES):
        mbarrier.init(ready.index(i), count=1)
        mbarrier.init(empty.index(i), count=1)
    gl.warp_specialize([
        (_compute, (b_ptr, out_ptr, part_ptr, cnt_ptr, xbuf, wbuf, sbuf, zbuf, wsbuf, codes_e, codes_o, xsum, xbar,
                    ready, empty, u0, u1, pid, nprog, n_units, KB, N, GROUP, HAS_ZERO, HAS_BIAS, ASYM, BOX_RB,
                    STAGES, XB, XBP, num_warps)),
        (_loader, (x_desc, w_desc, s_desc, z_desc, ws_desc, xbuf, wbuf, sbuf, zbuf, wsbuf, xbar, ready, empty, u0,
                   u1 - u0, KB, BOX_RB, STAGES, GPB, HAS_ZERO, ASYM, XB)),
    ], [1], [40])
    mbarrier.invalidate(xbar)
    for i in gl.static_range(STAGES):
        mbarrier.invalidate(ready.index(i))
        mbarrier.invalidate(empty.index(i))
