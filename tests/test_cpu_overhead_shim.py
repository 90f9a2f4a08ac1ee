"""nybble.kernels.cpu_shim: the C++ dispatcher kernels of the decode ops give exactly what the Python
kernels give (same kernels, minus the Python frame), raise the same errors, and can be switched off again.

The shim is compiled once per torch version / source (~10-20 s; in the test run's cache directory, see
conftest.py: by this module's fixture, or earlier by the first compile trace of a nybble CPU op in this process or
another); its default path (when it is built / loaded, failures, concurrency) is tested in
tests/test_cpu_shim_default.py."""
from __future__ import annotations

import pytest
import torch

cpu = pytest.importorskip("nybble.kernels.cpu")
if not cpu.available_isas():
    pytest.skip("nybble._C is not available", allow_module_level=True)
import nybble  # noqa: E402
from nybble.kernels import cpu_attention, cpu_oplib, cpu_shim  # noqa: E402
from nybble.kernels import reference as R  # noqa: E402,F401  (registers the reference ops)
from nybble.kernels import torch_int4_cpu  # noqa: E402,F401

OPS = tuple(cpu_shim.OPS)
N = torch.ops.nybble


@pytest.fixture(scope="module")
def shim():
    """Builds/loads the shim; yields with the Python kernels active, tests switch it on with ``on()``; afterwards
    the shim is installed again, as the library's default leaves it."""
    assert cpu_shim.enable(), cpu_shim.status()  # a compiler is needed (as for torch.compile's inductor)
    cpu_shim.disable()
    yield
    assert cpu_shim.enable(), cpu_shim.status()


class on:
    """``with on():`` the shim's kernels; the Python ones again afterwards."""

    def __enter__(self):
        assert cpu_shim.enable(), cpu_shim.status()

    def __exit__(self, *exc):
        cpu_shim.disable()


def both(op, *args):
    """(Python kernel's result, shim kernel's result) of ``op(*args)``."""
    assert all(cpu_oplib.python_impl_active(o) for o in OPS)
    py = op(*args)
    with on():
        assert not any(cpu_oplib.python_impl_active(o) for o in OPS)
        c = op(*args)
    assert all(cpu_oplib.python_impl_active(o) for o in OPS)
    return py, c


def packed_linear(n, k, group, act_mode, zero_point="int", bias=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    lin = torch.nn.Linear(k, n, bias=bias)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(n, k, generator=g) * 0.05)
        if bias:
            lin.bias.copy_(torch.randn(n, generator=g))
    m = torch.nn.Sequential(lin)
    if act_mode == "a16":
        cfg = nybble.Int4WeightOnlyConfig(group_size=group, zero_point=zero_point)
    else:
        cfg = nybble.Int8DynamicActivationInt4WeightConfig(group_size=group, zero_point=zero_point,
                                                           act_mapping="asymmetric" if act_mode == "a8_asym" else "symmetric")
    nybble.quantize(m, cfg, force_kernel="nybble_cpu", show_progress=False)
    return m[0]


