"""``nybble.save`` / ``nybble.load``: compressed-tensors ``pack-quantized`` checkpoints.

A checkpoint directory holds:

* ``model.safetensors`` (or ``model-0000i-of-0000n.safetensors`` + ``model.safetensors.index.json``):
  per int4 layer ``p``: ``p.weight_packed`` int32 ``(N, K/8)``, ``p.weight_scale`` ``(N, G)`` model
  dtype, ``p.weight_zero_point`` int32 ``(ceil(N/8), G)`` (asymmetric only, packed along N),
  ``p.weight_shape`` int64 ``[N, K]``, ``p.bias`` if any (layout details in
  :mod:`nybble.formats.compressed_tensors`); every other parameter and persistent buffer as is.
* ``config.json``: the model's transformers config plus ``quantization_config`` (``quant_method``
  ``compressed-tensors``, ``format`` ``pack-quantized``, ``config_groups``, ``ignore``, ``version``)
  with a ``nybble`` section (nybble version, ``format_version``, algorithm, activation mode, aliases
  of tied tensors).
* tokenizer files copied from the source model directory (or written from ``tokenizer=``).

Nothing is pickled. Writing is atomic: a temporary sibling directory is written, fsynced and
renamed; on failure nothing is left behind and an existing directory is untouched.

``load`` reads ``quantization_config.quant_method`` and hands the directory to the matching importer
(compressed-tensors, GPTQ, AWQ), all of which stream tensors shard by shard.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import torch
from torch import nn

from ..tensor import Int4Linear
from . import compressed_tensors as ct
from .permuted import PermutedInputLinear
from .safetensors_io import CheckpointError, atomic_directory, write_shards

log = logging.getLogger("nybble")

#: version of the ``nybble`` section and of what nybble stores beyond plain compressed-tensors
FORMAT_VERSION = 1
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                   "vocab.json", "merges.txt", "tokenizer.model", "added_tokens.json", "spiece.model",
                   "chat_template.jinja", "chat_template.json")
DEFAULT_SHARD_BYTES = 4 * 2**30


def check_nybble_section(section, where: str) -> None:
    """Raise CheckpointError unless ``section`` is a ``nybble`` config this version can read."""
    if not isinstance(section, dict):
        raise CheckpointError(f"{where}: quantization_config.nybble must be a JSON object")
    fv = section.get("format_version")
    if not isinstance(fv, int) or isinstance(fv, bool) or fv < 1:
        raise CheckpointError(f"{where}: quantization_config.nybble.format_version is {fv!r}; expected an "
                              f"integer 1..{FORMAT_VERSION}")
    if fv > FORMAT_VERSION:
        raise CheckpointError(f"{where}: checkpoint format version {fv} was written by a newer nybble "
                              f"({section.get('version', '?')}); this nybble reads format versions up to "
                              f"{FORMAT_VERSION}. Upgrade nybble to load it.")


def int4_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Qualified name -> ``Int4Linear`` or ``PermutedInputLinear`` (inner layers not listed twice)."""
    out, inner = {}, set()
    for name, mod in model.named_modules():
        if isinstance(mod, PermutedInputLinear):
            out[name] = mod
            inner.add(id(mod.inner))
        elif isinstance(mod, Int4Linear) and id(mod) not in inner:
            out[name] = mod
    return out


def _layer_scheme(mod: nn.Module) -> ct.Scheme:
    base = mod.inner if isinstance(mod, PermutedInputLinear) else mod
    sym = base.kernel.spec.domain.value == "none"
    return ct.Scheme(base.group_size, sym, base.act_mode, isinstance(mod, PermutedInputLinear))


def _layer_tensors(prefix: str, mod: nn.Module):
    """``(name, tensor)`` pairs of one int4 layer in compressed-tensors form."""
    if isinstance(mod, PermutedInputLinear):
        plain, g_idx = mod.checkpoint_order()
        base = mod.inner
    else:
        plain, g_idx, base = mod.plain(), None, mod
    for suffix, t in ct.to_ct_tensors(plain.to("cpu")).items():
        yield f"{prefix}.{suffix}", t
    if g_idx is not None:
        yield f"{prefix}.weight_g_idx", g_idx
    if base.bias is not None:
        yield f"{prefix}.bias", base.bias.detach()
    if base.input_scale is not None:
        yield f"{prefix}.nybble_input_scale", base.input_scale.detach()


