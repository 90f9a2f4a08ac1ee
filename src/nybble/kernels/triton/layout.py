"""The blocked weight layout of the Triton kernels (pure torch; see ``kernel.py`` for the picture)."""
from __future__ import annotations

import os

import torch

#: rows x words of one block of the blocked layout
BLOCK_ROWS, BLOCK_WORDS = 16, 32


def block_words(qdata: torch.Tensor) -> torch.Tensor:
    """plain int32 ``(N, K8)`` -> blocked ``(ceil(N/16), ceil(K8/32), 16, 32)`` (zero padded), or the
    plain words themselves with ``NYBBLE_TRITON_LAYOUT=plain``."""
    if os.environ.get("NYBBLE_TRITON_LAYOUT", "blocked") == "plain":
        return qdata.contiguous()
    n, k8 = qdata.shape
    nb, kb = -(-n // BLOCK_ROWS), -(-k8 // BLOCK_WORDS)
    padded = torch.zeros(nb * BLOCK_ROWS, kb * BLOCK_WORDS, dtype=torch.int32, device=qdata.device)
    padded[:n, :k8] = qdata
    return padded.reshape(nb, BLOCK_ROWS, kb, BLOCK_WORDS).permute(0, 2, 1, 3).contiguous()


def unblock_words(qweight: torch.Tensor, n: int, k8: int) -> torch.Tensor:
    """Exact inverse of :func:`block_words` -> plain int32 ``(N, K8)``."""
    if qweight.dim() == 2:
        return qweight
    nb, kb, ln, lw = qweight.shape
    return qweight.permute(0, 2, 1, 3).reshape(nb * ln, kb * lw)[:n, :k8].contiguous()
