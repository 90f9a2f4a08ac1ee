"""A8W4 at large M on Hopper: a Gluon kernel on int8 wgmma, TMA loads and two ping-ponging warpgroups.

Why (see ``benchmarks/gpu/LARGE_M.md``): the A8W4 sum of a group must be rescaled by that group's
weight scale (``acc += fp32(int32 group sum) * s[n, g]``), so the int32 accumulator has to leave the
tensor cores after every group.  Triton-language kernels wait for every wgmma before that rescale and
the tensor cores idle meanwhile (the Triton GEMM of ``gemm_a8.py`` reaches ~0.6-0.72x cuBLAS bf16).
Here the output tile's weight rows are split between two warpgroups that run as separate
warp-specialized partitions, plus one loader warp issuing the TMA: each warpgroup alternates
"int8 wgmma of a group" and "rescale of that group", and while one rescales, the other's wgmma can
keep the tensor cores busy (the two drift apart freely, or with ``ORDER`` take strict turns; a
shared-memory slot is refilled once both have released it).  Measured on the H100
(``benchmarks/gpu/README.md``, seventh session): 0.66-0.85x cuBLAS bf16 at M = 512 / 2048, issue-bound:
the exact rescale costs three instructions per output and group (start value, exact conversion,
multiply-add) against 128 int8 MACs, ~0.5 instructions per cycle are issued.

What one program computes (swap AB, like ``wgmma.py``): ``out^T[BLOCK_N rows, BLOCK_M tokens]`` =
``W_int8 x_int8^T``: the weight rows are the wgmma A operand, unpacked from the int4 words straight
into the A-operand registers; the activation codes ``[BLOCK_M, BLOCK_K]`` (int8, K contiguous) are
the shared-memory B operand.

* **Unpack** (one shift, one ``lop3``, one subtract, one xor per four codes), into the A-operand
  registers or, with ``SMEM_A`` (the faster variant: the compiler unpacks and repacks int8 register
  elements byte by byte), as int32 words into a shared-memory operand buffer: in the int8 A-operand
  layout a lane holds four consecutive K positions; with the activation codes in the ``PERM8`` order
  of ``gemm_a8`` (K offsets 0, 2, 4, 6, 1, 3, 5, 7 within every 8) those are the even or the odd
  nibbles of one plain-order word: ``((w >> 4h) & 0x0F0F0F0F | 0x80808080) - z * 0x01010101`` holds
  ``128 + q - z`` in each byte without borrows, and ``^ 0x80808080`` makes it the int8 ``q - z``.
* **Exact group sums**: the int32 accumulator of a group starts at ``0x4B400000`` (the bits of
  ``1.5 * 2**23``; asymmetric activations: minus ``(za - 128) * wsum[n, g]``, which turns the sum of
  ``(qa + 128 - 128) (q - z)`` into that of ``(code - za) (q - z)``), so after the group its bits,
  read as fp32, are exactly ``1.5 * 2**23 + sum`` (|sum| < 2**22): one fp32 subtraction gives the
  exact sum, and ``acc += sum * s[n, g]`` is the reference's fp32 product.  At the end ``acc * sa[m]``
  (the activation scale), ``+ bias``.  Same arithmetic as ``gemm_a8`` and the reference.

Inputs:

* ``x_desc``: TMA descriptor of the activation codes ``qa`` int8 ``(M, K)`` in the ``PERM8`` order
  (``ops.launch_quantize_act(perm8=True)``; asymmetric: the uint8 code minus 128), block
  ``[BLOCK_M, BLOCK_K]``;
* ``w_desc``: TMA descriptor of the blocked A8W4 words (plain nibble order) viewed as
  ``(N/16, K8/32 * 16, 32)`` int32, block ``[BLOCK_N / 16, 16, BLOCK_K / 8]`` (as in ``wgmma.py``);
* ``sa_ptr`` fp32 ``(M,)``, ``za_ptr`` int32 ``(M,)`` (``ASYM``): per-token scale / zero point;
* ``s_ptr`` ``(G, N)`` bf16/fp16 scale; ``z_ptr`` int8 ``(G, N)`` (``HAS_ZERO``); ``ws_ptr`` int64
  ``(G, N)`` per-group sums of ``q - z`` (``ASYM``; read as int32); ``b_ptr`` ``(N,)`` (``HAS_BIAS``);
* ``out_ptr`` ``(M, N)`` in the scale's dtype, row stride ``N``.

Constraints (``ops.wgmma_a8_ok``, ``configs.group_tile_ok``): sm_90, grouped weights (``GROUP`` in
32..256), ``BLOCK_K`` = ``GROUP`` or (register operand only) ``GROUP / 2``, ``BLOCK_N = 128`` (two
warpgroups of 64 rows), 64 or 128 tokens; an odd number of K steps gets one more, zero-filled by the
TMA past K with its scales masked to 0.
"""
from __future__ import annotations

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared,
    mbarrier,
    warpgroup_mma,
    warpgroup_mma_wait,
)
from triton.runtime.jit import constexpr_function

