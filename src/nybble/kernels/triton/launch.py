"""A low-overhead launcher for ``@triton.jit`` kernels.

``kernel[grid](...)`` spends tens of microseconds per call in Python (binding, specialization,
environment knobs, metadata).  At M = 1 that is more than the kernel itself.  :class:`FastLaunch`
launches the first call of each specialization through the normal path (which compiles and returns
the compiled kernel), remembers the compiled kernel under a key made of everything triton
specializes on (tensor dtypes and 16-byte alignment, integer divisibility by 16 and == 1, constexprs,
launch options), and later calls go straight to its compiled launcher.

``NYBBLE_TRITON_FAST_LAUNCH=0`` always uses the normal path.

:func:`recording` lists every launch made through a ``FastLaunch`` while it is active (the compiled
kernel, grid and arguments), so that :mod:`eager_plan` can replay a whole layer call later through
:func:`direct_launcher` (the compiled kernel's C launcher, called with integer pointers).
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

_raw_stream = getattr(torch._C, "_cuda_getCurrentRawStream", None)


def _arg_key(a):
    if isinstance(a, torch.Tensor):
        return (a.dtype, a.data_ptr() % 16 == 0)
    if isinstance(a, bool):
        return ("b", a)
    if isinstance(a, int):
        return ("i", a % 16 == 0, a == 1, -2**31 <= a < 2**31)
    return ("o", a)


@dataclass
class Launch:
    """One recorded launch: the compiled kernel (None if it could not be kept), the grid (3 ints),
    the runtime arguments then the constexpr values in signature order, and the device index."""

    compiled: object
    grid: tuple
    args: tuple
    device: int


_RECORD: list = [None]


@contextlib.contextmanager
def recording():
    """``with recording() as launches:`` every ``FastLaunch`` launch inside appends a :class:`Launch`
    (the launches still run).  Not re-entrant."""
    if _RECORD[0] is not None:
        raise RuntimeError("FastLaunch recording is already active")
    out: list = []
    _RECORD[0] = out
    try:
        yield out
    finally:
        _RECORD[0] = None


def note_unplannable_launch(grid) -> None:
    """A launch that does not go through ``FastLaunch`` (the Gluon kernels, launched by Triton's own
    launcher with TMA descriptors built per call): while a plan is being recorded, note it as a launch
    without a kernel, so that :mod:`eager_plan` refuses the plan instead of replaying only the
    ``FastLaunch`` launches around it (e.g. the activation quantization before the int8 GEMM)."""
    if _RECORD[0] is not None:
        _RECORD[0].append(Launch(None, tuple(grid) + (1,) * (3 - len(grid)), (), 0))


#: ``Launch.compiled`` of the marker :func:`note_capture_only_choice` records (not a launch)
CAPTURE_ONLY = object()


def note_capture_only_choice() -> None:
    """The launcher took an eager fallback because the layer's configured kernel is one kept for
    CUDA-graph capture (a Gluon launch costs ~150 us of CPU per eager call, paid once in a graph):
    while a plan is being recorded, mark it, so that :mod:`eager_plan` steps aside during capture and
    the capture takes the configured kernel."""
    if _RECORD[0] is not None:
        _RECORD[0].append(Launch(CAPTURE_ONLY, (1, 1, 1), (), 0))


def needs_no_scratch(compiled) -> bool:
    """Is ``compiled`` a loaded CUDA kernel (its ``function`` handle and launcher ``run`` exist) that
    needs neither a global nor a profile scratch buffer (only ``compiled.run`` allocates those), so
    that its launches can be replayed without Triton's launch path?"""
    run = getattr(compiled, "run", None)
    return (getattr(compiled, "function", None) is not None and run is not None
            and not getattr(run, "global_scratch_size", 1) and not getattr(run, "profile_scratch_size", 1))


def direct_launcher(compiled):
    """``(launch, tail)`` for a compiled kernel, or None: ``launch(gx, gy, gz, stream, *tail, *args)``
    launches it on a grid of ``(gx, gy, gz)`` programs with the runtime + constexpr arguments
    ``args`` in signature order (tensors given as integer addresses skip the launcher's per-pointer
    ``data_ptr()`` call and driver pointer query).  None when the kernel needs scratch
    (:func:`needs_no_scratch`) or the launcher is not the CUDA one."""
    launch = getattr(getattr(compiled, "run", None), "launch", None)
    if launch is None or not needs_no_scratch(compiled):
        return None
    run = compiled.run
    return launch, (compiled.function, run.launch_cooperative_grid, run.launch_pdl, None, None,
                    compiled.packed_metadata, None, None, None)


class FastLaunch:
    """``FastLaunch(jit_fn)(grid, args, constexprs, num_warps=, num_stages=)``; ``args`` are the
    runtime arguments in signature order, ``constexprs`` a dict by name."""

    def __init__(self, fn):
        self.fn = fn
        self.cache: dict = {}
        self.enabled = (os.environ.get("NYBBLE_TRITON_FAST_LAUNCH", "1") != "0"
                        and hasattr(fn, "params") and _raw_stream is not None)
        if not self.enabled:  # e.g. the CPU interpreter (TRITON_INTERPRET=1)
            return
        flags = [p.is_constexpr for p in fn.params]
        if flags != sorted(flags):
            raise ValueError(f"{fn.__name__}: FastLaunch needs the constexpr parameters last")
        self.const_names = [n for n, c in zip(fn.arg_names, flags) if c]

    def __call__(self, grid, args: tuple, consts: dict, num_warps: int, num_stages: int, pdl: bool = False):
        """``pdl``: launch with programmatic dependent launch (the kernel must ``gdc_wait()`` before it
        reads anything an earlier kernel wrote)."""
        opts = {"launch_pdl": True} if pdl else {}
        if not self.enabled:
            self.fn[grid](*args, **consts, num_warps=num_warps, num_stages=num_stages, **opts)
            if _RECORD[0] is not None:  # not replayable: the plan refuses a launch without a kernel
                _RECORD[0].append(Launch(None, tuple(grid), tuple(args), 0))
            return
        cvals = tuple(consts[n] for n in self.const_names)
        dev = next(a for a in args if isinstance(a, torch.Tensor)).device.index or 0
        key = (tuple(_arg_key(a) for a in args), cvals, num_warps, num_stages, dev, pdl)
        k = self.cache.get(key)
        if k is None:
            k = self.fn[grid](*args, **consts, num_warps=num_warps, num_stages=num_stages, **opts)
            if hasattr(k, "result"):
                k = k.result()
            if k is not None and getattr(k, "function", None) is not None:
                self.cache[key] = k
            else:
                k = None
        else:
            g1 = grid[1] if len(grid) > 1 else 1
            g2 = grid[2] if len(grid) > 2 else 1
            k.run(grid[0], g1, g2, _raw_stream(dev), k.function, k.packed_metadata, None, None, None,
                  *args, *cvals)
        rec = _RECORD[0]
        if rec is not None:
            g = tuple(grid) + (1,) * (3 - len(grid))
            rec.append(Launch(k, g, tuple(args) + cvals, dev))