def _state_tensors(model: nn.Module, layers: dict[str, nn.Module], aliases: dict[str, str]):
    """Every tensor to save, module by module: int4 layers converted, others as stored in the state dict.
    Tensors already emitted under another name (tied weights) are recorded in ``aliases`` instead."""
    seen: dict[int, str] = {}
    skip = set()
    for name, mod in model.named_modules():
        if any(name == p or name.startswith(p + ".") for p in skip):
            continue
        if name in layers:
            skip.add(name)
            yield from _layer_tensors(name, layers[name])
            continue
        items = list(mod._parameters.items()) + [(k, v) for k, v in mod._buffers.items()
                                                 if k not in mod._non_persistent_buffers_set]
        for attr, t in items:
            if t is None:
                continue
            full = f"{name}.{attr}" if name else attr
            if t.device.type == "meta":
                raise ValueError(f"cannot save {full}: it is on the meta device (not materialized)")
            if id(t) in seen:
                aliases[full] = seen[id(t)]
                continue
            seen[id(t)] = full
            yield full, t.detach()


def _shard_bytes(max_shard_size) -> int | None:
    if max_shard_size is None:
        return None
    if isinstance(max_shard_size, int):
        return max_shard_size
    s = str(max_shard_size).strip().upper()
    for unit, mult in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10), ("B", 1)):
        if s.endswith(unit):
            return int(float(s[: -len(unit)]) * mult)
    return int(s)


def _source_dir(model: nn.Module) -> Path | None:
    for cand in (getattr(model, "name_or_path", None), getattr(getattr(model, "config", None), "_name_or_path", None),
                 (getattr(model, "nybble_info", None) or {}).get("source")):
        if cand and Path(str(cand)).is_dir():
            return Path(str(cand))
    return None


def save(model: nn.Module, directory: str | os.PathLike, *, tokenizer=None, algorithm: str | None = None,
         max_shard_size: int | str | None = DEFAULT_SHARD_BYTES, overwrite: bool = True) -> Path:
    """Write ``model`` (a transformers model whose linears were replaced by ``nybble.quantize``) to
    ``directory`` as a compressed-tensors ``pack-quantized`` checkpoint, atomically.

    Args:
        tokenizer: a tokenizer (anything with ``save_pretrained``) or a directory to copy tokenizer
            files from; default: the files of the directory the model was loaded from, if any.
        algorithm: recorded in the ``nybble`` section (default: what ``nybble.load`` recorded, else
            ``"unknown"``).
        max_shard_size: bytes (or ``"2GB"``) per safetensors shard; ``None`` = one file.
        overwrite: replace an existing ``directory`` (only after the new one is complete).
    Returns the directory's path. Raises TypeError for a model without a transformers ``config``
    and ValueError for one without int4 layers.
    """
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        raise TypeError(f"nybble.save needs a transformers model (with a .config); got {type(model).__name__}")
    layers = int4_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no int4 layers; run nybble.quantize(model, config) first")
    schemes: dict[ct.Scheme, list[str]] = {}
    for name, mod in layers.items():
        schemes.setdefault(_layer_scheme(mod), []).append(name)
    ignore = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    acts = {s.act_mode.value for s in schemes}
    info = getattr(model, "nybble_info", None) or {}
    from .. import __version__
    qcfg = ct.quantization_config(schemes, True, ignore)
    aliases: dict[str, str] = {}
    qcfg["nybble"] = {"version": __version__, "format_version": FORMAT_VERSION,
                      "algorithm": algorithm or info.get("algorithm") or "unknown",
                      "act_mode": acts.pop() if len(acts) == 1 else "mixed", "aliases": aliases}
    src = _source_dir(model)
    if src is not None:
        qcfg["nybble"]["source"] = str(src)
    cfg = config.to_dict()
    cfg["architectures"] = [type(model).__name__]
    dtype = _model_dtype(model)
    cfg["dtype"] = str(dtype).removeprefix("torch.")
    cfg.pop("torch_dtype", None)
    out_emb = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if cfg.get("tie_word_embeddings") and isinstance(out_emb, (Int4Linear, PermutedInputLinear)):
        cfg["tie_word_embeddings"] = False  # the output projection is int4: it has its own tensors now
    with atomic_directory(directory, overwrite=overwrite) as tmp:
        write_shards(_state_tensors(model, layers, aliases), tmp, _shard_bytes(max_shard_size),
                     metadata={"format": "pt"})
        cfg["quantization_config"] = qcfg
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True, default=str))
        gen = getattr(model, "generation_config", None)
        if gen is not None and hasattr(gen, "to_json_file"):
            try:
                gen.to_json_file(str(tmp / "generation_config.json"))
            except Exception as exc:  # an invalid generation config must not block saving weights
                log.warning("nybble.save: generation_config not saved: %s", exc)
        _write_tokenizer(tokenizer, src, tmp)
    return Path(directory)


