"""Tile configurations for the Triton kernels: keys, M buckets, the shipped table, the disk cache.

Pure Python (no triton import), so it is unit-tested on machines without a GPU.

A configuration is chosen per ``(GPU name, op, N, K, group, M bucket)``:

1. the on-disk cache ``$NYBBLE_CACHE_DIR/triton/<gpu>.json`` (default ``~/.cache/nybble``), written
   by :func:`save_cached` after an autotuning run;
2. the table shipped in the package (``tables/<gpu>.json``, made from autotuning runs on that GPU);
3. otherwise a heuristic (:func:`heuristic`).  ``ops.py`` autotunes (and caches) unknown keys on
   the first eager call unless ``NYBBLE_TRITON_AUTOTUNE=0``; it never tunes during CUDA-graph
   capture or ``torch.compile`` tracing.
"""
from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import asdict, dataclass, replace
from pathlib import Path

#: M buckets: a call with M rows uses the config of the smallest bucket >= M (the last covers more)
M_BUCKETS: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)

#: ``TileConfig.block_m`` of the A16W4 Gluon wgmma GEMM (``wgmma.py``)
WGMMA = 3
#: ``TileConfig.block_m`` of the A8W4 Gluon int8 wgmma GEMM (``wgmma_a8.py``)
WGMMA_A8 = 4
#: ``TileConfig.block_m`` of the A8W4 M = 1 Gluon GEMV on a TMA weight stream (``tma_gemv_a8.py``)
TMA_GEMV_A8 = 5

_TABLE_DIR = Path(__file__).with_name("tables")
_lock = threading.Lock()


@dataclass(frozen=True)
class TileConfig:
    """One launch configuration.

    ``block_m``/``block_n``/``block_k``: tile sizes along M (activation rows), N (outputs), K;
    ``split_k``: programs sharing one output tile along K (fp32 partials summed by a small kernel);
    ``block_m == 1`` marks the M = 1 CUDA-core GEMV kernel;
    ``block_m == 2`` marks the A16W4 mma.sync GEMV of ``mma.py`` (M <= 64; ``block_n`` rows per
    program, ``block_k`` K values per tile, ``num_stages`` bit 0: evict-first weight loads, bit 1:
    split-K partials summed by the finish kernel instead of in-kernel, bits 2-3: at most 2 / 4 / 8
    blocks of 8 x rows per program (0 / 1 / 2; larger M is split over programs), bit 4: zero point
    and scale per group in fp32 instead of per weight in 16-bit math (group >= 128 / per-channel),
    bit 5: register double buffer (the next K tile's words are requested before this tile's MMAs),
    bit 6 (A8W4 at M = 1 only): the activation quantization in its own one-program kernel, the GEMV
    launched after it with programmatic dependent launch instead of quantizing in every program),
    bit 7 (A8W4 at M = 1, without bit 6): the in-kernel quantization sweeps x in whole blocks,
    bit 8 (A8W4 at M = 1, without bit 6): every program writes its activation codes to scratch rows
    of its own instead of one row shared by the programs of its K slice, bit 11 (A8W4 at M = 1,
    without bit 6): those codes go through a static shared-memory row instead (replaces bit 8;
    :func:`mma_code_row_bytes`), bit 9 (not with bit 5): each warp requests its first K tile as the
    program starts, before the A8W4 quantization prologue, and computes it before its loop, bits
    12-13: ``1 << bits`` warps share each row group and split the program's K slice
    (:func:`mma_k_warps`; ``block_n`` rows then cover
    ``num_warps / KW`` row groups); A8W4 ignores bit 4);
    ``block_m == 3`` (:data:`WGMMA`) marks the A16W4 Gluon GEMM of ``wgmma.py`` (TMA + asynchronous
    wgmma, sm_90): ``block_n`` weight rows and ``split_k`` tokens per program, ``block_k`` K per
    pipeline step, ``num_stages & 15`` TMA slots, ``num_stages`` bit 5: warp specialization (a loader
    warp issues the TMA), bit 6: dequantize into the A-operand registers instead of shared memory,
    bits 7-8: split-K, ``1 + (num_stages >> 7 & 3)`` K slices per output tile (:func:`wgmma_splits`),
    bit 10 (with bits 7-8): split only the tiles of the last, partial wave (:func:`wgmma_tail_only`),
    bit 11 (with bit 6): one CTA barrier per loop iteration (2 or 3 K steps) instead of one per step
    (bit 4, the fifth session's switch to 16-bit dequantization, is ignored: it is the only one now);
    ``block_m == 4`` (:data:`WGMMA_A8`) marks the A8W4 Gluon int8 GEMM of ``wgmma_a8.py`` (sm_90,
    grouped weights): ``block_n`` = 128 weight rows (two ping-ponging warpgroups of 64) and
    ``split_k`` tokens per program, ``block_k`` K per step (the group or half of it),
    ``num_stages & 15`` TMA slots, ``num_stages`` bit 4: the two warpgroups take turns on the tensor
    cores, bit 5: the unpacked weights go through shared memory (K step = group), ``num_warps`` 4 (plus a 4-warp worker and the loader warp);
    ``block_m == 5`` (:data:`TMA_GEMV_A8`) marks the A8W4 M = 1 Gluon GEMV of ``tma_gemv_a8.py``
    (sm_90, groups of 32..256): ``block_n`` rows per TMA unit (32 / 64 / 128; units of one 256-wide K
    block), ``block_k`` 256, ``split_k`` programs per SM, ``num_stages`` TMA slots, ``num_warps`` 4 or
    8 compute warps (plus the loader warp);
    ``block_m == 0`` marks the A16W4 large-M path "dequantize ``block_n`` rows into an L2-resident
    scratch, then cuBLAS";
    for A8W4, ``block_k == 0`` (with ``block_m >= 16``) marks the large-M int8 GEMM of ``gemm_a8.py``
    (grouped weights; K steps of one group; ``split_k & 3`` = groups per MMA batch, 1 or 2;
    ``split_k >> 2`` = a register cap, see :data:`A8_GEMM_MAXNREG`);
    ``block_m < 0`` marks the A8W4 small-M CUDA-core GEMV on dp4a ``jit.gemv_dp4a_kernel`` (up to
    ``-block_m`` rows); its ``num_stages`` field holds flags instead
    (bit 0: register prefetch of the next K tile, bit 1: ``evict_first`` weight loads);
    ``num_warps``/``num_stages``: Triton launch options.
    """

    block_m: int
    block_n: int
    block_k: int
    split_k: int = 1
    num_warps: int = 4
    num_stages: int = 3

    def to_json(self) -> list[int]:
        return [self.block_m, self.block_n, self.block_k, self.split_k, self.num_warps, self.num_stages]

    @classmethod
    def from_json(cls, v) -> "TileConfig":
        if isinstance(v, dict):
            return cls(**v)
        if not isinstance(v, (list, tuple)) or len(v) != 6 or not all(isinstance(i, int) for i in v):
            raise ValueError(f"bad tile config entry {v!r}: expected 6 integers "
                             "[block_m, block_n, block_k, split_k, num_warps, num_stages]")
        return cls(*v)


