"""Triton kernels against the reference kernel on random data: every act mode x dtype x domain x
group x M, with N and K that are not multiples of the tile sizes; prepack/unpack exactness; the
fused activation quantization bit for bit."""
from __future__ import annotations

import pytest
import torch

from nybble import primitives as P
from nybble.kernels.base import LinearSpec

from gpu_util import assert_close_to_reference, random_plain, reference_out

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

MS = (1, 2, 3, 8, 16, 17, 64, 257, 1024)
#: (group, K): K a multiple of the group but never of every tile size; per-channel K = 8 * odd
GROUP_K = ((32, 288), (64, 576), (128, 640), (256, 768), (-1, 296))
N = 200  # not a multiple of 64/128


def _kernel(plain, act):
    from nybble.kernels.triton.kernel import TritonKernel
    spec = LinearSpec.for_weight(plain, act)
    ok, why = TritonKernel.can_implement(spec)
    assert ok, why
    return TritonKernel(spec)


@pytest.mark.parametrize("m", MS)
@pytest.mark.parametrize("group,k", GROUP_K)
@pytest.mark.parametrize("domain", ["none", "int"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("act", ["a16", "a8_sym", "a8_asym"])
def test_matches_reference(act, dtype, domain, group, k, m):
    plain = random_plain(N, k, group, domain, dtype)
    kern = _kernel(plain, act)
    packed = kern.prepack(plain)
    x = torch.randn(m, k, device="cuda").to(dtype)
    bias = torch.randn(N, device="cuda").to(dtype) if domain == "int" else None
    y = kern.apply(x, packed, bias)
    assert_close_to_reference(y, reference_out(x, plain, act, bias), f"{act} {dtype} {domain} g{group} M={m}")


@pytest.mark.parametrize("act", ["a16", "a8_asym"])
def test_odd_n_3d_input_and_strided_x(act):
    plain = random_plain(77, 256, 128, "int", torch.bfloat16)
    kern = _kernel(plain, act)
    packed = kern.prepack(plain)
    x = torch.randn(2, 5, 512, device="cuda").to(torch.bfloat16)[..., ::2]  # non-contiguous
    y = kern.apply(x, packed, None)
    ref = reference_out(x.reshape(-1, 256).contiguous(), plain, act, None).reshape(2, 5, 77)
    assert_close_to_reference(y, ref, f"{act} odd N")


@pytest.mark.parametrize("act", ["a16", "a8_sym"])
def test_every_split_and_tile_config(act):
    """Force a spread of tile configs (split-K included) on one shape: all must agree."""
    from nybble.kernels.triton import ops
    from nybble.kernels.triton.configs import candidates
    plain = random_plain(320, 1024, 128, "int", torch.bfloat16)
    kern = _kernel(plain, act)
    p = kern.prepack(plain)
    for m in (1, 16, 100):
        x = torch.randn(m, 1024, device="cuda").to(torch.bfloat16)
        ref = reference_out(x, plain, act, None)
        op = "a16w4" if act == "a16" else "a8w4"
        cands = candidates(op, 320, 1024, 128, m)
        for cfg in (cands if m == 1 else cands[::3]):
            if act == "a16":
                y = ops.launch_a16w4(x, p["qweight"], p["scale"], p["zero_point"], 128, None, cfg)
            else:
                qa, sa, za = ops.launch_quantize_act(x, False)
                y = ops.launch_a8w4_mm(qa, sa, za, p["qweight"], p["scale"], p["zero_point"], p["wsum"], 128,
                                       False, None, torch.bfloat16, cfg)
            assert_close_to_reference(y, ref, f"{act} M={m} {cfg}")


@pytest.mark.parametrize("m", [1, 3, 8])
@pytest.mark.parametrize("group,k", GROUP_K)
@pytest.mark.parametrize("domain", ["none", "int"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("act", ["a8_sym", "a8_asym"])
def test_small_m_dp4a_gemv_matches_reference(act, dtype, domain, group, k, m):
    """The A8W4 dp4a GEMV (``block_m < 0`` configs) for every mode, with and without split-K,
    register prefetch and evict-first loads, through both entry points (the quantization kernel
    writing the dp4a layout, and plain codes re-laid out afterwards), which must agree exactly."""
    from nybble.kernels.triton import ops
    from nybble.kernels.triton.configs import TileConfig
    plain = random_plain(N, k, group, domain, dtype)
    kern = _kernel(plain, act)
    p = kern.prepack(plain)
    x = torch.randn(m, k, device="cuda").to(dtype)
    bias = torch.randn(N, device="cuda").to(dtype) if domain == "int" else None
    ref = reference_out(x, plain, act, bias)
    bk = 128 if group == -1 else min(128, group)
    mb = 1 if m == 1 else (4 if m <= 4 else 8)
    asym = act == "a8_asym"
    zp = p.get("zero_point")
    for cfg in (TileConfig(-mb, 32, bk, 1, 4, 0), TileConfig(-mb, 64, bk, 2, 4, 1), TileConfig(-8, 128, bk, 3, 8, 3)):
        y = ops.launch_a8w4(x, p["qweight"], p["scale"], zp, p["wsum"], group, asym, bias, cfg)
        qa, sa, za = ops.launch_quantize_act(x, asym)
        y2 = ops.launch_a8w4_mm(qa, sa, za, p["qweight"], p["scale"], zp, p["wsum"], group, asym, bias, dtype, cfg)
        assert torch.equal(y, y2), f"{act} M={m} {cfg}: the two A8 entry points differ"
        assert_close_to_reference(y, ref, f"dp4a {act} {dtype} {domain} g{group} M={m} {cfg}")


def test_dp4a_activation_layout():
    """The quantizer's ``deint`` output is :func:`ops.dp4a_layout` of its plain codes: int32 (M, 2,
    K/8) with plane p of word j holding the codes of ``x[8 j + 2 b + p]`` in byte b."""
    from nybble.kernels.triton import ops
    x = torch.randn(3, 1032, device="cuda").to(torch.bfloat16)
    for asym in (False, True):
        q, s, z = ops.launch_quantize_act(x, asym)
        qd, sd, zd = ops.launch_quantize_act(x, asym, deint=True)
        assert qd.dtype == torch.int32 and qd.shape == (3, 2, 129)
        assert torch.equal(qd, ops.dp4a_layout(q)) and torch.equal(s, sd) and torch.equal(z, zd)
        byte = qd.contiguous().view(torch.int8).view(3, 2, 129, 4)
        assert torch.equal(byte[:, 1, 5, 2], q[:, 8 * 5 + 2 * 2 + 1])


@pytest.mark.parametrize("act", ["a16", "a8_asym"])
@pytest.mark.parametrize("domain", ["none", "int"])
@pytest.mark.parametrize("group", [32, -1])
def test_prepack_unpack_exact(domain, group, act):
    plain = random_plain(136, 512, group, domain, torch.float16)
    kern = _kernel(plain, act)
    back = kern.unpack(kern.prepack(plain))
    assert torch.equal(back.qdata, plain.qdata) and torch.equal(back.scale, plain.scale)
    assert (back.zero_point is None) == (plain.zero_point is None)
    if domain == "int":
        assert torch.equal(back.zero_point, plain.zero_point)


@pytest.mark.parametrize("asym", [False, True])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_quantize_activations_bit_exact(asym, dtype):
    """Against ``primitives.quantize_activations`` computed on the CPU (IEEE divisions there) and on
    the GPU."""
    from nybble.kernels.triton import ops
    x = (torch.randn(37, 4104, device="cuda") * 3).to(dtype)
    x[3] = 0                                             # all-zero row: scale 1
    x[4] = torch.arange(4104, device="cuda") % 255 - 127.5   # exact .5 ties (rint -> even)
    x[5] = x[5].abs()                                    # all positive (asymmetric: lo clamps to 0)
    q, s, z = torch.ops.nybble.triton_quantize_act(x, asym)
    q = q.to(torch.int32) + (128 if asym else 0)
    for where, (rq, rs, rz) in (("cpu", P.quantize_activations(x.cpu(), asym)),
                                ("cuda", P.quantize_activations(x, asym))):
        assert torch.equal(s.cpu(), rs.cpu()), f"scales differ from the {where} reference"
        assert torch.equal(z.cpu(), rz.cpu()), f"zero points differ from the {where} reference"
        assert torch.equal(q.cpu(), rq.cpu()), f"codes differ from the {where} reference"
    q2, _, _ = ops.launch_quantize_act(x, asym)
    assert torch.equal(q2.to(torch.int32) + (128 if asym else 0), q)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("group,k", [(32, 288), (128, 640), (-1, 296)])
def test_large_m_dequant_then_cublas_path(dtype, group, k):
    """The ``block_m == 0`` configs (dequantize L2-sized row slices, then cuBLAS), several slices."""
    from nybble.kernels.triton import ops
    from nybble.kernels.triton.configs import TileConfig
    plain = random_plain(700, k, group, "int", dtype)
    kern = _kernel(plain, "a16")
    p = kern.prepack(plain)
    w = ops.dequantize_weight(p["qweight"], p["scale"], p["zero_point"], group, dtype, k)
    assert torch.equal(w, plain.dequantize(dtype)), "dequant kernel differs from the reference dequantization"
    x = torch.randn(300, k, device="cuda").to(dtype)
    bias = torch.randn(700, device="cuda").to(dtype)
    for rows in (128, 256, 1024):
        y = ops.launch_a16w4(x, p["qweight"], p["scale"], p["zero_point"], group, bias, TileConfig(0, rows, 0, 1, 4, 1))
        assert_close_to_reference(y, reference_out(x, plain, "a16", bias), f"dequant+cuBLAS rows={rows}")


@pytest.mark.parametrize("m", [1, 64, 300])
def test_plain_triton_dequant_variant(m):
    """``NYBBLE_TRITON_DEQUANT=plain`` (no inline PTX) gives the same results."""
    from nybble.kernels.triton import ops
    old = ops.set_use_asm(False)
    try:
        for dtype in (torch.bfloat16, torch.float16):
            plain = random_plain(200, 640, 64, "int", dtype)
            kern = _kernel(plain, "a16")
            x = torch.randn(m, 640, device="cuda").to(dtype)
            y = kern.apply(x, kern.prepack(plain), None)
            assert_close_to_reference(y, reference_out(x, plain, "a16", None), f"plain dequant {dtype} M={m}")
    finally:
        ops.set_use_asm(old)


def test_registry_picks_triton_on_cuda():
    from nybble.kernels import registry
    plain = random_plain(64, 256, 128, "int", torch.bfloat16)
    spec = LinearSpec.for_weight(plain, "a16")
    assert registry.choose(spec).name == "triton"
    spec32 = LinearSpec.for_weight(random_plain(64, 256, 128, "int", torch.float32), "a16")
    verdicts = {v.name: v for v in registry.explain(spec32)}
    assert not verdicts["triton"].ok and "float32" in verdicts["triton"].reason
    assert registry.choose(spec32).name == "reference"


@pytest.mark.parametrize("m", [1, 2, 3, 8, 9, 16, 17, 40, 64])
@pytest.mark.parametrize("group,k", GROUP_K)
@pytest.mark.parametrize("domain", ["none", "int"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_mma_gemv_matches_reference(dtype, domain, group, k, m):
    """The A16W4 mma.sync GEMV (``block_m == 2`` configs, M <= 64) for every mode: 1, 2 or 4 row-blocks
    per warp, K tiles of 128 / 256 / 512, 8 to 64 rows of x per program, split-K summed in-kernel
    (the layer's counters) or by the finish kernel, evict-first loads, zero point / scale per weight
    (16-bit, exact) or per group (fp32, ``FOLD``, groups >= 128), the register double buffer of the
    next K tile (flag 32); N = 200 (a partial row-block).
    The counters are zero afterwards."""
    from nybble.kernels.triton import ops
    from nybble.kernels.triton.configs import TileConfig
    if torch.cuda.get_device_capability() < (9, 0):
        pytest.skip("the mma.sync GEMV needs sm_90 (packed bf16x2 sub/mul)")
    plain = random_plain(N, k, group, domain, dtype)
    kern = _kernel(plain, "a16")
    p = kern.prepack(plain)
    x = torch.randn(m, k, device="cuda").to(dtype)
    bias = torch.randn(N, device="cuda").to(dtype) if domain == "int" else None
    ref = reference_out(x, plain, "a16", bias)
    zp = p.get("zero_point")
    for cfg in (TileConfig(2, 64, 128, 1, 4, 0), TileConfig(2, 128, 256, 2, 4, 1), TileConfig(2, 256, 256, 3, 8, 0),
                TileConfig(2, 128, 512, 4, 8, 3), TileConfig(2, 64, 512, 2, 4, 0), TileConfig(2, 128, 128, 5, 4, 2),
                TileConfig(2, 256, 128, 2, 4, 1 | 4), TileConfig(2, 64, 128, 3, 4, 1 | 8), TileConfig(2, 64, 256, 1, 4, 8),
                TileConfig(2, 64, 256, 2, 4, 17), TileConfig(2, 128, 512, 1, 4, 16), TileConfig(2, 128, 128, 3, 4, 16 | 4),
                TileConfig(2, 64, 128, 2, 8, 16 | 8 | 2), TileConfig(2, 64, 128, 2, 4, 1 | 32),
                TileConfig(2, 128, 256, 1, 4, 16 | 32), TileConfig(2, 64, 128, 3, 8, 32 | 8 | 2)):
        y = ops.launch_a16w4(x, p["qweight"], p["scale"], zp, group, bias, cfg, p["locks"])
        assert_close_to_reference(y, ref, f"mma {dtype} {domain} g{group} M={m} {cfg}")
    assert not p["locks"].any(), "split-K counters not back at zero"


@pytest.mark.parametrize("m", [1, 3, 16])
@pytest.mark.parametrize("group,k", GROUP_K + ((128, 4096),))
@pytest.mark.parametrize("domain", ["none", "int"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_mma_gemv_k_warps_match_reference(dtype, domain, group, k, m):
    """The mma GEMV with 2 / 4 / 8 warps per row group splitting the program's K slice (flag bits
    12-13, summed through shared memory): 16-64 rows per program of 4-16 warps, 1, 2 or 4 row-blocks
    per warp, K tiles of 128-1024 (K = 288-768: warps past the slice's end), in-program only or with
    split-K across programs (in-kernel and finish-kernel sums), per-weight and per-group (``FOLD``)
    scales, with the register double buffer (flag 32); at M = 1 (bf16) also the A8W4 modes with the
    fused quantization (global / private / shared-memory code rows, whole-block sweep, register double
    buffer) and with the quantization kernel + PDL GEMV (flag 64); each warp's first K tile requested
    before the prologue (flag 512: the same bits as without it); against the reference, the same bits
    on a second call, counters back at zero; the flags are refused by name when they do not divide the
    warps, and flags 512 and 32 together."""
    from nybble.kernels.triton import ops
    from nybble.kernels.triton.configs import TileConfig
    if torch.cuda.get_device_capability() < (9, 0):
        pytest.skip("the mma.sync GEMV needs sm_90")
    plain = random_plain(N, k, group, domain, dtype)
    p = _kernel(plain, "a16").prepack(plain)
    x = torch.randn(m, k, device="cuda").to(dtype)
    bias = torch.randn(N, device="cuda").to(dtype) if domain == "int" else None
    ref = reference_out(x, plain, "a16", bias)
    zp = p.get("zero_point")
    for cfg in (TileConfig(2, 16, 256, 1, 4, 1 | 8192), TileConfig(2, 32, 512, 2, 8, 1 | 8192),
                TileConfig(2, 32, 256, 1, 4, 4096 | 16), TileConfig(2, 64, 256, 3, 8, 4096 | 2),
                TileConfig(2, 16, 512, 1, 8, 12288), TileConfig(2, 64, 256, 2, 4, 8192 | 1),
                TileConfig(2, 32, 128, 1, 4, 4096 | 16 | 1), TileConfig(2, 32, 256, 2, 8, 8192 | 1 | 16),
                TileConfig(2, 64, 128, 4, 8, 4096 | 4), TileConfig(2, 16, 512, 2, 4, 8192 | 32 | 1),
                TileConfig(2, 32, 1024, 1, 8, 8192 | 16), TileConfig(2, 64, 256, 1, 16, 8192 | 32 | 16),
                TileConfig(2, 16, 512, 1, 4, 8192 | 512 | 1), TileConfig(2, 64, 256, 3, 4, 512 | 16),
                TileConfig(2, 32, 256, 2, 8, 4096 | 512 | 2)):
        y = ops.launch_a16w4(x, p["qweight"], p["scale"], zp, group, bias, cfg, p["locks"])
        assert_close_to_reference(y, ref, f"mma K warps {dtype} {domain} g{group} M={m} {cfg}")
        again = ops.launch_a16w4(x, p["qweight"], p["scale"], zp, group, bias, cfg, p["locks"])
        assert torch.equal(again, y), f"{cfg}: a second call gave other bits"
        if cfg.num_stages & 512:  # the first tile requested early: the same sums in the same order
            late = TileConfig(*cfg.to_json()[:5], cfg.num_stages & ~512)
            assert torch.equal(ops.launch_a16w4(x, p["qweight"], p["scale"], zp, group, bias, late, p["locks"]), y), \
                f"{cfg}: other bits than without flag 512"
    assert not p["locks"].any(), "split-K counters not back at zero"
    if m == 1 and dtype == torch.bfloat16 and group in (128, -1):  # the A8W4 modes (fused quantization)
        for act in ("a8_sym", "a8_asym"):
            pa = _kernel(plain, act).prepack(plain)
            xa = x * 3
            ref8 = reference_out(xa, plain, act, bias)
            for cfg in (TileConfig(2, 32, 256, 1, 8, 8192 | 1), TileConfig(2, 16, 256, 2, 8, 12288 | 2048 | 1),
                        TileConfig(2, 32, 512, 1, 4, 4096 | 256), TileConfig(2, 16, 256, 1, 8, 12288 | 2048 | 128),
                        TileConfig(2, 16, 128, 3, 4, 8192 | 2048 | 32 | 2), TileConfig(2, 16, 256, 1, 4, 8192 | 64),
                        TileConfig(2, 16, 512, 1, 8, 12288 | 2048 | 512 | 1),
                        TileConfig(2, 16, 256, 2, 4, 8192 | 2048 | 512 | 128), TileConfig(2, 32, 256, 1, 8, 8192 | 512),
                        TileConfig(2, 64, 256, 2, 4, 512 | 2048 | 1)):
                y8 = ops.launch_a8w4(xa, pa["qweight"], pa["scale"], pa.get("zero_point"), pa["wsum"], group,
                                     act == "a8_asym", bias, cfg, pa["locks"])
                assert_close_to_reference(y8, ref8, f"mma K warps {act} g{group} {cfg}")
                again = ops.launch_a8w4(xa, pa["qweight"], pa["scale"], pa.get("zero_point"), pa["wsum"], group,
                                        act == "a8_asym", bias, cfg, pa["locks"])
                assert torch.equal(again, y8), f"{act} {cfg}: a second call gave other bits"
                if cfg.num_stages & 512:
                    late = TileConfig(*cfg.to_json()[:5], cfg.num_stages & ~512)
                    assert torch.equal(ops.launch_a8w4(xa, pa["qweight"], pa["scale"], pa.get("zero_point"),
                                                       pa["wsum"], group, act == "a8_asym", bias, late, pa["locks"]),
                                       y8), f"{act} {cfg}: other bits than without flag 512"
            assert not pa["locks"].any()
    for bad in (TileConfig(2, 16, 256, 1, 4, 12288), TileConfig(2, 32, 256, 1, 2, 8192)):
        with pytest.raises(ValueError, match="K warps per row group"):
            ops.launch_a16w4(x, p["qweight"], p["scale"], zp, group, bias, bad, p["locks"])
    with pytest.raises(ValueError, match="flag 512 .* exclude each other"):
        ops.launch_a16w4(x, p["qweight"], p["scale"], zp, group, bias, TileConfig(2, 16, 256, 1, 4, 8192 | 512 | 32),
                         p["locks"])


@pytest.mark.parametrize("group,k", [(128, 4096), (-1, 16904), (-1, 30000)])
@pytest.mark.parametrize("act", ["a8_sym", "a8_asym"])
def test_mma_gemv_a8w4_shared_code_row_same_bits(act, group, k):
    """The shared-memory code row (flag 2048) in the A8W4 modes of the mma GEMV -- with the one-value
    and the whole-block sweep of x (flag 128), in-kernel and finish-kernel split-K, 4 / 8 warps, K
    tiles of 128-512 --: the same bits as the global code rows (shared, and private with flag 256,
    which 2048 replaces), close to the reference, the same bits on a second call; with flag 64 (the
    quantization kernel + PDL GEMV) the flag does nothing; a code row too large for the static shared
    memory (K = 30000 in one K slice) is refused by name."""
    from nybble.kernels.triton import ops
    from nybble.kernels.triton.configs import MMA_STATIC_SMEM_MAX, TileConfig, mma_code_row_bytes
    if torch.cuda.get_device_capability() < (9, 0):
        pytest.skip("the mma.sync GEMV needs sm_90")
    plain = random_plain(N, k, group, "int", torch.bfloat16)
    p = _kernel(plain, act).prepack(plain)
    asym = act == "a8_asym"
    x = torch.randn(1, k, device="cuda").to(torch.bfloat16) * 3
    bias = torch.randn(N, device="cuda").to(torch.bfloat16)
    ref = reference_out(x, plain, act, bias)

    def run(cfg):
        return ops.launch_a8w4(x, p["qweight"], p["scale"], p["zero_point"], p["wsum"], group, asym, bias, cfg,
                               p["locks"])

    ran = refused = 0
    for base in ((2, 128, 256, 8, 8, 1), (2, 64, 256, 2, 4, 1), (2, 128, 256, 1, 8, 64), (2, 64, 128, 3, 4, 129),
                 (2, 64, 256, 1, 4, 1), (2, 128, 512, 2, 4, 2), (2, 128, 128, 5, 8, 128 | 2)):
        want = run(TileConfig(*base))
        assert torch.equal(want, run(TileConfig(*base[:5], base[5] | 256))), f"private rows {base}"
        cfg = TileConfig(*base[:5], base[5] | 2048)
        if not base[5] & 64 and mma_code_row_bytes(cfg, k) > MMA_STATIC_SMEM_MAX:
            with pytest.raises(ValueError, match="static shared memory allowed"):
                run(cfg)
            refused += 1
            continue
        y = run(cfg)
        assert torch.equal(y, want), f"shared code row {cfg}"
        assert torch.equal(y, run(cfg)), f"second call {cfg}"
        assert_close_to_reference(y, ref, f"mma a8 shared codes {act} g{group} {cfg}")
        ran += 1
    assert ran >= 6 and refused == (1 if k > 24064 else 0)
    assert not p["locks"].any()
    default = ops.a8_m1_default(N, k, x.device)
    assert default.num_stages & 2048 or mma_code_row_bytes(TileConfig(*default.to_json()[:5], 2049), k) > MMA_STATIC_SMEM_MAX
    assert_close_to_reference(run(default), ref, f"mma a8 default {default}")


def test_mma_gemv_split_k_repeated_calls_agree():
    """The in-kernel split-K reduction gives the same bits on every call (no stale counters)."""
    from nybble.kernels.triton import ops
    from nybble.kernels.triton.configs import TileConfig
    if torch.cuda.get_device_capability() < (9, 0):
        pytest.skip("the mma.sync GEMV needs sm_90")
    plain = random_plain(1000, 4096, 128, "int", torch.bfloat16)
    kern = _kernel(plain, "a16")
    p = kern.prepack(plain)
    x = torch.randn(3, 4096, device="cuda").to(torch.bfloat16)
    cfg = TileConfig(2, 64, 256, 8, 4, 1)
    first = ops.launch_a16w4(x, p["qweight"], p["scale"], p["zero_point"], 128, None, cfg, p["locks"])
    for _ in range(50):
        y = ops.launch_a16w4(x, p["qweight"], p["scale"], p["zero_point"], 128, None, cfg, p["locks"])
        assert torch.equal(y, first)
    assert_close_to_reference(first, reference_out(x, plain, "a16", None), "mma split 8")
    assert not p["locks"].any()


def test_mma_gemv_strided_and_offset_x():
    """x rows with a stride that is not a multiple of 8 and an unaligned base are copied first."""
    from nybble.kernels.triton import ops
    from nybble.kernels.triton.configs import TileConfig
    if torch.cuda.get_device_capability() < (9, 0):
        pytest.skip("the mma.sync GEMV needs sm_90")
    plain = random_plain(300, 512, 64, "int", torch.bfloat16)
    kern = _kernel(plain, "a16")
    p = kern.prepack(plain)
    big = torch.randn(5, 515, device="cuda").to(torch.bfloat16)
    for x in (big[:, 1:513], big[:, :512]):
        y = ops.launch_a16w4(x, p["qweight"], p["scale"], p["zero_point"], 64, None, TileConfig(2, 128, 256, 2, 4, 0),
                             p["locks"])
        assert_close_to_reference(y, reference_out(x.contiguous(), plain, "a16", None), "mma strided x")


@pytest.mark.parametrize("group,k", [(128, 640), (256, 768), (-1, 296), (128, 4096), (-1, 16904)])
@pytest.mark.parametrize("domain", ["none", "int"])
@pytest.mark.parametrize("act", ["a8_sym", "a8_asym"])
def test_mma_gemv_a8w4_fused_quantization(act, domain, group, k):
    """A8W4 at M = 1 on the mma GEMV with the activation quantization fused in (``block_m == 2``
    a8w4 configs; bf16, groups >= 128 / per-channel), or (flag 64) done by its own one-program
    kernel before the PDL-launched GEMV (K = 16904: two quantization steps of 16384), with and
    without the register double buffer (flag 32), with the in-kernel quantization swept in whole
    blocks (flag 128), with private code rows per program (flag 256; the same bits as the shared
    row, and ignored with flag 64): against the reference, the same bits on every
    call, split-K in-kernel and via the finish kernel; other calls fall back to the dp4a path."""
    from nybble.kernels.triton import ops
    from nybble.kernels.triton.configs import TileConfig
    if torch.cuda.get_device_capability() < (9, 0):
        pytest.skip("the mma.sync GEMV needs sm_90")
    plain = random_plain(N, k, group, domain, torch.bfloat16)
    kern = _kernel(plain, act)
    p = kern.prepack(plain)
    asym = act == "a8_asym"
    x = torch.randn(1, k, device="cuda").to(torch.bfloat16) * 3
    bias = torch.randn(N, device="cuda").to(torch.bfloat16) if domain == "int" else None
    ref = reference_out(x, plain, act, bias)
    zp = p.get("zero_point")
    for cfg in (TileConfig(2, 64, 256, 1, 4, 1), TileConfig(2, 64, 128, 3, 4, 1), TileConfig(2, 128, 512, 2, 4, 3),
                TileConfig(2, 128, 256, 2, 8, 1), TileConfig(2, 64, 128, 2, 4, 97), TileConfig(2, 128, 256, 1, 8, 64),
                TileConfig(2, 64, 256, 3, 4, 96 | 2), TileConfig(2, 128, 128, 2, 4, 33),
                TileConfig(2, 128, 256, 3, 8, 129), TileConfig(2, 64, 128, 2, 4, 160 | 2),
                TileConfig(2, 128, 256, 3, 8, 1 | 256), TileConfig(2, 64, 128, 2, 4, 128 | 256 | 2),
                TileConfig(2, 128, 512, 2, 4, 32 | 256), TileConfig(2, 128, 256, 1, 8, 64 | 256)):
        y = ops.launch_a8w4(x, p["qweight"], p["scale"], zp, p["wsum"], group, asym, bias, cfg, p["locks"])
        assert_close_to_reference(y, ref, f"mma a8 {act} {domain} g{group} {cfg}")
        assert torch.equal(y, ops.launch_a8w4(x, p["qweight"], p["scale"], zp, p["wsum"], group, asym, bias, cfg,
                                              p["locks"]))
        if cfg.num_stages & 256:  # private code rows: the same arithmetic as the shared row
            shared = TileConfig(*cfg.to_json()[:5], cfg.num_stages & ~256)
            assert torch.equal(y, ops.launch_a8w4(x, p["qweight"], p["scale"], zp, p["wsum"], group, asym, bias,
                                                  shared, p["locks"])), f"private vs shared code rows {cfg}"
    assert not p["locks"].any()
    x2 = torch.randn(3, k, device="cuda").to(torch.bfloat16)  # M > 1: the same config falls back
    y2 = ops.launch_a8w4(x2, p["qweight"], p["scale"], zp, p["wsum"], group, asym, bias, TileConfig(2, 64, 256, 2, 4, 1),
                         p["locks"])
    assert_close_to_reference(y2, reference_out(x2, plain, act, bias), "mma a8 fallback M=3")


@pytest.mark.parametrize("act", ["a8_sym", "a8_asym"])
def test_mma_a8w4_quantize_kernel_then_pdl_gemv_chain(act):
    """The ``A8PRE`` mode (flag 64: quantization kernel, then the GEMV launched with programmatic
    dependent launch, which loads its first weights before it waits): a chain of 4 calls where each
    output is the next input, eagerly and replayed from one CUDA graph, against the reference step by
    step and bit-identical between the two."""
    from nybble.kernels.triton import ops
    from nybble.kernels.triton.configs import TileConfig
    if torch.cuda.get_device_capability() < (9, 0):
        pytest.skip("the mma.sync GEMV needs sm_90")
    plain = random_plain(1024, 1024, 128, "int", torch.bfloat16)
    p = _kernel(plain, act).prepack(plain)
    asym = act == "a8_asym"
    cfg = TileConfig(2, 64, 128, 2, 4, 97)

    def chain(h):
        outs = []
        for _ in range(4):
            h = ops.launch_a8w4(h, p["qweight"], p["scale"], p["zero_point"], p["wsum"], 128, asym, None, cfg,
                                p["locks"]) * 0.25
            outs.append(h)
        return outs

    x = torch.randn(1, 1024, device="cuda").to(torch.bfloat16)
    eager = chain(x)
    h = x
    for y in eager:
        assert_close_to_reference(y, reference_out(h, plain, act, None) * 0.25, f"a8 pre chain {act}")
        h = y
    xs = x.clone()
    chain(xs)  # warm-up outside capture
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        outs = chain(xs)
    for _ in range(3):
        g.replay()
        torch.cuda.synchronize()
        for a, b in zip(outs, eager):
            assert torch.equal(a, b)
    assert not p["locks"].any()


@pytest.mark.parametrize("group,k", GROUP_K)
@pytest.mark.parametrize("domain", ["none", "int"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_cuda_core_gemv_matches_reference(dtype, domain, group, k):
    """The CUDA-core M = 1 GEMV (``block_m == 1``, the default M = 1 path on GPUs without the sm_90
    mma GEMV, so the H100's own choices never reach it) on every dtype, domain and group, per-channel
    included, with and without split-K, bias on the int domain."""
    from nybble.kernels.triton import ops
    from nybble.kernels.triton.configs import TileConfig, gemv_configs
    plain = random_plain(N, k, group, domain, dtype)
    p = _kernel(plain, "a16").prepack(plain)
    x = torch.randn(1, k, device="cuda").to(dtype)
    bias = torch.randn(N, device="cuda").to(dtype) if domain == "int" else None
    ref = reference_out(x, plain, "a16", bias)
    cfgs = gemv_configs(N, k, ops.sm_count(x.device), group)
    assert cfgs and all(c.block_m == 1 for c in cfgs)
    bk = cfgs[-1].block_k  # split-K too, even where the tuner's list has none (few K tiles)
    cfgs += [TileConfig(1, 32, bk, 2, 4, 3), TileConfig(1, 64, bk, 3, 4, 3)]
    for cfg in cfgs:
        y = ops.launch_a16w4(x, p["qweight"], p["scale"], p.get("zero_point"), plain.group_size, bias, cfg, p["locks"])
        assert_close_to_reference(y, ref, f"gemv {dtype} {domain} g{group} {cfg}")
    assert not p["locks"].any()


def _fresh_tuning_store(tmp_path, monkeypatch, cands_fn: str, pick):
    """A config store with no table and its disk cache in ``tmp_path``, used for every device, with
    first-call tuning on; ``ops.<cands_fn>`` (the candidate list the tuner gets) narrowed to
    ``pick(full list)``.  Returns ``(store, timed)``: ``timed`` collects each narrowed list handed out."""
    from nybble.kernels.triton import configs as C
    from nybble.kernels.triton import ops
    store = C.ConfigStore(torch.cuda.get_device_name(0), table_dir=tmp_path / "no_table", cache=tmp_path)
    monkeypatch.setattr(ops, "store_for", lambda device: store)
    monkeypatch.setenv("NYBBLE_TRITON_AUTOTUNE", "1")
    full, timed = getattr(ops, cands_fn), []

    def narrowed(*a, **kw):
        cands = pick(full(*a, **kw))
        timed.append(cands)
        return cands

    monkeypatch.setattr(ops, cands_fn, narrowed)
    return store, timed


def test_autotune_writes_the_disk_cache_and_a_fresh_store_reads_it(tmp_path, monkeypatch):
    """The first-call autotuning path for real (the rest of the GPU suite runs with it off): a key
    with no entry is timed over (the first 4 of) its candidates, the winner is written to the disk
    cache and a new store (a new process) reads it back; a key guessed where no tuning could run is
    tuned by the next call that can tune."""
    import json
    from nybble.kernels.triton import configs as C
    from nybble.kernels.triton import ops
    store, timed = _fresh_tuning_store(tmp_path, monkeypatch, "candidates", lambda cands: cands[:4])
    plain = random_plain(N, 640, 128, "int", torch.bfloat16)
    kern = _kernel(plain, "a16")
    p = kern.prepack(plain)
    x = torch.randn(3, 640, device="cuda").to(torch.bfloat16)
    y = kern.apply(x, p, None)
    assert_close_to_reference(y, reference_out(x, plain, "a16", None), "tuned a16")
    key = C.make_key("a16w4", N, 640, 128, 3)
    assert len(timed) == 1 and store.source(key) == "cache" and store.get(key) in timed[0]
    saved = json.loads(store.cache_path.read_text())["configs"]
    assert saved == {key: store.get(key).to_json()}
    fresh = C.ConfigStore(torch.cuda.get_device_name(0), table_dir=tmp_path / "no_table", cache=tmp_path)
    assert fresh.get(key) == store.get(key) and fresh.source(key) == "cache"
    kern.apply(x, p, None)
    assert len(timed) == 1  # tuned once
    # a key first met where no tuning can run (CUDA-graph capture, torch.compile) is guessed there and
    # tuned by the next call that can tune (through the launcher: a layer's eager launch plan is only
    # built by an eager call, which tunes first)
    x2 = torch.randn(40, 640, device="cuda").to(torch.bfloat16)
    key2 = C.make_key("a16w4", N, 640, 128, 40)
    can_tune = ops._can_tune
    monkeypatch.setattr(ops, "_can_tune", lambda: False)
    args = (p["qweight"], p["scale"], p["zero_point"], 128, None, None, p["locks"])
    out = ops.launch_a16w4(x2, *args)
    assert_close_to_reference(out, reference_out(x2, plain, "a16", None), "guessed")
    assert store.source(key2) == "heuristic" and len(timed) == 1
    assert key2 not in json.loads(store.cache_path.read_text())["configs"]
    monkeypatch.setattr(ops, "_can_tune", can_tune)
    y2 = ops.launch_a16w4(x2, *args)
    assert_close_to_reference(y2, reference_out(x2, plain, "a16", None), "tuned after the guess")
    assert len(timed) == 2 and store.source(key2) == "cache"
    assert key2 in json.loads(store.cache_path.read_text())["configs"]


def test_a8_m1_autotune_times_every_m1_kind_and_caches_the_winner(tmp_path, monkeypatch):
    """A8W4 at M = 1 on an untabled shape (sm_90, bf16, group 128: the fused mma GEMV's domain): the
    first call that may tune times the M = 1 kinds (here 2 A8-mode mma GEMVs, the PDL two-launch form
    and 2 dp4a GEMVs of ``configs.a8_m1_configs``), writes the winner to the disk cache, gives the
    reference's result, and later calls reuse it."""
    import json
    from nybble.kernels.triton import configs as C
    from nybble.kernels.triton import ops
    plain = random_plain(N, 1024, 128, "int", torch.bfloat16)
    kern = _kernel(plain, "a8_asym")
    p = kern.prepack(plain)
    x = torch.randn(1, 1024, device="cuda").to(torch.bfloat16)
    if not ops.mma_a8_ok(x, p["qweight"], 128):
        pytest.skip("the fused A8 mma GEMV needs sm_90")

    def some_of_each(cands):
        mma = [c for c in cands if c.block_m == 2 and not c.num_stages & 64]
        return mma[:1] + mma[-1:] + [c for c in cands if c.num_stages & 64][:1] + [c for c in cands if c.block_m < 0][:2]

    store, timed = _fresh_tuning_store(tmp_path, monkeypatch, "a8_m1_configs", some_of_each)
    y = kern.apply(x, p, None)
    assert_close_to_reference(y, reference_out(x, plain, "a8_asym", None), "tuned a8 m=1")
    key = C.make_key("a8w4", N, 1024, 128, 1)
    assert len(timed) == 1 and len(timed[0]) == 5 and store.source(key) == "cache" and store.get(key) in timed[0]
    assert json.loads(store.cache_path.read_text())["configs"] == {key: store.get(key).to_json()}
    for c in timed[0]:  # every candidate kind is right, not only the winner
        out = ops.launch_a8w4(x, p["qweight"], p["scale"], p["zero_point"], p["wsum"], 128, True, None, c, p["locks"])
        assert_close_to_reference(out, reference_out(x, plain, "a8_asym", None), f"a8 m=1 candidate {c}")
    kern.apply(x, p, None)
    assert len(timed) == 1  # tuned once


@pytest.mark.parametrize("m", [100, 300])
@pytest.mark.parametrize("group,k", [(32, 288), (128, 640), (128, 2048), (-1, 296)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("act", ["a16", "a8_sym", "a8_asym"])
def test_untuned_large_m_picks_match_reference(act, dtype, group, k, m):
    """The heuristic's large-M picks on a shape no table has (tuning off, as under CUDA-graph capture or
    torch.compile): on sm_90 the Gluon wgmma GEMMs from M = 128 on (A16W4 with 2 K slices at M = 128;
    A8W4 with 64-token programs at M = 128 for groups of 128), else / where they cannot run (fp16 x for
    A8 quantizes first, per-channel, group 32, K = 288 too short for 2 slices) the fallbacks."""
    from nybble.kernels.triton import configs as C
    from nybble.kernels.triton import ops
    plain = random_plain(N + 8, k, group, "int", dtype)
    kern = _kernel(plain, act)
    packed = kern.prepack(plain)
    x = torch.randn(m, k, device="cuda").to(dtype)
    op = "a16w4" if act == "a16" else "a8w4"
    key = C.make_key(op, N + 8, k, group, m)
    assert ops.store_for(x.device).shipped.get(key) is None
    y = kern.apply(x, packed, None)
    assert_close_to_reference(y, reference_out(x, plain, act, None), f"untuned {act} {dtype} g{group} K={k} M={m}")
    if ops._gluon_sm90(x.device) and group == 128:
        kind = C.WGMMA if act == "a16" else C.WGMMA_A8
        assert ops.store_for(x.device).get(key).block_m == kind
