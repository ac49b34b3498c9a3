"""Checkpoints that load with ``torch.load(weights_only=True)``: tensors and plain containers only.

A checkpoint holds everything deployment needs: the model config (to rebuild
the exact module tree), the state dict (weights, prompt parameters, every
quantizer's buffers), a readable summary of each quantizer's parameters, the
dataset/graph description, and metrics.  Loading never unpickles code: a file
that needs more than the weights-only unpickler is refused with one line.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from qgnn_deploy.errors import QgnnError
from qgnn_deploy.models.net import QGNN, ModelConfig

FORMAT = "qgnn-checkpoint"
VERSION = 1


def quantizer_summary(model: QGNN) -> dict[str, dict[str, Any]]:
    """Per-quantizer scale / zero point / bits, as tensors and ints (for humans and fold checks)."""
    out: dict[str, dict[str, Any]] = {}
    for name, q in model.quantizers().items():
        if not q.spec.enabled:
            out[name] = {"bits": 32}
            continue
        p = q.qparams()
        out[name] = {"bits": int(p.bits.max()), "kind": q.spec.kind, "zero_point": p.zero_point,
                     "scale": torch.from_numpy(p.scale.copy())}
    return out


def save_checkpoint(path: str | Path, model: QGNN, dataset: dict[str, Any], metrics: dict[str, Any],
                    extra: dict[str, Any] | None = None) -> Path:
    """Write atomically (temporary file + rename)."""
    path = Path(path)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "quantizers": quantizer_summary(model),
        "dataset": dataset,
        "metrics": metrics,
        "extra": extra or {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load the raw payload safely; every failure is a ``QgnnError`` with one line."""
    path = Path(path)
    if not path.is_file():
        raise QgnnError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - UnpicklingError, zip errors, EOF, ...
        if not zipfile.is_zipfile(path):
            reason = "not a PyTorch checkpoint archive (corrupt or truncated?)"
        elif isinstance(exc, pickle.UnpicklingError):
            reason = ("the weights-only loader refused it: it holds objects other than tensors and plain "
                      "containers, and such files are never unpickled")
        else:
            reason = f"{type(exc).__name__} while reading it"
        raise QgnnError(f"{path} is not a loadable qgnn checkpoint: {reason}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise QgnnError(f"{path} is not a qgnn checkpoint (missing format tag {FORMAT!r})")
    if payload.get("version") != VERSION:
        raise QgnnError(f"{path}: checkpoint version {payload.get('version')} is not supported (expected {VERSION})")
    for key in ("config", "state_dict"):
        if key not in payload:
            raise QgnnError(f"{path}: checkpoint lacks {key!r}")
    return payload


def load_checkpoint(path: str | Path) -> tuple[QGNN, dict[str, Any]]:
    """Rebuild the model from a checkpoint; returns (model in eval mode, payload)."""
    payload = read_checkpoint(path)
    if isinstance(payload["state_dict"], dict):
        from qgnn_deploy.train.state_checks import check_state_values

        check_state_values(payload["state_dict"], str(path))
    try:
        config = ModelConfig.from_dict(dict(payload["config"]))
        model = QGNN(config)
        model.load_state_dict(payload["state_dict"], strict=True)
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise QgnnError(f"{path}: checkpoint does not describe a buildable model ({first[:200]})") from None
    model.eval()
    return model, payload
