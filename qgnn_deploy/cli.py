"""Command-line front end: ``qgnn <command>`` plus the ``qgnn-<command>`` aliases."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from qgnn_deploy.commands import COMMANDS
from qgnn_deploy.errors import QgnnError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qgnn", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"qgnn_deploy.commands.{name}")
        except ModuleNotFoundError as exc:  # a command whose module is not written yet
            if exc.name != f"qgnn_deploy.commands.{name}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except QgnnError as exc:
        if os.environ.get("QGNN_DEBUG"):
            raise
        print(f"qgnn: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("qgnn: interrupted", file=sys.stderr)
        return 130


def _alias(command: str):
    def entry() -> None:
        sys.exit(main([command, *sys.argv[1:]]))

    return entry


train_main = _alias("train")
export_main = _alias("export")
search_main = _alias("search")
bench_main = _alias("bench")

if __name__ == "__main__":
    sys.exit(main())
