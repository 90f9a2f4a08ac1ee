"""C++ CPU kernels of the decode ops for torch's dispatcher (the op calls without a Python frame): on by default.

The decode ops (``nybble::cpu_a16w4``, ``nybble::cpu_a8w4``, ``nybble::cpu_decode_attention`` and the
baseline's ``nybble::torch_int4_cpu_a16w4``) are defined with Python CPU kernels
(:mod:`nybble.kernels.cpu_oplib`): when a compiled graph calls one, torch's dispatcher runs a Python
frame (argument conversion, checks, the ``nybble._C`` call): ~4-6 us per call, ~81 calls per decode
step of a 16-layer Llama (benchmarks/cpu/eighth-e2e/NOTES-overhead.md). This module compiles (once per
torch version, cached on disk) a small C++ library against the installed torch
(:mod:`nybble.kernels.cpu_shim_src`) whose kernels do the same checks and call the same kernels
(``nybble._C.kernel_api()``, plain C entry points), and registers them in place of the Python ones:
~1.5 us per call. ``nybble._C`` itself never includes or links torch (issue 3, item 1): only this
library does, built with the system's C++ compiler (``$CXX``, else ``c++``; no ninja needed), which
``torch.compile``'s inductor needs on the CPU anyway.

When it is built and installed (``NYBBLE_CPU_SHIM`` unset or ``auto``, the default):

* **At import** of the op-defining modules (:mod:`~nybble.kernels.cpu_ops`, ...), when the built library
  for this torch and this source is already in the cache: it is loaded (milliseconds) and each op gets
  its C++ kernel right after its definition, before anything can have called it.
* **At the first ``torch.compile`` trace of one of the ops** (its fake implementation runs with
  ``torch.compiler.is_compiling()``), when it is not cached: built there (~10-60 s once; inductor's own
  C++ compilation of the graph takes tens of seconds too), then installed. That is where the dispatcher
  frames cost (eager inference calls ``nybble._C`` directly, never through the dispatcher), so a plain
  ``import nybble`` or eager use never waits for a compiler.
* **On request**: :func:`enable` builds / loads / installs at once (and retries an earlier failure).

``NYBBLE_CPU_SHIM=0`` (or ``off``): never built or installed automatically (:func:`enable` still works).
``NYBBLE_CPU_SHIM=1`` (or ``require``): built already at the import of the ops when not cached, earlier
build failures are retried, and any failure warns (RuntimeWarning). :func:`disable` gives the Python
kernels back for the rest of the process (the automatic paths leave them alone afterwards).

Safety:

* Cache: ``NYBBLE_CPU_SHIM_DIR`` or ``~/.cache/nybble/cpu_shim`` (when that cannot be written, a private
  ``<tmp>/nybble-cpu-shim-<uid>`` owned by this user, mode 0700), subdirectory ``shim_<hash of the source,
  torch's version and C++ ABI>``. A build runs under an exclusive ``flock`` of ``build.lock`` there
  (concurrent processes: one builds, the others wait and load its result; the lock dies with its
  process), in a private temporary directory, and the library is moved into place with an atomic rename:
  a half-written library is never loaded. ``build.log`` keeps the last build's command and output.
* A failed build (no compiler, compile error, unwritable cache) keeps the Python kernels; :func:`status`
  says why and the process does not retry automatically; a compile error is also recorded on disk
  (``failed.json``, with the compiler's identity), so that later processes do not retry it with the same
  compiler either (delete the file, call :func:`enable` or set ``NYBBLE_CPU_SHIM=1`` to retry).
* Swapping an op's kernel is not safe while another thread calls that op through the dispatcher, so it
  only happens at the op's definition (import), at a compile trace, or in :func:`enable` /
  :func:`disable`. A program that calls these ops through torch's dispatcher from other threads while it
  compiles for the first time should call :func:`enable` up front (or set ``NYBBLE_CPU_SHIM=0``).
* Same results and errors (ValueError / TypeError with the Python kernels' messages) as the Python
  kernels (tests/test_cpu_overhead_shim.py). One difference: the attention op has no ``isa`` argument;
  its C++ kernel uses the ISA path selected when it was installed or when a graph calling it was last
  traced (as a compiled graph's linear ops keep the ``isa`` constant they were traced with), while the
  Python kernel asks :func:`nybble.kernels.cpu.selected_isa` at every call.
* Fairness of benchmarks: the baseline's op ``nybble::torch_int4_cpu_a16w4`` gets a C++ kernel too
  (calling ``at::_weight_int4pack_mm_for_cpu``), and the attention op is shared by every variant.
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import os
import shlex
import shutil
import stat
import subprocess
import tempfile
import threading
import time
import warnings
from pathlib import Path

import torch

from . import cpu_oplib
from .cpu_shim_src import SOURCE

#: op name -> bit of the shim's ``install(ops=...)`` mask
OPS = {"cpu_a16w4": 1, "cpu_a8w4": 2, "cpu_decode_attention": 4, "torch_int4_cpu_a16w4": 8}
#: the library's file name inside the cache directory
LIB_NAME = "nybble_cpu_shim.so"
#: seconds a build may take (a slow machine under load: several times the ~13 s of an idle 2-core one)
BUILD_TIMEOUT_S = 600

_LOG = logging.getLogger("nybble.cpu_shim")
_LOCK = threading.RLock()  # load / build / install / uninstall in this process
_STATE: dict = {
    "loaded": False,     # the library is loaded into this process
    "path": None,        # the loaded library's file
    "how": None,         # "cache" (found built) | "built" (by this process) ; + when
    "when": None,        # "import" | "compile trace" | "enable()"
    "build_s": None,     # seconds of this process's build
    "installed": 0,      # mask of OPS with the C++ kernel now
    "error": None,       # the last failure, or None
    "gave_up": False,    # an automatic attempt failed: no automatic retry in this process
    "disabled_by": None,  # "cpu_shim.disable()" after an explicit disable
    "trace_seen": False,  # the first compile trace of an op was handled
    "attn_isa": None,    # the attention kernel's ISA path, as last given to the library
}
_TAG: str | None = None


class ShimUnavailable(RuntimeError):
    """The shim cannot be built or loaded here (the message says why); the Python kernels stay."""


# ----------------------------------------------------------------------------------------- mode & paths

def mode() -> str:
    """``NYBBLE_CPU_SHIM``: ``"auto"`` (unset / empty / ``auto``), ``"off"`` (``0``/``off``/``false``/``no``)
    or ``"require"`` (``1``/``on``/``true``/``yes``/``require``); another value warns and means auto."""
    raw = os.environ.get("NYBBLE_CPU_SHIM", "").strip().lower()
    if raw in ("", "auto"):
        return "auto"
    if raw in ("0", "off", "false", "no"):
        return "off"
    if raw in ("1", "on", "true", "yes", "require"):
        return "require"
    warnings.warn(f"NYBBLE_CPU_SHIM={raw!r} is not one of 0 / 1 / auto; using auto", RuntimeWarning, stacklevel=2)
    return "auto"


def _tag() -> str:
    global _TAG
    if _TAG is None:
        key = SOURCE + torch.__version__ + str(torch._C._GLIBCXX_USE_CXX11_ABI)
        _TAG = hashlib.sha256(key.encode()).hexdigest()[:16]
    return _TAG


def _default_root() -> Path:
    return Path(os.path.expanduser("~")) / ".cache" / "nybble" / "cpu_shim"


def _uid() -> int:
    return os.getuid() if hasattr(os, "getuid") else 0


def _fallback_root() -> Path:
    return Path(tempfile.gettempdir()) / f"nybble-cpu-shim-{_uid()}"


def _roots() -> list[Path]:
    """Candidate cache roots, in order: ``NYBBLE_CPU_SHIM_DIR`` alone when set, else the default and the
    private temporary fallback."""
    explicit = os.environ.get("NYBBLE_CPU_SHIM_DIR")
    if explicit:
        return [Path(explicit)]
    return [_default_root(), _fallback_root()]


def _private_ok(path: Path) -> bool:
    """The fallback root in the shared temporary directory is used only if it is a real directory owned by
    this user that nobody else may write (a library found there is loaded into the process)."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == _uid() and not st.st_mode & 0o022


