"""``nybble_cpu``: nybble's own x86 CPU kernels (C++ in ``csrc/``, module ``nybble._C``).

A16W4 and A8W4 (dynamic per-token int8 activations) with a scalar path and AVX2 / AVX512 /
AVX512-VNNI / AVX512-BF16 (VNNI + vdpbf16ps A16W4 for bf16 activations) paths chosen from CPUID at
run time. ``NYBBLE_CPU_ISA=scalar|avx2|avx512|avx512_vnni|avx512_bf16``
forces a lower path (an error names what this CPU has if it asks for a higher one);
:func:`use_isa` / :func:`set_isa` override it within a process (tests).

The weight lives in the blocked layout of :mod:`nybble.kernels.cpu_layout`; the ops are the
``nybble::cpu_*`` torch ops of :mod:`nybble.kernels.cpu_ops`. If the extension failed to build or
import, :meth:`NybbleCpuKernel.is_supported` says so and the registry falls back.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch

from ..plain import PlainInt4Weight
from ..types import ALLOWED_DTYPES, ALLOWED_GROUP_SIZES, ActMode, ZeroPointDomain, dtype_name
from .base import LinearKernel, LinearSpec, PackedWeight

try:
    from . import cpu_ops as _ops
    _IMPORT_ERROR: str | None = None
except Exception as exc:  # the extension is missing or broken: the kernel refuses, nybble still imports
    _ops = None
    _IMPORT_ERROR = f"nybble._C unavailable ({type(exc).__name__}: {exc})"

#: every C++ path, lowest first
ISA_NAMES: tuple[str, ...] = ("scalar", "avx2", "avx512", "avx512_vnni", "avx512_bf16")
_override: str | None = None


_AVAILABLE: tuple[str, ...] | None = None


def available_isas() -> list[str]:
    """The paths this CPU can run, lowest first (``[]`` if the extension is unavailable)."""
    global _AVAILABLE
    if _AVAILABLE is None:
        _AVAILABLE = () if _ops is None else tuple(_ops._C.available_isas())
    return list(_AVAILABLE)


def _check_isa(name: str, source: str) -> str:
    avail = available_isas()
    if name not in ISA_NAMES:
        raise ValueError(f"{source}={name!r} is not a CPU path; use one of {', '.join(ISA_NAMES)}")
    if name not in avail:
        raise ValueError(f"{source}={name!r} is not supported by this CPU; it can run {', '.join(avail) or 'none'}")
    return name


def selected_isa() -> str:
    """The path the kernels use now: :func:`set_isa`'s override, else ``NYBBLE_CPU_ISA``, else the
    highest available. Raises ValueError for an unknown path or one this CPU lacks."""
    if _ops is None:
        raise RuntimeError(_IMPORT_ERROR)
    if _override is not None:
        return _check_isa(_override, "set_isa")
    env = os.environ.get("NYBBLE_CPU_ISA", "").strip().lower()
    if env:
        return _check_isa(env, "NYBBLE_CPU_ISA")
    return available_isas()[-1]


def set_isa(name: str | None) -> None:
    """Override the path for this process (``None`` returns to ``NYBBLE_CPU_ISA`` / auto)."""
    global _override
    if name is not None:
        _check_isa(name, "set_isa")
    _override = name


@contextlib.contextmanager
def use_isa(name: str | None) -> Iterator[None]:
    """``with use_isa("avx2"): ...`` runs the kernels on that path, then restores the previous one."""
    global _override
    prev = _override
    set_isa(name)
    try:
        yield
    finally:
        _override = prev


class NybbleCpuKernel(LinearKernel):
    """C++ A16W4 / A8W4 kernels for x86 CPUs: every dtype, group size, domain and activation mode
    with K a multiple of 8 and of the group size."""

    name = "nybble_cpu"
    device_types = ("cpu",)

    @classmethod
    def is_supported(cls, device):
        ok, reason = super().is_supported(device)
        if not ok:
            return ok, reason
        if _ops is None:
            return False, _IMPORT_ERROR
        try:
            selected_isa()
        except ValueError as exc:
            return False, str(exc)
        return True, None

    @classmethod
    def can_implement(cls, spec: LinearSpec):
        if spec.dtype not in ALLOWED_DTYPES:
            return False, f"activation dtype {dtype_name(spec.dtype)} not in float32/bfloat16/float16"
        if spec.group_size not in ALLOWED_GROUP_SIZES:
            return False, f"group size {spec.group_size} not in {ALLOWED_GROUP_SIZES}"
        if spec.n < 1 or spec.k < 8 or spec.k % 8:
            return False, f"needs N >= 1 and K a multiple of 8 (got N={spec.n}, K={spec.k})"
        if spec.k % spec.group_len:
            return False, f"K={spec.k} is not a multiple of the group size {spec.group_size}"
        if spec.domain not in (ZeroPointDomain.NONE, ZeroPointDomain.INT):
            return False, f"zero-point domain {spec.domain} not supported"
        return True, None

    @property
    def display_name(self) -> str:
        try:
            return f"{self.name}[{selected_isa()}]"
        except (ValueError, RuntimeError):
            return self.name

    def prepack(self, plain: PlainInt4Weight) -> PackedWeight:
        qw, sp, zp, wc = torch.ops.nybble.cpu_prepack(plain.qdata, plain.scale, plain.zero_point,
                                                      plain.group_size, self.spec.act_mode is ActMode.A8_ASYM)
        packed = {"qw": qw, "scale": sp}
        if plain.zero_point is not None:
            packed["zero_point"] = zp
        if wc.numel():
            packed["wcomp"] = wc
        return packed

    def unpack(self, packed: PackedWeight) -> PlainInt4Weight:
        s = self.spec
        qdata, scale, zp = torch.ops.nybble.cpu_unpack(packed["qw"], packed["scale"], packed.get("zero_point"), s.n)
        return PlainInt4Weight(qdata, scale, zp if "zero_point" in packed else None, s.group_size, (s.n, s.k))

    def apply(self, x: torch.Tensor, packed: PackedWeight, bias: torch.Tensor | None) -> torch.Tensor:
        s = self.spec
        x2 = x.reshape(-1, s.k)
        isa = selected_isa()
        direct = _ops.eager_call_ok(x2)
        if s.act_mode.is_a8:
            fn = _ops.a8w4_impl if direct else torch.ops.nybble.cpu_a8w4
            y = fn(x2, packed["qw"], packed["scale"], packed.get("zero_point"), packed.get("wcomp"), s.n,
                   s.group_size, s.act_mode is ActMode.A8_ASYM, bias, isa)
        else:
            fn = _ops.a16w4_impl if direct else torch.ops.nybble.cpu_a16w4
            y = fn(x2, packed["qw"], packed["scale"], packed.get("zero_point"), s.n, s.group_size, bias, isa)
        return y.reshape(*x.shape[:-1], s.n)


__all__ = ["NybbleCpuKernel", "available_isas", "selected_isa", "set_isa", "use_isa", "ISA_NAMES"]
