"""The light registration of nybble's hot CPU torch ops: ``torch.library.Library`` define + impl.

``torch.library.custom_op`` runs several Python wrapper frames around the implementation on every
call (~3.0 us per call of a toy op on this machine, against ~1.3 us for a function registered with
``Library.impl``; sixth session, benchmarks/cpu/NOTES.md). A compiled decode step calls these ops
~100 times, so the decode ops (``nybble::cpu_a16w4``, ``nybble::cpu_a8w4``,
``nybble::cpu_decode_attention`` and the baseline's ``nybble::torch_int4_cpu_a16w4``, all alike
for a fair comparison) are registered here instead: :func:`define_cpu_op` defines the schema, makes
the implementation the op's CPU kernel (the dispatcher calls it directly, one Python frame) and
registers the fake implementation for tracing (``torch.compile``). Inference only: no autograd
formula (as with the ``custom_op`` registration they had before, which had none either).

Each op's Python CPU kernel is registered through a ``Library`` of its own, so that the C++
kernels of :mod:`nybble.kernels.cpu_shim` (on by default) can take its place
(:func:`drop_python_impl`) and give it back (:func:`restore_python_impl`). :func:`define_cpu_op`
tells the shim about each new op right after defining it (:func:`nybble.kernels.cpu_shim.on_define`:
the C++ kernel at once when the built library is cached), and the op's fake implementation tells it
when it is traced (:func:`nybble.kernels.cpu_shim.on_trace`: the first ``torch.compile`` trace builds
the library when it is not cached). This module needs nothing but torch (no ``nybble._C``).
"""
from __future__ import annotations

import functools
from typing import Callable

import torch

NAMESPACE = "nybble"
_LIB = torch.library.Library(NAMESPACE, "FRAGMENT")  # kept alive for the process: it owns the definitions
#: op name -> [its Python CPU kernel, the Library holding that registration or None when dropped]
_PY_IMPLS: dict[str, list] = {}


def _register_python_impl(name: str) -> None:
    entry = _PY_IMPLS[name]
    lib = torch.library.Library(NAMESPACE, "IMPL")
    lib.impl(name, entry[0], "CPU")
    entry[1] = lib


def define_cpu_op(schema: str, impl: Callable, fake: Callable) -> None:
    """Define ``nybble::<schema>`` (e.g. ``"cpu_a8w4(Tensor x, ...) -> Tensor"``, no alias
    annotations: a functional op), with ``impl`` as its CPU kernel and ``fake`` as its fake
    implementation (``register_fake``: shapes and dtypes only, for tracing and FakeTensor)."""
    name = schema.split("(", 1)[0].strip()
    _LIB.define(schema)
    _PY_IMPLS[name] = [impl, None]
    _register_python_impl(name)
    torch.library.register_fake(f"{NAMESPACE}::{name}", _traced(name, fake), lib=_LIB)
    from . import cpu_shim  # the C++ kernel now when the shim's library is cached (never builds here by default)
    cpu_shim.on_define(name)


def _traced(name: str, fake: Callable) -> Callable:
    """``fake`` that first tells the shim that op ``name`` is being traced (only tracing calls fakes)."""
    @functools.wraps(fake)
    def traced_fake(*args, **kwargs):
        from . import cpu_shim
        cpu_shim.on_trace(name)
        return fake(*args, **kwargs)
    return traced_fake


def python_impl_active(name: str) -> bool:
    """Whether op ``nybble::name``'s CPU kernel is its Python implementation now."""
    return _PY_IMPLS[name][1] is not None


def drop_python_impl(name: str) -> None:
    """Deregister op ``nybble::name``'s Python CPU kernel (the caller registers another one at once)."""
    entry = _PY_IMPLS[name]
    if entry[1] is not None:
        entry[1]._destroy()
        entry[1] = None


def restore_python_impl(name: str) -> None:
    """Register op ``nybble::name``'s Python CPU kernel again (after the other one was removed)."""
    if _PY_IMPLS[name][1] is None:
        _register_python_impl(name)


__all__ = ["NAMESPACE", "define_cpu_op", "drop_python_impl", "python_impl_active", "restore_python_impl"]