def _model_dtype(model: nn.Module) -> torch.dtype:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    for m in int4_layers(model).values():
        return (m.inner if isinstance(m, PermutedInputLinear) else m).dtype
    return torch.float32


def _write_tokenizer(tokenizer, src: Path | None, tmp: Path) -> None:
    if tokenizer is not None and hasattr(tokenizer, "save_pretrained"):
        tokenizer.save_pretrained(str(tmp))
        return
    if tokenizer is not None:
        src = Path(tokenizer)
        if not src.is_dir():
            raise ValueError(f"tokenizer={tokenizer!r} is neither a tokenizer object nor a directory")
    if src is None:
        return
    for fname in TOKENIZER_FILES:
        if (src / fname).is_file():
            shutil.copyfile(src / fname, tmp / fname)


# -- loading ------------------------------------------------------------------------------------
def importer_for(quant_method: str, where: str):
    """The importer class for a ``quant_method``; raises CheckpointError for an unknown one."""
    import importlib
    known = {ct.QUANT_METHOD: "nybble.formats.compressed_tensors:CompressedTensorsImporter",
             "gptq": "nybble.formats.gptq:GptqImporter", "awq": "nybble.formats.awq:AwqImporter"}
    if quant_method not in known:
        raise CheckpointError(f"{where}: quantization_config.quant_method {quant_method!r} is not supported; "
                              f"nybble loads {', '.join(sorted(known))}")
    module, _, attr = known[quant_method].partition(":")
    return getattr(importlib.import_module(module), attr)


def read_quant_config(directory: str | os.PathLike) -> tuple[dict, dict]:
    """``(config.json dict, quantization_config dict)``; raises CheckpointError when not quantized."""
    from .modeling import read_config_json
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such checkpoint directory")
    cfg = read_config_json(directory)
    where = str(directory / "config.json")
    qcfg = cfg.get("quantization_config")
    if not isinstance(qcfg, dict):
        raise CheckpointError(f"{where}: no quantization_config: not a quantized checkpoint (load it with "
                              "transformers, then nybble.quantize it)")
    return cfg, qcfg


def load(directory: str | os.PathLike, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
         force_kernel: str | None = None, show_progress: bool = True) -> nn.Module:
    """Load an int4 checkpoint (nybble / compressed-tensors ``pack-quantized``, GPTQ, AWQ) as a
    transformers model whose quantized linears are ``Int4Linear`` layers on ``device``'s kernels.

    Args:
        dtype: model dtype (default: config.json's ``dtype``/``torch_dtype``); scales are cast to it.
        force_kernel: run every int4 layer on this kernel.
    Tensors stream shard by shard, one at a time, from safetensors files (never pickle).
    Raises CheckpointError (a ValueError) naming the file/tensor for missing, mis-shaped or
    truncated data and for unknown formats or versions.
    """
    from .loader import load_with
    cfg, qcfg = read_quant_config(directory)
    where = str(Path(directory) / "config.json")
    importer = importer_for(qcfg.get("quant_method"), where)
    return load_with(directory, importer, qcfg, cfg, device=device, dtype=dtype,
                     force_kernel=force_kernel, show_progress=show_progress)
