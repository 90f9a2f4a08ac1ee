"""Issue-4 target: GPTQ on a randomly initialised ~1B-parameter Llama-style model in bounded memory,
with every layer's output error below RTN's on its calibration inputs.

The model (LlamaConfig hidden 2048, 16 layers, intermediate 5632, 32 heads, vocab 32000, fp32,
random init) is calibrated on random token ids. For each linear, ``layer_errors`` records
``||X (W - Q)^T||^2 / ||X W^T||^2`` for RTN and GPTQ, X being that layer's calibration inputs as
GPTQ saw them (the quantized previous blocks' outputs). Prints time, peak RSS and the error table.

Run: ``python benchmarks/quality/run_llama_1b.py [--nsamples 8] [--seqlen 256] [--layers 16]``
(``--hidden/--intermediate/--heads`` build a smaller model of the same style for a quick check, e.g.
``--layers 4 --hidden 512 --intermediate 1408 --heads 8``; ``--options k=v,...`` adds GPTQ
``algorithm_options``)
"""
from __future__ import annotations

import argparse
import resource
import time

import torch


def rss_mib() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nsamples", type=int, default=8)
    ap.add_argument("--seqlen", type=int, default=256)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--group-size", type=int, default=128)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--intermediate", type=int, default=5632)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--options", default="", help="extra GPTQ algorithm_options, key=value,key=value "
                    "(values as Python literals), e.g. hess_power=0.6,damp=0.1")
    args = ap.parse_args()
    import ast
    extra = {k: ast.literal_eval(v) for k, v in (kv.split("=") for kv in args.options.split(",") if kv)}
    import transformers
    import nybble
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(hidden_size=args.hidden, intermediate_size=args.intermediate,
                                   num_hidden_layers=args.layers, num_attention_heads=args.heads,
                                   num_key_value_heads=args.heads, vocab_size=32000,
                                   max_position_embeddings=2048)
    t0 = time.perf_counter()
    model = transformers.LlamaForCausalLM(cfg).eval()
    nparams = sum(p.numel() for p in model.parameters())
    print(f"model: {nparams / 1e9:.2f} B params fp32, built in {time.perf_counter() - t0:.0f} s, "
          f"RSS {rss_mib():.0f} MiB", flush=True)
    ids = torch.randint(0, cfg.vocab_size, (args.nsamples, args.seqlen), generator=torch.Generator().manual_seed(1))
    qcfg = nybble.Int4WeightOnlyConfig(group_size=args.group_size, algorithm="gptq",
                                       algorithm_options={"layer_errors": True, "batch_size": 4, **extra})
    if extra:
        print(f"GPTQ options: {extra}")
    rss0 = rss_mib()
    t0 = time.perf_counter()
    summary = nybble.quantize(model, qcfg, calibration=ids, filter_fn=lambda m, n: n != "lm_head")
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    errs = summary.details["layer_errors"]
    worse = [n for n, e in errs.items() if not e["gptq"] < e["rtn"]]
    print(f"GPTQ: {len(summary.quantized)} layers in {dt:.0f} s ({args.nsamples} x {args.seqlen} tokens); "
          f"RSS before {rss0:.0f} MiB, peak {peak:.0f} MiB, after {rss_mib():.0f} MiB; "
          f"block inputs held {summary.details['block_inputs_mib']} MiB")
    print(f"layers where GPTQ error >= RTN error: {len(worse)} {worse[:5]}")
    ratios = [e["gptq"] / e["rtn"] for e in errs.values()]
    print(f"GPTQ/RTN error ratio: min {min(ratios):.3f}, median {sorted(ratios)[len(ratios) // 2]:.3f}, "
          f"max {max(ratios):.3f}")
    print(f"{'layer':<40} {'RTN rel err':>12} {'GPTQ rel err':>12}")
    for n, e in errs.items():
        print(f"{n:<40} {e['rtn']:12.5f} {e['gptq']:12.5f}")


if __name__ == "__main__":
    main()
