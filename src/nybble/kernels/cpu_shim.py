"""Optional C++ CPU kernels of the decode ops for torch's dispatcher: the op calls without a Python frame.

The decode ops (``nybble::cpu_a16w4``, ``nybble::cpu_a8w4``, ``nybble::cpu_decode_attention`` and the
baseline's ``nybble::torch_int4_cpu_a16w4``) are registered with Python CPU kernels
(:mod:`nybble.kernels.cpu_oplib`): when a compiled graph calls one, torch's dispatcher runs a Python
frame (argument conversion, checks, the ``nybble._C`` call): ~4-6 us per call, ~81 calls per decode
step of a 16-layer Llama. :func:`enable` compiles (once, cached on disk) a small C++ library against
the installed torch (:mod:`nybble.kernels.cpu_shim_src`) whose kernels do the same checks and call
the same kernels (``nybble._C.kernel_api()``, plain C entry points) and registers them in place of the
Python ones; :func:`disable` gives the Python kernels back. ``nybble._C`` itself never includes or
links torch (issue 3, item 1): only this optional library does, built by
``torch.utils.cpp_extension`` with the system's C++ compiler (as inductor needs one anyway).

* Opt-in: :func:`enable` (:func:`enable_from_env` does it when ``NYBBLE_CPU_SHIM=1``; the end-to-end
  benchmark ``nybble.bench.e2e_cpu`` calls that in each variant's process, or :func:`enable` with ``--shim 1``).
  The first build takes ~30-60 s; later processes load the cached library (``NYBBLE_CPU_SHIM_DIR``,
  default ``~/.cache/nybble/cpu_shim``; the name carries a hash of the source and torch's version).
* Any failure (no compiler, a build error, another torch) leaves the Python kernels in place;
  :func:`enable` then returns False and :func:`status` says why (``NYBBLE_CPU_SHIM=1`` warns once).
* Same results, same errors (ValueError / TypeError with the Python kernels' messages) as the Python
  kernels. One difference: the shim's attention kernel uses the ISA path selected when :func:`enable`
  ran (the attention op has no ``isa`` argument); call :func:`enable` again after changing the path.
* Fairness: the baseline's op ``nybble::torch_int4_cpu_a16w4`` gets a C++ kernel too (calling
  ``at::_weight_int4pack_mm_for_cpu``), so PyTorch's int4 path loses its Python frame alike.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import warnings
from pathlib import Path

import torch

from . import cpu_oplib
from .cpu_shim_src import SOURCE

#: op name -> bit of the shim's ``install(ops=...)`` mask
OPS = {"cpu_a16w4": 1, "cpu_a8w4": 2, "cpu_decode_attention": 4, "torch_int4_cpu_a16w4": 8}
_STATE: dict = {"loaded": False, "installed": 0, "error": None, "path": None}


def _tag() -> str:
    h = hashlib.sha256((SOURCE + torch.__version__ + str(torch._C._GLIBCXX_USE_CXX11_ABI)).encode()).hexdigest()
    return h[:16]


def cache_dir() -> Path:
    """Where the built library is kept (``NYBBLE_CPU_SHIM_DIR`` or ``~/.cache/nybble/cpu_shim``)."""
    root = os.environ.get("NYBBLE_CPU_SHIM_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "nybble",
                                                                  "cpu_shim")
    return Path(root) / f"shim_{_tag()}"


def _load() -> None:
    """Build (if not cached) and load the shim library; raises on any failure."""
    if _STATE["loaded"]:
        return
    from torch.utils import cpp_extension
    d = cache_dir()
    d.mkdir(parents=True, exist_ok=True)
    src = d / "nybble_cpu_shim.cpp"
    if not src.exists() or src.read_text() != SOURCE:
        tmp = d / f"nybble_cpu_shim.cpp.{os.getpid()}"
        tmp.write_text(SOURCE)
        os.replace(tmp, src)
    cpp_extension.load(name=f"nybble_cpu_shim_{_tag()}", sources=[str(src)], build_directory=str(d),
                       extra_cflags=["-O2"], is_python_module=False, verbose=False)
    _STATE["loaded"], _STATE["path"] = True, str(d)


def _api_address() -> int:
    from .. import _C
    cap = _C.kernel_api()
    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.restype, get.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    return int(get(cap, b"nybble._C.kernel_api"))


def enable(ops: tuple[str, ...] = tuple(OPS)) -> bool:
    """Build/load the shim and make its C++ kernels the CPU kernels of ``ops`` (default: all four
    decode ops); True if they are installed, False (Python kernels kept, :func:`status` says why)
    if anything failed. Calling it again re-installs (e.g. after the ISA path changed)."""
    unknown = [o for o in ops if o not in OPS]
    if unknown:
        raise ValueError(f"cpu_shim.enable: unknown ops {unknown}; allowed: {list(OPS)}")
    try:
        from . import cpu_attention, cpu_ops, torch_int4_cpu  # noqa: F401  (the modules that define the ops)
        from .cpu import selected_isa
        _load()
        api, isa = _api_address(), selected_isa()
    except Exception as exc:  # no compiler, build error, incompatible torch: keep the Python kernels
        _STATE["error"] = f"{type(exc).__name__}: {exc}"
        return False
    disable()
    mask = 0
    for name in ops:
        mask |= OPS[name]
        cpu_oplib.drop_python_impl(name)
    try:
        torch.ops.nybble_cpu_shim.install(api, isa, mask)
    except Exception as exc:
        for name in ops:
            cpu_oplib.restore_python_impl(name)
        _STATE["error"] = f"{type(exc).__name__}: {exc}"
        return False
    _STATE["installed"], _STATE["error"] = mask, None
    return True


def disable() -> None:
    """Give the installed ops their Python CPU kernels back (no-op if none is installed)."""
    if not _STATE["installed"]:
        return
    torch.ops.nybble_cpu_shim.uninstall()
    for name, bit in OPS.items():
        if _STATE["installed"] & bit:
            cpu_oplib.restore_python_impl(name)
    _STATE["installed"] = 0


def status() -> dict:
    """``{"installed": [op names], "loaded": bool, "path": build dir or None, "error": last failure or None}``."""
    return {"installed": [n for n, b in OPS.items() if _STATE["installed"] & b], "loaded": _STATE["loaded"],
            "path": _STATE["path"], "error": _STATE["error"]}


def enable_from_env() -> bool:
    """:func:`enable` when ``NYBBLE_CPU_SHIM=1`` (warns once if it fails); False otherwise."""
    if os.environ.get("NYBBLE_CPU_SHIM", "0").strip() != "1":
        return False
    ok = enable()
    if not ok:
        warnings.warn(f"NYBBLE_CPU_SHIM=1: the C++ op shim is unavailable ({_STATE['error']}); "
                      "the Python op kernels are used", RuntimeWarning, stacklevel=2)
    return ok


__all__ = ["OPS", "cache_dir", "disable", "enable", "enable_from_env", "status"]
