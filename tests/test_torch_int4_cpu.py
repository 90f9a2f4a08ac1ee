"""The torch_int4_cpu baseline wrapper against the reference kernel, and its refusals."""
import pytest
import torch

from nybble.kernels import registry
from nybble.kernels.base import LinearSpec
from nybble.plain import PlainInt4Weight


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("group", [32, 64, 128, 256, -1])
@pytest.mark.parametrize("m", [1, 3, 17])
def test_matches_reference(dtype, group, m):
    k = 768
    plain = PlainInt4Weight.from_float(torch.randn(48, k), group, "none", dtype)
    spec = LinearSpec.for_weight(plain, "a16")
    fast = registry.choose(spec, force="torch_int4_cpu")(spec)
    ref = registry.choose(spec, force="reference")(spec)
    packed = fast.prepack(plain)
    x = torch.randn(m, k).to(dtype)
    bias = torch.randn(48).to(dtype)
    y, r = fast.apply(x, packed, bias).float(), ref.apply(x, ref.prepack(plain), bias).float()
    eps = torch.finfo(dtype).eps
    assert (y - r).abs().max() <= 4 * eps * r.abs().max() + 1e-4 * k ** 0.5
    back = fast.unpack(packed)
    assert torch.equal(back.qdata, plain.qdata) and torch.equal(back.scale, plain.scale)


@pytest.mark.parametrize("kw,reason", [
    (dict(domain="int"), "zero_point='none'"),
    (dict(act_mode="a8_sym"), "A16W4 only"),
    (dict(n=40), "multiple of 16"),
    (dict(group_size=-1, k=200), "no 32/64/128/256 grouping"),
])
def test_refusals(kw, reason):
    base = dict(n=64, k=256, group_size=128, domain="none", act_mode="a16", dtype=torch.bfloat16, device_type="cpu")
    base.update(kw)
    verdict = next(v for v in registry.explain(LinearSpec(**base)) if v.name == "torch_int4_cpu")
    assert not verdict.ok and reason in verdict.reason
