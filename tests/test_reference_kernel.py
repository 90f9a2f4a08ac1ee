"""The reference kernel against float math (A16W4) and against an independent float64 model of the
quantized arithmetic (A8W4)."""
import numpy as np
import pytest
import torch

from nybble.kernels.base import LinearSpec
from nybble.kernels.reference import ReferenceKernel
from nybble.plain import PlainInt4Weight


def _layer(n, k, group, domain, dtype, act_mode="a16"):
    w = torch.randn(n, k)
    plain = PlainInt4Weight.from_float(w, group, domain, dtype)
    kern = ReferenceKernel(LinearSpec.for_weight(plain, act_mode))
    return plain, kern, kern.prepack(plain)


@pytest.mark.parametrize("dtype,rtol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2), (torch.float16, 4e-3)])
@pytest.mark.parametrize("group", [32, 128, -1])
@pytest.mark.parametrize("domain", ["none", "int"])
def test_a16w4_matches_float_math(dtype, rtol, group, domain):
    n, k = 72, 384
    plain, kern, packed = _layer(n, k, group, domain, dtype)
    x = torch.randn(2, 3, k).to(dtype)
    bias = torch.randn(n).to(dtype)
    y = kern.apply(x, packed, bias)
    assert y.dtype == dtype and y.shape == (2, 3, n)
    expect = x.double() @ plain.dequantize(torch.float64).t() + bias.double()
    scale = expect.abs().max()
    assert (y.double() - expect).abs().max() <= rtol * scale * 4


def _independent_a8w4(x, codes, scale, zero, group, asym):
    """float64 numpy model: per-token quantization, per-group integer sums, scaling."""
    x = x.astype(np.float32)
    m, k = x.shape
    n = codes.shape[0]
    g = k if group == -1 else group
    out = np.zeros((m, n))
    for i in range(m):
        row = x[i]
        if asym:
            lo, hi = min(row.min(), np.float32(0)), max(row.max(), np.float32(0))
            s = np.float32((hi - lo) / np.float32(255)) or np.float32(1)
            z = np.clip(np.rint(np.float32(-lo) / s), 0, 255)
            q = np.clip(np.rint(row / s) + z, 0, 255)
        else:
            s = np.float32(np.abs(row).max() / np.float32(127)) or np.float32(1)
            z = 0.0
            q = np.clip(np.rint(row / s), -127, 127)
        a = (q - z).astype(np.float64)
        for j in range(k // g):
            wz = codes[:, j * g:(j + 1) * g].astype(np.float64) - (8 if zero is None else zero[:, j:j + 1])
            acc = wz @ a[j * g:(j + 1) * g]           # exact integers
            out[i] += acc * scale[:, j].astype(np.float64)
        out[i] *= float(s)
    return out


@pytest.mark.parametrize("asym", [False, True])
@pytest.mark.parametrize("group,domain", [(32, "int"), (64, "none"), (-1, "int"), (128, "none")])
def test_a8w4_matches_independent_float64(asym, group, domain):
    n, k = 40, 256
    plain, kern, packed = _layer(n, k, group, domain, torch.float32, "a8_asym" if asym else "a8_sym")
    x = torch.randn(5, k) * torch.linspace(0.1, 3, k)
    x[1] = x[1].abs()  # a row with no negative value: asymmetric zero point at the edge
    y = kern.apply(x, packed, None).double().numpy()
    zero = None if plain.zero_point is None else plain.zero_point.numpy().astype(np.float64)
    expect = _independent_a8w4(x.numpy(), plain.codes().numpy(), plain.scale.numpy(), zero, group, asym)
    np.testing.assert_allclose(y, expect, rtol=1e-5, atol=1e-5 * np.abs(expect).max())


def test_a8w4_is_close_to_float_math():
    plain, kern, packed = _layer(64, 512, 128, "int", torch.float32, "a8_sym")
    x = torch.randn(4, 512)
    y = kern.apply(x, packed, None)
    expect = x @ plain.dequantize().t()
    assert (y - expect).abs().max() < 0.02 * expect.abs().max()


def test_a8w4_all_zero_rows_give_bias():
    plain, kern, packed = _layer(16, 64, 32, "none", torch.float32, "a8_asym")
    bias = torch.randn(16)
    y = kern.apply(torch.zeros(3, 64), packed, bias)
    assert torch.allclose(y, bias.expand(3, 16))
