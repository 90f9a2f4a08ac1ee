"""A16W4 at large M on Hopper, persistent and stream-K: the register-A wgmma GEMM of ``wgmma.py`` with
one program per SM that walks an equal share of all (output tile, K step) work.

Why: ``wgmma.py`` runs one program per output tile, one program per SM (its shared memory), so

* a shape whose tile count is not a multiple of the SM count wastes the last wave (8192x28672 at
  M = 512: 448 tiles of 128 rows x 256 tokens on 132 SMs, 3.4 waves run as 4, ~15 % idle; N = 4096
  at M = 512: 64 tiles, half the GPU idle);
* every tile pays the pipeline fill (the first TMA round trip) and the epilogue with the tensor
  cores idle.

Here ``P`` programs (at most one per SM) each loop over their work, the "data-parallel + stream-K"
split: first ``dp_rounds`` whole tiles each (tile ``r * P + c`` in round ``r``: the programs working
at the same time take neighbouring tiles, so the weight and activation tiles they share meet in L2,
as with one program per tile), then the ``tail = tiles - dp_rounds * P`` last tiles, cut into
``tail * upt`` K-step pairs, of which program ``c`` takes ``[c * per, (c + 1) * per)`` (the first
``sk_progs = cdiv(tail * upt, per)`` programs; at most 4 programs per tail tile).  The loader warp
streams the TMA of all the program's steps through one slot ring, so the next tile's first loads fly
during this tile's epilogue.  A whole tile is stored directly; a tail tile shared by programs (the
ones whose ranges start or end inside it) is summed by :func:`_fixup`: every contributor stores its
fp32 partial, and the contributor that arrives last adds them in program order (deterministic) and
writes the tile.

Same arithmetic, inputs and constraints as :func:`wgmma.a16w4_wgmma_kernel` with ``REGA`` and
``WS`` (this kernel always dequantizes into the A-operand registers and always has the loader warp),
plus:

* ``part_ptr``: fp32 ``(sk_progs, 2, BLOCK_N, BLOCK_M)`` scratch: a program's first and last tail
  segment (the only ones that can be partial tiles);
* ``cnt_ptr``: int32 ``(tiles,)`` arrival counters, zero before the launch (reset to zero by the
  program that writes the tile);
* ``upt``: K-step pairs per tile (``cdiv(cdiv(K, BLOCK_K), 2)``), ``per``: tail pairs per program,
  ``dp_rounds``, ``tail`` (tiles), ``m_tiles``: ``cdiv(M, BLOCK_M)``; tile ``t`` covers weight rows
  ``(t // m_tiles) * BLOCK_N`` and tokens ``(t % m_tiles) * BLOCK_M`` (the token tiles of one weight
  tile are consecutive).
"""
from __future__ import annotations

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, warpgroup_mma, warpgroup_mma_wait

from .wgmma import _dequant_regs, _load_qparams, _load_step, _split_layout, _store_out


