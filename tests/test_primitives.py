import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nybble import primitives as P
from nybble.plain import PlainInt4Weight

GROUPS = [32, 64, 128, 256, -1]
DOMAINS = ["none", "int"]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 9), k8=st.integers(1, 12), seed=st.integers(0, 2**31 - 1))
def test_pack_int32_round_trip(n, k8, seed):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 16, (n, k8 * 8), generator=g, dtype=torch.uint8)
    packed = P.pack_int32(codes)
    assert packed.dtype == torch.int32 and packed.shape == (n, k8)
    assert torch.equal(P.unpack_int32(packed), codes)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 9), k2=st.integers(1, 40), seed=st.integers(0, 2**31 - 1))
def test_pack_int8_round_trip(n, k2, seed):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 16, (n, k2 * 2), generator=g, dtype=torch.uint8)
    packed = P.pack_int8(codes)
    assert packed.dtype == torch.uint8 and packed.shape == (n, k2)
    assert torch.equal(P.unpack_int8(packed), codes)


def test_pack_int32_bit_layout_is_lsb_first():
    codes = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 15]], dtype=torch.uint8)
    word = int(P.pack_int32(codes)[0, 0]) & 0xFFFFFFFF
    assert word == 0xF7654321
    codes8 = torch.tensor([[3, 12]], dtype=torch.uint8)
    assert int(P.pack_int8(codes8)[0, 0]) == 0xC3


def test_pack_rejects_bad_k():
    with pytest.raises(ValueError, match="divisible by 8"):
        P.pack_int32(torch.zeros(2, 12, dtype=torch.uint8))


@pytest.mark.parametrize("group", GROUPS)
@pytest.mark.parametrize("domain", DOMAINS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_quantize_error_bounded_by_half_step(group, domain, dtype):
    w = torch.randn(24, 512).to(dtype)
    codes, scale, zero = P.quantize_rtn(w, group, domain)
    assert codes.dtype == torch.uint8 and int(codes.max()) <= 15
    assert scale.dtype == dtype and scale.shape == (24, 512 // P.group_len(group, 512))
    if domain == "int":
        assert zero.dtype == torch.int8 and 0 <= int(zero.min()) and int(zero.max()) <= 15
    else:
        assert zero is None
    deq = P.dequantize(codes, scale, zero, group)
    gl = P.group_len(group, 512)
    step = scale.float().repeat_interleave(gl, dim=1)
    err = (deq - w.float()).abs()
    # the scale is rounded to `dtype`, so the 15 steps of a group may fall short of its range by
    # up to 15 * (relative rounding of s) steps
    slack = 15 * torch.finfo(dtype).eps / 2
    if domain == "int":
        # every value lies inside the representable range: |err| <= s/2 (+ the scale's rounding)
        assert (err <= (0.5 + slack) * step * 1.001 + 1e-6).all()
    else:
        # symmetric: only the top positive value of a group may clip, by at most half a step more
        assert (err <= step * 1.02 + 1e-6).all()
        assert (err <= 0.5 * step * 1.02 + 1e-6).float().mean() > 0.99


@pytest.mark.parametrize("group", GROUPS)
def test_zero_is_exact_in_int_domain(group):
    w = torch.randn(8, 256)
    w[3] = w[3].abs() + 0.1  # a row of positive values: range widened to include 0
    w[:, ::7] = 0.0
    codes, scale, zero = P.quantize_rtn(w, group, "int")
    deq = P.dequantize(codes, scale, zero, group)
    assert torch.all(deq[:, ::7] == 0.0)


@pytest.mark.parametrize("domain", DOMAINS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_constant_and_zero_groups_stay_finite(domain, dtype):
    w = torch.zeros(4, 64, dtype=dtype)
    w[1] = 0.37
    w[2] = -5.0
    w[3, :32] = 1e-30 if dtype == torch.float32 else 0.0
    codes, scale, zero = P.quantize_rtn(w, 32, domain)
    assert torch.isfinite(scale).all() and (scale > 0).all()
    deq = P.dequantize(codes, scale, zero, 32)
    assert torch.isfinite(deq).all()
    assert torch.all(deq[0] == 0)
    assert torch.allclose(deq[1], w[1].float(), rtol=0.07)
    assert torch.allclose(deq[2], w[2].float(), rtol=0.07)


def test_group_size_errors_name_the_weight():
    with pytest.raises(ValueError, match="layer.x.*not divisible by group_size 128"):
        P.check_group_size(128, 200, "layer.x")
    with pytest.raises(ValueError, match="not allowed"):
        P.choose_qparams(torch.randn(4, 96), 48, "int")


def test_plain_weight_validate_and_narrow():
    w = torch.randn(40, 256)
    plain = PlainInt4Weight.from_float(w, 64, "int")
    plain.validate("x")
    part = plain.narrow_rows(8, 16)
    assert torch.equal(part.dequantize(), plain.dequantize()[8:24])
    bad = PlainInt4Weight(plain.qdata, plain.scale[:, :2], plain.zero_point, 64, plain.shape)
    with pytest.raises(ValueError, match="scale must be"):
        bad.validate("model.layer")


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), asym=st.booleans(), m=st.integers(1, 5))
def test_activation_quantization_round_trip(seed, asym, m):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, 64, generator=g) * 3
    q, s, z = P.quantize_activations(x, asym)
    lo, hi = (0, 255) if asym else (-127, 127)
    assert int(q.min()) >= lo and int(q.max()) <= hi
    back = (q - z[:, None]).float() * s[:, None]
    assert ((back - x).abs() <= 0.5 * s[:, None] * 1.0001 + 1e-7).all()
