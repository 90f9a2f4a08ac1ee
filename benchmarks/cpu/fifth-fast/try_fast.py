"""Opportunistic fast-DRAM-regime measurement (fifth session).

Run under the exclusive lock, e.g. every few minutes:

    flock -x -n /tmp/nybble_bench.lock /work/venv/bin/python benchmarks/cpu/fifth-fast/try_fast.py [--force]

Probes the DRAM (``nybble.bench.e2e_cpu.dram_probe_gbps``: torch.sum over 4 x 32 MiB fp32 buffers,
2 threads, median of 24 calls). Only when it reads >= 65 GB/s (or with --force) it runs, in this
same lock hold:
  1. the kernel table of the issue's M = 1 cells
     (``python -m nybble.bench.cpu --shapes 4096x14336,14336x4096 --m 1 --rounds 9 --out
     <dir>/HHMM-kernels``; 9 interleaved rounds instead of 3, so the probe and the kernels alternate
     more often), then ``m1_paired.py 150`` (the same cells paired per round),
  2. the paired end-to-end decode (``benchmarks/cpu/e2e-paired/decode_paired.py 12 12 sdpa 0``, then
     ``... 12 12 nybble 1``: nybble's decode attention and fused q/k/v, gate/up for every model),
each followed by another probe. Every attempt (UTC time, probes, what ran, where its output is) is
appended to ``attempts.csv`` next to this file; outputs keep their CSV / MD / log files only.
"""
import csv
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
PY = sys.executable
THRESHOLD = 65.0


def probe() -> float:
    import torch
    torch.set_num_threads(2)
    from nybble.bench.e2e_cpu import dram_probe_gbps
    return dram_probe_gbps()


def log(row: dict) -> None:
    path = HERE / "attempts.csv"
    new = not path.exists()
    keys = ["utc", "probe_gbps", "action", "probe_after_kernels", "probe_after_e2e", "output"]
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, keys)
        if new:
            w.writeheader()
        w.writerow({k: row.get(k, "") for k in keys})


def main() -> int:
    force = "--force" in sys.argv
    stamp = time.strftime("%H%M", time.gmtime())
    row = {"utc": time.strftime("%H:%M:%S", time.gmtime())}
    p = probe()
    row["probe_gbps"] = f"{p:.1f}"
    print(f"{row['utc']} probe {p:.1f} GB/s", flush=True)
    if p < THRESHOLD and not force:
        row["action"] = "skipped (slow regime)"
        log(row)
        return 0
    row["action"] = "ran" + (" (forced)" if force and p < THRESHOLD else "")
    kdir = HERE / f"{stamp}-kernels"
    env = dict(os.environ, NYBBLE_NO_PROGRESS="1")
    subprocess.run([PY, "-m", "nybble.bench.cpu", "--shapes", "4096x14336,14336x4096", "--m", "1",
                    "--rounds", "9", "--out", str(kdir)], cwd=ROOT, env=env, check=False)
    for f in kdir.glob("*"):
        if f.suffix not in (".csv", ".md"):
            f.unlink()
    row["probe_after_kernels"] = f"{probe():.1f}"
    plog = HERE / f"{stamp}-m1-paired.log"
    with open(plog, "w") as f:  # the same cells paired per round (short rounds: catches brief fast phases)
        subprocess.run([PY, str(HERE / "m1_paired.py"), "150"], cwd=ROOT, env=env, stdout=f,
                       stderr=subprocess.STDOUT, check=False)
    elog = HERE / f"{stamp}-e2e-paired.log"
    with open(elog, "w") as f:
        for extra in (["sdpa", "0"], ["nybble", "1"]):  # short rounds (4 models x 12 steps): few mixed rounds
            f.write(f"== decode_paired.py 12 12 {' '.join(extra)}\n")
            f.flush()
            subprocess.run([PY, str(ROOT / "benchmarks/cpu/e2e-paired/decode_paired.py"), "12", "12", *extra],
                           cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, check=False)
    row["probe_after_e2e"] = f"{probe():.1f}"
    row["output"] = f"{kdir.name}/, {plog.name}, {elog.name}"
    log(row)
    print(row, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
