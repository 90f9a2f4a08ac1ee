"""cnaf7_paired.py (seventh session) with the C++ op shim and a frameless torch int4 candidate (eighth session, "overhead").

    python benchmarks/cpu/eighth-e2e/overhead_cnaf8_paired.py [fast_rounds=20] [steps=12] [fused_first=0] [max_seconds=240] [cpp_wrapper=1] [shim=1] [aten=1] [symw=0]

Changes against seventh-e2e/cnaf7_paired.py (everything else identical):
* shim=1 (6th argument): nybble.kernels.cpu_shim.enable() before any model is built: the decode ops of EVERY
  variant (nybble::cpu_a16w4 / cpu_a8w4, the shared nybble::cpu_decode_attention, and the baseline's
  nybble::torch_int4_cpu_a16w4) run as C++ kernels of torch's dispatcher, without a Python frame. shim=0 is
  cnaf7_paired.py (it calls cpu_shim.disable(): since the ninth session the shim is on by default).
  shim=default (ninth session, ninth-e2e/default_cnaf9_paired.py): nothing is called, the shim is whatever the
  library does by default. The shim's status is printed before the models, after the setup and at the end.
* aten=1 (7th argument): one more torch int4 candidate, `torch_int4+c+na+f+aten`: the fused torch int4 model
  compiled with aten._weight_int4pack_mm_for_cpu itself in the graph instead of the wrapper op (with
  cpp_wrapper, inductor calls it through its C shim: PyTorch's own int4 path with no Python and no nybble op
  in between, seventh-e2e/ti4_direct.py's variant). It counts among the "best torch int4" candidates.

* symw=1 (8th argument, tenth session): two more fused nybble models on the torch int4 models' own recipe
  (zero_point="none": the same int4 codes and scales as the torch int4 models, no zero points),
  `nybble_a16w4_zpnone+c+na+f` and `nybble_a8w4_zpnone+c+na+f`.

cnaf7_paired.py's docstring follows.

cnaf_paired.py (sixth session) with a round budget that waits for fast-DRAM rounds (seventh session).

    python benchmarks/cpu/seventh-e2e/cnaf7_paired.py [fast_rounds=20] [steps=12] [fused_first=0] [max_seconds=240] [cpp_wrapper=1]

Since 18:21 (seventh session, part 5): every compiled variant runs with e2e_cpu.Decoder's defaults
(skip_guard_eval=True: the guard-skipping stance after the first step) and cpp_wrapper=True (inductor's
C++ wrapper; the 5th argument 0 turns it off for every variant). The runs before that (logs up to
cnaf7-1754.log) had neither.

Rounds go on until `fast_rounds` rounds were fast (both probes > 55 GB/s) or `max_seconds` of rounds
have passed (at least 10 rounds), so that a slow DRAM phase at the start does not leave the run without
fast rounds; every round is printed and counted in its regime, none is dropped. Everything else as in
cnaf_paired.py (same variants, rounds, probes, ratios), described below.


fused_first=1 builds each kind's fused model before its unfused one (the build order matters: in
cnaf_profile.py runs the model built second in a process was the slower one, whichever it was).

cna_paired.py's harness with nybble.kernels.cpu_fuse.fuse_siblings (q/k/v and gate/up as one Int4Linear
each; since 44af012 ONE fused op per group in the compiled graph) applied alike to every int4 model, next
to the same models unfused. Models: nybble A16W4, nybble A8W4, torch int4, each built twice (unfused /
fused `+f`). Variants: every model compiled (e2e_cpu.Decoder: inductor, fullgraph, static cache) with
nybble's decode attention (`+c+na`), plus torch int4 eager with the attention op (`+na`, unfused and fused).
All in one process; per round (order rotating): a DRAM probe (torch.sum over 4 x 32 MiB, median of 12),
every variant once (16-token prompt, 3 warm-up steps, `steps` timed as one block), a second probe;
fast = both probes > 55 GB/s, slow = both < 55. Setup under the shared lock, rounds under the exclusive
one. Prints medians of tok/s and of per-round ratios against the fastest torch int4 variant of the round
(fused and unfused, compiled and eager all candidates), against torch int4 compiled + fused (`same code`),
and fused / unfused of the same model.
"""
import fcntl
import statistics
import sys
import time

import torch

