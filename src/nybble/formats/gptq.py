"""GPTQ checkpoints (AutoGPTQ / GPTQModel, ``quant_method: gptq``): import and export.

Per quantized linear ``p`` with N outputs, K inputs, G groups:

* ``p.qweight``: int32 ``(K/8, N)``, packed along K: code of (n, k) in word ``[k//8, n]`` at bits
  ``4*(k%8)`` (so ``qweight.T`` is nybble's plain ``qdata``).
* ``p.qzeros``: int32 ``(G, N/8)``, packed along N in the same nibble order.
  ``checkpoint_format`` (or ``format``) ``gptq`` (v1, AutoGPTQ's default) stores ``zero - 1``;
  ``gptq_v2`` stores the zero point itself.
* ``p.scales``: ``(G, N)`` float (usually fp16).
* ``p.g_idx``: int32 ``(K,)`` group of each input (optional; ``desc_act`` checkpoints have it
  unsorted; see :mod:`nybble.formats.permuted` for how nybble handles that).
* ``p.bias`` optional.

Dequantization: ``w[n, k] = (q[n, k] - zero[g_idx[k], n]) * scales[g_idx[k], n]``.

Export (:func:`export_gptq`) writes GPTQ v2 (``checkpoint_format: gptq_v2``): zero points stored as
they are, symmetric layers with zero 8, activation-ordered layers with their ``g_idx``.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from torch import nn

from .. import primitives as P
from ..plain import PlainInt4Weight
from ..types import ActMode
from . import packing
from .qweight_importer import QweightImporter, required_tensors
from .safetensors_io import CheckpointError, atomic_directory, write_shards

log = logging.getLogger("nybble")

QUANT_METHOD = "gptq"
FORMATS = {"gptq": 1, "gptq_v2": 2}
SUFFIXES = ("qweight", "qzeros", "scales", "g_idx", "bias")


def parse_config(qcfg: dict, where: str) -> dict:
    """Check a GPTQ ``quantization_config``; returns ``{bits, group_size, sym, desc_act, version}``."""
    bits = qcfg.get("bits", qcfg.get("w_bit"))
    if bits != 4:
        raise CheckpointError(f"{where}: GPTQ checkpoint with bits={bits!r}; nybble reads only 4-bit GPTQ")
    gs = qcfg.get("group_size", 128)
    if not isinstance(gs, int) or not (gs == -1 or (gs > 0 and gs % 8 == 0)):
        raise CheckpointError(f"{where}: GPTQ group_size {gs!r}; expected -1 or a positive multiple of 8")
    fmt = qcfg.get("checkpoint_format") or qcfg.get("format") or "gptq"
    if fmt not in FORMATS:
        raise CheckpointError(f"{where}: GPTQ checkpoint_format {fmt!r} is not supported; nybble reads "
                              f"{', '.join(FORMATS)} (v1 and v2)")
    return {"bits": 4, "group_size": gs, "sym": bool(qcfg.get("sym", True)),
            "desc_act": bool(qcfg.get("desc_act", False)), "version": FORMATS[fmt]}


def plain_from_gptq(t: dict[str, torch.Tensor], prefix: str, group_size: int, version: int, where: str,
                    expect_nk: tuple[int, int] | None):
    """One layer's GPTQ tensors -> ``(PlainInt4Weight, perm or None)``; every shape and value checked."""
    from .permuted import is_trivial_g_idx, regroup

    qweight, qzeros, scales = required_tensors(t, prefix, ("qweight", "qzeros", "scales"), where, "GPTQ")
    if qweight.dtype != torch.int32 or qweight.dim() != 2:
        raise CheckpointError(f"{where}: {prefix}.qweight must be a 2-D int32 tensor (K/8, N), "
                              f"got {qweight.dtype} {tuple(qweight.shape)}")
    k, n = qweight.shape[0] * 8, qweight.shape[1]
    if expect_nk is not None and (n, k) != tuple(expect_nk):
        raise CheckpointError(f"{where}: {prefix}.qweight has shape {tuple(qweight.shape)} = (K/8, N) for "
                              f"N={n} K={k}, but the model's layer is N={expect_nk[0]} K={expect_nk[1]}")
    if n % 8:
        raise CheckpointError(f"{where}: {prefix}: N={n} is not a multiple of 8 (qzeros packs 8 per word)")
    gl = k if group_size == -1 else group_size
    if k % gl:
        raise CheckpointError(f"{where}: {prefix}: K={k} is not divisible by group_size {group_size}")
    g = k // gl
    if not scales.is_floating_point() or tuple(scales.shape) != (g, n):
        raise CheckpointError(f"{where}: {prefix}.scales must be float of shape {(g, n)} (K/group, N), "
                              f"got {scales.dtype} {tuple(scales.shape)}")
    if qzeros.dtype != torch.int32 or tuple(qzeros.shape) != (g, n // 8):
        raise CheckpointError(f"{where}: {prefix}.qzeros must be int32 of shape {(g, n // 8)} "
                              f"(K/group, N/8), got {qzeros.dtype} {tuple(qzeros.shape)}")
    zeros = packing.unpack_rows(qzeros).to(torch.int16)          # (G, N)
    if version == 1:
        zeros = zeros + 1
        if int(zeros.max()) > 15:
            raise CheckpointError(f"{where}: {prefix}.qzeros holds a v1 zero point of 16 (stored 15), which a "
                                  "4-bit zero point cannot represent; nybble cannot load this layer exactly")
    g_idx = t.get("g_idx")
    if g_idx is not None and (tuple(g_idx.shape) != (k,) or g_idx.is_floating_point()):
        raise CheckpointError(f"{where}: {prefix}.g_idx must be an integer tensor of shape {(k,)}, "
                              f"got {g_idx.dtype} {tuple(g_idx.shape)}")
    zero = zeros.t().to(torch.int8).contiguous()                  # (N, G)
    zero_or_none = None if bool((zero == P.SYMMETRIC_ZERO).all()) else zero
    qdata = packing.gptq_qweight_to_plain(qweight)
    if g_idx is None or is_trivial_g_idx(g_idx, group_size):  # no unpacking: qweight.T is the plain qdata
        return PlainInt4Weight(qdata, scales.t().contiguous(), zero_or_none, group_size, (n, k)), None
    return regroup(packing.unpack_rows(qdata), scales.t().contiguous(), zero_or_none, group_size, g_idx,
                   f"{where}: {prefix}.g_idx")


class GptqImporter(QweightImporter):
    """Reads GPTQ v1/v2 checkpoints (symmetric or not, ``desc_act`` included)."""

    method = QUANT_METHOD
    suffixes = SUFFIXES
    parse_config = staticmethod(parse_config)

    @staticmethod
    def describe(cfg: dict) -> dict:
        return {"gptq_version": cfg["version"], "desc_act": cfg["desc_act"]}

    def build(self, prefix, tensors, module, dtype, device):
        from .loader import make_layer
        where = self.where.removesuffix("config.json").rstrip("/") or self.where
        plain, perm = plain_from_gptq(tensors, prefix, self.cfg["group_size"], self.cfg["version"], where,
                                      (module.out_features, module.in_features))
        return make_layer(prefix, plain, perm, tensors.get("bias"), ActMode.A16, dtype, device,
                          self.force_kernel)

    def describe_layers(self, files) -> list:
        from .inspect import LayerDesc, tensor_bytes
        out = []
        for prefix in self.layer_prefixes(files):
            k8, n = files.shapes[f"{prefix}.qweight"]
            nbytes = sum(tensor_bytes(files, f"{prefix}.{s}") for s in SUFFIXES if f"{prefix}.{s}" in files)
            out.append(LayerDesc(prefix, n, k8 * 8, self.cfg["group_size"], self.cfg["sym"], ActMode.A16,
                                 self.cfg["desc_act"], nbytes))
        return out


# -- export -------------------------------------------------------------------------------------
def _gptq_tensors(prefix: str, mod: nn.Module):
    """One int4 layer as GPTQ v2 tensors."""
    from .permuted import PermutedInputLinear, trivial_g_idx
    if isinstance(mod, PermutedInputLinear):
        plain, g_idx = mod.checkpoint_order()
        base = mod.inner
    else:
        plain, base = mod.plain(), mod
        g_idx = trivial_g_idx(plain.k, plain.group_size)
    plain = plain.to("cpu")
    n = plain.n
    if n % 8:
        raise ValueError(f"{prefix}: N={n} is not a multiple of 8; GPTQ's qzeros cannot hold it")
    zero = plain.zero_point if plain.zero_point is not None else \
        torch.full((n, plain.num_groups), P.SYMMETRIC_ZERO, dtype=torch.int8)
    yield f"{prefix}.qweight", packing.plain_to_gptq_qweight(plain.qdata)
    yield f"{prefix}.qzeros", packing.pack_rows(zero.t().contiguous())
    yield f"{prefix}.scales", plain.scale.t().contiguous()
    yield f"{prefix}.g_idx", g_idx
    if base.bias is not None:
        yield f"{prefix}.bias", base.bias.detach()
    if base.input_scale is not None:
        raise ValueError(f"{prefix}: has an unfolded input scale (AWQ); GPTQ cannot store it")


def export_gptq(model: nn.Module, directory: str | Path, *, max_shard_size: int | None = 4 * 2**30,
                tokenizer=None, overwrite: bool = True) -> Path:
    """Write an int4 model as a GPTQ v2 checkpoint (``quant_method: gptq``, ``checkpoint_format:
    gptq_v2``), atomically. Every int4 layer must share one group size and zero-point domain (GPTQ
    has one config for the model). Layers with int8 activations (A8W4) are exported weight-only, with a
    warning (GPTQ has no activation quantization).
    """
    from .checkpoint import _model_dtype, _source_dir, _write_tokenizer, int4_layers
    from .permuted import PermutedInputLinear
    from .. import __version__

    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        raise TypeError(f"export needs a transformers model (with a .config); got {type(model).__name__}")
    layers = int4_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no int4 layers to export")
    kinds = set()
    for name, mod in layers.items():
        base = mod.inner if isinstance(mod, PermutedInputLinear) else mod
        kinds.add((base.group_size, base.kernel.spec.domain.value))
        if base.act_mode.is_a8:
            log.warning("nybble export: %s runs int8 activations (%s); GPTQ stores weights only",
                        name, base.act_mode.value)
    if len(kinds) > 1:
        raise ValueError(f"GPTQ needs one group size and zero-point domain for the whole model; this model "
                         f"has {sorted(kinds)}")
    (gs, domain), = kinds
    act_order = any(isinstance(m, PermutedInputLinear) for m in layers.values())
    qcfg = {"quant_method": QUANT_METHOD, "bits": 4, "group_size": gs, "desc_act": act_order,
            "sym": domain == "none", "checkpoint_format": "gptq_v2", "format": "gptq_v2",
            "static_groups": False, "true_sequential": True, "lm_head": "lm_head" in layers,
            "meta": {"quantizer": [f"nybble:{__version__}"]}}
    cfg = config.to_dict()
    cfg["architectures"] = [type(model).__name__]
    cfg["dtype"] = str(_model_dtype(model)).removeprefix("torch.")
    cfg.pop("torch_dtype", None)
    out_emb = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if cfg.get("tie_word_embeddings") and out_emb is not None and out_emb in layers.values():
        cfg["tie_word_embeddings"] = False
    cfg["quantization_config"] = qcfg

    def tensors():
        seen, ids = set(), set()
        for name, mod in model.named_modules():
            if any(name.startswith(p + ".") for p in seen):
                continue
            if name in layers:
                seen.add(name)
                yield from _gptq_tensors(name, layers[name])
                continue
            for attr, t in list(mod._parameters.items()) + [(k, v) for k, v in mod._buffers.items()
                                                            if k not in mod._non_persistent_buffers_set]:
                if t is not None:
                    full = f"{name}.{attr}" if name else attr
                    if id(t) in ids:
                        continue  # tied: transformers re-ties it at load time
                    ids.add(id(t))
                    yield full, t.detach()

    with atomic_directory(directory, overwrite=overwrite) as tmp:
        write_shards(tensors(), tmp, max_shard_size, metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True, default=str))
        (tmp / "quantize_config.json").write_text(json.dumps(qcfg, indent=2, sort_keys=True))
        _write_tokenizer(tokenizer, _source_dir(model), tmp)
    return Path(directory)
