"""nybble._C's CPython frame-stack chunk cache (installed when nybble.kernels.cpu_ops is imported)."""
import os
import subprocess
import sys

import pytest

ops = pytest.importorskip("nybble.kernels.cpu_ops")
_C = ops._C


def _depth(n: int) -> int:
    return _depth(n - 1) + 1 if n else 0


def test_installed_on_import():
    assert ops.STACK_CHUNK_CACHE is True
    stats = _C.stack_chunk_cache_stats()
    assert stats["installed"] is True
    assert _C.install_stack_chunk_cache() is False  # a second install is refused, nothing changes
    assert _C.stack_chunk_cache_stats()["installed"] is True


def test_deep_calls_reuse_chunks_and_stay_correct():
    # 300 nested Python frames need several 16 KiB chunks: each return used to unmap them, each call map them
    before = _C.stack_chunk_cache_stats()
    results = [_depth(300) for _ in range(50)]
    after = _C.stack_chunk_cache_stats()
    assert results == [300] * 50
    assert after["hits"] - before["hits"] >= 49  # later calls got their chunks from the cache
    assert 0 < after["cached"] <= 8


def test_opt_out_by_environment():
    env = dict(os.environ, NYBBLE_PY_STACK_CACHE="0")
    code = ("import nybble.kernels.cpu_ops as o, nybble._C as C; "
            "print(o.STACK_CHUNK_CACHE, C.stack_chunk_cache_stats()['installed'])")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]
