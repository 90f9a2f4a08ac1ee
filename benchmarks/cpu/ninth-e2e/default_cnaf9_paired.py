"""eighth-e2e/overhead_cnaf8_paired.py with the library's default for the C++ op shim (ninth session).

    python benchmarks/cpu/ninth-e2e/default_cnaf9_paired.py [fast_rounds=20] [steps=12] [fused_first=0] [max_seconds=240] [cpp_wrapper=1] [shim=default] [aten=1]

The one difference: the 6th argument `shim` is `default` unless given: nothing is called, the shim is whatever
nybble does by default (since the ninth session: on; the cached library is loaded when nybble's CPU ops are
imported, or built at the first torch.compile trace of one of them); `1` calls cpu_shim.enable() before any model
is built (the eighth session's shim=1), `0` calls cpu_shim.disable() (the Python op kernels: a control). The
harness prints the shim's status before the models, after the setup and at the end, so the log shows whether it
was on (and how it got there) for every variant (one process: the shim is process-wide).

This file runs that harness (it was a copy of it with only that default changed until the end of the ninth
session; the runs in ninth-e2e/logs/ were made with the copy, which behaved the same).
"""
import runpy
import sys
from pathlib import Path

HARNESS = Path(__file__).resolve().parents[1] / "eighth-e2e" / "overhead_cnaf8_paired.py"
DEFAULTS = ["20", "12", "0", "240", "1"]  # the harness's own defaults of the first five arguments

args = sys.argv[1:]
if len(args) < 6:
    args = args + DEFAULTS[len(args):] + ["default"]
sys.argv = [str(HARNESS)] + args
runpy.run_path(str(HARNESS), run_name="__main__")
