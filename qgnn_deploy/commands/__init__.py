"""One module per ``qgnn`` subcommand, each exposing ``register(subparsers)``.

A module's ``register`` adds its parser and sets ``func`` to a callable taking
the parsed namespace and returning an exit code.
"""

COMMANDS = ["demo", "train", "evaluate", "export", "bench", "search", "bench_suite"]
