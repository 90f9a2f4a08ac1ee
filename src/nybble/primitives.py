"""Group-wise int4 primitives: choose parameters, quantize, dequantize, pack and unpack.

Conventions (the plain layout of DESIGN.md section 3):

* A weight ``w`` is ``(N, K)``: N output features (rows), K input features. Groups run along K:
  group ``j`` of row ``n`` is ``w[n, j*g:(j+1)*g]``; ``group_size == -1`` means one group per row.
* ``codes`` are the 4-bit values, always unsigned ``0..15``, dtype ``torch.uint8``, shape ``(N, K)``.
* ``scale`` is ``(N, G)`` with ``G = K // g`` (``G = 1`` per-channel), in the model's dtype.
* ``zero_point`` is ``(N, G)`` ``torch.int8`` with values ``0..15`` in the ``int`` domain and ``None``
  in the ``none`` domain (where the zero point is implicitly 8).
* Dequantization: ``w = (q - z) * s`` computed in fp32.

Packed forms of the codes:

* ``plain_int32``: int32 ``(N, K/8)``, element ``k`` in word ``k // 8`` at bits ``4*(k % 8)``
  (least significant nibble first). This is compressed-tensors' ``weight_packed``.
* ``plain_int8``: uint8 ``(N, K/2)``, element ``2i`` in the low nibble of byte ``i``, ``2i+1`` in the high.
"""
from __future__ import annotations

import torch

from .types import ALLOWED_GROUP_SIZES, ZeroPointDomain

QMIN, QMAX = 0, 15
#: implicit zero point of the symmetric (``none``) domain
SYMMETRIC_ZERO = 8
_NIBBLE_SHIFTS_INT32 = tuple(range(0, 32, 4))


def group_len(group_size: int, k: int) -> int:
    """Number of input features per group: ``k`` for per-channel (``-1``), else ``group_size``."""
    return k if group_size == -1 else group_size


def check_group_size(group_size: int, k: int, where: str = "weight") -> None:
    """Raise ValueError naming ``where`` unless ``group_size`` is allowed and divides ``k``."""
    if group_size not in ALLOWED_GROUP_SIZES:
        raise ValueError(f"{where}: group_size {group_size} is not allowed; use one of {ALLOWED_GROUP_SIZES}")
    if group_size != -1 and k % group_size != 0:
        raise ValueError(
            f"{where}: in_features K={k} is not divisible by group_size {group_size}; "
            f"use a group size that divides K, or -1 (per-channel)")


