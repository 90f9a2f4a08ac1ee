"""Where AWQ's per-input-channel scales can be folded, per architecture.

AWQ multiplies the weight of the linears that read an input ``x`` by ``s`` (per input channel) and
divides ``x`` by ``s``. The division is free when ``x`` is the output of an operation that is linear
per channel and feeds *only* those linears: an affine norm (divide its weight and bias) or a linear
layer whose output reaches them through operations that act linearly on each channel. Otherwise
the quantized layer keeps an ``input_scale`` and divides ``x`` itself.

* Llama / Mistral / Qwen2 (pre-norm decoder layers):
  ``input_layernorm -> q/k/v_proj``, ``post_attention_layernorm -> gate/up_proj`` (the norm output
  feeds only these; the residual is taken before the norm); ``up_proj -> down_proj``
  (``act(gate) * up`` is linear in ``up``); ``v_proj -> o_proj`` (attention is a per-head weighted
  sum of ``v``) when ``v_proj.out_features == o_proj.in_features`` (no grouped-query attention).
* BERT-style encoders (post-norm): the LayerNorm outputs feeding ``query/key/value`` and
  ``intermediate.dense`` are also the residual of the next sum, so they cannot absorb the scale
  (input scale kept); ``value -> attention.output.dense`` folds; ``output.dense`` reads
  ``GELU(intermediate.dense(x))``, not foldable (input scale kept).
* Anything else: every linear is its own group with an input scale.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class ScaleGroup:
    """Linears reading the same input, and where their AWQ scale goes.

    ``names``: qualified names; ``prev``: the module producing the input (norm or linear) when the
    scale can be folded into it, else None; ``prev_kind``: ``"norm"``, ``"linear"`` or None;
    ``prev_name``: its qualified name (for messages).
    """

    names: list[str]
    prev: nn.Module | None = None
    prev_kind: str | None = None
    prev_name: str = ""
    notes: list[str] = field(default_factory=list)


#: (fold target relative to the block or None, kind, consumers relative to the block)
_LLAMA = (
    ("input_layernorm", "norm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
    ("self_attn.v_proj", "linear", ("self_attn.o_proj",)),
    ("post_attention_layernorm", "norm", ("mlp.gate_proj", "mlp.up_proj")),
    ("mlp.up_proj", "linear", ("mlp.down_proj",)),
)
_BERT = (
    (None, None, ("attention.self.query", "attention.self.key", "attention.self.value")),
    ("attention.self.value", "linear", ("attention.output.dense",)),
    (None, None, ("intermediate.dense",)),
    (None, None, ("output.dense",)),
)
PATTERNS = {"llama": _LLAMA, "bert": _BERT}


def _get(module: nn.Module, path: str) -> nn.Module | None:
    try:
        return module.get_submodule(path)
    except AttributeError:
        return None


def match_pattern(block: nn.Module) -> str | None:
    """Name of the first pattern whose consumers all exist in ``block`` as linears, or None."""
    for name, pattern in PATTERNS.items():
        if all(isinstance(_get(block, c), nn.Linear) for _, _, cons in pattern for c in cons):
            return name
    return None


def scale_groups(block: nn.Module | None, prefix: str, names: list[str]) -> list[ScaleGroup]:
    """The AWQ groups of the selected ``names`` inside ``block`` (qualified prefix ``prefix``).

    With ``block=None`` (whole-model pass) every linear is its own unfolded group. A fold target is
    used only when every consumer of it is selected (otherwise the unselected one would change).
    """
    pre = prefix + "." if prefix else ""
    pattern = PATTERNS.get(match_pattern(block)) if block is not None else None
    groups: list[ScaleGroup] = []
    covered: set[str] = set()
    for target, kind, consumers in pattern or ():
        qnames = [pre + c for c in consumers]
        chosen = [n for n in qnames if n in names]
        if not chosen:
            continue
        covered.update(chosen)
        grp = ScaleGroup(chosen)
        prev = _get(block, target) if target else None
        if prev is None:
            grp.notes.append("no foldable producer: input scale kept")
        elif len(chosen) != len(qnames):
            grp.notes.append(f"{pre + target} also feeds unselected layers: input scale kept")
        elif kind == "linear" and not (isinstance(prev, nn.Linear)
                                       and prev.out_features == _get(block, consumers[0]).in_features):
            grp.notes.append(f"{pre + target} output size differs from the input size: input scale kept")
        elif kind == "norm" and getattr(prev, "weight", None) is None:
            grp.notes.append(f"{pre + target} has no affine weight: input scale kept")
        else:
            grp.prev, grp.prev_kind, grp.prev_name = prev, kind, pre + target
        groups.append(grp)
    for n in names:
        if n not in covered:
            groups.append(ScaleGroup([n]))
    return groups


@torch.no_grad()
def fold_into_norm(norm: nn.Module, s: torch.Tensor) -> bool:
    """Divide the norm's output channel ``c`` by ``s[c]`` (weight and bias); verify on a random probe
    that the norm now computes ``old(x) / s`` and undo the change (returning False) if not (e.g. a
    norm computing ``x * (1 + weight)``)."""
    w = norm.weight
    k = w.shape[-1]
    gen = torch.Generator(device="cpu").manual_seed(0)
    probe = (torch.randn(4, k, generator=gen) * 3 + 1).to(device=w.device, dtype=w.dtype)
    before = norm(probe).float()
    saved_w = w.detach().clone()
    bias = getattr(norm, "bias", None)
    saved_b = None if bias is None else bias.detach().clone()
    w.div_(s.to(w.dtype))
    if bias is not None:
        bias.div_(s.to(bias.dtype))
    after = norm(probe).float()
    want = before / s.float()
    tol = 1e-2 if w.dtype != torch.float32 else 1e-4
    if torch.allclose(after, want, rtol=tol, atol=tol * float(want.abs().max()) + 1e-6):
        return True
    w.copy_(saved_w)
    if bias is not None:
        bias.copy_(saved_b)
    return False


@torch.no_grad()
def fold_into_linear(prev: nn.Linear, s: torch.Tensor) -> None:
    """Divide output feature ``c`` of ``prev`` (weight row and bias) by ``s[c]``."""
    prev.weight.div_(s.to(prev.weight.dtype)[:, None])
    if prev.bias is not None:
        prev.bias.div_(s.to(prev.bias.dtype))
