"""qgnn: train quantization-aware GNNs, fold them into integer programs, export to ONNX Runtime and TVM.

The command-line front end, ``qgnn <command>`` plus the ``qgnn-<command>`` aliases.

Only the chosen command's module is imported (``qgnn --help`` and ``qgnn --version`` import neither torch
nor TVM).  User errors -- :class:`~qgnn_deploy.errors.QgnnError`, and the OS / subprocess failures in
:data:`USER_ERRORS` -- print one line ``qgnn: error: ...`` and exit with status 2; ``-v`` or
``QGNN_DEBUG=1`` shows their traceback instead.  Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import subprocess
import sys
from collections.abc import Sequence

from qgnn_deploy import __version__, progress
from qgnn_deploy.commands import COMMANDS, HelpFormatter, common_options
from qgnn_deploy.errors import QgnnError

USER_ERRORS: tuple[type[BaseException], ...] = (QgnnError, OSError, MemoryError, subprocess.SubprocessError)
"""Failures caused by the input or the environment, not by a bug: one line, exit status 2."""

EPILOG = ("Run 'qgnn COMMAND --help' for a command's options.\n"
          "Errors print one line and exit with status 2; -v or QGNN_DEBUG=1 shows the traceback.")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``qgnn`` parser; only ``command``'s module is imported (the others get a placeholder that lists them)."""
    parser = argparse.ArgumentParser(prog="qgnn", description=__doc__.split("\n\n")[0], epilog=EPILOG,
                                     formatter_class=HelpFormatter, parents=[common_options(top_level=True)])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, cmd in COMMANDS.items():
        if name == command:
            importlib.import_module(f"qgnn_deploy.commands.{cmd.module}").register(sub)
        else:
            sub.add_parser(name, help=cmd.summary, add_help=False)
    return parser


def _command_of(argv: Sequence[str]) -> str | None:
    """The first non-option word: only the top-level options, which take no value, may precede it."""
    for word in argv:
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def describe(exc: BaseException) -> str:
    """One line for a user error."""
    if isinstance(exc, QgnnError):
        return str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename is not None else exc.strerror
    if isinstance(exc, subprocess.CalledProcessError):
        cmd = exc.cmd if isinstance(exc.cmd, str) else " ".join(map(str, exc.cmd))
        return f"{cmd!r} failed with exit status {exc.returncode}"
    if isinstance(exc, MemoryError):
        return "out of memory"
    return f"{type(exc).__name__}: {exc}"


def configure_logging(verbose: int, quiet: bool) -> None:
    """``qgnn_deploy`` loggers to stderr: INFO by default, DEBUG with ``-v``, WARNING with ``-q``;
    progress bars off with ``-q`` (and whenever stderr is not a terminal, see :mod:`qgnn_deploy.progress`)."""
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    log = logging.getLogger("qgnn_deploy")
    if not any(getattr(h, "_qgnn_cli", False) for h in log.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._qgnn_cli = True  # type: ignore[attr-defined]
        log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False
    progress.set_enabled(not quiet)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the command and return its exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_command_of(argv))
    args = parser.parse_args(argv)
    configure_logging(args.verbose, args.quiet)
    options = {k: v for k, v in vars(args).items() if k not in ("func", "_parser")}
    logging.getLogger("qgnn_deploy.cli").debug("qgnn %s: %s", __version__, options)
    debug = bool(args.verbose) or os.environ.get("QGNN_DEBUG", "") not in ("", "0")
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as exc:
        if debug:
            raise
        if isinstance(exc, BrokenPipeError):  # `qgnn ... | head`: the reader left; not an error of ours
            return 0
        print(f"qgnn: error: {describe(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("qgnn: interrupted", file=sys.stderr)
        return 130


def _alias(command: str):
    def entry() -> None:
        sys.exit(main([command, *sys.argv[1:]]))

    entry.__doc__ = f"``qgnn-{command}``: the same as ``qgnn {command}``."
    return entry


train_main = _alias("train")
export_main = _alias("export")
search_main = _alias("search")

if __name__ == "__main__":
    sys.exit(main())
