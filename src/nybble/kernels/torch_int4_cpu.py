"""Baseline CPU kernel: PyTorch's own int4 CPU matmul (``aten._weight_int4pack_mm_for_cpu``).

PyTorch's op computes ``w = (q - 8) * s + zf`` with a *float* zero ``zf`` stored in the activation
dtype. nybble's ``int`` domain (``w = (q - z) * s``) would need ``zf = (8 - z) * s``, which is not
exactly representable in bf16/fp16 (a bf16 ``s`` times an integer up to 8 needs up to 12 significant
bits), so this kernel serves only the ``none`` domain (``zf = 0``: exact) and refuses ``int``.
Per-channel weights are served exactly by repeating each row's scale over groups of the largest
allowed size (256/128/64/32) that divides K.

It is the baseline nybble's own CPU kernels must beat; A16 only (no int8 activations).
"""
from __future__ import annotations

from typing import Optional

import torch

from .. import primitives as P
from ..plain import PlainInt4Weight
from ..types import ALLOWED_DTYPES, ActMode, ZeroPointDomain, dtype_name
from .base import LinearKernel, LinearSpec, PackedWeight

_TORCH_GROUPS = (256, 128, 64, 32)


def torch_group_size(group_size: int, k: int) -> int | None:
    """The group size handed to torch's op (per-channel -> the largest allowed divisor of K)."""
    if group_size != -1:
        return group_size if group_size in _TORCH_GROUPS else None
    return next((g for g in _TORCH_GROUPS if k % g == 0), None)


@torch.library.custom_op("nybble::torch_int4_cpu_a16w4", mutates_args=())
def torch_int4_cpu_a16w4(x: torch.Tensor, weight_int4pack: torch.Tensor, scale_and_zeros: torch.Tensor,
                         group_size: int, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """``x`` (M, K) float; ``weight_int4pack`` uint8 (N, K/2) from ``_convert_weight_to_int4pack_for_cpu``;
    ``scale_and_zeros`` (K/g, N, 2) in ``x.dtype``; returns (M, N) in ``x.dtype``."""
    y = torch.ops.aten._weight_int4pack_mm_for_cpu(x.contiguous(), weight_int4pack, group_size, scale_and_zeros)
    if bias is not None:
        y = y + bias.to(y.dtype)
    return y


@torch_int4_cpu_a16w4.register_fake
def _(x, weight_int4pack, scale_and_zeros, group_size, bias):
    return x.new_empty(x.shape[0], weight_int4pack.shape[0])


class TorchInt4CpuKernel(LinearKernel):
    """PyTorch's int4 CPU kernel, for A16W4 in the ``none`` domain, N a multiple of 16."""

    name = "torch_int4_cpu"
    device_types = ("cpu",)

    @classmethod
    def is_supported(cls, device):
        ok, why = super().is_supported(device)
        if ok and not hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu"):
            return False, "this PyTorch has no aten._weight_int4pack_mm_for_cpu"
        return ok, why

    @classmethod
    def can_implement(cls, spec: LinearSpec):
        if spec.act_mode is not ActMode.A16:
            return False, "A16W4 only (no int8 activations)"
        if spec.domain is not ZeroPointDomain.NONE:
            return False, ("needs zero_point='none': its float zero (8 - z) * s is not exactly "
                           "representable in the activation dtype")
        if spec.dtype not in ALLOWED_DTYPES:
            return False, f"activation dtype {dtype_name(spec.dtype)} not supported"
        if spec.n % 16:
            return False, f"N={spec.n} must be a multiple of 16"
        if torch_group_size(spec.group_size, spec.k) is None:
            return False, f"group size {spec.group_size} with K={spec.k} has no 32/64/128/256 grouping"
        return True, None

    def prepack(self, plain: PlainInt4Weight) -> PackedWeight:
        g = torch_group_size(plain.group_size, plain.k)
        reps = P.group_len(plain.group_size, plain.k) // g
        scale = plain.scale.repeat_interleave(reps, dim=1)              # (N, K/g)
        sz = torch.stack([scale.t(), torch.zeros_like(scale.t())], dim=-1).contiguous()  # (K/g, N, 2)
        codes = plain.codes().to(torch.int32)
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1)
        # torch's packed layout is opaque: keep the plain codes so unpack stays exact.
        return {"weight_int4pack": packed, "scale_and_zeros": sz.to(plain.dtype),
                "qdata": plain.qdata, "scale": plain.scale}

    def unpack(self, packed: PackedWeight) -> PlainInt4Weight:
        return PlainInt4Weight(packed["qdata"], packed["scale"], None, self.spec.group_size,
                               (self.spec.n, self.spec.k))

    def apply(self, x, packed, bias):
        s = self.spec
        g = torch_group_size(s.group_size, s.k)
        y = torch.ops.nybble.torch_int4_cpu_a16w4(x.reshape(-1, s.k), packed["weight_int4pack"],
                                                  packed["scale_and_zeros"], g, bias)
        return y.reshape(*x.shape[:-1], s.n)