def cache_dir() -> Path:
    """The directory of this torch's built library: where it was loaded from, else where it is (or would
    be) built: ``<root>/shim_<hash>`` (see the module docstring for the root)."""
    if _STATE["path"]:
        return Path(_STATE["path"]).parent
    found = _find_cached()
    if found is not None:
        return found.parent
    return _roots()[0] / f"shim_{_tag()}"


def library_path() -> Path:
    """The library file of :func:`cache_dir` (it may not exist yet)."""
    return cache_dir() / LIB_NAME


def _find_cached() -> Path | None:
    """The built library of this tag in one of the cache roots, or None."""
    fallback = _fallback_root()
    for root in _roots():
        if root == fallback and not os.environ.get("NYBBLE_CPU_SHIM_DIR") and not _private_ok(root):
            continue
        lib = root / f"shim_{_tag()}" / LIB_NAME
        if lib.is_file():
            return lib
    return None


# ------------------------------------------------------------------------------------------------ build

def _compiler() -> tuple[list[str], str]:
    """(``$CXX`` or ``c++`` split into words with the program resolved, its identity for failure records)."""
    words = shlex.split(os.environ.get("CXX") or "c++")
    prog = shutil.which(words[0]) if words else None
    if prog is None:
        raise ShimUnavailable(f"no C++ compiler: {words[0] if words else '(empty CXX)'!r} not found "
                              "(install one, e.g. g++, or set CXX)")
    st = os.stat(prog)
    return [prog] + words[1:], f"{' '.join(words)} -> {prog} ({st.st_size} bytes, mtime {st.st_mtime_ns})"