def m_bucket(m: int) -> int:
    """The bucket of ``m`` rows: the smallest ``M_BUCKETS`` entry >= m (the largest for bigger m)."""
    if m < 1:
        raise ValueError(f"M must be >= 1, got {m}")
    for b in M_BUCKETS:
        if m <= b:
            return b
    return M_BUCKETS[-1]


def gpu_slug(name: str) -> str:
    """``"NVIDIA H100 80GB HBM3"`` -> ``"nvidia_h100_80gb_hbm3"`` (file-name safe)."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def make_key(op: str, n: int, k: int, group_size: int, m: int) -> str:
    """Table key ``"<op>|N|K|group|Mbucket"``; ``op`` is e.g. ``"a16w4"`` or ``"a8w4"``."""
    return f"{op}|{n}|{k}|{group_size}|{m_bucket(m)}"


def is_a8_gemm(cfg: TileConfig) -> bool:
    """Is ``cfg`` an A8W4 config of the large-M int8 GEMM of ``gemm_a8.py`` (``block_k == 0``)?"""
    return cfg.block_k == 0 and cfg.block_m >= 16


def wgmma_a8_smem(cfg: TileConfig) -> int:
    """Shared memory (bytes) of a :data:`WGMMA_A8` config: per TMA slot, the activation tile (tokens x
    K step int8) and the weight words (rows x K step / 2); with bit 5 the unpacked operand buffers."""
    abuf = 2 * cfg.block_n * cfg.block_k if cfg.num_stages & 32 else 0  # two int8 operand buffers per warpgroup
    return (cfg.num_stages & 15) * (cfg.split_k * cfg.block_k + cfg.block_n * cfg.block_k // 2) + abuf


#: shared memory per block on sm_90 (bytes)
SMEM_LIMIT = 232448


def a8_gemm_smem(cfg: TileConfig, group_size: int) -> int:
    """Shared memory (bytes) of a ``gemm_a8`` config: per group in a batch (``split_k``), ``num_stages``
    activation tiles (BLOCK_M x group int8), ``num_stages - 1`` int4 weight tiles and the unpacked
    int8 weight tile (matches Triton 3.6's allocation on sm_90)."""
    g = group_size
    return (cfg.split_k & 3) * (cfg.num_stages * cfg.block_m * g + (cfg.num_stages - 1) * cfg.block_n * g // 2
                          + cfg.block_n * g)


def wgmma_splits(cfg: TileConfig) -> int:
    """K slices per output tile of a wgmma config (``num_stages`` bits 7-8): 1 to 4."""
    return 1 + ((cfg.num_stages >> 7) & 3)


def wgmma_tail_only(cfg: TileConfig) -> bool:
    """Does a split-K wgmma config (``num_stages`` bit 10, with bits 7-8) split only the output tiles of
    the last, partial wave of programs (:func:`wgmma_ctas_per_sm`), the others running whole?"""
    return bool(cfg.num_stages & 1024) and wgmma_splits(cfg) > 1


def wgmma_ctas_per_sm(cfg: TileConfig) -> int:
    """Programs of a wgmma config resident on one SM at a time, estimated from its shared memory
    (slots x (tokens x K step x 2 + rows x K step / 2) bytes, plus three dequantized operand buffers
    without bit 6) and its registers (the fp32 accumulator, the A-operand sets, ~48 more per thread):
    how many programs make one wave, which places the tail of :func:`wgmma_tail_only`.  An estimate:
    a wrong one only moves the split point, never the results."""
    rega = bool(cfg.num_stages & 64)
    smem = (cfg.num_stages & 15) * (cfg.split_k * cfg.block_k * 2 + cfg.block_n * cfg.block_k // 2)
    smem += 0 if rega else 3 * cfg.block_n * cfg.block_k * 2
    threads = 32 * cfg.num_warps
    regs = cfg.block_n * cfg.split_k // threads + 48
    if rega:
        regs += wgmma_a_sets(cfg) * cfg.block_n * cfg.block_k // (2 * threads)
    by_regs = 65536 // ((threads + 32 * bool(cfg.num_stages & 32)) * min(255, regs))
    return max(1, min(SMEM_LIMIT // (smem + 2048), by_regs))


def wgmma_grid(cfg: TileConfig, m: int, n: int, wave: int) -> tuple[tuple[int, ...], int, int]:
    """``(grid, n_full, split_tiles)`` of a wgmma launch on ``m`` tokens and ``n`` weight rows with
    ``wave`` SMs: ``(slices, token tiles, row tiles)`` with every tile split (or none), or, tail-only
    (:func:`wgmma_tail_only`), a 1-D grid of ``n_full`` whole tiles (full waves of
    ``wave * wgmma_ctas_per_sm`` programs) then ``slices`` programs per remaining tile;
    ``split_tiles``: tiles whose partials need workspace planes and counters."""
    tiles_m, tiles_n = -(-m // cfg.split_k), -(-n // cfg.block_n)
    tiles, splits = tiles_m * tiles_n, wgmma_splits(cfg)
    if wgmma_tail_only(cfg):
        n_full = tiles - tiles % (wave * wgmma_ctas_per_sm(cfg))
        if n_full < tiles:
            return (n_full + splits * (tiles - n_full), ), n_full, tiles - n_full
        splits = 1  # whole waves only: nothing to split (the kernel runs unsplit)
    return (splits, tiles_m, tiles_n), 0, tiles if splits > 1 else 0


def wgmma_slice_steps(cfg: TileConfig, k: int) -> int | None:
    """K steps of every slice but the last of a wgmma config on ``k`` input features (what the kernel
    computes: ``cdiv(steps, splits)``, even with bit 6), or None when the last slice would be empty."""
    steps = -(-k // cfg.block_k)
    splits = wgmma_splits(cfg)
    per = -(-steps // splits)
    if cfg.num_stages & 64:
        per += -per % wgmma_a_sets(cfg)
    return per if steps > (splits - 1) * per else None


def wgmma_a_sets(cfg: TileConfig) -> int:
    """A-operand register sets of a register-A wgmma config (``num_stages`` bit 6): 2, or 3 with bit 9
    (the wgmma of step k + 1 is queued before step k + 2 is dequantized); its K steps per slice are a
    multiple of it."""
    return 3 if cfg.num_stages & 512 else 2


def group_tile_ok(cfg: TileConfig, group_size: int, k: int, op: str) -> bool:
    """Is ``cfg`` valid for this group size? A8W4 needs ``block_k == group`` (it converts the int32
    group sum to fp32 after each tile; the ``gemm_a8`` configs, ``block_k == 0``, step one group
    and need grouped weights); A16W4 needs groups and tiles nested either way."""
    g = k if group_size == -1 else group_size
    if cfg.block_m == WGMMA_A8:  # grouped A8W4 only; one or two K steps per group; two 64-row warpgroups
        return (op == "a8w4" and group_size != -1 and cfg.block_k >= 32 and group_size % cfg.block_k == 0
                and group_size // cfg.block_k <= (1 if cfg.num_stages & 32 else 2)
                and (not cfg.num_stages & 64 or (cfg.num_stages & 32 and not cfg.num_stages & 16))  # PIPE
                and cfg.block_n == 128 and cfg.num_warps == 4
                and cfg.split_k in (64, 128) and wgmma_a8_smem(cfg) <= SMEM_LIMIT - 8192)
    if cfg.block_m == TMA_GEMV_A8:  # A8W4 at M = 1, groups of 32..128 (ops.tma_gemv_a8_ok checks the rest)
        return (op == "a8w4" and group_size in (32, 64, 128) and cfg.block_k == 256 and cfg.block_n in (32, 64, 128)
                and cfg.num_warps in (4, 8) and 2 <= cfg.num_stages <= 16 and cfg.split_k >= 1)
    if op == "a8w4" and is_a8_gemm(cfg):
        return group_size != -1 and a8_gemm_smem(cfg, group_size) <= SMEM_LIMIT
    if cfg.block_m == WGMMA:  # one scale per row per K step; K steps within a 256-wide word block;
        # whole 16-row blocks per warp; every K slice of a split-K config gets at least one step
        return ((group_size == -1 or group_size % cfg.block_k == 0) and 256 % cfg.block_k == 0
                and cfg.block_n % (16 * cfg.num_warps) == 0 and wgmma_slice_steps(cfg, k) is not None
                and (not cfg.num_stages & 512 or cfg.num_stages & 64)  # three A sets need register A
                and (not cfg.num_stages & 2048 or cfg.num_stages & 64))  # so does one barrier per iteration
    if group_size == -1 or cfg.block_m <= 2:  # the GEMVs (block_m 2: each lane's 32 K values lie in one group)
        return True
    if op == "a8w4":
        return cfg.block_k == g
    return g % cfg.block_k == 0 or cfg.block_k % g == 0


def heuristic(op: str, n: int, k: int, group_size: int, m: int, num_sms: int = 132,
              mma: bool = True, gemm: bool = True, hopper: bool = False) -> TileConfig:
    """A reasonable config without tuning: the mma.sync GEMV for A16W4 at M <= 16 (``mma``; the
    launcher asks again with ``mma=False`` where it cannot run), the Gluon wgmma GEMM for A16W4 at
    M >= 128 on ``hopper`` (``gemm``; the launcher asks again without it where it cannot run), the dp4a
    GEMV for A8W4 at M <= 4;
    swap-AB small tiles with split-K for small M so the grid fills the GPU; square tensor-core tiles
    for large M (A8W4 at M >= 256: the Gluon int8 GEMM on ``hopper`` (sm_90 with Gluon) for groups
    of 128, there from M = 128 on, else the Triton int8 GEMM)."""
    mb = m_bucket(m)
    if op == "a16w4" and mb <= 32 and mma:
        return mma_heuristic(n, k, group_size, num_sms, mb)
    if op == "a16w4" and mb >= 128 and gemm and hopper:
        # from M = 256 on, the most frequent shipped H100 winner (8 warps, loader warp, dequantization
        # into the A-operand registers): on untabled keys 1.1-2.2x faster than the Triton tile below
        # (benchmarks/gpu/sweeps/seventeenth/tune*.csv); at M = 128, the winner of both 70B shapes there
        # (128 tokens, 2 K slices: 52.0 / 146.1 us against the tile's 62.9 / 182.1); K steps no longer
        # than the group
        bk = 64 if group_size == -1 else min(64, group_size)
        return (TileConfig(WGMMA, 128, bk, 256, 8, 4 | 32 | 64) if mb >= 256
                else TileConfig(WGMMA, 128, bk, 128, 8, 4 | 32 | 64 | 128))
    if op == "a8w4" and mb >= 256 and gemm and group_size != -1:
        return A8_WGMMA_DEFAULT if hopper and group_size == 128 else A8_GEMM_DEFAULT
    if op == "a8w4" and mb == 128 and gemm and hopper and group_size == 128:
        # 64-token programs: the winner of both 70B shapes at M = 128 (45.5 / 144.9 us against the Triton
        # tile's 71.7 / 205.7, benchmarks/gpu/sweeps/seventeenth/tune3.csv)
        return TileConfig(WGMMA_A8, 128, 128, 64, 4, 4 | 32 | 64)
    if op == "a8w4" and mb <= 4:
        # the dp4a GEMV beat the int8 tensor cores at M <= 4 on every H100 shape measured
        # (benchmarks/gpu/sweep_small_m.csv); ~4 programs per SM, split-K while K allows it
        bk = 128 if group_size == -1 else min(128, group_size)
        tiles, k_tiles = -(-n // 64), -(-k // bk)
        split = 1
        while tiles * split < 4 * num_sms and split < 8 and k_tiles >= 4 * split:
            split *= 2
        return TileConfig(-mb, 64, bk, split, 4, 1)
    if mb == 1:
        cfgs = gemv_configs(n, k, num_sms, group_size)
        tiles = -(-n // 32)
        return next((c for c in cfgs if c.block_n == 32 and tiles * c.split_k >= 6 * num_sms), cfgs[-1])
    g = k if group_size == -1 else group_size
    bk = 128
    if op == "a8w4" and group_size != -1:
        bk = g
    elif group_size != -1 and g < bk and bk % g:
        bk = g
    if mb <= 16:
        bm, bn, warps, stages = 16, 64, 4, 4
    elif mb <= 64:
        bm, bn, warps, stages = mb, 128, 4, 3
    else:
        bm, bn, warps, stages = 128, 128, 8, 3
    tiles = -(-n // bn) * -(-m // bm)
    split = 1
    k_tiles = -(-k // bk)
    # small M is memory-bound: fill the GPU twice over; large M only splits a grid that is mostly idle
    target = 2 * num_sms if mb <= 16 else (num_sms if mb <= 128 else num_sms // 2)
    while tiles * split < target and split * 2 <= max(1, k_tiles // 4) and split < 16:
        split *= 2
    return TileConfig(bm, bn, bk, split, warps, stages)


def candidates(op: str, n: int, k: int, group_size: int, m: int, num_sms: int = 132) -> list[TileConfig]:
    """Configs the autotuner times for one key (all valid for the group size; a short list, since
    each new config costs a Triton compile of a few seconds)."""
    mb = m_bucket(m)
    out = []
    if mb <= 16:
        for bn, bk in ((64, 128), (128, 128), (64, 256), (128, 256)):
            tiles = -(-n // bn)
            for split in (1, 2, 4, 8):
                if -(-k // bk) < 2 * split or (split > 1 and tiles * split > 8 * num_sms):
                    continue
                if tiles * split * 2 < num_sms and split < 8:
                    continue  # leaves most of the GPU idle
                out.append(TileConfig(16, bn, bk, split, 4, 4))
    elif mb <= 128:
        bm = 64 if mb <= 64 else 128
        for bn in (64, 128):
            for bk in (64, 128):
                for split in (1, 2):
                    out.append(TileConfig(bm, bn, bk, split, 4 if bm == 64 else 8, 3))
    else:
        for bm, bn, bk, w, s in ((128, 128, 64, 8, 3), (128, 128, 128, 8, 3), (128, 256, 64, 8, 3),
                                 (64, 128, 128, 4, 3)):
            out.append(TileConfig(bm, bn, bk, 1, w, s))
    if op == "a8w4" and group_size != -1:  # A8W4 tiles span exactly one group along K
        out = list(dict.fromkeys(TileConfig(c.block_m, c.block_n, group_size, c.split_k, c.num_warps,
                                            c.num_stages) for c in out))
    if mb == 1:
        out += gemv_configs(n, k, num_sms, group_size)
    if op == "a16w4" and mb <= 64:
        out += mma_configs(n, k, num_sms, group_size, mb)
    out += dp4a_configs(n, k, mb, num_sms, group_size, op=op)
    if op == "a16w4" and mb >= 128:
        out += dequant_mm_configs(k, n)
    if op == "a16w4" and mb >= 64:  # K steps no longer than the group (one scale per row per step)
        out += [TileConfig(c.block_m, c.block_n, min(c.block_k, group_size) if group_size != -1 else c.block_k,
                           c.split_k, c.num_warps, c.num_stages) for c in wgmma_configs(mb)]
    if op == "a8w4" and mb >= 32 and group_size != -1:
        out += a8_gemm_configs(mb)
    if op == "a8w4" and mb >= 64 and group_size != -1:
        out += wgmma_a8_configs(group_size)
    out = [c for c in out if group_tile_ok(c, group_size, k, op)]
    h = heuristic(op, n, k, group_size, m, num_sms)
    if h not in out:
        out.append(h)
    return out


def mma_heuristic(n: int, k: int, group_size: int, num_sms: int = 132, mb: int = 1) -> TileConfig:
    """The A16W4 mma.sync GEMV (``block_m == 2``) for M <= 32: 4 warps x 1 row-block (64 rows) per
    program at M <= 8, x 2 (128 rows) from M = 16 on; K tiles of 256; split-K until there are ~6
    programs per SM (partials summed in-kernel); evict-first weight loads (what won most H100 points
    of ``benchmarks/gpu/sweeps``).  At M = 1, warps that split the K slice inside the program (flag bits
    12-13; the fourteenth session's H100 sweeps): one 16-row program of 4 warps per row-block where N
    has >= 4 row-blocks per SM, else 8 warps on one row-block where K has <= 8 tiles of 512, else
    32-row programs of 2 x 2 warps with split-K across programs up to ~8 programs per SM."""
    if mb == 1:
        k_tiles = -(-k // 512)
        if -(-n // 16) >= 4 * num_sms:
            return TileConfig(2, 16, 512 if k >= 2048 else 256, 1, 4, 1 | mma_k_warp_bits(4))
        if k_tiles <= 8:
            return TileConfig(2, 16, 512, 1, 8, 1 | mma_k_warp_bits(8))
        tiles, split = -(-n // 32), 1
        while tiles * split < 8 * num_sms and split < 16 and k_tiles >= 4 * split:
            split *= 2
        return TileConfig(2, 32, 512, split, 4, 1 | mma_k_warp_bits(2))
    bn = 64 if mb <= 8 else 128
    mblocks = -(-mb // 16)
    tiles, k_tiles = -(-n // bn) * mblocks, -(-k // 256)
    split = 1
    while tiles * split < 6 * num_sms and split < 16 and k_tiles >= 4 * split:
        split *= 2
    return TileConfig(2, bn, 256, split, 4, 1)


#: the static shared memory (the A8 code row) an mma GEMV config may declare: 48 KiB is the most a kernel
#: may have without opting in, static and dynamic together; 1 KiB is left for Triton's own
MMA_STATIC_SMEM_MAX = 47 * 1024


def mma_k_warps(cfg: TileConfig) -> int:
    """Warps of an mma GEMV program that share the same rows and split its K slice between them
    (``KW``: 1, 2, 4 or 8; ``num_stages`` bits 12-13)."""
    return 1 << ((cfg.num_stages >> 12) & 3)


def mma_k_warp_bits(kw: int) -> int:
    """The ``num_stages`` bits 12-13 that give :func:`mma_k_warps` = ``kw`` (1, 2, 4 or 8)."""
    return (kw.bit_length() - 1) << 12


def mma_row_blocks(cfg: TileConfig) -> int:
    """16-row blocks per warp of an mma GEMV config (``RB``: 1, 2 or 4): ``block_n`` rows over the
    ``num_warps / KW`` row groups of the program."""
    return max(1, min(4, cfg.block_n // (16 * max(1, cfg.num_warps // mma_k_warps(cfg)))))


def mma_v_blocks(cfg: TileConfig) -> int:
    """128-value K blocks per K tile of an mma GEMV config (``NV``: 1, 2, 4 or 8)."""
    return max(1, min(8, cfg.block_k // 128))


def mma_slice_values(k: int, nv: int, split: int) -> int:
    """K values of one K slice of the mma GEMV: whole K tiles of ``128 nv`` values, ``split`` slices."""
    ck = 128 * nv
    k_tiles = -(-k // ck)
    return -(-k_tiles // split) * ck


def mma_code_row_bytes(cfg: TileConfig, k: int) -> int:
    """Shared memory of an mma GEMV config's A8 code row (``num_stages`` bit 11, ``SMC``): the bf16 codes
    of one program's K slice; 0 without the flag."""
    if not cfg.num_stages & 2048:
        return 0
    return 2 * mma_slice_values(k, mma_v_blocks(cfg), cfg.split_k)


def mma_configs(n: int, k: int, num_sms: int = 132, group_size: int = -1, mb: int = 1) -> list[TileConfig]:
    """A16W4 mma.sync GEMV candidates (``block_m == 2``, M <= 64): rows per program 64 / 128 / 256
    (warps x row-blocks of 16 x 1, 2 or 4), K tiles of 128 / 256 / 512, split-K around 1-12 programs
    per SM (counting the programs per weight tile), evict-first weight loads, and from M = 32 on up
    to 16 / 32 / 64 rows of x per program (flags bits 2-3)."""
    out = []
    nbs = {1: (0,), 2: (0,), 4: (0,), 8: (0,), 16: (0,), 32: (0, 1), 64: (0, 1, 2)}.get(mb, (0,))
    for nbf in nbs:
        rows_x = 16 << nbf
        mblocks = -(-mb // rows_x)
        for warps, rb in ((4, 1), (4, 2), (8, 1), (4, 4)):
            if rb == 4 and (mb < 16 or nbf):
                continue  # register pressure
            if nbf == 2 and rb > 1:
                continue
            bn = 16 * warps * rb
            for bk in (128, 256, 512):
                if (rb == 4 or nbf) and bk > 256:
                    continue
                tiles, k_tiles = -(-n // bn) * mblocks, -(-k // bk)
                for split in (1, 2, 4, 8, 16):
                    if split > 1 and k_tiles < 2 * split:
                        continue
                    if not (num_sms <= tiles * split <= 12 * num_sms) and split != 1:
                        continue
                    out.append(TileConfig(2, bn, bk, split, warps, 1 | (nbf << 2)))
    if mb <= 16:
        out += _mma_k_warp_configs(n, k, num_sms)
    return list(dict.fromkeys(out))


def a8_m1_default(n: int, k: int, num_sms: int = 132) -> TileConfig:
    """The A8W4 M = 1 config (fused mma GEMV in its ``A8`` mode) without a table, cache or tuned entry:
    128 rows per program, K tiles of 256, split-K up to ~1.5 programs per SM, the codes in a
    shared-memory row (flag 2048) or, where the program's K slice does not fit there, private global code
    rows (flag 256), and for K > 8192 the whole-block sweep of x (flag 128).  On the H100: private rows
    against the one shared global row (twelfth session): 9.1 vs 9.4 us (4096x4096), 61.4 vs 78.2 us
    (8192x28672); the sweep: 17.7 vs 21.4 us on 14336x4096, slower on 4096x4096 (9.7 vs 9.1); the
    shared-memory row against private rows (thirteenth session, ``benchmarks/gpu/sweeps/thirteenth/``):
    8.8 vs 9.1 (4096x4096), 19.0 vs 20.3 (4096x14336), 17.7 vs 20.4 (14336x4096), 54.8 vs 66.7
    (8192x28672)."""
    tiles, k_tiles, split = -(-n // 128), -(-k // 256), 1
    while tiles * split < (3 * num_sms) // 2 and split < 16 and k_tiles >= 4 * split:
        split *= 2
    return a8_code_flags(TileConfig(2, 128, 256, split, 8, 1 | (128 if k > 8192 else 0)), k)


def a8_code_flags(cfg: TileConfig, k: int) -> TileConfig:
    """``cfg`` (an mma GEMV config) with the A8 mode's code store: the shared-memory row (flag 2048) where
    the program's K slice fits in :data:`MMA_STATIC_SMEM_MAX`, else private global rows (flag 256)."""
    smc = replace(cfg, num_stages=(cfg.num_stages & ~(2048 | 256)) | 2048)
    if mma_code_row_bytes(smc, k) <= MMA_STATIC_SMEM_MAX:
        return smc
    return replace(cfg, num_stages=(cfg.num_stages & ~(2048 | 256)) | 256)


def a8_m1_configs(n: int, k: int, num_sms: int = 132, group_size: int = -1) -> list[TileConfig]:
    """What the autotuner times for A8W4 at M = 1 where the fused mma GEMV can run (sm_90, bf16, groups
    >= 128 or per-channel; ``ops.mma_a8_ok``) and the table has no entry: the 8-warp M = 1 mma GEMV
    shapes of :func:`mma_configs` in the ``A8`` mode (codes as :func:`a8_code_flags`), each also with the
    whole-block sweep of x (flag 128) (every shipped H100 mma winner has 8 warps: the quantization
    prologue runs on all of a program's threads, and 8 warps halve the candidates to time); :func:`a8_m1_default` and its two-launch form (flag 64: a
    one-program quantization kernel, the GEMV launched with PDL); the dp4a GEMV configs.  The TMA-stream
    GEMV is left out: it is a capture-only choice (~150 us of CPU per eager call)."""
    out = []
    for c in mma_configs(n, k, num_sms, group_size, 1):
        if c.num_warps != 8:
            continue
        for sweep in (0, 128):
            out.append(a8_code_flags(replace(c, num_stages=c.num_stages | sweep), k))
    d = a8_m1_default(n, k, num_sms)
    out += [d, replace(d, num_stages=(d.num_stages & ~(2048 | 256 | 128)) | 64)]
    out += dp4a_configs(n, k, 1, num_sms, group_size)
    return list(dict.fromkeys(out))


def _mma_k_warp_configs(n: int, k: int, num_sms: int, wide: bool = False) -> list[TileConfig]:
    """mma GEMV candidates with 2 / 4 / 8 warps per row group splitting the K slice inside the program
    (flag bits 12-13, :func:`mma_k_warps`): 16-64 rows per program, K tiles of 256 / 512, split-K
    1-8 across programs, every warp with at least one K tile, 1-16 programs per SM.  ``wide`` (for
    sweeps) adds 16-warp programs, K tiles of 1024 and the register double buffer (flag 32)."""
    out = []
    for kw in (2, 4, 8):
        for warps in (4, 8, 16) if wide else (4, 8):
            if warps < kw:
                continue
            for rb in (1, 2):
                bn = 16 * (warps // kw) * rb
                for bk in (256, 512, 1024) if wide else (256, 512):
                    tiles, k_tiles = -(-n // bn), -(-k // bk)
                    for split in (1, 2, 4, 8):
                        if k_tiles < split * kw or not num_sms <= tiles * split <= 16 * num_sms:
                            continue
                        for pf in (0, 32) if wide else (0,):
                            out.append(TileConfig(2, bn, bk, split, warps, 1 | pf | mma_k_warp_bits(kw)))
    return out


def gemv_configs(n: int, k: int, num_sms: int = 132, group_size: int = -1) -> list[TileConfig]:
    """M = 1 CUDA-core GEMV configs (``block_m == 1``).  ``block_k`` never exceeds the group (one
    scale per row and tile instead of one per word); split-K 1/2/4 around ~8 programs per SM."""
    out = []
    cap = 256 if group_size == -1 else min(256, group_size)
    for bn, bk, warps in ((32, 256, 4), (64, 256, 4), (32, 128, 4), (64, 128, 4)):
        bk = min(bk, cap)
        tiles = -(-n // bn)
        k_tiles = -(-k // bk)
        for split in (1, 2, 4, 8):
            if split > 1 and (tiles * split > 16 * num_sms or k_tiles < 4 * split):
                continue
            out.append(TileConfig(1, bn, bk, split, warps, 3))
    return list(dict.fromkeys(out))


def dp4a_configs(n: int, k: int, mb: int = 1, num_sms: int = 132, group_size: int = -1,
                 flags: tuple[int, ...] = (0, 1), op: str = "a8w4") -> list[TileConfig]:
    """A8W4 small-M dp4a GEMV configs of ``jit.gemv_dp4a_kernel`` (``block_m = -mb``, M <= mb <= 8;
    none for A16W4).  ``block_k`` 128 (at most the group: one scale per row and tile), ``block_n``
    32/64/128 (more rows per thread: more 16-byte weight loads in flight), split-K 1..8 around 4-16
    programs per SM, ``flags`` as in :class:`TileConfig` (default: without and with register
    prefetch)."""
    if mb > 8 or op != "a8w4":
        return []
    out = []
    bk = 128 if group_size == -1 else min(128, group_size)
    k_tiles = -(-k // bk)
    for bn, warps in ((32, 4), (64, 4), (128, 8)):
        if mb >= 4 and bn > 64:
            continue  # register pressure: several rows of activations per word
        tiles = -(-n // bn)
        for split in (1, 2, 4, 8):
            if split > 1 and (tiles * split > 16 * num_sms or k_tiles < 2 * split):
                continue
            if tiles * split * 2 < num_sms and split < 8 and k_tiles >= 4 * split:
                continue  # leaves most of the GPU idle while splitting more is possible
            for f in flags:
                out.append(TileConfig(-mb, bn, bk, split, warps, f))
    return list(dict.fromkeys(out))


#: register caps of the A8W4 int8 GEMM (``split_k >> 2`` of its configs): 168 lets three 128-thread
#: programs share an SM, 128 four
A8_GEMM_MAXNREG = {1: 168, 2: 128}

#: the large-M A8W4 int8 GEMM config used without a table entry (the most frequent H100 winner of
#: benchmarks/gpu/sweeps/sweep_gemm_v2.csv: two 4-warp programs per SM)
A8_GEMM_DEFAULT = TileConfig(128, 64, 0, 1, 4, 4)


def a8_gemm_configs(mb: int = 2048) -> list[TileConfig]:
    """A8W4 int8 GEMM candidates (``block_k == 0``, ``gemm_a8.py``) for the M bucket ``mb``: 128 x 64 /
    64 x 128 tiles on 4 warps (two programs per SM, so one program's rescale runs while the other's
    MMA does), 256 x 64 / 128 x 128 on 8 warps, pipelines of 3-4 stages; 64-row tiles from M = 32
    to 64 (where they beat the older kernel on the large H100 shapes, ``sweeps/sweep_gemm_v6``)."""
    if mb <= 64:
        return [TileConfig(64, 128, 0, 1, 4, 4), TileConfig(64, 64, 0, 1, 4, 4), TileConfig(64, 32, 0, 1, 4, 4)]
    return [A8_GEMM_DEFAULT, TileConfig(128, 64, 0, 1, 4, 3), TileConfig(256, 64, 0, 1, 8, 4),
            TileConfig(64, 128, 0, 1, 4, 4), TileConfig(128, 128, 0, 1, 8, 4)]


def wgmma_configs(mb: int) -> list[TileConfig]:
    """A16W4 Gluon wgmma GEMM candidates (``block_m == WGMMA``, sm_90): ``[WGMMA, weight rows, K step,
    tokens per program, warps, TMA slots | flags]`` (``num_stages`` bit 5: loader warp; bit 6:
    dequantization into the A-operand registers; bits 7-8: split-K, 128 = 2 and 256 = 3 K slices, for
    shapes whose output tiles do not fill the GPU, e.g. N = 4096 at M = 512: 64 tiles of 128 x 256;
    bit 9 (with bit 6): three A-operand register sets, the next step's wgmma queued before the
    dequantization, which then has two steps' MMA time instead of one (for 128-token tiles, whose
    per-step MMA is short: ``benchmarks/gpu/README.md``, "Ninth session"); bit 10 (with a split): only
    the last, partial wave's tiles are split, e.g. 448 tiles of 128 x 256 on 132 SMs: 396 whole + 52 x 2
    halves instead of four waves, the last 40% full).
    Shared memory: slots x (tokens x K step x 2 bytes + rows x K step / 2) + 3 (bit 6: 1) x rows x
    K step x 2 bytes, at most ~200 KiB.  The sixth session dropped the large-M candidates that never
    won an H100 sweep (shared-memory dequantization, 256-row and 128-wide K tiles:
    ``benchmarks/gpu/sweeps/sweep_wg_v6``)."""
    ws, rega, split2, split3, sets3, tail, sparse = 32, 64, 128, 256, 512, 1024, 2048
    if mb <= 128:
        bm = 64 if mb <= 64 else 128
        return [TileConfig(WGMMA, 64, 128, bm, 4, 3), TileConfig(WGMMA, 64, 64, bm, 4, 4 | rega),
                TileConfig(WGMMA, 128, 64, bm, 8, 4 | ws), TileConfig(WGMMA, 128, 64, bm, 8, 4 | ws | rega),
                TileConfig(WGMMA, 128, 64, bm, 8, 6 | ws | rega), TileConfig(WGMMA, 64, 64, bm, 4, 6 | ws | rega),
                TileConfig(WGMMA, 128, 64, bm, 8, 4 | ws | rega | split2),
                TileConfig(WGMMA, 128, 64, bm, 8, 6 | ws | rega | sets3),
                TileConfig(WGMMA, 64, 64, bm, 4, 6 | ws | rega | sets3)]
    return [TileConfig(WGMMA, 128, 64, 256, 8, 4 | ws | rega), TileConfig(WGMMA, 128, 64, 256, 8, 5 | ws | rega),
            TileConfig(WGMMA, 128, 64, 128, 8, 4 | ws | rega), TileConfig(WGMMA, 128, 64, 256, 8, 4 | rega),
            TileConfig(WGMMA, 128, 64, 256, 8, 4 | ws | rega | split2),
            TileConfig(WGMMA, 128, 64, 256, 8, 5 | ws | rega | split2),
            TileConfig(WGMMA, 128, 64, 256, 8, 4 | ws | rega | split3),
            TileConfig(WGMMA, 128, 64, 128, 8, 6 | ws | rega | sets3),
            TileConfig(WGMMA, 128, 64, 128, 8, 6 | ws | rega | sets3 | split2),
            TileConfig(WGMMA, 128, 64, 256, 8, 5 | ws | rega | sets3),
            TileConfig(WGMMA, 128, 64, 256, 8, 5 | ws | rega | sets3 | split2),
            TileConfig(WGMMA, 128, 64, 256, 8, 4 | ws | rega | split2 | tail),
            TileConfig(WGMMA, 128, 64, 256, 8, 5 | ws | rega | split2 | tail),
            TileConfig(WGMMA, 128, 64, 256, 8, 5 | ws | rega | sets3 | split2 | tail),
            TileConfig(WGMMA, 128, 64, 128, 8, 9 | ws | rega | sets3),
            TileConfig(WGMMA, 128, 64, 128, 8, 6 | ws | rega | sets3 | sparse),
            TileConfig(WGMMA, 128, 64, 128, 8, 9 | ws | rega | sets3 | sparse),
            TileConfig(WGMMA, 128, 64, 256, 8, 5 | ws | rega | sparse),
            TileConfig(WGMMA, 128, 64, 256, 8, 5 | ws | rega | sets3 | sparse),
            TileConfig(WGMMA, 128, 64, 256, 8, 5 | ws | rega | sets3 | split2 | sparse),
            TileConfig(WGMMA, 128, 64, 256, 8, 5 | ws | rega | sets3 | split2 | tail | sparse)]


def wgmma_a8_configs(group_size: int) -> list[TileConfig]:
    """A8W4 Gluon int8 wgmma GEMM candidates (``block_m == WGMMA_A8``, sm_90, grouped weights):
    ``[WGMMA_A8, 128 rows, K step, tokens per program, 4, TMA slots | flags]``; 128 tokens (each
    warpgroup holds an fp32 and an int32 accumulator of 64 x tokens in registers: 128 is the most that
    fits).  Groups up to 128: K steps of one group, the unpacked weights through shared memory (bit 5,
    every winner of the H100 sweep ``benchmarks/gpu/sweeps/sweep_a8wg_v4``), with 3 or 4 slots, and the
    register-operand variant, and (bit 6, with bit 5) the pipelined loop (the next group's wgmma issued
    before this group's rescale); groups of 256: two K steps of 128 per group (register operand only),
    with and without turns (bit 4)."""
    if group_size <= 128:
        return [TileConfig(WGMMA_A8, 128, group_size, 128, 4, 4 | 32), TileConfig(WGMMA_A8, 128, group_size, 128, 4, 3 | 32),
                TileConfig(WGMMA_A8, 128, group_size, 128, 4, 4),
                TileConfig(WGMMA_A8, 128, group_size, 128, 4, 4 | 32 | 64),
                TileConfig(WGMMA_A8, 128, group_size, 128, 4, 3 | 32 | 64),
                TileConfig(WGMMA_A8, 128, group_size, 64, 4, 4 | 32 | 64)]
    return [TileConfig(WGMMA_A8, 128, 128, 128, 4, 4), TileConfig(WGMMA_A8, 128, 128, 128, 4, 4 | 16)]


#: the A8W4 large-M config without a table entry on sm_90 for groups of 128: the paired loop (bit 6), the
#: winner of every H100 key of ``sweeps/ninth/sweep_a8wg_n9p1`` (0.74-1.01x cuBLAS bf16 at M = 512 / 2048,
#: against 0.64-0.92x for the unpaired loop, ``sweeps/sweep_a8wg_v4``'s winner, in the same run)
A8_WGMMA_DEFAULT = TileConfig(WGMMA_A8, 128, 128, 128, 4, 4 | 32 | 64)


def tma_gemv_a8_configs() -> list[TileConfig]:
    """A8W4 M = 1 TMA-stream GEMV candidates (``block_m == TMA_GEMV_A8``): rows per unit x TMA slots
    x programs per SM, within ~200 KiB of shared memory per SM."""
    out = []
    for rows, stages in ((128, 4), (128, 6), (64, 6), (64, 8), (32, 8), (32, 12)):
        for per_sm in (1, 2):
            if per_sm * stages * rows * 128 <= 160 * 1024:
                out.append(TileConfig(TMA_GEMV_A8, rows, 256, per_sm, 4, stages))
                if rows >= 64:  # 8 compute warps: row blocks over two warpgroups
                    out.append(TileConfig(TMA_GEMV_A8, rows, 256, per_sm, 8, stages))
    return out


def dequant_mm_configs(k: int, n: int) -> list[TileConfig]:
    """Large-M A16W4 alternative (``block_m == 0``): dequantize ``block_n`` weight rows at a time on a
    side stream, overlapped with cuBLAS on the previous slice.  Slices of 1024/2048/4096 rows."""
    return list(dict.fromkeys(TileConfig(0, min(r, n), 0, 1, 4, 1) for r in (1024, 2048, 4096)))


def cache_dir() -> Path:
    """``$NYBBLE_CACHE_DIR/triton`` (default ``~/.cache/nybble/triton``)."""
    base = os.environ.get("NYBBLE_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "nybble")
    return Path(base) / "triton"


def _read_table(path: Path) -> dict[str, TileConfig]:
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"tile config table {path} is unreadable: {exc}") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("configs", {}), dict):
        raise ValueError(f"tile config table {path}: expected {{'configs': {{key: [6 ints]}}}}")
    return {k: TileConfig.from_json(v) for k, v in raw.get("configs", {}).items()}


class ConfigStore:
    """Configs for one GPU: the disk cache over the shipped table; lookups are dict reads."""

    def __init__(self, gpu_name: str, table_dir: Path | None = None, cache: Path | None = None):
        self.gpu = gpu_slug(gpu_name)
        self.table_path = (table_dir or _TABLE_DIR) / f"{self.gpu}.json"
        self.cache_path = (cache or cache_dir()) / f"{self.gpu}.json"
        # NYBBLE_TRITON_TABLE=0 ignores the shipped table (to re-tune from scratch)
        self.shipped = _read_table(self.table_path) if os.environ.get("NYBBLE_TRITON_TABLE", "1") != "0" else {}
        try:
            self.cached = _read_table(self.cache_path)
        except ValueError:
            self.cached = {}  # a corrupt user cache is ignored (and rewritten by the next tuning)
        #: untuned picks (the heuristic's, made where no tuning could run): this process only, never saved
        self.guessed: dict[str, TileConfig] = {}
        self._memo: dict[str, TileConfig] = {**self.shipped, **self.cached}

    def get(self, key: str) -> TileConfig | None:
        return self._memo.get(key)

    def source(self, key: str) -> str:
        """Where ``key``'s config comes from: ``cache`` (tuned here or earlier on this GPU), ``table``
        (shipped), ``heuristic`` (an untuned pick of this process) or ``none``."""
        if key in self.cached:
            return "cache"
        if key in self.guessed:
            return "heuristic"
        return "table" if key in self.shipped else "none"

    def put(self, key: str, cfg: TileConfig, persist: bool = True) -> None:
        """Remember ``cfg`` for ``key``: a tuned config (``persist``) goes into the disk cache, written
        atomically; an untuned one (``persist=False``) is kept for this process only, so it is neither
        saved as if it were tuned nor kept from being tuned by a later call that can tune."""
        with _lock:
            self._memo[key] = cfg
            if persist:
                self.guessed.pop(key, None)
                self.cached[key] = cfg
                self.save_cache()
            else:
                self.guessed[key] = cfg

    def save_cache(self) -> None:
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({"gpu": self.gpu, "configs": {k: v.to_json() for k, v in
                                                                 sorted(self.cached.items())}}, indent=0))
        os.replace(tmp, self.cache_path)


def write_table(path: Path, gpu_name: str, configs: dict[str, TileConfig]) -> None:
    """Write a shipped-table JSON (used to make ``tables/<gpu>.json`` from an autotuning run)."""
    path.write_text(json.dumps({"gpu": gpu_slug(gpu_name),
                                "configs": {k: v.to_json() for k, v in sorted(configs.items())}}, indent=0))


__all__ = ["TileConfig", "M_BUCKETS", "m_bucket", "make_key", "heuristic", "candidates", "ConfigStore",
           "gpu_slug", "cache_dir", "write_table", "group_tile_ok", "is_a8_gemm", "a8_gemm_configs", "a8_gemm_smem", "SMEM_LIMIT", "A8_GEMM_MAXNREG", "dp4a_configs", "mma_configs", "a8_m1_default", "a8_m1_configs", "a8_code_flags", "mma_heuristic",
           "asdict", "WGMMA_A8", "wgmma_tail_only", "wgmma_ctas_per_sm", "wgmma_grid", "A8_WGMMA_DEFAULT", "wgmma_a8_configs", "wgmma_a8_smem"]
