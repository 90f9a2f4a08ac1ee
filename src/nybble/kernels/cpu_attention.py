"""Decode attention on the CPU for Hugging Face models: one query token per head, from ``nybble._C``.

At decode (batch 1, one new token) PyTorch's CPU ``scaled_dot_product_attention`` costs ~100 us per
layer at 32 cached tokens and ~800 us at 512 (torch 2.13, bf16, 2 threads), which is most of a
Llama decode step outside its linear layers. :func:`decode_attention` computes the same thing
(scores, fp32 softmax, weighted sum of V; grouped-query heads share their KV rows) in one C++ call
(``csrc/attention.h``) on the ISA path of :func:`nybble.kernels.cpu.selected_isa`.

:func:`use_decode_attention` (or :func:`register` plus ``model.set_attn_implementation``) installs
:func:`hf_attention_forward` as the model's attention function. It takes the fast path only when it
applies (batch 1, one query token, no dropout / softcap / sliding window, same head dim for K and V,
a mask that is absent or the same for every head); everything else (prefill, batches) goes to
transformers' own ``sdpa`` function unchanged. Plain tensors outside tracing call the C++ function
directly; under ``torch.compile`` the same computation is the torch op
``nybble::cpu_decode_attention`` (with a fake implementation, so it stays in the compiled graph;
other tracing goes to ``sdpa``). Nothing about the weights is involved: any model (bf16, int4 on any
kernel) can use it. By default :mod:`nybble.kernels.cpu_shim` gives the op a C++ CPU kernel (the same checks and
C++ call as :func:`decode_attention`, without its Python frame: ~3 us instead of ~10 us per call; on the ISA path
selected when a graph calling the op was last traced; ``NYBBLE_CPU_SHIM=0`` keeps :func:`decode_attention`).
"""
from __future__ import annotations

import math

import torch

from . import cpu_ops as _ops
from .cpu import selected_isa
from .cpu_oplib import define_cpu_op

#: the name under which :func:`register` adds the attention function to transformers
NAME = "nybble_cpu_decode"
_KIND = _ops.SCALE_KIND


def decode_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scaling: float | None = None,
                     mask: torch.Tensor | None = None) -> torch.Tensor:
    """``softmax(scaling * q k^T + mask) v`` for one query token.

    ``query`` (1, H, 1, D), ``key`` / ``value`` (1, Hkv, L, D) (H a multiple of Hkv: grouped-query
    heads), all one dtype (fp32 / bf16 / fp16) on the CPU, any strides with the last dim dense (else
    copied); ``scaling`` default ``1/sqrt(D)``; ``mask`` None or bool (True = attend) / float
    (added), broadcastable to (1, 1, 1, L). Returns (1, 1, H, D) in the query dtype (the layout
    transformers' attention functions return). Computed in fp32, rounded once.
    """
    _check(query, key, value)
    return _run(query, key, value, scaling, mask)


def _check(query, key, value) -> None:
    if query.dim() != 4 or key.dim() != 4 or value.dim() != 4:
        raise ValueError("decode_attention: query, key and value must be 4-D (batch, heads, tokens, head dim)")
    b, h, q_len, d = query.shape
    _, hkv, length, dk = key.shape
    if b != 1 or q_len != 1 or key.shape[0] != 1 or value.shape != key.shape or dk != d:
        raise ValueError(f"decode_attention: needs query (1, H, 1, D) and key/value (1, Hkv, L, D), got "
                         f"{tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}")
    if h % hkv:
        raise ValueError(f"decode_attention: {h} query heads is not a multiple of {hkv} key/value heads")
    kind = _KIND.get(query.dtype)
    if kind is None or key.dtype != query.dtype or value.dtype != query.dtype:
        raise TypeError(f"decode_attention: query/key/value must share one dtype of float32/bfloat16/float16, got "
                        f"{query.dtype}, {key.dtype}, {value.dtype}")
    if not (query.is_cpu and key.is_cpu and value.is_cpu):
        raise ValueError("decode_attention: CPU tensors only")