@pytest.mark.parametrize("act_mode", ["a16", "a8_sym", "a8_asym"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("m,group,bias,strided", [(1, 128, False, False), (3, 32, True, True), (5, -1, True, False),
                                                  (0, 64, False, False)])
def test_linear_ops_equal_python_kernels(shim, act_mode, dtype, m, group, bias, strided):
    n, k = 40, 256
    layer = packed_linear(n, k, group, act_mode, bias=bias, seed=m + group)
    p = layer.packed()
    g = torch.Generator().manual_seed(7)
    x = torch.randn(m, 2 * k if strided else k, generator=g).to(dtype)
    if strided:
        x = x[:, ::2]  # column stride 2: both kernels copy it
    b = layer.bias.detach().to(dtype) if bias else None  # a non-fp32 bias: both convert it
    isa = cpu.selected_isa()
    if act_mode == "a16":
        args = (x, p["qw"], p["scale"], p.get("zero_point"), n, group, b, isa)
        py, c = both(N.cpu_a16w4.default, *args)
    else:
        asym = act_mode == "a8_asym"
        args = (x, p["qw"], p["scale"], p.get("zero_point"), p.get("wcomp"), n, group, asym, b, isa)
        py, c = both(N.cpu_a8w4.default, *args)
    assert c.dtype == dtype and c.shape == (m, n)
    assert torch.equal(py, c)


def test_linear_against_reference_op(shim):
    """The shim's A8W4 result equals nybble's reference op (integer sums exact, fp32 rounding)."""
    n, k, group = 48, 512, 128
    layer = packed_linear(n, k, group, "a8_sym", seed=3)
    plain = layer.plain()
    p = layer.packed()
    x = torch.randn(3, k, generator=torch.Generator().manual_seed(5))
    ref = torch.ops.nybble.reference_a8w4(x, plain.qdata, plain.scale, plain.zero_point, group, False, None)
    with on():
        y = N.cpu_a8w4.default(x, p["qw"], p["scale"], p["zero_point"], None, n, group, False, None, cpu.selected_isa())
    assert torch.allclose(y, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())


def test_errors_are_the_same(shim):
    layer = packed_linear(32, 128, 32, "a8_sym")
    p = layer.packed()
    isa = cpu.selected_isa()
    bad = [
        ((torch.randn(2, 64), p["qw"], p["scale"], p["zero_point"], None, 32, 32, False, None, isa), ValueError),
        ((torch.randn(2, 128).int(), p["qw"], p["scale"], p["zero_point"], None, 32, 32, False, None, isa), ValueError),
        ((torch.randn(2, 128), p["qw"], p["scale"], p["zero_point"], None, 32, 32, True, None, isa), ValueError),
        ((torch.randn(2, 128), p["qw"], p["scale"], p["zero_point"], None, 32, 32, False, torch.ones(3), isa),
         ValueError),
        ((torch.randn(2, 128), p["qw"], p["scale"].int(), p["zero_point"], None, 32, 32, False, None, isa), TypeError),
        ((torch.randn(2, 128), p["qw"], p["scale"], p["zero_point"], None, 32, 32, False, None, "no_such_isa"),
         ValueError),
    ]
    for args, exc in bad:
        with pytest.raises(exc):
            N.cpu_a8w4.default(*args)
        with on(), pytest.raises(exc):
            N.cpu_a8w4.default(*args)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("mask_kind", ["none", "bool", "float"])
def test_attention_equals_python_kernel(shim, dtype, mask_kind):
    g = torch.Generator().manual_seed(2)
    h, hkv, cap, d = 8, 2, 24, 64
    q = torch.randn(1, h, 1, d, generator=g).to(dtype)
    k = torch.randn(1, hkv, cap, d, generator=g).to(dtype)
    v = torch.randn(1, hkv, 2 * cap, d, generator=g).to(dtype)[:, :, ::2]  # strided positions
    mask = None
    if mask_kind == "bool":
        mask = torch.ones(1, 1, 1, cap, dtype=torch.bool)
        mask[..., 17:] = False
    elif mask_kind == "float":
        mask = torch.zeros(1, 1, 1, cap, dtype=dtype)
        mask[..., 17:] = -torch.inf
        mask[..., 3] = -1.5
    py, c = both(N.cpu_decode_attention.default, q, k, v, 0.2 if mask_kind == "none" else None, mask)
    assert c.shape == (1, 1, h, d) and c.dtype == dtype
    assert torch.equal(py, c)
    with on(), pytest.raises(ValueError):
        N.cpu_decode_attention.default(q, k, v[:, :1], None, None)


def test_torch_int4_op_equals_python_kernel(shim):
    m = torch.nn.Sequential(torch.nn.Linear(256, 64, bias=True).bfloat16())
    nybble.quantize(m, nybble.Int4WeightOnlyConfig(group_size=64, zero_point="none"), force_kernel="torch_int4_cpu",
                    show_progress=False)
    p = m[0].packed()
    x = torch.randn(3, 256).bfloat16()
    py, c = both(N.torch_int4_cpu_a16w4.default, x, p["weight_int4pack"], p["scale_and_zeros"], 64, m[0].bias)
    assert torch.equal(py, c)


def test_compiled_decode_same_tokens(shim):
    """A small fused A8W4 Llama with nybble's attention, compiled (cpp_wrapper, as the benchmark runs it):
    the same tokens and logits with the shim's kernels as with the Python ones; enable/disable switch back
    and forth without recompiling."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from nybble.bench.e2e_cpu import Decoder
    from nybble.kernels.cpu_fuse import fuse_siblings
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=256, max_position_embeddings=64)
    model = LlamaForCausalLM(cfg).to(torch.bfloat16).eval()
    nybble.quantize(model, nybble.Int8DynamicActivationInt4WeightConfig(group_size=32, zero_point="int",
                                                                        act_mapping="symmetric"),
                    force_kernel="nybble_cpu", show_progress=False)
    fuse_siblings(model)
    cpu_attention.use_decode_attention(model)
    dec = Decoder(model, compile=True, max_len=32, cpp_wrapper=True)
    ids = torch.randint(0, 256, (1, 6), generator=torch.Generator().manual_seed(1))

    def run():
        with torch.inference_mode():
            toks = [dec.start(ids)]
            for _ in range(5):
                toks.append(dec.step(toks[-1]))
        return torch.cat(toks, 1)

    py = run()
    graphs = Decoder.graphs()
    with on():
        c = run()
    assert torch.equal(py, c)
    assert torch.equal(run(), py)
    assert Decoder.graphs() == graphs  # the same compiled graph served both


def test_status_and_disable(shim):
    with on():
        assert cpu_shim.status()["installed"] == list(OPS)
    assert cpu_shim.status()["installed"] == []
    assert all(cpu_oplib.python_impl_active(o) for o in OPS)
    cpu_shim.disable()  # no-op
    with pytest.raises(ValueError):
        cpu_shim.enable(("not_an_op",))


def test_enable_from_env(shim, monkeypatch):
    monkeypatch.setenv("NYBBLE_CPU_SHIM", "0")
    assert not cpu_shim.enable_from_env() and cpu_shim.status()["installed"] == []
    assert cpu_shim.status()["disabled"] is not None
    monkeypatch.setenv("NYBBLE_CPU_SHIM", "1")
    try:
        assert cpu_shim.enable_from_env() and cpu_shim.status()["installed"] == list(OPS)
    finally:
        cpu_shim.disable()
    assert all(cpu_oplib.python_impl_active(o) for o in OPS)