from .wgmma import _split_layout, _store_out, _ws_loader

#: rows of one warpgroup's share of the tile (the wgmma M side)
WG_ROWS = gl.constexpr(64)
#: the bits of 1.5 * 2**23 as fp32: an int32 accumulator started here reads as fp32 1.5 * 2**23 + sum
MAGIC_BITS = gl.constexpr(0x4B400000)
MAGIC = gl.constexpr(12582912.0)


def _unpack_asm(word: str, shift: str, zz: str) -> str:
    """PTX of the unpack of four codes: ``((word >> shift) & 0x0F0F0F0F | 0x80808080) - zz`` holds
    ``128 + q - z`` per byte without borrows, ``^ 0x80808080`` makes each byte the int8 ``q - z``
    (operands named as ``inline_asm_elementwise`` numbers them for the caller's packing)."""
    return (f"{{ .reg .b32 t; shr.u32 t, {word}, {shift}; lop3.b32 t, t, 0x0F0F0F0F, 0x80808080, 0xEA; "
            f"sub.u32 t, t, {zz}; xor.b32 $0, t, 0x80808080; }}")


#: four int8 results packed in one register (operands of element 0 of each input: $1, $5, $9)
UNPACK_I8_ASM = gl.constexpr(_unpack_asm("$1", "$5", "$9"))
#: one int32 result (the four codes' bytes) per element
UNPACK_I32_ASM = gl.constexpr(_unpack_asm("$1", "$2", "$3"))


