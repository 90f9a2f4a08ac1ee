"""What PyTorch's two int4 matmuls (CPU ``_weight_int4pack_mm_for_cpu`` and CUDA "tinygemm"
``_weight_int4pack_mm``) share: the float-zero-point convention, the group sizes, the
``scale_and_zeros`` tensor, and keeping the plain tensors so ``unpack`` is exact.

Both compute ``w = (q - 8) * s + zf`` with a *float* zero ``zf`` stored in the activation dtype.
nybble's ``none`` domain is ``zf = 0`` (exact). The ``int`` domain (``w = (q - z) * s``) would need
``zf = (8 - z) * s``: a scale times an integer up to 8 needs up to 4 more significant bits than the
scale has, which bf16/fp16 (and in general fp32) cannot hold, so both kernels refuse ``int``
(convert exactly or refuse). Per-channel weights are served exactly by repeating each row's scale
over groups of the largest of 256/128/64/32 that divides K.
"""
from __future__ import annotations

import torch

from .. import primitives as P
from ..plain import PlainInt4Weight
from ..types import ActMode, ZeroPointDomain
from .base import LinearKernel, LinearSpec, PackedWeight

_TORCH_GROUPS = (256, 128, 64, 32)


def torch_group_size(group_size: int, k: int) -> int | None:
    """The group size handed to torch's op (per-channel -> the largest allowed divisor of K)."""
    if group_size != -1:
        return group_size if group_size in _TORCH_GROUPS else None
    return next((g for g in _TORCH_GROUPS if k % g == 0), None)


def scale_and_zeros(plain: PlainInt4Weight, dtype: torch.dtype) -> torch.Tensor:
    """``(K/g', N, 2)`` in ``dtype``: ``[..., 0]`` the scale (repeated for per-channel), ``[..., 1]`` zero."""
    g = torch_group_size(plain.group_size, plain.k)
    reps = P.group_len(plain.group_size, plain.k) // g
    scale = plain.scale.repeat_interleave(reps, dim=1).t()             # (K/g', N)
    return torch.stack([scale, torch.zeros_like(scale)], dim=-1).to(dtype).contiguous()


class TorchInt4KernelBase(LinearKernel):
    """Shared checks and plain bookkeeping of the two torch int4 wrappers; subclasses add their
    device/dtype/shape rules (``extra_refusal``) and the packing call (``pack_codes``)."""

    @classmethod
    def can_implement(cls, spec: LinearSpec):
        if spec.act_mode is not ActMode.A16:
            return False, "A16W4 only (no int8 activations)"
        if spec.domain is not ZeroPointDomain.NONE:
            return False, ("needs zero_point='none': its float zero (8 - z) * s is not exactly "
                           "representable in the activation dtype, so the int domain cannot be converted exactly")
        if torch_group_size(spec.group_size, spec.k) is None:
            return False, f"group size {spec.group_size} with K={spec.k} has no 32/64/128/256 grouping"
        reason = cls.extra_refusal(spec)
        return reason is None, reason

    @classmethod
    def extra_refusal(cls, spec: LinearSpec) -> str | None:
        """Why this particular op cannot run ``spec`` (None if it can)."""
        raise NotImplementedError

    def pack_codes(self, plain: PlainInt4Weight) -> torch.Tensor:
        """torch's opaque packed weight from the plain codes."""
        raise NotImplementedError

    def prepack(self, plain: PlainInt4Weight) -> PackedWeight:
        # torch's packed layout is opaque: keep the plain codes and scales so unpack stays exact.
        return {"weight_int4pack": self.pack_codes(plain), "scale_and_zeros": scale_and_zeros(plain, plain.dtype),
                "qdata": plain.qdata, "scale": plain.scale}

    def unpack(self, packed: PackedWeight) -> PlainInt4Weight:
        return PlainInt4Weight(packed["qdata"], packed["scale"], None, self.spec.group_size,
                               (self.spec.n, self.spec.k))

    def run(self, op, x: torch.Tensor, packed: PackedWeight, bias) -> torch.Tensor:
        """Call ``op(x2d, weight_int4pack, scale_and_zeros, group, bias)`` and restore x's leading dims."""
        s = self.spec
        y = op(x.reshape(-1, s.k), packed["weight_int4pack"], packed["scale_and_zeros"],
               torch_group_size(s.group_size, s.k), bias)
        return y.reshape(*x.shape[:-1], s.n)
