"""``nybble.quantize``: replace a model's ``nn.Linear`` layers by ``Int4Linear`` in place."""
from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from .config import _Int4Config
from .plain import PlainInt4Weight
from .progress import progress
from .tensor import Int4Linear
from .types import ALLOWED_DTYPES, dtype_name

log = logging.getLogger("nybble")

#: smallest layers worth quantizing (and that every kernel handles)
MIN_IN_FEATURES = 32
MIN_OUT_FEATURES = 8

FilterFn = Callable[[nn.Module, str], bool]


@dataclass
class QuantizationSummary:
    """What ``quantize`` did: layers quantized and skipped (with reasons), bytes, time, kernels."""

    quantized: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    bytes_before: int = 0
    bytes_after: int = 0
    seconds: float = 0.0
    kernels: Counter = field(default_factory=Counter)
    algorithm: str = "rtn"
    #: extra facts a recipe reports (calibration time, peak memory, ...)
    details: dict = field(default_factory=dict)

    def __str__(self) -> str:
        mb = 1 / 2**20
        lines = [f"nybble: {len(self.quantized)} linear layers quantized ({self.algorithm}), "
                 f"{len(self.skipped)} skipped, {self.seconds:.2f} s",
                 f"  model bytes: {self.bytes_before * mb:.2f} MiB -> {self.bytes_after * mb:.2f} MiB"]
        if self.kernels:
            lines.append("  kernels: " + ", ".join(f"{k} x{v}" for k, v in sorted(self.kernels.items())))
        for name, why in self.skipped.items():
            lines.append(f"  skipped {name}: {why}")
        for k, v in self.details.items():
            lines.append(f"  {k}: {v}")
        return "\n".join(lines)


def model_nbytes(model: nn.Module) -> int:
    """Bytes of a model's persistent state (parameters and saved buffers, int4 layers as plain)."""
    total = 0
    seen: set[int] = set()
    for mod in model.modules():
        if isinstance(mod, Int4Linear):
            total += mod.nbytes()
            seen.update(id(t) for t in (mod.bias, mod.input_scale, *mod.packed().values()) if t is not None)
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) not in seen:
            total += t.numel() * t.element_size()
            seen.add(id(t))
    return total


def skip_reason(linear: nn.Linear, config: _Int4Config) -> str | None:
    """Why a linear cannot be quantized with ``config`` (None if it can)."""
    n, k = linear.weight.shape
    g = config.group_size
    if k < MIN_IN_FEATURES:
        return f"in_features K={k} is below the minimum {MIN_IN_FEATURES}"
    if n < MIN_OUT_FEATURES:
        return f"out_features N={n} is below the minimum {MIN_OUT_FEATURES}"
    if k % 8:
        return f"in_features K={k} is not a multiple of 8"
    if g != -1 and k % g:
        return f"in_features K={k} is not divisible by group_size {g}"
    return None


def check_weight(name: str, weight: torch.Tensor) -> None:
    """Raise ValueError/TypeError naming the layer for a weight nybble must not quantize."""
    if weight.dtype not in ALLOWED_DTYPES:
        allowed = ", ".join(dtype_name(d) for d in ALLOWED_DTYPES)
        raise TypeError(f"{name}: weight dtype {dtype_name(weight.dtype)} is not supported; allowed: {allowed}")
    if weight.device.type == "meta":
        raise ValueError(f"{name}: weight is on the meta device (not materialized); load real weights first")
    if not torch.isfinite(weight).all():
        bad = int((~torch.isfinite(weight)).sum())
        raise ValueError(f"{name}: weight contains {bad} NaN/Inf values; int4 quantization needs finite weights")


