"""Hugging Face transformers integration: find a model's class and load a float model from a dir."""
from __future__ import annotations

import json
from pathlib import Path

import torch


def model_class(config) -> type:
    """The transformers class named by ``config.architectures[0]`` (e.g. ``LlamaForCausalLM``),
    falling back to ``AutoModel`` when the name is missing or unknown."""
    import transformers
    archs = getattr(config, "architectures", None) or []
    cls = getattr(transformers, archs[0], None) if archs else None
    return cls if cls is not None else transformers.AutoModel


def load_pretrained(path: str | Path, dtype: torch.dtype | None = None):
    """Load a float transformers model (and its tokenizer, if the dir has one) from a local dir.

    Returns ``(model, tokenizer_or_None)``; the model is in eval mode. Raises FileNotFoundError
    naming the path when it has no ``config.json``.
    """
    import transformers
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: not a model directory (no config.json)")
    config = transformers.AutoConfig.from_pretrained(path)
    kw = {"dtype": dtype} if dtype is not None else {}
    model = model_class(config).from_pretrained(path, **kw).eval()
    model.nybble_info = {"source": str(path)}  # nybble.save copies tokenizer files from here
    try:
        tok = transformers.AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, TypeError):
        tok = None
    return model, tok


def is_causal_lm(model) -> bool:
    """True for models with a language-modelling head (``generate`` makes sense)."""
    return hasattr(model, "generate") and type(model).__name__.endswith("ForCausalLM")


def read_config_json(path: str | Path) -> dict:
    """``config.json`` of a model dir as a dict (clear error if missing or not JSON)."""
    f = Path(path) / "config.json"
    try:
        return json.loads(f.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{f}: missing (not a model directory)") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{f}: not valid JSON ({exc})") from None