def _build_command(cxx: list[str], src: Path, out: Path) -> list[str]:
    from torch.utils import cpp_extension
    major, minor = (int(v) for v in torch.__version__.split("+")[0].split(".")[:2])
    std = "c++20" if (major, minor) >= (2, 10) else "c++17"  # torch's own extension flags
    cmd = list(cxx) + ["-shared", "-fPIC", "-O2", f"-std={std}",
                       f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}"]
    cmd += [f"-isystem{p}" for p in cpp_extension.include_paths()]
    cmd += [str(src), "-o", str(out)]
    cmd += [f"-L{p}" for p in cpp_extension.library_paths()] + ["-lc10", "-ltorch_cpu", "-ltorch"]
    return cmd


def _writable_dir() -> Path:
    """``<root>/shim_<tag>``, created, in the first root that can be written; raises ShimUnavailable."""
    errors = []
    fallback = _fallback_root()
    for root in _roots():
        d = root / f"shim_{_tag()}"
        try:
            if root == fallback and not os.environ.get("NYBBLE_CPU_SHIM_DIR"):
                os.makedirs(root, mode=0o700, exist_ok=True)
                if not _private_ok(root):
                    raise PermissionError(f"{root} is not a private directory of this user")
            d.mkdir(parents=True, exist_ok=True)
            probe = d / f".probe-{os.getpid()}-{threading.get_ident()}"
            probe.write_text("")
            probe.unlink()
            return d
        except OSError as exc:
            errors.append(f"{d}: {type(exc).__name__}: {exc}")
    raise ShimUnavailable("no writable cache directory for the C++ op shim (" + "; ".join(errors) +
                          "); set NYBBLE_CPU_SHIM_DIR")


def _lock(d: Path, timeout_s: float):
    """The exclusive ``flock`` of ``d/build.lock`` (an open file; closing it unlocks)."""
    try:
        import fcntl
    except ImportError as exc:  # not a POSIX system
        raise ShimUnavailable("no fcntl.flock on this platform: the C++ op shim is not built here") from exc
    f = open(d / "build.lock", "a+")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return f
        except BlockingIOError:
            if time.monotonic() > deadline:
                f.close()
                raise ShimUnavailable(f"timed out after {timeout_s:.0f} s waiting for another process's build "
                                      f"of the C++ op shim ({d / 'build.lock'})")
            time.sleep(0.05)


