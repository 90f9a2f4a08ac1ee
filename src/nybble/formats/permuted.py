"""Activation-ordered groups (GPTQ ``desc_act`` / compressed-tensors ``weight_g_idx``).

Such checkpoints assign input feature ``k`` to group ``g_idx[k]`` with ``g_idx`` unsorted, so the
members of a group are scattered along K. nybble's kernels need contiguous groups. At load time we
sort K by group (stable ``perm = argsort(g_idx)``) and store ``W'[:, i] = W[:, perm[i]]``, whose
groups are contiguous runs; then ``x @ W.T == x[..., perm] @ W'.T`` exactly (the same products,
summed per group in the same groups).

Where the permutation goes: we permute the *activations* at run time (:class:`PermutedInputLinear`,
one gather of ``x`` per call), rather than folding it into the previous layer. Folding only works
when the previous op is a linear whose outputs feed nothing else (``up``/``gate`` -> ``down``); the
inputs of ``q/k/v`` and ``gate/up`` are the normalized residual stream, shared with the residual
add and with the other projections, so they cannot be permuted in place in general, and ``o_proj``'s
input is laid out by attention heads. A gather of ``M x K`` activations is small next to reading
the ``N x K`` int4 weight (decode) or the GEMM itself (prefill), and it works for every
architecture and keeps the dequantized weights bit-identical to the checkpoint's.
"""
from __future__ import annotations

import torch
from torch import nn

from .. import primitives as P
from ..plain import PlainInt4Weight
from ..tensor import Int4Linear
from .safetensors_io import CheckpointError


def trivial_g_idx(k: int, group_size: int) -> torch.Tensor:
    """``g_idx`` of contiguous groups: int32 ``(K,)`` with ``g_idx[k] = k // group_size``."""
    g = P.group_len(group_size, k)
    return (torch.arange(k) // g).to(torch.int32)


def is_trivial_g_idx(g_idx: torch.Tensor, group_size: int) -> bool:
    """True when ``g_idx`` (``(K,)``) already assigns contiguous groups (``g_idx[k] == k // group_size``)."""
    k = g_idx.shape[0]
    return torch.equal(g_idx.to(torch.int64), trivial_g_idx(k, group_size).to(torch.int64))


def regroup(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, group_size: int,
            g_idx: torch.Tensor | None, where: str) -> tuple[PlainInt4Weight, torch.Tensor | None]:
    """Codes ``(N, K)`` uint8 whose input ``k`` belongs to group ``g_idx[k]`` -> a plain weight with
    contiguous groups and the input permutation ``perm`` (int64 ``(K,)``, None when already
    contiguous). ``scale``/``zero`` are ``(N, G)`` indexed by group, unchanged by the permutation.

    Raises CheckpointError naming ``where`` when a group does not hold exactly ``group_size`` inputs.
    """
    n, k = codes.shape
    if g_idx is None or is_trivial_g_idx(g_idx, group_size):
        return PlainInt4Weight.from_codes(codes, scale, zero, group_size), None
    g_idx = g_idx.to(torch.int64)
    num_groups = scale.shape[1]
    if int(g_idx.min()) < 0 or int(g_idx.max()) >= num_groups:
        raise CheckpointError(f"{where}: g_idx values must lie in 0..{num_groups - 1}")
    counts = torch.bincount(g_idx, minlength=num_groups)
    glen = P.group_len(group_size, k)
    if not bool((counts == glen).all()):
        raise CheckpointError(f"{where}: g_idx puts {counts.tolist()[:8]}... inputs in its groups; "
                              f"every group must hold exactly group_size={glen} inputs")
    perm = torch.argsort(g_idx, stable=True)
    plain = PlainInt4Weight.from_codes(codes[:, perm].contiguous(), scale, zero, group_size)
    return plain, perm


class PermutedInputLinear(nn.Module):
    """``y = inner(x[..., perm])``: an :class:`Int4Linear` whose input features were sorted by group.

    ``perm``: int64 ``(K,)`` buffer (not saved in ``state_dict`` under its own name; ``nybble.save``
    writes the layer back in checkpoint order with a ``weight_g_idx``).
    """

    def __init__(self, inner: Int4Linear, perm: torch.Tensor):
        super().__init__()
        self.inner = inner
        self.register_buffer("perm", perm.to(torch.int64), persistent=True)
        self.in_features, self.out_features = inner.in_features, inner.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.index_select(-1, self.perm))

    def checkpoint_order(self) -> tuple[PlainInt4Weight, torch.Tensor]:
        """The weight in the original input order and its ``g_idx`` (int32 ``(K,)``)."""
        p = self.inner.plain()
        inv = torch.empty_like(self.perm)
        inv[self.perm] = torch.arange(p.k)
        codes = p.codes()[:, inv].contiguous()
        g = P.group_len(p.group_size, p.k)
        g_idx = torch.empty(p.k, dtype=torch.int32)
        g_idx[self.perm] = (torch.arange(p.k) // g).to(torch.int32)
        return PlainInt4Weight.from_codes(codes, p.scale, p.zero_point, p.group_size), g_idx

    def dequantize(self) -> torch.Tensor:
        """Dense ``(N, K)`` weight in the original input order."""
        w = self.inner.dequantize()
        inv = torch.empty_like(self.perm)
        inv[self.perm] = torch.arange(w.shape[1])
        return w[:, inv]

    def extra_repr(self) -> str:
        return f"activation-ordered groups: inputs permuted (K={self.in_features})"
