"""The GPTQ refinements: bias correction (and the centred moments it rounds with), code refinement by
coordinate descent, and block-output tuning of the scales."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import nybble
from nybble import primitives as P
from nybble.algorithms.gptq import (HessianAccumulator, CrossAccumulator, bias_correction, centered_moments,
                                    gptq_quantize, refine_codes)


def correlated_inputs(m: int, k: int, seed: int = 0, mean: float = 0.5) -> torch.Tensor:
    """(m, k) fp32 rows with correlated channels, a few large channels and a non-zero mean."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k // 4, generator=g) @ (torch.randn(k // 4, k, generator=g) / (k // 4) ** 0.5)
    x = x + 0.3 * torch.randn(m, k, generator=g) + mean * torch.randn(k, generator=g)
    x[:, torch.randperm(k, generator=g)[:k // 16]] *= 6
    return x


def test_accumulator_means_and_centered_moments():
    x = correlated_inputs(700, 64, seed=1)
    xf = x + 0.1 * torch.randn_like(x)
    acc, cacc = HessianAccumulator(64), CrossAccumulator(64)
    for a, b in zip(x.split(97), xf.split(97)):
        acc.add(a)
        cacc.add(a, b)
    torch.testing.assert_close(acc.mean(), x.mean(0), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cacc.mean_float(), xf.mean(0), rtol=1e-5, atol=1e-5)
    hc, cc = centered_moments(acc.hessian(), acc.mean(), cacc.cross(), cacc.mean_float())
    xc, xfc = x - x.mean(0), xf - xf.mean(0)
    torch.testing.assert_close(hc, xc.t() @ xc / 700, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(cc, xc.t() @ xfc / 700, rtol=1e-4, atol=1e-4)


def test_bias_correction_zeroes_mean_output_error():
    """b' = b + W mu_f - Q mu_q makes the quantized layer's mean output on the calibration tokens
    equal the float layer's (asymmetric and symmetric)."""
    g = torch.Generator().manual_seed(2)
    xq = correlated_inputs(500, 64, seed=3)
    xf = xq + 0.2 * torch.randn(xq.shape, generator=g) + 0.1
    w, b = torch.randn(24, 64, generator=g) * 0.1, torch.randn(24, generator=g)
    q = P.dequantize(*P.quantize_rtn(w, 32, "int"), 32, torch.float32)
    before = (xf @ w.t() + b - xq @ q.t() - b).mean(0)
    assert float(before.abs().max()) > 1e-2
    b2 = bias_correction(w, q, b, xq.mean(0), xf.mean(0))
    after = (xf @ w.t() + b - xq @ q.t() - b2).mean(0)
    assert float(after.abs().max()) < 1e-4
    b3 = bias_correction(w, q, b, xq.mean(0))  # symmetric: the same inputs in both models
    assert float((xq @ w.t() + b - xq @ q.t() - b3).mean(0).abs().max()) < 1e-4


class _TwoLayer(nn.Module):
    def __init__(self, bias: bool):
        super().__init__()
        self.a, self.b = nn.Linear(64, 96, bias=bias), nn.Linear(96, 32, bias=bias)

    def forward(self, x=None, attention_mask=None):
        return self.b(torch.relu(self.a(x)))


@pytest.mark.parametrize("bias", [True, False])
def test_recipe_bias_correction(bias):
    """Through nybble.quantize: with a bias, the mean output error of each layer on its calibration
    inputs is zero; without one, the layers stay bias-free."""
    torch.manual_seed(0)
    model = _TwoLayer(bias)
    ref = copy.deepcopy(model)
    batches = [{"x": correlated_inputs(128, 64, seed=i)} for i in range(4)]
    cfg = nybble.Int4WeightOnlyConfig(group_size=32, algorithm="gptq",
                                      algorithm_options={"bias_correction": True})
    nybble.quantize(model, cfg, calibration=batches, show_progress=False)
    if not bias:
        assert model.a.bias is None and model.b.bias is None
        return
    x = torch.cat([b["x"] for b in batches])
    with torch.no_grad():
        # no repeated blocks: one pass over the float model gathers both layers' inputs
        h = torch.relu(ref.a(x))
        for lq, lf, inp in ((model.a, ref.a, x), (model.b, ref.b, h)):
            err = (lf(inp) - lq(inp)).mean(0)
            assert float(err.abs().max()) < 1e-4 * float(lf(inp).abs().mean()), (lf, err)
            b_before = (lf(inp) - inp @ lq.plain().dequantize(torch.float32).t() - lf.bias).mean(0)
            assert float(b_before.abs().max()) > 1e-3  # there was a mean error to correct


def test_bias_correction_llama_stays_bias_free():
    import transformers
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, vocab_size=101, max_position_embeddings=64)
    model = transformers.LlamaForCausalLM(cfg).eval()
    ids = torch.randint(0, 101, (4, 16), generator=torch.Generator().manual_seed(1))
    s = nybble.quantize(model, nybble.Int4WeightOnlyConfig(group_size=32, algorithm="gptq",
                                                           algorithm_options={"bias_correction": True}),
                        calibration=ids, filter_fn=lambda m, n: "lm_head" not in n, show_progress=False)
    assert len(s.quantized) == 14
    for n in s.quantized:
        assert model.get_submodule(n).bias is None, n


def _objective(w, h, codes, scale, zero, gs, damp):
    hd = h.clone()
    torch.diagonal(hd).add_(damp * float(torch.diagonal(h).mean()))
    e = w - P.dequantize(codes, scale, zero, gs, torch.float32)
    return float(((e @ hd) * e).sum())


@pytest.mark.parametrize("domain", ["int", "none"])
def test_refine_codes_lowers_objective(domain):
    """Coordinate descent on GPTQ's codes never raises, and here lowers, the (damped) objective;
    codes stay in 0..15."""
    x = correlated_inputs(1500, 256, seed=4)
    h = x.t() @ x / 1500
    w = torch.randn(48, 256, generator=torch.Generator().manual_seed(5)) * 0.05
    r = gptq_quantize(w, h, 32, domain, damp=0.01, act_order=True, clip_search=True, scale_dtype=torch.float32)
    before = _objective(w, h, r.codes, r.scale, r.zero_point, 32, 0.01)
    c1 = refine_codes(w, h, r.codes, r.scale, r.zero_point, 32, damp=0.01, sweeps=1)
    c2 = refine_codes(w, h, r.codes, r.scale, r.zero_point, 32, damp=0.01, sweeps=2)
    e1 = _objective(w, h, c1, r.scale, r.zero_point, 32, 0.01)
    e2 = _objective(w, h, c2, r.scale, r.zero_point, 32, 0.01)
    assert e2 <= e1 * (1 + 1e-6) and e1 < 0.99 * before, (before, e1, e2)
    assert int(c2.max()) <= 15 and c2.dtype == torch.uint8
    # through gptq_quantize (refine, then one more scale re-fit)
    r2 = gptq_quantize(w, h, 32, domain, damp=0.01, act_order=True, clip_search=True, scale_dtype=torch.float32,
                       refine_sweeps=1)
    assert _objective(w, h, r2.codes, r2.scale, r2.zero_point, 32, 0.01) < before


def test_block_tune_lowers_block_loss_and_installs_int4():
    """Block-output tuning of the scales on a tiny Llama: the block loss goes down (or the GPTQ scales
    are kept), every selected linear ends as an Int4Linear and the stand-ins are gone."""
    import transformers
    from nybble.algorithms.block_tune import FakeQuantLinear
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, vocab_size=101, max_position_embeddings=64)
    model = transformers.LlamaForCausalLM(cfg).eval()
    ids = torch.randint(0, 101, (8, 16), generator=torch.Generator().manual_seed(1))
    s = nybble.quantize(model, nybble.Int4WeightOnlyConfig(group_size=32, algorithm="gptq",
                                                           algorithm_options={"block_tune": 20, "batch_size": 2}),
                        calibration=ids, filter_fn=lambda m, n: "lm_head" not in n, show_progress=False)
    info = s.details["block_tune"]
    assert len(info) == 2
    for v in info.values():
        assert v["loss_after"] <= v["loss_before"]
    assert any(v["loss_after"] < v["loss_before"] for v in info.values())
    assert not any(isinstance(m, FakeQuantLinear) for m in model.modules())
    assert all(isinstance(model.get_submodule(n), nybble.Int4Linear) for n in s.quantized)


def test_fake_quant_linear_matches_plain_dequantization():
    from nybble.algorithms.block_tune import FakeQuantLinear
    w = torch.randn(16, 64)
    codes, scale, zero = P.quantize_rtn(w, 32, "int")
    b = torch.randn(16)
    f = FakeQuantLinear(codes, scale, zero, 32, b)
    x = torch.randn(5, 64)
    ref = x @ P.dequantize(codes, scale, zero, 32, torch.float32).t() + b
    torch.testing.assert_close(f(x), ref, rtol=1e-5, atol=1e-5)
    f(x).sum().backward()
    assert f.theta.grad is not None and float(f.theta.grad.abs().sum()) > 0
