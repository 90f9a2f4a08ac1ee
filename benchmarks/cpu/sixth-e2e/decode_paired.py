"""Paired end-to-end decode, eager and torch.compile'd (sixth session; from e2e-paired/decode_paired.py).

bf16, nybble A16W4, nybble A8W4 and torch int4 on the random ~0.85B Llama of nybble.bench.e2e_cpu, all
models in ONE process, measured round robin, each round between two DRAM probes, so that every ratio
compares variants that ran seconds apart in the same DRAM regime.

    python benchmarks/cpu/sixth-e2e/decode_paired.py [rounds=12] [steps=12] [compile=0|1|both] [attention=sdpa|nybble|both] [layers=16]
    python benchmarks/cpu/sixth-e2e/decode_paired.py --summary LOG
    MODELS=torch_int4,nybble_a8w4 python ...   (only these models, built and compiled in this order)

compile: how EVERY model decodes (nybble.bench.e2e_cpu.Decoder): 0 = eager with transformers' dynamic
KV cache (as e2e-paired), 1 = torch.compile(model.forward, fullgraph=True, dynamic=False) with a
StaticCache (suffix `+c`), both = each model both ways. attention: the attention function of EVERY model:
transformers' sdpa, or nybble.kernels.cpu_attention's decode attention (suffix `+na`; under compile the
nybble::cpu_decode_attention op). Ratios compare variants with the same suffixes.

Locks: the setup (build, quantize, compile and its warm-up steps) holds /tmp/nybble_bench.lock SHARED,
the timed rounds hold it EXCLUSIVE (run this script without a flock wrapper).

Per round: a probe (torch.sum over 4 x 32 MiB fp32 buffers, 2 threads, median of 12 calls), then per
variant (order rotating by round) a 16-token prompt, 3 warm-up decode steps and `steps` timed steps
(tok/s = steps / their total time), then a second probe. A round is "fast" when both probes read > 55 GB/s,
"slow" when both read < 55 (else "mixed"). Prints every round, then per regime the medians of tok/s and of
the per-round ratios (vs bf16, vs torch int4). Compile time, dynamo's graph count per compiled model and
graphs compiled during the rounds (must be 0: no recompiles) are printed too.
"""
import fcntl
import os
import statistics
import sys
import time

import torch

os.environ.setdefault("NYBBLE_NO_PROGRESS", "1")
import nybble  # noqa: E402
from nybble.bench.e2e_cpu import Decoder, build_model  # noqa: E402

CONFIGS = {
    "bf16": (None, None),
    "nybble_a16w4": (lambda: nybble.Int4WeightOnlyConfig(group_size=128, zero_point="int"), "nybble_cpu"),
    "nybble_a8w4": (lambda: nybble.Int8DynamicActivationInt4WeightConfig(group_size=128, zero_point="int",
                                                                           act_mapping="symmetric"), "nybble_cpu"),
    "torch_int4": (lambda: nybble.Int4WeightOnlyConfig(group_size=128, zero_point="none"), "torch_int4_cpu"),
}
FAST = 55.0
LOCK = "/tmp/nybble_bench.lock"


def decode(dec, gen, steps):
    dec.model.set_attn_implementation(dec.attention)  # models are shared by their variants
    with torch.inference_mode():
        tok = dec.start(torch.randint(0, 32000, (1, 16), generator=gen))
        for _ in range(3):
            tok = dec.step(tok)
        ts = []
        for _ in range(steps):
            t = time.perf_counter()
            tok = dec.step(tok)
            ts.append(time.perf_counter() - t)
    return len(ts) / sum(ts)


