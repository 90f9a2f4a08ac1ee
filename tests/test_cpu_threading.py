"""The threading backends of the C++ CPU kernels (``openmp``: torch's own OpenMP runtime, found at run
time; ``pool``: nybble's threads) and the cached direct-call path of ``NybbleCpuKernel.apply``."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch

from nybble import primitives as P
from nybble.kernels import cpu
from nybble.kernels.base import LinearSpec
from nybble.plain import PlainInt4Weight

pytestmark = pytest.mark.skipif(not cpu.NybbleCpuKernel.is_supported("cpu")[0],
                                reason=f"nybble._C unavailable: {cpu.NybbleCpuKernel.is_supported('cpu')[1]}")

# torch's CPU build runs its ops on OpenMP here (libgomp); the openmp backend must then be found
TORCH_HAS_OPENMP = "OpenMP" in torch.__config__.parallel_info() and "not available" not in torch.__config__.parallel_info()


@pytest.fixture
def threads2():
    prev = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(prev)


def _weight(n: int, k: int, group: int, zp: bool, dtype, seed: int) -> PlainInt4Weight:
    g = torch.Generator().manual_seed(seed)
    gl = P.group_len(group, k)
    codes = torch.randint(0, 16, (n, k), generator=g, dtype=torch.int32)
    scale = (torch.rand(n, k // gl, generator=g) * 0.02 + 0.001).to(dtype)
    zero = torch.randint(0, 16, (n, k // gl), generator=g, dtype=torch.int8) if zp else None
    return PlainInt4Weight(P.pack_int32(codes), scale, zero, group, (n, k))


def _kernel(plain: PlainInt4Weight, act: str):
    spec = LinearSpec.for_weight(plain, act)
    kern = cpu.NybbleCpuKernel(spec)
    return kern, kern.prepack(plain)


@pytest.mark.skipif(not TORCH_HAS_OPENMP, reason="this torch build has no OpenMP runtime")
def test_openmp_backend_is_found_and_reported():
    info = cpu.threads_info()
    assert info["backend"] == "openmp", info
    assert "omp" in os.path.basename(info["omp_library"]), info
    assert cpu.threads_backend() == "openmp"
    spec = LinearSpec.for_weight(_weight(32, 128, 128, True, torch.float32, 0), "a16")
    assert cpu.NybbleCpuKernel(spec).threads_backend == "openmp"


@pytest.mark.skipif(not TORCH_HAS_OPENMP, reason="this torch build has no OpenMP runtime")
def test_openmp_backend_runs_on_torchs_threads(threads2):
    def nthreads_in_process() -> int:
        return len(os.listdir("/proc/self/task"))
    torch.randn(1 << 22).sum()  # a torch OpenMP region: its team of 2 exists from now on
    with cpu.use_threads_backend("openmp"):
        before = nthreads_in_process()
        probe = cpu.threads_probe(2)
        assert probe == {"calls": 2, "team": 2, "distinct": 2, "on_caller": 1}
        assert nthreads_in_process() == before  # no thread of nybble's own: torch's worker ran it


@pytest.mark.parametrize("backend", ["openmp", "pool"])
@pytest.mark.parametrize("n", [1, 2, 3])
def test_probe_every_tid_runs_once(backend, n):
    with cpu.use_threads_backend(backend) as active:
        assert active == backend or (backend == "openmp" and not TORCH_HAS_OPENMP)
        assert cpu.threads_probe(n) == {"calls": n, "team": n, "distinct": n, "on_caller": 1}


CASES = [  # (N, K, group, zero point, dtype, act, M)
    (40, 384, 128, True, torch.bfloat16, "a16", 1),
    (512, 2048, 128, True, torch.bfloat16, "a16", 1),
    (2048, 2048, 128, True, torch.bfloat16, "a16", 3),
    (200, 512, 64, False, torch.float32, "a16", 17),
    (96, 256, -1, True, torch.float16, "a16", 64),
    (512, 2048, 128, True, torch.bfloat16, "a8_sym", 1),
    (2048, 2048, 128, True, torch.bfloat16, "a8_asym", 2),
    (200, 512, 32, False, torch.float32, "a8_sym", 65),
]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[5]}-{c[0]}x{c[1]}-g{c[2]}-M{c[6]}")
def test_backends_bit_identical(case, threads):
    n, k, group, zp, dtype, act, m = case
    plain = _weight(n, k, group, zp, dtype, seed=n + k + m)
    kern, packed = _kernel(plain, act)
    bias = torch.randn(n, generator=torch.Generator().manual_seed(3)).to(dtype) if m % 2 else None
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(m)).to(dtype)
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        outs = {}
        for backend in ("openmp", "pool"):
            with cpu.use_threads_backend(backend):
                outs[backend] = (kern.apply(x, packed, bias), kern.apply(x[None], packed, bias))
    finally:
        torch.set_num_threads(prev)
    ref = outs["pool"][0]
    assert torch.isfinite(ref.float()).all() and ref.abs().max() > 0
    for y2, y3 in outs.values():
        assert torch.equal(y2, ref) and torch.equal(y3[0], ref)
    # and the numbers are the reference kernel's (within the kernels' own test tolerance)
    from nybble.kernels.reference import ReferenceKernel
    rk = ReferenceKernel(kern.spec)
    want = rk.apply(x, rk.prepack(plain), bias).float()
    tol = 2e-2 if dtype != torch.float32 else 1e-4
    torch.testing.assert_close(ref.float(), want, rtol=tol, atol=tol * want.abs().max().item())


def test_thread_count_follows_torch(monkeypatch):
    """Each call passes torch.get_num_threads() at call time to the C++ op."""
    plain = _weight(2048, 2048, 128, True, torch.bfloat16, 5)
    seen = []
    real = cpu._ops._C

    class Spy:
        def __getattr__(self, name):
            fn = getattr(real, name)
            if name not in ("a16w4", "a8w4"):
                return fn
            def call(*args):
                seen.append(args[-1])
                return fn(*args)
            return call
    monkeypatch.setattr(cpu._ops, "_C", Spy())
    prev = torch.get_num_threads()
    x = torch.randn(1, 2048, dtype=torch.bfloat16)
    try:
        for act in ("a16", "a8_sym"):
            kern, packed = _kernel(plain, act)
            for t in (1, 2, 1):
                torch.set_num_threads(t)
                kern.apply(x, packed, None)
    finally:
        torch.set_num_threads(prev)
    assert seen == [1, 2, 1, 1, 2, 1]


def test_eager_plan_follows_the_tensors():
    """The cached direct-call plan is rebuilt when the packed tensors or the bias change."""
    plain = _weight(64, 256, 128, True, torch.float32, 7)
    kern, packed = _kernel(plain, "a16")
    x = torch.randn(3, 256)
    bias = torch.randn(64)
    y0 = kern.apply(x, packed, None)
    y1 = kern.apply(x, packed, bias)
    torch.testing.assert_close(y1, y0 + bias)
    bias.add_(1.0)  # in place: same object and storage, new version
    torch.testing.assert_close(kern.apply(x, packed, bias), y1 + 1.0)
    other = kern.prepack(_weight(64, 256, 128, True, torch.float32, 8))
    assert not torch.equal(kern.apply(x, other, None), y0)
    assert torch.equal(kern.apply(x, packed, None), y0)
    # non-contiguous and 3-D inputs take the same path
    xt = torch.randn(256, 3).t()
    torch.testing.assert_close(kern.apply(xt, packed, None), kern.apply(xt.contiguous(), packed, None), rtol=0, atol=0)
    assert kern.apply(torch.randn(2, 0, 256), packed, None).shape == (2, 0, 64)
    with pytest.raises(ValueError, match="features|K=|256"):
        kern.apply(torch.randn(2, 128), packed, None)


_NO_TORCH_SCRIPT = r"""
import ctypes, importlib.machinery, importlib.util, sys
path = sys.argv[1]
spec = importlib.util.spec_from_file_location("nybble._C", path,
                                              loader=importlib.machinery.ExtensionFileLoader("nybble._C", path))
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
assert "torch" not in sys.modules
lib = ctypes.CDLL(path)
for f in ("nybble_threads_backend", "nybble_threads_backend_note"):
    getattr(lib, f).restype = ctypes.c_char_p
