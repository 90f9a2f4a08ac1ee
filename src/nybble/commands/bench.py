"""Benchmark nybble's int4 kernels: `nybble bench cpu` (x86 C++ kernels) or `nybble bench gpu` (Triton).

`nybble bench cpu` times int4 linear layers (Llama-3-8B shapes) against torch fp32/bf16 linear and
PyTorch's own int4 CPU op, with weights from DRAM, and (with --e2e) a ~1B model end to end; see
`nybble bench cpu --help`. `nybble bench gpu` runs the GPU benchmark (`nybble.bench.gpu`).
"""
from __future__ import annotations

import argparse
import importlib
import sys

#: target -> module exposing ``add_arguments(parser)`` and ``main(args[, command])``
TARGETS: dict[str, str] = {"cpu": "nybble.bench.cpu", "gpu": "nybble.bench.gpu"}


def _missing(target: str, path: str, why: str):
    def run(args) -> int:
        print(f"nybble bench {target}: the benchmark module {path} is not available ({why}).",
              file=sys.stderr)
        return 1
    return run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench_target", metavar="TARGET")
    for target, path in TARGETS.items():
        try:
            mod = importlib.import_module(path)
        except ImportError as exc:
            missing_self = isinstance(exc, ModuleNotFoundError) and exc.name == path
            why = "not built yet" if missing_self else f"{type(exc).__name__}: {exc}"
            p = sub.add_parser(target, help=f"{target} benchmark (unavailable: {why})")
            p.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
            p.set_defaults(_bench_run=_missing(target, path, why))
            continue
        doc = (mod.__doc__ or target).strip()
        p = sub.add_parser(target, help=doc.splitlines()[0], description=doc,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(_bench_run=mod.main)
    parser.set_defaults(_bench_parser=parser)


def run(args) -> int:
    runner = getattr(args, "_bench_run", None)
    if runner is None:
        args._bench_parser.print_help()
        return 2
    return int(runner(args) or 0)
