"""A8W4 at M = 1 on Hopper: a Gluon GEMV whose weights stream through a TMA ring while x is quantized.

Why: every A8W4 kernel must quantize the activation row (its maximum, then the codes) before the
first integer product, one dependent round trip that A16W4 does not have (the mma / dp4a GEMVs of
``mma.py`` / ``jit.py`` spend 1.11-1.26x A16W4's time at M = 1).  Here a loader warp first copies the
activation row into shared memory, then streams the program's weight words (and their group
parameters) through ``STAGES`` shared-memory slots by TMA, while the 4 compute warps find the row's
maximum; each K block's codes are made when the block is used (2 values per thread), and the
products are cheap on dp4a, so the kernel runs at about the speed of its weight stream.

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
the weight sums ``(G, N)`` int64 (``ASYM``), blocks ``[256 / GROUP, BOX_RB * 16]`` (more groups where
that is under 128 bytes: TMA slots start 128-byte aligned; only the first ``256 / GROUP`` are used);
``b_ptr`` ``(N,)``; ``out_ptr`` ``(1, N)``; ``part_ptr`` fp32 ``(programs, 2, BOX_RB * 16)``;
``cnt_ptr`` int32 (>= row groups, zero).  Constraints (``ops.tma_gemv_a8_ok``): sm_90, M = 1, groups
of 32..256, N % 16 == 0, K <= ``MAX_K``.
"""
from __future__ import annotations

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma

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


@gluon.jit
def _minmax(v, lo, hi, ASYM: gl.constexpr):
    """Running minimum and maximum (``ASYM``) or maximum of |v| (symmetric, in ``hi``)."""
    if ASYM:
        return gl.minimum(lo, v), gl.maximum(hi, v)
    return lo, gl.maximum(hi, gl.abs(v))


@gluon.jit
def _row_qparams(xbuf, ASYM: gl.constexpr, XB: gl.constexpr):
    """The activation row's quantization parameters from its copy in shared memory (``xbuf``
    ``[XB, 256]``; zeros past K change neither max |x| nor min(x, 0) / max(x, 0)), bit-exact with
    ``quantize_activations``: ``(s, z)`` as fp32 tensors ``[256]`` of equal values (the layout of
    :func:`_block_codes`; ``z`` = 0 if symmetric)."""
    BL: gl.constexpr = gl.BlockedLayout([2], [32], [4], [0])
    lo = gl.zeros([256], gl.float32, layout=BL)
    hi = gl.zeros([256], gl.float32, layout=BL)
    if XB <= 64:  # unrolled: the shared-memory loads of several boxes in flight
        for j in gl.static_range(XB):
            lo, hi = _minmax(xbuf.index(j).load(BL).to(gl.float32), lo, hi, ASYM)
    else:
        for j in range(XB):
            lo, hi = _minmax(xbuf.index(j).load(BL).to(gl.float32), lo, hi, ASYM)
    zero = gl.zeros([256], gl.float32, layout=BL)
    if ASYM:
        lo_r = zero + gl.min(lo, axis=0)
        s = _div_rn(zero + gl.max(hi, axis=0) - lo_r, zero + 255.0)
        s = gl.where(s == 0.0, 1.0, s)
        z = _rint(_div_rn(-lo_r, s))
        z = gl.minimum(gl.maximum(z, 0.0), 255.0)
    else:
        s = _div_rn(zero + gl.max(hi, axis=0), zero + 127.0)
        s = gl.where(s == 0.0, 1.0, s)
        z = zero
    return s, z