def _failure_record(d: Path, compiler_id: str) -> dict | None:
    """The recorded failed build in ``d`` with this compiler, or None."""
    try:
        rec = json.loads((d / "failed.json").read_text())
    except (OSError, ValueError):
        return None
    return rec if rec.get("compiler") == compiler_id and rec.get("tag") == _tag() else None


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _build(respect_failure_record: bool) -> Path:
    """Build the library unless a cached one exists (under the cache's lock); returns its path. Raises
    ShimUnavailable (why) on any failure."""
    found = _find_cached()
    if found is not None:
        return found
    cxx, compiler_id = _compiler()
    d = _writable_dir()
    lock = _lock(d, BUILD_TIMEOUT_S + 60)
    try:
        lib = d / LIB_NAME
        if lib.is_file():  # another process built it while this one waited
            _STATE["how"] = "cache"
            return lib
        rec = _failure_record(d, compiler_id) if respect_failure_record else None
        if rec is not None:
            raise ShimUnavailable(f"an earlier build with this compiler failed ({rec.get('reason')}; log "
                                  f"{d / 'build.log'}); delete {d / 'failed.json'}, call "
                                  "nybble.kernels.cpu_shim.enable() or set NYBBLE_CPU_SHIM=1 to retry")
        for old in d.glob(".build-*"):  # left by a killed build (none can be running: we hold the lock)
            shutil.rmtree(old, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=d))
        try:
            src, out = tmp / "nybble_cpu_shim.cpp", tmp / LIB_NAME
            src.write_text(SOURCE)
            cmd = _build_command(cxx, src, out)
            t0 = time.perf_counter()
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
                rc, output = proc.returncode, proc.stdout + proc.stderr
            except subprocess.TimeoutExpired as exc:
                rc, output = -1, f"timed out after {BUILD_TIMEOUT_S} s\n{exc.stdout or ''}{exc.stderr or ''}"
            except OSError as exc:
                rc, output = -1, f"{type(exc).__name__}: {exc}"
            seconds = time.perf_counter() - t0
            _write_atomic(d / "build.log", f"$ {shlex.join(cmd)}\n{output}\nexit {rc} after {seconds:.1f} s\n")
            if rc != 0 or not out.is_file():
                last = (output.strip().splitlines() or [""])[-1][:300]
                reason = f"{cxx[0]} exited with {rc}" + (f": {last}" if last else "")
                _write_atomic(d / "failed.json", json.dumps({"compiler": compiler_id, "tag": _tag(), "reason": reason,
                                                            "time": time.time()}))
                raise ShimUnavailable(f"the C++ op shim did not build ({reason}; log {d / 'build.log'})")
            os.replace(out, lib)  # atomic: a reader sees no library or the whole one
            try:
                (d / "failed.json").unlink()
            except FileNotFoundError:
                pass
            _STATE["how"], _STATE["build_s"] = "built", seconds
            _LOG.info("built the C++ op shim in %.1f s: %s", seconds, lib)
            return lib
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        lock.close()


def _load_library(path: Path, when: str) -> None:
    try:
        torch.ops.load_library(str(path))
    except Exception as exc:  # e.g. built for another torch with the same version string
        raise ShimUnavailable(f"could not load {path} ({type(exc).__name__}: {exc}); delete {path.parent} to "
                              "rebuild it") from exc
    _STATE["loaded"], _STATE["path"], _STATE["when"] = True, str(path), when
    if _STATE["how"] is None:
        _STATE["how"] = "cache"


# ---------------------------------------------------------------------------------------------- install

def _api_address() -> int:
    from .. import _C
    cap = _C.kernel_api()
    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.restype, get.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    return int(get(cap, b"nybble._C.kernel_api"))


def _install(names) -> bool:
    """Give the defined ops among ``names`` their C++ kernels (library loaded; caller holds _LOCK)."""
    todo = [n for n in names if n in cpu_oplib._PY_IMPLS and not _STATE["installed"] & OPS[n]]
    if not todo:
        return True
    try:
        api = _api_address() if any(OPS[n] & 7 for n in todo) else 0
        isa = ""
        if "cpu_decode_attention" in todo:
            from .cpu import selected_isa
            isa = selected_isa()
    except Exception as exc:
        _STATE["error"] = f"{type(exc).__name__}: {exc}"
        return False
    mask = 0
    for name in todo:
        mask |= OPS[name]
        cpu_oplib.drop_python_impl(name)
    try:
        _STATE["installed"] = int(torch.ops.nybble_cpu_shim.install(api, isa, mask))
    except Exception as exc:
        try:  # an op registered before the failing one: remove it again, the Python kernels come back
            torch.ops.nybble_cpu_shim.uninstall(mask)
        except Exception:
            pass
        for name in todo:
            cpu_oplib.restore_python_impl(name)
        _STATE["error"] = f"{type(exc).__name__}: {exc}"
        return False
    if mask & 4:
        _STATE["attn_isa"] = isa
    _STATE["error"] = None
    return True