def _grouped(w: torch.Tensor, group_size: int) -> torch.Tensor:
    """(N, K) -> (N, G, g) view."""
    n, k = w.shape
    g = group_len(group_size, k)
    return w.reshape(n, k // g, g)


def choose_qparams(w: torch.Tensor, group_size: int, domain: ZeroPointDomain | str,
                   scale_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Min/max (``int``) or abs-max (``none``) parameters per group.

    Args:
        w: ``(N, K)`` float weight (any float dtype; math in fp32).
        group_size: 32/64/128/256 or -1.
        domain: ``none`` -> ``s = max|w| / 7.5`` (codes ``round(w/s) + 8`` clamped to 0..15, so the
            largest positive value may clip by half a step, as in GPTQ and compressed-tensors);
            ``int`` -> the group's range is widened to include 0, ``s = (max - min) / 15`` and
            ``z = round(-min / s)``, so 0.0 maps exactly to code ``z``.
        scale_dtype: dtype of the returned scale (default ``w.dtype``).

    Returns:
        ``scale`` ``(N, G)`` in ``scale_dtype``, never zero, finite;
        ``zero_point`` ``(N, G)`` int8 in 0..15, or ``None`` for ``none``.
    A group whose values are all equal or all zero gets a finite non-zero scale.
    """
    domain = ZeroPointDomain(domain)
    check_group_size(group_size, w.shape[-1])
    scale_dtype = scale_dtype or w.dtype
    wg = _grouped(w.float(), group_size)
    if domain is ZeroPointDomain.NONE:
        amax = wg.abs().amax(dim=-1)
        scale = amax / ((QMAX - QMIN) / 2)
        zero = None
    else:
        lo = wg.amin(dim=-1).clamp(max=0.0)
        hi = wg.amax(dim=-1).clamp(min=0.0)
        scale = (hi - lo) / (QMAX - QMIN)
        zero = None  # computed from the stored (rounded) scale below
    scale = _safe_scale(scale.to(scale_dtype))
    if domain is ZeroPointDomain.INT:
        zero = torch.round(-lo / scale.float()).clamp(QMIN, QMAX).to(torch.int8)
    return scale, zero


def _safe_scale(scale: torch.Tensor) -> torch.Tensor:
    """Replace zero scales (constant groups, or values that underflow the dtype) by the dtype's tiny."""
    if not torch.isfinite(scale).all():
        raise ValueError(f"scale overflows {scale.dtype}: the weight's range is too large for this dtype")
    tiny = torch.finfo(scale.dtype).tiny
    return torch.where(scale == 0, torch.full_like(scale, tiny), scale)


def quantize(w: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None,
             group_size: int) -> torch.Tensor:
    """Round ``w`` to codes with the given (stored) parameters.

    Args:
        w: ``(N, K)`` float.
        scale: ``(N, G)`` float (used as stored, upcast to fp32).
        zero_point: ``(N, G)`` int8 0..15, or ``None`` (symmetric: zero 8).
    Returns:
        codes ``(N, K)`` uint8 in 0..15: ``clamp(round(w / s) + z, 0, 15)``.
    """
    wg = _grouped(w.float(), group_size)
    s = scale.float().unsqueeze(-1)
    z = SYMMETRIC_ZERO if zero_point is None else zero_point.float().unsqueeze(-1)
    q = torch.round(wg / s) + z
    return q.clamp(QMIN, QMAX).to(torch.uint8).reshape(w.shape)


def dequantize(codes: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None,
               group_size: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(q - z) * s`` per group, computed in fp32, returned as ``(N, K)`` in ``dtype``.

    ``codes`` is ``(N, K)`` uint8/int 0..15; ``scale``/``zero_point`` as in :func:`quantize`.
    """
    qg = _grouped(codes.to(torch.float32), group_size)
    z = SYMMETRIC_ZERO if zero_point is None else zero_point.float().unsqueeze(-1)
    w = (qg - z) * scale.float().unsqueeze(-1)
    return w.reshape(codes.shape).to(dtype)


def pack_int32(codes: torch.Tensor) -> torch.Tensor:
    """``(N, K)`` codes 0..15 -> ``plain_int32`` int32 ``(N, K/8)``, least significant nibble first."""
    n, k = codes.shape
    if k % 8:
        raise ValueError(f"plain_int32 packing needs K divisible by 8, got K={k}")
    c = codes.to(torch.int32).reshape(n, k // 8, 8)
    out = torch.zeros(n, k // 8, dtype=torch.int32, device=codes.device)
    for i, sh in enumerate(_NIBBLE_SHIFTS_INT32):
        out |= (c[..., i] & 0xF) << sh  # bit 31 set for nibble 7 >= 8: int32 wraps, as intended
    return out


def unpack_int32(packed: torch.Tensor) -> torch.Tensor:
    """``plain_int32`` int32 ``(N, K/8)`` -> codes uint8 ``(N, K)``."""
    n, k8 = packed.shape
    # filled nibble by nibble: peak memory ~2 bytes per element instead of ~9 (loading large layers)
    out = torch.empty(n, k8, 8, dtype=torch.uint8, device=packed.device)
    for i, sh in enumerate(_NIBBLE_SHIFTS_INT32):
        out[..., i] = (packed >> sh) & 0xF
    return out.reshape(n, k8 * 8)


def pack_int8(codes: torch.Tensor) -> torch.Tensor:
    """``(N, K)`` codes 0..15 -> ``plain_int8`` uint8 ``(N, K/2)``: element 2i low nibble, 2i+1 high."""
    n, k = codes.shape
    if k % 2:
        raise ValueError(f"plain_int8 packing needs an even K, got K={k}")
    c = codes.to(torch.uint8).reshape(n, k // 2, 2)
    return (c[..., 0] & 0xF) | ((c[..., 1] & 0xF) << 4)


def unpack_int8(packed: torch.Tensor) -> torch.Tensor:
    """``plain_int8`` uint8 ``(N, K/2)`` -> codes uint8 ``(N, K)``."""
    n, k2 = packed.shape
    p = packed.to(torch.uint8)
    return torch.stack([p & 0xF, p >> 4], dim=-1).reshape(n, k2 * 2)


def quantize_rtn(w: torch.Tensor, group_size: int, domain: ZeroPointDomain | str,
                 scale_dtype: torch.dtype | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Round-to-nearest: ``(codes (N,K) uint8, scale (N,G), zero_point (N,G) int8 | None)``."""
    scale, zero = choose_qparams(w, group_size, domain, scale_dtype)
    return quantize(w, scale, zero, group_size), scale, zero


def _ieee_div(a: torch.Tensor, c: float) -> torch.Tensor:
    """``a / c`` as an IEEE division on every device: CUDA torch divides by a Python scalar as a
    multiplication by its reciprocal (not correctly rounded); a tensor divisor gets a true division."""
    return a / torch.full_like(a, c)


def quantize_activations(x: torch.Tensor, asymmetric: bool
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Dynamic per-token (per-row) int8 quantization of activations; the arithmetic every A8W4
    kernel reproduces bit for bit.

    Args:
        x: ``(M, K)`` float (math in fp32).
        asymmetric: ``False`` -> int8, ``amax = max|x|``, ``s = amax / 127``, ``z = 0``,
            ``q = clamp(rint(x / s), -127, 127)``;
            ``True`` -> uint8, ``lo = min(min x, 0)``, ``hi = max(max x, 0)``, ``s = (hi - lo) / 255``,
            ``z = clamp(rint(-lo / s), 0, 255)``, ``q = clamp(rint(x / s) + z, 0, 255)``.
            A row whose scale is 0 (all zeros) uses ``s = 1``. ``rint`` rounds half to even; the
            divisions are IEEE fp32 divisions (not multiplications by a reciprocal).
    Returns:
        ``q`` ``(M, K)`` int32 (int8 or uint8 range), ``scale`` ``(M,)`` fp32, ``zero`` ``(M,)`` int32.
    """
    xf = x.float()
    if asymmetric:
        lo = xf.amin(dim=-1).clamp(max=0.0)
        hi = xf.amax(dim=-1).clamp(min=0.0)
        s = _ieee_div(hi - lo, 255.0)
        s = torch.where(s == 0, torch.ones_like(s), s)
        z = torch.round(-lo / s).clamp(0, 255)
        q = (torch.round(xf / s[:, None]) + z[:, None]).clamp(0, 255)
    else:
        s = _ieee_div(xf.abs().amax(dim=-1), 127.0)
        s = torch.where(s == 0, torch.ones_like(s), s)
        z = torch.zeros_like(s)
        q = torch.round(xf / s[:, None]).clamp(-127, 127)
    return q.to(torch.int32), s, z.to(torch.int32)
