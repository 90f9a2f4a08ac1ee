"""Per-call cost of the two torch.library registrations on nybble's A8W4 op (seventh session, item 2).

    python benchmarks/cpu/seventh-e2e/opcall.py [calls=20000] [rounds=10]

The same implementation (nybble.kernels.cpu_ops.a8w4_impl) registered twice in a scratch namespace:
`custom_op` (what the ops used before) and `Library` define + CPU impl + register_fake (cpu_oplib's way,
what they use now), plus the direct call of the implementation; on a tiny weight (N = 64, K = 256, 1 thread)
so that the kernel itself is ~1 us. Alternating rounds of `calls` calls each; median us per call. Run under
flock -x.
"""
import statistics
import sys
import time

import torch

import nybble
from nybble.kernels import cpu_ops
from nybble.kernels.cpu import selected_isa

torch.set_num_threads(1)
CALLS = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 10
co = torch.library.custom_op("nybble_bench::a8w4_co", mutates_args=())(cpu_ops.a8w4_impl)
co.register_fake(lambda x, qw, scale, zero_point, wcomp, n, group_size, asymmetric, bias, isa: x.new_empty(x.shape[0], n))
lib = torch.library.Library("nybble_bench", "FRAGMENT")
lib.define("a8w4_lib(Tensor x, Tensor qw, Tensor scale, Tensor? zero_point, Tensor? wcomp, SymInt n, SymInt group_size, "
           "bool asymmetric, Tensor? bias, str isa) -> Tensor")
lib.impl("a8w4_lib", cpu_ops.a8w4_impl, "CPU")
torch.library.register_fake("nybble_bench::a8w4_lib", lambda x, qw, scale, zero_point, wcomp, n, group_size, asymmetric,
                            bias, isa: x.new_empty(x.shape[0], n), lib=lib)
lin = torch.nn.Linear(256, 64, bias=False).to(torch.bfloat16)
m = torch.nn.Sequential(lin)
nybble.quantize(m, nybble.Int8DynamicActivationInt4WeightConfig(group_size=128, zero_point="int", act_mapping="symmetric"),
                force_kernel="nybble_cpu", show_progress=False)
p = m[0].packed()
isa = selected_isa()
x = torch.randn(1, 256, dtype=torch.bfloat16)
args = (x, p["qw"], p["scale"], p.get("zero_point"), p.get("wcomp"), 64, 128, False, None, isa)
fns = {"custom_op": torch.ops.nybble_bench.a8w4_co.default, "Library": torch.ops.nybble_bench.a8w4_lib.default,
       "torch.ops.nybble.cpu_a8w4 (now)": torch.ops.nybble.cpu_a8w4.default, "direct impl": cpu_ops.a8w4_impl}
ref = cpu_ops.a8w4_impl(*args)
for f in fns.values():
    assert torch.equal(f(*args), ref)
res = {k: [] for k in fns}
with torch.inference_mode():
    for r in range(ROUNDS):
        for k in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
            f = fns[k]
            t = time.perf_counter()
            for _ in range(CALLS):
                f(*args)
            res[k].append((time.perf_counter() - t) / CALLS * 1e6)
print(f"{time.strftime('%H:%M:%S', time.gmtime())} UTC, {CALLS} calls x {ROUNDS} rounds, N=64 K=256 A8W4, 1 thread")
for k, v in res.items():
    print(f"  {k:34s} median {statistics.median(v):6.2f} us/call  (min {min(v):.2f})")
