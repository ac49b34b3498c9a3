"""Run aarch64 Python on this x86-64 host under qemu-user, to execute arm64 artifacts in tests.

The sysroot (Debian's arm64 Python 3.11 unpacked, plus the aarch64 wheels of TVM, NumPy and
ONNX Runtime) is built once by ``export/make_a64_sysroot.sh``; ``export/setup.sh`` does that
for the default location.  Nothing here needs binfmt_misc: qemu is called explicitly.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from qgnn_deploy.errors import QgnnError

BUILD_HINT = "bash export/make_a64_sysroot.sh {dest}  (or bash export/setup.sh)"


def default_cache() -> Path:
    return Path(os.environ.get("QGNN_CACHE") or Path.home() / ".cache" / "qgnn-deploy")


def sysroot_dir() -> Path:
    """``$QGNN_A64_SYSROOT``, else ``$QGNN_CACHE/a64``, else ``~/.cache/qgnn-deploy/a64``."""
    env = os.environ.get("QGNN_A64_SYSROOT")
    return Path(env).expanduser() if env else default_cache() / "a64"


def a64_python_path(root: Path | None = None) -> Path:
    """The launcher script the sysroot builder writes (``DEST/bin/a64python``)."""
    return (root or sysroot_dir()) / "bin" / "a64python"


def _problem(root: Path) -> str | None:
    """Why the aarch64 Python cannot run, as one line; None when it can."""
    if shutil.which("qemu-aarch64-static") is None:
        return "qemu-aarch64-static not found: apt-get install qemu-user-static"
    launcher = a64_python_path(root)
    if not (root / ".stamp").is_file() or not os.access(launcher, os.X_OK):
        return f"no aarch64 sysroot at {root}: build it with " + BUILD_HINT.format(dest=root)
    if not (root / "root" / "usr" / "bin" / "python3.11").is_file():
        return f"aarch64 sysroot at {root} is incomplete: rebuild it with " + BUILD_HINT.format(dest=root)
    return None


def a64_python_available(root: Path | None = None) -> bool:
    """True when qemu-user and a built sysroot are present (cheap: runs nothing)."""
    return _problem(root or sysroot_dir()) is None


def require_a64_python(root: Path | None = None) -> Path:
    """Return the launcher path or raise :class:`QgnnError` saying how to get it."""
    root = root or sysroot_dir()
    problem = _problem(root)
    if problem:
        raise QgnnError(problem)
    return a64_python_path(root)


def run_a64_python(
    args: Sequence[str | os.PathLike[str]],
    env: Mapping[str, str] | None = None,
    timeout: float | None = 600.0,
    cwd: str | os.PathLike[str] | None = None,
    check: bool = False,
    root: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``python3.11 ARGS`` for aarch64 under qemu-user; output captured as text.

    ``env`` entries are added to (not substituted for) the current environment, so a test can set
    e.g. ``TVM_NUM_THREADS``.  Host Python variables that would mislead the guest interpreter
    (PYTHONHOME, and PYTHONPATH entries pointing at x86 site-packages) are dropped.
    """
    launcher = require_a64_python(root)
    full = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP")}
    full.update(env or {})
    try:
        proc = subprocess.run([str(launcher), *map(str, args)], env=full, cwd=cwd, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise QgnnError(f"aarch64 python under qemu timed out after {timeout} s: {' '.join(map(str, args))}") \
            from None
    if check and proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise QgnnError(f"aarch64 python under qemu failed (exit {proc.returncode}): {last}")
    return proc


def bench_script() -> Path:
    """``runtimes/qgnn_bench.py`` of this checkout (the package is installed editable from the repo)."""
    path = Path(__file__).resolve().parents[1] / "runtimes" / "qgnn_bench.py"
    if not path.is_file():
        raise QgnnError(f"the device benchmark script is missing ({path}); run from a qgnn-deploy checkout")
    return path


def run_bench(
    artifact: str | os.PathLike[str],
    *,
    emulate_a64: bool = False,
    backend: str = "auto",
    threads: int | None = None,
    warmup: int = 10,
    repeats: int = 50,
    extra_args: Sequence[str] = (),
    timeout: float = 1800.0,
) -> dict:
    """Run the on-device benchmark on ``artifact`` here (x86-64) or as aarch64 under qemu; return its report.

    The script runs in a separate process exactly as on a board (no torch, no qgnn_deploy), so the numbers
    match what ``python3 qgnn_bench.py`` prints there.  An exit status 2 (bad artifact or input) becomes a
    :class:`QgnnError` with the script's one-line message; a reference mismatch (status 1) still returns
    the report, whose ``reference.match`` is False.
    """
    import json
    import sys
    import tempfile

    args: list[str] = [str(bench_script()), str(artifact), "--backend", backend, "--warmup", str(warmup),
                       "--repeats", str(repeats), *extra_args]
    if threads is not None:
        args += ["--threads", str(threads)]
    with tempfile.TemporaryDirectory(prefix="qgnn-bench-") as tmp:
        out = Path(tmp) / "report.json"
        args += ["--json", str(out)]
        if emulate_a64:
            proc = run_a64_python(args, timeout=timeout)
        else:
            try:
                proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout)
            except subprocess.TimeoutExpired:
                raise QgnnError(f"qgnn_bench.py timed out after {timeout} s on {artifact}") from None
        if proc.returncode not in (0, 1) or not out.is_file():
            lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
            msg = next((ln for ln in lines if ln.startswith("qgnn_bench: error:")), lines[-1] if lines else "")
            raise QgnnError(msg.replace("qgnn_bench: error: ", "benchmark: ") or
                            f"qgnn_bench.py failed with exit status {proc.returncode}")
        return json.loads(out.read_text())
