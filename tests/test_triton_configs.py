"""CPU-runnable unit tests of the Triton kernels' pure-Python parts: tile-config keys, buckets, the
shipped table and disk cache, candidate validity, the blocked layout, refusal reasons.  (No triton
and no GPU needed.)"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from nybble.kernels.base import LinearSpec
from nybble.kernels.torch_int4_cuda import TorchInt4CudaKernel
from nybble.kernels.triton import configs as C
from nybble.kernels.triton.checks import can_implement_spec
from nybble.kernels.triton.layout import block_words, unblock_words


def _spec(n=256, k=512, g=128, domain="int", act="a16", dtype=torch.bfloat16):
    return LinearSpec(n, k, g, domain, act, dtype, "cuda", "layer.q_proj")


def test_m_buckets_and_keys():
    assert [C.m_bucket(m) for m in (1, 2, 3, 16, 17, 64, 257, 1024, 5000)] == [1, 2, 4, 16, 32, 64, 512, 1024, 2048]
    with pytest.raises(ValueError):
        C.m_bucket(0)
    assert C.make_key("a16w4", 4096, 14336, 128, 3) == "a16w4|4096|14336|128|4"
    assert C.gpu_slug("NVIDIA H100 80GB HBM3") == "nvidia_h100_80gb_hbm3"


@pytest.mark.parametrize("op", ["a16w4", "a8w4"])
@pytest.mark.parametrize("group", [32, 64, 128, 256, -1])
@pytest.mark.parametrize("m", [1, 3, 16, 64, 300, 2048])
def test_candidates_and_heuristic_are_valid(op, group, m):
    n, k = 4096, 4096
    cands = C.candidates(op, n, k, group, m)
    assert cands and C.heuristic(op, n, k, group, m) in cands
    for c in cands:
        assert C.group_tile_ok(c, group, k, op), c
        if op == "a8w4" and group != -1 and c.block_m > 1:
            # one int32 -> fp32 conversion per group (the Gluon int8 GEMM: after its one or two K steps)
            assert c.block_k == group or C.is_a8_gemm(c) or (c.block_m == C.WGMMA_A8 and group in (
                c.block_k, 2 * c.block_k))
        if c.block_m == 0:
            assert op == "a16w4" and m >= 128  # dequant + cuBLAS only for large-M A16W4
        if c.block_m == 1:
            assert m == 1  # the GEMV serves M = 1 only
        if c.block_m < 0:
            assert op == "a8w4" and m <= -c.block_m <= 8  # the dp4a GEMV: A8W4 at small M only
        if c.block_m == C.WGMMA:  # the Gluon wgmma GEMM: A16W4, M >= 64, one scale per row per K step
            assert op == "a16w4" and m >= 64 and 256 % c.block_k == 0
            assert group == -1 or group % c.block_k == 0
            assert c.block_n % (16 * c.num_warps) == 0 and 8 <= c.split_k <= 256
        if c.block_m == C.WGMMA_A8:  # the Gluon int8 GEMM: grouped A8W4, M >= 64, 2 x 64-row warpgroups
            assert op == "a8w4" and m >= 64 and group != -1 and c.block_n == 128 and c.num_warps == 4
            assert C.wgmma_a8_smem(c) <= C.SMEM_LIMIT - 8192
    if op == "a16w4" and m >= 64:
        assert any(c.block_m == C.WGMMA for c in cands), "every group size gets wgmma candidates"
    if op == "a8w4" and m >= 64 and group != -1:
        assert any(c.block_m == C.WGMMA_A8 for c in cands), "every group size gets int8 wgmma candidates"


def test_wgmma_split_k_slices_cover_k_without_an_empty_slice():
    """Split-K wgmma configs (``num_stages`` bits 7-8): every slice but the last holds the same step
    count (a multiple of 2 / 3 with register-A dequantization, bit 6 / bits 6 + 9, whose loop takes two /
    three steps per iteration), the
    slices cover K, the last one is not empty; configs that would leave it empty are refused."""
    W, T = C.WGMMA, C.TileConfig
    assert [C.wgmma_splits(T(W, 128, 64, 256, 8, f)) for f in (100, 100 | 128, 100 | 256, 100 | 384)] == [1, 2, 3, 4]
    for flags in (4, 4 | 64, 4 | 32 | 64, 4 | 64 | 512):
        sets = 3 if flags & 512 else 2
        for extra in (0, 128, 256, 384):
            cfg = T(W, 128, 64, 256, 8, flags | extra)
            for k in (64, 128, 192, 256, 320, 640, 4096, 14336):
                steps, splits = -(-k // 64), C.wgmma_splits(cfg)
                per = C.wgmma_slice_steps(cfg, k)
                if per is None:  # the kernel's slice length leaves nothing for the last slice
                    want = -(-steps // splits)
                    want += -want % sets if flags & 64 else 0
                    assert steps <= (splits - 1) * want
                    assert not C.group_tile_ok(cfg, 64, k, "a16w4")
                    continue
                assert per * splits >= steps > per * (splits - 1)
                assert not flags & 64 or per % sets == 0
                assert C.group_tile_ok(cfg, 64, k, "a16w4")
    # three register sets need the register-A loop (bit 6)
    assert not C.group_tile_ok(T(W, 128, 64, 256, 8, 4 | 32 | 512), 64, 4096, "a16w4")
    assert C.wgmma_a_sets(T(W, 128, 64, 256, 8, 4 | 64 | 512)) == 3 and C.wgmma_a_sets(T(W, 128, 64, 256, 8, 100)) == 2
    # K = 4096 in K steps of 64: two slices of 32 steps; one step (K = 64) cannot be split
    assert C.wgmma_slice_steps(T(W, 128, 64, 256, 8, 100 | 128), 4096) == 32
    assert C.wgmma_slice_steps(T(W, 128, 64, 256, 8, 100 | 128), 64) is None


def test_wgmma_tail_only_split_grid_runs_full_waves_whole():
    """A tail-only split config (bit 10 with bits 7-8) runs the tiles of every full wave whole and splits
    the rest: 448 tiles of 128 rows x 256 tokens (8192x28672 at M = 512) on 132 SMs give 396 whole
    programs and 52 x 2 halves; a tile count that fills whole waves splits nothing, one below a wave
    splits everything; without a split bit 10 means nothing; the 3-D grid of an ordinary split config
    is unchanged.  The resident-program estimate: one 128 x 256 program (147 KiB of shared memory),
    two small ones."""
    W, T = C.WGMMA, C.TileConfig
    tail = T(W, 128, 64, 256, 8, 4 | 32 | 64 | 128 | 1024)
    assert C.wgmma_tail_only(tail) and not C.wgmma_tail_only(T(W, 128, 64, 256, 8, 4 | 32 | 64 | 1024))
    assert C.wgmma_ctas_per_sm(tail) == 1
    assert C.wgmma_ctas_per_sm(T(W, 64, 64, 64, 4, 4 | 64)) >= 2
    assert C.wgmma_grid(tail, 512, 28672, 132) == ((396 + 104, ), 396, 52)
    assert C.wgmma_grid(tail, 512, 132 * 128, 132) == ((1, 2, 132), 0, 0)  # two full waves: runs unsplit
    assert C.wgmma_grid(tail, 256, 128 * 100, 132) == ((200, ), 0, 100)  # below one wave: all split
    three = T(W, 128, 64, 256, 8, 4 | 32 | 64 | 256 | 1024)
    assert C.wgmma_grid(three, 512, 28672, 132) == ((396 + 156, ), 396, 52)
    assert C.wgmma_grid(T(W, 128, 64, 256, 8, 4 | 32 | 64 | 128), 512, 28672, 132) == ((2, 2, 224), 0, 448)
    assert C.wgmma_grid(T(W, 128, 64, 256, 8, 4 | 32 | 64), 512, 28672, 132) == ((1, 2, 224), 0, 0)
    for c in C.wgmma_configs(512):
        assert C.wgmma_tail_only(c) == bool(c.num_stages & 1024)


def test_shipped_h100_table_parses_and_is_valid():
    store = C.ConfigStore("NVIDIA H100 80GB HBM3", cache=None)
    assert len(store.shipped) >= 40
    for key, cfg in store.shipped.items():
        op, n, k, g, mb = key.split("|")
        assert op in ("a16w4", "a8w4") and int(mb) in C.M_BUCKETS
        assert C.group_tile_ok(cfg, int(g), int(k), op), (key, cfg)
        if cfg.block_m == C.WGMMA:
            assert op == "a16w4" and int(mb) >= 64, (key, cfg)
        if cfg.block_m == 2:  # an mma GEMV's shared-memory code row (flag 2048) fits in the static limit
            assert C.mma_code_row_bytes(cfg, int(k)) <= C.MMA_STATIC_SMEM_MAX, (key, cfg)
    assert store.source("a16w4|28672|8192|128|1") == "table"
    assert store.get("a8w4|4096|4096|128|1").num_stages & 2048


def test_disk_cache_round_trip_and_corrupt_cache(tmp_path):
    store = C.ConfigStore("Some GPU", table_dir=tmp_path / "none", cache=tmp_path)
    key = C.make_key("a16w4", 100, 256, 32, 5)
    assert store.get(key) is None and store.source(key) == "none"
    cfg = C.TileConfig(16, 64, 32, 2, 4, 3)
    store.put(key, cfg)
    again = C.ConfigStore("Some GPU", table_dir=tmp_path / "none", cache=tmp_path)
    assert again.get(key) == cfg and again.source(key) == "cache"
    (tmp_path / "some_gpu.json").write_text("{not json")
    assert C.ConfigStore("Some GPU", table_dir=tmp_path / "none", cache=tmp_path).get(key) is None
    bad = tmp_path / "tables"
    bad.mkdir()
    (bad / "some_gpu.json").write_text(json.dumps({"configs": {key: [1, 2]}}))
    with pytest.raises(ValueError, match="6 integers"):
        C.ConfigStore("Some GPU", table_dir=bad, cache=tmp_path / "c2")


def test_untuned_picks_stay_out_of_the_disk_cache(tmp_path):
    store = C.ConfigStore("Some GPU", table_dir=tmp_path / "none", cache=tmp_path)
    guess, tuned = C.make_key("a16w4", 100, 256, 32, 5), C.make_key("a16w4", 100, 256, 32, 1)
    g_cfg, t_cfg = C.TileConfig(16, 64, 32, 2, 4, 3), C.TileConfig(2, 16, 256, 1, 4, 1)
    store.put(guess, g_cfg, persist=False)
    assert store.get(guess) == g_cfg and store.source(guess) == "heuristic"
    assert not (tmp_path / "some_gpu.json").exists()
    store.put(tuned, t_cfg)  # a tuned save writes the tuned keys only
    saved = json.loads((tmp_path / "some_gpu.json").read_text())["configs"]
    assert saved == {tuned: t_cfg.to_json()}
    again = C.ConfigStore("Some GPU", table_dir=tmp_path / "none", cache=tmp_path)
    assert again.get(guess) is None and again.source(guess) == "none" and again.get(tuned) == t_cfg
    store.put(guess, t_cfg)  # tuned later: saved, no longer a guess
    assert store.source(guess) == "cache" and guess in json.loads((tmp_path / "some_gpu.json").read_text())["configs"]


def test_get_config_tunes_a_guessed_key_once_tuning_can_run(tmp_path, monkeypatch):
    pytest.importorskip("triton")  # ops imports triton (CI's CPU set-up has none; this machine's has)
    from nybble.kernels.triton import ops
    store = C.ConfigStore("Some GPU", table_dir=tmp_path / "none", cache=tmp_path)
    dev = torch.device("cuda", 0)
    monkeypatch.setattr(ops, "store_for", lambda device: store)
    monkeypatch.setattr(ops, "sm_count", lambda device: 132)
    monkeypatch.setattr(ops, "_gluon_sm90", lambda device: True)
    can = {"tune": False}
    monkeypatch.setattr(ops, "_can_tune", lambda: can["tune"])
    monkeypatch.setenv("NYBBLE_TRITON_AUTOTUNE", "1")
    tuned_cfg = C.TileConfig(2, 16, 256, 1, 4, 1)
    runs = []

    def tune(cands):
        runs.append(len(cands))
        assert cands, "the tuner gets the candidate list"
        return tuned_cfg

    key = C.make_key("a16w4", 4096, 4096, 128, 1)
    guess = ops.get_config("a16w4", 1, 4096, 4096, 128, dev, tune)  # e.g. under CUDA-graph capture
    assert not runs and store.source(key) == "heuristic" and guess == store.get(key)
    assert ops.get_config("a16w4", 1, 4096, 4096, 128, dev, tune) == guess and not runs
    can["tune"] = True
    assert ops.get_config("a16w4", 1, 4096, 4096, 128, dev, tune) == tuned_cfg and len(runs) == 1
    assert store.source(key) == "cache"
    assert ops.get_config("a16w4", 1, 4096, 4096, 128, dev, tune) == tuned_cfg and len(runs) == 1  # once
    monkeypatch.setenv("NYBBLE_TRITON_AUTOTUNE", "0")  # tuning off: a new key is guessed, never tuned
    other = C.make_key("a16w4", 4096, 4096, 128, 2)
    ops.get_config("a16w4", 2, 4096, 4096, 128, dev, tune)
    assert store.source(other) == "heuristic" and len(runs) == 1


def test_a8_m1_untabled_shape_is_tuned_over_the_m1_kinds(tmp_path, monkeypatch):
    """A8W4 at M = 1 on a shape the table lacks: the first call that may tune times the M = 1 kinds
    (A8-mode mma GEMVs, the two-launch PDL form, dp4a GEMVs; every mma one with a code store that fits)
    and caches the winner; a call that may not tune takes the default, kept for the process only."""
    pytest.importorskip("triton")
    from nybble.kernels.triton import ops
    store = C.ConfigStore("Some GPU", table_dir=tmp_path / "none", cache=tmp_path)
    monkeypatch.setattr(ops, "store_for", lambda device: store)
    monkeypatch.setattr(ops, "sm_count", lambda device: 132)
    can = {"tune": False}
    monkeypatch.setattr(ops, "_can_tune", lambda: can["tune"])
    monkeypatch.setenv("NYBBLE_TRITON_AUTOTUNE", "1")
    timed = []

    def fake_time(run, cands):  # the timing itself needs a GPU: pick the last mma GEMV candidate
        timed.append(list(cands))
        return [c for c in cands if c.block_m == 2][-1]

    monkeypatch.setattr(ops, "_time_configs", fake_time)
    n, k = 1024, 8192 + 512  # Llama-3-70B-like K/V rows with an uneven K; not in any table
    x = torch.randn(1, k).to(torch.bfloat16)
    key = C.make_key("a8w4", n, k, 128, 1)
    args = (x, None, torch.ones(k // 128, n), None, None, 128, False, None, None)
    guess = ops.a8_m1_config(*args)
    assert not timed and guess == ops.a8_m1_default(n, k, None) and store.source(key) == "heuristic"
    can["tune"] = True
    tuned = ops.a8_m1_config(*args)
    assert len(timed) == 1 and store.source(key) == "cache" and tuned == [c for c in timed[0] if c.block_m == 2][-1]
    assert json.loads((tmp_path / "some_gpu.json").read_text())["configs"][key] == tuned.to_json()
    assert ops.a8_m1_config(*args) == tuned and len(timed) == 1  # tuned once
    cands = timed[0]
    assert len(cands) == len(set(cands)) and guess in cands
    kinds = {(c.block_m == 2, bool(c.num_stages & 64)) for c in cands}
    assert kinds == {(True, False), (True, True), (False, False)}  # mma, mma + PDL quantizer, dp4a
    assert all(c.block_m == -1 for c in cands if c.block_m != 2)
    assert any(c.num_stages & 128 for c in cands) and any(c.block_m == 2 and not c.num_stages & 128 for c in cands)
    for c in cands:
        if c.block_m == 2:  # every mma candidate builds its kernel arguments (code row fits, flags agree)
            meta = ops.mma_meta(c, 1, k, 128, True, True, False, a8_asym=False)
            assert meta["A8"] and (meta["A8PRE"] or meta["SMC"] or meta["PRIV"])


@pytest.mark.parametrize("n,k8", [(16, 32), (20, 12), (77, 45), (1, 1)])
def test_blocked_layout_round_trip(n, k8):
    q = torch.randint(-2**31, 2**31 - 1, (n, k8), dtype=torch.int32)
    b = block_words(q)
    assert b.dim() == 4 and b.shape[2:] == (16, 32)
    assert torch.equal(unblock_words(b, n, k8), q)
    # block (i, j) holds rows 16i.., words 32j.. contiguously
    assert torch.equal(b[0, 0, : min(16, n), : min(32, k8)], q[:16, :32])


def test_refusal_reasons():
    ok, why = can_implement_spec(_spec(dtype=torch.float32))
    assert not ok and "float32" in why and "reference" in why
    assert not can_implement_spec(_spec(k=100, g=-1))[0]
    for act in ("a16", "a8_sym", "a8_asym"):
        for g in (32, 64, 128, 256, -1):
            assert can_implement_spec(_spec(g=g, act=act, dtype=torch.float16)) == (True, None)
    ok, why = TorchInt4CudaKernel.can_implement(_spec(domain="int"))
    assert not ok and "not exactly" in why
    assert not TorchInt4CudaKernel.can_implement(_spec(domain="none", dtype=torch.float16))[0]
    assert not TorchInt4CudaKernel.can_implement(_spec(domain="none", act="a8_sym"))[0]
    assert TorchInt4CudaKernel.can_implement(_spec(domain="none")) == (True, None)


def test_import_nybble_does_not_import_triton():
    code = "import sys, nybble; from nybble.kernels.triton import configs, checks, layout; print('triton' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_tma_gemv_a8_candidates_are_valid_only_where_the_kernel_runs():
    """The A8W4 M = 1 TMA GEMV configs (block_m == TMA_GEMV_A8): every candidate is valid for groups of
    32 / 64 / 128 and refused for groups of 256, per-channel weights and A16W4; their TMA slots fit
    the shared memory of one program."""
    cands = C.tma_gemv_a8_configs()
    assert len(cands) >= 8 and {c.num_warps for c in cands} == {4, 8}
    for c in cands:
        assert c.block_m == C.TMA_GEMV_A8 and c.num_stages * c.block_n * 128 * c.split_k <= 160 * 1024
        for g in (32, 64, 128):
            assert C.group_tile_ok(c, g, 4096, "a8w4"), (c, g)
        assert not C.group_tile_ok(c, 256, 4096, "a8w4")
        assert not C.group_tile_ok(c, -1, 4096, "a8w4")
        assert not C.group_tile_ok(c, 128, 4096, "a16w4")


def test_a8_m1_scratch_and_sweep_sizes(monkeypatch):
    """The A8 mode's code scratch (shared K row, or one row per program and K slice) and the whole-block
    sweep's values per step (at most 64 per thread, 32 asymmetric: more made 165 registers on the H100),
    and the untabled M = 1 default: the shared-memory code row (private global rows where a program's K
    slice does not fit in it), the whole-block sweep only for K > 8192; the code row's size."""
    pytest.importorskip("triton")
    from nybble.kernels.triton import ops
    from nybble.kernels.triton.configs import MMA_STATIC_SMEM_MAX, TileConfig, mma_code_row_bytes
    assert mma_code_row_bytes(TileConfig(2, 128, 256, 8, 8, 1), 4096) == 0  # no flag 2048
    assert mma_code_row_bytes(TileConfig(2, 128, 256, 8, 8, 2049), 4096) == 512 * 2  # 2 tiles of 256
    assert mma_code_row_bytes(TileConfig(2, 64, 512, 3, 4, 2049), 14336) == 10 * 512 * 2  # 28 tiles -> 10
    assert ops._a8_code_values(4096, 2, 8, 32, False) == 4096 + 2
    assert ops._a8_code_values(4000, 2, 8, 32, False) == 4096 + 2
    # 14336 = 56 tiles of 256; 8 slices of 7 tiles; 32 programs x 8 slices x 7 x 256 values
    assert ops._a8_code_values(14336, 2, 8, 32, True) == 32 * 8 * 7 * 256
    assert ops._a8_code_values(14336, 4, 3, 10, True) == 10 * 3 * 10 * 512  # 28 tiles of 512 -> 10 per slice
    assert ops._a8_sweep_block(14336, 8, False) == 16384
    assert ops._a8_sweep_block(14336, 8, True) == 8192
    assert ops._a8_sweep_block(14336, 4, False) == 8192
    assert ops._a8_sweep_block(4096, 8, True) == 4096
    assert ops._a8_sweep_block(640, 4, False) == 1024
    monkeypatch.setattr(ops, "sm_count", lambda device: 132)
    assert ops.a8_m1_default(4096, 4096, None).to_json() == [2, 128, 256, 8, 8, 1 | 2048]
    assert ops.a8_m1_default(4096, 14336, None).to_json() == [2, 128, 256, 8, 8, 1 | 2048 | 128]
    assert ops.a8_m1_default(28672, 8192, None).to_json() == [2, 128, 256, 1, 8, 1 | 2048]
    # a K slice whose codes do not fit in the static shared memory: private global rows instead
    big = ops.a8_m1_default(28672, 32768, None)
    assert big.to_json() == [2, 128, 256, 1, 8, 1 | 256 | 128]
    assert mma_code_row_bytes(TileConfig(*big.to_json()[:5], big.num_stages | 2048), 32768) > MMA_STATIC_SMEM_MAX