@gluon.jit
def _block_codes(xbuf, kb, s, z, cbufs, c0, ASYM: gl.constexpr, GROUP: gl.constexpr):
    """Quantize K block ``kb`` of the row (256 values, 2 per thread) into rows ``c0 ..`` of ``cbufs``
    (int32, rows of 32): row ``c0`` / ``c0 + 1`` the codes of every word's even / odd K offsets (the
    ``PERM8`` bytes), row ``c0 + 2`` the group sums of the codes (first ``256 / GROUP`` entries).  Codes: int8, asymmetric: the uint8 code - 128."""
    BL: gl.constexpr = s.type.layout
    v = xbuf.index(kb).load(BL).to(gl.float32)
    r = _rint(_div_rn(v, s))
    if ASYM:
        r = gl.minimum(gl.maximum(r + z, 0.0), 255.0) - 128.0
    else:
        r = gl.minimum(gl.maximum(r, -127.0), 127.0)
    q = r.to(gl.int32)
    # (word, byte j, parity p): byte j of word p holds the code of K offset 8 w + 2 j + p
    q3 = gl.reshape(q & 0xFF, [32, 4, 2])
    sh = gl.arange(0, 4, layout=gl.SliceLayout(0, gl.SliceLayout(2, q3.type.layout))) * 8
    packed = gl.sum(q3 << gl.expand_dims(gl.expand_dims(sh, 0), 2), axis=1)
    even, odd = gl.split(packed)
    cbufs.index(c0).store(even)
    cbufs.index(c0 + 1).store(odd)
    gs = gl.sum(gl.reshape(q, [256 // GROUP, GROUP]), axis=1)
    cbufs.index(c0 + 2).slice(0, 256 // GROUP).store(gs)


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
def _compute(b_ptr, out_ptr, part_ptr, cnt_ptr, xbuf, wbuf, sbuf, zbuf, wsbuf, cbufs, xbar, ready, empty,
             u0, u1, pid, nprog, n_units, KB, N,
             GROUP: gl.constexpr, HAS_ZERO: gl.constexpr, HAS_BIAS: gl.constexpr, ASYM: gl.constexpr,
             BOX_RB: gl.constexpr, STAGES: gl.constexpr, XB: gl.constexpr):
    """Default partition (4 warps): the row's quantization parameters, then per unit the K block's
    codes (into one of two buffers, so a slow warp still reading the previous ones is safe), the dp4a
    word sums, the exact group sums and their rescale; flush each row group (:func:`_flush`)."""
    GPB: gl.constexpr = 256 // GROUP
    GW: gl.constexpr = GROUP // 8
    ROWS: gl.constexpr = BOX_RB * 16
    mbarrier.wait(xbar, 0)
    s_row, z_row = _row_qparams(xbuf, ASYM, XB)
    sa = gl.max(s_row, axis=0)
    zam = gl.max(z_row, axis=0).to(gl.int32) - 128
    L: gl.constexpr = gl.BlockedLayout([1, 1, 4], [1, 4, 8], [1, 4, 1], [2, 1, 0])
    CL: gl.constexpr = gl.SliceLayout(0, gl.SliceLayout(0, L))
    PL: gl.constexpr = gl.BlockedLayout([1, 1], [1, 32], [1, 4], [1, 0])
    rg_first = u0 // KB
    rg_last = (u1 - 1) // KB
    i = 0
    for rg in range(rg_first, rg_last + 1):
        k_lo = gl.maximum(u0, rg * KB) - rg * KB
        k_hi = gl.minimum(u1, (rg + 1) * KB) - rg * KB
        acc = gl.zeros([BOX_RB, 16], gl.float32, layout=gl.SliceLayout(2, L))
        for kb in range(k_lo, k_hi):
            slot = i % STAGES
            mbarrier.wait(ready.index(slot), (i // STAGES) & 1)
            c0 = (i % 2) * 4
            _block_codes(xbuf, kb, s_row, z_row, cbufs, c0, ASYM, GROUP)  # this K block's codes, 2 per thread
            words = wbuf.index(slot).load(L)
            s = sbuf.index(slot).slice(0, GPB, dim=0).load(PL).to(gl.float32)
            if HAS_ZERO:
                zp = zbuf.index(slot).slice(0, GPB, dim=0).load(PL).to(gl.int32)
            if ASYM:
                wsm = wsbuf.index(slot).slice(0, GPB, dim=0).load(PL).to(gl.int32)
            gl.thread_barrier()  # every warp has read the slot and written the block's codes
            mbarrier.arrive(empty.index(slot))
            i += 1
            ce = cbufs.index(c0).load(CL)
            co = cbufs.index(c0 + 1).load(CL)
            d = gl.inline_asm_elementwise(
                _DOT8, "=r,r,r,r", [words, gl.expand_dims(gl.expand_dims(ce, 0), 0),
                                    gl.expand_dims(gl.expand_dims(co, 0), 0)],
                dtype=gl.int32, is_pure=True, pack=1)
            gsum = gl.sum(gl.reshape(d, [BOX_RB, 16, GPB, GW]), axis=3)  # [BOX_RB, 16, GPB] exact
            GL: gl.constexpr = gsum.type.layout
            xs = cbufs.index(c0 + 2).slice(0, GPB).load(gl.SliceLayout(0, gl.SliceLayout(0, GL)))
            xs3 = gl.expand_dims(gl.expand_dims(xs, 0), 0)
            if HAS_ZERO:
                z3 = gl.convert_layout(gl.permute(gl.reshape(zp, [GPB, BOX_RB, 16]), [1, 2, 0]), GL)
                gsum = gsum - z3 * xs3
            else:
                gsum = gsum - 8 * xs3
            if ASYM:
                w3 = gl.convert_layout(gl.permute(gl.reshape(wsm, [GPB, BOX_RB, 16]), [1, 2, 0]), GL)
                gsum = gsum - zam * w3
            s3 = gl.convert_layout(gl.permute(gl.reshape(s, [GPB, BOX_RB, 16]), [1, 2, 0]), GL)
            part = gl.sum(gsum.to(gl.float32) * s3, axis=2)
            acc += gl.convert_layout(part, acc.type.layout)
        whole = (k_lo == 0) & (k_hi == KB)
        _flush(acc, rg, whole, rg_first, pid, nprog, n_units, KB, sa, b_ptr, out_ptr, part_ptr, cnt_ptr, N,
               HAS_BIAS, ROWS)


@gluon.jit
def a8w4_tma_gemv_kernel(x_desc, w_desc, s_desc, z_desc, ws_desc, b_ptr, out_ptr, part_ptr, cnt_ptr,
                         N, n_units, KB,
                         GROUP: gl.constexpr, HAS_ZERO: gl.constexpr, HAS_BIAS: gl.constexpr,
                         ASYM: gl.constexpr, STAGES: gl.constexpr, XB: gl.constexpr):
    """Grid ``(programs,)``: program ``p`` takes units ``[p U / P, (p + 1) U / P)`` of the ``U`` =
    ``n_units`` (row groups x ``KB`` K blocks).  ``XB``: boxes of 256 activation values loaded (a
    multiple of 4 covering K).  See the module docstring."""
    BOX_RB: gl.constexpr = w_desc.block_type.shape[0]
    GPB: gl.constexpr = 256 // GROUP
    pid = gl.program_id(0)
    nprog = gl.num_programs(0)
    u0 = (pid * n_units) // nprog
    u1 = ((pid + 1) * n_units) // nprog
    xbuf = gl.allocate_shared_memory(x_desc.dtype, [XB, 256], x_desc.layout)
    wbuf = gl.allocate_shared_memory(gl.int32, [STAGES] + w_desc.block_type.shape, w_desc.layout)
    sbuf = gl.allocate_shared_memory(s_desc.dtype, [STAGES] + s_desc.block_type.shape, s_desc.layout)
    zbuf = gl.allocate_shared_memory(z_desc.dtype, [STAGES] + z_desc.block_type.shape, z_desc.layout)
    wsbuf = gl.allocate_shared_memory(ws_desc.dtype, [STAGES] + ws_desc.block_type.shape, ws_desc.layout)
    # two sets of 4 rows of 32 int32 (the codes of one K block: see _block_codes), indexed by row
    cbufs = gl.allocate_shared_memory(gl.int32, [8, 32], gl.SwizzledSharedLayout(1, 1, 1, [0]))
    xbar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    mbarrier.init(xbar, count=1)
    for i in gl.static_range(STAGES):
        mbarrier.init(ready.index(i), count=1)
        mbarrier.init(empty.index(i), count=1)
    gl.warp_specialize([
        (_compute, (b_ptr, out_ptr, part_ptr, cnt_ptr, xbuf, wbuf, sbuf, zbuf, wsbuf, cbufs, xbar, ready, empty,
                    u0, u1, pid, nprog, n_units, KB, N, GROUP, HAS_ZERO, HAS_BIAS, ASYM, BOX_RB, STAGES, XB)),
        (_loader, (x_desc, w_desc, s_desc, z_desc, ws_desc, xbuf, wbuf, sbuf, zbuf, wsbuf, xbar, ready, empty, u0,
                   u1 - u0, KB, BOX_RB, STAGES, GPB, HAS_ZERO, ASYM, XB)),
    ], [1], [40])
    mbarrier.invalidate(xbar)
    for i in gl.static_range(STAGES):
        mbarrier.invalidate(ready.index(i))
        mbarrier.invalidate(empty.index(i))
