"""``nybble`` torch ops of the C++ CPU kernels (``nybble._C``), with fake implementations.

* ``nybble::cpu_prepack`` / ``nybble::cpu_unpack``: plain layout <-> blocked layout (see
  :mod:`nybble.kernels.cpu_layout`); absent parts travel as empty tensors.
* ``nybble::cpu_a16w4(x, qw, scale, zero_point, n, group_size, bias, isa)``: ``x`` (M, K)
  fp32/bf16/fp16 (any row stride) -> (M, N) in ``x.dtype``; computed in fp32 (the dtype
  conversions of x and y happen in C++, rounding to nearest even, as torch's casts).
* ``nybble::cpu_a8w4(x, qw, scale, zero_point, wcomp, n, group_size, asymmetric, bias, isa)``:
  per-token int8 quantization of ``x`` inside the op
  (:func:`nybble.primitives.quantize_activations`, bit exact), exact int32 group sums, then
  ``y = sa * sum_g(acc_g * sw) + bias`` in fp32, returned in ``x.dtype``.

``isa`` names the C++ path (``scalar``/``avx2``/``avx512``/``avx512_vnni``); the thread count
is ``torch.get_num_threads()`` at call time.

The decode ops (``cpu_a16w4``, ``cpu_a8w4``) are registered with :func:`nybble.kernels.cpu_oplib.define_cpu_op`
(``torch.library.Library`` define + CPU impl + fake: one Python frame per call, ~4.5 us of a ~6 us op call in a
compiled graph), the others with ``torch.library.custom_op``. By default :mod:`nybble.kernels.cpu_shim` replaces
the two decode ops' Python CPU kernels (:func:`a16w4_impl`, :func:`a8w4_impl`) by C++ ones with the same checks and
results (~1.5 us per call): at this module's import when the shim's library is cached, else at the first
``torch.compile`` trace of the ops (``NYBBLE_CPU_SHIM=0`` keeps the Python kernels). Eager calls of nybble's layers
never go through the dispatcher (:class:`EagerCall`), so only compiled graphs and explicit ``torch.ops`` calls
see the difference.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch.utils._python_dispatch import _get_current_dispatch_mode as _current_dispatch_mode

from .. import _C  # an ImportError here makes NybbleCpuKernel refuse (see cpu.py), never breaks nybble
from .. import primitives as P
from . import cpu_layout as L
from . import cpu_memory as M
from .cpu_oplib import define_cpu_op

SCALE_KIND = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}


def _install_stack_chunk_cache() -> bool:
    """Keep CPython's freed 16 KiB frame-stack chunks for reuse (``nybble._C.install_stack_chunk_cache``).

    The ``nybble::cpu_*`` ops (and every other torch op implemented in Python) run Python frames
    under the dispatcher; when a compiled graph calls them from a depth just below the end of a
    frame-stack chunk, CPython 3.11+ maps and unmaps a fresh 16 KiB chunk on EVERY call (4 page
    faults plus an mmap / munmap pair). Measured (benchmarks/cpu/NOTES.md, seventh session): 243
    faults and ~4 ms of system time per decode step of the compiled fused 0.85B A8W4 model, whose
    every op call was 10-25 us slower; with the cache: none, and the fused model 5 % faster than the
    unfused one instead of 9 % slower. Process-wide and harmless (a freed chunk is reused instead of
    unmapped); ``NYBBLE_PY_STACK_CACHE=0`` leaves CPython's allocator alone. Returns whether it is
    installed."""
    import os
    if os.environ.get("NYBBLE_PY_STACK_CACHE", "1").strip() == "0":
        return False
    _C.install_stack_chunk_cache()
    return bool(_C.stack_chunk_cache_stats()["installed"])


STACK_CHUNK_CACHE = _install_stack_chunk_cache()


def _empty(dtype: torch.dtype, device) -> torch.Tensor:
    return torch.empty(0, dtype=dtype, device=device)


@torch.library.custom_op("nybble::cpu_prepack", mutates_args=())
def cpu_prepack(qdata: torch.Tensor, scale: torch.Tensor, zero_point: Optional[torch.Tensor], group_size: int,
                with_wcomp: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Plain -> ``(qw uint8 (Nb, K/8, 64), scale (Nb, G, 16), zero_point int8 (Nb, G, 16) or empty,
    wcomp int32 (Nb, G, 16) or empty)``; arrays of 2 MiB or more in huge-page memory
    (:mod:`nybble.kernels.cpu_memory`)."""
    qw, sp, zp, wc = (None if t is None else M.to_hugepages(t)
                      for t in L.prepack(qdata, scale, zero_point, group_size, with_wcomp))
    return (qw, sp, zp if zp is not None else _empty(torch.int8, qdata.device),
            wc if wc is not None else _empty(torch.int32, qdata.device))


