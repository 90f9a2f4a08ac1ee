"""Baseline CUDA kernel: PyTorch's own int4 matmul ("tinygemm", ``aten._weight_int4pack_mm``).

PyTorch's op computes ``w = (q - 8) * s + zf`` with a *float* zero ``zf`` stored next to the scale in
bfloat16.  nybble's ``none`` domain is ``zf = 0`` (exact).  The ``int`` domain (``w = (q - z) * s``)
would need ``zf = (8 - z) * s``, a bf16 scale times an integer up to 8: up to 12 significant bits,
which bf16 (8 bits) cannot hold exactly, and tinygemm's own bf16 arithmetic would round again; so
this kernel refuses ``int`` (convert exactly or refuse).  Per-channel weights are served exactly by
repeating each row's scale over groups of the largest of 256/128/64/32 dividing K.

Layout: ``weight_int4pack`` is torch's opaque tiled layout made by ``_convert_weight_to_int4pack``
from uint8 ``(N, K/2)`` (element ``2i`` in the HIGH nibble of byte ``i``, torch's convention);
``scale_and_zeros`` is bf16 ``(K/g, N, 2)`` (``[..., 0]`` scale, ``[..., 1]`` float zero = 0).  The
plain ``qdata``/``scale`` are kept too, so ``unpack`` is exact.  A16 and bfloat16 only.
"""
from __future__ import annotations

from typing import Optional

import torch

from .. import primitives as P
from ..plain import PlainInt4Weight
from ..types import ActMode, ZeroPointDomain, dtype_name
from .base import LinearKernel, LinearSpec, PackedWeight

_TORCH_GROUPS = (256, 128, 64, 32)
_INNER_K_TILES = (8, 4, 2)


def torch_group_size(group_size: int, k: int) -> int | None:
    """The group size handed to torch's op (per-channel -> the largest allowed divisor of K)."""
    if group_size != -1:
        return group_size if group_size in _TORCH_GROUPS else None
    return next((g for g in _TORCH_GROUPS if k % g == 0), None)


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


class TorchInt4CudaKernel(LinearKernel):
    """PyTorch's tinygemm: A16W4, bfloat16, ``none`` domain, N % 8 == 0, K % 32 == 0."""

    name = "torch_int4_cuda"
    device_types = ("cuda",)

    @classmethod
    def is_supported(cls, device):
        ok, why = super().is_supported(device)
        if not ok:
            return ok, why
        if not hasattr(torch.ops.aten, "_weight_int4pack_mm"):
            return False, "this PyTorch has no aten._weight_int4pack_mm"
        if not torch.cuda.is_available():
            return False, "no CUDA device is available"
        if torch.cuda.get_device_capability() < (8, 0):
            return False, "tinygemm needs compute capability >= 8.0"
        return True, None

    @classmethod
    def can_implement(cls, spec: LinearSpec):
        if spec.act_mode is not ActMode.A16:
            return False, "A16W4 only (no int8 activations)"
        if spec.domain is not ZeroPointDomain.NONE:
            return False, ("needs zero_point='none': its float zero (8 - z) * s is not exactly "
                           "representable in bfloat16, so the int domain cannot be converted exactly")
        if spec.dtype != torch.bfloat16:
            return False, f"tinygemm takes bfloat16 activations only, not {dtype_name(spec.dtype)}"
        if spec.n % 8:
            return False, f"N={spec.n} must be a multiple of 8"
        if inner_k_tiles(spec.k) is None:
            return False, f"K={spec.k} must be a multiple of 32"
        if torch_group_size(spec.group_size, spec.k) is None:
            return False, f"group size {spec.group_size} with K={spec.k} has no 32/64/128/256 grouping"
        return True, None

    def prepack(self, plain: PlainInt4Weight) -> PackedWeight:
        g = torch_group_size(plain.group_size, plain.k)
        reps = P.group_len(plain.group_size, plain.k) // g
        scale = plain.scale.repeat_interleave(reps, dim=1).t()           # (K/g, N)
        sz = torch.stack([scale, torch.zeros_like(scale)], dim=-1).to(torch.bfloat16).contiguous()
        codes = plain.codes()                                             # (N, K) uint8
        u8 = ((codes[:, 0::2] << 4) | codes[:, 1::2]).contiguous()        # even k in the high nibble
        packed = torch.ops.aten._convert_weight_to_int4pack(u8, inner_k_tiles(plain.k))
        return {"weight_int4pack": packed, "scale_and_zeros": sz, "qdata": plain.qdata, "scale": plain.scale}

    def unpack(self, packed: PackedWeight) -> PlainInt4Weight:
        return PlainInt4Weight(packed["qdata"], packed["scale"], None, self.spec.group_size,
                               (self.spec.n, self.spec.k))

    def apply(self, x, packed, bias):
        s = self.spec
        g = torch_group_size(s.group_size, s.k)
        y = torch.ops.nybble.torch_int4_cuda_a16w4(x.reshape(-1, s.k), packed["weight_int4pack"],
                                                   packed["scale_and_zeros"], g, bias)
        return y.reshape(*x.shape[:-1], s.n)
