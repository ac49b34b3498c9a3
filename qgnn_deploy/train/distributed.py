"""Data-parallel training with ``torch.distributed`` under ``torchrun``.

``torchrun --nproc-per-node N $(which qgnn-train) ...`` sets ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` /
``MASTER_ADDR`` / ``MASTER_PORT``; ``from_env`` reads them and ``session`` joins the process group (gloo on
CPU, nccl on CUDA), installs the observer reduction (``qgnn_deploy.quant.sync``: every rank's quantizer
buffers stay bit-identical, so every rank folds to the same integer model) and tears both down afterwards.
Gradients are averaged by ``DistributedDataParallel``; buffers are NOT broadcast by DDP (they are already
equal, and a broadcast would hide a divergence instead of preventing it).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from qgnn_deploy.errors import QgnnError
from qgnn_deploy.quant import sync


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_env() -> DistInfo | None:
    """The torchrun environment, or ``None`` for a single process."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise QgnnError("WORLD_SIZE / RANK / LOCAL_RANK must be integers (set by torchrun)") from None
    if world <= 1:
        return None
    if not 0 <= rank < world:
        raise QgnnError(f"RANK {rank} outside WORLD_SIZE {world}")
    return DistInfo(rank, world, local)


@contextlib.contextmanager
def session(info: DistInfo, device: torch.device) -> Iterator[None]:
    """Join the default process group for the duration of training."""
    import torch.distributed as dist

    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size)
    sync.install(None)
    try:
        yield
    finally:
        sync.uninstall()
        dist.destroy_process_group()


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """``DistributedDataParallel`` around ``model`` (parameters broadcast from rank 0 at construction)."""
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    with warnings.catch_warnings():  # broadcast_buffers=False is what we mean (a deprecation notice in torch 2.13)
        warnings.simplefilter("ignore", FutureWarning)
        return DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
