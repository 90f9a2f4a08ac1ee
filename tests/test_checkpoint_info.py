"""``nybble info``: checkpoint summary with the kernel each layer gets, and the machine overview."""
from __future__ import annotations

import pytest

import nybble
from nybble.cli import main
from test_formats_common import tiny_llama


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("info") / "ck"
    model = tiny_llama()
    nybble.quantize(model, nybble.Int4WeightOnlyConfig(group_size=128, zero_point="none"),
                    filter_fn=lambda m, n: "mlp" in n, show_progress=False)
    nybble.save(model, d, algorithm="rtn")
    return d


def test_info_checkpoint_lists_layers_and_kernels(ckpt, capsys, monkeypatch):
    monkeypatch.setenv("NYBBLE_DISABLED_KERNELS", "nybble_cpu")
    assert main(["info", str(ckpt)]) == 0
    out = capsys.readouterr().out
    assert "LlamaForCausalLM" in out and "algorithm rtn" in out
    assert "int4 layers: 6" in out
    # gate/up: N=256 K=128; down: N=128 K=256, symmetric, weight-only
    assert "x4: N=256 K=128 group 128 zero_point=none act=a16" in out
    assert "x2: N=128 K=256 group 128 zero_point=none act=a16" in out
    assert "refused by nybble_cpu: disabled by NYBBLE_DISABLED_KERNELS" in out
    assert "CPU ISA path:" in out


def test_info_every_layer(ckpt, capsys):
    assert main(["info", str(ckpt), "--layers"]) == 0
    out = capsys.readouterr().out
    assert "model.layers.1.mlp.down_proj: N=128 K=256" in out


def test_info_machine_overview(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "kernels for cpu (priority order):" in out and "reference: available" in out


def test_info_bad_dir(tmp_path, capsys):
    assert main(["info", str(tmp_path)]) == 1
    assert "no config.json" in capsys.readouterr().err


def test_info_gptq_checkpoint(tmp_path, capsys):
    from nybble.formats.gptq import export_gptq
    model = tiny_llama()
    nybble.quantize(model, nybble.Int4WeightOnlyConfig(group_size=128), show_progress=False)
    export_gptq(model, tmp_path / "g")
    assert main(["info", str(tmp_path / "g")]) == 0
    out = capsys.readouterr().out
    assert "format: gptq" in out and "gptq_version 2" in out and "int4 layers: 15" in out
    assert "N=128 K=256 group 128 zero_point=int act=a16" in out