def _run(query, key, value, scaling, mask) -> torch.Tensor:
    """:func:`decode_attention` on inputs already checked (by :func:`_check` or :func:`_shapes_ok`)."""
    _, h, _, d = query.shape
    hkv, length = key.shape[1], key.shape[2]
    kind = _KIND[query.dtype]
    query, key, value = (t if t.stride(-1) == 1 else t.contiguous() for t in (query, key, value))
    m, mask_kind = None, 0
    if mask is not None:
        if mask.numel() != length:
            raise ValueError(f"decode_attention: mask must broadcast to (1, 1, 1, {length}), got {tuple(mask.shape)}")
        m = mask.reshape(-1)
        if m.dtype == torch.bool:  # read as bytes by the C++ side (no conversion op here)
            m, mask_kind = m.contiguous(), 2
        else:
            m, mask_kind = m.float().contiguous(), 1
    out = torch.empty(1, 1, h, d, dtype=query.dtype)
    scale = 1.0 / math.sqrt(d) if scaling is None else float(scaling)
    # masked positions (-inf / False) are not visited at all (csrc/attention.h)
    _ops._C.decode_attention(selected_isa(), query.data_ptr(), query.stride(1), key.data_ptr(), key.stride(1),
                             key.stride(2), value.data_ptr(), value.stride(1), value.stride(2),
                             0 if m is None else m.data_ptr(), mask_kind, out.data_ptr(), d, kind, h, hkv, length, d,
                             scale, torch.get_num_threads())
    return out


def _decode_attention_fake(query, key, value, scaling, mask):
    return query.new_empty(1, 1, query.shape[1], query.shape[3])


# the op's CPU kernel is decode_attention itself (one Python frame per call)
define_cpu_op("cpu_decode_attention(Tensor query, Tensor key, Tensor value, float? scaling, Tensor? mask) -> Tensor",
              decode_attention, _decode_attention_fake)


def _shapes_ok(module, query, key, value, attention_mask, dropout, kwargs) -> bool:
    """Whether the decode attention applies (shapes, dtypes, options, mask), whatever the caller's mode."""
    if query.dim() != 4 or query.shape[0] != 1 or query.shape[2] != 1 or key.dim() != 4:
        return False
    if dropout and getattr(module, "training", False):
        return False
    if kwargs.get("softcap") is not None or kwargs.get("output_attentions") or kwargs.get("position_bias") is not None:
        return False
    window = kwargs.get("sliding_window")
    if window is not None and key.shape[2] > window:
        return False
    if value.shape != key.shape or key.shape[-1] != query.shape[-1] or query.shape[1] % key.shape[1]:
        return False
    if (query.dtype not in _KIND or key.dtype != query.dtype or value.dtype != query.dtype
            or not (query.is_cpu and key.is_cpu and value.is_cpu) or key.shape[0] != 1):
        return False
    if attention_mask is not None and (attention_mask.dim() != 4 or attention_mask.shape[1] != 1
                                       or attention_mask.shape[0] != 1 or attention_mask.shape[2] != 1
                                       or attention_mask.shape[3] != key.shape[2]):
        return False
    return True


def hf_attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0,
                         scaling: float | None = None, **kwargs):
    """A transformers attention function (``AttentionInterface``): :func:`decode_attention` when it
    applies (see the module docstring), else transformers' ``sdpa_attention_forward``. Returns
    ``(attn_output (B, Q, H, D), None)``."""
    if _shapes_ok(module, query, key, value, attention_mask, dropout, kwargs):
        if _ops.eager_call_ok(query):
            return _run(query, key, value, scaling, attention_mask), None
        if torch.compiler.is_compiling():
            return torch.ops.nybble.cpu_decode_attention(query, key, value, scaling, attention_mask), None
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)


def register() -> str:
    """Add :func:`hf_attention_forward` to transformers' attention functions as :data:`NAME` (masks
    as for ``sdpa``); returns :data:`NAME`. Idempotent."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
    AttentionInterface.register(NAME, hf_attention_forward)
    AttentionMaskInterface.register(NAME, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])
    return NAME


def use_decode_attention(model):
    """Switch a transformers model to :data:`NAME` (``model.set_attn_implementation``); returns it."""
    model.set_attn_implementation(register())
    return model


__all__ = ["NAME", "decode_attention", "hf_attention_forward", "register", "use_decode_attention"]
