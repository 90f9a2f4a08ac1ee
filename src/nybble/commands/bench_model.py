"""Prefill and decode tokens/s of an int4 checkpoint vs the same model in bf16.

Example::

    nybble bench-model out_dir --prompt-tokens 512 --decode-tokens 32

The int4 model is loaded with ``nybble.load`` and measured; then every int4 layer is replaced by a
dense ``nn.Linear`` holding its dequantized weight in ``--baseline-dtype`` (bf16 by default) - the
same architecture and sizes as the original float model - and measured again in the same process.
``--baseline DIR`` measures a float model directory instead (e.g. the model before quantization).

Prefill: one forward over a random ``--prompt-tokens`` prompt (batch 1, last-token logits only);
tokens/s = prompt tokens / time (median of ``--repeats``). Decode: after a 16-token prompt,
``--decode-tokens`` single-token steps with the KV cache; tokens/s = steps / time of the steps.
"""
from __future__ import annotations

import gc
import statistics
import time

import torch
from torch import nn


def add_arguments(parser):
    parser.add_argument("dir", help="int4 checkpoint directory")
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--decode-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--kernel", default=None, help="force this kernel for every int4 layer")
    parser.add_argument("--baseline", default=None, help="float model directory to compare with "
                        "(default: the checkpoint dequantized to --baseline-dtype)")
    parser.add_argument("--baseline-dtype", default="bfloat16")


def _sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def measure(model: nn.Module, prompt_tokens: int, decode_tokens: int, repeats: int,
            device: torch.device, seed: int = 0) -> dict:
    """``{"prefill_tok_s", "decode_tok_s", "prefill_s", "decode_s_per_token"}`` for batch 1."""
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(seed)
    prompt = torch.randint(3, vocab, (1, prompt_tokens), generator=gen).to(device)
    model(prompt[:, :8], use_cache=False)  # warm-up (kernel selection, allocations)
    prefill = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        try:
            model(prompt, use_cache=False, logits_to_keep=1)
        except TypeError:  # models without logits_to_keep
            model(prompt, use_cache=False)
        _sync(device)
        prefill.append(time.perf_counter() - t0)
    decode = []
    for _ in range(repeats):
        out = model(prompt[:, :16], use_cache=True)
        past, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(decode_tokens):
            out = model(tok, past_key_values=past, use_cache=True)
            past, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
        _sync(device)
        decode.append(time.perf_counter() - t0)
    p, d = statistics.median(prefill), statistics.median(decode)
    return {"prefill_tok_s": prompt_tokens / p, "decode_tok_s": decode_tokens / d, "prefill_s": p,
            "decode_s_per_token": d / decode_tokens}


def dequantize_in_place(model: nn.Module, dtype: torch.dtype) -> None:
    """Replace every int4 layer by an ``nn.Linear`` with its dequantized weight in ``dtype``."""
    from ..api import replace_module
    from ..formats.checkpoint import int4_layers
    from ..formats.permuted import PermutedInputLinear
    for name, mod in int4_layers(model).items():
        base = mod.inner if isinstance(mod, PermutedInputLinear) else mod
        w = mod.dequantize()
        lin = nn.Linear(w.shape[1], w.shape[0], bias=base.bias is not None, device=w.device, dtype=dtype)
        with torch.no_grad():
            lin.weight.copy_(w)
            if base.bias is not None:
                lin.bias.copy_(base.bias)
        replace_module(model, name, lin)
    model.to(dtype)
    gc.collect()


def model_bytes(model: nn.Module) -> int:
    from ..api import model_nbytes
    return model_nbytes(model)


def run(args) -> int:
    import nybble
    from ..hf import is_causal_lm, load_pretrained
    from ..types import parse_dtype

    device = torch.device(args.device)
    model = nybble.load(args.dir, device=device, force_kernel=args.kernel)
    if not is_causal_lm(model):
        raise ValueError(f"{args.dir}: {type(model).__name__} is not a causal LM; bench-model measures generation")
    kernels = sorted({m.kernel_name for m in model.modules() if isinstance(m, nybble.Int4Linear)})
    rows = [("int4 (" + ", ".join(kernels) + ")", model_bytes(model),
             measure(model, args.prompt_tokens, args.decode_tokens, args.repeats, device))]
    dtype = parse_dtype(args.baseline_dtype)
    if args.baseline:
        del model
        gc.collect()
        model, _ = load_pretrained(args.baseline, dtype)
        model.to(device)
        label = f"{args.baseline_dtype} ({args.baseline})"
    else:
        dequantize_in_place(model, dtype)
        label = f"{args.baseline_dtype} (dequantized, torch linear)"
    rows.append((label, model_bytes(model), measure(model, args.prompt_tokens, args.decode_tokens,
                                                    args.repeats, device)))
    base = rows[-1][2]
    threads = f"torch threads {torch.get_num_threads()}"
    if device.type == "cpu" and any(k.startswith("nybble_cpu") for k in kernels):
        from ..kernels.cpu import threads_backend
        threads += f" (nybble_cpu threads on {threads_backend()})"
    print(f"batch 1, prompt {args.prompt_tokens} tokens, {args.decode_tokens} decode steps, median of "
          f"{args.repeats}, device {device}, {threads}")
    print(f"{'model':48s} {'MiB':>8s} {'prefill tok/s':>14s} {'decode tok/s':>13s} {'prefill x':>10s} "
          f"{'decode x':>9s}")
    for label, nbytes, r in rows:
        print(f"{label:48s} {nbytes / 2**20:8.1f} {r['prefill_tok_s']:14.1f} {r['decode_tok_s']:13.2f} "
              f"{r['prefill_tok_s'] / base['prefill_tok_s']:10.2f} {r['decode_tok_s'] / base['decode_tok_s']:9.2f}")
    return 0
