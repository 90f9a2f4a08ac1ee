"""Baseline CPU kernel: PyTorch's own int4 CPU matmul (``aten._weight_int4pack_mm_for_cpu``).

Serves A16W4 in the ``none`` domain only (see :mod:`nybble.kernels.torch_int4_common` for why the
``int`` domain is refused), fp32/bf16/fp16 activations, N a multiple of 16. It is the baseline
nybble's own CPU kernels must beat.

Layout: ``weight_int4pack`` uint8 ``(N, K/2)`` made by ``_convert_weight_to_int4pack_for_cpu`` from
int32 codes ``(N, K)``; ``scale_and_zeros`` ``(K/g, N, 2)`` in the activation dtype; plus the plain
``qdata``/``scale``.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..plain import PlainInt4Weight
from ..types import ALLOWED_DTYPES, dtype_name
from .base import LinearSpec
from .cpu_oplib import define_cpu_op
from .torch_int4_common import TorchInt4KernelBase


def torch_int4_cpu_a16w4(x: torch.Tensor, weight_int4pack: torch.Tensor, scale_and_zeros: torch.Tensor,
                         group_size: int, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """The CPU kernel of the torch op ``nybble::torch_int4_cpu_a16w4`` (registered like nybble's own
    decode ops, :func:`nybble.kernels.cpu_oplib.define_cpu_op`, so both pay the same per-call cost; and
    :mod:`nybble.kernels.cpu_shim`, on by default, gives it a C++ kernel calling the aten op, as it does nybble's
    ops):
    ``x`` (M, K) float; ``weight_int4pack`` uint8 (N, K/2) from ``_convert_weight_to_int4pack_for_cpu``;
    ``scale_and_zeros`` (K/g, N, 2) in ``x.dtype``; returns (M, N) in ``x.dtype``."""
    y = torch.ops.aten._weight_int4pack_mm_for_cpu(x.contiguous(), weight_int4pack, group_size, scale_and_zeros)
    if bias is not None:
        y = y + bias.to(y.dtype)
    return y


def _torch_int4_cpu_a16w4_fake(x, weight_int4pack, scale_and_zeros, group_size, bias):
    return x.new_empty(x.shape[0], weight_int4pack.shape[0])


define_cpu_op("torch_int4_cpu_a16w4(Tensor x, Tensor weight_int4pack, Tensor scale_and_zeros, SymInt group_size, "
              "Tensor? bias) -> Tensor", torch_int4_cpu_a16w4, _torch_int4_cpu_a16w4_fake)


class TorchInt4CpuKernel(TorchInt4KernelBase):
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
    def extra_refusal(cls, spec: LinearSpec) -> str | None:
        if spec.dtype not in ALLOWED_DTYPES:
            return f"activation dtype {dtype_name(spec.dtype)} not supported"
        if spec.n % 16:
            return f"N={spec.n} must be a multiple of 16"
        return None

    def pack_codes(self, plain: PlainInt4Weight) -> torch.Tensor:
        return torch.ops.aten._convert_weight_to_int4pack_for_cpu(plain.codes().to(torch.int32), 1)

    def apply(self, x, packed, bias):
        return self.run(torch.ops.nybble.torch_int4_cpu_a16w4, x, packed, bias)
