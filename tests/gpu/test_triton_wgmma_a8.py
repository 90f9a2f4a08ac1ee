"""The A8W4 Gluon int8 wgmma GEMM (``wgmma_a8.py``, config ``block_m == WGMMA_A8``) against the
reference kernel on random data: every candidate config and every shipped one, symmetric and
asymmetric activations, bf16 / fp16, zero point none / int (with a bias), every group size (K steps of
the group and of half of it), M not a multiple of the token tile, N not a multiple of the 128-row tile,
K an odd number of steps (the kernel pads to an even count) and not a multiple of 256 (the blocked
layout's padding).  Also: the same bits as the Triton int8 GEMM of ``gemm_a8.py`` would be too strict
(its FMA order may differ), so both are held to the reference; a CUDA graph replays it exactly; per-
channel weights and non-Hopper GPUs fall back.  Hopper only (sm_90) except the fallback test."""
from __future__ import annotations

import pytest
import torch

from gpu_util import assert_close_to_reference, random_plain, reference_out

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

MS = (1, 17, 64, 200, 257, 1024)
#: (group, K): 288 / 32 = 9 and 640 / 128 = 5 K steps (odd), 576 / 64 = 9; 768 = 3 groups of 256
GROUP_K = ((32, 288), (64, 576), (128, 640), (128, 1024), (256, 768))
N = 200


def _hopper() -> bool:
    return torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0)


