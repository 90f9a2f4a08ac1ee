"""Streaming, memory-bounded loading shared by every importer.

The model is built with meta parameters (:func:`modeling.empty_model`); then each shard's tensors
are read one at a time (direct reads, see :mod:`.safetensors_io`). Tensors of a quantized layer are collected
until the layer is complete, converted by the importer straight into an ``Int4Linear`` (prepacked
into its kernel's layout on the target device) and the dense source tensors are dropped; every
other tensor is put in place. Peak memory is therefore about the int4 model plus one layer's
tensors, never a dense copy of the model.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from ..api import replace_module
from ..progress import progress
from .modeling import config_dtype, empty_model, finish, set_tensor
from .safetensors_io import CheckpointError, CheckpointFiles

log = logging.getLogger("nybble")


class Importer(Protocol):
    """What the loader asks of a format (compressed-tensors, GPTQ, AWQ).

    ``method``: the ``quant_method`` it reads. ``suffixes``: tensor-name suffixes that belong to a
    quantized layer (``bias`` included). ``layer_prefixes(files)``: qualified names of the quantized
    layers. ``build(prefix, tensors, module, dtype, device)`` -> the replacement module.
    ``aliases``: ``{name: same-tensor-as-name}`` to restore after loading.
    """

    method: str
    suffixes: tuple[str, ...]
    aliases: dict[str, str]

    def layer_prefixes(self, files: CheckpointFiles) -> list[str]: ...

    def build(self, prefix: str, tensors: dict[str, torch.Tensor], module: nn.Module,
              dtype: torch.dtype, device: torch.device) -> nn.Module: ...


def load_with(directory: str | Path, importer_cls, qcfg: dict, config_dict: dict, *,
              device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
              force_kernel: str | None = None, show_progress: bool = True) -> nn.Module:
    """Load ``directory`` with ``importer_cls(qcfg, where, force_kernel)``; returns the model in eval mode."""
    directory = Path(directory)
    where = str(directory / "config.json")
    importer = importer_cls(qcfg, where, force_kernel)
    files = CheckpointFiles(directory)
    dtype = dtype or config_dtype(config_dict, where)
    device = torch.device(device)
    model = empty_model(config_dict, dtype, where)
    prefixes = set(importer.layer_prefixes(files))
    if not prefixes:
        raise CheckpointError(f"{directory}: quantization_config says {importer.method} but no tensor "
                              f"of a quantized layer was found (looked for {importer.suffixes[0]!r})")
    expected: dict[str, set[str]] = {}
    for name in files.names():
        prefix, _, suffix = name.rpartition(".")
        if prefix in prefixes and suffix in importer.suffixes:
            expected.setdefault(prefix, set()).add(suffix)
    modules = {}
    for prefix in prefixes:
        try:
            mod = model.get_submodule(prefix)
        except AttributeError:
            raise CheckpointError(f"{directory}: quantized layer {prefix!r} does not exist in "
                                  f"{type(model).__name__}") from None
        if not isinstance(mod, nn.Linear):
            raise CheckpointError(f"{directory}: quantized layer {prefix!r} is a {type(mod).__name__} "
                                  "in the model, expected a Linear")
        if mod.bias is not None and "bias" not in expected[prefix]:
            raise CheckpointError(f"{directory}: tensor {prefix}.bias is missing (the model's layer has a bias)")
        modules[prefix] = mod
    pending: dict[str, dict[str, torch.Tensor]] = {}
    done = 0
    bar = progress(total=len(files.names()), desc="load", unit="tensor", disable=not show_progress)
    for path, names in files.iter_shards():
        with files.open(path) as reader:
            for name in names:
                bar.update(1)
                prefix, _, suffix = name.rpartition(".")
                if prefix in expected and suffix in expected[prefix]:
                    parts = pending.setdefault(prefix, {})
                    parts[suffix] = reader.get(name)
                    if len(parts) == len(expected[prefix]):
                        mod = modules[prefix]
                        new = importer.build(prefix, pending.pop(prefix), mod, dtype, device)
                        replace_module(model, prefix, new)
                        done += 1
                        release_free_memory()  # drop the layer's source tensors and prepack scratch
                    continue
                set_tensor(model, name, reader.get(name), str(path))
        release_free_memory()
    bar.close()
    if pending:  # cannot happen: expected is built from the same names
        raise CheckpointError(f"{directory}: incomplete quantized layers {sorted(pending)[:5]}")
    finish(model, importer.aliases, str(directory))
    if (directory / "generation_config.json").is_file() and hasattr(model, "generation_config"):
        import transformers
        try:
            model.generation_config = transformers.GenerationConfig.from_pretrained(str(directory))
        except (OSError, ValueError) as exc:
            log.warning("nybble.load: %s/generation_config.json ignored: %s", directory, exc)
    if device.type != "cpu" or any(p.device != device for p in model.parameters()):
        model.to(device)
    if hasattr(model, "config"):
        model.config._name_or_path = str(directory)
    model.nybble_info = {"source": str(directory), "quant_method": importer.method, "layers": done,
                         **getattr(importer, "info", {})}
    return model


def release_free_memory() -> None:
    """Return freed heap memory to the OS (glibc ``malloc_trim``), so that the temporaries of one
    shard (source tensors, prepack scratch) do not stay in the process's RSS; no-op elsewhere."""
    global _TRIM
    if _TRIM is None:
        try:
            import ctypes
            _TRIM = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _TRIM = False
    if _TRIM:
        _TRIM(0)


_TRIM = None


def make_layer(prefix: str, plain, perm: torch.Tensor | None, bias: torch.Tensor | None, act_mode,
               dtype: torch.dtype, device: torch.device, force_kernel: str | None,
               input_scale: torch.Tensor | None = None) -> nn.Module:
    """An ``Int4Linear`` on ``device`` with scales in ``dtype`` (wrapped in a
    :class:`~nybble.formats.permuted.PermutedInputLinear` when ``perm`` is given)."""
    from ..tensor import Int4Linear
    from .permuted import PermutedInputLinear
    plain = plain.to(device, dtype)
    if bias is not None:
        bias = bias.to(device, dtype)
    try:
        layer = Int4Linear(plain, bias, act_mode, prefix, force_kernel, input_scale)
    except ValueError as exc:
        raise CheckpointError(f"layer {prefix}: {exc}") from exc
    return layer if perm is None else PermutedInputLinear(layer, perm.to(device))
