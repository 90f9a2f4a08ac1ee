import pytest
import torch
from torch import nn

import nybble
from nybble import Int4Linear, PlainInt4Weight


def make_layer(n=48, k=256, group=64, domain="int", dtype=torch.float32, act_mode="a16", bias=True, **kw):
    plain = PlainInt4Weight.from_float(torch.randn(n, k), group, domain, dtype)
    b = torch.randn(n).to(dtype) if bias else None
    return Int4Linear(plain, b, act_mode, name="blk.proj", **kw), plain


def test_forward_matches_dequantized_linear_3d_and_noncontiguous():
    layer, plain = make_layer()
    x = torch.randn(2, 5, 256)
    w = plain.dequantize()
    expect = x @ w.t() + layer.bias
    assert torch.allclose(layer(x), expect, atol=1e-4)
    xt = torch.randn(256, 7).t()  # non-contiguous (7, 256)
    assert torch.allclose(layer(xt), xt @ w.t() + layer.bias, atol=1e-4)


def test_state_dict_round_trip_is_exact():
    layer, plain = make_layer(domain="int")
    sd = layer.state_dict()
    assert set(sd) == {"qdata", "scale", "zero_point", "bias"}
    other, _ = make_layer(domain="int")
    other.load_state_dict(sd)
    assert torch.equal(other.plain().qdata, plain.qdata)
    assert torch.equal(other.plain().scale, plain.scale)
    x = torch.randn(3, 256)
    assert torch.equal(other(x), layer(x))


def test_load_state_dict_rejects_mis_shaped():
    layer, _ = make_layer()
    sd = layer.state_dict()
    sd["scale"] = sd["scale"][:, :2]
    with pytest.raises(RuntimeError, match="scale must be"):
        layer.load_state_dict(sd)


def test_load_state_dict_strict_missing_keys():
    layer, _ = make_layer()
    sd = layer.state_dict()
    del sd["qdata"]
    with pytest.raises(RuntimeError, match="qdata"):
        layer.load_state_dict(sd)


def test_to_dtype_rechooses_kernel_and_keeps_codes():
    layer, plain = make_layer(domain="none", n=64)
    layer.to(torch.bfloat16)
    assert layer.dtype == torch.bfloat16
    assert layer.plain().scale.dtype == torch.bfloat16 and layer.bias.dtype == torch.bfloat16
    assert torch.equal(layer.plain().qdata, plain.qdata)
    x = torch.randn(4, 256, dtype=torch.bfloat16)
    assert layer(x).dtype == torch.bfloat16


def test_slicing_along_n_and_k():
    layer, plain = make_layer(n=48, k=256, group=64)
    x = torch.randn(3, 256)
    full = layer(x)
    top = layer.narrow_out(16, 16)
    assert torch.allclose(top(x), full[:, 16:32], atol=1e-5)
    left, right = layer.narrow_in(0, 128), layer.narrow_in(128, 128)
    parts = left(x[:, :128]) + right(x[:, 128:]) + layer.bias
    assert torch.allclose(parts, full, atol=1e-4)
    with pytest.raises(ValueError, match="group boundaries"):
        layer.narrow_in(32, 128)


def test_repr_says_what_it_is():
    layer, _ = make_layer(group=-1, act_mode="a8_asym")
    r = repr(layer)
    for part in ("Int4Linear", "in_features=256", "out_features=48", "per-channel", "zero_point=int",
                 "act=a8_asym", "kernel="):
        assert part in r


def test_input_scale_is_applied():
    plain = PlainInt4Weight.from_float(torch.randn(16, 64), 32, "none")
    s = torch.rand(64) + 0.5
    layer = Int4Linear(plain, None, input_scale=s)
    x = torch.randn(2, 64)
    assert torch.allclose(layer(x), (x / s) @ plain.dequantize().t(), atol=1e-5)
    assert "input_scale" in layer.state_dict()


def test_torch_compile_graph_contains_nybble_op():
    model = nn.Sequential(nn.Linear(256, 64), nn.GELU(), nn.Linear(64, 32))
    nybble.quantize(model, nybble.Int4WeightOnlyConfig(group_size=32))
    x = torch.randn(4, 256)
    eager = model(x)
    seen = []

    def backend(gm, example_inputs):
        seen.extend(str(node.target) for node in gm.graph.nodes)
        return gm.forward

    torch._dynamo.reset()
    out = torch.compile(model, backend=backend, fullgraph=True)(x)
    assert any("nybble." in s for s in seen), seen
    assert torch.allclose(out, eager)
    torch._dynamo.reset()
    assert torch.allclose(torch.compile(model)(x), eager, atol=1e-5)  # inductor runs the op too


