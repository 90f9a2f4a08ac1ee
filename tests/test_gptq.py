"""GPTQ rounding: exactness against a straightforward implementation, error vs RTN, act-order with
static groups, dead columns, non-PD Hessians, and the GPTQ recipe through ``nybble.quantize``."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import nybble
from nybble import primitives as P
from nybble.algorithms.gptq import HessianAccumulator, gptq_quantize
from nybble.algorithms.recipes import relative_output_error


def correlated_inputs(m: int, k: int, seed: int = 0, outliers: bool = True) -> torch.Tensor:
    """(m, k) fp32 rows with correlated channels and a few large channels (like real activations)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(m, k // 4, generator=g)
    mix = torch.randn(k // 4, k, generator=g) / (k // 4) ** 0.5
    x = base @ mix + 0.3 * torch.randn(m, k, generator=g)
    if outliers:
        x[:, torch.randperm(k, generator=g)[:k // 16]] *= 8
    return x


def hessian_of(x: torch.Tensor) -> torch.Tensor:
    acc = HessianAccumulator(x.shape[1])
    for chunk in x.split(97):
        acc.add(chunk)
    return acc.hessian()


def straightforward_gptq(w, h, group_size, domain, damp=0.01, act_order=False):
    """The GPTQ update written plainly in float64: for each column in order, round it with its
    group's parameters and subtract err * Hinv[i, j] / Hinv[i, i] from every later column j, where
    Hinv is the inverse of the (damped) Hessian restricted to the columns not yet quantized."""
    w = w.double().clone()
    h = h.double().clone()
    n, k = w.shape
    g = k if group_size == -1 else group_size
    dead = torch.diagonal(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    order = torch.argsort(torch.diagonal(h), descending=True) if act_order else torch.arange(k)
    h = h + damp * torch.diagonal(h).mean() * torch.eye(k, dtype=torch.float64)
    params = {}
    if act_order:  # static groups: from the original weights
        for j in range(k // g):
            params[j] = P.choose_qparams(w[:, j * g:(j + 1) * g], -1, domain, torch.float32)
    codes = torch.zeros(n, k, dtype=torch.uint8)
    remaining = list(order.tolist())
    while remaining:
        col = remaining[0]
        grp = col // g
        if not act_order and col % g == 0:
            params[grp] = P.choose_qparams(w[:, col:col + g], -1, domain, torch.float32)
        s, z = params[grp]
        s = s[:, 0].double()
        zf = 8.0 if z is None else z[:, 0].double()
        q = torch.clamp(torch.round(w[:, col] / s) + zf, 0, 15)
        codes[:, col] = q.to(torch.uint8)
        deq = (q - zf) * s
        hinv = torch.linalg.inv(h[remaining][:, remaining])
        err = (w[:, col] - deq) / hinv[0, 0]
        w[:, remaining] -= err[:, None] * hinv[0][None, :]
        remaining = remaining[1:]
    scale = torch.cat([params[j][0] for j in range(k // g)], dim=1)
    zero = None if domain == "none" else torch.cat([params[j][1] for j in range(k // g)], dim=1)
    return codes, scale, zero


@pytest.mark.parametrize("group_size,domain,act_order,block_size",
                         [(32, "int", False, 16), (32, "none", True, 16), (-1, "int", True, 8),
                          (64, "int", False, 48), (32, "int", True, 128)])
def test_matches_straightforward_implementation(group_size, domain, act_order, block_size):
    torch.manual_seed(1)
    w = torch.randn(12, 64, dtype=torch.float64)
    x = correlated_inputs(256, 64, seed=2).double()
    h = x.t() @ x / x.shape[0]
    h[5, :] = 0  # a dead input column
    h[:, 5] = 0
    res = gptq_quantize(w, h, group_size, domain, act_order=act_order, block_size=block_size,
                        scale_dtype=torch.float32, compute_dtype=torch.float64)
    codes, scale, zero = straightforward_gptq(w, h, group_size, domain, act_order=act_order)
    torch.testing.assert_close(res.scale, scale, rtol=0, atol=0)
    if zero is not None:
        assert torch.equal(res.zero_point, zero)
    # identical rounding decisions (float64 on both sides; at most a tie flips)
    mismatch = (res.codes != codes).float().mean().item()
    assert mismatch <= 0.002, mismatch
    assert torch.all(res.codes[:, 5] == (8 if domain == "none" else res.codes[:, 5]))


@pytest.mark.parametrize("group_size", [32, 128, -1])
@pytest.mark.parametrize("domain", ["int", "none"])
def test_output_error_below_rtn(group_size, domain):
    torch.manual_seed(0)
    w = torch.randn(96, 256) * 0.05
    x = correlated_inputs(2048, 256)
    h = hessian_of(x)
    res = gptq_quantize(w, h, group_size, domain)
    q = P.dequantize(res.codes, res.scale, res.zero_point, group_size)
    rtn = P.dequantize(*P.quantize_rtn(w, group_size, domain), group_size)
    err_gptq = ((x @ (w - q).t()) ** 2).mean()
    err_rtn = ((x @ (w - rtn).t()) ** 2).mean()
    assert err_gptq < 0.8 * err_rtn, (float(err_gptq), float(err_rtn))
    # the Hessian-based relative error agrees with the direct one
    direct = float(err_gptq / (x @ w.t()).pow(2).mean())
    assert relative_output_error(w, q, h) == pytest.approx(direct, rel=1e-3)


def test_act_order_static_groups_contiguous_and_better():
    """A layer where a few input channels dominate: act-order quantizes them first (while the
    other columns can still absorb their error) and keeps each group's stored parameters tied to its
    contiguous column range (dequantization with the plain layout, no g_idx, reproduces the weights
    GPTQ assumed)."""
    torch.manual_seed(3)
    k, n, g = 256, 64, 32
    w = torch.randn(n, k) * 0.05
    x = correlated_inputs(4096, k, seed=4, outliers=False)
    big = torch.arange(k) % g == g - 1  # the last column of every group dominates the output
    x[:, big] *= 20
    h = hessian_of(x)
    res_ao = gptq_quantize(w, h, g, "int", act_order=True)
    res = gptq_quantize(w, h, g, "int", act_order=False)

    def err(r):
        q = P.dequantize(r.codes, r.scale, r.zero_point, g)
        return float(((x @ (w - q).t()) ** 2).mean())

    assert err(res_ao) < 0.9 * err(res)
    # static groups: the stored parameters are those of the ORIGINAL weights' contiguous groups
    s0, z0 = P.choose_qparams(w, g, "int")
    assert torch.equal(res_ao.scale, s0) and torch.equal(res_ao.zero_point, z0)
    # the plain weight (contiguous groups) dequantizes to codes within each group's own range
    plain = nybble.PlainInt4Weight.from_codes(res_ao.codes, res_ao.scale, res_ao.zero_point, g)
    plain.validate()
    assert plain.num_groups == k // g


def test_dead_columns_are_zero_and_finite():
    torch.manual_seed(0)
    w = torch.randn(16, 64)
    x = correlated_inputs(512, 64)
    x[:, 10:14] = 0
    res = gptq_quantize(w, hessian_of(x), 32, "int")
    q = P.dequantize(res.codes, res.scale, res.zero_point, 32)
    assert torch.isfinite(q).all()
    assert torch.all(q[:, 10:14].abs() <= res.scale.float().repeat_interleave(32, 1)[:, 10:14] * 0.5 + 1e-6)


def test_non_pd_hessian_retries_with_more_damping():
    torch.manual_seed(0)
    w = torch.randn(8, 64)
    v = torch.randn(64, 1)
    h = v @ v.t() - 0.5 * torch.eye(64)  # indefinite: 1% damping is not enough
    h.diagonal().abs_()
    res = gptq_quantize(w, h, 32, "int", damp=0.01)
    assert res.damp > 0.01 * float(h.diagonal().mean())
    assert torch.isfinite(res.scale).all()


def test_hopeless_hessian_raises_clear_error():
    w = torch.randn(8, 64)
    # unit diagonal but huge off-diagonal coupling: eigenvalue 1 - 1e6 stays negative for every
    # dampening tried (at most 1e4 x the mean diagonal)
    h = torch.eye(64) + 1e6 * (torch.ones(64, 64) - torch.eye(64))
    with pytest.raises(ValueError, match="layer0.*not positive definite"):
        gptq_quantize(w, h, 32, "int", name="layer0")
    with pytest.raises(ValueError, match="zero or not finite"):
        gptq_quantize(w, torch.zeros(64, 64), 32, "int", name="layer0")


class TwoLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(64, 128)
        self.b = nn.Linear(128, 32)

    def forward(self, input_ids=None, x=None, attention_mask=None):
        return self.b(torch.relu(self.a(x)))


def test_gptq_recipe_via_quantize_without_blocks():
    """A model without repeated blocks takes the per-layer pass; layer errors beat RTN."""
    torch.manual_seed(0)
    model = TwoLayer()
    batches = [{"x": correlated_inputs(256, 64, seed=i)} for i in range(4)]
    cfg = nybble.Int4WeightOnlyConfig(group_size=32, algorithm="gptq", algorithm_options={"layer_errors": True})
    s = nybble.quantize(model, cfg, calibration=batches, show_progress=False)
    assert sorted(s.quantized) == ["a", "b"]
    errs = s.details["layer_errors"]
    for name, e in errs.items():
        assert e["gptq"] < e["rtn"], (name, e)
    assert isinstance(model.a, nybble.Int4Linear)


def test_unknown_option_is_a_clear_error():
    model = TwoLayer()
    cfg = nybble.Int4WeightOnlyConfig(group_size=32, algorithm="gptq", algorithm_options={"dampening": 0.1})
    with pytest.raises(ValueError, match="unknown algorithm_options.*dampening"):
        nybble.quantize(model, cfg, calibration=[{"x": torch.randn(4, 64)}], show_progress=False)


def test_asymmetric_gptq_reduces_error_against_float_inputs():
    """With float inputs X and perturbed (quantized-model) inputs Xq, GPTQ of the asymmetric target
    W' lowers ||X W^T - Xq Q^T|| compared with plain GPTQ of W on Xq's Hessian."""
    from nybble.algorithms.gptq import CrossAccumulator, asymmetric_target
    x = correlated_inputs(2048, 128, seed=3)
    g = torch.Generator().manual_seed(4)
    xq = x + 0.2 * x.std() * torch.randn(x.shape, generator=g) @ (torch.eye(128) + 0.1 * torch.randn(128, 128, generator=g))
    w = torch.randn(64, 128, generator=g) * 0.05
    h = hessian_of(xq)
    acc = CrossAccumulator(128)
    for a, b in zip(xq.split(300), x.split(300)):
        acc.add(a, b)
    torch.testing.assert_close(acc.cross(), xq.t() @ x / x.shape[0], rtol=1e-4, atol=1e-5)

    def err(res):
        q = P.dequantize(res.codes, res.scale, res.zero_point, 32, torch.float32)
        return float((x @ w.t() - xq @ q.t()).pow(2).sum())

    target = asymmetric_target(w, h, acc.cross(), damp=0.01)
    plain = gptq_quantize(w, h, 32, "int", act_order=True, scale_dtype=torch.float32)
    asym = gptq_quantize(target, h, 32, "int", act_order=True, scale_dtype=torch.float32)
    assert err(asym) < 0.8 * err(plain), (err(asym), err(plain))


def test_asymmetric_target_limits():
    """W' = W when the inputs agree (Xq = X), and W' -> W as the ridge dampening grows."""
    from nybble.algorithms.gptq import asymmetric_target
    x = correlated_inputs(512, 64, seed=5)
    w = torch.randn(16, 64)
    h = x.t() @ x / 512
    torch.testing.assert_close(asymmetric_target(w, h, h, damp=0.01), w, rtol=1e-4, atol=1e-4)
    c = (x + 0.3 * torch.randn_like(x)).t() @ x / 512  # some other cross moment
    far = asymmetric_target(w, h, c, damp=0.01)
    near = asymmetric_target(w, h, c, damp=1e4)
    assert float((near - w).norm()) < 0.01 * float((far - w).norm())
    with pytest.raises(ValueError, match="do not match"):
        asymmetric_target(w, h[:32, :32], c)


@pytest.mark.parametrize("group_size,domain", [(32, "int"), (64, "none")])
def test_refit_scales_lowers_output_error(group_size, domain):
    """Least-squares scales for GPTQ's codes never raise, and here lower, the calibration output error."""
    x = correlated_inputs(1024, 128, seed=7)
    w = torch.randn(32, 128, generator=torch.Generator().manual_seed(8)) * 0.05
    h = hessian_of(x)

    def err(res):
        q = P.dequantize(res.codes, res.scale, res.zero_point, group_size, torch.float32)
        return float((x @ (w - q).t()).pow(2).mean())

    kw = dict(act_order=True, scale_dtype=torch.float32, clip_search=True)
    plain = gptq_quantize(w, h, group_size, domain, **kw)
    refit = gptq_quantize(w, h, group_size, domain, refit_scales=1, **kw)
    assert torch.equal(plain.codes, refit.codes)
    assert (refit.scale > 0).all()
    assert err(refit) < 0.99 * err(plain), (err(refit), err(plain))


def test_refit_rounds_keep_improving():
    """More re-fit rounds (GPTQ passes with the re-fitted static scales) do not raise the error."""
    x = correlated_inputs(1024, 128, seed=9)
    w = torch.randn(32, 128, generator=torch.Generator().manual_seed(10)) * 0.05
    h = hessian_of(x)
    errs = []
    for rounds in (0, 1, 3):
        res = gptq_quantize(w, h, 32, "int", act_order=True, scale_dtype=torch.float32, clip_search=True,
                            refit_scales=rounds)
        q = P.dequantize(res.codes, res.scale, res.zero_point, 32, torch.float32)
        errs.append(float((x @ (w - q).t()).pow(2).mean()))
    assert errs[2] < errs[1] < errs[0], errs
    with pytest.raises(ValueError, match="act_order"):
        from nybble.algorithms.gptq import _gptq
        _gptq(w, h, 32, "int", fixed_params=(torch.ones(32, 4), None))
