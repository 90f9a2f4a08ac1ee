"""A16W4 at large M on Hopper: a Gluon kernel with TMA loads and asynchronous wgmma (sm_90 only).

The Triton-language kernels of ``jit.py`` leave the tensor cores idle while they dequantize: Triton
3.6 waits for every wgmma before the next tile's dequantization starts.  Gluon (Triton's explicit
layout/pipeline dialect, shipped with Triton >= 3.5) lets the kernel say exactly what overlaps:

* computes ``out^T = W x^T`` ("swap AB"): the dequantized weight tile ``[BLOCK_N, BLOCK_K]`` is the
  wgmma A operand, the activation tile ``[BLOCK_M, BLOCK_K]`` (transposed view) the B operand, so the
  weight rows fill the instruction's 64-row M side and ``BLOCK_M`` tokens its N side (8..256);
* activations and packed weight words arrive by TMA into ``STAGES`` shared-memory slots (one mbarrier
  per slot);
* per K step: issue the wgmma of step ``k`` (asynchronous), dequantize step ``k + 1`` while the tensor
  cores work, wait until only step ``k`` is in flight, one CTA barrier, then refill the slot that step
  ``k - 1`` used (see :func:`_compute`);
* where the dequantized weights go: with ``REGA`` (the shipped configs) straight into the wgmma
  A-operand registers (:func:`_dequant_regs`: one shift + ``lop3`` per bf16x2 pair thanks to the
  ``PAIR_K`` word order, no shared-memory round trip); otherwise into one of three shared-memory
  operand buffers (:func:`_dequant_step`, a per-weight unpack);
* ``WS``: one extra loader warp issues the TMA (warp specialization).

Arithmetic: each weight is ``round_to_dtype((q - z) * s)``, the same value as the reference's
dequantization, computed in 16-bit math: ``(128 + q) - (128 + z)`` is the exact integer ``q - z``
(``1024 +`` for fp16) and the product with ``s`` is rounded once.  (An fp32 dequantization,
``fma(q, s, -z s)``, was measured and always lost: ``benchmarks/gpu/README.md``, fifth session.)
Products and sums are fp32 in the tensor cores.

Inputs (see ``kernel.py`` for the packed layout):

* ``x_desc``: TMA descriptor of x ``(M, K)`` bf16/fp16, K contiguous, block ``[BLOCK_M, BLOCK_K]``;
* ``w_desc``: TMA descriptor of the blocked A16W4 words viewed as ``(N/16, K8/32 * 16, 32)`` int32
  (``qweight.reshape(nb, kb * 16, 32)``: row-block, then (K block, row in block), then word),
  block ``[BLOCK_N / 16, 16, BLOCK_K / 8]``; words hold the paired nibble order ``layout.PAIR_K``;
* ``s_ptr`` scale ``(G, N)`` x's dtype; ``z_ptr`` zero point int8 ``(G, N)`` (``HAS_ZERO``);
  ``b_ptr`` bias ``(N,)`` (``HAS_BIAS``);
* ``out_ptr``: ``(M, N)`` x's dtype, row stride ``N``.

Constraints (checked by :func:`ops.wgmma_ok`): sm_90, ``BLOCK_K`` divides 256 and is <= the group
size (one scale per row per K step), ``BLOCK_N = 16 * num_warps * r``, x 16-byte aligned with a row
stride that is a multiple of 8 elements.
"""
from __future__ import annotations

from triton.experimental import gluon
from triton.runtime.jit import constexpr_function
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared,
    mbarrier,
    tma,
    warpgroup_mma,
    warpgroup_mma_wait,
)

#: operand buffers of dequantized weights: step k + 1 is written while step k is in flight and step
#: k - 1 may still be finishing in the other warpgroup, so three
WBUFS = gl.constexpr(3)


