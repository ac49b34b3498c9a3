"""Progress bars that stay out of logs: tqdm is off when stderr is not a terminal or the CLI ran with ``-q``.

A piped or redirected run (CI, ``qgnn train ... 2>&1 | tee log``) would otherwise get one long line of
carriage returns per bar.  Callers pass what the user asked for (``--no-progress``) and this module adds the
rest; ``QGNN_PROGRESS=1`` forces the bars on (e.g. under a terminal multiplexer that is not a TTY).
"""

from __future__ import annotations

import os
import sys

_enabled = True


def set_enabled(enabled: bool) -> None:
    """Turn every progress bar of this process off (``qgnn -q``) or back on."""
    global _enabled
    _enabled = bool(enabled)


def disabled(requested: bool = True) -> bool:
    """tqdm's ``disable=``: True unless bars are ``requested``, not silenced, and stderr is a terminal."""
    if not requested or not _enabled:
        return True
    if os.environ.get("QGNN_PROGRESS", "") not in ("", "0"):
        return False
    stream = sys.stderr
    return not (stream is not None and hasattr(stream, "isatty") and stream.isatty())