def select_linears(model: nn.Module, config: _Int4Config, filter_fn: FilterFn | None,
                   summary: QuantizationSummary, strict: bool = False) -> dict[str, nn.Linear]:
    """The ``nn.Linear`` layers to quantize (by qualified name); records skips in ``summary``."""
    chosen = {}
    for name, mod in model.named_modules():
        if type(mod) is not nn.Linear or (filter_fn is not None and not filter_fn(mod, name)):
            continue
        reason = skip_reason(mod, config)
        if reason is not None:
            if strict:
                raise ValueError(f"{name}: cannot quantize: {reason}")
            summary.skipped[name] = reason
            log.info("nybble: skipping %s: %s", name, reason)
            continue
        check_weight(name, mod.weight)
        chosen[name] = mod
    return chosen


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Set the submodule at qualified ``name`` to ``new``."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


class LayerInstaller:
    """Turns a plain int4 weight into an ``Int4Linear`` replacing ``name`` in ``model`` (used by every
    recipe, so that calibrated recipes can install layers block by block)."""

    def __init__(self, model: nn.Module, linears: dict[str, nn.Linear], config: _Int4Config,
                 summary: QuantizationSummary, force_kernel: str | None = None):
        self.model, self.linears, self.config = model, linears, config
        self.summary, self.force_kernel = summary, force_kernel

    def __call__(self, name: str, plain: PlainInt4Weight, input_scale: torch.Tensor | None = None) -> Int4Linear:
        lin = self.linears[name]
        layer = Int4Linear(plain, lin.bias, self.config.act_mode, name, self.force_kernel, input_scale)
        replace_module(self.model, name, layer)
        self.summary.quantized.append(name)
        self.summary.kernels[layer.kernel_name] += 1
        return layer


@torch.no_grad()
def quantize(model: nn.Module, config: _Int4Config, calibration=None, filter_fn: FilterFn | None = None,
             *, force_kernel: str | None = None, strict: bool = False, show_progress: bool = True
             ) -> QuantizationSummary:
    """Quantize the selected ``nn.Linear`` layers of ``model`` to int4, in place.

    Args:
        model: any ``nn.Module`` (e.g. a transformers model), with real (non-meta) weights.
        config: :class:`Int4WeightOnlyConfig` or :class:`Int8DynamicActivationInt4WeightConfig`.
        calibration: data for calibrated recipes (``gptq``/``awq``/``awq+gptq``), one of:
            ``nybble.algorithms.calibration.TextCalibration(texts, tokenizer, nsamples=128, seqlen=512)``
            (or the same fields as a dict ``{"texts": [...], "tokenizer": tok, ...}``); a ``(B, T)``
            tensor of token ids; an iterable of model input dicts. Must be None for ``rtn``.
        filter_fn: ``filter_fn(module, qualified_name) -> bool`` selects layers (default: every
            ``nn.Linear``).
        force_kernel: run every layer on this kernel (by name) instead of the registry's choice.
        strict: raise instead of skipping layers that cannot be quantized.
    Returns:
        a :class:`QuantizationSummary`; layers that cannot be quantized (K not divisible by the group
        size, too small) are skipped and listed with the reason.
    """
    t0 = time.perf_counter()
    summary = QuantizationSummary(algorithm=config.algorithm)
    summary.bytes_before = model_nbytes(model)
    linears = select_linears(model, config, filter_fn, summary, strict)
    install = LayerInstaller(model, linears, config, summary, force_kernel)
    if config.algorithm == "rtn":
        if calibration is not None:
            raise ValueError("algorithm 'rtn' takes no calibration data; use algorithm='gptq' or 'awq'")
        for name, lin in progress(linears.items(), desc="quantize rtn", unit="layer",
                                  disable=not show_progress):
            plain = PlainInt4Weight.from_float(lin.weight, config.group_size, config.domain, lin.weight.dtype)
            install(name, plain)
    else:
        from .algorithms import run_recipe
        if calibration is None:
            raise ValueError(f"algorithm {config.algorithm!r} needs calibration data (calibration=...); "
                             "nybble never falls back to random data")
        run_recipe(model, linears, config, calibration, install, summary, show_progress=show_progress)
    info = dict(getattr(model, "nybble_info", None) or {})
    info.update(algorithm=config.algorithm, config=config.to_dict())
    model.nybble_info = info  # read by nybble.save
    summary.bytes_after = model_nbytes(model)
    summary.seconds = time.perf_counter() - t0
    return summary
