"""One module per ``qgnn`` subcommand, each exposing ``register(subparsers)``, plus the CLI conventions they share.

A module's ``register`` adds its parser with :func:`add_parser` and sets ``func`` to a callable taking the
parsed namespace and returning an exit code.  This package must stay cheap to import (no torch, no TVM):
``qgnn --help`` lists the commands from :data:`COMMANDS` without importing any command module, and
``qgnn <command>`` imports only that command's module.

Conventions every command follows:

* every flag has a help text; defaults are shown by :class:`HelpFormatter`;
* ``--out PATH`` is the one thing a command makes (``train``: the checkpoint file, ``export``: the artifact
  directory); ``--out-dir DIR`` is a directory that receives several files (``search``, ``evaluate``,
  ``bench-suite``, ``demo``);
* lists are comma- or space-separated (``--bits 8,4`` == ``--bits 8 4``), through :func:`add_list_argument`;
* ``-v``/``--verbose``, ``-q``/``--quiet`` and ``--version`` work before or after the command name.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Command:
    """A ``qgnn`` subcommand: its name, the module that implements it and the one-line summary ``--help`` lists."""

    name: str
    module: str
    summary: str


COMMANDS: dict[str, Command] = {c.name: c for c in (
    Command("demo", "demo", "train, export (x86_64 + arm64) and benchmark on the embedded synthetic graph"),
    Command("train", "train", "train one QAT configuration and write model.pt"),
    Command("evaluate", "evaluate", "Cora benchmark: FP32 and every QAT framework at INT8/INT4, +/- LoRAP"),
    Command("export", "export", "fold a trained checkpoint into the integer graph and write an artifact directory"),
    Command("search", "search", "LPGNAS: search architecture + per-component bits, retrain, write model.pt"),
    Command("bench-suite", "bench_suite",
            "benchmark our integer backends against PyG / ORT FP32 / ORT QDQ (table, JSON, PNG)"),
)}


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps descriptions as written and appends ``(default: X)`` to a flag's help.

    Unlike :class:`argparse.ArgumentDefaultsHelpFormatter` it says nothing for ``None``/``False`` defaults
    (switches, "computed" values) or when the help text already explains its default.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (default is None or isinstance(default, bool) or default is argparse.SUPPRESS or "default" in text.lower()
                or not action.option_strings or isinstance(action, argparse._VersionAction | argparse._CountAction)):
            return text
        if isinstance(default, list | tuple):
            default = ",".join(map(str, default)) if default else "(none)"
            return f"{text} (default: {default})"
        return text + " (default: %(default)s)"


def common_options(top_level: bool) -> argparse.ArgumentParser:
    """``-v``, ``-q`` and ``--version``; after the command name their defaults are SUPPRESS so that
    ``qgnn -v train`` is not reset by the subcommand's defaults."""
    from qgnn_deploy import __version__

    p = argparse.ArgumentParser(add_help=False)
    missing: Any = 0 if top_level else argparse.SUPPRESS
    p.add_argument("-v", "--verbose", action="count", default=missing,
                   help="more output: debug logging, and the traceback of any error")
    p.add_argument("-q", "--quiet", action="store_true", default=False if top_level else argparse.SUPPRESS,
                   help="only results and errors: no progress bars or informational messages")
    p.add_argument("--version", action="version", version=f"qgnn {__version__}", help="print the version and exit")
    return p


def add_parser(subparsers: Any, name: str, description: str | None = None, **kwargs: Any) -> argparse.ArgumentParser:
    """The parser of command ``name``: its summary from :data:`COMMANDS`, ``description`` (the module docstring)
    shown by ``qgnn NAME --help``, the shared formatter and the common options."""
    summary = COMMANDS[name].summary
    text = (description or summary).replace("``", "`").strip()
    return subparsers.add_parser(name, help=summary, description=text, formatter_class=HelpFormatter,
                                 parents=[common_options(top_level=False)], **kwargs)


def _split(item: Callable[[str], Any], choices: Sequence[Any] | None) -> Callable[[str], list[Any]]:
    def parse(token: str) -> list[Any]:
        # a TVM target JSON holds commas of its own
        parts = [token] if token.lstrip().startswith("{") else [t.strip() for t in token.split(",") if t.strip()]
        values = []
        for part in parts:
            try:
                value = item(part)
            except ValueError:
                raise argparse.ArgumentTypeError(f"invalid value {part!r}") from None
            if choices is not None and value not in choices:
                raise argparse.ArgumentTypeError(
                    f"invalid choice {part!r} (choose from {', '.join(map(str, choices))})")
            values.append(value)
        return values

    parse.__name__ = getattr(item, "__name__", "value")
    return parse


class _ListAction(argparse.Action):
    """Flattens ``--flag 8,4 2`` into ``[8, 4, 2]``; a repeated flag replaces the earlier list."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        setattr(namespace, self.dest, [v for token in values for v in token])


def add_list_argument(parser: argparse.ArgumentParser, flag: str, *, item: Callable[[str], Any] = str,
                      choices: Sequence[Any] | None = None, default: Sequence[Any] | None = None, help: str,
                      metavar: str | None = None) -> argparse.Action:
    """A list-valued flag in the one list style: comma- or space-separated (``--bits 8,4`` == ``--bits 8 4``);
    an empty string gives the empty list."""
    if metavar is None and choices is not None:
        metavar = "{" + ",".join(map(str, choices)) + "}"
    return parser.add_argument(flag, nargs="+", type=_split(item, choices), action=_ListAction,
                               default=list(default) if default is not None else None, metavar=metavar,
                               help=help)
