"""The A16W4 Gluon wgmma GEMM (``wgmma.py``, config ``block_m == WGMMA``) against the reference kernel
on random data: one config of each kind and every shipped one, bf16 / fp16, zero point none / int
(with a bias), every group size and per-channel, M not a multiple of the token tile, N not a multiple of the
weight tile, K not a multiple of 256 (the blocked layout's padding).  Hopper only (sm_90): elsewhere
the launcher falls back, which the last test checks on any GPU."""
from __future__ import annotations

import pytest
import torch

from gpu_util import assert_close_to_reference, random_plain, reference_out

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

MS = (1, 17, 64, 200, 257, 1024)
#: (group, K): K = 288 / 576 / 640 / 768 are not multiples of 256; -1 is per-channel
GROUP_K = ((32, 288), (64, 576), (128, 640), (128, 1024), (256, 768), (-1, 296), (-1, 512))
N = 200


def _hopper() -> bool:
    return torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0)


def _configs(group: int, k: int):
    """The shipped wgmma configs plus one of each kind of candidate: one warpgroup, two warpgroups
    with 256 tokens, 256 weight rows (two row blocks per warp), K steps of 32 and 128, with and without
    a loader warp (warp specialization), dequantized into shared memory or straight into the A-operand
    registers (two or three register sets), split-K into 2-4 slices (where K has enough steps), one
    CTA barrier per loop iteration."""
    from nybble.kernels.triton.configs import WGMMA, ConfigStore, TileConfig, group_tile_ok
    store = ConfigStore("NVIDIA H100 80GB HBM3", cache=None)
    shipped = [c for c in store.shipped.values() if c.block_m == WGMMA]
    kinds = [TileConfig(WGMMA, 64, 64, 64, 4, 4), TileConfig(WGMMA, 128, 64, 256, 8, 4),
             TileConfig(WGMMA, 256, 64, 128, 8, 4), TileConfig(WGMMA, 128, 32, 256, 8, 6),
             TileConfig(WGMMA, 128, 128, 128, 8, 3),
             TileConfig(WGMMA, 128, 64, 256, 8, 3 | 32), TileConfig(WGMMA, 64, 32, 64, 4, 4 | 32),  # + loader warp
             # A operand in registers: 4 / 8 warps, 128 / 256 rows, K steps 32 / 64 / 128, with and without loader
             TileConfig(WGMMA, 64, 64, 64, 4, 4 | 64), TileConfig(WGMMA, 128, 64, 256, 8, 4 | 32 | 64),
             TileConfig(WGMMA, 256, 64, 128, 8, 4 | 32 | 64), TileConfig(WGMMA, 128, 32, 256, 8, 6 | 64),
             TileConfig(WGMMA, 128, 128, 128, 8, 3 | 32 | 64),
             # split-K (bits 7-8): 2 / 3 / 4 K slices, register A with and without loader, shared-memory A
             TileConfig(WGMMA, 128, 64, 256, 8, 4 | 32 | 64 | 128), TileConfig(WGMMA, 64, 32, 64, 4, 4 | 64 | 256),
             TileConfig(WGMMA, 128, 32, 128, 8, 4 | 256), TileConfig(WGMMA, 128, 32, 256, 8, 6 | 32 | 64 | 384),
             # three A-operand register sets (bit 9): with / without loader, 4 / 8 warps, split into 2 / 3
             TileConfig(WGMMA, 128, 64, 128, 8, 6 | 32 | 64 | 512), TileConfig(WGMMA, 64, 64, 64, 4, 5 | 64 | 512),
             TileConfig(WGMMA, 128, 32, 256, 8, 4 | 32 | 64 | 512 | 128),
             TileConfig(WGMMA, 128, 64, 128, 8, 5 | 32 | 64 | 512 | 256),
             # tail-only split (bit 10; these small layers have fewer tiles than one wave: all split)
             TileConfig(WGMMA, 128, 64, 256, 8, 4 | 32 | 64 | 128 | 1024),
             TileConfig(WGMMA, 128, 32, 128, 8, 6 | 32 | 64 | 512 | 256 | 1024),
             # one CTA barrier per loop iteration (bit 11): three / two A sets, loader warp or not, split
             TileConfig(WGMMA, 128, 64, 128, 8, 6 | 32 | 64 | 512 | 2048), TileConfig(WGMMA, 128, 32, 256, 8, 5 | 64 | 2048),
             TileConfig(WGMMA, 64, 64, 64, 4, 7 | 64 | 512 | 128 | 2048)]
    return [c for c in dict.fromkeys(kinds + shipped) if group_tile_ok(c, group, k, "a16w4")]


