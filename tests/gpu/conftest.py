"""GPU tests: run on the lent GPU machine (``python -m pytest tests/gpu``); skipped without CUDA.

Autotuning is off here (``NYBBLE_TRITON_AUTOTUNE=0``: the shipped table or the heuristic config is
used) and the config cache goes to a temporary directory, so tests never write ``~/.cache``.
"""
import os
import tempfile

os.environ.setdefault("NYBBLE_TRITON_AUTOTUNE", "0")
os.environ.setdefault("NYBBLE_CACHE_DIR", tempfile.mkdtemp(prefix="nybble-gpu-tests-"))
