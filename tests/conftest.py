import os
import shutil
import tempfile

import pytest
import torch

os.environ.setdefault("NYBBLE_NO_PROGRESS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pytest_configure(config):
    """The C++ op shim (nybble.kernels.cpu_shim, on by default) is built into a directory of this test run,
    unless NYBBLE_CPU_SHIM_DIR is set: every run starts from the state of a fresh install (CI and a developer's
    machine test the same path: built once, under its lock, at the first compile trace of a nybble CPU op or by
    tests/test_cpu_overhead_shim.py), and tests never write into the user's cache. pytest-xdist workers inherit
    the controller's directory (it is set before they start), so they share the one build."""
    if not os.environ.get("NYBBLE_CPU_SHIM_DIR"):
        d = tempfile.mkdtemp(prefix="nybble-test-cpu-shim-")
        os.environ["NYBBLE_CPU_SHIM_DIR"] = d
        config._nybble_cpu_shim_dir = d


def pytest_unconfigure(config):
    d = getattr(config, "_nybble_cpu_shim_dir", None)
    if d:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run on the lent GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
