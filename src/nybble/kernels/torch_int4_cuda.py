"""Baseline CUDA kernel: PyTorch's own int4 matmul ("tinygemm", ``aten._weight_int4pack_mm``).

Serves A16W4 in the ``none`` domain only (see :mod:`nybble.kernels.torch_int4_common` for why the
``int`` domain is refused), bf16 activations.

Layout: ``weight_int4pack`` is torch's opaque tiled layout made by ``_convert_weight_to_int4pack``
from uint8 ``(N, K/2)`` (element ``2i`` in the HIGH nibble of byte ``i``, torch's convention);
``scale_and_zeros`` is bf16 ``(K/g, N, 2)`` (``[..., 0]`` scale, ``[..., 1]`` float zero = 0).  The
plain ``qdata``/``scale`` are kept too, so ``unpack`` is exact.  A16 and bfloat16 only.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..plain import PlainInt4Weight
from ..types import dtype_name
from .base import LinearSpec
from .torch_int4_common import TorchInt4KernelBase

_INNER_K_TILES = (8, 4, 2)


def inner_k_tiles(k: int) -> int | None:
    """tinygemm's ``innerKTiles`` (8, 4 or 2): K must be a multiple of ``16 * innerKTiles``."""
    return next((t for t in _INNER_K_TILES if k % (16 * t) == 0), None)


@torch.library.custom_op("nybble::torch_int4_cuda_a16w4", mutates_args=())
def torch_int4_cuda_a16w4(x: torch.Tensor, weight_int4pack: torch.Tensor, scale_and_zeros: torch.Tensor,
                          group_size: int, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """``x`` (M, K) bf16; ``weight_int4pack`` from ``_convert_weight_to_int4pack``; ``scale_and_zeros``
    bf16 (K/g, N, 2); returns (M, N) bf16."""
    y = torch.ops.aten._weight_int4pack_mm(x.contiguous(), weight_int4pack, group_size, scale_and_zeros)
    if bias is not None:
        y = y + bias.to(y.dtype)
    return y


@torch_int4_cuda_a16w4.register_fake
def _(x, weight_int4pack, scale_and_zeros, group_size, bias):
    return x.new_empty(x.shape[0], scale_and_zeros.shape[1])


class TorchInt4CudaKernel(TorchInt4KernelBase):
    """PyTorch's tinygemm: A16W4, bfloat16, ``none`` domain, N % 8 == 0, K % 32 == 0."""

    name = "torch_int4_cuda"
    device_types = ("cuda",)
    min_cuda_capability = (8, 0)

    @classmethod
    def is_supported(cls, device):
        ok, why = super().is_supported(device)
        if ok and not hasattr(torch.ops.aten, "_weight_int4pack_mm"):
            return False, "this PyTorch has no aten._weight_int4pack_mm"
        return ok, why

    @classmethod
    def extra_refusal(cls, spec: LinearSpec) -> str | None:
        if spec.dtype != torch.bfloat16:
            return f"tinygemm takes bfloat16 activations only, not {dtype_name(spec.dtype)}"
        if spec.n % 8:
            return f"N={spec.n} must be a multiple of 8"
        if inner_k_tiles(spec.k) is None:
            return f"K={spec.k} must be a multiple of 32"
        return None

    def pack_codes(self, plain: PlainInt4Weight) -> torch.Tensor:
        codes = plain.codes()                                             # (N, K) uint8
        u8 = ((codes[:, 0::2] << 4) | codes[:, 1::2]).contiguous()        # even k in the high nibble
        return torch.ops.aten._convert_weight_to_int4pack(u8, inner_k_tiles(plain.k))

    def apply(self, x, packed, bias):
        return self.run(torch.ops.nybble.torch_int4_cuda_a16w4, x, packed, bias)