class _CountingEntry:
    """A kernel's eager shortcut for the tests: counts its calls, answers with the reference result or
    declines (None)."""

    def __init__(self, layer, decline=False):
        self.layer, self.decline, self.calls = layer, decline, 0
        self.w = layer.plain().dequantize()

    def __call__(self, x):
        self.calls += 1
        if self.decline:
            return None
        y = x @ self.w.t()
        return y if self.layer.bias is None else y + self.layer.bias


def _arm(layer, monkeypatch, decline=False):
    entry = _CountingEntry(layer, decline)
    monkeypatch.setattr(layer.kernel, "eager_entry", lambda: entry, raising=False)
    return entry


def test_eager_entry_is_used_while_the_layer_tensors_are_unchanged(monkeypatch):
    layer, plain = make_layer(bias=True)
    entry = _arm(layer, monkeypatch)
    x = torch.randn(3, 256)
    first = layer(x)                       # the ordinary path; arms the shortcut
    assert entry.calls == 0 and layer._eager is not None
    assert torch.allclose(layer(x), first, atol=1e-4) and entry.calls == 1
    # a new buffer object (same values) disarms it until the next ordinary call
    layer.packed_scale = layer.packed_scale.clone()
    layer(x)
    assert entry.calls == 1
    layer(x)
    assert entry.calls == 2
    # a new bias: the shortcut's result would be stale, so the ordinary path runs first
    layer.bias = nn.Parameter(torch.randn(48), requires_grad=False)
    expect = x @ plain.dequantize().t() + layer.bias
    assert torch.allclose(layer(x), expect, atol=1e-4) and entry.calls == 2
    # an input scale set afterwards: never the shortcut (it does not divide)
    layer.input_scale = torch.full((256,), 2.0)
    assert torch.allclose(layer(x), (x / 2) @ plain.dequantize().t() + layer.bias, atol=1e-4)
    layer(x)
    assert entry.calls == 2


def test_eager_entry_declining_falls_back(monkeypatch):
    layer, plain = make_layer(bias=False)
    entry = _arm(layer, monkeypatch, decline=True)
    x = torch.randn(2, 256)
    layer(x)
    y = layer(x)
    assert entry.calls == 1 and torch.allclose(y, x @ plain.dequantize().t(), atol=1e-4)
    with pytest.raises(ValueError, match="blk.proj: input has 100 features"):
        layer(torch.randn(2, 100))


def test_eager_entry_is_not_used_while_compiling(monkeypatch):
    layer, plain = make_layer(bias=False)
    entry = _arm(layer, monkeypatch)
    x = torch.randn(2, 256)
    layer(x)
    torch._dynamo.reset()
    compiled = torch.compile(layer, backend="eager", fullgraph=True)
    y = compiled(x)
    assert entry.calls == 0 and torch.allclose(y, x @ plain.dequantize().t(), atol=1e-4)


def test_eager_entry_survives_a_kernel_change_and_deleted_buffers(monkeypatch):
    layer, plain = make_layer(bias=False)
    entry = _arm(layer, monkeypatch)
    x = torch.randn(2, 256)
    layer(x)
    assert layer._eager is not None
    # another kernel (other buffer names): the shortcut is dropped, the new kernel's path runs
    layer.repack(force_kernel="reference")
    assert layer._eager is None
    assert torch.allclose(layer(x), x @ plain.dequantize().t(), atol=1e-4) and entry.calls == 0
    # a shortcut armed for buffer names the layer no longer has (deleted): no KeyError, ordinary path
    entry = _arm(layer, monkeypatch)
    layer(x)
    layer.register_buffer("packed_extra", torch.zeros(1), persistent=False)
    layer._eager = (entry, __import__("operator").itemgetter("packed_extra", "input_scale"),
                    (id(layer.packed_extra), id(None)), id(None))
    del layer.packed_extra
    assert torch.allclose(layer(x), x @ plain.dequantize().t(), atol=1e-4) and entry.calls == 0
