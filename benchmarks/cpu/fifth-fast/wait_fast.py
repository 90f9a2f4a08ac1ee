"""Wait (holding the exclusive lock, at most WAIT seconds) for a fast DRAM phase, then run the M = 1
kernel table at once (fifth session: the fast phases lasted seconds to a minute).

    flock -x /tmp/nybble_bench.lock python benchmarks/cpu/fifth-fast/wait_fast.py [WAIT=150] [THRESHOLD=62]

Probe: torch.sum over 4 persistent 32 MiB fp32 buffers, median of 8 calls, 2 threads, once a
second (the probe of decode_paired.py; fresh buffers as in try_fast.py read lower). When it reads
>= THRESHOLD GB/s: ``python -m nybble.bench.cpu --shapes 4096x14336,14336x4096 --m 1 --rounds 9
--out <here>/HHMM-kernels-waited``, then a probe. The attempt is a row of attempts.csv.
"""
import statistics
import subprocess
import sys
import time

import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from try_fast import HERE, PY, ROOT, log  # noqa: E402


def probe(bufs, calls=8):
    ts = []
    for i in range(calls + len(bufs)):
        t = time.perf_counter()
        bufs[i % len(bufs)].sum()
        if i >= len(bufs):
            ts.append(time.perf_counter() - t)
    return bufs[0].numel() * 4 / statistics.median(ts) / 1e9


def main() -> int:
    wait = float(sys.argv[1]) if len(sys.argv) > 1 else 150.0
    threshold = float(sys.argv[2]) if len(sys.argv) > 2 else 62.0
    torch.set_num_threads(2)
    bufs = [torch.ones(32 * 2**18) for _ in range(4)]
    t0 = time.time()
    seen = []
    while time.time() - t0 < wait:
        p = probe(bufs)
        seen.append(p)
        if p >= threshold:
            break
        time.sleep(1.0)
    row = {"utc": time.strftime("%H:%M:%S", time.gmtime()), "probe_gbps": f"{seen[-1]:.1f}"}
    if seen[-1] < threshold:
        row["action"] = f"wait_fast: no phase >= {threshold:g} in {wait:g} s (max {max(seen):.1f})"
        log(row)
        print(row)
        return 0
    out = HERE / (time.strftime("%H%M", time.gmtime()) + "-kernels-waited")
    del bufs
    subprocess.run([PY, "-m", "nybble.bench.cpu", "--shapes", "4096x14336,14336x4096", "--m", "1", "--rounds", "9",
                    "--out", str(out)], cwd=ROOT, check=False)
    for f in out.glob("*"):
        if f.suffix not in (".csv", ".md"):
            f.unlink()
    bufs = [torch.ones(32 * 2**18) for _ in range(4)]
    row.update(action=f"wait_fast: ran after {time.time() - t0:.0f} s", probe_after_kernels=f"{probe(bufs):.1f}",
               output=out.name + "/")
    log(row)
    print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
