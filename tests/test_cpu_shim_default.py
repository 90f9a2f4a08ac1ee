"""The C++ op shim's default path (nybble.kernels.cpu_shim): when it is built / loaded / installed, and what
happens when it cannot be.

* cache absent: nothing at import; built at the first compile trace of a nybble CPU op, then installed;
* two processes on one fresh cache directory: one build (the lock), both load the same library;
* cache present: loaded and installed at import, no compiler run;
* ``NYBBLE_CPU_SHIM=0``: never built nor installed;
* failure (compiler error, unwritable cache): the Python kernels stay, the status says why, no automatic
  retry; the default cache falls back to a private temporary directory when home cannot be written;
  :func:`cpu_shim.enable` retries.

The real build (the system's C++ compiler) runs once per test run, in the run's cache directory (conftest.py),
by the ``built`` fixture (or earlier by any compile test). The subprocesses here use a test double of the
compiler (a script that logs its call, optionally waits or fails, and writes that already-built library to its
``-o`` path): what is tested is the build's orchestration (when, lock, atomic rename, failure records), not the
compiler, and it keeps these tests to a few seconds. Every child checks that the op's results through torch's
dispatcher are the same before and after (Python kernel, then C++ kernel or Python kernel again).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

cpu = pytest.importorskip("nybble.kernels.cpu")
if not cpu.available_isas():
    pytest.skip("nybble._C is not available", allow_module_level=True)
from nybble.kernels import cpu_shim  # noqa: E402

FAKE_CXX = """#!/bin/sh
# test double of a C++ compiler: logs the call, waits, fails or writes the prebuilt library to the -o path
echo "$$" >> "$SHIM_TEST_LOG"
sleep "${SHIM_TEST_SLEEP:-0}"
if [ -n "$SHIM_TEST_FAIL" ]; then echo "error: forced failure" >&2; exit 1; fi
out=""; prev=""
for a in "$@"; do [ "$prev" = "-o" ] && out="$a"; prev="$a"; done
cp "$SHIM_TEST_LIB" "$out"
"""

CHILD = textwrap.dedent('''
    import json, os, sys
    import torch
    torch.set_num_threads(1)
    from nybble.kernels import cpu, cpu_oplib, cpu_ops, cpu_shim  # defining the ops loads a cached shim
    out = {"at_import": cpu_shim.status()}
    import nybble
    lin = torch.nn.Sequential(torch.nn.Linear(128, 32))
    nybble.quantize(lin, nybble.Int8DynamicActivationInt4WeightConfig(group_size=32), force_kernel="nybble_cpu",
                    show_progress=False)
    p = lin[0].packed()
    x = torch.randn(3, 128, generator=torch.Generator().manual_seed(0))

    def op(x):  # through torch's dispatcher: the Python kernel or the shim's C++ kernel
        return torch.ops.nybble.cpu_a8w4.default(x, p["qw"], p["scale"], p.get("zero_point"), p.get("wcomp"), 32,
                                                 32, False, None, cpu.selected_isa())
    before = op(x)
    out["python_before"] = cpu_oplib.python_impl_active("cpu_a8w4")
    y = torch.compile(lin, backend="eager", fullgraph=True)(x)  # traces the op: the shim's moment
    out["after_compile"] = cpu_shim.status()
    out["python_after"] = cpu_oplib.python_impl_active("cpu_a8w4")
    out["equal"] = torch.equal(op(x), before) and torch.allclose(y, lin(x))
    if sys.argv[1] == "failure":
        y2 = torch.compile(lambda t: lin(t) * 2, backend="eager", fullgraph=True)(x[:2])  # a second trace
        out["after_second_compile"] = cpu_shim.status()
        os.environ["NYBBLE_CPU_SHIM_DIR"] = os.path.join(os.environ["HOME"], "sub")  # HOME is a file
        out["enable_unwritable"] = [cpu_shim.enable(), cpu_shim.status()]
        del os.environ["NYBBLE_CPU_SHIM_DIR"]
        del os.environ["SHIM_TEST_FAIL"]
        out["enable_retry"] = [cpu_shim.enable(), cpu_shim.status()]
        out["equal_after_enable"] = torch.equal(op(x), before)
    print("RESULT " + json.dumps(out))
''')


@pytest.fixture(scope="module")
def built():
    """The library built by the real compiler in this run's cache directory (builds it if no test did)."""
    assert cpu_shim.enable(), cpu_shim.status()
    path = cpu_shim.status()["path"]
    assert path and os.path.isfile(path)
    return path