@cpu_prepack.register_fake
def _(qdata, scale, zero_point, group_size, with_wcomp):
    n, k8 = qdata.shape
    nb, g = L.num_blocks(n), scale.shape[1]
    zp = qdata.new_empty(nb, g, 16, dtype=torch.int8) if zero_point is not None else qdata.new_empty(0, dtype=torch.int8)
    wc = qdata.new_empty(nb, g, 16, dtype=torch.int32) if with_wcomp else qdata.new_empty(0, dtype=torch.int32)
    return qdata.new_empty(nb, k8, 64, dtype=torch.uint8), scale.new_empty(nb, g, 16), zp, wc


@torch.library.custom_op("nybble::cpu_unpack", mutates_args=())
def cpu_unpack(qw: torch.Tensor, scale: torch.Tensor, zero_point: Optional[torch.Tensor], n: int
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Blocked -> plain ``(qdata int32 (N, K/8), scale (N, G), zero_point int8 (N, G) or empty)``."""
    qdata, sp, zp = L.unpack(qw, scale, zero_point, n)
    return qdata, sp, zp if zp is not None else _empty(torch.int8, qw.device)


@cpu_unpack.register_fake
def _(qw, scale, zero_point, n):
    g = scale.shape[1]
    zp = qw.new_empty(n, g, dtype=torch.int8) if zero_point is not None else qw.new_empty(0, dtype=torch.int8)
    return qw.new_empty(n, qw.shape[1], dtype=torch.int32), scale.new_empty(n, g), zp


def _prepare(x: torch.Tensor, qw: torch.Tensor, scale: torch.Tensor, zero_point, n: int, group_size: int,
             bias):
    """Common checks; returns (x with unit column stride, y (M, N) in x.dtype, fp32 bias, k, group length)."""
    if x.dim() != 2 or x.device.type != "cpu" or x.dtype not in SCALE_KIND:
        raise ValueError(f"nybble cpu op: x must be a 2-D float32/bfloat16/float16 CPU tensor, got "
                         f"{x.dtype} {tuple(x.shape)} on {x.device}")
    k = qw.shape[1] * 8
    if x.shape[1] != k:
        raise ValueError(f"nybble cpu op: x has {x.shape[1]} features, the weight expects K={k}")
    if scale.dtype not in SCALE_KIND:
        raise TypeError(f"nybble cpu op: scale dtype {scale.dtype} not in float32/bfloat16/float16")
    if not (qw.is_contiguous() and scale.is_contiguous() and qw.dtype == torch.uint8):
        raise ValueError("nybble cpu op: packed tensors must be contiguous (qw uint8)")
    if zero_point is not None and not (zero_point.is_contiguous() and zero_point.dtype == torch.int8):
        raise ValueError("nybble cpu op: zero_point must be contiguous int8")
    gl = P.group_len(group_size, k)
    if x.shape[0] > 0 and x.stride(1) != 1:
        x = x.contiguous()
    b32 = None
    if bias is not None:
        if bias.shape != (n,):
            raise ValueError(f"nybble cpu op: bias must be ({n},), got {tuple(bias.shape)}")
        b32 = bias if bias.dtype == torch.float32 and bias.is_contiguous() else bias.float().contiguous()
    y = torch.empty(x.shape[0], n, dtype=x.dtype)
    return x, y, b32, k, gl


def _addr(t: Optional[torch.Tensor]) -> int:
    return 0 if t is None else t.data_ptr()


def a16w4_impl(x: torch.Tensor, qw: torch.Tensor, scale: torch.Tensor, zero_point: Optional[torch.Tensor], n: int,
               group_size: int, bias: Optional[torch.Tensor], isa: str) -> torch.Tensor:
    """``x`` (M, K) float; blocked weight; returns (M, N) in ``x.dtype``."""
    x, y, b32, k, gl = _prepare(x, qw, scale, zero_point, n, group_size, bias)
    _C.a16w4(isa, _addr(x), SCALE_KIND[x.dtype], x.shape[0], x.stride(0) if x.shape[0] else k, qw.data_ptr(),
             scale.data_ptr(), SCALE_KIND[scale.dtype], _addr(zero_point), n, k, gl, _addr(b32), y.data_ptr(),
             SCALE_KIND[y.dtype], n, torch.get_num_threads())
    return y


def _a16w4_fake(x, qw, scale, zero_point, n, group_size, bias, isa):
    return x.new_empty(x.shape[0], n)


define_cpu_op("cpu_a16w4(Tensor x, Tensor qw, Tensor scale, Tensor? zero_point, SymInt n, SymInt group_size, "
              "Tensor? bias, str isa) -> Tensor", a16w4_impl, _a16w4_fake)


def a8w4_impl(x: torch.Tensor, qw: torch.Tensor, scale: torch.Tensor, zero_point: Optional[torch.Tensor],
              wcomp: Optional[torch.Tensor], n: int, group_size: int, asymmetric: bool,
              bias: Optional[torch.Tensor], isa: str) -> torch.Tensor:
    """As :func:`cpu_a16w4` with dynamic per-token int8 activations (quantized inside the op)."""
    x, y, b32, k, gl = _prepare(x, qw, scale, zero_point, n, group_size, bias)
    if asymmetric and (wcomp is None or wcomp.dtype != torch.int32 or not wcomp.is_contiguous()):
        raise ValueError("nybble cpu op: asymmetric activations need the int32 wcomp of prepack(with_wcomp=True)")
    _C.a8w4(isa, _addr(x), SCALE_KIND[x.dtype], x.shape[0], x.stride(0) if x.shape[0] else k, qw.data_ptr(),
            scale.data_ptr(), SCALE_KIND[scale.dtype], _addr(zero_point), _addr(wcomp) if asymmetric else 0,
            n, k, gl, asymmetric, _addr(b32), y.data_ptr(), SCALE_KIND[y.dtype], n, torch.get_num_threads())
    return y


def _a8w4_fake(x, qw, scale, zero_point, wcomp, n, group_size, asymmetric, bias, isa):
    return x.new_empty(x.shape[0], n)


define_cpu_op("cpu_a8w4(Tensor x, Tensor qw, Tensor scale, Tensor? zero_point, Tensor? wcomp, SymInt n, "
              "SymInt group_size, bool asymmetric, Tensor? bias, str isa) -> Tensor", a8w4_impl, _a8w4_fake)


def eager_call_ok(x: torch.Tensor) -> bool:
    """True when the op's implementation may be called directly (plain tensors, no tracing,
    compiling or dispatch mode): it then skips the torch.library dispatch (tens of microseconds
    per call, which matters for decode). Otherwise callers go through ``torch.ops.nybble``."""
    return (type(x) is torch.Tensor and not torch.compiler.is_compiling()
            and _current_dispatch_mode() is None and not torch.jit.is_tracing())


class EagerCall:
    """One layer's direct calls of ``_C.a16w4`` / ``_C.a8w4``, with everything about the weight
    checked and computed once (addresses, kinds, group length, the fp32 bias), so that a call only
    looks at ``x``: the per-call cost of :func:`a16w4_impl` / :func:`a8w4_impl` without their
    repeated weight checks, reshapes and bias conversion.

    Built from the blocked tensors of :func:`cpu_prepack` (``qw`` uint8 (Nb, K/8, 64), ``scale``
    (Nb, G, 16), ``zero_point`` int8 (Nb, G, 16) or None, ``wcomp`` int32 (Nb, G, 16) or None) and
    ``bias`` (N,) or None. :meth:`matches` says whether it still describes the given tensors (same
    objects, same storage, bias not modified in place); callers rebuild it when not.
    ``__call__(x, isa)``: ``x`` (..., K) fp32/bf16/fp16 CPU tensor (any strides) -> (..., N) in
    ``x.dtype``. Only for plain tensors outside tracing (see :func:`eager_call_ok`).
    """

    __slots__ = ("a8", "asym", "n", "k", "gl", "tensors", "key", "b32", "wargs")

    def __init__(self, qw: torch.Tensor, scale: torch.Tensor, zero_point: Optional[torch.Tensor],
                 wcomp: Optional[torch.Tensor], n: int, group_size: int, bias: Optional[torch.Tensor],
                 a8: bool, asymmetric: bool):
        probe = torch.empty(0, qw.shape[1] * 8, dtype=scale.dtype if scale.dtype in SCALE_KIND else torch.float32)
        _, _, b32, k, gl = _prepare(probe, qw, scale, zero_point, n, group_size, bias)  # the same checks
        if a8 and asymmetric and (wcomp is None or wcomp.dtype != torch.int32 or not wcomp.is_contiguous()):
            raise ValueError("nybble cpu op: asymmetric activations need the int32 wcomp of prepack(with_wcomp=True)")
        self.a8, self.asym, self.n, self.k, self.gl = a8, bool(a8 and asymmetric), n, k, gl
        self.tensors = (qw, scale, zero_point, wcomp, bias)
        self.key = self._key(qw, scale, zero_point, wcomp, bias)
        self.b32 = b32  # kept alive: its address is passed on every call
        if a8:
            self.wargs = (qw.data_ptr(), scale.data_ptr(), SCALE_KIND[scale.dtype], _addr(zero_point),
                          _addr(wcomp) if self.asym else 0, n, k, gl, self.asym, _addr(b32))
        else:
            self.wargs = (qw.data_ptr(), scale.data_ptr(), SCALE_KIND[scale.dtype], _addr(zero_point), n, k, gl,
                          _addr(b32))

    @staticmethod
    def _key(qw, scale, zero_point, wcomp, bias) -> tuple:
        return (qw.data_ptr(), scale.data_ptr(), _addr(zero_point), _addr(wcomp), _addr(bias),
                None if bias is None else bias._version)

    def matches(self, qw: torch.Tensor, scale: torch.Tensor, zero_point: Optional[torch.Tensor],
                wcomp: Optional[torch.Tensor], bias: Optional[torch.Tensor]) -> bool:
        t = self.tensors
        return (qw is t[0] and scale is t[1] and zero_point is t[2] and wcomp is t[3] and bias is t[4]
                and self._key(qw, scale, zero_point, wcomp, bias) == self.key)

    def __call__(self, x: torch.Tensor, isa: str) -> torch.Tensor:
        kind = SCALE_KIND.get(x.dtype)
        k = self.k
        shape = x.shape
        if kind is None or not x.is_cpu or not shape or shape[-1] != k:
            raise ValueError(f"nybble cpu op: x must be a float32/bfloat16/float16 CPU tensor (..., {k}), got "
                             f"{x.dtype} {tuple(x.shape)} on {x.device}")
        y = torch.empty(*shape[:-1], self.n, dtype=x.dtype)  # varargs: ~1 us cheaper than a shape tuple
        if x.is_contiguous():
            ldx = k
        else:
            x = x.reshape(-1, k)
            if x.stride(1) != 1:
                x = x.contiguous()
            ldx = x.stride(0)
        m = x.numel() // k
        if m:
            op = _C.a8w4 if self.a8 else _C.a16w4
            op(isa, x.data_ptr(), kind, m, ldx, *self.wargs, y.data_ptr(), kind, self.n, torch.get_num_threads())
        return y


def quantize_activations(x: torch.Tensor, asymmetric: bool, group_size: int = -1, isa: str = "scalar"
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The C++ per-token quantization the A8W4 op runs (exposed for tests): ``x`` (M, K) ->
    ``(q int32 (M, K), scale fp32 (M,), zero int32 (M,), group sums int32 (M, G))``."""
    x32 = x.float().contiguous()
    m, k = x32.shape
    gl = P.group_len(group_size, k)
    q = torch.empty(m, k, dtype=torch.uint8 if asymmetric else torch.int8)
    sa = torch.empty(m, dtype=torch.float32)
    za = torch.empty(m, dtype=torch.int32)
    sums = torch.empty(m, k // gl, dtype=torch.int32)
    _C.quantize_activations(isa, x32.data_ptr(), m, k, k, gl, asymmetric, q.data_ptr(), sa.data_ptr(), za.data_ptr(),
                            sums.data_ptr(), torch.get_num_threads())
    return q.to(torch.int32), sa, za, sums