def test_mma_k_warp_configs_and_meta():
    """Flag bits 12-13 of the mma GEMV (warps per row group splitting the K slice): decoded as 1 / 2 / 4 /
    8, the row-blocks per warp count row groups (not warps), every candidate gives each of its warps a K
    tile and divides its warps, the layer's split-K counters cover every candidate's programs, and
    ``ops.mma_meta`` passes ``KW`` (A16W4 and A8W4) or refuses it by name (warps not divisible)."""
    pytest.importorskip("triton")
    from nybble.kernels.triton import ops
    from nybble.kernels.triton.configs import TileConfig
    assert [C.mma_k_warps(TileConfig(2, 64, 256, 1, 8, f)) for f in (1, 4097, 8193, 12289)] == [1, 2, 4, 8]
    assert C.mma_row_blocks(TileConfig(2, 64, 256, 1, 8, 1)) == 1      # 8 warps x 1 x 16
    assert C.mma_row_blocks(TileConfig(2, 64, 256, 1, 8, 8193)) == 2   # 2 row groups x 2 x 16
    assert C.mma_row_blocks(TileConfig(2, 16, 512, 1, 8, 12288)) == 1  # 1 row group
    for n, k in ((14336, 4096), (4096, 14336), (28672, 8192), (4096, 4096), (200, 640)):
        cands = C._mma_k_warp_configs(n, k, 132, wide=True)
        assert (n, k) == (200, 640) or cands
        for c in cands:
            kw = C.mma_k_warps(c)
            assert kw > 1 and c.num_warps % kw == 0, c
            assert -(-k // c.block_k) >= c.split_k * kw, c
            assert c.block_n == 16 * (c.num_warps // kw) * C.mma_row_blocks(c), c
            tiles = -(-(-(-n // 16)) // (c.num_warps // kw * C.mma_row_blocks(c)))
            assert tiles <= ops.mma_locks(n, "cpu").numel(), c
        assert set(C._mma_k_warp_configs(n, k, 132)) <= set(C.mma_configs(n, k, 132, 128, 1))
        assert not set(cands) & set(C.mma_configs(n, k, 132, 128, 32))  # M > 16: none
    meta = ops.mma_meta(TileConfig(2, 32, 512, 2, 8, 8193), 1, 4096, 128, True, True, False)
    assert (meta["KW"], meta["RB"], meta["NW"], meta["SPLIT"], meta["NV"]) == (4, 1, 8, True, 4)
    assert ops.mma_meta(TileConfig(2, 32, 1024, 1, 8, 8193 | 32), 1, 4096, 128, True, True, False)["NV"] == 8
    assert ops.mma_meta(TileConfig(2, 64, 256, 1, 4, 1), 1, 4096, 128, True, True, False)["KW"] == 1
    assert ops.mma_meta(TileConfig(2, 32, 256, 1, 8, 8193 | 2048), 1, 4096, 128, True, True, False, False)["KW"] == 4
    for bad, a8 in ((TileConfig(2, 32, 256, 1, 2, 8193), False), (TileConfig(2, 16, 256, 1, 4, 12288), None)):
        with pytest.raises(ValueError, match="K warps per row group"):
            ops.mma_meta(bad, 1, 4096, 128, True, True, False, a8)


def test_mma_early_first_tile_flag():
    """Flag 512 of the mma GEMV (each warp requests its first K tile before the A8W4 quantization
    prologue): ``ops.mma_meta`` passes ``EARLY`` for A16W4 and A8W4, not without the flag, and refuses it
    by name together with the register double buffer (flag 32), which also preloads a tile."""
    pytest.importorskip("triton")
    from nybble.kernels.triton import ops
    from nybble.kernels.triton.configs import TileConfig
    assert ops.mma_meta(TileConfig(2, 16, 512, 1, 8, 12288 | 2048 | 512), 1, 4096, 128, True, True, False,
                        False)["EARLY"]
    assert ops.mma_meta(TileConfig(2, 16, 512, 1, 4, 8192 | 512), 1, 4096, 128, True, True, False)["EARLY"]
    assert not ops.mma_meta(TileConfig(2, 16, 512, 1, 4, 8192 | 1), 1, 4096, 128, True, True, False)["EARLY"]
    for a8 in (None, False, True):
        with pytest.raises(ValueError, match="flag 512 .* exclude each other"):
            ops.mma_meta(TileConfig(2, 16, 512, 1, 4, 8192 | 512 | 32), 1, 4096, 128, True, True, False, a8)
