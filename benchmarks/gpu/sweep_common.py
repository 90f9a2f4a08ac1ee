"""What the GPU sweep scripts of this folder share: compiling every candidate config in parallel
worker processes before the timing starts, and writing the measured rows as CSV."""
from __future__ import annotations

import csv
import multiprocessing as mp
import time


def precompile(compile_one, jobs: list, n_procs: int, what: str = "configs", show: int = 10) -> list[str]:
    """Run ``compile_one(job)`` (a module-level function returning None, or an error message) for
    every job in ``n_procs`` spawned processes, so that Triton's on-disk cache holds every kernel
    before anything is timed; prints a summary and the first ``show`` errors, returns the errors."""
    t0 = time.time()
    with mp.get_context("spawn").Pool(n_procs) as pool:
        errs = [e for e in pool.map(compile_one, jobs, chunksize=1) if e]
    print(f"precompiled {len(jobs)} {what} in {time.time() - t0:.0f} s, {len(errs)} failed", flush=True)
    for e in errs[:show]:
        print("  ", e)
    return errs


def write_rows(path, rows: list[dict]) -> None:
    """``rows`` (dicts with the same keys, in column order) as a CSV file at ``path``."""
    with open(path, "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=list(rows[0]))
        wr.writeheader()
        wr.writerows(rows)


def rotated_copies(packed: dict, copies: int) -> list[dict]:
    """``packed`` (a layer's packed tensors by name) and ``copies - 1`` clones of it, for timing over
    rotated weight copies (so that the weights come from HBM, not L2)."""
    return [packed] + [{name: t.clone() for name, t in packed.items()} for _ in range(copies - 1)]
