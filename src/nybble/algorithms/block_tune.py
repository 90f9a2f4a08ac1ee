"""Block-output tuning of the group scales (and biases) after GPTQ rounding.

GPTQ rounds each linear for its own output error. What the model needs is the *block's* output: the
rounding errors of q/k/v, o, the MLP, pass through softmax, GELU/SiLU and the norms, and interact.
With the codes and zero points GPTQ chose kept fixed, every dequantized weight ``(q - z) * s`` is
linear in its ``(N, G)`` scales, so the scales (a small, continuous set of parameters: one per
group) can be fitted by gradient descent on the block's output error against the float model:

    min_{s, b}  sum_tokens || block_q(X_q; s, b) - block_f(X_f) ||^2

with ``X_q`` the quantized model's block inputs and ``X_f``, ``block_f`` the float model's (the
engine's float stream), i.e. the asymmetric objective of :func:`.gptq.asymmetric_target` taken at
the block's output. Scales are parameterised multiplicatively (``s = s_gptq * exp(theta)``,
``theta = 0`` at the start, so tuning starts from GPTQ's solution); biases (only where the layer has
one; none is added) additively, with Adam steps scaled to the bias's magnitude. The result is the
same plain int4 layout (codes, scale, zero point) with re-fitted scales: nothing changes for kernels.

:class:`FakeQuantLinear` is the differentiable stand-in of an ``Int4Linear`` used while a block is
being quantized and tuned; :func:`tune_block` runs the optimisation.
"""
from __future__ import annotations

import random
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .. import primitives as P
from ..types import ActMode
from .calibration import fake_quantize_activations


class FakeQuantLinear(nn.Module):
    """``y = x' Q^T + b`` with ``Q = (codes - z) * s`` (fp32), differentiable in ``s`` and ``b``.

    Args: ``codes`` ``(N, K)`` uint8 0..15, ``scale`` ``(N, G)``, ``zero_point`` ``(N, G)`` int8 or
    None (symmetric: 8), ``group_size``; ``bias`` ``(N,)`` or None; ``input_scale`` ``(K,)`` or None
    (AWQ, not folded: ``x' = x / input_scale``); ``act_mode``: for A8W4 ``x'`` is also per-token
    fake-quantized (straight-through gradient). ``forward`` takes ``x`` ``(..., K)`` and returns
    ``(..., N)`` in ``x.dtype``.
    """

    def __init__(self, codes: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None, group_size: int,
                 bias: torch.Tensor | None, input_scale: torch.Tensor | None = None,
                 act_mode: ActMode = ActMode.A16):
        super().__init__()
        n, k = codes.shape
        self.g = P.group_len(group_size, k)
        z = 8.0 if zero_point is None else zero_point.float().repeat_interleave(self.g, dim=1)
        self.register_buffer("u", codes.float() - z)              # (N, K)
        self.register_buffer("s0", scale.float().clone())         # (N, G)
        self.theta = nn.Parameter(torch.zeros_like(self.s0))     # s = s0 * exp(theta)
        self.has_bias = bias is not None
        self.register_buffer("b0", bias.detach().float().clone() if bias is not None else torch.zeros(n))
        self.delta = nn.Parameter(torch.zeros(n))                # b = b0 + delta * bias_unit
        self.bias_unit = float(self.b0.abs().mean()) if self.has_bias else 0.0
        self.input_scale = None if input_scale is None else input_scale.detach().float()
        self.act_mode = ActMode(act_mode)

    def scale(self) -> torch.Tensor:
        return self.s0 * torch.exp(self.theta)

    def weight(self) -> torch.Tensor:
        return self.u * self.scale().repeat_interleave(self.g, dim=1)

    def bias(self) -> torch.Tensor | None:
        if not self.has_bias:
            return None
        return self.b0 + self.delta * self.bias_unit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        if self.input_scale is not None:
            xf = xf / self.input_scale
        if self.act_mode.is_a8:
            shape = xf.shape
            flat = xf.reshape(-1, shape[-1])
            fq = fake_quantize_activations(flat.detach(), self.act_mode)
            xf = (flat + (fq - flat).detach()).reshape(shape)  # straight-through
        return F.linear(xf, self.weight(), self.bias()).to(x.dtype)


def tune_block(block: nn.Module, fakes: dict[str, FakeQuantLinear], run_q: Callable[[int], torch.Tensor],
               targets: list[torch.Tensor], masks: list[torch.Tensor | None], steps: int, lr: float,
               tune_bias: bool = True, tune_norms: bool = False, norm_lr: float = 1.0, seed: int = 0) -> dict:
    """Adam on the fake-quant layers' ``theta`` (and ``delta`` where they have a bias) for ``steps``
    steps, one calibration batch per step (batches in a seeded random order, cycling).

    ``run_q(i)`` runs ``block`` (holding the ``fakes``) on batch ``i``'s quantized-stream inputs and
    returns the hidden states ``(B, T, H)``; ``targets[i]`` are the float model's block outputs for
    the same batch; ``masks[i]`` the ``(B, T)`` bool token mask (padding excluded) or None. The loss
    is the mean squared error per real token. Other parameters of ``block`` are frozen during the
    call. Returns ``{"loss_before": .., "loss_after": ..}`` (mean over all batches)."""
    params = [f.theta for f in fakes.values()]
    bias_params = [f.delta for f in fakes.values() if f.has_bias and tune_bias]
    norm_params = []
    if tune_norms:
        for mod in block.modules():
            if "norm" in type(mod).__name__.lower():
                norm_params += [p for p in mod.parameters(recurse=False) if p.requires_grad]
    norm_saved = [p.detach().clone() for p in norm_params]
    frozen = [p for p in block.parameters() if p.requires_grad and all(p is not q for q in params + bias_params + norm_params)]
    for p in frozen:
        p.requires_grad_(False)
    for f in fakes.values():
        f.delta.requires_grad_(f.has_bias and tune_bias)

    def loss_of(i: int) -> torch.Tensor:
        d = (run_q(i).float() - targets[i].float()) ** 2
        m = masks[i]
        if m is not None and tuple(m.shape) == tuple(d.shape[:-1]):
            d = d[m]
        return d.sum(-1).mean()

    def full_loss() -> float:
        with torch.no_grad():
            return sum(float(loss_of(i)) for i in range(len(targets))) / max(1, len(targets))

    info = {"loss_before": full_loss()}
    groups = [{"params": params}]
    if bias_params:
        groups.append({"params": bias_params})
    if norm_params:
        groups.append({"params": norm_params, "lr": lr * norm_lr})
    opt = torch.optim.Adam(groups, lr=lr)
    order: list[int] = []
    rng = random.Random(seed)
    try:
        with torch.enable_grad():
            for _ in range(int(steps)):
                if not order:
                    order = list(range(len(targets)))
                    rng.shuffle(order)
                i = order.pop()
                opt.zero_grad(set_to_none=True)
                loss = loss_of(i)
                loss.backward()
                opt.step()
    finally:
        for p in frozen:
            p.requires_grad_(True)
    info["loss_after"] = full_loss()
    if not info["loss_after"] < info["loss_before"]:
        # never worse than GPTQ's own solution on the calibration data
        with torch.no_grad():
            for f in fakes.values():
                f.theta.zero_()
                f.delta.zero_()
            for p, v in zip(norm_params, norm_saved):
                p.copy_(v)
        info["reverted"] = True
        info["loss_after"] = info["loss_before"]
    return info
