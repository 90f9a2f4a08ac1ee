"""``nybble_cpu``: nybble's own x86 CPU kernels (C++ in ``csrc/``, module ``nybble._C``).

A16W4 and A8W4 (dynamic per-token int8 activations) with a scalar path and AVX2 / AVX512 /
AVX512-VNNI / AVX512-BF16 (VNNI + vdpbf16ps A16W4 for bf16 activations) paths chosen from CPUID at
run time. ``NYBBLE_CPU_ISA=scalar|avx2|avx512|avx512_vnni|avx512_bf16``
forces a lower path (an error names what this CPU has if it asks for a higher one);
:func:`use_isa` / :func:`set_isa` override it within a process (tests).

Threads: ``torch.get_num_threads()`` at each call. The parallel regions run on the OpenMP runtime
torch itself uses (found in the process at run time, see ``csrc/thread_pool.h``), so the kernels
share torch's worker threads instead of competing with them; ``NYBBLE_CPU_THREADS_BACKEND=pool``
(or :func:`set_threads_backend`) selects nybble's own thread pool instead, which is also the
fallback when no OpenMP runtime is loaded. :func:`threads_backend` says which one runs.

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
#: the threading backends of the C++ parallel regions
THREADS_BACKENDS: tuple[str, ...] = ("auto", "openmp", "pool")
_override: str | None = None


_AVAILABLE: tuple[str, ...] | None = None


def available_isas() -> list[str]:
    """The paths this CPU can run, lowest first (``[]`` if the extension is unavailable)."""
    global _AVAILABLE
    if _AVAILABLE is None:
        _AVAILABLE = () if _ops is None else tuple(_ops._C.available_isas())
    return list(_AVAILABLE)


_LIB = None


def _threads_lib():
    """ctypes handle on the extension's own file, for its ``nybble_threads_*`` C entry points."""
    global _LIB
    if _LIB is None:
        if _ops is None:
            raise RuntimeError(_IMPORT_ERROR)
        import ctypes
        lib = ctypes.CDLL(_ops._C.__file__)  # already loaded: the same handle, no second copy
        for fn in ("nybble_threads_backend", "nybble_threads_omp_library", "nybble_threads_backend_note"):
            getattr(lib, fn).restype = ctypes.c_char_p
        lib.nybble_threads_set_backend.argtypes = [ctypes.c_char_p]
        lib.nybble_threads_set_backend.restype = ctypes.c_int
        _LIB = lib
    return _LIB


def threads_backend() -> str:
    """Where the kernels' parallel regions run: ``"openmp"`` (the OpenMP runtime already loaded in
    the process, torch's) or ``"pool"`` (nybble's own threads)."""
    return _threads_lib().nybble_threads_backend().decode()


def threads_info() -> dict[str, str]:
    """``{"backend", "omp_library" (file of the OpenMP runtime found, or ""), "note" (why a requested
    backend was not taken, or "")}``."""
    lib = _threads_lib()
    backend = lib.nybble_threads_backend().decode()
    return {"backend": backend, "omp_library": lib.nybble_threads_omp_library().decode(),
            "note": lib.nybble_threads_backend_note().decode()}


def prefetch_state() -> str:
    """One line on the cross-op weight prefetch (csrc/prefetch.h; off by default, it slowed decode on
    a 2-vCPU machine): ``"off"`` or ``"on (cap ... KiB, prefetcht1)"``."""
    from . import cpu_ops as _ops
    info = _ops._C.prefetch_info()
    if not info["enabled"]:
        return "off (NYBBLE_CPU_PREFETCH=1 turns it on)"
    hint = "prefetchw" if info["hint"] == "w" else f"prefetch{info['hint']}"
    return f"on (cap {info['cap'] // 1024} KiB, {hint})"


def threads_probe(nthreads: int) -> dict[str, int]:
    """Runs one parallel region of ``nthreads`` on the current backend (for tests): ``{"calls",
    "team" (the thread count the calls saw), "distinct" (different OS threads that ran a call),
    "on_caller" (1 if thread 0 was the calling thread)}``."""
    import ctypes
    lib = _threads_lib()
    team, distinct, on_caller = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    calls = lib.nybble_threads_probe(int(nthreads), ctypes.byref(team), ctypes.byref(distinct), ctypes.byref(on_caller))
    return {"calls": calls, "team": team.value, "distinct": distinct.value, "on_caller": on_caller.value}


