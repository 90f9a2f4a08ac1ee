"""Nibble packings of the GPTQ and AWQ formats, converted to and from nybble's plain layout.

All of them put 8 unsigned 4-bit codes in one int32 word; they differ in the packed axis and the
order of the nibbles inside the word:

* plain / compressed-tensors / GPTQ ``qweight``: along K, nibble ``i`` (bits ``4i``) = element ``8w+i``.
* GPTQ ``qzeros`` and nybble-exported zero points: along N, same nibble order.
* AWQ (GEMM) ``qweight``/``qzeros``: along N, nibble ``i`` = element ``8w + AWQ_ORDER[i]`` with
  ``AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]``.
"""
from __future__ import annotations

import torch

from .. import primitives as P

AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)
#: ``AWQ_INVERSE[c]`` = nibble position that holds column ``c`` of a group of 8
AWQ_INVERSE = tuple(AWQ_ORDER.index(c) for c in range(8))


def unpack_rows(packed: torch.Tensor) -> torch.Tensor:
    """int32 ``(R, C/8)`` packed along the last axis, LSB nibble first -> uint8 ``(R, C)``."""
    return P.unpack_int32(packed)


def pack_rows(codes: torch.Tensor) -> torch.Tensor:
    """uint8/int ``(R, C)`` 0..15 -> int32 ``(R, C/8)`` packed along the last axis, LSB nibble first."""
    return P.pack_int32(codes)


def gptq_qweight_to_plain(qweight: torch.Tensor) -> torch.Tensor:
    """GPTQ ``qweight`` int32 ``(K/8, N)`` (packed along K) -> plain ``qdata`` int32 ``(N, K/8)``.
    The nibble order is the same, so this is a transpose."""
    return qweight.t().contiguous()


def plain_to_gptq_qweight(qdata: torch.Tensor) -> torch.Tensor:
    """Plain ``qdata`` int32 ``(N, K/8)`` -> GPTQ ``qweight`` int32 ``(K/8, N)``."""
    return qdata.t().contiguous()


def awq_unpack(packed: torch.Tensor) -> torch.Tensor:
    """AWQ int32 ``(R, C/8)`` packed along C in AWQ order -> uint8 ``(R, C)`` in natural column order."""
    r, c8 = packed.shape
    nib = P.unpack_int32(packed).reshape(r, c8, 8)          # nib[..., i] = nibble at bits 4i
    return nib[..., list(AWQ_INVERSE)].reshape(r, c8 * 8).contiguous()


def awq_pack(codes: torch.Tensor) -> torch.Tensor:
    """uint8 ``(R, C)`` 0..15 -> AWQ int32 ``(R, C/8)`` (nibble ``i`` = column ``8w + AWQ_ORDER[i]``)."""
    r, c = codes.shape
    grouped = codes.reshape(r, c // 8, 8)[..., list(AWQ_ORDER)]
    return P.pack_int32(grouped.reshape(r, c))
