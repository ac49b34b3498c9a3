"""Artifact directories: written atomically, described by a checksummed manifest.

Layout of an artifact directory (``qgnn-export ... --out DIR``)::

    manifest.json          this schema (format "qgnn-artifact", format_version 1)
    manifest.sha256        one sha256sum line over manifest.json (every runner verifies it)
    model.onnx             integer ONNX model (every target has it)
    model_<target>.so      TVM library for compiled targets (x86_64, arm64, ...)
    ir.json / ir.npz       the integer graph itself (no pickle)
    sample_input.npz       x, edge_index (and batch for graph tasks)
    reference_output.npz   reference-interpreter output on the sample input
    report.json / .md      deploy report
    tuning/                optional meta-schedule database (reused by a second export)

``manifest["files"]`` maps every file to ``{"sha256", "bytes", "role"}``.  The
device runtime (``runtimes/qgnn_bench.py``) re-reads this schema without
importing this package, so keep the two in step.

Writing is all or nothing and exclusive: :func:`output_lock` holds ``.NAME.lock`` in the parent
directory for the whole export (a second export to the same ``--out`` fails with one line), stale
``.NAME.partial-*`` / ``.NAME.old-*`` directories of a killed export are removed under that lock, and
every ``OSError`` (read-only or full file system, ...) becomes a one-line :class:`QgnnError`.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from qgnn_deploy import __version__
from qgnn_deploy.errors import QgnnError
from qgnn_deploy.validation import (
    MANIFEST_CHECKSUM,
    ValidationError,
    manifest_checksum_line,
    sha256_file,
    verify_manifest_checksum,
)

FORMAT = "qgnn-artifact"
FORMAT_VERSION = 1

__all__ = ["FORMAT", "FORMAT_VERSION", "sha256_file", "atomic_directory", "output_lock", "remove_stale_partials",
           "file_entries", "write_manifest", "load_manifest", "os_error_text"]

_HELD: set[Path] = set()  # output directories whose lock this process holds


def os_error_text(exc: OSError) -> str:
    """``'No space left on device (/path)'``: the one-line form of an OSError."""
    text = exc.strerror or str(exc) or type(exc).__name__
    return f"{text} ({exc.filename})" if exc.filename else text


@contextmanager
def output_lock(out_dir: Path) -> Iterator[None]:
    """Hold an exclusive, non-blocking lock on ``out_dir`` (file ``.NAME.lock`` next to it) while writing it.

    A second writer fails at once with one line instead of racing the first one's check-then-rename.
    Re-entrant within a process.  The lock file is removed on exit.
    """
    out_dir = Path(out_dir).absolute()
    if out_dir in _HELD:
        yield
        return
    lock = out_dir.parent / f".{out_dir.name}.lock"
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise QgnnError(f"cannot write {out_dir}: {os_error_text(exc)}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino  # not a lock file another writer just removed
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.ENOENT):
                raise QgnnError(f"cannot lock {out_dir}: {os_error_text(exc)}") from None
            same = False
        if not same:
            raise QgnnError(f"{out_dir} is being written by another export right now (lock {lock}); "
                            "wait for it or choose another --out")
        _HELD.add(out_dir)
        try:
            yield
        finally:
            _HELD.discard(out_dir)
            lock.unlink(missing_ok=True)
    finally:
        os.close(fd)


def remove_stale_partials(out_dir: Path) -> list[str]:
    """Delete ``.NAME.partial-*`` / ``.NAME.old-*`` left by a killed export (call with the lock held)."""
    out_dir = Path(out_dir).absolute()
    removed = []
    if out_dir.parent.is_dir():
        for p in out_dir.parent.iterdir():
            if p.name.startswith((f".{out_dir.name}.partial-", f".{out_dir.name}.old-")) and p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p.name)
    return removed


@contextmanager
def atomic_directory(out_dir: Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary sibling directory; move it to ``out_dir`` only on success.

    On any exception the temporary directory is removed and ``out_dir`` is left
    exactly as it was, so a failed export never leaves a half-written artifact.
    Runs under :func:`output_lock` (taken here unless the caller holds it).
    """
    out_dir = Path(out_dir).absolute()
    with output_lock(out_dir):
        remove_stale_partials(out_dir)
        if out_dir.exists() and not overwrite:
            raise QgnnError(f"{out_dir} already exists (pass --force to replace it)")
        try:
            tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
        except OSError as exc:
            raise QgnnError(f"cannot write {out_dir}: {os_error_text(exc)}") from None
        try:
            yield tmp
            if out_dir.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
                os.replace(out_dir, old / "prev")
                os.replace(tmp, out_dir)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, out_dir)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(exc, OSError):
                raise QgnnError(f"cannot write {out_dir}: {os_error_text(exc)}") from None
            raise


def file_entries(root: Path, roles: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Checksum every regular file below ``root`` (relative POSIX names)."""
    entries = {}
    skip = {"manifest.json", MANIFEST_CHECKSUM}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.relative_to(root).as_posix() not in skip):
        rel = path.relative_to(root).as_posix()
        entries[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size, "role": roles.get(rel, "other")}
    return entries


def write_manifest(root: Path, manifest: dict[str, Any], roles: dict[str, str]) -> dict[str, Any]:
    """Write ``manifest.json`` (every file's sha256) and ``manifest.sha256`` (the manifest's own)."""
    doc = {"format": FORMAT, "format_version": FORMAT_VERSION, "toolkit_version": __version__, **manifest}
    doc["files"] = file_entries(root, roles)
    raw = json.dumps(doc, indent=2, sort_keys=True).encode()
    (root / "manifest.json").write_bytes(raw)
    (root / MANIFEST_CHECKSUM).write_text(manifest_checksum_line(raw))
    return doc


def load_manifest(root: Path, verify: bool = True) -> dict[str, Any]:
    """Read and (by default) verify an artifact's manifest, its checksum line and every file's checksum."""
    root = Path(root)
    path = root / "manifest.json"
    if not path.is_file():
        raise QgnnError(f"{root} is not a qgnn artifact (no manifest.json)")
    try:
        raw = path.read_bytes()
        doc = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise QgnnError(f"{path}: unreadable manifest ({exc})") from None
    except OSError as exc:
        raise QgnnError(f"{path}: unreadable manifest ({os_error_text(exc)})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise QgnnError(f"{path}: not a qgnn artifact manifest")
    if doc.get("format_version") != FORMAT_VERSION:
        raise QgnnError(f"{path}: artifact format version {doc.get('format_version')} is not supported "
                        f"(this toolkit reads version {FORMAT_VERSION}); re-export it")
    if verify:
        try:
            verify_manifest_checksum(root, raw)
        except ValidationError as exc:
            raise QgnnError(str(exc)) from None
        files = doc.get("files")
        if not isinstance(files, dict):
            raise QgnnError(f"{path}: manifest lists no files")
        real_root = root.resolve()
        for rel, entry in files.items():
            if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
                raise QgnnError(f"{path}: malformed entry for {rel!r} in 'files' (want sha256, bytes, role)")
            f = root / rel
            if not rel or Path(rel).is_absolute() or ".." in Path(rel).parts or \
                    not f.resolve().is_relative_to(real_root):
                raise QgnnError(f"{path}: file name {rel!r} escapes the artifact directory")
            if not f.is_file():
                raise QgnnError(f"{root}: file {rel} listed in the manifest is missing")
            if sha256_file(f) != entry["sha256"]:
                raise QgnnError(f"{root}: checksum mismatch for {rel} (file modified after export)")
    return doc
