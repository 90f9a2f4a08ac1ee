"""Quality metrics for quantized models, on in-memory models (no files needed).

* :func:`perplexity`: causal-LM perplexity of a text with sliding windows (window ``seqlen``, step
  ``stride``; every token is scored once, with up to ``seqlen - stride`` tokens of left context
  beyond its own window part -- the usual Hugging Face protocol).
* :func:`sentence_embeddings`: mean pooling of the last hidden state over the attention mask,
  L2-normalised (the sentence-transformers recipe of all-MiniLM-L6-v2).
* :func:`compare_embeddings` / :func:`embedding_agreement`: mean and 1st-percentile cosine of the
  quantized model's embeddings vs the original's, and nearest-neighbour agreement: the fraction of
  sentences whose nearest other sentence (by cosine) is the same under both models.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn


def read_lines(path: str | Path) -> list[str]:
    """Non-empty stripped lines of a UTF-8 text file (FileNotFoundError / ValueError if none)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8", errors="replace").splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines:
        raise ValueError(f"{path} holds no text")
    return lines


def default_eval_sentences(limit: int | None = None) -> list[str]:
    """The evaluation sentences shipped with nybble (Vim user manual prose: a different text from the
    shipped calibration set), at most ``limit``."""
    from .algorithms.calibration import DEFAULT_EVAL_SENTENCES_FILE
    return read_lines(DEFAULT_EVAL_SENTENCES_FILE)[:limit]


def _device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


@torch.no_grad()
def sentence_embeddings(model: nn.Module, tokenizer, sentences: list[str], batch_size: int = 64,
                        max_length: int = 256) -> torch.Tensor:
    """``(S, H)`` fp32 L2-normalised mean-pooled embeddings (padding excluded from the mean).

    ``model(**enc)`` must return an object with ``last_hidden_state`` (or a tuple whose first item is
    the ``(B, T, H)`` hidden states)."""
    if not sentences:
        raise ValueError("no sentences to embed")
    was_training = model.training
    model.eval()
    dev = _device(model)
    out = []
    try:
        for i in range(0, len(sentences), batch_size):
            enc = tokenizer(sentences[i:i + batch_size], padding=True, truncation=True, max_length=max_length,
                            return_tensors="pt")
            enc = {k: v.to(dev) for k, v in enc.items()}
            res = model(**enc)
            h = res.last_hidden_state if hasattr(res, "last_hidden_state") else res[0]
            mask = enc["attention_mask"].unsqueeze(-1).to(torch.float32)
            e = (h.float() * mask).sum(1) / mask.sum(1).clamp(min=1)
            out.append(torch.nn.functional.normalize(e, dim=-1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(out)


def compare_embeddings(reference: torch.Tensor, test: torch.Tensor) -> dict:
    """Agreement of ``test`` with ``reference`` embeddings (both ``(S, H)``, L2-normalised rows).

    Returns ``{"mean_cosine", "p1_cosine", "min_cosine", "nn_agreement", "sentences"}``;
    ``nn_agreement`` needs ``S >= 3`` (NaN otherwise)."""
    if reference.shape != test.shape:
        raise ValueError(f"embedding shapes differ: {tuple(reference.shape)} vs {tuple(test.shape)}")
    ref = torch.nn.functional.normalize(reference.double(), dim=-1)
    tst = torch.nn.functional.normalize(test.double(), dim=-1)
    cos = (ref * tst).sum(-1)
    s = ref.shape[0]
    nn_agree = float("nan")
    if s >= 3:
        eye = torch.eye(s, dtype=torch.bool)
        nr = (ref @ ref.t()).masked_fill(eye, -math.inf).argmax(-1)
        nt = (tst @ tst.t()).masked_fill(eye, -math.inf).argmax(-1)
        nn_agree = float((nr == nt).double().mean())
    return {"mean_cosine": float(cos.mean()), "p1_cosine": float(torch.quantile(cos, 0.01)),
            "min_cosine": float(cos.min()), "nn_agreement": nn_agree, "sentences": s}


def embedding_agreement(original: nn.Module, quantized: nn.Module, sentences: list[str], tokenizer,
                        batch_size: int = 64, max_length: int = 256,
                        reference: torch.Tensor | None = None) -> dict:
    """:func:`compare_embeddings` of ``quantized`` vs ``original`` on ``sentences``.

    ``reference``: the original's embeddings if already computed (then ``original`` may be None)."""
    if reference is None:
        reference = sentence_embeddings(original, tokenizer, sentences, batch_size, max_length)
    test = sentence_embeddings(quantized, tokenizer, sentences, batch_size, max_length)
    return compare_embeddings(reference, test)


@torch.no_grad()
def perplexity(model: nn.Module, tokenizer, text: str, seqlen: int = 512, stride: int = 256,
               max_tokens: int | None = None) -> dict:
    """Perplexity of a causal LM on ``text`` with sliding windows.

    Windows of ``seqlen`` tokens start every ``stride`` tokens; in each window only the tokens not
    scored by the previous window are scored (the rest is context). ``max_tokens`` truncates the
    tokenized text. Returns ``{"perplexity", "nll" (mean, nats), "tokens" (scored), "windows"}``.
    """
    if not 0 < stride <= seqlen:
        raise ValueError(f"stride must be in 1..seqlen ({seqlen}), got {stride}")
    ids = tokenizer(text, return_tensors="pt")["input_ids"][0]
    if max_tokens is not None:
        ids = ids[:max_tokens]
    n = ids.numel()
    if n < 2:
        raise ValueError("the text has fewer than 2 tokens")
    was_training = model.training
    model.eval()
    dev = _device(model)
    total, scored, windows, prev_end = 0.0, 0, 0, 0
    try:
        for begin in range(0, n, stride):
            end = min(begin + seqlen, n)
            new = end - prev_end  # tokens this window scores
            window = ids[begin:end].unsqueeze(0).to(dev)
            logits = model(input_ids=window).logits[0].float()  # (T, V)
            # token t is predicted by position t-1; score the last `new` tokens (never position 0)
            first = max(1, window.shape[1] - new)
            logp = torch.log_softmax(logits[first - 1:-1], dim=-1)
            tgt = window[0, first:]
            total -= float(logp.gather(1, tgt.unsqueeze(1)).sum())
            scored += tgt.numel()
            windows += 1
            prev_end = end
            if end == n:
                break
    finally:
        model.train(was_training)
    nll = total / max(1, scored)
    return {"perplexity": math.exp(nll), "nll": nll, "tokens": scored, "windows": windows}
