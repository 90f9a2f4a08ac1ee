"""Generate text with an int4 checkpoint (nybble, compressed-tensors, GPTQ or AWQ), streaming tokens.

Examples::

    nybble generate out_dir --prompt "The capital of France is" --max-new-tokens 64
    nybble generate out_dir --prompt-ids 1,450,7483 --print-ids       # a model without a tokenizer

Greedy decoding by default (``--temperature`` > 0 samples). Prints tokens/s of the generation and
the peak memory of the process (RSS on CPU, allocated memory on GPU).
"""
from __future__ import annotations

import resource
import sys
import time

import torch


def add_arguments(parser):
    parser.add_argument("dir", help="checkpoint directory")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="prompt text (needs the checkpoint's tokenizer)")
    src.add_argument("--prompt-ids", help="comma-separated prompt token ids (models without a tokenizer)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--kernel", default=None, help="force this kernel for every int4 layer")
    parser.add_argument("--tokenizer", default=None, help="tokenizer directory (default: the checkpoint's)")
    parser.add_argument("--print-ids", action="store_true", help="also print the generated token ids")


class IdStreamer:
    """Streams token ids (for models without a tokenizer), same interface as TextStreamer."""

    def __init__(self, skip_prompt: bool = True):
        self.skip_prompt, self._first = skip_prompt, True

    def put(self, value):
        if self._first and self.skip_prompt:
            self._first = False
            return
        for t in value.reshape(-1).tolist():
            print(t, end=" ", flush=True)

    def end(self):
        print(flush=True)


def peak_memory_mib(device: torch.device) -> float:
    """Peak memory of this process: GPU allocated memory on CUDA, else peak RSS (MiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def load_tokenizer(path):
    import transformers
    try:
        return transformers.AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError, TypeError):
        return None


def run(args) -> int:
    import transformers

    import nybble
    from ..hf import is_causal_lm

    device = torch.device(args.device)
    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    model = nybble.load(args.dir, device=device, force_kernel=args.kernel)
    if not is_causal_lm(model):
        raise ValueError(f"{args.dir}: {type(model).__name__} is not a causal language model; "
                         "generate needs a *ForCausalLM checkpoint")
    tok = load_tokenizer(args.tokenizer or args.dir)
    if args.prompt is not None:
        if tok is None:
            raise ValueError(f"{args.tokenizer or args.dir}: no tokenizer found; pass --tokenizer DIR or --prompt-ids")
        ids = tok(args.prompt, return_tensors="pt").input_ids
        streamer = transformers.TextStreamer(tok, skip_prompt=True)
        print(args.prompt, end="", flush=True)
    else:
        try:
            ids = torch.tensor([[int(v) for v in args.prompt_ids.split(",") if v.strip()]])
        except ValueError:
            raise ValueError(f"--prompt-ids must be comma-separated integers, got {args.prompt_ids!r}") from None
        streamer = IdStreamer()
    ids = ids.to(device)
    gen_kw = dict(max_new_tokens=args.max_new_tokens, streamer=streamer,
                  pad_token_id=getattr(model.config, "pad_token_id", None) or 0)
    if args.temperature > 0:
        gen_kw.update(do_sample=True, temperature=args.temperature)
    else:
        gen_kw.update(do_sample=False)
    with torch.inference_mode():
        t0 = time.perf_counter()
        out = model.generate(ids, attention_mask=torch.ones_like(ids), **gen_kw)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
    new = out[0, ids.shape[1]:].tolist()
    if args.print_ids:
        print("ids: " + ",".join(str(t) for t in new))
    print(f"[{len(new)} tokens in {seconds:.2f} s: {len(new) / seconds:.2f} tokens/s (prompt {ids.shape[1]} "
          f"tokens included in the time); peak memory {peak_memory_mib(device):.0f} MiB]", file=sys.stderr)
    return 0
