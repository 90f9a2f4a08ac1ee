"""Build a transformers model without allocating its weights, then fill it tensor by tensor.

:func:`empty_model` creates the model from a ``config.json`` with every *parameter* on the
``meta`` device (buffers such as rotary ``inv_freq`` are computed normally: they are small and
often not stored in checkpoints). :func:`set_tensor` then puts each stored tensor in place and
:func:`finish` ties weights and checks that nothing is left on ``meta``.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch
from torch import nn

from ..types import ALLOWED_DTYPES, dtype_name
from .safetensors_io import CheckpointError


@contextlib.contextmanager
def parameters_on_meta():
    """While active, every ``nn.Parameter`` registered on a module is replaced by a ``meta`` one
    of the same shape and dtype, so constructing a model allocates no weight memory and its
    initializers run on nothing."""
    original = nn.Module.register_parameter

    def register(module, name, param):
        if param is not None and param.device.type != "meta":
            param = nn.Parameter(param.data.to("meta"), requires_grad=param.requires_grad)
        original(module, name, param)

    nn.Module.register_parameter = register
    try:
        yield
    finally:
        nn.Module.register_parameter = original


def read_config_json(directory: Path) -> dict:
    path = Path(directory) / "config.json"
    if not path.exists():
        raise CheckpointError(f"{directory}: no config.json (not a checkpoint directory)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def config_dtype(config_dict: dict, where: str) -> torch.dtype:
    """The model dtype recorded in config.json (``dtype`` or the older ``torch_dtype``); fp32 if absent."""
    name = config_dict.get("dtype") or config_dict.get("torch_dtype") or "float32"
    dtype = getattr(torch, str(name).removeprefix("torch."), None)
    if dtype not in ALLOWED_DTYPES:
        raise CheckpointError(f"{where}: model dtype {name!r} is not supported; "
                              f"allowed: {', '.join(dtype_name(d) for d in ALLOWED_DTYPES)}")
    return dtype


def empty_model(config_dict: dict, dtype: torch.dtype, where: str) -> nn.Module:
    """Instantiate ``config_dict['architectures'][0]`` (a transformers class) with meta parameters."""
    import transformers

    cfg = dict(config_dict)
    cfg.pop("quantization_config", None)
    model_type = cfg.get("model_type")
    if not model_type:
        raise CheckpointError(f"{where}: config.json has no 'model_type'")
    try:
        config = transformers.AutoConfig.for_model(**cfg)
    except Exception as exc:
        raise CheckpointError(f"{where}: transformers cannot build a config for model_type "
                              f"{model_type!r}: {exc}") from exc
    archs = cfg.get("architectures") or []
    cls = getattr(transformers, archs[0], None) if archs else None
    if cls is None:
        cls = transformers.AutoModel
        if archs:
            raise CheckpointError(f"{where}: architecture {archs[0]!r} is not a class of the installed "
                                  f"transformers {transformers.__version__}")
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with parameters_on_meta():
            if cls is transformers.AutoModel:
                model = cls.from_config(config)
            else:
                model = cls(config)
    finally:
        torch.set_default_dtype(old)
    model.eval()
    return model


def set_tensor(model: nn.Module, name: str, tensor: torch.Tensor, where: str) -> None:
    """Put ``tensor`` at ``name`` (a parameter or persistent buffer) with shape checking.

    Floating tensors are cast to the existing tensor's dtype; integer buffers keep theirs.
    Raises CheckpointError naming ``where`` (the file) and the tensor on a shape mismatch.
    """
    mod_name, _, attr = name.rpartition(".")
    try:
        mod = model.get_submodule(mod_name) if mod_name else model
    except AttributeError:
        raise CheckpointError(f"{where}: tensor {name!r} does not belong to any module of "
                              f"{type(model).__name__}") from None
    if attr in mod._parameters and mod._parameters[attr] is not None:
        cur = mod._parameters[attr]
        kind = "parameter"
    elif attr in mod._buffers and mod._buffers[attr] is not None:
        cur = mod._buffers[attr]
        kind = "buffer"
    else:
        raise CheckpointError(f"{where}: tensor {name!r} does not match a parameter or buffer of "
                              f"{type(mod).__name__} at {mod_name or '<root>'}")
    if tuple(cur.shape) != tuple(tensor.shape):
        raise CheckpointError(f"{where}: tensor {name!r} has shape {tuple(tensor.shape)}, the model "
                              f"expects {tuple(cur.shape)}")
    if cur.is_floating_point() and tensor.is_floating_point():
        tensor = tensor.to(cur.dtype)
    if kind == "parameter":
        mod._parameters[attr] = nn.Parameter(tensor, requires_grad=False)
    else:
        mod._buffers[attr] = tensor.to(cur.dtype) if not cur.is_floating_point() else tensor


def finish(model: nn.Module, aliases: dict[str, str], where: str) -> None:
    """Apply stored aliases (``name -> same tensor as name``), tie weights, then raise a
    CheckpointError listing every parameter still on ``meta`` (missing from the checkpoint)."""
    for dst, src in aliases.items():
        s_mod, _, s_attr = src.rpartition(".")
        d_mod, _, d_attr = dst.rpartition(".")
        try:
            src_mod = model.get_submodule(s_mod)
            dst_mod = model.get_submodule(d_mod)
        except AttributeError:
            raise CheckpointError(f"{where}: alias {dst!r} -> {src!r} names a module the model lacks") from None
        t = getattr(src_mod, s_attr)
        if d_attr in dst_mod._parameters:
            dst_mod._parameters[d_attr] = t
        elif d_attr in dst_mod._buffers:
            dst_mod._buffers[d_attr] = t
    if getattr(model.config, "tie_word_embeddings", False) and hasattr(model, "tie_weights"):
        out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        if out is not None and isinstance(getattr(out, "weight", None), nn.Parameter):
            model.tie_weights()
    missing = [n for n, p in model.named_parameters(remove_duplicate=False) if p.device.type == "meta"]
    missing += [n for n, b in model.named_buffers(remove_duplicate=False) if b.device.type == "meta"]
    if missing:
        more = f" (and {len(missing) - 8} more)" if len(missing) > 8 else ""
        raise CheckpointError(f"{where}: the checkpoint is missing tensors the model needs: "
                              f"{', '.join(missing[:8])}{more}")
