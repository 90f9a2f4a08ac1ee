"""The ``nybble`` command. Each subcommand is one module in :mod:`nybble.commands` defining
``add_arguments(parser)`` and ``run(args) -> int``; its docstring's first line is its help."""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

#: subcommand -> module (imported only when that subcommand runs, so start-up stays fast)
COMMANDS: dict[str, str] = {
    "quantize": "nybble.commands.quantize",
    "info": "nybble.commands.info",
    "demo": "nybble.commands.demo",
    "eval": "nybble.commands.evaluate",
    "bench": "nybble.commands.bench",
    "export": "nybble.commands.export",
    "generate": "nybble.commands.generate",
    "bench-model": "nybble.commands.bench_model",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nybble", description="int4 quantization for LLMs")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what nybble decides")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, path in COMMANDS.items():
        try:
            mod = importlib.import_module(path)
        except ModuleNotFoundError as exc:
            if exc.name != path:
                raise
            continue  # a command not built yet
        doc = (mod.__doc__ or name).strip().splitlines()[0]
        p = sub.add_parser(name, help=doc, description=mod.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(name)s: %(message)s")
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        if args.verbose:
            raise
        print(f"nybble {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
