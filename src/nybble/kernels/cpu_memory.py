"""Memory for the packed weights of nybble's CPU kernels: 2 MiB transparent huge pages where the OS
offers them.

The M = 1 GEMV streams each tile of a weight once per call, a few sequential streams per thread,
with software prefetch one 4 KiB page ahead. On 4 KiB pages every stream crosses a page every 64
lines, and each crossing costs a TLB miss (a two-level walk under virtualisation) on the prefetch
and load path. A packed array of at least 2 MiB is therefore placed in its own anonymous private
mapping, 2 MiB aligned, with ``madvise(MADV_HUGEPAGE)`` on its whole 2 MiB pages (the ragged end
stays on 4 KiB pages, so no memory is added), before anything is written to it. Paired
measurements are in ``benchmarks/cpu/NOTES.md`` (fourth session).

Only a hint: where THP is ``never``, ``madvise`` fails or this is not Linux, the array is an
ordinary ``torch.empty`` one. The tensor owns its mapping (``torch.frombuffer`` keeps the
``mmap`` object alive); nothing here is saved (prepacked layouts never are).
"""
from __future__ import annotations

import ctypes
import mmap
import sys

import torch

HUGE_PAGE = 2 << 20
#: arrays smaller than this stay on torch's allocator
MIN_BYTES = HUGE_PAGE
_MADV_HUGEPAGE = 14

_madvise = None


def _libc_madvise():
    global _madvise
    if _madvise is None:
        try:
            fn = ctypes.CDLL(None, use_errno=True).madvise
            fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
            fn.restype = ctypes.c_int
            _madvise = fn
        except (OSError, AttributeError):
            _madvise = False
    return _madvise


def hugepage_empty(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised contiguous CPU tensor of ``shape`` / ``dtype``; when it is at least
    :data:`MIN_BYTES` on Linux, backed by a fresh 2 MiB-aligned private mapping advised for huge
    pages (see the module docstring), else by ``torch.empty``."""
    itemsize = torch.empty(0, dtype=dtype).element_size()
    numel = 1
    for s in shape:
        numel *= int(s)
    nbytes = numel * itemsize
    madvise = _libc_madvise() if sys.platform.startswith("linux") else False
    if nbytes < MIN_BYTES or not madvise:
        return torch.empty(shape, dtype=dtype)
    m = mmap.mmap(-1, nbytes + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    base = ctypes.addressof(ctypes.c_char.from_buffer(m))
    off = (-base) % HUGE_PAGE
    whole = nbytes // HUGE_PAGE * HUGE_PAGE
    madvise(base + off, whole, _MADV_HUGEPAGE)  # a refusal (THP off) only leaves 4 KiB pages
    flat = torch.frombuffer(m, dtype=torch.uint8, count=nbytes, offset=off)
    return flat.view(dtype).view(shape)


def to_hugepages(t: torch.Tensor) -> torch.Tensor:
    """``t`` (a CPU tensor) copied into :func:`hugepage_empty` memory when it is large enough,
    else ``t`` itself (contiguous)."""
    t = t.contiguous()
    if t.device.type != "cpu" or t.numel() * t.element_size() < MIN_BYTES:
        return t
    out = hugepage_empty(tuple(t.shape), t.dtype)
    out.copy_(t)
    return out
