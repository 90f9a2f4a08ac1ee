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
This module needs nothing but torch (no ``nybble._C``).
"""
from __future__ import annotations

from typing import Callable

import torch

NAMESPACE = "nybble"
_LIB = torch.library.Library(NAMESPACE, "FRAGMENT")  # kept alive for the process: it owns the registrations


def define_cpu_op(schema: str, impl: Callable, fake: Callable) -> None:
    """Define ``nybble::<schema>`` (e.g. ``"cpu_a8w4(Tensor x, ...) -> Tensor"``, no alias
    annotations: a functional op), with ``impl`` as its CPU kernel and ``fake`` as its fake
    implementation (``register_fake``: shapes and dtypes only, for tracing and FakeTensor)."""
    name = schema.split("(", 1)[0].strip()
    _LIB.define(schema)
    _LIB.impl(name, impl, "CPU")
    torch.library.register_fake(f"{NAMESPACE}::{name}", fake, lib=_LIB)


__all__ = ["NAMESPACE", "define_cpu_op"]