_threads_override: str | None = None


def set_threads_backend(name: str | None) -> str:
    """Request ``"auto"``, ``"openmp"`` or ``"pool"`` for this process (``None``: back to
    ``NYBBLE_CPU_THREADS_BACKEND``, default auto); returns the backend now in use (``openmp`` asked
    for without a loaded OpenMP runtime gives ``pool``). Not while a kernel runs on another thread."""
    global _threads_override
    if name is not None and name not in THREADS_BACKENDS:
        raise ValueError(f"threads backend {name!r} is not one of {', '.join(THREADS_BACKENDS)}")
    if _threads_lib().nybble_threads_set_backend(None if name is None else name.encode()) != 0:
        raise ValueError(f"threads backend {name!r} refused by nybble._C")
    _threads_override = name
    return threads_backend()


@contextlib.contextmanager
def use_threads_backend(name: str | None) -> Iterator[str]:
    """``with use_threads_backend("pool") as active: ...`` then restores the previous request."""
    prev = _threads_override
    active = set_threads_backend(name)
    try:
        yield active
    finally:
        set_threads_backend(prev)


def _check_isa(name: str, source: str) -> str:
    avail = available_isas()
    if name not in ISA_NAMES:
        raise ValueError(f"{source}={name!r} is not a CPU path; use one of {', '.join(ISA_NAMES)}")
    if name not in avail:
        raise ValueError(f"{source}={name!r} is not supported by this CPU; it can run {', '.join(avail) or 'none'}")
    return name


_isa_memo: tuple = (None, None, None, None)  # (override, NYBBLE_CPU_ISA, available_isas, result)


def selected_isa() -> str:
    """The path the kernels use now: :func:`set_isa`'s override, else ``NYBBLE_CPU_ISA``, else the
    highest available. Raises ValueError for an unknown path or one this CPU lacks."""
    global _isa_memo
    if _ops is None:
        raise RuntimeError(_IMPORT_ERROR)
    env_raw = os.environ.get("NYBBLE_CPU_ISA")
    memo = _isa_memo
    if memo[3] is not None and memo[0] == _override and memo[1] == env_raw and memo[2] is available_isas:
        return memo[3]  # every kernel call asks: the same inputs give the same answer
    if _override is not None:
        isa = _check_isa(_override, "set_isa")
    else:
        env = (env_raw or "").strip().lower()
        isa = _check_isa(env, "NYBBLE_CPU_ISA") if env else available_isas()[-1]
    _isa_memo = (_override, env_raw, available_isas, isa)
    return isa


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

    #: the cached direct-call plan of this layer (see cpu_ops.EagerCall), built on first use
    _eager = None

    @property
    def threads_backend(self) -> str:
        """``"openmp"`` or ``"pool"``: where this kernel's parallel regions run (see :func:`threads_backend`)."""
        return threads_backend()

    def apply(self, x: torch.Tensor, packed: PackedWeight, bias: torch.Tensor | None) -> torch.Tensor:
        s = self.spec
        isa = selected_isa()
        qw, scale, zp, wc = packed["qw"], packed["scale"], packed.get("zero_point"), packed.get("wcomp")
        if _ops.eager_call_ok(x):
            call = self._eager
            if call is None or not call.matches(qw, scale, zp, wc, bias):
                call = self._eager = _ops.EagerCall(qw, scale, zp, wc, s.n, s.group_size, bias, s.act_mode.is_a8,
                                                    s.act_mode is ActMode.A8_ASYM)
            return call(x, isa)
        x2 = x.reshape(-1, s.k)
        if s.act_mode.is_a8:
            y = torch.ops.nybble.cpu_a8w4(x2, qw, scale, zp, wc, s.n, s.group_size, s.act_mode is ActMode.A8_ASYM,
                                          bias, isa)
        else:
            y = torch.ops.nybble.cpu_a16w4(x2, qw, scale, zp, s.n, s.group_size, bias, isa)
        return y.reshape(*x.shape[:-1], s.n)


__all__ = ["NybbleCpuKernel", "available_isas", "selected_isa", "set_isa", "use_isa", "ISA_NAMES"]
