"""Launchers, tile-config choice (table / disk cache / autotuning) and the ``nybble`` torch ops of
the Triton kernels.

Ops (each with a fake implementation, so ``torch.compile`` sees one opaque op):

* ``nybble::triton_a16w4(x (M,K), qweight, scale, zero?, group_size, bias?) -> (M,N)``
* ``nybble::triton_quantize_act(x (M,K), asymmetric) -> (q int8 (M,K), s fp32 (M,), z int32 (M,))``
* ``nybble::triton_a8w4(x (M,K), qweight, scale, zero?, wsum, group_size, asymmetric, bias?) -> (M,N)``

Tensors are in the GPU layout documented in :mod:`nybble.kernels.triton.jit`.  Nothing here syncs
with the host, and the only Python branching depends on shapes, so the launches can be captured in
CUDA graphs (configs are looked up, or the heuristic used, but never autotuned during a capture).
"""
from __future__ import annotations

import os
from typing import Callable, Optional

import torch
import triton

from . import configs, gemm_a8, jit, mma
from . import eager_plan
from .eager_plan import _capturing
from .launch import FastLaunch, note_capture_only_choice, note_unplannable_launch
from .configs import (WGMMA, WGMMA_A8, TMA_GEMV_A8, A8_GEMM_MAXNREG, ConfigStore, TileConfig, a8_m1_configs, candidates, group_tile_ok, heuristic,
                      MMA_STATIC_SMEM_MAX, is_a8_gemm, make_key, mma_code_row_bytes, mma_k_warps, mma_row_blocks, mma_slice_values,
                      mma_v_blocks,
                      wgmma_a_sets, wgmma_grid, wgmma_splits)

_A16 = FastLaunch(jit.a16w4_kernel)
_A8 = FastLaunch(jit.a8w4_kernel)
_QUANT = FastLaunch(jit.quantize_act_kernel)
_QUANT_PERM8 = FastLaunch(jit.quantize_act_perm8_kernel)
_DEQ = FastLaunch(jit.dequant_kernel)
_FINISH = FastLaunch(jit.finish_kernel)
_GEMV = FastLaunch(jit.gemv_kernel)
_GEMV_DP4A = FastLaunch(jit.gemv_dp4a_kernel)
_MMA = FastLaunch(mma.mma_gemv_kernel)
_QCODES = FastLaunch(mma.quantize_codes_kernel)
_A8_GEMM = FastLaunch(gemm_a8.a8w4_gemm_kernel)

_STORES: dict[int, ConfigStore] = {}
_SM_COUNT: dict[int, int] = {}


def store_for(device: torch.device) -> ConfigStore:
    """The config store of a CUDA device (one per device index, made on first use)."""
    idx = device.index if device.index is not None else torch.cuda.current_device()
    st = _STORES.get(idx)
    if st is None:
        st = _STORES[idx] = ConfigStore(torch.cuda.get_device_name(idx))
    return st


def sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device (read once per device index)."""
    idx = device.index if device.index is not None else torch.cuda.current_device()
    n = _SM_COUNT.get(idx)
    if n is None:
        n = _SM_COUNT[idx] = torch.cuda.get_device_properties(idx).multi_processor_count
    return n


def layout_of(qweight: torch.Tensor) -> tuple[int, int, int]:
    """``(LN, LW, row-block stride)`` of a weight in the GPU layout: blocked 4-D ``(N/LN, K8/LW, LN,
    LW)`` int32 (see ``kernel.py``), or plain 2-D ``(N, K/8)`` (``LN = LW = 1``)."""
    if qweight.dim() == 4:
        return qweight.shape[2], qweight.shape[3], qweight.stride(0)
    return 1, 1, qweight.stride(0)


_USE_ASM = [os.environ.get("NYBBLE_TRITON_DEQUANT", "asm") != "plain" and os.environ.get("TRITON_INTERPRET") != "1"]


def use_asm() -> bool:
    """Packed bf16x2/f16x2 dequantization in inline PTX (default), or ``NYBBLE_TRITON_DEQUANT=plain``
    (read at import; see :func:`set_use_asm`) for the plain Triton version (same results; also used by
    the CPU interpreter)."""
    return _USE_ASM[0]


def set_use_asm(flag: bool) -> bool:
    """Switch the dequantization variant; returns the previous setting (tests)."""
    old = _USE_ASM[0]
    _USE_ASM[0] = bool(flag) and os.environ.get("TRITON_INTERPRET") != "1"
    eager_plan.bump_epoch()  # cached launch plans baked the old variant in
    return old


def autotune_enabled() -> bool:
    """``NYBBLE_TRITON_AUTOTUNE=0`` turns first-call autotuning off (the table or heuristic is used)."""
    return os.environ.get("NYBBLE_TRITON_AUTOTUNE", "1") != "0"


#: specializations of the TMA-stream GEMV run (compiled) in this process (see launch_a8w4)
_TMA_WARM: set = set()


def _can_tune() -> bool:
    if torch.compiler.is_compiling():
        return False
    try:
        return not torch.cuda.is_current_stream_capturing()
    except RuntimeError:
        return False


def _wants_tuning(st: ConfigStore, key: str) -> bool:
    """Would a call tune ``key`` now: it has no config, or only a guess, and tuning may run here."""
    return (st.get(key) is None or key in st.guessed) and autotune_enabled() and _can_tune()


def get_config(op: str, m: int, n: int, k: int, group_size: int, device: torch.device,
               tune: Callable[[list[TileConfig]], TileConfig] | None = None,
               cands: Callable[[], list[TileConfig]] | None = None,
               guess: Callable[[], TileConfig] | None = None) -> TileConfig:
    """The config for a call: cache/table, else autotune with ``tune`` (when allowed) over ``cands()``
    (default :func:`configs.candidates`), else ``guess()`` (default :func:`configs.heuristic`).
    A guess (made where no tuning could run: under CUDA-graph capture, ``torch.compile`` or with
    tuning off) is kept for this process and replaced by the first call that can tune."""
    st = store_for(device)
    key = make_key(op, n, k, group_size, m)
    cfg = st.get(key)
    can_tune = tune is not None and _wants_tuning(st, key)
    if cfg is not None and not can_tune:
        return cfg
    if can_tune:
        cfg = tune(cands() if cands is not None else candidates(op, n, k, group_size, m))
        st.put(key, cfg, persist=True)
        eager_plan.bump_epoch()  # a launch plan made meanwhile (by the tuning runs) may hold another config
    else:
        cfg = (guess() if guess is not None
               else heuristic(op, n, k, group_size, m, sm_count(device), hopper=_gluon_sm90(device)))
        st.put(key, cfg, persist=False)
    return cfg


def _time_configs(run: Callable[[TileConfig], torch.Tensor], cands: list[TileConfig]) -> TileConfig:
    """Median time of each candidate (``triton.testing.do_bench``); configs that fail are skipped."""
    best, best_t = None, float("inf")
    for c in cands:
        try:
            t = triton.testing.do_bench(lambda: run(c), warmup=5, rep=20, return_mode="median")
        except Exception:  # e.g. out of shared memory / registers for this tile: not a candidate
            continue
        if t < best_t:
            best, best_t = c, t
    if best is None:
        raise RuntimeError("no Triton tile configuration compiled for this shape")
    return best


# -- A16W4 ------------------------------------------------------------------------------------

def launch_a16w4(x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None,
                 group_size: int, bias: torch.Tensor | None, cfg: TileConfig | None = None,
                 locks: torch.Tensor | None = None) -> torch.Tensor:
    """x (M, K) bf16/fp16 (K contiguous) -> (M, N) in x's dtype.  See :func:`jit.a16w4_kernel` and
    :func:`mma.mma_gemv_kernel` (``locks``: the layer's :func:`mma_locks`, or None)."""
    m, k = x.shape
    n = scale.shape[1]
    if x.stride(1) != 1:
        x = x.contiguous()
    if m == 0:
        return x.new_empty(0, n)
    if cfg is None:
        cfg = get_config("a16w4", m, n, k, group_size, x.device,
                         lambda cs: _time_configs(
                             lambda c: launch_a16w4(x, qweight, scale, zero, group_size, bias, c, locks), cs))
    if cfg.block_m == 2:  # mma.sync GEMV (M <= 64, blocked layout, sm_90)
        if m <= 64 and mma_ok(x, qweight):
            return _mma_gemv(x, qweight, scale, zero, group_size, bias, cfg, locks)
        cfg = heuristic("a16w4", n, k, group_size, m, mma=False)
    if cfg.block_m == WGMMA:  # Gluon TMA + async wgmma GEMM (large M, sm_90)
        if wgmma_ok(x, qweight, group_size, cfg):
            return _wgmma_gemm(x, qweight, scale, zero, group_size, bias, cfg)
        cfg = heuristic("a16w4", n, k, group_size, m, mma=False)
    if cfg.block_m == 0:
        return _a16w4_dequant_mm(x, qweight, scale, zero, group_size, bias, cfg)
    if cfg.block_m < 0:  # an A8W4-only (dp4a) config: not for 16-bit activations
        cfg = heuristic("a16w4", n, k, group_size, m, mma=False)
    if cfg.block_m == 1:
        if m == 1:
            return _gemv(x, None, None, qweight, scale, zero, group_size, False, bias, x.dtype, cfg)
        cfg = heuristic("a16w4", n, k, group_size, m, mma=False)
    atomic = cfg.split_k > 1
    ln, lw, qstride = layout_of(qweight)
    out = x.new_empty(m, n)
    ws = torch.empty(cfg.split_k, m, n, dtype=torch.float32, device=x.device) if atomic else out
    grid = (triton.cdiv(n, cfg.block_n), triton.cdiv(m, cfg.block_m), cfg.split_k)
    _A16(grid, (x, qweight, scale, zero if zero is not None else scale, bias if bias is not None else scale, ws,
                m, n, k, x.stride(0), n, qstride),
         dict(GROUP=group_size, PER_CHANNEL=group_size == -1, HAS_ZERO=zero is not None,
              HAS_BIAS=bias is not None, IS_BF16=x.dtype == torch.bfloat16, EVEN_K=k % cfg.block_k == 0,
              ATOMIC=atomic, SPLIT_K=cfg.split_k, USE_ASM=use_asm(), BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n,
              BLOCK_K=cfg.block_k, LN=ln, LW=lw), cfg.num_warps, cfg.num_stages)
    if atomic:
        _finish(ws, bias, out)
    return out


#: launch the mma.sync GEMV with programmatic dependent launch (``mma.mma_gemv_kernel``'s ``PDL``):
#: its weight stream starts while the previous kernel finishes.  Off unless ``NYBBLE_TRITON_PDL=1``:
#: on the H100 it made back-to-back A16W4 GEMVs 15-30% slower (M = 1: 14.8 -> 18.4 us on
#: 4096x14336, 51.7 -> 66.2 us on 8192x28672; ``benchmarks/gpu/sweeps/sweep_pdl_h100.csv``).
_PDL = [os.environ.get("NYBBLE_TRITON_PDL", "0") == "1"]


def set_pdl(flag: bool) -> bool:
    """Switch programmatic dependent launch of the mma GEMV; returns the previous setting (tests, sweeps)."""
    old = _PDL[0]
    _PDL[0] = bool(flag)
    eager_plan.bump_epoch()
    return old


_MMA_CAP: dict[int, bool] = {}


def mma_ok(x: torch.Tensor, qweight: torch.Tensor) -> bool:
    """Can :func:`_mma_gemv` serve this call: a Hopper-or-newer GPU (packed bf16x2 sub/mul PTX),
    the blocked 16 x 32 weight layout, K-contiguous x rows (the launcher copies x otherwise)."""
    idx = x.device.index if x.device.index is not None else torch.cuda.current_device()
    cap = _MMA_CAP.get(idx)
    if cap is None:
        cap = _MMA_CAP[idx] = (torch.cuda.get_device_capability(idx) >= (9, 0)
                               and os.environ.get("TRITON_INTERPRET") != "1")
    return cap and qweight.dim() == 4 and qweight.shape[2] == 16 and qweight.shape[3] == 32


def _mma_gemv(x, qweight, scale, zero, group_size, bias, cfg: TileConfig, locks=None, a8_asym=None) -> torch.Tensor:
    """A16W4 at M <= 64 on mma.sync (``cfg.block_m == 2``): :func:`mma.mma_gemv_kernel`.
    ``cfg.block_n`` = rows per program (``num_warps / KW * 16 * RB``, RB = 1, 2 or 4), ``cfg.block_k`` = K
    values per tile (128 / 256 / 512 / 1024), ``cfg.num_stages`` bit 0: evict-first weight loads, bit 1: sum
    split-K partials with the finish kernel instead of in the last program of each tile (which needs
    ``locks``, int32 zeros, one per program of the grid's first axis; see :func:`mma_locks`), bits
    2-3: the largest number of 8-row x blocks per program (2, 4, 8; more rows take several programs),
    bit 4: zero point and scale applied per group in fp32 (``FOLD``; group >= 128 or per-channel),
    bit 5: register double buffer of the next K tile (``PF``), bit 6 (A8W4 only): quantize x with
    :func:`mma.quantize_codes_kernel` first and launch the GEMV with programmatic dependent launch
    (``A8PRE``: its programs load their first weights while the quantization runs), bit 7 (A8W4
    only, without bit 6): the in-kernel quantization sweeps x in whole blocks (``QB``), bit 8 (A8W4
    only, without bit 6): each program writes its activation codes to its own scratch rows (``PRIV``),
    bit 11 (A8W4 only, without bit 6): the activation codes go through a shared-memory row instead of a
    global scratch (``SMC``, :func:`configs.mma_code_row_bytes`, at most ``configs.MMA_STATIC_SMEM_MAX``
    bytes, else ValueError; replaces bit 8), bit 9 (not with bit 5): each warp requests its first K
    tile before the A8 quantization prologue (``EARLY``), bits 12-13: ``1 << bits``
    warps per row group split the program's K slice and sum in shared memory (``KW``,
    :func:`configs.mma_k_warps`)."""
    m, k = x.shape
    n = scale.shape[1]
    if x.stride(0) % 8 or x.data_ptr() % 16:
        x = x.clone(memory_format=torch.contiguous_format)
    meta = mma_meta(cfg, m, k, group_size, x.dtype == torch.bfloat16, zero is not None, bias is not None, a8_asym)
    nw, split = cfg.num_warps, cfg.split_k
    mb = triton.cdiv(m, 8 * meta["NB"])
    tiles = triton.cdiv(triton.cdiv(n, 16), nw // meta["KW"] * meta["RB"]) * mb
    serial = split > 1 and not cfg.num_stages & 2 and locks is not None and locks.numel() >= tiles
    meta["SERIAL"] = serial
    out = x.new_empty(m, n)
    ws = torch.empty(split, m, n, dtype=torch.float32, device=x.device) if split > 1 else out
    qx = (torch.empty(_a8_code_values(k, meta["NV"], split, tiles, meta["PRIV"]), dtype=torch.bfloat16,
                      device=x.device) if meta["A8"] and not meta["SMC"] else out)
    if meta["A8PRE"]:  # its own one-program kernel: up to 16384 x values per step, 4-16 warps
        qblock = min(16384, triton.next_power_of_2(k))
        _QCODES((1,), (x, qx, k), dict(ASYM=bool(a8_asym), BLOCK=qblock, PDL=True), max(4, min(16, qblock // 256)), 1)
    _MMA((tiles, split),
         (x, qweight, scale, zero if zero is not None else scale, bias if bias is not None else scale, out, ws,
          locks if serial else ws, qx, m, n, k, x.stride(0), n, qweight.stride(0), split, mb),
         meta, nw, 1, meta["PDL"])
    if split > 1 and not serial:
        _finish(ws, bias, out)
    return out


def mma_meta(cfg: TileConfig, m: int, k: int, group_size: int, is_bf16: bool, has_zero: bool, has_bias: bool,
             a8_asym: bool | None = None) -> dict:
    """The constexpr arguments of :func:`mma.mma_gemv_kernel` for ``cfg`` (its flag bits: see
    :func:`_mma_gemv`) on x of ``(m, k)``; ``a8_asym`` None for A16W4, else the activations' symmetry.
    ``SERIAL`` (the in-kernel split-K sum, which needs the layer's counters) is False here: the caller
    sets it.  Raises ValueError when the shared-memory code row (bit 11) does not fit."""
    nw = cfg.num_warps
    nv = mma_v_blocks(cfg)
    nb_max = 2 << ((cfg.num_stages >> 2) & 3)       # flags bits 2-3: up to 2 / 4 / 8 / 16 -> 8
    nb = 1
    while nb < min(nb_max, 8) and 8 * nb < m:
        nb *= 2
    a8 = a8_asym is not None
    a8pre = a8 and bool(cfg.num_stages & 64)
    smc = mma_code_row_bytes(cfg, k) if a8 and not a8pre else 0
    if smc > MMA_STATIC_SMEM_MAX:
        raise ValueError(f"mma GEMV config {cfg.to_json()} at K = {k}: its shared-memory code row needs {smc} bytes, "
                         f"more than the {MMA_STATIC_SMEM_MAX} bytes of static shared memory allowed (use more K "
                         "slices, or flag 256 instead of 2048)")
    kw = mma_k_warps(cfg)
    if cfg.num_stages & 512 and cfg.num_stages & 32:
        raise ValueError(f"mma GEMV config {cfg.to_json()}: flag 512 (the first K tile requested before the "
                         "prologue) and flag 32 (the register double buffer) exclude each other")
    if nw % kw:
        raise ValueError(f"mma GEMV config {cfg.to_json()}: {kw} K warps per row group (flag bits 12-13) need a warp "
                         f"count divisible by {kw}")
    return dict(GROUP=group_size, PER_CHANNEL=group_size == -1, HAS_ZERO=has_zero, HAS_BIAS=has_bias,
                IS_BF16=is_bf16, SPLIT=cfg.split_k > 1, SERIAL=False, EVICT=bool(cfg.num_stages & 1),
                FOLD=not a8 and bool(cfg.num_stages & 16) and (group_size == -1 or group_size >= 128),
                EVEN_K=k % (128 * nv) == 0, A8=a8, ASYM=bool(a8_asym), NB=nb, RB=mma_row_blocks(cfg), NV=nv,
                NW=nw, PDL=_PDL[0] or a8pre, PF=bool(cfg.num_stages & 32), A8PRE=a8pre, SMC=smc,
                QB=_a8_sweep_block(k, nw, bool(a8_asym)) if a8 and cfg.num_stages & 128 else 0,
                PRIV=a8 and not a8pre and not smc and bool(cfg.num_stages & 256), KW=kw,
                EARLY=bool(cfg.num_stages & 512))


def _a8_sweep_block(k: int, num_warps: int, asymmetric: bool) -> int:
    """x values per step of the A8 mode's whole-block sweep (flag 128): the row at once up to 64 values
    per thread (32 asymmetric: it keeps a minimum and a maximum each), at most 16384.  More spills
    into fewer programs per SM: 14336x4096 asymmetric with 16384 values per step on 256 threads
    compiles to 165 registers (one program per SM) and took 24.7 us against 17.6 symmetric."""
    per_thread = 32 if asymmetric else 64
    return min(16384, triton.next_power_of_2(k), num_warps * 32 * per_thread)


def _a8_code_values(k: int, nv: int, split: int, tiles: int, private: bool) -> int:
    """bf16 values of the A8 mode's code scratch (:func:`mma.mma_gemv_kernel`): K padded to 512 plus
    the activation scale (two values; ``A8PRE``), or (``private``) one row of ``per_split`` K tiles of
    ``128 nv`` values per (program, K slice)."""
    if not private:
        return triton.cdiv(k, 512) * 512 + 2
    return tiles * split * mma_slice_values(k, nv, split)


def mma_a8_ok(x: torch.Tensor, qweight: torch.Tensor, group_size: int) -> bool:
    """Can the mma GEMV serve this A8W4 call with its fused activation quantization: M = 1, bf16
    (every sum stays an exact fp32 integer), groups of >= 128 or per-channel, sm_90."""
    return (x.shape[0] == 1 and x.dtype == torch.bfloat16 and (group_size == -1 or group_size >= 128)
            and mma_ok(x, qweight))


def mma_locks(n: int, device) -> torch.Tensor:
    """Zeroed int32 split-K counters for :func:`_mma_gemv` on a layer of ``n`` outputs (enough for
    every config at M <= 64: >= 16 rows per program, <= 8 programs per weight tile).  Each launch
    leaves them at zero again.  A layer must not run concurrently on two streams with them."""
    return torch.zeros(8 * triton.cdiv(n, 16), dtype=torch.int32, device=device)


def _gemv(x, sa, za, qweight, scale, zero, group_size, asym, bias, out_dtype, cfg: TileConfig) -> torch.Tensor:
    """M = 1 on CUDA cores (``cfg.block_m == 1``): :func:`jit.gemv_kernel`.  ``x`` is bf16/fp16 (A16)
    or the int8 row of the activation quantizer with ``sa``/``za`` (A8)."""
    k = x.shape[1]
    n = scale.shape[1]
    ln, lw, qstride = layout_of(qweight)
    atomic = cfg.split_k > 1
    out = torch.empty(1, n, dtype=out_dtype, device=x.device)
    ws = torch.empty(cfg.split_k, 1, n, dtype=torch.float32, device=x.device) if atomic else out
    a8 = sa is not None
    _GEMV((triton.cdiv(n, cfg.block_n), cfg.split_k),
          (x, sa if a8 else scale, za if a8 else scale, qweight, scale, zero if zero is not None else scale,
           bias if bias is not None else scale, ws, n, k, qstride),
          dict(GROUP=group_size, PER_CHANNEL=group_size == -1, HAS_ZERO=zero is not None, HAS_BIAS=bias is not None,
               IS_BF16=out_dtype == torch.bfloat16, A8=a8, ASYM=bool(asym), EVEN_K=k % cfg.block_k == 0,
               ATOMIC=atomic, SPLIT_K=cfg.split_k, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, LN=ln, LW=lw),
          cfg.num_warps, cfg.num_stages)
    if atomic:
        _finish(ws, bias, out)
    return out


def dp4a_layout(qa: torch.Tensor) -> torch.Tensor:
    """int8 codes (M, K) -> the dp4a layout of :func:`jit.gemv_dp4a_kernel`: int32 (M, 2, K/8), plane p
    of word j holding the bytes ``qa[m, 8 j + 2 b + p]`` (b = 0..3, least significant first)."""
    m, k = qa.shape
    return qa.view(m, k // 8, 4, 2).permute(0, 3, 1, 2).contiguous().view(torch.int32).view(m, 2, k // 8)


def dp4a_flags(cfg: TileConfig) -> tuple[bool, bool]:
    """``(PREFETCH, EVICT)`` of a :func:`jit.gemv_dp4a_kernel` config (``block_m < 0``): its
    ``num_stages`` field holds them as bits 0 and 1 (the kernel has no software pipeline)."""
    return bool(cfg.num_stages & 1), bool(cfg.num_stages & 2)


def _gemv_dp4a(xs, sa, za, m, qweight, scale, zero, group_size, asym, bias, out_dtype, cfg: TileConfig) -> torch.Tensor:
    """A8W4, M <= ``-cfg.block_m``, on CUDA cores: :func:`jit.gemv_dp4a_kernel`.  ``xs`` is the int32
    (M, 2, K/8) dp4a layout of the activation codes (:func:`dp4a_layout`, or the quantization
    kernel's ``deint`` output), ``sa``/``za`` their scales / zero points."""
    k = xs.shape[2] * 8
    n = scale.shape[1]
    ln, lw, qstride = layout_of(qweight)
    atomic = cfg.split_k > 1
    prefetch, evict = dp4a_flags(cfg)
    bm = 1 if m == 1 else -cfg.block_m
    out = torch.empty(m, n, dtype=out_dtype, device=xs.device)
    ws = torch.empty(cfg.split_k, m, n, dtype=torch.float32, device=xs.device) if atomic else out
    _GEMV_DP4A((triton.cdiv(n, cfg.block_n), cfg.split_k),
           (xs, sa, za, qweight, scale, zero if zero is not None else scale,
            bias if bias is not None else scale, ws, m, n, k, xs.stride(0), n, qstride, cfg.split_k),
           dict(GROUP=group_size, PER_CHANNEL=group_size == -1, HAS_ZERO=zero is not None,
                HAS_BIAS=bias is not None, IS_BF16=out_dtype == torch.bfloat16, A8=True, ASYM=bool(asym),
                EVEN_K=k % cfg.block_k == 0, ATOMIC=atomic, EVICT=evict, PREFETCH=prefetch,
                BLOCK_M=bm, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, LN=ln, LW=lw),
           cfg.num_warps, 1)
    if atomic:
        _finish(ws, bias, out)
    return out


def _finish(ws: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor) -> None:
    """out = ws.sum(0) (+ bias) in out's dtype; ws is the (splits, M, N) fp32 partials."""
    total = out.numel()
    _FINISH((triton.cdiv(total, 1024),), (ws, bias if bias is not None else ws, out, total, out.shape[1], ws.shape[0]),
            dict(HAS_BIAS=bias is not None, IS_BF16=out.dtype == torch.bfloat16, BLOCK=1024), 4, 1)


_SIDE: dict[int, torch.cuda.Stream] = {}


def _side_stream(device: torch.device) -> torch.cuda.Stream:
    idx = device.index if device.index is not None else torch.cuda.current_device()
    st = _SIDE.get(idx)
    if st is None:
        st = _SIDE[idx] = torch.cuda.Stream(device=idx)
    return st


def _launch_dequant(qweight, scale, zero, group_size, dst, r0, r, dtype):
    """Rows ``r0 .. r0 + r`` of the weight into ``dst`` ((>= r, K) contiguous, ``dtype``)."""
    n, k = scale.shape[1], dst.shape[1]
    ln, lw, qstride = layout_of(qweight)
    bk = 128 if k % 128 == 0 or group_size == -1 else 64
    _DEQ((triton.cdiv(r, 32), triton.cdiv(k, bk)),
         (qweight, scale, zero if zero is not None else scale, dst, n, k, qstride, r0),
         dict(GROUP=group_size, PER_CHANNEL=group_size == -1, HAS_ZERO=zero is not None,
              IS_BF16=dtype == torch.bfloat16, EVEN_K=k % bk == 0, USE_ASM=use_asm(), BLOCK_N=32, BLOCK_K=bk, LN=ln, LW=lw),
         4, 1)


_WGMMA_CAP: dict[int, bool] = {}


def wgmma_ok(x: torch.Tensor, qweight: torch.Tensor, group_size: int, cfg: TileConfig) -> bool:
    """Can :func:`_wgmma_gemm` serve this call with ``cfg``: an sm_90 GPU (wgmma exists on Hopper
    only) with Gluon, the blocked 16 x 32 weight layout (:func:`mma_ok`), a config valid for the group
    (:func:`configs.group_tile_ok`: one scale per row per K step), x rows usable by TMA (16-byte
    aligned start and row stride)."""
    return (_gluon_sm90(x.device) and mma_ok(x, qweight) and group_tile_ok(cfg, group_size, x.shape[1], "a16w4")
            and x.stride(1) == 1 and x.data_ptr() % 16 == 0 and (x.stride(0) * x.element_size()) % 16 == 0)


def _gluon_sm90(device: torch.device) -> bool:
    """Is ``device`` an sm_90 GPU (wgmma exists on Hopper only) with Gluon (Triton >= 3.5)?"""
    idx = device.index if device.index is not None else torch.cuda.current_device()
    cap = _WGMMA_CAP.get(idx)
    if cap is None:
        cap = torch.cuda.get_device_capability(idx) == (9, 0)  # (mma_ok: not under the interpreter)
        if cap:
            try:
                from . import wgmma  # noqa: F401  (needs triton.experimental.gluon, Triton >= 3.5)
            except ImportError:
                cap = False
        _WGMMA_CAP[idx] = cap
    return cap


def _words_desc(qweight: torch.Tensor, block_n: int, block_k: int, layout=None):
    """TMA descriptor of the blocked weight words ``qweight`` int32 ``(N/16, K8/32, 16, 32)`` viewed as
    ``(N/16, K8/32 * 16, 32)`` (row block, then (K block, row in block), then word), one box of
    ``[block_n / 16, 16, block_k / 8]`` words per K step: what the Gluon kernels (``wgmma.py``,
    ``wgmma_a8.py``, ``tma_gemv_a8.py``) load.  ``layout``: the shared-memory layout of a box (default:
    the swizzled one the wgmma operands want)."""
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
    nb, kb = qweight.shape[0], qweight.shape[1]
    box = [block_n // 16, 16, block_k // 8]
    return TensorDescriptor(qweight, [nb, kb * 16, 32], [kb * 512, 32, 1], box,
                            layout or gl.NVMMASharedLayout.get_default_for(box, gl.int32))


def wgmma_wave(device: torch.device) -> int:
    """SMs of ``device``: one wave of single-program-per-SM wgmma programs (the split point of the
    tail-only split-K configs, :func:`configs.wgmma_tail_only`; tests shrink it)."""
    return sm_count(device)


def wgmma_descs(x: torch.Tensor, qweight: torch.Tensor, cfg: TileConfig):
    """``(x_desc, w_desc)``, the TMA descriptors of :func:`wgmma.a16w4_wgmma_kernel` for ``cfg``: x
    ``(M, K)`` bf16/fp16 in ``[split_k, block_k]`` boxes, and the blocked words (:func:`_words_desc`)."""
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
    m, k = x.shape
    gdt = gl.bfloat16 if x.dtype == torch.bfloat16 else gl.float16
    box = [cfg.split_k, cfg.block_k]
    x_desc = TensorDescriptor(x, [m, k], [x.stride(0), 1], box, gl.NVMMASharedLayout.get_default_for(box, gdt))
    return x_desc, _words_desc(qweight, cfg.block_n, cfg.block_k)


def wgmma_meta(cfg: TileConfig, group_size: int, has_zero: bool, has_bias: bool, splits: int, tail: bool) -> dict:
    """The constexpr arguments of :func:`wgmma.a16w4_wgmma_kernel` for ``cfg`` (its ``num_stages`` bits:
    see :func:`_wgmma_gemm`), ``splits`` K slices per split tile, ``tail``: the 1-D tail-only grid."""
    return dict(GROUP=group_size, PER_CHANNEL=group_size == -1, HAS_ZERO=has_zero, HAS_BIAS=has_bias,
                BLOCK_N=cfg.block_n, STAGES=cfg.num_stages & 15, WS=bool(cfg.num_stages & 32),
                REGA=bool(cfg.num_stages & 64), ASETS=wgmma_a_sets(cfg), SPLIT=splits, TAIL=tail,
                num_warps=cfg.num_warps, SPARSE=bool(cfg.num_stages & 2048))


def _wgmma_gemm(x, qweight, scale, zero, group_size, bias, cfg: TileConfig) -> torch.Tensor:
    """A16W4 on wgmma with TMA loads (``cfg.block_m == WGMMA``): :func:`wgmma.a16w4_wgmma_kernel`.
    ``cfg.block_n`` weight rows x ``cfg.split_k`` tokens per program, ``cfg.block_k`` K per step,
    ``cfg.num_stages & 15`` TMA slots, bit 5: warp specialization (a loader warp issues the TMA), bit
    6: dequantize straight into the wgmma A-operand registers, bits 7-8: split-K into
    :func:`configs.wgmma_splits` K slices (partials summed in the kernel, see
    :func:`wgmma._split_reduce`), bit 10 with them: only the last partial wave's tiles are split
    (:func:`configs.wgmma_grid`), bit 11 (with bit 6): one CTA barrier per loop iteration instead of
    per K step (bit 4 is ignored: it chose the 16-bit dequantization, now the only one)."""
    from . import wgmma
    m, k = x.shape
    n = scale.shape[1]
    x_desc, w_desc = wgmma_descs(x, qweight, cfg)
    out = x.new_empty(m, n)
    grid, n_full, split_tiles = wgmma_grid(cfg, m, n, wgmma_wave(x.device))
    splits = wgmma_splits(cfg) if split_tiles else 1
    if split_tiles:  # split-K: fp32 partials per K slice, and a counter per split output tile (zeroed
        # here, reset to zero by the program that sums the tile)
        part = torch.empty(splits * split_tiles * cfg.block_n * cfg.split_k, dtype=torch.float32, device=x.device)
        cnt = torch.zeros(split_tiles, dtype=torch.int32, device=x.device)
    else:
        part = cnt = scale
    note_unplannable_launch(grid)
    wgmma.a16w4_wgmma_kernel[grid](
        x_desc, w_desc, scale, zero if zero is not None else scale, bias if bias is not None else scale, out,
        part, cnt, m, n, k, scale.shape[0], n_full,
        **wgmma_meta(cfg, group_size, zero is not None, bias is not None, splits, len(grid) == 1))
    return out


def _a16w4_dequant_mm(x, qweight, scale, zero, group_size, bias, cfg: TileConfig) -> torch.Tensor:
    """Large-M path (``cfg.block_m == 0``): the weight is dequantized ``cfg.block_n`` rows at a time
    (exactly the reference's values) into two alternating scratch buffers on a side stream, while
    cuBLAS multiplies the previous slice on the current stream, so the memory-bound dequantization
    hides behind the compute-bound matmul.  bf16/fp16 matmul with fp32 accumulation (cuBLAS).
    Capturable in CUDA graphs (the side stream forks from and joins the current stream).
    ``cfg.num_stages == 0``: no side stream; each slice is dequantized and multiplied in turn on the
    current stream (slices small enough to stay in L2 between the two)."""
    m, k = x.shape
    n = scale.shape[1]
    rows = min(cfg.block_n, n)
    chunks = triton.cdiv(n, rows)
    out = x.new_empty(m, n)
    if cfg.num_stages == 0 and chunks > 1:
        bufs = [torch.empty(rows, k, dtype=x.dtype, device=x.device) for _ in range(2)]
        for i in range(chunks):
            r0 = i * rows
            r = min(rows, n - r0)
            _launch_dequant(qweight, scale, zero, group_size, bufs[i % 2], r0, r, x.dtype)
            torch.mm(x, bufs[i % 2][:r].t(), out=out[:, r0:r0 + r])
    elif chunks == 1:
        scratch = torch.empty(n, k, dtype=x.dtype, device=x.device)
        _launch_dequant(qweight, scale, zero, group_size, scratch, 0, n, x.dtype)
        torch.mm(x, scratch.t(), out=out)
    else:
        main = torch.cuda.current_stream(x.device)
        side = _side_stream(x.device)
        bufs = [torch.empty(rows, k, dtype=x.dtype, device=x.device) for _ in range(2)]
        side.wait_stream(main)
        done = [torch.cuda.Event() for _ in range(chunks)]
        for i in range(chunks):
            r0 = i * rows
            r = min(rows, n - r0)
            buf = bufs[i % 2]
            with torch.cuda.stream(side):
                if i >= 2:
                    side.wait_event(done[i - 2])  # the matmul that read this buffer has finished
                _launch_dequant(qweight, scale, zero, group_size, buf, r0, r, x.dtype)
                ready = torch.cuda.Event()
                ready.record(side)
            main.wait_event(ready)
            torch.mm(x, buf[:r].t(), out=out[:, r0:r0 + r])
            done[i].record(main)
        main.wait_stream(side)
        for b in bufs:
            b.record_stream(side)
    if bias is not None:
        out += bias
    return out


def dequantize_weight(qweight, scale, zero, group_size, dtype, k: int) -> torch.Tensor:
    """The whole (N, K) weight in ``dtype`` from the GPU layout (tests and tools)."""
    n = scale.shape[1]
    out = torch.empty(n, k, dtype=dtype, device=qweight.device)
    _launch_dequant(qweight, scale, zero, group_size, out, 0, n, dtype)
    return out


# -- A8W4 -------------------------------------------------------------------------------------

def launch_quantize_act(x: torch.Tensor, asymmetric: bool, deint: bool = False,
                        perm8: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x (M, K) float -> (q int8 (M, K) [asymmetric: uint8 code - 128], s fp32 (M,), z int32 (M,)).
    ``deint``: q in the dp4a layout, int32 (M, 2, K/8) (see :func:`dp4a_layout`).  ``perm8``: q (M, K)
    with every 8 codes in the order of ``gemm_a8.PERM8`` (see :func:`perm8_layout`)."""
    m, k = x.shape
    if x.stride(1) != 1:
        x = x.contiguous()
    q = torch.empty(m, k, dtype=torch.int8, device=x.device)
    s = torch.empty(m, dtype=torch.float32, device=x.device)
    z = torch.empty(m, dtype=torch.int32, device=x.device)
    if m and perm8 and not deint:
        # whole int32 words; the row read once up to 16384 values, else two sweeps; 8-16 warps (the H100's
        # best of 4-32 at K = 4096 / 8192 / 14336, benchmarks/gpu/sweep_quant_perm8.py)
        one_pass = k <= 16384
        block = max(128, triton.next_power_of_2(k)) if one_pass else 8192
        _QUANT_PERM8((m,), (x, q.view(torch.int32), s, z, k, x.stride(0)),
                     dict(ASYM=asymmetric, BLOCK=block, ONE_PASS=one_pass), max(8, min(16, block // 512)), 1)
    elif m:
        block = min(4096, max(128, triton.next_power_of_2(k)))
        _QUANT((m,), (x, q, s, z, k, x.stride(0)), dict(ASYM=asymmetric, BLOCK=block, DEINT=deint),
               8 if block >= 2048 else 4, 1)
    if deint:
        q = q.view(torch.int32).view(m, 2, k // 8)
    return q, s, z


def perm8_layout(qa: torch.Tensor) -> torch.Tensor:
    """int8 codes (M, K) in K order -> (M, K) with every 8 codes in the order of ``gemm_a8.PERM8``
    (K offsets 0, 2, 4, 6, 1, 3, 5, 7), what :func:`jit.quantize_act_perm8_kernel` writes."""
    m, k = qa.shape
    return qa.view(m, k // 8, 4, 2).transpose(2, 3).reshape(m, k)


def unperm8_layout(qa: torch.Tensor) -> torch.Tensor:
    """Exact inverse of :func:`perm8_layout`: codes (M, K) in the PERM8 order -> K order."""
    m, k = qa.shape
    return qa.view(m, k // 8, 2, 4).transpose(2, 3).reshape(m, k)


def _a8_gemm(qa, sa, za, qweight, scale, zero, wsum, group_size, asymmetric, bias, out_dtype,
             cfg: TileConfig) -> torch.Tensor:
    """A8W4 large-M GEMM of :mod:`gemm_a8` (``configs.is_a8_gemm(cfg)``): ``qa`` in the PERM8 order;
    ``cfg.block_m`` x ``cfg.block_n`` output tiles, ``cfg.split_k & 3`` groups per MMA batch (1 or 2;
    2 needs an even group count), ``cfg.split_k >> 2`` a register cap (``configs.A8_GEMM_MAXNREG``),
    ``cfg.num_warps`` / ``cfg.num_stages`` as usual."""
    m, k = qa.shape
    n = scale.shape[1]
    ln, lw, qstride = layout_of(qweight)
    unroll = 2 if cfg.split_k & 3 == 2 and (k // group_size) % 2 == 0 else 1
    maxnreg = A8_GEMM_MAXNREG.get(cfg.split_k >> 2, 0)
    out = torch.empty(m, n, dtype=out_dtype, device=qa.device)
    grid = (triton.cdiv(m, cfg.block_m) * triton.cdiv(n, cfg.block_n),)
    _A8_GEMM(grid, (qa, sa, za, qweight, scale, zero if zero is not None else scale, wsum,
                    bias if bias is not None else scale, out, m, n, k, n, qstride),
             dict(GROUP=group_size, HAS_ZERO=zero is not None, HAS_BIAS=bias is not None, ASYM=asymmetric,
                  IS_BF16=out_dtype == torch.bfloat16, UNROLL=unroll, GROUP_M=8, BLOCK_M=cfg.block_m,
                  BLOCK_N=cfg.block_n, LN=ln, LW=lw, MAXNREG=maxnreg, **({"maxnreg": maxnreg} if maxnreg else {})),
             cfg.num_warps, cfg.num_stages)
    return out


def wgmma_a8_ok(qa: torch.Tensor, qweight: torch.Tensor, group_size: int, cfg: TileConfig) -> bool:
    """Can :func:`_wgmma_a8_gemm` serve this call with ``cfg``: sm_90 with Gluon, the blocked weight
    layout, a valid config for the group (:func:`configs.group_tile_ok`)."""
    return (_gluon_sm90(qa.device) and mma_ok(qa, qweight)
            and group_tile_ok(cfg, group_size, qa.shape[1], "a8w4"))


def _wgmma_a8_gemm(qa, sa, za, qweight, scale, zero, wsum, group_size, asymmetric, bias, out_dtype,
                   cfg: TileConfig) -> torch.Tensor:
    """A8W4 on int8 wgmma with TMA loads (``cfg.block_m == WGMMA_A8``):
    :func:`wgmma_a8.a8w4_wgmma_kernel`; ``qa`` int8 (M, K) in the PERM8 order (fresh, contiguous);
    ``cfg.split_k`` tokens x 128 rows per program, ``cfg.block_k`` K per step, ``cfg.num_stages & 15``
    TMA slots, bit 4: the two warpgroups take turns on the tensor cores, bit 5: the unpacked weights go
    through shared memory instead of the A-operand registers, bit 6 (with bit 5, without bit 4): the next
    group's wgmma is issued before this group's rescale (two int32 accumulators in flight)."""
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
    from . import wgmma_a8
    m, k = qa.shape
    n = scale.shape[1]
    bm, bk = cfg.split_k, cfg.block_k
    x_desc = TensorDescriptor(qa, [m, k], [qa.stride(0), 1], [bm, bk],
                              gl.NVMMASharedLayout.get_default_for([bm, bk], gl.int8))
    w_desc = _words_desc(qweight, cfg.block_n, bk)
    out = torch.empty(m, n, dtype=out_dtype, device=qa.device)
    grid = (triton.cdiv(m, bm), triton.cdiv(n, cfg.block_n))
    note_unplannable_launch(grid)  # an eager plan must not replay the quantization alone
    wgmma_a8.a8w4_wgmma_kernel[grid](
        x_desc, w_desc, sa, za, scale, zero if zero is not None else scale, wsum,
        bias if bias is not None else scale, out, m, n, k, GROUP=group_size, HAS_ZERO=zero is not None,
        HAS_BIAS=bias is not None, ASYM=bool(asymmetric), STAGES=cfg.num_stages & 15, ORDER=bool(cfg.num_stages & 16),
        SMEM_A=bool(cfg.num_stages & 32), PIPE=bool(cfg.num_stages & 64), COMPUTE_REGS=232, num_warps=4)
    return out


def tma_gemv_a8_ok(x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None,
                   group_size: int, cfg: TileConfig) -> bool:
    """Can :func:`_tma_gemv_a8` serve this call: one activation row, a valid config for the group
    (:func:`configs.group_tile_ok`: groups of 32 / 64 / 128, 32 / 64 / 128-row units, 4 or 8 warps),
    sm_90 with Gluon, the blocked weight layout, N a multiple of 16 (16-byte TMA strides of the int8
    zero points), K <= ``tma_gemv_a8.MAX_K`` and the shared memory within 220 KiB, a contiguous 16-byte
    aligned x (its TMA), parameter boxes (groups of a K block x rows) of >= 128 bytes (TMA slots
    128-byte aligned: int8 zero points of groups of 128 need 64-row units), and with 8 warps >= 2 row
    blocks per warp row."""
    n, k = scale.shape[1], x.shape[1]
    if x.shape[0] != 1 or not group_tile_ok(cfg, group_size, k, "a8w4"):
        return False
    gpb = 256 // group_size
    # shared memory: the row (2 bytes per value), its codes (1 byte per value) and the TMA slots
    smem = 3 * 1024 * -(-k // 1024) + cfg.num_stages * cfg.block_n * (128 + gpb * 11) + 2048
    return (n % 16 == 0 and k <= 32768 and smem <= 220 * 1024 and x.is_contiguous() and x.data_ptr() % 16 == 0
            and gpb * cfg.block_n * 2 >= 128 and (zero is None or gpb * cfg.block_n >= 128)
            and (cfg.num_warps == 4 or cfg.block_n >= 32 * cfg.num_warps // 4)
            and _gluon_sm90(x.device) and mma_ok(x, qweight))


def _tma_gemv_a8(x, qweight, scale, zero, wsum, group_size, asymmetric, bias, cfg: TileConfig,
                 locks=None) -> torch.Tensor:
    """A8W4 at M = 1 (``cfg.block_m == TMA_GEMV_A8``): :func:`tma_gemv_a8.a8w4_tma_gemv_kernel`, which
    quantizes ``x`` (1, K) bf16/fp16 itself.  ``cfg.block_n`` rows per unit, ``cfg.split_k`` programs
    per SM, ``cfg.num_stages`` TMA slots, ``cfg.num_warps`` 4 or 8 compute warps; ``locks``: the
    layer's zeroed int32 counters (>= N / 32)."""
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
    from . import tma_gemv_a8
    k = x.shape[1]
    n = scale.shape[1]
    rb, gpb = cfg.block_n // 16, 256 // group_size
    nb, kb = qweight.shape[0], qweight.shape[1]

    def plain(box, bits):
        return gl.NVMMASharedLayout(swizzle_byte_width=0, element_bitwidth=bits, rank=len(box))

    w_desc = _words_desc(qweight, cfg.block_n, 256, plain([rb, 16, 32], 32))

    def pdesc(t):  # [groups, rows] per unit, >= 128 bytes (tma_gemv_a8_ok): 128-byte aligned TMA slots
        box = [gpb, cfg.block_n]
        return TensorDescriptor(t, list(t.shape), [t.stride(0), 1], box, plain(box, t.element_size() * 8))

    s_desc = pdesc(scale)
    z_desc = pdesc(zero) if zero is not None else s_desc
    ws_desc = pdesc(wsum) if asymmetric else s_desc
    units = triton.cdiv(nb, rb) * kb
    progs = min(units, sm_count(x.device) * cfg.split_k)
    x_desc = TensorDescriptor(x.view(k), [k], [1], [256], plain([256], 16))
    out = torch.empty(1, n, dtype=x.dtype, device=x.device)
    part = torch.empty(progs, 2, cfg.block_n, dtype=torch.float32, device=x.device)
    if locks is None or locks.numel() < triton.cdiv(n, cfg.block_n):
        locks = torch.zeros(triton.cdiv(n, cfg.block_n), dtype=torch.int32, device=x.device)
    note_unplannable_launch((progs,))
    tma_gemv_a8.a8w4_tma_gemv_kernel[(progs,)](
        x_desc, w_desc, s_desc, z_desc, ws_desc, bias if bias is not None else scale, out, part, locks,
        n, GROUP=group_size, HAS_ZERO=zero is not None, HAS_BIAS=bias is not None,
        ASYM=bool(asymmetric), STAGES=cfg.num_stages, XB=kb, XBP=4 * triton.cdiv(kb, 4), num_warps=cfg.num_warps)
    return out


def launch_a8w4_mm(qa: torch.Tensor, sa: torch.Tensor, za: torch.Tensor, qweight: torch.Tensor,
                   scale: torch.Tensor, zero: torch.Tensor | None, wsum: torch.Tensor, group_size: int,
                   asymmetric: bool, bias: torch.Tensor | None, out_dtype: torch.dtype,
                   cfg: TileConfig | None = None, perm8: bool = False) -> torch.Tensor:
    """The int8 matmul on quantized activations (see :func:`jit.a8w4_kernel` and
    :func:`gemm_a8.a8w4_gemm_kernel`) -> (M, N) ``out_dtype``.  ``perm8``: ``qa`` is already in the
    PERM8 order (:func:`perm8_layout`); otherwise the large-M GEMM permutes a copy."""
    m, k = qa.shape
    n = scale.shape[1]
    if m == 0:
        return torch.empty(0, n, dtype=out_dtype, device=qa.device)
    if cfg is None:
        cfg = get_config("a8w4", m, n, k, group_size, qa.device,
                         lambda cs: _time_configs(
                             lambda c: launch_a8w4_mm(qa, sa, za, qweight, scale, zero, wsum, group_size,
                                                      asymmetric, bias, out_dtype, c, perm8), cs))
    if cfg.block_m == WGMMA_A8:
        if wgmma_a8_ok(qa, qweight, group_size, cfg):
            return _wgmma_a8_gemm(qa if perm8 else perm8_layout(qa).contiguous(), sa, za, qweight, scale, zero,
                                  wsum, group_size, asymmetric, bias, out_dtype, cfg)
        cfg = heuristic("a8w4", n, k, group_size, m)
    if is_a8_gemm(cfg):
        if group_size != -1:
            return _a8_gemm(qa if perm8 else perm8_layout(qa), sa, za, qweight, scale, zero, wsum, group_size,
                            asymmetric, bias, out_dtype, cfg)
        cfg = heuristic("a8w4", n, k, group_size, m, gemm=False)
    if perm8:
        qa = unperm8_layout(qa)  # back to K order
    if (cfg.block_m < 0 and m > -cfg.block_m) or (cfg.block_m == 1 and m > 1) or cfg.block_m == 2:
        # a GEMV config given for fewer rows than M, or the mma GEMV (it quantizes x itself)
        cfg = heuristic("a8w4", n, k, group_size, m)
    if cfg.block_m < 0:
        return _gemv_dp4a(dp4a_layout(qa), sa, za, m, qweight, scale, zero, group_size, asymmetric, bias,
                          out_dtype, cfg)
    if cfg.block_m == 1:
        return _gemv(qa, sa, za, qweight, scale, zero, group_size, asymmetric, bias, out_dtype, cfg)
    atomic = cfg.split_k > 1
    ln, lw, qstride = layout_of(qweight)
    out = torch.empty(m, n, dtype=out_dtype, device=qa.device)
    ws = torch.empty(cfg.split_k, m, n, dtype=torch.float32, device=qa.device) if atomic else out
    grid = (triton.cdiv(n, cfg.block_n), triton.cdiv(m, cfg.block_m), cfg.split_k)
    _A8(grid, (qa, sa, za, qweight, scale, zero if zero is not None else scale, wsum,
               bias if bias is not None else scale, ws, m, n, k, n, qstride),
        dict(GROUP=group_size, PER_CHANNEL=group_size == -1, HAS_ZERO=zero is not None,
             HAS_BIAS=bias is not None, ASYM=asymmetric, IS_BF16=out_dtype == torch.bfloat16,
             EVEN_K=k % cfg.block_k == 0, ATOMIC=atomic, SPLIT_K=cfg.split_k, BLOCK_M=cfg.block_m,
             BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, LN=ln, LW=lw), cfg.num_warps, cfg.num_stages)
    if atomic:
        _finish(ws, bias, out)
    return out


def a8_m1_config(x, qweight, scale, zero, wsum, group_size, asymmetric, bias, locks) -> TileConfig:
    """The A8W4 config at M = 1 where :func:`mma_a8_ok` holds (sm_90, bf16, groups >= 128).  ``x`` (1, K)
    bf16; the weight tensors, ``asymmetric``, ``bias`` and ``locks`` as :func:`launch_a8w4` gets them (the
    tuner runs the call on them).

    The cache / table entry if there is one: it comes from timing every kind (on the H100, the
    fused mma GEMV wins on 4096x4096 and 14336x4096 (there with its quantization swept in whole
    blocks, flag 128: 17.8 against 21.0 us); the two-launch dp4a GEMV on 4096x14336 (17.7
    vs 19.6-20.2 us), see ``benchmarks/gpu/sweep_a8_m1.py``; on 8192x28672 the quantization kernel +
    PDL-launched mma GEMV (flag 64: 51.2-53.6 us against 58-61 for the others,
    ``benchmarks/gpu/sweep_m1_floor.py``)).  Otherwise the first call that may tune times
    :func:`configs.a8_m1_configs` on this call's tensors and caches the winner; where it may not
    (CUDA-graph capture, ``torch.compile``, ``NYBBLE_TRITON_AUTOTUNE=0``), :func:`a8_m1_default`."""
    n, k = scale.shape[1], x.shape[1]
    return get_config("a8w4", 1, n, k, group_size, x.device,
                      lambda cs: _time_configs(lambda c: launch_a8w4(x, qweight, scale, zero, wsum, group_size,
                                                                     asymmetric, bias, c, locks), cs),
                      cands=lambda: a8_m1_configs(n, k, sm_count(x.device), group_size),
                      guess=lambda: a8_m1_default(n, k, x.device))


def a8_m1_default(n: int, k: int, device: torch.device) -> TileConfig:
    """:func:`configs.a8_m1_default` for this device's SM count."""
    return configs.a8_m1_default(n, k, sm_count(device))


def launch_a8w4(x, qweight, scale, zero, wsum, group_size, asymmetric, bias, cfg=None, locks=None):
    """x (M, K) bf16/fp16 -> (M, N): fused per-token quantization kernel, then the int8 matmul (or,
    for a ``block_m < 0`` config, the dp4a GEMV with the codes written in its layout; for a
    ``block_m == 2`` config at M = 1, the mma GEMV that quantizes x itself: one launch, or with flag
    64 a one-program quantization kernel and the GEMV launched with PDL).  Without a
    ``cfg``, M = 1 takes the mma GEMV wherever :func:`mma_a8_ok` (sm_90, bf16, groups >= 128 or
    per-channel) unless the table holds a faster kind (:func:`a8_m1_config`), and the table / tuned
    config elsewhere.  A table choice of the TMA-stream GEMV (``TMA_GEMV_A8``, a Gluon launch: ~150 us
    of CPU per eager call) is taken during CUDA-graph capture only; eager calls take the fused mma GEMV
    (plannable) and mark their plan eager-only (:func:`launch.note_capture_only_choice`), except the
    first eager call of each specialization, which runs (compiles) it for a later capture; a ``cfg``
    given by the caller is always honoured."""
    m, k = x.shape
    if x.stride(1) != 1:
        x = x.contiguous()
    explicit = cfg is not None
    if cfg is None and m == 1 and mma_a8_ok(x, qweight, group_size):
        cfg = a8_m1_config(x, qweight, scale, zero, wsum, group_size, asymmetric, bias, locks)
    if cfg is None and 0 < m <= 8:
        # the config decides the layout the quantization kernel writes: look it up first (a cached
        # or table entry; an unknown key is tuned by launch_a8w4_mm on the plain layout below, or,
        # where no tuning may happen, gets the heuristic here)
        st, key = store_for(x.device), make_key("a8w4", scale.shape[1], k, group_size, m)
        if not _wants_tuning(st, key):  # (else: tuned by launch_a8w4_mm below)
            cfg = st.get(key) or get_config("a8w4", m, scale.shape[1], k, group_size, x.device)
    if cfg is not None and cfg.block_m == TMA_GEMV_A8:
        # a table choice of the TMA GEMV holds during CUDA-graph capture only: its Gluon launch costs
        # ~150 us of CPU per eager call (~17 us for a planned launch of the fallback), paid once in a graph
        if tma_gemv_a8_ok(x, qweight, scale, zero, group_size, cfg):
            warm = (scale.shape[1], k, group_size, cfg, x.dtype, bool(asymmetric), zero is not None,
                    bias is not None, x.device)
            if explicit or _capturing() or warm not in _TMA_WARM:
                # (the first eager call of a specialization runs it too: it compiles the kernel, which a
                # CUDA-graph capture could not)
                _TMA_WARM.add(warm)
                return _tma_gemv_a8(x, qweight, scale, zero, wsum, group_size, asymmetric, bias, cfg, locks)
            note_capture_only_choice()
        cfg = (a8_m1_default(scale.shape[1], k, x.device) if m == 1 and mma_a8_ok(x, qweight, group_size)
               else heuristic("a8w4", scale.shape[1], k, group_size, m))
    if cfg is not None and cfg.block_m == 2:
        if mma_a8_ok(x, qweight, group_size):
            return _mma_gemv(x, qweight, scale, zero, group_size, bias, cfg, locks, bool(asymmetric))
        cfg = heuristic("a8w4", scale.shape[1], k, group_size, m)
    if cfg is not None and cfg.block_m < 0 and m <= -cfg.block_m:
        qa, sa, za = launch_quantize_act(x, asymmetric, deint=True)
        return _gemv_dp4a(qa, sa, za, m, qweight, scale, zero, group_size, asymmetric, bias, x.dtype, cfg)
    if cfg is None and m > 8:  # the large-M GEMM wants its activation codes in the PERM8 order
        cfg = store_for(x.device).get(make_key("a8w4", scale.shape[1], k, group_size, m))
    if cfg is not None and ((cfg.block_m == WGMMA_A8 and wgmma_a8_ok(x, qweight, group_size, cfg))
                            or (is_a8_gemm(cfg) and group_size != -1)):
        # both large-M int8 GEMMs read the activation codes in the PERM8 order
        gemm = _wgmma_a8_gemm if cfg.block_m == WGMMA_A8 else _a8_gemm
        qa, sa, za = launch_quantize_act(x, asymmetric, perm8=True)
        return gemm(qa, sa, za, qweight, scale, zero, wsum, group_size, asymmetric, bias, x.dtype, cfg)
    qa, sa, za = launch_quantize_act(x, asymmetric)
    return launch_a8w4_mm(qa, sa, za, qweight, scale, zero, wsum, group_size, asymmetric, bias, x.dtype, cfg)


# -- torch ops --------------------------------------------------------------------------------

@torch.library.custom_op("nybble::triton_a16w4", mutates_args=())
def triton_a16w4(x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor, zero_point: Optional[torch.Tensor],
                 group_size: int, bias: Optional[torch.Tensor], locks: Optional[torch.Tensor] = None) -> torch.Tensor:
    """x (M, K) bf16/fp16; qweight int32 (N, K/8); scale (G, N); zero_point int8 (G, N) or None;
    bias (N,) or None -> (M, N) in x's dtype.  ``locks``: the layer's split-K counters (int32 zeros,
    back at zero after every call, so the op does not change them)."""
    return launch_a16w4(x, qweight, scale, zero_point, group_size, bias, None, locks)


@triton_a16w4.register_fake
def _(x, qweight, scale, zero_point, group_size, bias, locks=None):
    return x.new_empty(x.shape[0], scale.shape[1])


@torch.library.custom_op("nybble::triton_quantize_act", mutates_args=())
def triton_quantize_act(x: torch.Tensor, asymmetric: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x (M, K) float -> q int8 (M, K) (asymmetric: uint8 code - 128), scale fp32 (M,), zero int32 (M,)."""
    return launch_quantize_act(x, asymmetric)


@triton_quantize_act.register_fake
def _(x, asymmetric):
    m, k = x.shape
    return (x.new_empty(m, k, dtype=torch.int8), x.new_empty(m, dtype=torch.float32),
            x.new_empty(m, dtype=torch.int32))


@torch.library.custom_op("nybble::triton_a8w4", mutates_args=())
def triton_a8w4(x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor, zero_point: Optional[torch.Tensor],
                wsum: torch.Tensor, group_size: int, asymmetric: bool,
                bias: Optional[torch.Tensor], locks: Optional[torch.Tensor] = None) -> torch.Tensor:
    """x (M, K) bf16/fp16 -> (M, N): per-token int8 activations, int4 weights, int32 group sums.
    wsum int32 (G, N) = per-group sum of (q - z); other tensors as :func:`triton_a16w4`."""
    return launch_a8w4(x, qweight, scale, zero_point, wsum, group_size, asymmetric, bias, None, locks)


@triton_a8w4.register_fake
def _(x, qweight, scale, zero_point, wsum, group_size, asymmetric, bias, locks=None):
    return x.new_empty(x.shape[0], scale.shape[1])


# -- bandwidth probe --------------------------------------------------------------------------

def launch_read(src: torch.Tensor, out: torch.Tensor | None = None, block: int = 4096) -> torch.Tensor:
    """Read every byte of ``src`` (int32, contiguous) once; returns a tiny int32 tensor."""
    n = src.numel()
    sms = torch.cuda.get_device_properties(src.device).multi_processor_count
    progs = min(sms * 8, triton.cdiv(n, block))
    if out is None:
        out = torch.empty(progs, dtype=torch.int32, device=src.device)
    jit.read_kernel[(progs,)](src, out, n, BLOCK=block, num_warps=8)
    return out