team, distinct, caller = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
calls = lib.nybble_threads_probe(2, ctypes.byref(team), ctypes.byref(distinct), ctypes.byref(caller))
print(lib.nybble_threads_backend().decode(), calls, team.value, distinct.value, caller.value)
print(lib.nybble_threads_backend_note().decode())
"""


def test_fallback_to_pool_without_openmp_runtime():
    """A process without any OpenMP runtime (no torch): the pool runs, and a request for openmp says why not."""
    env = dict(os.environ, NYBBLE_CPU_THREADS_BACKEND="openmp")
    out = subprocess.run([sys.executable, "-c", _NO_TORCH_SCRIPT, cpu._ops._C.__file__], capture_output=True,
                         text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    first, note = out.stdout.splitlines()[:2]
    assert first.split() == ["pool", "2", "2", "2", "1"]
    assert "no OpenMP runtime" in note


def test_env_var_forces_pool_and_bad_names():
    """NYBBLE_CPU_THREADS_BACKEND is read when the backend is resolved (set_threads_backend(None))."""
    old = os.environ.get("NYBBLE_CPU_THREADS_BACKEND")
    try:
        os.environ["NYBBLE_CPU_THREADS_BACKEND"] = "pool"
        assert cpu.set_threads_backend(None) == "pool"
        assert cpu.threads_probe(2)["distinct"] == 2
        os.environ["NYBBLE_CPU_THREADS_BACKEND"] = "tbb"
        active = cpu.set_threads_backend(None)
        info = cpu.threads_info()
        assert active == info["backend"] == ("openmp" if TORCH_HAS_OPENMP else "pool")
        assert "tbb" in info["note"] and "auto" in info["note"]
    finally:
        if old is None:
            os.environ.pop("NYBBLE_CPU_THREADS_BACKEND", None)
        else:
            os.environ["NYBBLE_CPU_THREADS_BACKEND"] = old
        cpu.set_threads_backend(None)
    with pytest.raises(ValueError, match="auto, openmp, pool"):
        cpu.set_threads_backend("tbb")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_runs_on_the_pool(threads2):
    """After fork() the parent's OpenMP team threads do not exist in the child (GNU libgomp would wait
    for them forever): the child's kernels run on nybble's pool and give the same result."""
    plain = _weight(512, 2048, 128, False, torch.float32, 11)
    kern, packed = _kernel(plain, "a16")
    x = torch.randn(4, 2048, generator=torch.Generator().manual_seed(4))
    want = kern.apply(x, packed, None)
    parent = cpu.threads_backend()
    pid = os.fork()
    if pid == 0:  # the child: always leaves through os._exit
        code = 3
        try:
            ok = torch.equal(kern.apply(x, packed, None), want) and cpu.threads_backend() == "pool"
            code = 0 if ok else 2
        finally:
            os._exit(code)
    deadline = time.monotonic() + 60
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung in a kernel call")
        time.sleep(0.01)
    assert os.waitstatus_to_exitcode(status) == 0
    assert parent == ("openmp" if TORCH_HAS_OPENMP else "pool")
    assert cpu.threads_backend() == parent  # the parent is unaffected