import nybble
from nybble.bench.e2e_cpu import Decoder, build_model, variant_config
from nybble.kernels.cpu_attention import use_decode_attention
from nybble.kernels import torch_int4_cpu as T
from nybble.kernels.cpu_fuse import fuse_siblings
from nybble.kernels.torch_int4_common import torch_group_size
import os

torch.set_num_threads(2)
FAST_ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 20
STEPS = int(sys.argv[2]) if len(sys.argv) > 2 else 12
FUSED_FIRST = bool(int(sys.argv[3])) if len(sys.argv) > 3 else False
MAX_SECONDS = float(sys.argv[4]) if len(sys.argv) > 4 else 240.0
CPP_WRAPPER = bool(int(sys.argv[5])) if len(sys.argv) > 5 else True
SHIM = sys.argv[6] if len(sys.argv) > 6 else "1"
assert SHIM in ("default", "0", "1"), SHIM
ATEN = bool(int(sys.argv[7])) if len(sys.argv) > 7 else True
SYMW = bool(int(sys.argv[8])) if len(sys.argv) > 8 else False


def anon_huge_mib():
    """AnonHugePages of this process (MiB)."""
    for line in open("/proc/self/smaps_rollup"):
        if line.startswith("AnonHugePages:"):
            return int(line.split()[1]) / 1024
    return float("nan")
# name -> (config, kernel): e2e_cpu.variant_config's recipes (nybble with int zero points, torch int4 without)
CFG = {name: variant_config(name, "int", "nybble_cpu") for name in ("nybble_a16w4", "nybble_a8w4", "torch_int4")}
if SYMW:  # tenth session: nybble on the torch int4 model's own recipe (no zero point), fused only
    for name in ("nybble_a16w4", "nybble_a8w4"):
        CFG[name + "_zpnone"] = variant_config(name, "none", "nybble_cpu")
lock = open("/tmp/nybble_bench.lock", "a+")
fcntl.flock(lock, fcntl.LOCK_SH)
print(f"setup {time.strftime('%H:%M:%S', time.gmtime())} UTC, fused_first={int(FUSED_FIRST)}, "
      f"cpp_wrapper={int(CPP_WRAPPER)}, shim={SHIM}, aten={int(ATEN)}, uptime: {os.popen('uptime').read().strip()}",
      flush=True)
from nybble.kernels import cpu_shim
print(f"  shim before the models (NYBBLE_CPU_SHIM={os.environ.get('NYBBLE_CPU_SHIM')!r}): {cpu_shim.status()}",
      flush=True)
if SHIM == "1":
    assert cpu_shim.enable(), cpu_shim.status()
elif SHIM == "0":
    cpu_shim.disable()
gen = torch.Generator().manual_seed(1)
ds = {}
for name, (cfg, kernel) in CFG.items():
    for fused in ((True,) if name.endswith("_zpnone") else (True, False) if FUSED_FIRST else (False, True)):
        m = build_model(16, 2048, 5632, 32, 8, 32000)
        nybble.quantize(m, cfg, force_kernel=kernel, show_progress=False)
        f = ""
        if fused:
            assert fuse_siblings(m) == 32
            f = "+f"
        use_decode_attention(m)
        kinds = [("+c+na", True)] + ([("+na", False)] if name == "torch_int4" else [])
        for sfx, comp in kinds:
            g0 = Decoder.graphs()
            t0 = time.perf_counter()
            d = Decoder(m, compile=comp, max_len=16 + 3 + STEPS + 8, cpp_wrapper=CPP_WRAPPER)
            d.attention = m.config._attn_implementation
            with torch.inference_mode():
                tok = d.start(torch.randint(0, 32000, (1, 16), generator=gen))
                for _ in range(3):
                    tok = d.step(tok)
            ds[name + sfx + f] = d
            print(f"  {name + sfx + f}: ready in {time.perf_counter() - t0:.1f} s, graphs {Decoder.graphs() - g0}, "
                  f"process AnonHugePages {anon_huge_mib():.0f} MiB", flush=True)
        if ATEN and name == "torch_int4" and fused:  # PyTorch's int4 op itself in the graph (no wrapper op)
            orig_apply = T.TorchInt4CpuKernel.apply

            def direct_apply(self, x, packed, bias):
                if not torch.compiler.is_compiling():
                    return orig_apply(self, x, packed, bias)
                s = self.spec
                y = torch.ops.aten._weight_int4pack_mm_for_cpu(x.reshape(-1, s.k).contiguous(), packed["weight_int4pack"],
                                                               torch_group_size(s.group_size, s.k), packed["scale_and_zeros"])
                if bias is not None:
                    y = y + bias.to(y.dtype)
                return y.reshape(*x.shape[:-1], s.n)

            T.TorchInt4CpuKernel.apply = direct_apply
            try:
                t0 = time.perf_counter()
                d = Decoder(m, compile=True, max_len=16 + 3 + STEPS + 8, cpp_wrapper=CPP_WRAPPER)
                d.attention = m.config._attn_implementation
                with torch.inference_mode():
                    tok = d.start(torch.randint(0, 32000, (1, 16), generator=gen))
                    for _ in range(3):
                        tok = d.step(tok)
            finally:
                T.TorchInt4CpuKernel.apply = orig_apply
            ds[name + "+c+na+f+aten"] = d
            print(f"  {name}+c+na+f+aten: ready in {time.perf_counter() - t0:.1f} s", flush=True)
