"""Shared helpers of the GPU tests: random plain weights and the comparison against ``reference``."""
from __future__ import annotations

import torch

from nybble.kernels import reference  # noqa: F401  (registers nybble::reference_* ops)
from nybble.plain import PlainInt4Weight


def random_plain(n: int, k: int, group_size: int, domain: str, dtype: torch.dtype,
                 device="cuda") -> PlainInt4Weight:
    """Random codes 0..15, random positive scales ~0.01-0.03, random zero points (int domain)."""
    g = k if group_size == -1 else group_size
    codes = torch.randint(0, 16, (n, k), dtype=torch.uint8, device=device)
    scale = (torch.rand(n, k // g, device=device) * 0.02 + 0.01).to(dtype)
    zp = torch.randint(0, 16, (n, k // g), dtype=torch.int8, device=device) if domain == "int" else None
    return PlainInt4Weight.from_codes(codes, scale, zp, group_size)


def reference_out(x, plain: PlainInt4Weight, act: str, bias):
    if act == "a16":
        return torch.ops.nybble.reference_a16w4(x, plain.qdata, plain.scale, plain.zero_point,
                                                plain.group_size, bias)
    return torch.ops.nybble.reference_a8w4(x, plain.qdata, plain.scale, plain.zero_point, plain.group_size,
                                           act == "a8_asym", bias)


def assert_close_to_reference(y: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    """Both are rounded to the same 16-bit dtype from fp32 sums of the same products (only the
    summation order and the reference's extra rounding of the bias add differ): the largest
    difference must stay within a few output ulps of the largest output, which grows like sqrt(K)."""
    assert y.shape == ref.shape and y.dtype == ref.dtype, (what, y.shape, ref.shape, y.dtype, ref.dtype)
    assert torch.isfinite(y).all(), f"{what}: non-finite outputs"
    yf, rf = y.float(), ref.float()
    ulp = 2.0 ** -7 if y.dtype == torch.bfloat16 else 2.0 ** -10
    amax = rf.abs().max().item()
    err = (yf - rf).abs().max().item()
    assert err <= 2 * ulp * amax + 1e-4, f"{what}: max |y - ref| = {err:.4g} vs max |ref| = {amax:.4g}"
    rel = ((yf - rf).norm() / rf.norm().clamp_min(1e-12)).item()
    assert rel <= ulp, f"{what}: relative error {rel:.3g}"