@constexpr_function
def _dequant_layout(block_n, block_k, num_warps):
    """4-D register layout of one K step's codes ``[BLOCK_N/16, 16, BLOCK_K/8, 8]``: a thread holds the
    8 codes of one word, the threads of a warp cover (rows, words) with words fastest."""
    words = block_k // 8
    tw = min(words, 32)
    return gl.BlockedLayout(size_per_thread=[1, 1, 1, 8], threads_per_warp=[1, 32 // tw, tw, 1],
                            warps_per_cta=[num_warps, 1, 1, 1], order=[3, 2, 1, 0])


@constexpr_function
def _store_layout(block_n, block_m, num_warps):
    """2-D ``[BLOCK_N, BLOCK_M]`` layout of the epilogue: 8 consecutive outputs (16 bytes of a row of
    ``out``) per thread, threads along N first, so the transposed store is coalesced."""
    tn = min(max(block_n // 8, 1), 32)
    return gl.BlockedLayout(size_per_thread=[8, 1], threads_per_warp=[tn, 32 // tn],
                            warps_per_cta=[1, num_warps], order=[0, 1])


@gluon.jit
def _issue_loads(x_desc, w_desc, xs, ws, bars, step, n_steps, step0, off_m, nb0,
                 BLOCK_K: gl.constexpr, STAGES: gl.constexpr):
    """TMA of the program's K step ``step`` (absolute step ``step0 + step``: activations and words) into
    slot ``step % STAGES`` (no-op past the program's ``n_steps``)."""
    pred = step < n_steps
    slot = step % STAGES
    bar = bars.index(slot)
    k0 = (step0 + step) * BLOCK_K
    mbarrier.expect(bar, x_desc.block_type.nbytes + w_desc.block_type.nbytes, pred=pred)
    tma.async_copy_global_to_shared(x_desc, [off_m, k0], bar, xs.index(slot), pred=pred)
    tma.async_copy_global_to_shared(w_desc, [nb0, (k0 // 256) * 16, (k0 % 256) // 8], bar, ws.index(slot), pred=pred)


@gluon.jit
def _load_qparams(s_ptr, z_ptr, step, step0, off_n, N, G, n_steps,
                  GROUP: gl.constexpr, PER_CHANNEL: gl.constexpr, HAS_ZERO: gl.constexpr,
                  BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr, L4: gl.constexpr):
    """Scale and zero term of the program's K step ``step`` (absolute step ``step0 + step``; one group,
    ``BLOCK_K <= GROUP``) for the tile's rows,
    two ``[BLOCK_N/16, 16]`` tensors in the row layout of ``L4`` (zeros past the last step or row),
    in x's dtype: ``s`` and ``128 + z`` (fp16: ``1024 + z``)."""
    RL: gl.constexpr = gl.SliceLayout(2, gl.SliceLayout(3, L4))
    nb = gl.arange(0, BLOCK_N // 16, layout=gl.SliceLayout(1, RL))
    nr = gl.arange(0, 16, layout=gl.SliceLayout(0, RL))
    rows = off_n + gl.expand_dims(nb, 1) * 16 + gl.expand_dims(nr, 0)
    if PER_CHANNEL:
        g = 0
    else:
        g = ((step0 + step) * BLOCK_K) // GROUP
    rmask = (rows < N) & (g < G) & (step < n_steps)
    s = gl.load(s_ptr + g * N + rows, mask=rmask, other=0.0)
    if HAS_ZERO:
        z = gl.load(z_ptr + g * N + rows, mask=rmask, other=0).to(gl.float32)
    else:
        z = gl.full([BLOCK_N // 16, 16], 8.0, gl.float32, layout=RL)
    bias: gl.constexpr = 128.0 if s_ptr.dtype.element_ty == gl.bfloat16 else 1024.0
    return s, (z + bias).to(s.dtype)


@gluon.jit
def _step_words(ws, bars, step, STAGES: gl.constexpr, L4: gl.constexpr):
    """Wait for K step ``step``'s TMA, then its words ``[BLOCK_N/16, 16, BLOCK_K/8, 1]`` int32 in ``L4``,
    and the word positions ``[1, 1, 1, 8]`` (``L4``'s last dimension)."""
    slot = step % STAGES
    mbarrier.wait(bars.index(slot), (step // STAGES) & 1)
    words = ws.index(slot).load(gl.SliceLayout(3, L4))
    p = gl.arange(0, 8, layout=gl.SliceLayout(0, gl.SliceLayout(0, gl.SliceLayout(0, L4))))
    return gl.expand_dims(words, 3), gl.expand_dims(gl.expand_dims(gl.expand_dims(p, 0), 0), 0)


@gluon.jit
def _dequant_step(ws, bars, wbuf, s, zs, step,
                  BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr, STAGES: gl.constexpr, L4: gl.constexpr):
    """Wait for step ``step``'s words, dequantize them with the step's ``s`` / ``zs`` (see
    :func:`_load_qparams`) into ``wbuf`` ``[BLOCK_N, BLOCK_K]``."""
    words, p = _step_words(ws, bars, step, STAGES, L4)
    # position p of a word holds nibble inv(PAIR_K)[p] = 4 (p & 1) + (p >> 1)
    q = (words >> ((p & 1) * 16 + (p >> 1) * 4)) & 15
    # (q | 0x4300) is the bf16 128 + q (fp16: 0x6400 | q = 1024 + q), exact; zs holds 128 + z
    # (1024 + z): the difference is the exact integer q - z, times s rounded once
    if wbuf.dtype == gl.bfloat16:
        hq = (q | 0x4300).to(gl.int16).to(gl.bfloat16, bitcast=True)
    else:
        hq = (q | 0x6400).to(gl.int16).to(gl.float16, bitcast=True)
    w = (hq - gl.expand_dims(gl.expand_dims(zs, 2), 3)) * gl.expand_dims(gl.expand_dims(s, 2), 3)
    wbuf.store(gl.reshape(w, [BLOCK_N, BLOCK_K]))


@constexpr_function
def _split_layout(dll):
    """The A-operand register layout ``dll`` (a linear layout of ``[BLOCK_N, BLOCK_K]``) seen as
    ``[BLOCK_N/16, 16, BLOCK_K/8, 8]`` (row block, row, word, K offset in the word): every basis is one
    bit of n or k, so it splits into the same bit of the 4-D index."""
    def split(b):
        n, k = b
        return [n // 16, n % 16, k // 8, k % 8]
    bn, bk = dll.shape
    return gl.DistributedLinearLayout([split(b) for b in dll.reg_bases], [split(b) for b in dll.lane_bases],
                                      [split(b) for b in dll.warp_bases], [], [bn // 16, 16, bk // 8, 8])


@gluon.jit
def _dequant_regs(ws, bars, s, zs, step, BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr, STAGES: gl.constexpr,
                  DOT: gl.constexpr, L4: gl.constexpr):
    """Step ``step``'s weights straight into the wgmma A-operand registers (layout ``DOT``, x's dtype).

    In ``DOT`` each lane holds K offsets 2c, 2c + 1 of every 8 (c = lane % 4) of its rows: in the paired
    word order (``layout.PAIR_K``) those are nibbles c and c + 4 of the word, so one shift and one
    ``lop3`` give the 16-bit pair ``(128 + q, 128 + q')`` (fp16: ``1024 + q``), exact, which meets
    ``128 + z`` and the scale in packed 16-bit math (one rounding, the reference's value).  ``s`` /
    ``zs``: :func:`_load_qparams`."""
    words, p = _step_words(ws, bars, step, STAGES, L4)  # 4 lanes per word
    shift = 2 * (p & 6)  # the pair's nibble c, times 4
    if s.dtype == gl.bfloat16:
        hq = gl.inline_asm_elementwise(
            "{ .reg .b32 t; shr.u32 t, $1, $3; lop3.b32 $0, t, 0x000F000F, 0x43004300, 0xEA; }",
            "=r,r,r,r,r", [words, shift], dtype=gl.bfloat16, is_pure=True, pack=2)
    else:
        hq = gl.inline_asm_elementwise(
            "{ .reg .b32 t; shr.u32 t, $1, $3; lop3.b32 $0, t, 0x000F000F, 0x64006400, 0xEA; }",
            "=r,r,r,r,r", [words, shift], dtype=gl.float16, is_pure=True, pack=2)
    w = (hq - gl.expand_dims(gl.expand_dims(zs, 2), 3)) * gl.expand_dims(gl.expand_dims(s, 2), 3)
    w = gl.reshape(w, [BLOCK_N, BLOCK_K])
    return gl.convert_layout(w, DOT, assert_trivial=True)


@gluon.jit
def _store_out(acc, b_ptr, out_ptr, off_m, off_n, M, N, HAS_BIAS: gl.constexpr, BLOCK_N: gl.constexpr,
               BLOCK_M: gl.constexpr, dtype: gl.constexpr, num_warps: gl.constexpr):
    """``out[m, n] = acc[n, m] (+ bias[n])`` in ``dtype``, masked to the ``(M, N)`` output."""
    rn_acc = off_n + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, acc.type.layout))
    if HAS_BIAS:
        acc = acc + gl.expand_dims(gl.load(b_ptr + rn_acc, mask=rn_acc < N, other=0.0).to(gl.float32), 1)
    SL: gl.constexpr = _store_layout(BLOCK_N, BLOCK_M, num_warps)
    out = gl.convert_layout(acc.to(dtype), SL)
    rn = off_n + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, SL))
    rm = off_m + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(0, SL))
    mask = gl.expand_dims(rn < N, 1) & gl.expand_dims(rm < M, 0)
    gl.store(out_ptr + gl.expand_dims(rm, 0) * N + gl.expand_dims(rn, 1), out, mask=mask)


@gluon.jit
def _ws_loader(x_desc, w_desc, xs, ws, ready, empty, n_steps, step0, off_m, nb0,
               BLOCK_K: gl.constexpr, STAGES: gl.constexpr):
    """Worker partition (one warp, ``WS``): the TMA of every K step, each into a slot released by the
    compute warps (``empty``)."""
    for i in range(n_steps):
        slot = i % STAGES
        # fill f = i // STAGES of the slot waits for the release of fill f - 1 (parity (f - 1) & 1)
        mbarrier.wait(empty.index(slot), ((i // STAGES) & 1) ^ 1, pred=i >= STAGES)
        _issue_loads(x_desc, w_desc, xs, ws, ready, i, n_steps, step0, off_m, nb0, BLOCK_K, STAGES)


@gluon.jit
def _refill(x_desc, w_desc, xs, ws, ready, empty, k, n_steps, step0, off_m, off_n,
            BLOCK_K: gl.constexpr, STAGES: gl.constexpr, WS: gl.constexpr):
    """After the CTA barrier of step ``k`` (step ``k - 1`` done everywhere): refill its slot with step
    ``k + STAGES - 1`` (or, with ``WS``, release it to the loader warp)."""
    if WS:
        mbarrier.arrive(empty.index((k + STAGES - 1) % STAGES), pred=k >= 1)
    else:
        _issue_loads(x_desc, w_desc, xs, ws, ready, k + STAGES - 1, n_steps, step0, off_m, off_n // 16, BLOCK_K,
                     STAGES)


@gluon.jit
def _compute(x_desc, w_desc, xs, ws, wbuf, ready, empty, s_ptr, z_ptr, off_m, off_n, N, G, n_steps, step0,
             GROUP: gl.constexpr, PER_CHANNEL: gl.constexpr, HAS_ZERO: gl.constexpr,
             BLOCK_N: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_K: gl.constexpr, STAGES: gl.constexpr,
             WS: gl.constexpr, REGA: gl.constexpr, ASETS: gl.constexpr, num_warps: gl.constexpr,
             SPARSE: gl.constexpr = False):
    """The dequantization + wgmma loop; returns ``(acc,)``, the fp32 ``[BLOCK_N, BLOCK_M]`` accumulator.

    Per K step ``k``: issue the wgmma of ``k`` (asynchronous); dequantize step ``k + 1`` while the
    tensor cores work on ``k - 1`` and ``k`` -- into operand buffer ``(k + 1) % 3`` in shared memory
    (last read by step ``k - 2``, done in both warpgroups: see the barrier), or with ``REGA`` into the
    A-operand registers; wait until only ``k`` is in flight; one CTA barrier (so step ``k - 1`` is done
    in every warpgroup); then refill step ``k - 1``'s slot (:func:`_refill`).  Scales are requested one
    iteration ahead, after the iteration's proxy fence (which waits for every outstanding load).
    ``SPARSE`` (register A): one CTA barrier per loop iteration (two or three K steps) instead of one per
    step, releasing the iteration's slots together -- fewer stalls at the barrier, slots back later."""
    mma_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                         instr_shape=[16, BLOCK_M, 16])
    acc = gl.zeros([BLOCK_N, BLOCK_M], gl.float32, layout=mma_layout)
    if REGA:
        DOT: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma_layout, k_width=2)
        L4: gl.constexpr = _split_layout(gl.to_linear_layout(DOT, [BLOCK_N, BLOCK_K]))
    else:
        L4: gl.constexpr = _dequant_layout(BLOCK_N, BLOCK_K, num_warps)
    if not WS:
        for i in gl.static_range(STAGES - 1):
            _issue_loads(x_desc, w_desc, xs, ws, ready, i, n_steps, step0, off_m, off_n // 16, BLOCK_K, STAGES)
    s1, zs1 = _load_qparams(s_ptr, z_ptr, 0, step0, off_n, N, G, n_steps, GROUP, PER_CHANNEL, HAS_ZERO, BLOCK_N, BLOCK_K,
                            L4)
    if REGA and ASETS == 3:
        acc = _tri_loop(acc, x_desc, w_desc, xs, ws, ready, empty, s_ptr, z_ptr, s1, zs1, off_m, off_n, N, G,
                        n_steps, step0, GROUP, PER_CHANNEL, HAS_ZERO, BLOCK_N, BLOCK_K, STAGES, WS, DOT, L4, SPARSE)
    elif REGA:
        # two steps per iteration (n_steps is even here, see the kernel), so the A registers of the
        # two steps in flight alternate between two fixed sets: a register written while a wgmma
        # that reads it may still run would make ptxas serialize every wgmma
        a0 = _dequant_regs(ws, ready, s1, zs1, 0, BLOCK_N, BLOCK_K, STAGES, DOT, L4)
        a1 = a0
        s1, zs1 = _load_qparams(s_ptr, z_ptr, 1, step0, off_n, N, G, n_steps, GROUP, PER_CHANNEL, HAS_ZERO, BLOCK_N,
                                BLOCK_K, L4)
        for kk in range(0, n_steps, 2):
            mbarrier.wait(ready.index(kk % STAGES), (kk // STAGES) & 1)
            acc = warpgroup_mma(a0, _x_operand(xs, kk, STAGES), acc, is_async=True)
            acc, a1 = warpgroup_mma_wait(num_outstanding=1, deps=(acc, a1))  # step kk - 1 done
            if not SPARSE:
                gl.thread_barrier()
                _refill(x_desc, w_desc, xs, ws, ready, empty, kk, n_steps, step0, off_m, off_n, BLOCK_K, STAGES, WS)
            a1 = _dequant_regs(ws, ready, s1, zs1, kk + 1, BLOCK_N, BLOCK_K, STAGES, DOT, L4)
            s1, zs1 = _load_qparams(s_ptr, z_ptr, kk + 2, step0, off_n, N, G, n_steps, GROUP, PER_CHANNEL, HAS_ZERO,
                                    BLOCK_N, BLOCK_K, L4)
            k1 = kk + 1
            mbarrier.wait(ready.index(k1 % STAGES), (k1 // STAGES) & 1)
            acc = warpgroup_mma(a1, _x_operand(xs, k1, STAGES), acc, is_async=True)
            acc, a0 = warpgroup_mma_wait(num_outstanding=1, deps=(acc, a0))  # step kk done
            gl.thread_barrier()
            if SPARSE:  # steps kk - 1 and kk are done everywhere: release both slots
                _refill(x_desc, w_desc, xs, ws, ready, empty, kk, n_steps, step0, off_m, off_n, BLOCK_K, STAGES, WS)
            _refill(x_desc, w_desc, xs, ws, ready, empty, k1, n_steps, step0, off_m, off_n, BLOCK_K, STAGES, WS)
            # past the last step this re-reads the last slot (still full): computed, never used
            a0 = _dequant_regs(ws, ready, s1, zs1, gl.minimum(kk + 2, n_steps - 1), BLOCK_N, BLOCK_K, STAGES,
                               DOT, L4)
            s1, zs1 = _load_qparams(s_ptr, z_ptr, kk + 3, step0, off_n, N, G, n_steps, GROUP, PER_CHANNEL, HAS_ZERO,
                                    BLOCK_N, BLOCK_K, L4)
        acc, a0, a1 = warpgroup_mma_wait(num_outstanding=0, deps=(acc, a0, a1))
    else:
        _dequant_step(ws, ready, wbuf.index(0), s1, zs1, 0, BLOCK_N, BLOCK_K, STAGES, L4)
        fence_async_shared()
        gl.thread_barrier()
        s1, zs1 = _load_qparams(s_ptr, z_ptr, 1, step0, off_n, N, G, n_steps, GROUP, PER_CHANNEL, HAS_ZERO, BLOCK_N,
                                BLOCK_K, L4)
        for k in range(n_steps):
            slot = k % STAGES
            mbarrier.wait(ready.index(slot), (k // STAGES) & 1)
            acc = warpgroup_mma(wbuf.index(k % WBUFS), _x_operand(xs, k, STAGES), acc, is_async=True)
            if k + 1 < n_steps:
                _dequant_step(ws, ready, wbuf.index((k + 1) % WBUFS), s1, zs1, k + 1, BLOCK_N, BLOCK_K, STAGES,
                              L4)
                fence_async_shared()
            acc = warpgroup_mma_wait(num_outstanding=1, deps=(acc, ))
            gl.thread_barrier()  # every warpgroup's step k - 1 is done: its slot may be refilled
            _refill(x_desc, w_desc, xs, ws, ready, empty, k, n_steps, step0, off_m, off_n, BLOCK_K, STAGES, WS)
            s1, zs1 = _load_qparams(s_ptr, z_ptr, k + 2, step0, off_n, N, G, n_steps, GROUP, PER_CHANNEL, HAS_ZERO,
                                    BLOCK_N, BLOCK_K, L4)
        acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc, ))
    return (acc, )


@gluon.jit
def _tri_step(acc, a_issue, a_free, s1, zs1, x_desc, w_desc, xs, ws, ready, empty, s_ptr, z_ptr, k, off_m, off_n,
              N, G, n_steps, step0, DEQ: gl.constexpr, GROUP: gl.constexpr, PER_CHANNEL: gl.constexpr,
              HAS_ZERO: gl.constexpr, BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr, STAGES: gl.constexpr,
              WS: gl.constexpr, DOT: gl.constexpr, L4: gl.constexpr, RELEASE: gl.constexpr = 1):
    """Step ``k`` of the three-set loop: queue the wgmma of step ``k + 1`` (A registers ``a_issue``), wait
    until at most two are in flight (step ``k - 1``'s is done, so its set ``a_free`` is free), one CTA
    barrier, release / refill step ``k - 1``'s slot, then (``DEQ``) dequantize step ``k + 2`` into the
    freed set -- while the tensor cores still have steps ``k`` and ``k + 1`` -- and request the
    scales of step ``k + 3``.  ``RELEASE``: the steps whose slots are released here, ``k - RELEASE .. k - 1``
    (0: no barrier, no release; ``SPARSE`` loops release three at a time).  Returns ``(acc, a_free, s1, zs1)``."""
    k1 = k + 1
    mbarrier.wait(ready.index(k1 % STAGES), (k1 // STAGES) & 1)
    acc = warpgroup_mma(a_issue, _x_operand(xs, k1, STAGES), acc, is_async=True)
    acc, a_free = warpgroup_mma_wait(num_outstanding=2, deps=(acc, a_free))  # step k - 1 done
    if RELEASE > 0:
        gl.thread_barrier()
        for j in gl.static_range(RELEASE):
            _refill(x_desc, w_desc, xs, ws, ready, empty, k - RELEASE + 1 + j, n_steps, step0, off_m, off_n, BLOCK_K,
                    STAGES, WS)
    if DEQ:
        a_free = _dequant_regs(ws, ready, s1, zs1, k + 2, BLOCK_N, BLOCK_K, STAGES, DOT, L4)
        s1, zs1 = _load_qparams(s_ptr, z_ptr, k + 3, step0, off_n, N, G, n_steps, GROUP, PER_CHANNEL, HAS_ZERO,
                                BLOCK_N, BLOCK_K, L4)
    return acc, a_free, s1, zs1


@gluon.jit
def _x_operand(xs, k, STAGES: gl.constexpr):
    """Step ``k``'s activation tile as the wgmma B operand (``[BLOCK_K, BLOCK_M]``, a transposed view)."""
    return xs.index(k % STAGES).permute((1, 0))


@gluon.jit
def _tri_loop(acc, x_desc, w_desc, xs, ws, ready, empty, s_ptr, z_ptr, s1, zs1, off_m, off_n, N, G, n_steps, step0,
              GROUP: gl.constexpr, PER_CHANNEL: gl.constexpr, HAS_ZERO: gl.constexpr, BLOCK_N: gl.constexpr,
              BLOCK_K: gl.constexpr, STAGES: gl.constexpr, WS: gl.constexpr, DOT: gl.constexpr, L4: gl.constexpr,
              SPARSE: gl.constexpr = False):
    """The register-A loop with three A-operand register sets (``ASETS == 3``, ``n_steps`` a positive
    multiple of 3): the wgmma of step ``k + 1`` is queued before step ``k + 2`` is dequantized, so the
    dequantization has two steps' MMA time to finish (the two-set loop has one).  The sets rotate with
    the steps, three steps per iteration, so every set is a fixed register range (see the two-set loop);
    the last three steps are peeled so that no wgmma is queued past ``n_steps``.  ``s1`` / ``zs1``: the
    scales of step 0.  Returns ``acc``."""
    a0 = _dequant_regs(ws, ready, s1, zs1, 0, BLOCK_N, BLOCK_K, STAGES, DOT, L4)
    s1, zs1 = _load_qparams(s_ptr, z_ptr, 1, step0, off_n, N, G, n_steps, GROUP, PER_CHANNEL, HAS_ZERO, BLOCK_N,
                            BLOCK_K, L4)
    a1 = _dequant_regs(ws, ready, s1, zs1, 1, BLOCK_N, BLOCK_K, STAGES, DOT, L4)
    s1, zs1 = _load_qparams(s_ptr, z_ptr, 2, step0, off_n, N, G, n_steps, GROUP, PER_CHANNEL, HAS_ZERO, BLOCK_N,
                            BLOCK_K, L4)
    a2 = gl.zeros([BLOCK_N, BLOCK_K], a0.dtype, layout=DOT)
    mbarrier.wait(ready.index(0), 0)
    acc = warpgroup_mma(a0, _x_operand(xs, 0, STAGES), acc, is_async=True)
    acc, a2 = warpgroup_mma_wait(num_outstanding=1, deps=(acc, a2))  # (returns at once: the loop's acc type)
    R0: gl.constexpr = 0 if SPARSE else 1  # SPARSE: the iteration's three slots are released at its last step
    R2: gl.constexpr = 3 if SPARSE else 1
    for kk in range(0, n_steps - 3, 3):
        acc, a2, s1, zs1 = _tri_step(acc, a1, a2, s1, zs1, x_desc, w_desc, xs, ws, ready, empty, s_ptr, z_ptr, kk,
                                     off_m, off_n, N, G, n_steps, step0, True, GROUP, PER_CHANNEL, HAS_ZERO,
                                     BLOCK_N, BLOCK_K, STAGES, WS, DOT, L4, R0)
        acc, a0, s1, zs1 = _tri_step(acc, a2, a0, s1, zs1, x_desc, w_desc, xs, ws, ready, empty, s_ptr, z_ptr, kk + 1,
                                     off_m, off_n, N, G, n_steps, step0, True, GROUP, PER_CHANNEL, HAS_ZERO,
                                     BLOCK_N, BLOCK_K, STAGES, WS, DOT, L4, R0)
        acc, a1, s1, zs1 = _tri_step(acc, a0, a1, s1, zs1, x_desc, w_desc, xs, ws, ready, empty, s_ptr, z_ptr, kk + 2,
                                     off_m, off_n, N, G, n_steps, step0, True, GROUP, PER_CHANNEL, HAS_ZERO,
                                     BLOCK_N, BLOCK_K, STAGES, WS, DOT, L4, R2)
    kk = n_steps - 3
    acc, a2, s1, zs1 = _tri_step(acc, a1, a2, s1, zs1, x_desc, w_desc, xs, ws, ready, empty, s_ptr, z_ptr, kk,
                                 off_m, off_n, N, G, n_steps, step0, True, GROUP, PER_CHANNEL, HAS_ZERO,
                                 BLOCK_N, BLOCK_K, STAGES, WS, DOT, L4)
    acc, a0, s1, zs1 = _tri_step(acc, a2, a0, s1, zs1, x_desc, w_desc, xs, ws, ready, empty, s_ptr, z_ptr, kk + 1,
                                 off_m, off_n, N, G, n_steps, step0, False, GROUP, PER_CHANNEL, HAS_ZERO,
                                 BLOCK_N, BLOCK_K, STAGES, WS, DOT, L4)
    acc, a0, a1, a2 = warpgroup_mma_wait(num_outstanding=0, deps=(acc, a0, a1, a2))
    return acc


@gluon.jit
def _split_reduce(acc, part_ptr, cnt_ptr, split, tile, n_tiles,
                  SPLIT: gl.constexpr, BLOCK_N: gl.constexpr, BLOCK_M: gl.constexpr):
    """Split-K: store this program's partial ``acc`` to plane ``split`` of the workspace, count it in
    ``cnt_ptr[tile]``; the program that arrives last sums the ``SPLIT`` planes in plane order (the same
    order whoever arrives last: deterministic), resets the counter and returns ``(True, sum)``; the
    others return ``(False, acc)``.  ``part_ptr``: fp32 ``(SPLIT, n_tiles, BLOCK_N, BLOCK_M)``;
    ``cnt_ptr``: int32 ``(n_tiles,)``, zero before the launch (and again after it)."""
    L: gl.constexpr = acc.type.layout
    rn = gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, L))
    rm = gl.arange(0, BLOCK_M, layout=gl.SliceLayout(0, L))
    offs = gl.expand_dims(rn, 1) * BLOCK_M + gl.expand_dims(rm, 0)
    plane = n_tiles * (BLOCK_N * BLOCK_M)
    base = part_ptr + tile * (BLOCK_N * BLOCK_M) + offs
    gl.store(base + split * plane, acc)
    gl.thread_barrier()  # every thread's partial is written before the counter moves
    last = gl.atomic_add(cnt_ptr + tile, 1, sem="acq_rel", scope="gpu") == SPLIT - 1
    if last:
        total = gl.load(base, cache_modifier=".cg")
        for j in gl.static_range(1, SPLIT):
            total = total + gl.load(base + j * plane, cache_modifier=".cg")
        gl.store(cnt_ptr + tile, 0)
        acc = total
    return last, acc


@gluon.jit
def a16w4_wgmma_kernel(x_desc, w_desc, s_ptr, z_ptr, b_ptr, out_ptr, part_ptr, cnt_ptr, M, N, K, G, n_full,
                       GROUP: gl.constexpr, PER_CHANNEL: gl.constexpr, HAS_ZERO: gl.constexpr,
                       HAS_BIAS: gl.constexpr, BLOCK_N: gl.constexpr, STAGES: gl.constexpr,
                       WS: gl.constexpr, REGA: gl.constexpr, ASETS: gl.constexpr, SPLIT: gl.constexpr,
                       TAIL: gl.constexpr, num_warps: gl.constexpr, SPARSE: gl.constexpr = False):
    """One program: the outputs ``[BLOCK_M tokens, BLOCK_N rows]`` over one of ``SPLIT`` slices of K;
    grid ``(SPLIT, cdiv(M, BLOCK_M), cdiv(N, BLOCK_N))`` (the K slices, then the M tiles of one weight
    tile are neighbours, so the weight is read from HBM about once and a tile's partials meet in L2).
    ``SPLIT > 1`` (split-K, for shapes with too few tiles to fill the GPU): every K slice but the last
    holds ``steps_per`` K steps (even with ``REGA``), the partials meet in ``part_ptr`` and the last
    program of a tile to finish writes it (:func:`_split_reduce`).
    ``TAIL`` (with ``SPLIT > 1``): only the tiles past the first ``n_full`` are split -- the tiles of
    the last, partial wave of programs, which would otherwise leave SMs idle while they run -- on a
    1-D grid ``(n_full + SPLIT * (tiles - n_full),)``: programs ``< n_full`` compute whole tiles (in
    the same tile order as the 3-D grid), the rest ``SPLIT`` K slices of each remaining tile (slices
    of a tile adjacent), their partials in ``part_ptr`` / ``cnt_ptr`` indexed by ``tile - n_full``.
    ``WS``: warp specialization, one extra loader warp issues
    the TMA, so the compute warps do not stop for the copies (nor for the barriers Triton puts
    around them); ``REGA``: dequantize straight into the A-operand registers (no shared memory round
    trip, no proxy fence)."""
    BLOCK_M: gl.constexpr = x_desc.block_type.shape[0]
    BLOCK_K: gl.constexpr = x_desc.block_type.shape[1]
    dtype: gl.constexpr = x_desc.dtype
    if TAIL:
        pid = gl.program_id(0)
        n_mt = gl.cdiv(M, BLOCK_M)
        in_tail = (pid >= n_full).to(gl.int32)
        q = pid - n_full  # negative (and unused) for the whole tiles
        tile = pid - in_tail * (q - q // SPLIT)  # pid, or n_full + q // SPLIT
        split = in_tail * (q % SPLIT)
        n_split = 1 + in_tail * (SPLIT - 1)
        off_m = (tile % n_mt) * BLOCK_M
        off_n = (tile // n_mt) * BLOCK_N
    else:
        tile = gl.program_id(2) * gl.num_programs(1) + gl.program_id(1)
        split = gl.program_id(0)
        n_split = SPLIT
        off_m = gl.program_id(1) * BLOCK_M
        off_n = gl.program_id(2) * BLOCK_N
    all_steps = gl.cdiv(K, BLOCK_K)
    steps_per = gl.cdiv(all_steps, n_split)
    if REGA:
        steps_per = steps_per + (ASETS - steps_per % ASETS) % ASETS
    step0 = split * steps_per
    n_steps = gl.minimum(steps_per, all_steps - step0)  # >= 1: the host keeps SPLIT <= all_steps / steps_per
    if REGA:
        # a multiple of ASETS steps: those past K read zeros (TMA fills out-of-bounds boxes with
        # zeros, and the masked scales are 0), so they add nothing
        n_steps = n_steps + (ASETS - n_steps % ASETS) % ASETS
    xs = gl.allocate_shared_memory(dtype, [STAGES, BLOCK_M, BLOCK_K], x_desc.layout)
    ws = gl.allocate_shared_memory(gl.int32, [STAGES] + w_desc.block_type.shape, w_desc.layout)
    wl: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BLOCK_N, BLOCK_K], dtype)
    wbuf = gl.allocate_shared_memory(dtype, [1 if REGA else WBUFS, BLOCK_N, BLOCK_K], wl)
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(STAGES):
        mbarrier.init(ready.index(i), count=1)
        mbarrier.init(empty.index(i), count=1)
    if WS:
        (acc, ) = gl.warp_specialize([
            (_compute, (x_desc, w_desc, xs, ws, wbuf, ready, empty, s_ptr, z_ptr, off_m, off_n, N, G, n_steps, step0,
                        GROUP, PER_CHANNEL, HAS_ZERO, BLOCK_N, BLOCK_M, BLOCK_K, STAGES, WS, REGA, ASETS, num_warps,
                        SPARSE)),
            (_ws_loader, (x_desc, w_desc, xs, ws, ready, empty, n_steps, step0, off_m, off_n // 16, BLOCK_K, STAGES)),
        ], [1], [40])
    else:
        (acc, ) = _compute(x_desc, w_desc, xs, ws, wbuf, ready, empty, s_ptr, z_ptr, off_m, off_n, N, G, n_steps,
                           step0, GROUP, PER_CHANNEL, HAS_ZERO, BLOCK_N, BLOCK_M, BLOCK_K, STAGES, WS, REGA, ASETS,
                           num_warps, SPARSE)
    for i in gl.static_range(STAGES):
        mbarrier.invalidate(ready.index(i))
        mbarrier.invalidate(empty.index(i))
    if SPLIT == 1:
        _store_out(acc, b_ptr, out_ptr, off_m, off_n, M, N, HAS_BIAS, BLOCK_N, BLOCK_M, dtype, num_warps)
    elif TAIL:
        if n_split == 1:
            _store_out(acc, b_ptr, out_ptr, off_m, off_n, M, N, HAS_BIAS, BLOCK_N, BLOCK_M, dtype, num_warps)
        else:
            n_tiles = gl.cdiv(M, BLOCK_M) * gl.cdiv(N, BLOCK_N)
            last, acc = _split_reduce(acc, part_ptr, cnt_ptr, split, tile - n_full, n_tiles - n_full, SPLIT, BLOCK_N,
                                      BLOCK_M)
            if last:
                _store_out(acc, b_ptr, out_ptr, off_m, off_n, M, N, HAS_BIAS, BLOCK_N, BLOCK_M, dtype, num_warps)
    else:
        last, acc = _split_reduce(acc, part_ptr, cnt_ptr, split, tile, gl.num_programs(1) * gl.num_programs(2),
                                  SPLIT, BLOCK_N, BLOCK_M)
        if last:
            _store_out(acc, b_ptr, out_ptr, off_m, off_n, M, N, HAS_BIAS, BLOCK_N, BLOCK_M, dtype, num_warps)