@pytest.fixture
def fake_cxx(tmp_path, built):
    """(path of the compiler double, its call log, base environment of a child)."""
    cxx = tmp_path / "fake-cxx"
    cxx.write_text(FAKE_CXX)
    cxx.chmod(0o755)
    log = tmp_path / "cxx-calls.log"
    log.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NYBBLE_CPU_SHIM")}
    env.update(CXX=str(cxx), SHIM_TEST_LOG=str(log), SHIM_TEST_LIB=built, NYBBLE_NO_PROGRESS="1")
    return cxx, log, env


def start(scenario: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, scenario], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def result(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    line = next(ln for ln in out.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def calls(log) -> int:
    return len(log.read_text().split())


def test_absent_built_at_first_trace_by_one_of_two_processes_then_loaded_at_import(tmp_path, fake_cxx, built):
    cxx, log, env = fake_cxx
    fresh = tmp_path / "cache"
    env_new = dict(env, NYBBLE_CPU_SHIM_DIR=str(fresh), SHIM_TEST_SLEEP="2")  # a build the other must wait for
    a, b = start("absent", env_new), start("absent", env_new)
    ra, rb = result(a), result(b)
    assert calls(log) == 1  # one build for both processes: the second waited on the lock and loaded it
    for r in (ra, rb):
        assert not r["at_import"]["loaded"] and not r["at_import"]["cached"] and r["at_import"]["installed"] == []
        assert r["python_before"] and not r["python_after"]
        s = r["after_compile"]
        assert s["when"] == "compile trace" and s["error"] is None
        assert {"cpu_a16w4", "cpu_a8w4"} <= set(s["installed"])  # (the ops defined in that process)
        assert r["equal"]
    assert ra["after_compile"]["path"] == rb["after_compile"]["path"]
    assert sorted([ra["after_compile"]["how"], rb["after_compile"]["how"]]) == ["built", "cache"]
    lib = ra["after_compile"]["path"]
    assert os.path.dirname(lib).startswith(str(fresh)) and open(lib, "rb").read() == open(built, "rb").read()
    assert [n for n in os.listdir(os.path.dirname(lib)) if n.startswith(".build-")] == []  # no leftovers

    # cache present: loaded and installed at import, the compiler is not run (it would fail)
    c = start("cached", dict(env, NYBBLE_CPU_SHIM_DIR=str(fresh), SHIM_TEST_FAIL="1"))
    # NYBBLE_CPU_SHIM=0 on a fresh directory: nothing built, nothing installed, even when compiling
    off_dir = tmp_path / "off"
    d = start("off", dict(env, NYBBLE_CPU_SHIM_DIR=str(off_dir), NYBBLE_CPU_SHIM="0"))
    rc, rd = result(c), result(d)
    s = rc["at_import"]
    assert s["loaded"] and s["how"] == "cache" and s["when"] == "import" and s["path"] == lib
    assert {"cpu_a16w4", "cpu_a8w4"} <= set(s["installed"])
    assert not rc["python_before"] and rc["equal"] and rc["after_compile"]["error"] is None
    assert rd["python_after"] and rd["after_compile"]["installed"] == [] and not rd["after_compile"]["loaded"]
    assert rd["after_compile"]["disabled"] == "NYBBLE_CPU_SHIM=0" and rd["equal"]
    assert calls(log) == 1 and not off_dir.exists()


def test_failure_keeps_python_kernels_no_retry_fallback_dir_and_enable(tmp_path, fake_cxx):
    """HOME is a file (so ~/.cache cannot be created): the build goes to the private temporary fallback; the
    compiler fails there: Python kernels, the status says why, a second trace does not retry, the failure is
    recorded; an unwritable NYBBLE_CPU_SHIM_DIR fails cleanly; enable() retries and succeeds."""
    cxx, log, env = fake_cxx
    home, tmp = tmp_path / "home-is-a-file", tmp_path / "tmp"
    home.write_text("")
    tmp.mkdir()
    r = result(start("failure", dict(env, HOME=str(home), TMPDIR=str(tmp), SHIM_TEST_FAIL="1")))
    fallback = tmp / f"nybble-cpu-shim-{os.getuid()}"
    s = r["after_compile"]
    assert r["python_before"] and r["python_after"] and r["equal"]
    assert s["installed"] == [] and not s["loaded"]
    assert "did not build" in s["error"] and "exited with 1" in s["error"] and "forced failure" in s["error"]
    assert r["after_second_compile"]["error"] == s["error"]
    ok, st = r["enable_unwritable"]
    assert not ok and "no writable cache directory" in st["error"] and st["installed"] == []
    ok, st = r["enable_retry"]
    assert ok and {"cpu_a16w4", "cpu_a8w4"} <= set(st["installed"]) and st["error"] is None
    assert st["path"].startswith(str(fallback)) and st["how"] == "built" and st["when"] == "enable()"
    assert r["equal_after_enable"]
    assert calls(log) == 2  # the failed automatic build and the retry of enable(); never per trace / call
    assert (fallback.stat().st_mode & 0o077) == 0  # private to this user
    assert not any(p.name == "failed.json" for p in fallback.rglob("*"))  # the success cleared the record


def test_failure_record_is_honoured_by_the_automatic_path_only(tmp_path, monkeypatch, built):
    """A recorded failure with the same compiler stops later automatic builds (other processes), not enable()."""
    monkeypatch.setenv("NYBBLE_CPU_SHIM_DIR", str(tmp_path))
    monkeypatch.setenv("CXX", "/bin/false")
    cxx, compiler_id = cpu_shim._compiler()
    d = cpu_shim._writable_dir()
    assert d.parent == tmp_path and cpu_shim._failure_record(d, compiler_id) is None
    with pytest.raises(cpu_shim.ShimUnavailable, match="did not build"):
        cpu_shim._build(respect_failure_record=True)  # /bin/false: a failing compiler
    assert cpu_shim._failure_record(d, compiler_id) is not None
    with pytest.raises(cpu_shim.ShimUnavailable, match="an earlier build with this compiler failed"):
        cpu_shim._build(respect_failure_record=True)
    with pytest.raises(cpu_shim.ShimUnavailable, match="did not build"):  # enable()'s path tries again
        cpu_shim._build(respect_failure_record=False)
    monkeypatch.setenv("CXX", "/no/such/compiler")
    with pytest.raises(cpu_shim.ShimUnavailable, match="no C\\+\\+ compiler"):
        cpu_shim._build(respect_failure_record=True)
    assert not (d / cpu_shim.LIB_NAME).exists()


def test_mode_parsing(monkeypatch):
    for raw, want in [("", "auto"), ("auto", "auto"), ("0", "off"), ("off", "off"), ("1", "require"),
                      (" ON ", "require")]:
        monkeypatch.setenv("NYBBLE_CPU_SHIM", raw)
        assert cpu_shim.mode() == want
    monkeypatch.setenv("NYBBLE_CPU_SHIM", "maybe")
    with pytest.warns(RuntimeWarning, match="NYBBLE_CPU_SHIM"):
        assert cpu_shim.mode() == "auto"


def test_info_shows_the_shim(built, monkeypatch):
    from nybble.commands import info
    assert cpu_shim.status()["installed"]
    line = info.shim_line()
    assert line.startswith("C++ op shim: installed for ") and built in line
    assert "C++ op shim:" in "\n".join(info.machine_lines())
    monkeypatch.setenv("NYBBLE_CPU_SHIM", "0")
    cpu_shim.disable()
    try:
        assert "disabled by cpu_shim.disable()" in info.shim_line()
    finally:
        assert cpu_shim.enable()
    assert cpu_shim.describe().startswith("installed")


def test_compiled_attention_follows_the_traced_isa(built):
    """The shim's attention kernel takes the ISA path selected when a graph calling it was traced."""
    from nybble.kernels import cpu_attention  # noqa: F401  (defines the op; installed with the shim)
    assert "cpu_decode_attention" in cpu_shim.status()["installed"]
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(*s, generator=g) for s in [(1, 8, 1, 32), (1, 2, 20, 32), (1, 2, 20, 32)])
    isas = cpu.available_isas()
    for isa in (isas[0], isas[-1]):
        with cpu.use_isa(isa):
            torch._dynamo.reset()
            y = torch.compile(lambda a, b, c: torch.ops.nybble.cpu_decode_attention(a, b, c, None, None),
                              backend="eager", fullgraph=True)(q, k, v)
            assert cpu_shim._STATE["attn_isa"] == isa
            assert torch.equal(y, cpu_attention.decode_attention(q, k, v))  # the Python kernel on that path
    torch._dynamo.reset()


def test_a_broken_cached_library_is_reported(tmp_path):
    """A cached file that does not load (truncated, or built for another torch) gives ShimUnavailable naming it."""
    bad = tmp_path / cpu_shim.LIB_NAME
    bad.write_bytes(b"not a shared library")
    before = cpu_shim.status()["path"]
    with pytest.raises(cpu_shim.ShimUnavailable, match="could not load .* delete"):
        cpu_shim._load_library(bad, "test")
    assert cpu_shim.status()["path"] == before
