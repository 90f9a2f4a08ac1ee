"""Cached eager launch plans of the Triton kernels: the per-call Python cost at small M.

At M = 1 the kernels take a few microseconds of GPU time, while the ordinary Python path around
their launches (config lookup, kernel choice, argument tuples, Triton's per-argument
specialization key, one allocation per scratch buffer) took ~40 us per call on the H100 machine's
CPU.  A layer's :class:`EagerPlans` records, on the first eager call with a given input shape,
every launch the ordinary launcher makes (:func:`launch.recording`), and keeps per launch the
compiled kernel's C launcher (:func:`launch.direct_launcher`), its grid and all its arguments with
tensors as integer addresses.  Later calls with that shape allocate the output, put the addresses
of ``x`` and the output (and of any per-call scratch) into the argument lists and call the
launchers: nothing is looked up or re-derived.

Per call a plan checks that ``x`` is a plain CUDA tensor with the plan's exact shape, contiguous,
of the layer's dtype, on the layer's device, 16-byte aligned (the kernels are specialized on that).
Anything else takes the ordinary path.

Invalidation: :meth:`EagerPlans.matches` compares the layer's tensors (the packed weight tensors
and the bias) by identity on every call (``Int4Linear.to()`` / ``load_state_dict`` / assigning a
new buffer replace them; in-place writes need nothing, the kernels read the memory each call), and
:func:`bump_epoch` (called by ``ops`` when a config is stored or the dequantization variant
switched) drops every plan.

Which calls get a plan: those whose ordinary path is made of ``FastLaunch`` launches plus
allocations and views only (checked while recording by a dispatch mode that sees every aten op),
i.e. the small-M GEMVs (mma.sync, CUDA-core, dp4a), the split-K finish, the activation quantizer and
the tiled GEMMs; not the dequantize + cuBLAS path.  Plans are never built during CUDA-graph
capture (an existing one is used there: its launches are captured like any other launch) and never
used under ``torch.compile`` (the torch op is traced instead; see ``kernel.py``).

Scratch (split-K partials, the A8 codes of the fused quantization): up to ``PERSIST_BYTES`` per
layer come from the layer's scratch pool (buffers allocated once, outside any capture, and never
freed while the layer's kernel lives; every plan of the layer, including those rebuilt after an
invalidation, reuses them), so a CUDA graph that captured a plan's launches never points at freed
memory.  This is the same contract as the split-K counters of the packed layout: one layer must not
run on two streams at the same time.  Larger scratch is allocated per call.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from . import plan_runner
from .launch import CAPTURE_ONLY, direct_launcher, recording
from .launch import _raw_stream

#: aten ops a plannable launcher may run besides its FastLaunch launches: allocations and views (no
#: work on tensor data; a view's address offset and strides are replayed as recorded)
ALLOCS_AND_VIEWS = frozenset({"empty", "empty_strided", "new_empty", "new_empty_strided", "view", "_unsafe_view",
                              "_reshape_alias", "alias", "detach", "slice", "select", "unsqueeze", "squeeze", "t",
                              "transpose", "permute", "expand", "as_strided"})
#: most input shapes remembered per layer (all plans are dropped when a new one would exceed it)
MAX_PLANS = 16
#: bytes of scratch per layer kept in its pool between calls (more is allocated per call)
PERSIST_BYTES = 512 * 1024

_EPOCH = [0]


def bump_epoch() -> None:
    """Drop every layer's plans (at its next call): a config or kernel variant changed."""
    _EPOCH[0] += 1


def _capturing() -> bool:
    try:
        return torch.cuda.is_current_stream_capturing()
    except RuntimeError:
        return False


class _OpGuard(TorchDispatchMode):
    """Notes every aten op other than allocations and views (work a plan would not replay)."""

    def __init__(self):
        super().__init__()
        self.other: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name not in ALLOCS_AND_VIEWS:
            self.other.append(name)
        return func(*args, **(kwargs or {}))


