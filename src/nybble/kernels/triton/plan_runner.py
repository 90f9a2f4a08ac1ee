"""Replay of eager launch plans in C (``plan_runner.c``): the launches of a layer call without Python.

An :class:`eager_plan.Plan` calls, per launch, the compiled kernel's Triton launcher with integer
addresses (~3.5 us of CPU per launch on the H100 machine: argument parsing, per-pointer checks,
metadata unpacking).  :func:`native_plan` packs the same launches once into a ``Plan`` of the small C
module ``plan_runner.c``: the kernel parameters are laid out in a byte buffer as the driver reads them,
and a call only writes the per-call addresses (x, the output, scratch) into it and calls
``cuLaunchKernelEx`` per launch.

The C module is compiled on first use with Triton's own launcher build (``triton.runtime.build``:
the system C compiler, Python's headers, Triton's copy of ``cuda.h``, cached in Triton's cache
directory), i.e. exactly what every Triton launcher already needs; it does not include or link
PyTorch, and opens ``libcuda.so.1`` with ``dlopen`` like Triton's launchers.  Any failure (no compiler,
another Triton whose kernels take other parameters) leaves the plans on Triton's launchers:
:func:`status` says why.  ``NYBBLE_TRITON_PLAN_RUNNER=0`` turns the C replay off.

Parameter layout (Triton 3.x CUDA launcher, ``make_launcher``): every signature entry that is not
``constexpr`` (constexpr parameters, and integers equal to 1 or None, which Triton specializes into
constexprs) is one kernel parameter, in signature order -- pointers as 8-byte device addresses,
integers and floats at their own width -- followed by two 8-byte pointers, the global and the profile
scratch (null: plans are made only of kernels that need neither, :func:`launch.needs_no_scratch`).
"""
from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Optional

from .launch import needs_no_scratch

_SOURCE = Path(__file__).with_name("plan_runner.c")
_STATE: dict = {"module": None, "error": None}

#: Triton scalar type -> struct format of the kernel parameter
SCALAR_FORMATS = {"i1": "b", "i8": "b", "u1": "B", "u8": "B", "i16": "h", "u16": "H", "i32": "i", "u32": "I",
                  "i64": "q", "u64": "Q", "fp32": "f", "f32": "f", "fp64": "d"}


def enabled() -> bool:
    """False when ``NYBBLE_TRITON_PLAN_RUNNER=0`` (read per plan build)."""
    return os.environ.get("NYBBLE_TRITON_PLAN_RUNNER", "1").strip() != "0"


def module():
    """The compiled C module (built once per process, cached on disk by Triton), or None on failure."""
    if _STATE["module"] is None and _STATE["error"] is None:
        try:
            from triton.backends.nvidia.driver import include_dirs
            from triton.runtime.build import compile_module_from_src
            _STATE["module"] = compile_module_from_src(_SOURCE.read_text(), "nybble_plan_runner",
                                                       include_dirs=list(include_dirs))
        except Exception as exc:  # no C compiler, another Triton layout, ...: the Python launchers stay
            _STATE["error"] = f"{type(exc).__name__}: {exc}"
    return _STATE["module"]


def status() -> dict:
    """``{"enabled": env switch, "built": bool, "error": why the module is unavailable, or None}``."""
    return {"enabled": enabled(), "built": _STATE["module"] is not None, "error": _STATE["error"]}


def pack_params(signature: list, args: list) -> Optional[tuple]:
    """``(blob, offsets, patches)`` of one launch, or None if a parameter type is not handled.

    ``signature``: the compiled kernel's signature types in order (``compiled.src.signature.values()``,
    e.g. ``"*bf16"``, ``"i32"``, ``"constexpr"``); ``args``: the value of each entry (constexpr values are
    ignored), where a pointer is an int address, None (null) or a tuple ``(slot, delta)`` -- the address
    ``slots[slot] + delta`` given per call.  Each parameter sits at an 8-byte aligned offset of ``blob``;
    ``patches`` lists ``(offset, slot, delta)``."""
    if len(signature) != len(args):
        return None
    blob = bytearray()
    offsets: list[int] = []
    patches: list[tuple] = []

    def put(raw: bytes) -> None:
        offsets.append(len(blob))
        blob.extend(raw.ljust(8, b"\0"))

    for ty, a in zip(signature, args):
        if not isinstance(ty, str):  # tuples (Triton's nested arguments): not used by nybble's kernels
            return None
        if ty == "constexpr":
            continue
        if ty.startswith("*"):
            if isinstance(a, tuple):
                patches.append((len(blob), int(a[0]), int(a[1])))
                put(b"")
            elif a is None or isinstance(a, int):
                put(struct.pack("<Q", a or 0))
            else:
                return None
            continue
        fmt = SCALAR_FORMATS.get(ty)
        if fmt is None or isinstance(a, (tuple, type(None))):
            return None
        try:
            put(struct.pack("<" + fmt, a))
        except struct.error:
            return None
    put(struct.pack("<Q", 0))  # global scratch
    put(struct.pack("<Q", 0))  # profile scratch
    return bytes(blob), tuple(offsets), tuple(patches)


def launch_tuple(compiled, grid: tuple, args: list) -> Optional[tuple]:
    """The C module's description of one launch of ``compiled`` (a Triton ``CompiledKernel`` whose
    handles are loaded) on ``grid``, with ``args`` as in :func:`pack_params`; None if it cannot be replayed
    in C (clusters, scratch buffers, parameter types not handled)."""
    md = getattr(compiled, "metadata", None)
    src = getattr(compiled, "src", None)
    if md is None or src is None or not needs_no_scratch(compiled) or not compiled.function \
            or getattr(md, "num_ctas", 1) != 1:
        return None
    packed = pack_params(list(src.signature.values()), args)
    if packed is None:
        return None
    run = compiled.run
    gx, gy, gz = (tuple(grid) + (1, 1))[:3]
    return (int(compiled.function), gx, gy, gz, 32 * md.num_warps, md.shared, int(bool(run.launch_pdl)),
            int(bool(run.launch_cooperative_grid)), *packed)


def native_plan(launches: list) -> Optional[object]:
    """A C ``Plan`` for ``launches`` (a list of ``(compiled, grid, args)``, args as in :func:`pack_params`),
    or None (C replay off or unavailable, or a launch it cannot replay)."""
    if not launches or not enabled():
        return None
    tuples = []
    for compiled, grid, args in launches:
        t = launch_tuple(compiled, grid, args)
        if t is None:
            return None
        tuples.append(t)
    mod = module()
    return None if mod is None else mod.Plan(tuples)


__all__ = ["SCALAR_FORMATS", "enabled", "launch_tuple", "module", "native_plan", "pack_params", "status"]
