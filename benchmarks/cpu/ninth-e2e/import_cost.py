"""Wall time of `import nybble.kernels.cpu_ops, cpu_attention, torch_int4_cpu` (torch already imported) with the
shim's cached library loaded at import (default) vs NYBBLE_CPU_SHIM=0; each in a fresh process, alternating.

    python benchmarks/cpu/ninth-e2e/import_cost.py [reps=6]
"""
import os
import statistics
import subprocess
import sys

CHILD = ("import time, torch; t = time.perf_counter(); "
         "from nybble.kernels import cpu_ops, cpu_attention, torch_int4_cpu, cpu_shim; "
         "dt = time.perf_counter() - t; print(dt, len(cpu_shim.status()['installed']))")
reps = int(sys.argv[1]) if len(sys.argv) > 1 else 6
res = {"default": [], "off": []}
for _ in range(reps):
    for mode in res:
        env = dict(os.environ)
        env.pop("NYBBLE_CPU_SHIM", None)
        if mode == "off":
            env["NYBBLE_CPU_SHIM"] = "0"
        out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True).stdout
        dt, n = out.split()
        res[mode].append((float(dt), int(n)))
for mode, v in res.items():
    print(f"{mode:8s} median {statistics.median(d for d, _ in v) * 1e3:6.1f} ms  (min {min(d for d, _ in v) * 1e3:.1f}), "
          f"ops installed {sorted({n for _, n in v})}")
