"""Small shared vocabulary: string enums and the allowed values of quantization settings."""
from __future__ import annotations

from enum import Enum

import torch


class ZeroPointDomain(str, Enum):
    """How the 4-bit codes (unsigned 0..15) map back to real values.

    ``none``: symmetric, ``w = (q - 8) * s``.
    ``int``:  asymmetric with an integer zero point ``z`` in 0..15, ``w = (q - z) * s``.
    """

    NONE = "none"
    INT = "int"


class ActMode(str, Enum):
    """Activation mode of an int4 linear.

    ``a16``: weight-only (activations stay bf16/fp16/fp32).
    ``a8_sym``: activations quantized per token to int8, symmetric (zero point 0).
    ``a8_asym``: activations quantized per token to uint8 with an integer zero point.
    """

    A16 = "a16"
    A8_SYM = "a8_sym"
    A8_ASYM = "a8_asym"

    @property
    def is_a8(self) -> bool:
        return self is not ActMode.A16


#: group sizes nybble quantizes with; -1 means one group per output row (per-channel)
ALLOWED_GROUP_SIZES: tuple[int, ...] = (32, 64, 128, 256, -1)

#: activation / scale dtypes every kernel family is asked to serve
ALLOWED_DTYPES: tuple[torch.dtype, ...] = (torch.float32, torch.bfloat16, torch.float16)


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"``."""
    return str(dtype).removeprefix("torch.")


def parse_dtype(name: str | torch.dtype) -> torch.dtype:
    """``"bfloat16"``/``"bf16"``/``torch.bfloat16`` -> ``torch.bfloat16``; raises ValueError otherwise."""
    if isinstance(name, torch.dtype):
        return name
    aliases = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32", "float": "float32"}
    key = aliases.get(name, name)
    dtype = getattr(torch, key, None)
    if not isinstance(dtype, torch.dtype) or dtype not in ALLOWED_DTYPES:
        allowed = ", ".join(dtype_name(d) for d in ALLOWED_DTYPES)
        raise ValueError(f"unsupported dtype {name!r}; allowed: {allowed}")
    return dtype
