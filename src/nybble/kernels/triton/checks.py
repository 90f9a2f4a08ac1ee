"""What the Triton kernels can run (pure Python: importable and testable without triton or a GPU)."""
from __future__ import annotations

import torch

from ...types import dtype_name
from ..base import LinearSpec

#: activation dtypes served (fp32 would need tf32 or fp32-FMA matmuls: the reference serves fp32)
DTYPES = (torch.bfloat16, torch.float16)


def can_implement_spec(spec: LinearSpec) -> tuple[bool, str | None]:
    """``(ok, reason)`` for a layer: bf16/fp16 activations, K a multiple of 8 and of the group size.
    Every group size (32/64/128/256/per-channel), zero-point domain and activation mode is served."""
    if spec.dtype not in DTYPES:
        return False, (f"activation dtype {dtype_name(spec.dtype)} not served; the Triton kernels take "
                       "bfloat16 or float16 (the reference kernel serves float32)")
    if spec.k % 8:
        return False, f"K={spec.k} must be a multiple of 8"
    if spec.group_size != -1 and spec.k % spec.group_size:
        return False, f"K={spec.k} is not divisible by group_size {spec.group_size}"
    return True, None
