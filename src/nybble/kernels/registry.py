"""The chooser: an ordered list of kernels per device type, fastest first.

``choose(spec)`` returns the first kernel whose ``is_supported`` and ``can_implement`` say yes, and
otherwise raises one :class:`NoKernelError` listing every kernel and its reason. Kernels are named
by import path so that a kernel whose compiled part or library is missing only refuses (with the
import error as its reason) instead of breaking ``import nybble``.

``NYBBLE_DISABLED_KERNELS=a,b`` removes kernels from consideration; ``force="name"`` picks one.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass

from .base import LinearKernel, LinearSpec

_REFERENCE = ("reference", "nybble.kernels.reference:ReferenceKernel")

#: device type -> (kernel name, import path), in priority order (fastest first)
PRIORITY: dict[str, tuple[tuple[str, str], ...]] = {
    "cpu": (
        ("nybble_cpu", "nybble.kernels.cpu:NybbleCpuKernel"),
        ("torch_int4_cpu", "nybble.kernels.torch_int4_cpu:TorchInt4CpuKernel"),
        _REFERENCE,
    ),
    "cuda": (
        ("triton", "nybble.kernels.triton.kernel:TritonKernel"),
        ("torch_int4_cuda", "nybble.kernels.torch_int4_cuda:TorchInt4CudaKernel"),
        _REFERENCE,
    ),
}
#: any other device type (mps, xpu, meta...) gets the pure-torch reference only
FALLBACK = (_REFERENCE,)


class NoKernelError(ValueError):
    """No kernel can run a layer; the message lists every kernel and why it refused."""


@dataclass(frozen=True)
class Verdict:
    """One kernel's answer for one spec."""

    name: str
    ok: bool
    reason: str | None
    kernel: type[LinearKernel] | None


def _load(path: str) -> type[LinearKernel]:
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def disabled_kernels() -> set[str]:
    """Names listed in ``NYBBLE_DISABLED_KERNELS`` (comma separated)."""
    raw = os.environ.get("NYBBLE_DISABLED_KERNELS", "")
    return {s.strip() for s in raw.split(",") if s.strip()}


def candidates(device_type: str) -> list[tuple[str, type[LinearKernel] | None, str | None]]:
    """``(name, kernel class or None, import error)`` for a device type, in priority order."""
    out = []
    for name, path in PRIORITY.get(device_type, FALLBACK):
        try:
            out.append((name, _load(path), None))
        except Exception as exc:  # a kernel whose extension or library is missing only refuses
            out.append((name, None, f"unavailable ({type(exc).__name__}: {exc})"))
    return out


def explain(spec: LinearSpec) -> list[Verdict]:
    """Every kernel for ``spec.device_type`` and whether it can run ``spec``, in priority order."""
    off = disabled_kernels()
    verdicts = []
    for name, cls, err in candidates(spec.device_type):
        if cls is None:
            verdicts.append(Verdict(name, False, err, None))
            continue
        if name in off:
            verdicts.append(Verdict(name, False, "disabled by NYBBLE_DISABLED_KERNELS", cls))
            continue
        ok, reason = cls.is_supported(spec.device_type)
        if ok:
            ok, reason = cls.can_implement(spec)
        verdicts.append(Verdict(name, ok, reason, cls))
    return verdicts


def choose(spec: LinearSpec, force: str | None = None) -> type[LinearKernel]:
    """The first kernel able to run ``spec`` (or the ``force``-named one); raises NoKernelError."""
    verdicts = explain(spec)
    if force is not None:
        match = [v for v in verdicts if v.name == force]
        if not match:
            names = ", ".join(v.name for v in verdicts)
            raise NoKernelError(f"{spec.name}: no kernel named {force!r} for device {spec.device_type}; "
                                f"known: {names}")
        if not match[0].ok:
            raise NoKernelError(f"{spec.name}: forced kernel {force!r} cannot run {spec.describe()}: "
                                f"{match[0].reason}")
        return match[0].kernel
    for v in verdicts:
        if v.ok:
            return v.kernel
    lines = "\n".join(f"  - {v.name}: {v.reason}" for v in verdicts)
    raise NoKernelError(f"no kernel can run {spec.describe()}\n{lines}")
