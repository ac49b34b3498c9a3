"""Artifact directories: written atomically, described by a checksummed manifest.

Layout of an artifact directory (``qgnn-export ... --out DIR``)::

    manifest.json          this schema (format "qgnn-artifact", format_version 1)
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
"""

from __future__ import annotations

import hashlib
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

FORMAT = "qgnn-artifact"
FORMAT_VERSION = 1


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextmanager
def atomic_directory(out_dir: Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary sibling directory; move it to ``out_dir`` only on success.

    On any exception the temporary directory is removed and ``out_dir`` is left
    exactly as it was, so a failed export never leaves a half-written artifact.
    """
    out_dir = Path(out_dir).resolve()
    if out_dir.exists() and not overwrite:
        raise QgnnError(f"{out_dir} already exists (pass --force to replace it)")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        yield tmp
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            os.replace(out_dir, old / "prev")
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def file_entries(root: Path, roles: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Checksum every regular file below ``root`` (relative POSIX names)."""
    entries = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != "manifest.json"):
        rel = path.relative_to(root).as_posix()
        entries[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size, "role": roles.get(rel, "other")}
    return entries


def write_manifest(root: Path, manifest: dict[str, Any], roles: dict[str, str]) -> dict[str, Any]:
    doc = {"format": FORMAT, "format_version": FORMAT_VERSION, "toolkit_version": __version__, **manifest}
    doc["files"] = file_entries(root, roles)
    (root / "manifest.json").write_text(json.dumps(doc, indent=2, sort_keys=True))
    return doc


def load_manifest(root: Path, verify: bool = True) -> dict[str, Any]:
    """Read and (by default) verify an artifact's manifest and file checksums."""
    path = Path(root) / "manifest.json"
    if not path.is_file():
        raise QgnnError(f"{root} is not a qgnn artifact (no manifest.json)")
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise QgnnError(f"{path}: unreadable manifest ({exc})") from None
    if doc.get("format") != FORMAT:
        raise QgnnError(f"{path}: not a qgnn artifact manifest")
    if doc.get("format_version") != FORMAT_VERSION:
        raise QgnnError(f"{path}: artifact format version {doc.get('format_version')} is not supported "
                        f"(this toolkit reads version {FORMAT_VERSION}); re-export it")
    if verify:
        for rel, entry in doc.get("files", {}).items():
            f = Path(root) / rel
            if not f.is_file():
                raise QgnnError(f"{root}: file {rel} listed in the manifest is missing")
            if sha256_file(f) != entry["sha256"]:
                raise QgnnError(f"{root}: checksum mismatch for {rel} (file modified after export)")
    return doc
