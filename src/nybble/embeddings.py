"""Sentence embeddings of an encoder model (mean pooling over the attention mask, L2-normalised),
as sentence-transformers computes them for all-MiniLM-L6-v2."""
from __future__ import annotations

import torch


@torch.no_grad()
def sentence_embeddings(model, tokenizer, sentences: list[str], batch_size: int = 64,
                        max_length: int = 256) -> torch.Tensor:
    """``(len(sentences), hidden)`` fp32 unit vectors."""
    out = []
    for i in range(0, len(sentences), batch_size):
        enc = tokenizer(sentences[i:i + batch_size], padding=True, truncation=True,
                        max_length=max_length, return_tensors="pt")
        enc = {k: v.to(next(model.parameters()).device) for k, v in enc.items()}
        hidden = model(**enc).last_hidden_state.float()
        mask = enc["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        out.append(torch.nn.functional.normalize(pooled, dim=-1).cpu())
    return torch.cat(out)


def cosine_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine similarity of two ``(S, H)`` embedding matrices -> ``(S,)``."""
    return torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1)