class Plan:
    """The launches of one layer call for one input shape.  ``calls``: per launch ``(launch, gx,
    gy, gz, tail, args, slots)`` with ``args`` the argument list (per-call addresses left None) and
    ``slots`` the ``(position, slot, byte offset)`` to fill: slot 0 is x, 1 the output, 2.. the
    per-call scratch buffers of ``scratch`` (their sizes in bytes).  ``keep``: the pool buffers it uses.
    ``eager_only``: the launcher chose these kernels because it was not capturing (the layer's
    configured kernel is kept for CUDA-graph capture: :func:`launch.note_capture_only_choice`), so the
    plan is not used during capture.  ``native``: the same launches as a C plan
    (:func:`plan_runner.native_plan`, called with the stream and the slot addresses), or None (then the
    Triton launchers of ``calls`` run them)."""

    __slots__ = ("out_shape", "calls", "scratch", "keep", "eager_only", "native")

    def __init__(self, out_shape: tuple, calls: list, scratch: tuple, keep: list, eager_only: bool = False,
                 native=None):
        self.out_shape = out_shape
        self.calls = calls
        self.scratch = scratch
        self.keep = keep
        self.eager_only = eager_only
        self.native = native

    @property
    def num_launches(self) -> int:
        return len(self.calls)

    def run(self, x: torch.Tensor, dtype: torch.dtype, device: torch.device, dev: int) -> torch.Tensor:
        out = torch.empty(*self.out_shape, dtype=dtype, device=device)  # varargs: ~0.7 us cheaper than a tuple
        native = self.native
        if native is not None and not self.scratch:
            native.run(_raw_stream(dev), x.data_ptr(), out.data_ptr())
            return out
        ptrs = [x.data_ptr(), out.data_ptr()]
        tmp = None
        if self.scratch:
            tmp = [torch.empty(nb, dtype=torch.uint8, device=device) for nb in self.scratch]
            ptrs += [t.data_ptr() for t in tmp]
        stream = _raw_stream(dev)
        if native is not None:
            native.run(stream, *ptrs)
            del tmp
            return out
        for launch, gx, gy, gz, tail, args, slots in self.calls:
            a = args.copy()
            for pos, slot, off in slots:
                a[pos] = ptrs[slot] + off
            launch(gx, gy, gz, stream, *tail, *a)
        del tmp  # stream-ordered: the allocator may hand these bytes to later work on this stream
        return out


_NONE = object()  # marks a shape whose ordinary path is not replayable


