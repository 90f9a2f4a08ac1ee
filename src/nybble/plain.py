"""The plain int4 weight: the canonical layout every algorithm produces and every checkpoint stores."""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from . import primitives as P
from .types import ALLOWED_DTYPES, ZeroPointDomain, dtype_name


@dataclass(frozen=True)
class PlainInt4Weight:
    """One linear layer's int4 weight in the plain layout.

    Attributes:
        qdata: int32 ``(N, K/8)``, ``plain_int32`` packing (element k of row n in word k//8,
            bits ``4*(k%8)``, least significant nibble first); codes unsigned 0..15.
        scale: ``(N, G)`` float32/bfloat16/float16 (the model's dtype), ``G = K // group_size``
            (``G = 1`` when ``group_size == -1``). Rows are output features.
        zero_point: ``(N, G)`` int8 with values 0..15 in the ``int`` domain; ``None`` in the
            ``none`` domain (implicit zero point 8).
        group_size: 32/64/128/256, or -1 for per-channel.
        shape: ``(N, K)`` of the dense weight.
    """

    qdata: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor | None
    group_size: int
    shape: tuple[int, int]

    def __post_init__(self):
        object.__setattr__(self, "shape", (int(self.shape[0]), int(self.shape[1])))

    @property
    def n(self) -> int:
        return self.shape[0]

    @property
    def k(self) -> int:
        return self.shape[1]

    @property
    def domain(self) -> ZeroPointDomain:
        return ZeroPointDomain.NONE if self.zero_point is None else ZeroPointDomain.INT

    @property
    def num_groups(self) -> int:
        return self.k // P.group_len(self.group_size, self.k)

    @property
    def dtype(self) -> torch.dtype:
        """The scale's (and so the model's) dtype."""
        return self.scale.dtype

    @property
    def device(self) -> torch.device:
        return self.qdata.device

    @classmethod
    def from_codes(cls, codes: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None,
                   group_size: int) -> "PlainInt4Weight":
        """Pack ``codes`` (``(N, K)`` uint8 0..15) with their ``(N, G)`` parameters."""
        return cls(P.pack_int32(codes), scale, zero_point, group_size, tuple(codes.shape))

    @classmethod
    def from_float(cls, w: torch.Tensor, group_size: int, domain: ZeroPointDomain | str,
                   scale_dtype: torch.dtype | None = None) -> "PlainInt4Weight":
        """Round-to-nearest quantization of an ``(N, K)`` float weight."""
        codes, scale, zero = P.quantize_rtn(w, group_size, domain, scale_dtype)
        return cls.from_codes(codes, scale, zero, group_size)

    def codes(self) -> torch.Tensor:
        """``(N, K)`` uint8 codes 0..15."""
        return P.unpack_int32(self.qdata)

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Dense ``(N, K)`` weight ``(q - z) * s`` (fp32 math) in ``dtype`` (default: the scale's)."""
        return P.dequantize(self.codes(), self.scale, self.zero_point, self.group_size, dtype or self.dtype)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "PlainInt4Weight":
        """Move all tensors to ``device``; cast the scale to ``dtype`` (codes and zero points are integers)."""
        def mv(t):
            return None if t is None else t.to(device)
        scale = self.scale.to(device=device, dtype=dtype) if dtype is not None else mv(self.scale)
        return replace(self, qdata=mv(self.qdata), scale=scale, zero_point=mv(self.zero_point))

    def narrow_rows(self, start: int, length: int) -> "PlainInt4Weight":
        """Rows ``start:start+length`` (output features): a slice along N, groups untouched."""
        if start < 0 or length <= 0 or start + length > self.n:
            raise ValueError(f"row slice [{start}:{start + length}] out of range for N={self.n}")
        sl = slice(start, start + length)
        zp = None if self.zero_point is None else self.zero_point[sl].contiguous()
        return replace(self, qdata=self.qdata[sl].contiguous(), scale=self.scale[sl].contiguous(),
                       zero_point=zp, shape=(length, self.k))

    def nbytes(self) -> int:
        """Bytes of the plain tensors (codes, scales, zero points)."""
        total = self.qdata.numel() * 4 + self.scale.numel() * self.scale.element_size()
        return total + (0 if self.zero_point is None else self.zero_point.numel())

    def validate(self, where: str = "weight") -> None:
        """Raise ValueError naming ``where`` if shapes, dtypes or value ranges break the layout."""
        n, k = self.shape
        P.check_group_size(self.group_size, k, where)
        g = self.num_groups
        if k % 8:
            raise ValueError(f"{where}: K={k} must be a multiple of 8 for the plain_int32 layout")
        if self.qdata.dtype != torch.int32 or tuple(self.qdata.shape) != (n, k // 8):
            raise ValueError(f"{where}: qdata must be int32 of shape {(n, k // 8)}, "
                             f"got {self.qdata.dtype} {tuple(self.qdata.shape)}")
        if self.scale.dtype not in ALLOWED_DTYPES or tuple(self.scale.shape) != (n, g):
            raise ValueError(f"{where}: scale must be float32/bfloat16/float16 of shape {(n, g)}, "
                             f"got {dtype_name(self.scale.dtype)} {tuple(self.scale.shape)}")
        if not torch.isfinite(self.scale).all():
            raise ValueError(f"{where}: scale contains NaN or Inf")
        if self.zero_point is not None:
            zp = self.zero_point
            if zp.dtype != torch.int8 or tuple(zp.shape) != (n, g):
                raise ValueError(f"{where}: zero_point must be int8 of shape {(n, g)}, "
                                 f"got {zp.dtype} {tuple(zp.shape)}")
            if zp.numel() and (int(zp.min()) < 0 or int(zp.max()) > 15):
                raise ValueError(f"{where}: zero_point values must lie in 0..15")

    def __repr__(self) -> str:
        gs = "per-channel" if self.group_size == -1 else f"group {self.group_size}"
        return (f"PlainInt4Weight(N={self.n}, K={self.k}, {gs}, zero_point={self.domain.value}, "
                f"scale={dtype_name(self.dtype)}, device={self.device})")
