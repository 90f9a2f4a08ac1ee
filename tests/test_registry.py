import pytest
import torch

from nybble.kernels import registry
from nybble.kernels.base import LinearSpec


def spec(**kw):
    base = dict(n=64, k=256, group_size=128, domain="none", act_mode="a16", dtype=torch.bfloat16,
                device_type="cpu", name="model.layers.0.mlp")
    base.update(kw)
    return LinearSpec(**base)


def test_choose_returns_first_eligible_in_priority_order():
    names = [v.name for v in registry.explain(spec())]
    assert names == [n for n, _ in registry.PRIORITY["cpu"]]
    chosen = registry.choose(spec())
    first_ok = next(v for v in registry.explain(spec()) if v.ok)
    assert chosen is first_ok.kernel


def test_refusals_have_reasons():
    verdicts = registry.explain(spec(act_mode="a8_sym", domain="int"))
    torch_int4 = next(v for v in verdicts if v.name == "torch_int4_cpu")
    assert not torch_int4.ok and "A16W4 only" in torch_int4.reason
    for v in verdicts:
        assert v.ok or v.reason


def test_disabled_kernels_env(monkeypatch):
    monkeypatch.setenv("NYBBLE_DISABLED_KERNELS", "nybble_cpu, torch_int4_cpu")
    assert registry.choose(spec()).name == "reference"
    v = next(v for v in registry.explain(spec()) if v.name == "torch_int4_cpu")
    assert "NYBBLE_DISABLED_KERNELS" in v.reason


def test_no_kernel_error_lists_every_kernel(monkeypatch):
    monkeypatch.setenv("NYBBLE_DISABLED_KERNELS", "nybble_cpu,torch_int4_cpu,reference")
    with pytest.raises(registry.NoKernelError) as err:
        registry.choose(spec())
    msg = str(err.value)
    assert "model.layers.0.mlp" in msg
    for name, _ in registry.PRIORITY["cpu"]:
        assert f"- {name}:" in msg


def test_force():
    assert registry.choose(spec(), force="reference").name == "reference"
    with pytest.raises(registry.NoKernelError, match="no kernel named 'nope'"):
        registry.choose(spec(), force="nope")
    with pytest.raises(registry.NoKernelError, match="forced kernel 'torch_int4_cpu' cannot run"):
        registry.choose(spec(n=40), force="torch_int4_cpu")


def test_unknown_device_falls_back_to_reference():
    assert registry.choose(spec(device_type="meta")).name == "reference"