def _uninstall_all() -> None:
    if not _STATE["installed"]:
        return
    torch.ops.nybble_cpu_shim.uninstall(_STATE["installed"])
    for name, bit in OPS.items():
        if _STATE["installed"] & bit:
            cpu_oplib.restore_python_impl(name)
    _STATE["installed"] = 0


def _fail(exc: BaseException, when: str) -> None:
    _STATE["error"] = f"{type(exc).__name__}: {exc}" if not isinstance(exc, ShimUnavailable) else str(exc)
    _STATE["gave_up"] = True
    if mode() == "require":
        warnings.warn(f"NYBBLE_CPU_SHIM=1: the C++ op shim is unavailable ({_STATE['error']}); the Python op "
                      "kernels are used", RuntimeWarning, stacklevel=3)
    else:
        _LOG.info("C++ op shim unavailable at %s (Python op kernels kept): %s", when, _STATE["error"])


def _auto(when: str, build: bool) -> None:
    """The automatic path (caller holds _LOCK): load the cached library (or build it when ``build``) and
    install every defined op."""
    m = mode()
    if m == "off" or _STATE["disabled_by"]:
        return
    if not _STATE["loaded"]:
        if _STATE["gave_up"]:
            return
        try:
            path = _find_cached()
            if path is None:
                if not build:
                    return
                path = _build(respect_failure_record=m != "require")
            _load_library(path, when)
        except Exception as exc:  # no compiler, build error, unwritable cache, incompatible library
            _fail(exc, when)
            return
    if not _install(tuple(OPS)) and m == "require":
        warnings.warn(f"NYBBLE_CPU_SHIM=1: the C++ op shim could not be installed ({_STATE['error']})",
                      RuntimeWarning, stacklevel=3)


def on_define(name: str) -> None:
    """Called by :func:`nybble.kernels.cpu_oplib.define_cpu_op` right after op ``nybble::name`` is defined
    (at the import of its module, before anything can call it): the C++ kernel when the library is
    loaded or cached (built at this point only with ``NYBBLE_CPU_SHIM=1``)."""
    if name not in OPS:
        return
    with _LOCK:
        try:
            _auto("import", build=mode() == "require")
        except Exception as exc:  # never break the definition of an op: its Python kernel stays
            _STATE["error"] = f"{type(exc).__name__}: {exc}"


def on_trace(name: str) -> None:
    """Called by the fake implementations of the ops (tracing): the first call under ``torch.compile``
    builds the library when it is not cached and installs it; the attention op's ISA path follows the
    path selected at trace time."""
    if not _STATE["trace_seen"]:
        if not torch.compiler.is_compiling():
            return
        with _LOCK:
            if not _STATE["trace_seen"]:
                try:
                    _auto("compile trace", build=True)
                except Exception as exc:  # never break a trace: the Python kernels stay
                    _STATE["error"] = f"{type(exc).__name__}: {exc}"
                finally:
                    _STATE["trace_seen"] = True
    if name == "cpu_decode_attention" and _STATE["installed"] & 4:
        try:
            from .cpu import selected_isa
            isa = selected_isa()
        except Exception:
            return
        if isa != _STATE["attn_isa"]:
            with _LOCK:
                torch.ops.nybble_cpu_shim.set_attention_isa(isa)
                _STATE["attn_isa"] = isa


# ------------------------------------------------------------------------------------------- public API