@gluon.jit
def _tile_of(it, cta, n_progs, dp_rounds, upt, per, sk_end, m_tiles, BLOCK_N: gl.constexpr,
             BLOCK_M: gl.constexpr):
    """The segment at the program's work position ``it`` (pairs: ``dp_rounds * upt`` of whole tiles,
    then its tail pairs up to tail position ``sk_end``): its tile, first and end pair within the
    tile, token and row offsets."""
    dp_len = dp_rounds * upt
    dp = (it < dp_len).to(gl.int32)
    r = it // upt
    q = cta * per + (it - dp_len)  # position in the tail pairs
    tile = dp * (r * n_progs + cta) + (1 - dp) * (dp_rounds * n_progs + q // upt)
    kb = dp * (it - r * upt) + (1 - dp) * (q % upt)
    ke = dp * upt + (1 - dp) * gl.minimum(upt, q % upt + (sk_end - q))
    return tile, kb, ke, (tile % m_tiles) * BLOCK_M, (tile // m_tiles) * BLOCK_N


@gluon.jit
def _range(n_progs, dp_rounds, upt, per, tail):
    """The program's work: ``dp_rounds * upt`` pairs of whole tiles, then its tail pairs ending at tail
    position ``sk_end``; returns ``(work length, sk_end)``."""
    cta = gl.program_id(0)
    sk_end = gl.minimum((cta + 1) * per, tail * upt)
    return dp_rounds * upt + gl.maximum(sk_end - cta * per, 0), sk_end


@gluon.jit
def _loader(x_desc, w_desc, xs, ws, ready, empty, dp_rounds, upt, per, tail, m_tiles,
            BLOCK_N: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_K: gl.constexpr, STAGES: gl.constexpr):
    """Worker partition (one warp): the TMA of every K step of the program's work, in order, each into
    the slot the compute warps released (``empty``)."""
    cta = gl.program_id(0)
    n_progs = gl.num_programs(0)
    end, sk_end = _range(n_progs, dp_rounds, upt, per, tail)
    g = cta * 0
    it = cta * 0
    while it < end:
        tile, kb, ke, off_m, off_n = _tile_of(it, cta, n_progs, dp_rounds, upt, per, sk_end, m_tiles, BLOCK_N,
                                              BLOCK_M)
        for j in range(2 * kb, 2 * ke):
            # fill f = g // STAGES of the slot waits for the release of fill f - 1
            mbarrier.wait(empty.index(g % STAGES), ((g // STAGES) & 1) ^ 1, pred=g >= STAGES)
            _load_step(x_desc, w_desc, xs, ws, ready, g, j, True, off_m, off_n // 16, BLOCK_K, STAGES)
            g = g + 1
        it = it + (ke - kb)


@gluon.jit
def _segment(xs, ws, ready, empty, s_ptr, z_ptr, off_n, N, G, g0, step0, n_steps,
             GROUP: gl.constexpr, PER_CHANNEL: gl.constexpr, HAS_ZERO: gl.constexpr,
             BLOCK_N: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_K: gl.constexpr, STAGES: gl.constexpr,
             num_warps: gl.constexpr):
    """K steps ``[step0, step0 + n_steps)`` (``n_steps`` even) of one tile, the program's pipeline steps
    ``g0 ...``: the loop of :func:`wgmma._compute` with ``REGA`` and ``WS``; returns the fp32
    ``[BLOCK_N, BLOCK_M]`` partial.  Step ``g`` releases the slot of step ``g - 1`` (so a segment's
    first step releases the previous segment's last)."""
    mma_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                         instr_shape=[16, BLOCK_M, 16])
    DOT: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma_layout, k_width=2)
    L4: gl.constexpr = _split_layout(gl.to_linear_layout(DOT, [BLOCK_N, BLOCK_K]))
    acc = gl.zeros([BLOCK_N, BLOCK_M], gl.float32, layout=mma_layout)
    s1, zs1 = _load_qparams(s_ptr, z_ptr, 0, step0, off_n, N, G, n_steps, GROUP, PER_CHANNEL, HAS_ZERO, BLOCK_N,
                            BLOCK_K, L4)
    a0 = _dequant_regs(ws, ready, s1, zs1, g0, BLOCK_N, BLOCK_K, STAGES, DOT, L4)
    a1 = a0
    s1, zs1 = _load_qparams(s_ptr, z_ptr, 1, step0, off_n, N, G, n_steps, GROUP, PER_CHANNEL, HAS_ZERO, BLOCK_N,
                            BLOCK_K, L4)
    for kk in range(0, n_steps, 2):
        g = g0 + kk
        mbarrier.wait(ready.index(g % STAGES), (g // STAGES) & 1)
        acc = warpgroup_mma(a0, xs.index(g % STAGES).permute((1, 0)), acc, is_async=True)
        acc, a1 = warpgroup_mma_wait(num_outstanding=1, deps=(acc, a1))  # step g - 1 done
        gl.thread_barrier()
        mbarrier.arrive(empty.index((g + STAGES - 1) % STAGES), pred=g >= 1)
        a1 = _dequant_regs(ws, ready, s1, zs1, g + 1, BLOCK_N, BLOCK_K, STAGES, DOT, L4)
        s1, zs1 = _load_qparams(s_ptr, z_ptr, kk + 2, step0, off_n, N, G, n_steps, GROUP, PER_CHANNEL, HAS_ZERO,
                                BLOCK_N, BLOCK_K, L4)
        g1 = g + 1
        mbarrier.wait(ready.index(g1 % STAGES), (g1 // STAGES) & 1)
        acc = warpgroup_mma(a1, xs.index(g1 % STAGES).permute((1, 0)), acc, is_async=True)
        acc, a0 = warpgroup_mma_wait(num_outstanding=1, deps=(acc, a0))  # step g done
        gl.thread_barrier()
        mbarrier.arrive(empty.index(g % STAGES))
        # past the segment's last step this re-reads its slot (not yet released): computed, never used
        a0 = _dequant_regs(ws, ready, s1, zs1, g0 + gl.minimum(kk + 2, n_steps - 1), BLOCK_N, BLOCK_K, STAGES,
                           DOT, L4)
        s1, zs1 = _load_qparams(s_ptr, z_ptr, kk + 3, step0, off_n, N, G, n_steps, GROUP, PER_CHANNEL, HAS_ZERO,
                                BLOCK_N, BLOCK_K, L4)
    acc, a0, a1 = warpgroup_mma_wait(num_outstanding=0, deps=(acc, a0, a1))
    return acc


@gluon.jit
def _fixup(acc, part_ptr, cnt_ptr, cta, first, tile, t, upt, per, sk_progs,
           BLOCK_N: gl.constexpr, BLOCK_M: gl.constexpr):
    """Tail tile ``t`` (global index ``tile``) shared by programs: store this program's partial (slot 0
    for its first tail segment, 1 for its last), count it; the last of the tile's contributors
    (programs ``(t * upt) // per`` to ``((t + 1) * upt - 1) // per``) sums their partials in program
    order, resets the counter and returns ``(True, sum)``; the others return ``(False, acc)``."""
    L: gl.constexpr = acc.type.layout
    rn = gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, L))
    rm = gl.arange(0, BLOCK_M, layout=gl.SliceLayout(0, L))
    offs = gl.expand_dims(rn, 1) * BLOCK_M + gl.expand_dims(rm, 0)
    TILE: gl.constexpr = BLOCK_N * BLOCK_M
    gl.store(part_ptr + (cta * 2 + 1 - first.to(gl.int32)) * TILE + offs, acc)
    gl.thread_barrier()  # every thread's partial is written before the counter moves
    c0 = (t * upt) // per
    c1 = gl.minimum(((t + 1) * upt - 1) // per, sk_progs - 1)
    last = gl.atomic_add(cnt_ptr + tile, 1, sem="acq_rel", scope="gpu") == c1 - c0
    if last:
        total = gl.zeros_like(acc)
        for c in range(c0, c1 + 1):
            # a contributor that starts inside the tile holds it as its first tail segment
            slot = (c * per < t * upt).to(gl.int32)
            total = total + gl.load(part_ptr + (c * 2 + slot) * TILE + offs, cache_modifier=".cg")
        gl.store(cnt_ptr + tile, 0)
        acc = total
    return last, acc


@gluon.jit
def _compute(xs, ws, ready, empty, s_ptr, z_ptr, b_ptr, out_ptr, part_ptr, cnt_ptr, M, N, G, dp_rounds, upt, per,
             tail, m_tiles, GROUP: gl.constexpr, PER_CHANNEL: gl.constexpr, HAS_ZERO: gl.constexpr,
             HAS_BIAS: gl.constexpr, BLOCK_N: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_K: gl.constexpr,
             STAGES: gl.constexpr, dtype: gl.constexpr, num_warps: gl.constexpr):
    """Default partition: every segment of the program's work, then its tile's store or fixup."""
    cta = gl.program_id(0)
    n_progs = gl.num_programs(0)
    end, sk_end = _range(n_progs, dp_rounds, upt, per, tail)
    sk_progs = gl.cdiv(tail * upt, per)
    g = cta * 0
    it = cta * 0
    while it < end:
        tile, kb, ke, off_m, off_n = _tile_of(it, cta, n_progs, dp_rounds, upt, per, sk_end, m_tiles, BLOCK_N,
                                              BLOCK_M)
        n_steps = 2 * (ke - kb)
        acc = _segment(xs, ws, ready, empty, s_ptr, z_ptr, off_n, N, G, g, 2 * kb, n_steps, GROUP, PER_CHANNEL,
                       HAS_ZERO, BLOCK_N, BLOCK_M, BLOCK_K, STAGES, num_warps)
        done = (kb == 0) & (ke == upt)  # the whole tile in this segment
        if (kb != 0) | (ke != upt):
            done, acc = _fixup(acc, part_ptr, cnt_ptr, cta, it == dp_rounds * upt, tile, tile - dp_rounds * n_progs,
                               upt, per, sk_progs, BLOCK_N, BLOCK_M)
        if done:
            _store_out(acc, b_ptr, out_ptr, off_m, off_n, M, N, HAS_BIAS, BLOCK_N, BLOCK_M, dtype, num_warps)
        g = g + n_steps
        it = it + (ke - kb)


@gluon.jit
def a16w4_wgmma_streamk_kernel(x_desc, w_desc, s_ptr, z_ptr, b_ptr, out_ptr, part_ptr, cnt_ptr, M, N, K, G,
                               upt, per, dp_rounds, tail, m_tiles,
                               GROUP: gl.constexpr, PER_CHANNEL: gl.constexpr, HAS_ZERO: gl.constexpr,
                               HAS_BIAS: gl.constexpr, BLOCK_N: gl.constexpr, STAGES: gl.constexpr,
                               num_warps: gl.constexpr):
    """Grid ``(P,)``: ``P <=`` the SM count, ``dp_rounds * P + tail`` tiles; with ``dp_rounds == 0``,
    ``P = sk_progs`` (no idle program)."""
    BLOCK_M: gl.constexpr = x_desc.block_type.shape[0]
    BLOCK_K: gl.constexpr = x_desc.block_type.shape[1]
    dtype: gl.constexpr = x_desc.dtype
    xs = gl.allocate_shared_memory(dtype, [STAGES, BLOCK_M, BLOCK_K], x_desc.layout)
    ws = gl.allocate_shared_memory(gl.int32, [STAGES] + w_desc.block_type.shape, w_desc.layout)
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(STAGES):
        mbarrier.init(ready.index(i), count=1)
        mbarrier.init(empty.index(i), count=1)
    gl.warp_specialize([
        (_compute, (xs, ws, ready, empty, s_ptr, z_ptr, b_ptr, out_ptr, part_ptr, cnt_ptr, M, N, G, dp_rounds, upt,
                    per, tail, m_tiles, GROUP, PER_CHANNEL, HAS_ZERO, HAS_BIAS, BLOCK_N, BLOCK_M, BLOCK_K, STAGES,
                    dtype, num_warps)),
        (_loader, (x_desc, w_desc, xs, ws, ready, empty, dp_rounds, upt, per, tail, m_tiles, BLOCK_N, BLOCK_M,
                   BLOCK_K, STAGES)),
    ], [1], [40])
    for i in gl.static_range(STAGES):
        mbarrier.invalidate(ready.index(i))
        mbarrier.invalidate(empty.index(i))
