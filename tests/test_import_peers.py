"""Importers against checkpoints made the peers' way.

* compressed-tensors: layers compressed by the library's own ``PackedQuantizationCompressor``.
* GPTQ (v1 and v2, desc_act) and AWQ (GEMM): built here with packers written from each tool's
  documented layout (independently of nybble's own packing code), and, when the optional ``autoawq``
  package is importable, AWQ layers packed by AutoAWQ's own ``WQLinear_GEMM.from_linear`` (it installs
  on a CPU machine with ``pip install --no-deps autoawq accelerate``; verified here with autoawq 0.2.9).
  ``gptqmodel`` (7.7.0) is a source distribution whose build needs CUDA, so GPTQ is checked against
  the documented packing only.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import nybble
from nybble.formats.checkpoint import int4_layers
from nybble.formats.permuted import PermutedInputLinear
from nybble.formats.safetensors_io import CheckpointError
from test_formats_common import dequantized_layers, greedy, tiny_llama

AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]
IDS = torch.tensor([[1, 17, 99, 3, 42, 7]])


# -- independent reference packers, written from the formats' documentation ---------------------
def pack_along_rows(vals: torch.Tensor) -> torch.Tensor:
    """(R, C) ints 0..15 -> int32 (R/8, C): 8 consecutive rows per word, row 8w+i at bits 4i."""
    r, c = vals.shape
    out = torch.zeros(r // 8, c, dtype=torch.int64)
    for i in range(8):
        out |= (vals[i::8].to(torch.int64) & 0xF) << (4 * i)
    return torch.where(out >= 2**31, out - 2**32, out).to(torch.int32)


def pack_along_cols(vals: torch.Tensor, order=range(8)) -> torch.Tensor:
    """(R, C) ints 0..15 -> int32 (R, C/8): nibble i of word j holds column 8j + order[i]."""
    r, c = vals.shape
    out = torch.zeros(r, c // 8, dtype=torch.int64)
    for i, col in enumerate(order):
        out |= (vals[:, col::8].to(torch.int64) & 0xF) << (4 * i)
    return torch.where(out >= 2**31, out - 2**32, out).to(torch.int32)


def quantized_parts(layer) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """codes (N, K), scale (N, G), zero (N, G) of an int4 layer (zero 8 when symmetric)."""
    p = layer.plain()
    zero = p.zero_point if p.zero_point is not None else torch.full_like(p.scale, 8, dtype=torch.int8)
    return p.codes(), p.scale, zero


def write_ckpt(d: Path, model, tensors: dict, qcfg: dict) -> Path:
    d.mkdir(parents=True)
    layers = int4_layers(model)
    sd = {k: v.contiguous().clone() for k, v in model.state_dict().items()
          if not any(k.startswith(p + ".") for p in layers)}
    sd.update(tensors)
    save_file(sd, str(d / "model.safetensors"))
    cfg = model.config.to_dict()
    cfg["architectures"] = [type(model).__name__]
    cfg["dtype"] = "float32"
    cfg["quantization_config"] = qcfg
    (d / "config.json").write_text(json.dumps(cfg))
    return d


def gptq_tensors(model, version: int, g_idx_of=None) -> dict:
    out = {}
    for name, layer in int4_layers(model).items():
        codes, scale, zero = quantized_parts(layer)
        n, k = codes.shape
        g = scale.shape[1]
        gidx = (torch.arange(k) // (k // g)).to(torch.int32) if g_idx_of is None else g_idx_of[name]
        if g_idx_of is not None:  # codes given in checkpoint order: column k belongs to group gidx[k]
            codes = g_idx_of[name + ":codes"]
        stored_zero = zero.to(torch.int32) - (1 if version == 1 else 0)
        out[f"{name}.qweight"] = pack_along_rows(codes.t().contiguous())        # (K/8, N)
        out[f"{name}.qzeros"] = pack_along_cols(stored_zero.t().contiguous())    # (G, N/8)
        out[f"{name}.scales"] = scale.t().contiguous()                           # (G, N)
        out[f"{name}.g_idx"] = gidx
    return out


def awq_tensors(model) -> dict:
    out = {}
    for name, layer in int4_layers(model).items():
        codes, scale, zero = quantized_parts(layer)
        out[f"{name}.qweight"] = pack_along_cols(codes.t().contiguous(), AWQ_ORDER)    # (K, N/8)
        out[f"{name}.qzeros"] = pack_along_cols(zero.t().contiguous().to(torch.int32), AWQ_ORDER)
        out[f"{name}.scales"] = scale.t().contiguous()
    return out


@pytest.fixture(scope="module")
def quantized():
    """A tiny Llama quantized by nybble (asymmetric, group 128), its greedy tokens and dense weights."""
    model = tiny_llama(seed=3)
    nybble.quantize(model, nybble.Int4WeightOnlyConfig(group_size=128, zero_point="int"), show_progress=False)
    return model, greedy(model, IDS), dequantized_layers(model)


GPTQ_CFG = {"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": False, "sym": False}
AWQ_CFG = {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True, "version": "gemm"}


@pytest.mark.parametrize("kind", ["gptq_v1", "gptq_v2", "awq"])
def test_peer_checkpoints_load_exactly(quantized, tmp_path, kind):
    model, tokens, weights = quantized
    if kind == "awq":
        d = write_ckpt(tmp_path / kind, model, awq_tensors(model), AWQ_CFG)
    else:
        version = 1 if kind == "gptq_v1" else 2
        qcfg = dict(GPTQ_CFG, **({"checkpoint_format": "gptq_v2"} if version == 2 else {}))
        d = write_ckpt(tmp_path / kind, model, gptq_tensors(model, version), qcfg)
    loaded = nybble.load(d)
    got = dequantized_layers(loaded)
    assert got.keys() == weights.keys()
    assert all(torch.equal(got[k], weights[k]) for k in weights)
    assert greedy(loaded, IDS) == tokens
    assert loaded.nybble_info["quant_method"] == ("awq" if kind == "awq" else "gptq")


def test_gptq_symmetric_maps_to_none_domain(tmp_path):
    model = tiny_llama(seed=4)
    nybble.quantize(model, nybble.Int4WeightOnlyConfig(group_size=-1, zero_point="none"), show_progress=False)
    qcfg = dict(GPTQ_CFG, sym=True, group_size=-1)
    loaded = nybble.load(write_ckpt(tmp_path / "g", model, gptq_tensors(model, 1), qcfg))
    for layer in int4_layers(loaded).values():
        assert layer.kernel.spec.domain.value == "none"
    a, b = dequantized_layers(model), dequantized_layers(loaded)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert greedy(loaded, IDS) == greedy(model, IDS)


def _desc_act_checkpoint(model, tmp_path, seed=0):
    """GPTQ desc_act checkpoint: each layer's inputs assigned to groups by a random permutation."""
    gen = torch.Generator().manual_seed(seed)
    extra, dense = {}, {}
    for name, layer in int4_layers(model).items():
        codes, scale, zero = quantized_parts(layer)
        k, g = codes.shape[1], scale.shape[1]
        gidx = (torch.arange(k) // (k // g))[torch.randperm(k, generator=gen)].to(torch.int32)
        extra[name], extra[name + ":codes"] = gidx, codes
        # the dense weight this checkpoint means: w[n, k] = (q[n, k] - z[n, gidx[k]]) * s[n, gidx[k]]
        dense[name] = (codes.float() - zero.float()[:, gidx.long()]) * scale.float()[:, gidx.long()]
    qcfg = dict(GPTQ_CFG, desc_act=True, checkpoint_format="gptq_v2", group_size=32)
    return write_ckpt(tmp_path / "desc", model, gptq_tensors(model, 2, extra), qcfg), dense


def test_gptq_desc_act_unsorted_g_idx(tmp_path):
    model = tiny_llama(seed=3)
    nybble.quantize(model, nybble.Int4WeightOnlyConfig(group_size=32, zero_point="int"), show_progress=False)
    d, dense = _desc_act_checkpoint(model, tmp_path)
    loaded = nybble.load(d)
    layers = int4_layers(loaded)
    assert all(isinstance(m, PermutedInputLinear) for m in layers.values())
    got = dequantized_layers(loaded)
    assert all(torch.equal(got[k], dense[k]) for k in dense)
    # the layer computes x @ W.T for the checkpoint's W (activations permuted at run time)
    x = torch.randn(3, 128)
    ref = x @ dense["model.layers.0.self_attn.q_proj"].t()
    torch.testing.assert_close(layers["model.layers.0.self_attn.q_proj"](x), ref, rtol=1e-4, atol=1e-4)
    # a dense twin with the checkpoint's weights generates the same tokens
    twin = copy.deepcopy(tiny_llama(seed=3))
    with torch.no_grad():
        for name, w in dense.items():
            twin.get_submodule(name).weight.copy_(w)
    assert greedy(loaded, IDS) == greedy(twin, IDS)
    # and it survives nybble -> compressed-tensors (weight_g_idx) -> nybble and -> GPTQ -> nybble
    nybble.save(loaded, tmp_path / "ct")
    again = nybble.load(tmp_path / "ct")
    assert all(torch.equal(dequantized_layers(again)[k], dense[k]) for k in dense)
    from nybble.formats.gptq import export_gptq
    export_gptq(loaded, tmp_path / "gptq")
    back = nybble.load(tmp_path / "gptq")
    assert all(torch.equal(dequantized_layers(back)[k], dense[k]) for k in dense)
    assert greedy(back, IDS) == greedy(loaded, IDS)


@pytest.mark.parametrize("domain,gs", [("int", 128), ("none", -1)])
def test_nybble_to_gptq_to_nybble_exact(tmp_path, domain, gs):
    from nybble.formats.gptq import export_gptq
    model = tiny_llama(seed=5)
    nybble.quantize(model, nybble.Int4WeightOnlyConfig(group_size=gs, zero_point=domain), show_progress=False)
    export_gptq(model, tmp_path / "g")
    cfg = json.loads((tmp_path / "g" / "config.json").read_text())["quantization_config"]
    assert cfg["checkpoint_format"] == "gptq_v2" and cfg["sym"] == (domain == "none")
    loaded = nybble.load(tmp_path / "g")
    a, b = dequantized_layers(model), dequantized_layers(loaded)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert greedy(loaded, IDS) == greedy(model, IDS)


# -- compressed-tensors' own compressor ---------------------------------------------------------
@pytest.mark.parametrize("symmetric,strategy,act", [(False, "group", None), (True, "channel", None),
                                                     (True, "group", "sym"), (False, "channel", "asym")])
def test_compressed_tensors_compressor_checkpoints(tmp_path, symmetric, strategy, act):
    from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor as PQC
    from compressed_tensors.quantization import QuantizationArgs, QuantizationConfig, QuantizationScheme
    from nybble import primitives as P
    model = tiny_llama(seed=6)
    gs = 128 if strategy == "group" else None
    ia = None if act is None else QuantizationArgs(num_bits=8, type="int", symmetric=act == "sym",
                                                   strategy="token", dynamic=True)
    scheme = QuantizationScheme(targets=["Linear"], weights=QuantizationArgs(
        num_bits=4, type="int", symmetric=symmetric, strategy=strategy, group_size=gs), input_activations=ia)
    tensors, theirs = {}, {}
    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    for name in names:
        w = model.get_submodule(name).weight.detach()
        scale, zero = P.choose_qparams(w, gs or -1, "none" if symmetric else "int")
        local = {"weight": w, "weight_scale": scale}
        if not symmetric:
            local["weight_zero_point"] = (zero.to(torch.int16) - 8).to(torch.int8)   # ct's signed zero
        comp = PQC.compress(local, scheme)
        tensors.update({f"{name}.{k}": v for k, v in comp.items()})
        theirs[name] = PQC.decompress(comp, scheme)["weight"].float()
    qcfg = QuantizationConfig(config_groups={"group_0": scheme}, format="pack-quantized",
                              quantization_status="compressed").model_dump()
    qcfg.update(quant_method="compressed-tensors", version="0.20.0")
    # write_ckpt drops the dense tensors of int4 layers; here nothing is int4 yet, so drop the weights
    d = tmp_path / "ct"
    d.mkdir()
    sd = {k: v.contiguous() for k, v in model.state_dict().items() if k.rpartition(".")[0] not in names}
    sd.update(tensors)
    save_file(sd, str(d / "model.safetensors"))
    cfg = dict(model.config.to_dict(), architectures=["LlamaForCausalLM"], dtype="float32", quantization_config=qcfg)
    (d / "config.json").write_text(json.dumps(cfg, default=str))
    loaded = nybble.load(d)
    ours = dequantized_layers(loaded)
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    want_act = {None: "a16", "sym": "a8_sym", "asym": "a8_asym"}[act]
    assert {m.act_mode.value for m in int4_layers(loaded).values()} == {want_act}
    # same outputs as the model carrying compressed-tensors' decompressed weights, run densely
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for name, w in theirs.items():
            twin.get_submodule(name).weight.copy_(w)
        logits, ref = loaded(IDS).logits, twin(IDS).logits
    tol = 2e-3 if act is None else 0.15  # int8 activations differ from the dense float run
    assert (logits - ref).abs().max() <= tol * ref.abs().max()


# -- refusals -----------------------------------------------------------------------------------
@pytest.mark.parametrize("case,match", [
    ("gptq_bits", r"GPTQ checkpoint with bits=8; nybble reads only 4-bit GPTQ"),
    ("gptq_format", r"GPTQ checkpoint_format 'marlin' is not supported"),
    ("gptq_missing", r"tensor model.layers.0.mlp.up_proj.qzeros is missing"),
    ("gptq_scales", r"model.layers.0.mlp.up_proj.scales must be float of shape \(1, 256\)"),
    ("gptq_qweight", r"model.layers.0.mlp.up_proj.qweight has shape \(8, 256\) = \(K/8, N\) for N=256 K=64"),
    ("gptq_v1_zero16", r"v1 zero point of 16"),
    ("gptq_gidx", r"every group must hold exactly group_size=128 inputs"),
    ("awq_version", r"AWQ version 'GEMV' is not supported"),
    ("awq_bits", r"AWQ checkpoint with bits=3"),
    ("awq_qzeros", r"model.layers.0.mlp.up_proj.qzeros must be int32 of shape \(1, 32\)"),
])
def test_importers_refuse_clearly(quantized, tmp_path, case, match):
    model, _, _ = quantized
    up = "model.layers.0.mlp.up_proj"
    if case.startswith("awq"):
        t, qcfg = awq_tensors(model), dict(AWQ_CFG)
    else:
        t, qcfg = gptq_tensors(model, 2), dict(GPTQ_CFG, checkpoint_format="gptq_v2")
    if case == "gptq_bits":
        qcfg["bits"] = 8
    elif case == "gptq_format":
        qcfg["checkpoint_format"] = "marlin"
    elif case == "gptq_missing":
        t.pop(f"{up}.qzeros")
    elif case == "gptq_scales":
        t[f"{up}.scales"] = torch.ones(256, 1)
    elif case == "gptq_qweight":
        t[f"{up}.qweight"] = t[f"{up}.qweight"][:8]
    elif case == "gptq_v1_zero16":
        qcfg["checkpoint_format"] = "gptq"
        t[f"{up}.qzeros"] = torch.full_like(t[f"{up}.qzeros"], -1)   # every nibble 15 -> zero 16
    elif case == "gptq_gidx":
        t["model.layers.0.mlp.down_proj.g_idx"] = torch.zeros(256, dtype=torch.int32)  # all in group 0
    elif case == "awq_version":
        qcfg["version"] = "GEMV"
    elif case == "awq_bits":
        qcfg["bits"] = 3
    elif case == "awq_qzeros":
        t[f"{up}.qzeros"] = t[f"{up}.qzeros"].t().contiguous()
    d = write_ckpt(tmp_path / case, model, t, qcfg)
    with pytest.raises(CheckpointError, match=match):
        nybble.load(d)


def _autoawq_gemm():
    """AutoAWQ's ``WQLinear_GEMM`` if the ``autoawq`` package is importable (it installs CPU-only with
    ``pip install --no-deps autoawq accelerate``; its top-level import wants ``datasets`` for calibration
    data, which packing does not use, so a stand-in module is provided when it is absent)."""
    import importlib.util
    import sys
    import types
    if importlib.util.find_spec("awq") is None:
        return None
    if importlib.util.find_spec("datasets") is None and "datasets" not in sys.modules:
        stub = types.ModuleType("datasets")
        stub.load_dataset = None
        sys.modules["datasets"] = stub
    from awq.modules.linear.gemm import WQLinear_GEMM
    return WQLinear_GEMM


def test_checkpoint_packed_by_autoawq(tmp_path):
    """A checkpoint whose layers were packed by AutoAWQ itself (``WQLinear_GEMM.from_linear``)."""
    gemm = _autoawq_gemm()
    if gemm is None:
        pytest.skip("autoawq is not installed (optional peer: pip install --no-deps autoawq accelerate)")
    model = tiny_llama(seed=8)
    nybble.quantize(model, nybble.Int4WeightOnlyConfig(group_size=128, zero_point="int"), show_progress=False)
    tensors, dense = {}, {}
    for name, layer in int4_layers(model).items():
        codes, scale, zero = quantized_parts(layer)
        s16 = scale.half()                                  # AutoAWQ stores fp16 scales
        g = scale.shape[1]
        gl = codes.shape[1] // g
        w = (codes.float() - zero.float().repeat_interleave(gl, 1)) * s16.float().repeat_interleave(gl, 1)
        dense[name] = w
        lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
        with torch.no_grad():
            lin.weight.copy_(w)
        q = gemm.from_linear(lin, 4, 128, scales=s16.t().contiguous(), zeros=zero.t().float().contiguous())
        tensors.update({f"{name}.qweight": q.qweight, f"{name}.qzeros": q.qzeros, f"{name}.scales": q.scales})
    loaded = nybble.load(write_ckpt(tmp_path / "awq", model, tensors, AWQ_CFG))
    got = dequantized_layers(loaded)
    assert got.keys() == dense.keys() and all(torch.equal(got[k], dense[k]) for k in dense)
