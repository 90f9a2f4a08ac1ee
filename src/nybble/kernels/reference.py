"""The reference kernel: pure torch, any device; the oracle every other kernel is tested against.

A16W4: dequantize the weight ((q - z) * s in fp32), cast to the activation dtype, matmul in the
activation dtype (torch accumulates in fp32), add the bias.

A8W4: quantize each activation row to int8/uint8 (:func:`nybble.primitives.quantize_activations`),
accumulate ``sum_k (qa - za) * (qw - zw)`` exactly per group (float64 holds these integer sums
exactly), then in fp32: ``y[m, n] = sa[m] * sum_g(acc[m, n, g] * sw[n, g])``, plus bias, cast to the
activation dtype. This is the arithmetic the fast kernels do.
"""
from __future__ import annotations

from typing import Optional

import torch

from .. import primitives as P
from ..plain import PlainInt4Weight
from ..types import ALLOWED_DTYPES, dtype_name
from .base import LinearKernel, LinearSpec, PackedWeight

_M_CHUNK = 64  # rows of activations per float64 accumulation block (bounds memory)


@torch.library.custom_op("nybble::reference_a16w4", mutates_args=())
def reference_a16w4(x: torch.Tensor, qdata: torch.Tensor, scale: torch.Tensor,
                    zero_point: Optional[torch.Tensor], group_size: int,
                    bias: Optional[torch.Tensor]) -> torch.Tensor:
    """``x`` (M, K) float; plain ``qdata`` int32 (N, K/8), ``scale`` (N, G), ``zero_point`` int8 (N, G)
    or None; returns (M, N) in ``x.dtype``."""
    w = P.dequantize(P.unpack_int32(qdata), scale, zero_point, group_size, x.dtype)
    y = x @ w.t()
    if bias is not None:
        y = y + bias.to(y.dtype)
    return y


@torch.library.custom_op("nybble::reference_a8w4", mutates_args=())
def reference_a8w4(x: torch.Tensor, qdata: torch.Tensor, scale: torch.Tensor,
                   zero_point: Optional[torch.Tensor], group_size: int, asymmetric: bool,
                   bias: Optional[torch.Tensor]) -> torch.Tensor:
    """As :func:`reference_a16w4`, with per-token int8 activations and per-group integer sums."""
    m, k = x.shape
    n = qdata.shape[0]
    g = P.group_len(group_size, k)
    qa, sa, za = P.quantize_activations(x, asymmetric)
    codes = P.unpack_int32(qdata).to(torch.float64).reshape(n, k // g, g)
    zw = P.SYMMETRIC_ZERO if zero_point is None else zero_point.to(torch.float64).unsqueeze(-1)
    wq = codes - zw                                             # (N, G, g) exact small integers
    sw = scale.float()                                          # (N, G)
    out = torch.empty(m, n, dtype=torch.float32, device=x.device)
    for m0 in range(0, m, _M_CHUNK):
        a = (qa[m0:m0 + _M_CHUNK] - za[m0:m0 + _M_CHUNK, None]).to(torch.float64).reshape(-1, k // g, g)
        acc = torch.einsum("mgk,ngk->mng", a, wq)          # exact int32-range sums
        acc = acc.to(torch.float32)                          # int32 -> fp32, as the fast kernels do
        out[m0:m0 + _M_CHUNK] = (acc * sw).sum(-1) * sa[m0:m0 + _M_CHUNK, None]
    if bias is not None:
        out = out + bias.float()
    return out.to(x.dtype)


@reference_a16w4.register_fake
def _(x, qdata, scale, zero_point, group_size, bias):
    return x.new_empty(x.shape[0], qdata.shape[0])


@reference_a8w4.register_fake
def _(x, qdata, scale, zero_point, group_size, asymmetric, bias):
    return x.new_empty(x.shape[0], qdata.shape[0])


def plain_to_packed(plain: PlainInt4Weight) -> PackedWeight:
    """The plain tensors as a PackedWeight dict (``zero_point`` only in the ``int`` domain)."""
    packed = {"qdata": plain.qdata, "scale": plain.scale}
    if plain.zero_point is not None:
        packed["zero_point"] = plain.zero_point
    return packed


def packed_to_plain(packed: PackedWeight, spec: LinearSpec) -> PlainInt4Weight:
    """Inverse of :func:`plain_to_packed`."""
    return PlainInt4Weight(packed["qdata"], packed["scale"], packed.get("zero_point"),
                           spec.group_size, (spec.n, spec.k))


class ReferenceKernel(LinearKernel):
    """Pure torch; any device; every dtype, group size, domain and activation mode."""

    name = "reference"

    @classmethod
    def is_supported(cls, device):
        return True, None

    @classmethod
    def can_implement(cls, spec: LinearSpec):
        if spec.dtype not in ALLOWED_DTYPES:
            return False, f"activation dtype {dtype_name(spec.dtype)} not in float32/bfloat16/float16"
        return True, None

    def prepack(self, plain: PlainInt4Weight) -> PackedWeight:
        return plain_to_packed(plain)

    def unpack(self, packed: PackedWeight) -> PlainInt4Weight:
        return packed_to_plain(packed, self.spec)

    def apply(self, x, packed, bias):
        s = self.spec
        x2 = x.reshape(-1, s.k)
        zp = packed.get("zero_point")
        if s.act_mode.is_a8:
            y = torch.ops.nybble.reference_a8w4(x2, packed["qdata"], packed["scale"], zp, s.group_size,
                                                s.act_mode.value == "a8_asym", bias)
        else:
            y = torch.ops.nybble.reference_a16w4(x2, packed["qdata"], packed["scale"], zp, s.group_size, bias)
        return y.reshape(*x.shape[:-1], s.n)