@pytest.mark.skipif(not _hopper(), reason="wgmma needs sm_90")
@pytest.mark.parametrize("group,k", GROUP_K)
@pytest.mark.parametrize("domain", ["none", "int"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_wgmma_matches_reference(dtype, domain, group, k):
    from nybble.kernels.base import LinearSpec
    from nybble.kernels.triton import ops
    from nybble.kernels.triton.kernel import TritonKernel
    plain = random_plain(N, k, group, domain, dtype)
    kern = TritonKernel(LinearSpec.for_weight(plain, "a16"))
    p = kern.prepack(plain)
    cfgs = _configs(group, k)
    assert cfgs, "no wgmma config for this group"
    for m in MS:
        x = torch.randn(m, k, device="cuda").to(dtype)
        bias = torch.randn(N, device="cuda").to(dtype) if domain == "int" else None
        ref = reference_out(x, plain, "a16", bias)
        for cfg in cfgs:
            assert ops.wgmma_ok(x, p["qweight"], group, cfg)
            y = ops.launch_a16w4(x, p["qweight"], p["scale"], p.get("zero_point"), group, bias, cfg, p["locks"])
            assert_close_to_reference(y, ref, f"wgmma {dtype} {domain} g{group} K={k} M={m} {cfg}")


def test_wgmma_config_falls_back_when_it_cannot_run():
    """A wgmma config on an x whose rows TMA cannot address (start not 16-byte aligned), or on a group
    smaller than the config's K step, or on a non-Hopper GPU, runs another kernel: same results."""
    from nybble.kernels.base import LinearSpec
    from nybble.kernels.triton import ops
    from nybble.kernels.triton.configs import WGMMA, TileConfig
    from nybble.kernels.triton.kernel import TritonKernel
    k, group = 256, 32
    plain = random_plain(N, k, group, "int", torch.bfloat16)
    p = TritonKernel(LinearSpec.for_weight(plain, "a16")).prepack(plain)
    base = torch.randn(300 * k + 1, device="cuda").to(torch.bfloat16)
    x = base[1:].view(300, k)  # data_ptr 2 bytes past an aligned address
    cfg = TileConfig(WGMMA, 128, 64, 128, 8, 4)  # K step 64 > group 32
    assert not ops.wgmma_ok(x, p["qweight"], group, cfg)
    y = ops.launch_a16w4(x, p["qweight"], p["scale"], p["zero_point"], group, None, cfg, p["locks"])
    assert_close_to_reference(y, reference_out(x, plain, "a16", None), "wgmma fallback")


def _split_case():
    """A 1000 x 4096 layer (group 128, int zero points, bias) and 600 tokens: 3 token tiles x 8 row tiles of
    the 128 x 256 configs.  Returns ``(run, ref, one)``: ``run(cfg)`` launches the layer with ``cfg``,
    ``ref`` the reference output, ``one`` the unsplit config's output."""
    from nybble.kernels.base import LinearSpec
    from nybble.kernels.triton import ops
    from nybble.kernels.triton.configs import WGMMA, TileConfig
    from nybble.kernels.triton.kernel import TritonKernel
    n, k, group = 1000, 4096, 128
    plain = random_plain(n, k, group, "int", torch.bfloat16)
    p = TritonKernel(LinearSpec.for_weight(plain, "a16")).prepack(plain)
    x = torch.randn(600, k, device="cuda").to(torch.bfloat16)
    bias = torch.randn(n, device="cuda").to(torch.bfloat16)
    ref = reference_out(x, plain, "a16", bias)
    run = lambda cfg: ops.launch_a16w4(x, p["qweight"], p["scale"], p["zero_point"], group, bias, cfg, p["locks"])
    return run, ref, run(TileConfig(WGMMA, 128, 64, 256, 8, 4 | 32 | 64))


def _assert_same_bits_every_time(run, cfg, first, label):
    """Three more calls and three replays of a CUDA graph of ``run(cfg)`` give ``first``'s bits (so the
    split tiles' counters are back at zero after every launch)."""
    for _ in range(3):
        assert torch.equal(run(cfg), first), f"{label} changed between calls"
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        y = run(cfg)
    for _ in range(3):
        g.replay()
        torch.cuda.synchronize()
        assert torch.equal(y, first), f"{label} in a CUDA graph"


@pytest.mark.skipif(not _hopper(), reason="wgmma needs sm_90")
def test_wgmma_split_k_is_deterministic_and_resets_its_counters():
    """A split-K config sums its slices' partials in slice order whichever program arrives last: the
    same bits on every call (its tile counters are back at zero after each), close to the unsplit
    config, also inside a CUDA graph replayed several times."""
    from nybble.kernels.triton.configs import WGMMA, TileConfig
    run, ref, one = _split_case()
    for extra in (128, 256, 384, 512 | 128, 512 | 256):
        cfg = TileConfig(WGMMA, 128, 64, 256, 8, 4 | 32 | 64 | extra)
        first = run(cfg)
        assert_close_to_reference(first, ref, f"split-K {cfg}")
        assert_close_to_reference(first, one, f"split-K {cfg} vs unsplit")
        _assert_same_bits_every_time(run, cfg, first, f"split-K {cfg}")


@pytest.mark.skipif(not _hopper(), reason="wgmma needs sm_90")
@pytest.mark.parametrize("wave", [5, 7, 24, 30])
def test_wgmma_tail_only_split_matches_and_is_deterministic(monkeypatch, wave):
    """A tail-only split config (``num_stages`` bit 10) on 24 output tiles with a wave of ``wave``
    programs (the SM count, shrunk): the first ``24 - 24 % wave`` tiles whole, the rest split into 2 or
    3 K slices (none when the wave divides 24, all when it exceeds 24).  Close to the reference and to
    the unsplit config, the same bits on every call and in CUDA-graph replays (so the tail's counters
    are back at zero after each)."""
    from nybble.kernels.triton import ops
    from nybble.kernels.triton.configs import WGMMA, TileConfig
    run, ref, one = _split_case()
    monkeypatch.setattr(ops, "wgmma_wave", lambda device: wave)
    for extra in (128 | 1024, 256 | 1024, 512 | 128 | 1024):
        cfg = TileConfig(WGMMA, 128, 64, 256, 8, 4 | 32 | 64 | extra)
        first = run(cfg)
        assert_close_to_reference(first, ref, f"tail split {cfg} wave {wave}")
        assert_close_to_reference(first, one, f"tail split {cfg} wave {wave} vs unsplit")
        if not extra & 512:  # the same loop as ``one``: its whole tiles are the same bits
            cols = (24 - 24 % wave) // 3 * 128  # row tiles whose 3 token tiles all run whole
            assert torch.equal(first[:, :cols], one[:, :cols]), "whole tiles equal the unsplit config"
        _assert_same_bits_every_time(run, cfg, first, f"tail split {cfg} wave {wave}")
