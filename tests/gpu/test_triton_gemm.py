"""The large-M GEMM paths against the reference kernel on random data, with every config forced:
the A8W4 int8 GEMM of ``gemm_a8.py`` (PERM8 activation order, one or two groups per MMA batch), the
large and mid-M tiles of the swap-AB ``jit.a16w4_kernel`` (with its scale prefetch) and the
dequantize-then-cuBLAS path (several slices, a partial last slice); uneven
N, K not a multiple of the tiles, M not a multiple of the tile rows."""
from __future__ import annotations

import pytest
import torch

from nybble import primitives as P

from gpu_util import assert_close_to_reference, random_plain, reference_out

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

MS = (1, 17, 64, 257, 1024)
#: (group, K); 640 / 128 = 5 groups: odd, so the two-group batches fall back to one
GROUP_K = ((32, 288), (64, 576), (128, 640), (128, 1024), (256, 768))
N = 200


def _packed(plain, act):
    from nybble.kernels.base import LinearSpec
    from nybble.kernels.triton.kernel import TritonKernel
    kern = TritonKernel(LinearSpec.for_weight(plain, act))
    return kern, kern.prepack(plain)


def _shipped(op, pred):
    """The distinct configs of ``op`` (``a8w4`` / ``a16w4``) in the shipped H100 table that satisfy
    ``pred`` (every shipped large-M config is run here on small uneven shapes, whatever GPU the tests
    run on)."""
    from nybble.kernels.triton.configs import ConfigStore
    store = ConfigStore("NVIDIA H100 80GB HBM3", cache=None)
    return sorted({c for key, c in store.shipped.items() if key.startswith(op + "|") and pred(c)},
                  key=lambda c: c.to_json())


def _a8_configs():
    """The A8W4 GEMM candidates and shipped configs, two groups per MMA batch, a register cap."""
    from nybble.kernels.triton.configs import TileConfig, a8_gemm_configs, is_a8_gemm
    extra = [TileConfig(64, 64, 0, 2, 4, 4), TileConfig(128, 64, 0, 9, 4, 3), TileConfig(64, 32, 0, 1, 4, 4)]
    return list(dict.fromkeys(a8_gemm_configs() + _shipped("a8w4", is_a8_gemm) + extra))


@pytest.mark.parametrize("group,k", GROUP_K)
@pytest.mark.parametrize("domain", ["none", "int"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("act", ["a8_sym", "a8_asym"])
def test_a8_gemm_matches_reference(act, dtype, domain, group, k):
    from nybble.kernels.triton import ops
    from nybble.kernels.triton.configs import group_tile_ok
    asym = act == "a8_asym"
    plain = random_plain(N, k, group, domain, dtype)
    _, p = _packed(plain, act)
    zp = p.get("zero_point")
    for m in MS:
        x = torch.randn(m, k, device="cuda").to(dtype)
        bias = torch.randn(N, device="cuda").to(dtype) if domain == "int" else None
        ref = reference_out(x, plain, act, bias)
        for cfg in _a8_configs():
            if not group_tile_ok(cfg, group, k, "a8w4"):  # more shared memory than sm_90 has
                continue
            y = ops.launch_a8w4(x, p["qweight"], p["scale"], zp, p["wsum"], group, asym, bias, cfg)
            assert_close_to_reference(y, ref, f"a8 gemm {act} {dtype} {domain} g{group} M={m} {cfg}")
            # the same kernel on codes in K order (permuted by the launcher) gives the same bits
            qa, sa, za = ops.launch_quantize_act(x, asym)
            y2 = ops.launch_a8w4_mm(qa, sa, za, p["qweight"], p["scale"], zp, p["wsum"], group, asym, bias, dtype, cfg)
            assert torch.equal(y, y2), f"{act} M={m} {cfg}: PERM8 quantization and permuted copy differ"


def test_a8_gemm_per_channel_falls_back():
    """Per-channel weights cannot use the int8 GEMM: a forced GEMM config runs the older kernel."""
    from nybble.kernels.triton import ops
    from nybble.kernels.triton.configs import TileConfig
    plain = random_plain(N, 296, -1, "int", torch.bfloat16)
    _, p = _packed(plain, "a8_asym")
    x = torch.randn(300, 296, device="cuda").to(torch.bfloat16)
    y = ops.launch_a8w4(x, p["qweight"], p["scale"], p["zero_point"], p["wsum"], -1, True, None,
                        TileConfig(128, 128, 0, 1, 8, 3))
    assert_close_to_reference(y, reference_out(x, plain, "a8_asym", None), "a8 per-channel fallback")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("k", [1000, 4096, 14336, 20000])
@pytest.mark.parametrize("asym", [False, True])
def test_quantize_perm8_layout(asym, k, dtype):
    """The large-M GEMMs' activation codes (``jit.quantize_act_perm8_kernel``: whole words, the row read
    once up to K = 16384, two sweeps above): the K-order codes permuted by :func:`ops.perm8_layout`,
    bit for bit, and the reference's codes, scales and zero points; rows of zeros and of one value."""
    from nybble.kernels.triton import ops
    x = (torch.randn(37, k, device="cuda") * 3).to(dtype)
    x[3] = 0
    x[5] = 0.75
    x[7, : k // 3] = -2.5
    q, s, z = ops.launch_quantize_act(x, asym)
    qp, sp, zp = ops.launch_quantize_act(x, asym, perm8=True)
    assert torch.equal(qp, ops.perm8_layout(q)) and torch.equal(s, sp) and torch.equal(z, zp)
    qr, sr, zr = P.quantize_activations(x, asym)
    assert torch.equal(q.to(torch.int32), qr - 128 if asym else qr)
    assert torch.equal(sp, sr.float().reshape(sp.shape))
    if asym:
        assert torch.equal(zp, zr.to(torch.int32).reshape(zp.shape))


def _a16_configs():
    """The shipped A16W4 tile (block_m >= 16) and dequantize + cuBLAS (block_m == 0) configs, plus
    slices that leave a partial last slice, the serial slice variant and a K tile below the group."""
    from nybble.kernels.triton.configs import TileConfig as T
    shipped = _shipped("a16w4", lambda c: c.block_m >= 16 or c.block_m == 0)
    return list(dict.fromkeys(shipped + [T(128, 256, 64, 1, 8, 3), T(0, 96, 0, 1, 4, 1), T(0, 64, 0, 1, 4, 0),
                                         T(64, 64, 32, 2, 4, 6)]))


@pytest.mark.parametrize("group,k", GROUP_K + ((-1, 296),))
@pytest.mark.parametrize("domain", ["none", "int"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_a16_gemm_tiles_match_reference(dtype, domain, group, k):
    from nybble.kernels.triton import ops
    from nybble.kernels.triton.configs import TileConfig, group_tile_ok
    plain = random_plain(N, k, group, domain, dtype)
    _, p = _packed(plain, "a16")
    for m in MS:
        x = torch.randn(m, k, device="cuda").to(dtype)
        bias = torch.randn(N, device="cuda").to(dtype) if domain == "int" else None
        ref = reference_out(x, plain, "a16", bias)
        for cfg in _a16_configs():
            if not group_tile_ok(cfg, group, k, "a16w4"):
                cfg = TileConfig(cfg.block_m, cfg.block_n, 32, cfg.split_k, cfg.num_warps, cfg.num_stages)
            y = ops.launch_a16w4(x, p["qweight"], p["scale"], p.get("zero_point"), group, bias, cfg, p["locks"])
            assert_close_to_reference(y, ref, f"a16 gemm {dtype} {domain} g{group} M={m} {cfg}")
