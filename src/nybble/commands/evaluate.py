"""Measure a quantized model's quality: perplexity (causal LM) or embedding agreement (encoder).

Usage::

    # causal LM: perplexity of a text file, sliding windows (--seqlen, --stride)
    nybble eval MODEL --text FILE.txt [--seqlen 512] [--stride 256] [--max-tokens N]
    # ... of a float model quantized on the fly, next to the float model's own perplexity
    nybble eval MODEL --text FILE.txt --method gptq --calib CALIB.txt [--original]

    # embedding model: cosine (mean, 1st percentile) and nearest-neighbour agreement vs the original
    nybble eval QUANTIZED_DIR --sentences FILE.txt --original FLOAT_MODEL_DIR
    nybble eval FLOAT_MODEL_DIR --sentences FILE.txt --method awq --calib CALIB.txt

MODEL is a nybble checkpoint directory (written by ``nybble quantize``/``nybble.save``: its
config.json has a ``quantization_config``) or a float transformers model directory. With
``--method rtn|gptq|awq|awq+gptq`` the float MODEL is copied and quantized in memory first
(``--mode``, ``--group-size``, ``--zero-point``; calibrated methods need ``--calib FILE``, one sample
per line; ``--nsamples``, ``--seqlen-calib``). ``--sentences`` compares against ``--original PATH``,
or against MODEL itself when quantizing on the fly. ``--json`` prints the numbers as JSON.
``--sentences default`` / ``--calib default`` use the files shipped in ``nybble/data``.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

METHODS = ("rtn", "gptq", "awq", "awq+gptq")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="nybble checkpoint or float transformers model directory")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--text", metavar="FILE", help="causal LM: perplexity of this text file")
    what.add_argument("--sentences", metavar="FILE",
                      help="embedding model: one sentence per line ('default': shipped evaluation set)")
    p.add_argument("--original", nargs="?", const="", default=None, metavar="PATH",
                   help="float model to compare with (for --text without PATH: MODEL before quantizing)")
    p.add_argument("--method", choices=METHODS, help="quantize the float MODEL in memory first")
    p.add_argument("--mode", default="a16w4", choices=("a16w4", "a8w4", "a8w4-asym"))
    p.add_argument("--group-size", type=int, default=128)
    p.add_argument("--zero-point", default="int", choices=("int", "none"))
    p.add_argument("--calib", metavar="FILE", help="calibration text for gptq/awq ('default': shipped set)")
    p.add_argument("--nsamples", type=int, default=128)
    p.add_argument("--seqlen-calib", type=int, default=512)
    p.add_argument("--seqlen", type=int, default=512, help="perplexity window (tokens)")
    p.add_argument("--stride", type=int, default=256, help="perplexity window step (tokens)")
    p.add_argument("--max-tokens", type=int, default=None, help="score at most this many tokens")
    p.add_argument("--max-sentences", type=int, default=None)
    p.add_argument("--json", action="store_true", help="print the results as JSON")


def _is_checkpoint(path: Path) -> bool:
    cfg = path / "config.json"
    if not cfg.is_file():
        return False
    try:
        return "quantization_config" in json.loads(cfg.read_text())
    except ValueError:
        return False


def _load(path: str, causal: bool):
    """(model, tokenizer) from a nybble checkpoint or a float transformers directory."""
    import transformers
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"model directory {p} does not exist")
    tok = transformers.AutoTokenizer.from_pretrained(str(p))
    if _is_checkpoint(p):
        import nybble
        model = nybble.load(str(p))
    else:
        cls = transformers.AutoModelForCausalLM if causal else transformers.AutoModel
        model = cls.from_pretrained(str(p))
    return model.eval(), tok


def _data_file(arg: str, default) -> Path:
    return Path(default) if arg == "default" else Path(arg)


def _quantize(model, tok, args):
    import nybble
    from nybble.algorithms.calibration import DEFAULT_CALIBRATION_FILE, load_calibration_file
    from nybble.config import config_for_mode
    cfg = config_for_mode(args.mode, group_size=args.group_size, zero_point=args.zero_point, algorithm=args.method)
    cal = None
    if args.method != "rtn":
        if not args.calib:
            raise ValueError(f"--method {args.method} needs calibration text: --calib FILE.txt "
                             "(one sample per line; 'default' for the shipped set)")
        cal = load_calibration_file(_data_file(args.calib, DEFAULT_CALIBRATION_FILE), tok,
                                    nsamples=args.nsamples, seqlen=args.seqlen_calib)
    q = copy.deepcopy(model)
    summary = nybble.quantize(q, cfg, calibration=cal)
    print(summary, file=sys.stderr)
    return q


def run(args) -> int:
    from nybble import evaluate as E
    from nybble.algorithms.calibration import DEFAULT_EVAL_SENTENCES_FILE
    causal = args.text is not None
    model, tok = _load(args.model, causal)
    original = None
    if args.method:
        if _is_checkpoint(Path(args.model)):
            raise ValueError(f"{args.model} is already quantized; --method needs a float model directory")
        original, model = model, _quantize(model, tok, args)
    if args.original:
        original, _ = _load(args.original, causal)
    results: dict = {"model": args.model, "method": args.method or "as loaded"}
    if causal:
        text = Path(args.text)
        if not text.is_file():
            raise FileNotFoundError(f"text file {text} does not exist")
        body = text.read_text(encoding="utf-8", errors="replace")
        kw = dict(seqlen=args.seqlen, stride=args.stride, max_tokens=args.max_tokens)
        results["quantized" if args.method else "model"] = E.perplexity(model, tok, body, **kw)
        if original is not None and args.original is not None:
            results["original"] = E.perplexity(original, tok, body, **kw)
    else:
        if original is None:
            raise ValueError("--sentences compares with the original model: give --original PATH, or "
                             "--method to quantize the float MODEL on the fly")
        sents = E.read_lines(_data_file(args.sentences, DEFAULT_EVAL_SENTENCES_FILE))[:args.max_sentences]
        results.update(E.embedding_agreement(original, model, sents, tok))
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for k, v in results.items():
            if isinstance(v, dict):
                print(f"{k}: " + ", ".join(f"{a}={b:.4f}" if isinstance(b, float) else f"{a}={b}"
                                           for a, b in v.items()))
            else:
                print(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}")
    return 0
