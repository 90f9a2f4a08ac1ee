"""Paired end-to-end decode: bf16, nybble A16W4, nybble A8W4 and torch int4 on the random ~0.85B Llama
of nybble.bench.e2e_cpu, all four models in ONE process, measured round robin, each round with a
DRAM probe, so that every ratio compares variants that ran seconds apart in the same DRAM regime.

    python benchmarks/cpu/e2e-paired/decode_paired.py [rounds=12] [steps=32] [attention=sdpa|nybble|both] [fuse=0|1|both]
    python benchmarks/cpu/e2e-paired/decode_paired.py --summary LOG   (the summary again from a log)

attention: the attention function of EVERY model (transformers' sdpa, or nybble.kernels.cpu_attention's
decode attention; suffix `+na`); `both` times each model with each.
fuse: nybble.kernels.cpu_fuse.fuse_siblings on EVERY int4 model (nybble and torch int4 alike; suffix
`+f`); `both` builds each int4 model twice (unfused and fused). Ratios compare variants with the same
suffixes (e.g. nybble_a8w4+f+na against bf16+na and torch_int4+f+na).

Per round: a DRAM probe (torch.sum over 4 x 32 MiB fp32 buffers, 2 threads, median of 12 calls),
then per variant (order rotating by round) 3 warm-up decode steps after a 16-token prompt and
`steps` timed steps (tok/s = steps / their total time), then a second probe. A round is "fast"
when both probes read > 55 GB/s, "slow" when both read < 55 (else "mixed"). Prints every round,
then per regime the medians of tok/s and of the per-round ratios (vs bf16, vs torch int4).
Same model, same quantized layers (every nn.Linear incl. lm_head), same threads for all variants.
"""
import os
import statistics
import sys
import time

import torch

os.environ.setdefault("NYBBLE_NO_PROGRESS", "1")
import nybble  # noqa: E402
from nybble.bench.e2e_cpu import build_model  # noqa: E402

CONFIGS = {
    "bf16": (None, None),
    "nybble_a16w4": (lambda: nybble.Int4WeightOnlyConfig(group_size=128, zero_point="int"), "nybble_cpu"),
    "nybble_a8w4": (lambda: nybble.Int8DynamicActivationInt4WeightConfig(group_size=128, zero_point="int",
                                                                           act_mapping="symmetric"), "nybble_cpu"),
    "torch_int4": (lambda: nybble.Int4WeightOnlyConfig(group_size=128, zero_point="none"), "torch_int4_cpu"),
}
FAST = 55.0


def decode(model, gen, steps):
    with torch.inference_mode():
        out = model(input_ids=torch.randint(0, 32000, (1, 16), generator=gen), use_cache=True, logits_to_keep=1)
        for _ in range(3):
            out = model(input_ids=out.logits[:, -1:].argmax(-1), past_key_values=out.past_key_values, use_cache=True)
        ts = []
        for _ in range(steps):
            tok = out.logits[:, -1:].argmax(-1)
            t = time.perf_counter()
            out = model(input_ids=tok, past_key_values=out.past_key_values, use_cache=True)
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
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 32
    attention = sys.argv[3] if len(sys.argv) > 3 else "sdpa"
    impls = {"sdpa": ["sdpa"], "nybble": ["nybble"], "both": ["sdpa", "nybble"]}[attention]
    fuse = sys.argv[4] if len(sys.argv) > 4 else "0"
    fusings = {"0": [False], "1": [True], "both": [False, True]}[fuse]
    models = {}
    for name, (cfg, kernel) in CONFIGS.items():
        for fused in fusings if cfg is not None else [False]:
            m = build_model(16, 2048, 5632, 32, 8, 32000)
            if cfg is not None:
                nybble.quantize(m, cfg(), force_kernel=kernel, show_progress=False)
            if fused:
                from nybble.kernels.cpu_fuse import fuse_siblings
                fuse_siblings(m)
            models[name + ("+f" if fused else "")] = m
    if "nybble" in impls:
        from nybble.kernels.cpu_attention import register
        nybble_attn = register()
    variants = {}
    for impl in impls:  # (model, attention implementation); `+na` = nybble attention
        for name, m in models.items():
            variants[name if impl == "sdpa" else name + "+na"] = (m, "sdpa" if impl == "sdpa" else nybble_attn)
    bufs = [torch.ones(32 * 2**18) for _ in range(4)]
    print(f"threads {torch.get_num_threads()}, {rounds} rounds x {steps} decode steps, "
          f"start {time.strftime('%H:%M:%S', time.gmtime())} UTC", flush=True)
    gen = torch.Generator().manual_seed(1)
    names = list(variants)
    rows = []

    def run(n):
        m, impl = variants[n]
        m.set_attn_implementation(impl)
        return decode(m, gen, steps)
    for r in range(rounds):
        p0 = probe(bufs)
        order = names[r % len(names):] + names[:r % len(names)]
        tok = {n: run(n) for n in order}
        p1 = probe(bufs)
        regime = "fast" if min(p0, p1) > FAST else "slow" if max(p0, p1) < FAST else "mixed"
        rows.append((regime, tok))
        print(f"round {r:2d} probe {p0:5.1f}/{p1:5.1f} GB/s {regime:5s} | "
              + "  ".join(f"{n} {tok[n]:6.2f}" for n in names), flush=True)
    print(f"end {time.strftime('%H:%M:%S', time.gmtime())} UTC")
    summarize(rows, names)


def summarize(rows, names):
    """Per regime: medians of tok/s and of the per-round ratios against bf16 and torch int4 with
    the same suffixes (the fused torch int4 if only that one ran)."""
    for regime in ("fast", "slow", "mixed"):
        sel = [t for g, t in rows if g == regime]
        if not sel:
            continue
        print(f"\n{regime} rounds: {len(sel)}")
        for n in names:
            tk = statistics.median(t[n] for t in sel)
            na = "+na" if n.endswith("+na") else ""  # ratios against the baselines with the same suffixes
            f = "+f" if "+f" in n else ""
            xb = statistics.median(t[n] / t["bf16" + na] for t in sel)
            ti = next(c for c in ("torch_int4" + f + na, "torch_int4+f" + na, "torch_int4" + na) if c in sel[0])
            xi = statistics.median(t[n] / t[ti] for t in sel)
            print(f"  {n:16s} {tk:7.2f} tok/s   {xb:5.2f}x bf16   {xi:5.2f}x torch int4  (medians of per-round ratios)")


def summarize_log(path):
    """``--summary LOG``: the summary again from the round lines of a log (each run in it separately)."""
    import re
    runs, rows = [], None
    for line in open(path):
        if line.startswith("threads "):
            rows = []
            runs.append(rows)
        m = re.match(r"round\s+\d+ probe\s+[\d.]+/\s*[\d.]+ GB/s (\w+)\s+\| (.*)", line)
        if m and rows is not None:
            toks = m.group(2).split()
            rows.append((m.group(1), {toks[i]: float(toks[i + 1]) for i in range(0, len(toks), 2)}))
    for rows in runs:
        if rows:
            print(f"== {len(rows)} rounds")
            summarize(rows, list(rows[0][1]))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--summary"]:
        summarize_log(sys.argv[2])
    else:
        main()
