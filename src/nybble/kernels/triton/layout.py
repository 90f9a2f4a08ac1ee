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


#: A16W4 word order ("paired"): nibble i of a prepacked word holds the code of K offset PAIR_K[i], so
#: that nibbles i and i + 4 (bits 4i and 4i + 16, one packed 16-bit pair after one shift and mask)
#: are the adjacent K offsets 2i and 2i + 1, which meet one 32-bit register of x.
PAIR_K = (0, 2, 4, 6, 1, 3, 5, 7)


def _permute_nibbles(words: torch.Tensor, src_of: tuple[int, ...]) -> torch.Tensor:
    """int32 words -> int32 words whose nibble i is the input's nibble ``src_of[i]``."""
    w = words.to(torch.int64) & 0xFFFFFFFF
    out = torch.zeros_like(w)
    for i, s in enumerate(src_of):
        out |= ((w >> (4 * s)) & 0xF) << (4 * i)
    out = torch.where(out >= 2 ** 31, out - 2 ** 32, out)
    return out.to(torch.int32)


def pair_nibbles(qdata: torch.Tensor) -> torch.Tensor:
    """Plain words (nibble i = K offset i) -> the paired order of :data:`PAIR_K` (same shape)."""
    return _permute_nibbles(qdata, PAIR_K)


def unpair_nibbles(words: torch.Tensor) -> torch.Tensor:
    """Exact inverse of :func:`pair_nibbles`."""
    inv = tuple(PAIR_K.index(k) for k in range(8))
    return _permute_nibbles(words, inv)
