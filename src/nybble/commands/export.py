"""Convert an int4 checkpoint to another format (GPTQ v2, or compressed-tensors pack-quantized).

Examples::

    nybble export out_dir --format gptq --out out_gptq     # for tools that only read GPTQ
    nybble export gptq_dir --format compressed-tensors --out out_ct

The source may be any checkpoint ``nybble.load`` reads (nybble, compressed-tensors, GPTQ, AWQ).
Weights are converted exactly (same dequantized values); the output is written atomically.
GPTQ needs one group size and zero-point domain for the whole model and N divisible by 8.
"""
from __future__ import annotations

FORMATS = ("gptq", "compressed-tensors")


def add_arguments(parser):
    parser.add_argument("dir", help="source checkpoint directory")
    parser.add_argument("--format", required=True, choices=FORMATS, help="target format")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--max-shard-size", default="4GB", help="largest safetensors shard (e.g. 2GB)")
    parser.add_argument("--no-overwrite", action="store_true", help="refuse an existing --out")


def run(args) -> int:
    import nybble
    from ..formats.checkpoint import _shard_bytes
    from ..formats.gptq import export_gptq

    model = nybble.load(args.dir)
    src = args.dir
    shard = _shard_bytes(args.max_shard_size)
    if args.format == "gptq":
        export_gptq(model, args.out, max_shard_size=shard, tokenizer=src, overwrite=not args.no_overwrite)
    else:
        nybble.save(model, args.out, max_shard_size=shard, tokenizer=src, overwrite=not args.no_overwrite)
    print(f"wrote {args.format} checkpoint to {args.out}")
    return 0