bufs = [torch.ones(32 * 2**18) for _ in range(4)]


def probe():
    ts = []
    for i in range(16):
        t = time.perf_counter()
        bufs[i % 4].sum()
        if i >= 4:
            ts.append(time.perf_counter() - t)
    return 32 * 2**20 / statistics.median(ts) / 1e9


print(f"  shim after the setup: {cpu_shim.status()}", flush=True)
fcntl.flock(lock, fcntl.LOCK_UN)
fcntl.flock(lock, fcntl.LOCK_EX)
names = sorted(ds, key=lambda n: (n.split("+")[0], "+f" in n, n))  # same order whatever the build order
g0 = Decoder.graphs()
print(f"uptime: {os.popen('uptime').read().strip()}", flush=True)
print(f"rounds {time.strftime('%H:%M:%S', time.gmtime())} UTC, until {FAST_ROUNDS} fast rounds or {MAX_SECONDS:.0f} s "
      f"(at least 10 rounds), {STEPS} steps, variants {names}", flush=True)
rows = []
t_rounds = time.perf_counter()
r = -1
while True:
    r += 1
    nfast = sum(g == "fast" for g, _ in rows)
    if nfast >= FAST_ROUNDS or (r >= 10 and time.perf_counter() - t_rounds > MAX_SECONDS):
        break
    p0 = probe()
    tok_s = {}
    for n in names[r % len(names):] + names[:r % len(names)]:
        d = ds[n]
        d.model.set_attn_implementation(d.attention)
        with torch.inference_mode():
            tok = d.start(torch.randint(0, 32000, (1, 16), generator=gen))
            for _ in range(3):
                tok = d.step(tok)
            t = time.perf_counter()
            for _ in range(STEPS):
                tok = d.step(tok)
            tok_s[n] = STEPS / (time.perf_counter() - t)
    p1 = probe()
    regime = "fast" if min(p0, p1) > 55 else "slow" if max(p0, p1) < 55 else "mixed"
    rows.append((regime, tok_s))
    print(f"round {r:2d} probe {p0:5.1f}/{p1:5.1f} {regime:5s} | " + "  ".join(f"{n} {tok_s[n]:6.2f}" for n in names), flush=True)
print(f"end {time.strftime('%H:%M:%S', time.gmtime())} UTC, graphs compiled during the rounds: {Decoder.graphs() - g0}, "
      f"uptime: {os.popen('uptime').read().strip()}")
fcntl.flock(lock, fcntl.LOCK_UN)
print(f"shim at the end: {cpu_shim.status()}")
ti4 = [n for n in names if n.startswith("torch_int4")]
for regime in ("fast", "slow", "mixed", "all"):
    sel = [t for g, t in rows if g == regime or regime == "all"]
    if not sel:
        continue
    print(f"\n{regime} rounds: {len(sel)}")
    for n in names:
        med = statistics.median(t[n] for t in sel)
        best = statistics.median(t[n] / max(t[v] for v in ti4) for t in sel)
        same = statistics.median(t[n] / t["torch_int4+c+na+f"] for t in sel)
        line = f"  {n:22s} {med:7.2f} tok/s   {best:5.2f}x best torch int4   {same:5.2f}x torch_int4+c+na+f"
        if n.endswith("+f") and n[:-2] in ds:
            line += f"   {statistics.median(t[n] / t[n[:-2]] for t in sel):5.3f}x unfused"
        print(line)
    wins = {v: sum(max(ti4, key=lambda u: t[u]) == v for t in sel) for v in ti4}
    print(f"  fastest torch int4 variant per round: {wins}")