@gluon.jit
def _unpack_i8(ws, ready, zz, step, WG: gl.constexpr, STAGES: gl.constexpr, DOT: gl.constexpr,
               L4: gl.constexpr):
    """Wait for K step ``step``'s words, then this warpgroup's 64 rows of them as the int8 wgmma A
    operand ``[64, BLOCK_K]`` (layout ``DOT``): element (n, p) is ``q - z`` of the K offset that
    position p holds in the ``PERM8`` order.  ``zz``: ``z * 0x01010101`` per row, ``[4, 16]`` int32 in
    the row layout of ``L4``."""
    slot = step % STAGES
    mbarrier.wait(ready.index(slot), (step // STAGES) & 1)
    words = ws.index(slot).slice(WG * 4, 4, dim=0).load(gl.SliceLayout(3, L4))
    p = gl.arange(0, 8, layout=gl.SliceLayout(0, gl.SliceLayout(0, gl.SliceLayout(0, L4))))
    p4 = gl.expand_dims(gl.expand_dims(gl.expand_dims(p, 0), 0), 0)
    words = gl.expand_dims(words, 3)
    shift = p4 & 4  # positions 0-3 of every 8: the even nibbles; 4-7: the odd ones
    zb = gl.expand_dims(gl.expand_dims(zz, 2), 3)
    q = gl.inline_asm_elementwise(
        UNPACK_I8_ASM, "=r,r,r,r,r,r,r,r,r,r,r,r,r", [words, shift, zb], dtype=gl.int8, is_pure=True, pack=4)
    q = gl.reshape(q, [WG_ROWS, ws.shape[3] * 8])
    return gl.convert_layout(q, DOT, assert_trivial=True)


@constexpr_function
def _words_layout(block_k):
    """``[4, 16, BLOCK_K/8, 2]`` layout of the shared-memory unpack: a thread holds half of one row's
    words of the step, both nibble halves of each (so its int32 results are consecutive K positions)."""
    w = block_k // 8
    return gl.BlockedLayout(size_per_thread=[1, 1, w // 2, 2], threads_per_warp=[1, 16, 2, 1],
                            warps_per_cta=[4, 1, 1, 1], order=[3, 2, 1, 0])


@gluon.jit
def _unpack_smem(ws, ready, zz, step, abuf, WG: gl.constexpr, STAGES: gl.constexpr, BLOCK_K: gl.constexpr):
    """Wait for K step ``step``'s words, unpack this warpgroup's 64 rows of them into ``abuf``
    (int32 ``[64, BLOCK_K/4]``, four int8 codes ``q - z`` per word in the ``PERM8`` order: element
    (n, 2w + h) holds the even (h = 0) or odd (h = 1) nibbles of word w), then make the stores visible
    to the tensor cores (proxy fence; the caller's warpgroup barrier orders them before the wgmma).
    ``zz``: ``z * 0x01010101`` per row, ``[4, 16]`` int32 (any layout)."""
    WL: gl.constexpr = _words_layout(BLOCK_K)
    slot = step % STAGES
    mbarrier.wait(ready.index(slot), (step // STAGES) & 1)
    words = ws.index(slot).slice(WG * 4, 4, dim=0).load(gl.SliceLayout(3, WL))
    h = gl.arange(0, 2, layout=gl.SliceLayout(0, gl.SliceLayout(0, gl.SliceLayout(0, WL))))
    h4 = gl.expand_dims(gl.expand_dims(gl.expand_dims(h, 0), 0), 0) * 4
    zb = gl.convert_layout(zz, gl.SliceLayout(2, gl.SliceLayout(3, WL)))
    zb = gl.expand_dims(gl.expand_dims(zb, 2), 3)
    q = gl.inline_asm_elementwise(
        UNPACK_I32_ASM, "=r,r,r,r", [gl.expand_dims(words, 3), h4, zb], dtype=gl.int32, is_pure=True, pack=1)
    abuf.store(gl.reshape(q, [WG_ROWS, BLOCK_K // 4]))
    fence_async_shared()


@gluon.jit
def _group_params(s_ptr, z_ptr, ws_ptr, g, n_groups, row0, N,
                  HAS_ZERO: gl.constexpr, ASYM: gl.constexpr, L4: gl.constexpr, ACC: gl.constexpr):
    """Group ``g``'s parameters for the warpgroup's rows ``row0 ..`` (requested two steps before their
    use, so their latency is hidden): the fp32 scales ``[64, 1]`` (layout ``ACC``; 0 past the last
    group or row), ``z * 0x01010101`` ``[4, 16]`` int32 in the row layout of ``L4``, and (``ASYM``) the
    int32 weight sums ``[64]`` (else zeros)."""
    ok = g < n_groups
    ra = row0 + gl.arange(0, WG_ROWS, layout=gl.SliceLayout(1, ACC))
    s = gl.load(s_ptr + g * N + ra, mask=(ra < N) & ok, other=0.0).to(gl.float32)
    RL: gl.constexpr = gl.SliceLayout(2, gl.SliceLayout(3, L4))
    nb = gl.arange(0, 4, layout=gl.SliceLayout(1, RL))
    nr = gl.arange(0, 16, layout=gl.SliceLayout(0, RL))
    rows = row0 + gl.expand_dims(nb, 1) * 16 + gl.expand_dims(nr, 0)
    if HAS_ZERO:
        z = gl.load(z_ptr + g * N + rows, mask=(rows < N) & ok, other=0).to(gl.int32)
    else:
        z = gl.full([4, 16], 8, gl.int32, layout=RL)
    if ASYM:
        wsum = gl.load(ws_ptr + g * N + ra, mask=(ra < N) & ok, other=0).to(gl.int32)
    else:
        wsum = gl.zeros([WG_ROWS], gl.int32, layout=gl.SliceLayout(1, ACC))
    return gl.expand_dims(s, 1), z * 0x01010101, wsum


@gluon.jit
def _acc_start(wsum, za_s, ASYM: gl.constexpr, ACC: gl.constexpr):
    """The int32 accumulator's start ``[64, BLOCK_M]`` (``ACC``): ``MAGIC_BITS`` (``ASYM``: minus
    ``za_s[m] * wsum[n]``)."""
    start = gl.full([WG_ROWS, za_s.shape[0]], MAGIC_BITS, gl.int32, layout=ACC)
    if ASYM:
        start = start - gl.expand_dims(wsum, 1) * gl.expand_dims(za_s, 0)
    return start


@gluon.jit
def _rescale(acc, part, s):
    """``acc + (fp32 bits of part - 1.5 * 2**23) * s``: the exact group sum times its scale."""
    return acc + (part.to(gl.float32, bitcast=True) - MAGIC) * s


@gluon.jit
def _smem_wgmma(abuf_k, xk, w, za_s, ASYM: gl.constexpr, BLOCK_K: gl.constexpr, AL8: gl.constexpr,
                ACC: gl.constexpr):
    """Issue (asynchronously) the int8 wgmma of one group with the unpacked weights in shared memory
    (``abuf_k``, int32 words read as int8 ``[64, BLOCK_K]``) and the activation tile ``xk``, into a fresh
    int32 accumulator started at the group's :func:`_acc_start`."""
    return warpgroup_mma(abuf_k._reinterpret(gl.int8, [WG_ROWS, BLOCK_K], AL8), xk, _acc_start(w, za_s, ASYM, ACC),
                         is_async=True)


@gluon.jit
def _wait_turn(turn, j, WG: gl.constexpr, ORDER: gl.constexpr):
    """With ``ORDER``: before this warpgroup's wgmma of turn ``j``, wait until the other warpgroup's
    wgmma of its previous turn is done (warpgroup 0 goes first), so the two alternate on the tensor
    cores: one multiplies while the other rescales."""
    if ORDER:
        i = j - (1 - WG)  # warpgroup 0's turn j follows warpgroup 1's turn j - 1; warpgroup 1's j follows 0's j
        mbarrier.wait(turn.index(WG), i & 1, pred=i >= 0)


@gluon.jit
def _pass_turn(turn, WG: gl.constexpr, ORDER: gl.constexpr):
    """With ``ORDER``: this warpgroup's wgmma is done, the other one's may start."""
    if ORDER:
        mbarrier.arrive(turn.index(1 - WG))


@gluon.jit
def _group_step(acc, a, xk, k, u, s, w, zz_u, g_ahead, ws, ready, empty, turn, s_ptr, z_ptr, ws_ptr,
                n_groups, row0, N, za_s, WG: gl.constexpr, HAS_ZERO: gl.constexpr, ASYM: gl.constexpr,
                ORDER: gl.constexpr, STAGES: gl.constexpr, DOT: gl.constexpr, L4: gl.constexpr, ACC: gl.constexpr):
    """One group of one K step with the weights in the A-operand registers (``SUB == 1``): request
    group ``g_ahead``'s parameters, (take the turn,) issue the wgmma of step ``k`` on ``a`` / ``xk``
    started at the group's ``_acc_start``, unpack step ``u``'s weights (``zz_u``) meanwhile, wait, (pass
    the turn,) release step ``k``'s slot and rescale by ``s``.  Returns ``(acc, unpacked A of step u,
    s, zz, wsum of group g_ahead)``; the caller alternates the two A register sets."""
    s_a, zz_a, w_a = _group_params(s_ptr, z_ptr, ws_ptr, g_ahead, n_groups, row0, N, HAS_ZERO, ASYM, L4, ACC)
    _wait_turn(turn, k, WG, ORDER)
    part = warpgroup_mma(a, xk, _acc_start(w, za_s, ASYM, ACC), is_async=True)
    a_u = _unpack_i8(ws, ready, zz_u, u, WG, STAGES, DOT, L4)
    part = warpgroup_mma_wait(num_outstanding=0, deps=(part, ))
    _pass_turn(turn, WG, ORDER)
    mbarrier.arrive(empty.index(k % STAGES))
    return _rescale(acc, part, s), a_u, s_a, zz_a, w_a


@gluon.jit
def _group_step_smem(acc, abuf_k, abuf_u, xk, k, u, s, w, zz_u, g_ahead, ws, ready, empty, turn, s_ptr, z_ptr,
                     ws_ptr, n_groups, row0, N, za_s, WG: gl.constexpr, HAS_ZERO: gl.constexpr, ASYM: gl.constexpr,
                     ORDER: gl.constexpr, STAGES: gl.constexpr, BLOCK_K: gl.constexpr, AL8: gl.constexpr,
                     L4: gl.constexpr, ACC: gl.constexpr):
    """:func:`_group_step` with the unpacked weights in shared memory (``SMEM_A``): step ``k``'s in
    ``abuf_k`` (int32 words, read as int8), step ``u``'s written into ``abuf_u`` meanwhile.  Returns
    ``(acc, s, zz, wsum of group g_ahead)``."""
    s_a, zz_a, w_a = _group_params(s_ptr, z_ptr, ws_ptr, g_ahead, n_groups, row0, N, HAS_ZERO, ASYM, L4, ACC)
    gl.thread_barrier()  # every warp's stores of abuf_k are done (and fenced)
    _wait_turn(turn, k, WG, ORDER)
    part = _smem_wgmma(abuf_k, xk, w, za_s, ASYM, BLOCK_K, AL8, ACC)
    _unpack_smem(ws, ready, zz_u, u, abuf_u, WG, STAGES, BLOCK_K)
    part = warpgroup_mma_wait(num_outstanding=0, deps=(part, ))
    _pass_turn(turn, WG, ORDER)
    mbarrier.arrive(empty.index(k % STAGES))
    return _rescale(acc, part, s), s_a, zz_a, w_a


@gluon.jit
def _pipe_loop(acc, abuf, xs, ws, ready, empty, s_ptr, z_ptr, ws_ptr, n_steps, n_groups, row0, N, za_s,
               WG: gl.constexpr, HAS_ZERO: gl.constexpr, ASYM: gl.constexpr, STAGES: gl.constexpr,
               BLOCK_K: gl.constexpr, AL8: gl.constexpr, L4: gl.constexpr, ACC: gl.constexpr):
    """The paired group loop (``PIPE``; one K step per group, weights through shared memory; ``n_steps``
    even). Per pair of steps ``kk``, ``kk + 1``: issue the wgmma of ``kk``; unpack ``kk + 1`` meanwhile;
    issue its wgmma; wait for ``kk``'s and rescale it while ``kk + 1``'s runs; unpack ``kk + 2``; wait for
    ``kk + 1``'s and rescale it. So the tensor cores idle for one rescale per pair instead of one per
    step (the other warpgroup's wgmma may fill it). Both int32 accumulators are issued and waited for
    within the iteration: an accumulator carried in flight across the loop's back edge would be copied
    there, which makes ptxas serialize every wgmma (C7514). Group parameters are requested one pair
    ahead."""
    s0, zz0, w0 = _group_params(s_ptr, z_ptr, ws_ptr, 0, n_groups, row0, N, HAS_ZERO, ASYM, L4, ACC)
    s1, zz1, w1 = _group_params(s_ptr, z_ptr, ws_ptr, 1, n_groups, row0, N, HAS_ZERO, ASYM, L4, ACC)
    _unpack_smem(ws, ready, zz0, 0, abuf.index(0), WG, STAGES, BLOCK_K)
    for kk in range(0, n_steps, 2):
        s2, zz2, w2 = _group_params(s_ptr, z_ptr, ws_ptr, kk + 2, n_groups, row0, N, HAS_ZERO, ASYM, L4, ACC)
        s3, zz3, w3 = _group_params(s_ptr, z_ptr, ws_ptr, kk + 3, n_groups, row0, N, HAS_ZERO, ASYM, L4, ACC)
        gl.thread_barrier()  # every warp's stores of abuf[0] are done (and fenced)
        pa = _smem_wgmma(abuf.index(0), xs.index(kk % STAGES).permute((1, 0)), w0, za_s, ASYM, BLOCK_K, AL8, ACC)
        _unpack_smem(ws, ready, zz1, kk + 1, abuf.index(1), WG, STAGES, BLOCK_K)  # read by step kk - 1: done
        gl.thread_barrier()
        pb = _smem_wgmma(abuf.index(1), xs.index((kk + 1) % STAGES).permute((1, 0)), w1, za_s, ASYM, BLOCK_K, AL8,
                         ACC)
        pa = warpgroup_mma_wait(num_outstanding=1, deps=(pa, ))
        mbarrier.arrive(empty.index(kk % STAGES))
        acc = _rescale(acc, pa, s0)
        # past the last step this re-reads the last slot (still full): computed, never used
        _unpack_smem(ws, ready, zz2, gl.minimum(kk + 2, n_steps - 1), abuf.index(0), WG, STAGES, BLOCK_K)
        pb = warpgroup_mma_wait(num_outstanding=0, deps=(pb, ))
        mbarrier.arrive(empty.index((kk + 1) % STAGES))
        acc = _rescale(acc, pb, s1)
        s0, zz0, w0, s1, zz1, w1 = s2, zz2, w2, s3, zz3, w3
    return acc


@gluon.jit
def _a8_compute(xs, ws, ready, empty, turn, sa_ptr, za_ptr, s_ptr, z_ptr, ws_ptr, b_ptr, out_ptr,
                off_m, off_n, M, N, n_steps, n_groups, WG: gl.constexpr, SUB: gl.constexpr,
                HAS_ZERO: gl.constexpr, HAS_BIAS: gl.constexpr, ASYM: gl.constexpr, ORDER: gl.constexpr,
                SMEM_A: gl.constexpr, PIPE: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_K: gl.constexpr,
                STAGES: gl.constexpr):
    """One warpgroup (partition): rows ``off_n + 64 WG ..`` of the tile over all of K, then its store.

    ``SUB`` K steps per group (1 or 2); the loop takes two steps per iteration so the A operands of
    the two steps live in two fixed register sets (see ``wgmma._compute``).  Per group: (``ORDER``:
    wait for this warpgroup's turn,) issue its wgmma (asynchronous), unpack the next step's weights
    while it runs, wait for it, (pass the turn,) release its shared-memory slots to the loader
    (``empty``), rescale the group's sum into the fp32 accumulator -- the other warpgroup's wgmma
    runs meanwhile.  ``SMEM_A``: the unpacked weights go through two shared-memory buffers (the
    wgmma A operand from shared memory) instead of the A-operand registers: no int8 register
    elements (which the compiler unpacks and repacks byte by byte), at the cost of a store, a proxy
    fence and a warpgroup barrier per step.  ``PIPE`` (with ``SMEM_A``, without ``ORDER``): the wgmma of
    the next group is issued before this group's rescale (:func:`_pipe_loop`)."""
    if SMEM_A:
        gl.static_assert(SUB == 1, "SMEM_A: one K step per group")
        AL32: gl.constexpr = gl.NVMMASharedLayout(swizzle_byte_width=min(128, BLOCK_K), element_bitwidth=32, rank=2)
        AL8: gl.constexpr = gl.NVMMASharedLayout(swizzle_byte_width=min(128, BLOCK_K), element_bitwidth=8, rank=2)
        abuf = gl.allocate_shared_memory(gl.int32, [2, WG_ROWS, BLOCK_K // 4], AL32)
    ACC: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                  instr_shape=[16, BLOCK_M, 32])
    DOT: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=ACC, k_width=4)
    L4: gl.constexpr = _split_layout(gl.to_linear_layout(DOT, [WG_ROWS, BLOCK_K]))
    row0 = off_n + WG * WG_ROWS
    rm = off_m + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(0, ACC))
    if ASYM:
        za_s = gl.load(za_ptr + rm, mask=rm < M, other=128) - 128
    else:
        za_s = gl.zeros([BLOCK_M], gl.int32, layout=gl.SliceLayout(0, ACC))
    acc = gl.zeros([WG_ROWS, BLOCK_M], gl.float32, layout=ACC)
    if PIPE:
        gl.static_assert(SMEM_A and SUB == 1 and not ORDER, "PIPE: weights through shared memory, no turns")
        acc = _pipe_loop(acc, abuf, xs, ws, ready, empty, s_ptr, z_ptr, ws_ptr, n_steps, n_groups, row0, N, za_s,
                         WG, HAS_ZERO, ASYM, STAGES, BLOCK_K, AL8, L4, ACC)
        sa = gl.load(sa_ptr + rm, mask=rm < M, other=0.0)
        acc = acc * gl.expand_dims(sa, 0)
        _store_out(acc, b_ptr, out_ptr, off_m, row0, M, N, HAS_BIAS, WG_ROWS, BLOCK_M, out_ptr.dtype.element_ty, 4)
        return
    # parameters of the next two groups (SUB == 1: steps kk, kk + 1; SUB == 2: groups kk / 2, kk / 2 + 1)
    s0, zz0, w0 = _group_params(s_ptr, z_ptr, ws_ptr, 0, n_groups, row0, N, HAS_ZERO, ASYM, L4, ACC)
    s1, zz1, w1 = _group_params(s_ptr, z_ptr, ws_ptr, 1, n_groups, row0, N, HAS_ZERO, ASYM, L4, ACC)
    if SMEM_A:
        _unpack_smem(ws, ready, zz0, 0, abuf.index(0), WG, STAGES, BLOCK_K)
        a0 = 0
    else:
        a0 = _unpack_i8(ws, ready, zz0, 0, WG, STAGES, DOT, L4)
    a1 = a0
    for kk in range(0, n_steps, 2):
        xk = xs.index(kk % STAGES).permute((1, 0))
        xk1 = xs.index((kk + 1) % STAGES).permute((1, 0))
        if SMEM_A:
            # steps kk and kk + 1 are two groups; their weights in abuf[0] / abuf[1]
            acc, s2, zz2, w2 = _group_step_smem(
                acc, abuf.index(0), abuf.index(1), xk, kk, kk + 1, s0, w0, zz1, kk + 2, ws, ready, empty, turn, s_ptr,
                z_ptr, ws_ptr, n_groups, row0, N, za_s, WG, HAS_ZERO, ASYM, ORDER, STAGES, BLOCK_K, AL8, L4, ACC)
            # past the last step the unpack re-reads the last slot (still full): computed, never used
            acc, s3, zz3, w3 = _group_step_smem(
                acc, abuf.index(1), abuf.index(0), xk1, kk + 1, gl.minimum(kk + 2, n_steps - 1), s1, w1, zz2, kk + 3,
                ws, ready, empty, turn, s_ptr, z_ptr, ws_ptr, n_groups, row0, N, za_s, WG, HAS_ZERO, ASYM, ORDER,
                STAGES, BLOCK_K, AL8, L4, ACC)
            s0, zz0, w0, s1, zz1, w1 = s2, zz2, w2, s3, zz3, w3
        elif SUB == 1:
            # steps kk and kk + 1 are two groups; their weights alternate between the registers a0 / a1
            acc, a1, s2, zz2, w2 = _group_step(
                acc, a0, xk, kk, kk + 1, s0, w0, zz1, kk + 2, ws, ready, empty, turn, s_ptr, z_ptr, ws_ptr,
                n_groups, row0, N, za_s, WG, HAS_ZERO, ASYM, ORDER, STAGES, DOT, L4, ACC)
            # past the last step the unpack re-reads the last slot (still full): computed, never used
            acc, a0, s3, zz3, w3 = _group_step(
                acc, a1, xk1, kk + 1, gl.minimum(kk + 2, n_steps - 1), s1, w1, zz2, kk + 3, ws, ready, empty,
                turn, s_ptr, z_ptr, ws_ptr, n_groups, row0, N, za_s, WG, HAS_ZERO, ASYM, ORDER, STAGES, DOT, L4, ACC)
            s0, zz0, w0, s1, zz1, w1 = s2, zz2, w2, s3, zz3, w3
        else:
            # steps kk and kk + 1 are the two halves of group kk / 2
            s2, zz2, w2 = _group_params(s_ptr, z_ptr, ws_ptr, kk // 2 + 2, n_groups, row0, N, HAS_ZERO, ASYM, L4,
                                        ACC)
            _wait_turn(turn, kk // 2, WG, ORDER)
            part = warpgroup_mma(a0, xk, _acc_start(w0, za_s, ASYM, ACC), is_async=True)
            a1 = _unpack_i8(ws, ready, zz0, kk + 1, WG, STAGES, DOT, L4)
            part = warpgroup_mma(a1, xk1, part, is_async=True)
            part = warpgroup_mma_wait(num_outstanding=1, deps=(part, ))
            mbarrier.arrive(empty.index(kk % STAGES))
            a0 = _unpack_i8(ws, ready, zz1, gl.minimum(kk + 2, n_steps - 1), WG, STAGES, DOT, L4)
            part = warpgroup_mma_wait(num_outstanding=0, deps=(part, ))
            _pass_turn(turn, WG, ORDER)
            mbarrier.arrive(empty.index((kk + 1) % STAGES))
            acc = _rescale(acc, part, s0)
            s0, zz0, w0, s1, zz1, w1 = s1, zz1, w1, s2, zz2, w2
    sa = gl.load(sa_ptr + rm, mask=rm < M, other=0.0)
    acc = acc * gl.expand_dims(sa, 0)
    _store_out(acc, b_ptr, out_ptr, off_m, row0, M, N, HAS_BIAS, WG_ROWS, BLOCK_M, out_ptr.dtype.element_ty, 4)


@gluon.jit
def a8w4_wgmma_kernel(x_desc, w_desc, sa_ptr, za_ptr, s_ptr, z_ptr, ws_ptr, b_ptr, out_ptr, M, N, K,
                      GROUP: gl.constexpr, HAS_ZERO: gl.constexpr, HAS_BIAS: gl.constexpr, ASYM: gl.constexpr,
                      STAGES: gl.constexpr, ORDER: gl.constexpr, SMEM_A: gl.constexpr, PIPE: gl.constexpr,
                      COMPUTE_REGS: gl.constexpr, num_warps: gl.constexpr):
    """One program: outputs ``[BLOCK_M tokens, 128 rows]``; grid ``(cdiv(M, BLOCK_M), cdiv(N, 128))``
    (the M tiles of one weight tile are neighbours, so the weights come from HBM about once).
    ``num_warps`` must be 4: the default partition is warpgroup 0, a 4-warp worker partition is
    warpgroup 1 (``COMPUTE_REGS`` registers per thread), a 1-warp worker issues the TMA.  ``ORDER``: the
    two warpgroups take turns on the tensor cores (one mbarrier each, see :func:`_wait_turn`)."""
    BLOCK_M: gl.constexpr = x_desc.block_type.shape[0]
    BLOCK_K: gl.constexpr = x_desc.block_type.shape[1]
    SUB: gl.constexpr = GROUP // BLOCK_K
    off_m = gl.program_id(0) * BLOCK_M
    off_n = gl.program_id(1) * (2 * WG_ROWS)
    n_steps = gl.cdiv(K, 2 * BLOCK_K) * 2  # even: a step past K reads zeros (TMA fill) with scale 0
    xs = gl.allocate_shared_memory(gl.int8, [STAGES, BLOCK_M, BLOCK_K], x_desc.layout)
    ws = gl.allocate_shared_memory(gl.int32, [STAGES] + w_desc.block_type.shape, w_desc.layout)
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    turn = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(STAGES):
        mbarrier.init(ready.index(i), count=1)
        mbarrier.init(empty.index(i), count=2)  # both warpgroups release a slot
    for i in gl.static_range(2):
        mbarrier.init(turn.index(i), count=1)
    gl.warp_specialize([
        (_a8_compute, (xs, ws, ready, empty, turn, sa_ptr, za_ptr, s_ptr, z_ptr, ws_ptr, b_ptr, out_ptr, off_m, off_n,
                       M, N, n_steps, K // GROUP, 0, SUB, HAS_ZERO, HAS_BIAS, ASYM, ORDER, SMEM_A, PIPE, BLOCK_M, BLOCK_K,
                       STAGES)),
        (_a8_compute, (xs, ws, ready, empty, turn, sa_ptr, za_ptr, s_ptr, z_ptr, ws_ptr, b_ptr, out_ptr, off_m, off_n,
                       M, N, n_steps, K // GROUP, 1, SUB, HAS_ZERO, HAS_BIAS, ASYM, ORDER, SMEM_A, PIPE, BLOCK_M, BLOCK_K,
                       STAGES)),
        (_ws_loader, (x_desc, w_desc, xs, ws, ready, empty, n_steps, 0, off_m, off_n // 16, BLOCK_K, STAGES)),
    ], [4, 1], [COMPUTE_REGS, 40])
    for i in gl.static_range(STAGES):
        mbarrier.invalidate(ready.index(i))
        mbarrier.invalidate(empty.index(i))
    for i in gl.static_range(2):
        mbarrier.invalidate(turn.index(i))