def probe(bufs, calls=12):
    ts = []
    for i in range(calls + len(bufs)):
        t = time.perf_counter()
        bufs[i % len(bufs)].sum()
        if i >= len(bufs):
            ts.append(time.perf_counter() - t)
    return bufs[0].numel() * 4 / statistics.median(ts) / 1e9


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 12
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 12
    comp = {"0": [False], "1": [True], "both": [False, True]}[sys.argv[3] if len(sys.argv) > 3 else "both"]
    attn = {"sdpa": [False], "nybble": [True], "both": [False, True]}[sys.argv[4] if len(sys.argv) > 4 else "sdpa"]
    layers = int(sys.argv[5]) if len(sys.argv) > 5 else 16
    lock = open(LOCK, "a+")
    fcntl.flock(lock, fcntl.LOCK_SH)
    print(f"setup start {time.strftime('%H:%M:%S', time.gmtime())} UTC (shared lock)", flush=True)
    variants = {}
    gen = torch.Generator().manual_seed(1)
    only = os.environ.get("MODELS")  # e.g. MODELS=torch_int4,nybble_a8w4: these, built in this order
    for name in only.split(",") if only else CONFIGS:
        cfg, kernel = CONFIGS[name]
        m = build_model(layers, 2048, 5632, 32, 8, 32000)
        if cfg is not None:
            nybble.quantize(m, cfg(), force_kernel=kernel, show_progress=False)
        for c, na in [(c, na) for c in comp for na in attn]:
            if na:
                from nybble.kernels.cpu_attention import use_decode_attention
                use_decode_attention(m)
            else:
                m.set_attn_implementation("sdpa")
            dec = Decoder(m, compile=c, max_len=16 + 3 + steps + 8)
            dec.attention = "nybble_cpu_decode" if na else "sdpa"
            sfx = ("+c" if c else "") + ("+na" if na else "")
            if c:
                g0 = Decoder.graphs()
                t = time.perf_counter()
                with torch.inference_mode():
                    tok = dec.start(torch.randint(0, 32000, (1, 16), generator=gen))
                    t1 = time.perf_counter()
                    tok = dec.step(tok)
                    t2 = time.perf_counter()
                    for _ in range(2):
                        tok = dec.step(tok)
                print(f"  {name}{sfx}: first compiled step {t2 - t1:.1f} s, {Decoder.graphs() - g0} graph(s)",
                      flush=True)
            variants[name + sfx] = dec
    bufs = [torch.ones(32 * 2**18) for _ in range(4)]
    names = list(variants)
    for n in names:  # one untimed pass of every variant
        decode(variants[n], gen, 2)
    fcntl.flock(lock, fcntl.LOCK_UN)
    fcntl.flock(lock, fcntl.LOCK_EX)
    g_start = Decoder.graphs()
    print(f"threads {torch.get_num_threads()}, {rounds} rounds x {steps} decode steps, {layers} layers, "
          f"start {time.strftime('%H:%M:%S', time.gmtime())} UTC (exclusive lock), load {os.getloadavg()[0]:.2f}",
          flush=True)
    rows = []
    for r in range(rounds):
        p0 = probe(bufs)
        order = names[r % len(names):] + names[:r % len(names)]
        tok = {n: decode(variants[n], gen, steps) for n in order}
        p1 = probe(bufs)
        regime = "fast" if min(p0, p1) > FAST else "slow" if max(p0, p1) < FAST else "mixed"
        rows.append((regime, tok))
        print(f"round {r:2d} probe {p0:5.1f}/{p1:5.1f} GB/s {regime:5s} | "
              + "  ".join(f"{n} {tok[n]:6.2f}" for n in names), flush=True)
    print(f"end {time.strftime('%H:%M:%S', time.gmtime())} UTC, load {os.getloadavg()[0]:.2f}, "
          f"graphs compiled during the rounds: {Decoder.graphs() - g_start}")
    fcntl.flock(lock, fcntl.LOCK_UN)
    summarize(rows, names)


def summarize(rows, names):
    """Per regime: medians of tok/s and of the per-round ratios against bf16 and torch int4 with the same
    suffix, against the fastest torch int4 variant of each round (`best torch int4`, when several ran), and
    compiled vs eager of the same model."""
    for regime in ("fast", "slow", "mixed", "all"):
        sel = [t for g, t in rows if g == regime or regime == "all"]
        if not sel:
            continue
        print(f"\n{regime} rounds: {len(sel)}")
        for n in names:
            sfx = n[len(n.split("+")[0]):]
            tk = statistics.median(t[n] for t in sel)
            line = f"  {n:20s} {tk:7.2f} tok/s"
            for base in ("bf16", "torch_int4"):
                if base + sfx in sel[0]:
                    line += f"   {statistics.median(t[n] / t[base + sfx] for t in sel):5.2f}x {base.replace('_', ' ')}"
            ti4 = [v for v in sel[0] if v.split("+")[0] == "torch_int4"]
            if len(ti4) > 1 and not n.startswith("torch_int4"):
                line += (f"   {statistics.median(t[n] / max(t[v] for v in ti4) for t in sel):5.2f}x best torch int4")
            eager = n.replace("+c", "")
            if "+c" in n and eager in sel[0]:
                line += f"   {statistics.median(t[n] / t[eager] for t in sel):5.2f}x eager"
            print(line + "  (medians of per-round ratios)")


def summarize_log(path):
    """``--summary LOG``: the summary again from the round lines of a log."""
    import re
    rows = []
    for line in open(path):
        m = re.match(r"round\s+\d+ probe\s+[\d.]+/\s*[\d.]+ GB/s (\w+)\s+\| (.*)", line)
        if m:
            toks = m.group(2).split()
            rows.append((m.group(1), {toks[i]: float(toks[i + 1]) for i in range(0, len(toks), 2)}))
    if rows:
        summarize(rows, list(rows[0][1]))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--summary"]:
        summarize_log(sys.argv[2])
    else:
        main()
