"""Decode tok/s of bf16, nybble A16W4, nybble A8W4 and torch int4 on the random ~1B Llama of
nybble.bench.e2e_cpu, all four models in ONE process and measured in alternation (round robin), so
that on a shared machine they see the same load.

    python benchmarks/cpu/e2e-openmp/decode_interleaved.py [rounds=4]

Each round: per variant, 3 warm-up steps after a 16-token prompt, then 32 timed decode steps
(tok/s = 32 / their total time). Prints every round and the per-variant median of the rounds.
"""
import os
import statistics
import sys
import time

import torch

os.environ.setdefault("NYBBLE_NO_PROGRESS", "1")
import nybble  # noqa: E402
from nybble.bench.e2e_cpu import build_model  # noqa: E402
from nybble.kernels import cpu  # noqa: E402

CONFIGS = {
    "bf16": (None, None),
    "nybble_a16w4": (lambda: nybble.Int4WeightOnlyConfig(group_size=128, zero_point="int"), "nybble_cpu"),
    "nybble_a8w4": (lambda: nybble.Int8DynamicActivationInt4WeightConfig(group_size=128, zero_point="int",
                                                                           act_mapping="symmetric"), "nybble_cpu"),
    "torch_int4": (lambda: nybble.Int4WeightOnlyConfig(group_size=128, zero_point="none"), "torch_int4_cpu"),
}


def decode(model, gen, steps=32):
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


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    models = {}
    for name, (cfg, kernel) in CONFIGS.items():
        m = build_model(16, 2048, 5632, 32, 8, 32000)
        if cfg is not None:
            nybble.quantize(m, cfg(), force_kernel=kernel, show_progress=False)
        models[name] = m
    print(f"threads {torch.get_num_threads()}, nybble_cpu threads on {cpu.threads_backend()}", flush=True)
    gen = torch.Generator().manual_seed(1)
    res = {n: [] for n in models}
    for r in range(rounds):
        line = []
        for name, m in models.items():
            res[name].append(decode(m, gen))
            line.append(f"{name} {res[name][-1]:6.2f}")
        print(f"round {r}: " + "  ".join(line) + " tok/s", flush=True)
    med = {n: statistics.median(v) for n, v in res.items()}
    print("median: " + "  ".join(f"{n} {v:.2f}" for n, v in med.items()) + " tok/s")
    for base in ("bf16", "torch_int4"):
        print(f"vs {base}: " + "  ".join(f"{n} {med[n] / med[base]:.2f}x" for n in med if n.startswith("nybble")))


if __name__ == "__main__":
    main()