def _configs(group: int, k: int):
    """The candidates for the group, the shipped configs that are valid for it, and 64-token tiles
    with K steps of half a group."""
    from nybble.kernels.triton.configs import WGMMA_A8, ConfigStore, TileConfig, group_tile_ok, wgmma_a8_configs
    store = ConfigStore("NVIDIA H100 80GB HBM3", cache=None)
    shipped = [c for c in store.shipped.values() if c.block_m == WGMMA_A8]
    bk = min(group, 128)
    extra = [TileConfig(WGMMA_A8, 128, max(32, group // 2), 64, 4, 4), TileConfig(WGMMA_A8, 128, bk, 64, 4, 3),
             # the unpacked weights through shared memory, with and without turns
             TileConfig(WGMMA_A8, 128, bk, 128, 4, 4 | 32), TileConfig(WGMMA_A8, 128, bk, 64, 4, 3 | 16 | 32),
             TileConfig(WGMMA_A8, 128, bk, 64, 4, 4 | 32 | 64)]  # the paired loop (PIPE) with 64 tokens
    return [c for c in dict.fromkeys(wgmma_a8_configs(group) + shipped + extra) if group_tile_ok(c, group, k, "a8w4")]


@pytest.mark.skipif(not _hopper(), reason="wgmma needs sm_90")
@pytest.mark.parametrize("group,k", GROUP_K)
@pytest.mark.parametrize("domain", ["none", "int"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("act", ["a8_sym", "a8_asym"])
def test_wgmma_a8_matches_reference(act, dtype, domain, group, k):
    from nybble.kernels.base import LinearSpec
    from nybble.kernels.triton import ops
    from nybble.kernels.triton.kernel import TritonKernel
    asym = act == "a8_asym"
    plain = random_plain(N, k, group, domain, dtype)
    p = TritonKernel(LinearSpec.for_weight(plain, act)).prepack(plain)
    zp = p.get("zero_point")
    cfgs = _configs(group, k)
    assert len(cfgs) >= 3, "too few int8 wgmma configs for this group"
    for m in MS:
        x = torch.randn(m, k, device="cuda").to(dtype)
        bias = torch.randn(N, device="cuda").to(dtype) if domain == "int" else None
        ref = reference_out(x, plain, act, bias)
        for cfg in cfgs:
            assert ops.wgmma_a8_ok(x, p["qweight"], group, cfg)
            y = ops.launch_a8w4(x, p["qweight"], p["scale"], zp, p["wsum"], group, asym, bias, cfg)
            assert_close_to_reference(y, ref, f"int8 wgmma {act} {dtype} {domain} g{group} K={k} M={m} {cfg}")
            # the same kernel on codes in K order (permuted by the launcher) gives the same bits
            qa, sa, za = ops.launch_quantize_act(x, asym)
            y2 = ops.launch_a8w4_mm(qa, sa, za, p["qweight"], p["scale"], zp, p["wsum"], group, asym, bias, dtype,
                                    cfg)
            assert torch.equal(y, y2), f"{act} M={m} {cfg}: PERM8 quantization and permuted copy differ"


@pytest.mark.skipif(not _hopper(), reason="wgmma needs sm_90")
def test_wgmma_a8_extreme_codes_are_exact():
    """Activations that quantize to -127..127 / 0..255 at both ends and weights with codes 0 and 15
    against zero points 0 and 15 (the largest |q - z| and group sums): the result equals the
    reference's within fp32 rounding of the output dtype, on a shape with several 128-row tiles."""
    from nybble.kernels.base import LinearSpec
    from nybble.kernels.triton import ops
    from nybble.kernels.triton.configs import WGMMA_A8, TileConfig
    from nybble.kernels.triton.kernel import TritonKernel
    from nybble.plain import PlainInt4Weight
    n, k, group = 384, 1024, 256
    g = torch.Generator().manual_seed(7)
    codes = torch.where(torch.rand(n, k, generator=g) < 0.5, 0, 15).to(torch.uint8).cuda()
    zero = torch.where(torch.rand(n, k // group, generator=g) < 0.5, 0, 15).to(torch.int8).cuda()
    scale = (torch.rand(n, k // group, generator=g) * 0.01 + 0.001).to(torch.bfloat16).cuda()
    plain = PlainInt4Weight.from_codes(codes, scale, zero, group)
    x = (torch.where(torch.rand(300, k, generator=g) < 0.5, -1.0, 1.0) * 3).to(torch.bfloat16).cuda()
    x[:, 0] = 5.0  # the row maximum: codes +-127 (sym) and 0 / 255 (asym)
    for act in ("a8_sym", "a8_asym"):
        p = TritonKernel(LinearSpec.for_weight(plain, act)).prepack(plain)
        ref = reference_out(x, plain, act, None)
        for cfg in (TileConfig(WGMMA_A8, 128, 128, 128, 4, 4), TileConfig(WGMMA_A8, 128, 128, 64, 4, 6),
                    TileConfig(WGMMA_A8, 128, 128, 128, 4, 4 | 16 | 32)):
            y = ops.launch_a8w4(x, p["qweight"], p["scale"], p["zero_point"], p["wsum"], group,
                                act == "a8_asym", None, cfg)
            assert_close_to_reference(y, ref, f"int8 wgmma extreme codes {act} {cfg}")


@pytest.mark.skipif(not _hopper(), reason="wgmma needs sm_90")
def test_wgmma_a8_in_a_cuda_graph():
    """Captured in a CUDA graph (quantization + GEMM), replays give the eager call's bits."""
    from nybble.kernels.base import LinearSpec
    from nybble.kernels.triton import ops
    from nybble.kernels.triton.configs import WGMMA_A8, TileConfig
    from nybble.kernels.triton.kernel import TritonKernel
    n, k, group = 1000, 4096, 128
    plain = random_plain(n, k, group, "int", torch.bfloat16)
    p = TritonKernel(LinearSpec.for_weight(plain, "a8_asym")).prepack(plain)
    x = torch.randn(600, k, device="cuda").to(torch.bfloat16)
    bias = torch.randn(n, device="cuda").to(torch.bfloat16)
    cfg = TileConfig(WGMMA_A8, 128, 128, 128, 4, 4)
    run = lambda: ops.launch_a8w4(x, p["qweight"], p["scale"], p["zero_point"], p["wsum"], group, True, bias, cfg)
    first = run()
    assert_close_to_reference(first, reference_out(x, plain, "a8_asym", bias), "int8 wgmma eager")
    gr = torch.cuda.CUDAGraph()
    with torch.cuda.graph(gr):
        y = run()
    for _ in range(3):
        gr.replay()
        torch.cuda.synchronize()
        assert torch.equal(y, first), "int8 wgmma in a CUDA graph"


def test_wgmma_a8_config_falls_back_when_it_cannot_run():
    """An int8 wgmma config on per-channel weights, or on any GPU but sm_90, runs another kernel:
    results close to the reference."""
    from nybble.kernels.base import LinearSpec
    from nybble.kernels.triton import ops
    from nybble.kernels.triton.configs import WGMMA_A8, TileConfig
    from nybble.kernels.triton.kernel import TritonKernel
    for group, k in ((-1, 296), (128, 512)):
        plain = random_plain(N, k, group, "int", torch.bfloat16)
        p = TritonKernel(LinearSpec.for_weight(plain, "a8_sym")).prepack(plain)
        x = torch.randn(300, k, device="cuda").to(torch.bfloat16)
        cfg = TileConfig(WGMMA_A8, 128, 128, 128, 4, 4)
        if group == -1 or not _hopper():
            assert not ops.wgmma_a8_ok(x, p["qweight"], group, cfg)
        y = ops.launch_a8w4(x, p["qweight"], p["scale"], p.get("zero_point"), p["wsum"], group, False, None, cfg)
        assert_close_to_reference(y, reference_out(x, plain, "a8_sym", None), f"int8 wgmma fallback g{group}")