def enable(ops: tuple[str, ...] = tuple(OPS)) -> bool:
    """Build (if not cached; an earlier failure is retried) / load the library now and make its C++ kernels
    the CPU kernels of ``ops`` (default: all four decode ops), whatever ``NYBBLE_CPU_SHIM`` says; True if they
    are installed, False (Python kernels kept, :func:`status` says why) if anything failed. Calling it
    again re-installs (e.g. after the ISA path changed). Do not call it while other threads call the ops."""
    unknown = [o for o in ops if o not in OPS]
    if unknown:
        raise ValueError(f"cpu_shim.enable: unknown ops {unknown}; allowed: {list(OPS)}")
    with _LOCK:
        try:
            from . import cpu_attention, cpu_ops, torch_int4_cpu  # noqa: F401  (the modules that define the ops)
            if not _STATE["loaded"]:
                _load_library(_build(respect_failure_record=False), "enable()")
        except Exception as exc:  # no compiler, build error, incompatible torch: keep the Python kernels
            _STATE["error"] = f"{type(exc).__name__}: {exc}" if not isinstance(exc, ShimUnavailable) else str(exc)
            return False
        _STATE["disabled_by"], _STATE["gave_up"] = None, False
        _uninstall_all()
        return _install(ops)


def disable() -> None:
    """Give the ops their Python CPU kernels back, for the rest of the process (the automatic paths do not
    install the shim again; :func:`enable` does). Do not call it while other threads call the ops."""
    with _LOCK:
        _uninstall_all()
        _STATE["disabled_by"] = "cpu_shim.disable()"


def status() -> dict:
    """The shim's state: ``mode`` (see :func:`mode`), ``installed`` (op names with the C++ kernel now),
    ``loaded`` (library loaded into this process), ``path`` (its file or None), ``how`` ("cache" / "built"),
    ``when`` ("import" / "compile trace" / "enable()"), ``build_s``, ``cached`` (a built library for this
    torch exists on disk), ``cache_dir``, ``disabled`` (why the automatic paths stay off, or None),
    ``error`` (the last failure, or None)."""
    with _LOCK:
        m = mode()
        disabled = _STATE["disabled_by"] or ("NYBBLE_CPU_SHIM=0" if m == "off" else None)
        try:
            cached, where = _find_cached() is not None, str(cache_dir())
        except Exception as exc:  # e.g. no home directory
            cached, where = False, f"({type(exc).__name__}: {exc})"
        return {"mode": m, "installed": [n for n, b in OPS.items() if _STATE["installed"] & b],
                "loaded": _STATE["loaded"], "path": _STATE["path"], "how": _STATE["how"], "when": _STATE["when"],
                "build_s": _STATE["build_s"], "cached": cached, "cache_dir": where, "disabled": disabled,
                "error": _STATE["error"]}


def describe() -> str:
    """One line for ``nybble info``: the shim's state and why."""
    s = status()
    if s["installed"]:
        how = ("built by this process" + (f" in {s['build_s']:.1f} s" if s["build_s"] else "")
               if s["how"] == "built" else "loaded from the cache")
        line = f"installed for {', '.join(s['installed'])} ({how} at {s['when']}; {s['path']})"
    elif s["disabled"]:
        line = f"disabled by {s['disabled']}" + (" (library loaded)" if s["loaded"] else "")
    elif s["error"]:
        line = f"unavailable, Python op kernels used: {s['error']}"
    elif s["loaded"]:
        line = f"loaded, not installed ({s['path']})"
    elif s["cached"]:
        line = f"built (cache {s['cache_dir']}), installed when nybble's CPU ops are imported"
    else:
        line = (f"not built yet: built at the first torch.compile of a nybble CPU op (once, ~10-60 s; cache "
                f"{s['cache_dir']})")
    if s["mode"] == "require":
        line += " [NYBBLE_CPU_SHIM=1]"
    return line


def enable_from_env() -> bool:
    """What a benchmark process does before building its models: with ``NYBBLE_CPU_SHIM=0`` :func:`disable`
    (False); otherwise :func:`enable` now, so that no build lands inside a timed compile (True if
    installed; with ``NYBBLE_CPU_SHIM=1`` a failure warns)."""
    if mode() == "off":
        disable()
        return False
    ok = enable()
    if not ok and mode() == "require":
        warnings.warn(f"NYBBLE_CPU_SHIM=1: the C++ op shim is unavailable ({_STATE['error']}); "
                      "the Python op kernels are used", RuntimeWarning, stacklevel=2)
    return ok


__all__ = ["OPS", "ShimUnavailable", "cache_dir", "describe", "disable", "enable", "enable_from_env",
           "library_path", "mode", "on_define", "on_trace", "status"]