class EagerPlans:
    """The plans of one layer (see the module docstring).

    ``launcher(x2)``: the ordinary eager path, ``x2`` (M, K) -> (M, N) in ``dtype``; ``tensors``:
    every tensor it reads besides x (the packed weight tensors and the bias; None allowed), whose
    identities :meth:`matches` compares; ``pool``: the layer's scratch pool (a list the plans add
    uint8 CUDA buffers to and never remove from; pass the same list to the plans that replace these).
    ``__call__(x)``: ``x`` (..., K) -> (..., N), or None when the call must take the ordinary path."""

    def __init__(self, launcher: Callable[[torch.Tensor], torch.Tensor], tensors: tuple, n: int, k: int,
                 dtype: torch.dtype, pool: Optional[list] = None):
        self.launcher = launcher
        self.tensors = tuple(tensors)  # held: their ids stay unique while the plans exist
        self.ids = tuple(map(id, self.tensors))
        self.epoch = _EPOCH[0]
        self.n, self.k, self.dtype = n, k, dtype
        first = next(t for t in self.tensors if t is not None)
        self.device = first.device
        self.dev = first.get_device()
        self.plans: dict = {}
        self.pool = [] if pool is None else pool

    def matches(self, tensors: tuple) -> bool:
        """Do these plans still describe a layer whose tensors are ``tensors`` (same order)?"""
        return tuple(map(id, tensors)) == self.ids and self.epoch == _EPOCH[0]

    def plan_for(self, shape) -> Optional[Plan]:
        p = self.plans.get(torch.Size(shape))
        return None if p is None or p is _NONE else p

    def __call__(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        if self.epoch != _EPOCH[0]:  # a config changed: the caller makes new plans
            return None
        plan = self.plans.get(x.shape)
        if plan is not None:
            if (plan is not _NONE and x.dtype is self.dtype and x.is_contiguous() and x.get_device() == self.dev
                    and not x.data_ptr() & 15 and not (plan.eager_only and _capturing())):
                return plan.run(x, self.dtype, self.device, self.dev)
            return None
        return self._build(x)

    def _build(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        shape = x.shape
        if (x.dtype is not self.dtype or x.get_device() != self.dev or not x.is_contiguous() or x.data_ptr() & 15
                or not shape or shape[-1] != self.k or x.numel() == 0 or _capturing()):
            return None
        if len(self.plans) >= MAX_PLANS:
            self.plans.clear()
        x2 = x.reshape(-1, self.k)
        self.launcher(x2)  # compiles, chooses (or tunes) the config: nothing of this is recorded
        guard = _OpGuard()
        with recording() as launches, guard:
            y = self.launcher(x2)
        plan = self._make(x, y, launches, guard.other)
        self.plans[shape] = _NONE if plan is None else plan
        if plan is None:
            return y.reshape(*shape[:-1], self.n)
        return plan.run(x, self.dtype, self.device, self.dev)  # the first call goes through the plan too

    def _make(self, x: torch.Tensor, y: torch.Tensor, launches: list, other_ops: list) -> Optional[Plan]:
        m = x.numel() // self.k
        eager_only = any(rec.compiled is CAPTURE_ONLY for rec in launches)
        launches = [rec for rec in launches if rec.compiled is not CAPTURE_ONLY]
        if (other_ops or not launches or y.dtype is not self.dtype or tuple(y.shape) != (m, self.n)
                or not y.is_contiguous() or y.get_device() != self.dev):
            return None
        xs, ys = x.untyped_storage().data_ptr(), y.untyped_storage().data_ptr()
        xp, yp = x.data_ptr(), y.data_ptr()
        consts = {t.untyped_storage().data_ptr() for t in self.tensors if t is not None}
        slot_of: dict[int, int] = {}
        base_of: dict[int, int] = {}  # recorded scratch storage -> address of the pool buffer standing in
        scratch: list[int] = []
        keep: list[torch.Tensor] = []
        pooled = sum(b.numel() for b in self.pool)
        calls = []
        natives = []  # (compiled, grid, args with (slot, delta) at the per-call positions) for the C plan
        for rec in launches:
            direct = direct_launcher(rec.compiled) if rec.compiled is not None else None
            if direct is None or rec.device != self.dev:
                return None
            launch, tail = direct
            args: list = []
            slots: list = []
            for i, a in enumerate(rec.args):
                if not isinstance(a, torch.Tensor):
                    args.append(a)
                    continue
                p = a.data_ptr()
                st = a.untyped_storage()
                sp = st.data_ptr()
                if sp == xs:
                    slots.append((i, 0, p - xp))
                elif sp == ys:
                    slots.append((i, 1, p - yp))
                elif sp in consts:
                    args.append(p)
                    continue
                else:
                    if sp not in base_of and sp not in slot_of:
                        nb = st.nbytes()
                        buf = next((b for b in self.pool if b.numel() >= nb and all(b is not k for k in keep)), None)
                        if buf is None and pooled + nb <= PERSIST_BYTES:
                            buf = torch.empty(nb, dtype=torch.uint8, device=self.device)
                            self.pool.append(buf)
                            pooled += nb
                        if buf is not None:
                            keep.append(buf)
                            base_of[sp] = buf.data_ptr()
                        else:
                            slot_of[sp] = 2 + len(scratch)
                            scratch.append(nb)
                    if sp in base_of:
                        args.append(base_of[sp] + p - sp)
                        continue
                    slots.append((i, slot_of[sp], p - sp))
                args.append(None)
            calls.append((launch, rec.grid[0], rec.grid[1], rec.grid[2], tail, args, tuple(slots)))
            nargs = list(args)
            for pos, slot, off in slots:
                nargs[pos] = (slot, off)
            natives.append((rec.compiled, rec.grid, nargs))
        return Plan(tuple(x.shape[:-1]) + (self.n,), calls, tuple(scratch), keep, eager_only,
                    plan_runner.native_plan(natives))


__all__ = ["EagerPlans", "Plan", "bump_epoch", "ALLOCS_AND_VIEWS", "MAX_PLANS", "PERSIST_BYTES"]
