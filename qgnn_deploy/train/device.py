"""``--device {cpu,cuda,auto}``: one resolver shared by train / evaluate / search."""

from __future__ import annotations

import argparse

import torch

from qgnn_deploy.errors import QgnnError

DEVICES = ("cpu", "cuda", "auto")


def add_device_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device",
        default="cpu",
        choices=DEVICES,
        help="where training runs (auto = cuda when available); checkpoints are always written from CPU",
    )


def resolve_device(name: str | None, local_rank: int = 0) -> torch.device:
    """``cpu`` / ``cuda`` / ``auto`` -> a ``torch.device``; a data-parallel rank takes GPU ``local_rank``."""
    name = name or "cpu"
    if name not in DEVICES:
        raise QgnnError(f"--device must be one of {', '.join(DEVICES)}, got {name!r}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise QgnnError("--device cuda: no CUDA device is available to this torch build (use --device cpu or auto)")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")
