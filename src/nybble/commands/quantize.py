"""Quantize a transformers model directory to int4 and save a compressed-tensors checkpoint.

Example::

    nybble quantize --model PATH --method rtn --group-size 128 --mode a16w4 --out DIR
    nybble quantize --model PATH --method gptq --calib calib.txt --nsamples 128 --seqlen 512 --out DIR

Calibrated methods (gptq, awq, awq+gptq) need ``--calib FILE.txt`` (one text sample per line, or
free text that is cut into ``--seqlen``-token pieces); there is no fallback to random data.
"""
from __future__ import annotations


def add_arguments(parser):
    parser.add_argument("--model", required=True, help="model directory (config.json + safetensors)")
    parser.add_argument("--out", required=True, help="output checkpoint directory")
    parser.add_argument("--method", default="rtn", choices=["rtn", "gptq", "awq", "awq+gptq"])
    parser.add_argument("--mode", default="a16w4", choices=["a16w4", "a8w4", "a8w4-asym"],
                        help="a16w4: weight-only; a8w4: dynamic int8 activations (symmetric); a8w4-asym")
    parser.add_argument("--group-size", type=int, default=128, help="32, 64, 128, 256 or -1 (per-channel)")
    parser.add_argument("--zero-point", default="int", choices=["int", "none"])
    parser.add_argument("--dtype", default=None, help="load the model in this dtype (float32/bfloat16/float16)")
    parser.add_argument("--calib", default=None, help="calibration text file (needed by gptq/awq)")
    parser.add_argument("--nsamples", type=int, default=128, help="calibration samples")
    parser.add_argument("--seqlen", type=int, default=512, help="tokens per calibration sample")
    parser.add_argument("--skip", default="", help="comma-separated substrings of layer names to leave in float")
    parser.add_argument("--strict", action="store_true", help="fail instead of skipping layers that cannot be quantized")


def run(args) -> int:
    from .. import quantize, save
    from ..config import config_for_mode
    from ..hf import load_pretrained
    from ..types import parse_dtype

    if args.method != "rtn" and not args.calib:
        raise ValueError(f"--method {args.method} needs calibration text: pass --calib FILE.txt "
                         "(nybble never calibrates on random data)")
    if args.method == "rtn" and args.calib:
        raise ValueError("--calib is only used by --method gptq/awq/awq+gptq")
    config = config_for_mode(args.mode, group_size=args.group_size, zero_point=args.zero_point,
                             algorithm=args.method)
    model, tok = load_pretrained(args.model, parse_dtype(args.dtype) if args.dtype else None)
    calibration = None
    if args.calib:
        from ..algorithms.calibration import load_calibration_file
        if tok is None:
            raise ValueError(f"{args.model}: has no tokenizer, needed to read --calib text")
        calibration = load_calibration_file(args.calib, tok, args.nsamples, args.seqlen)
    skips = [s for s in args.skip.split(",") if s]
    filter_fn = (lambda mod, name: not any(s in name for s in skips)) if skips else None
    summary = quantize(model, config, calibration=calibration, filter_fn=filter_fn, strict=args.strict)
    print(summary)
    save(model, args.out, tokenizer=tok if tok is not None else args.model, algorithm=args.method)
    print(f"saved {args.out}")
    return 0
