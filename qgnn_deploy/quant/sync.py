"""Cross-process reduction of observer statistics (data-parallel training).

Why: under DDP every rank observes a different mini-batch, so EMA ranges would drift apart and each rank would
fold to a different integer model.  Observers call these helpers on the *batch* statistics before updating
their EMA; with a process group installed the batch range becomes the all-rank range (min of minima, max of
maxima), so every rank applies the same update and holds bit-identical quantizer buffers.  Without one they
are the identity (single process: no cost, no behaviour change).
"""

from __future__ import annotations

import torch
from torch import Tensor

_GROUP: list = []  # [process group] while data-parallel training is active


def install(group) -> None:
    """Route observer reductions through ``group`` (``None`` = the default group)."""
    _GROUP[:] = [group]


def uninstall() -> None:
    _GROUP.clear()


def active() -> bool:
    return bool(_GROUP)


def _all_reduce(t: Tensor, op) -> Tensor:
    import torch.distributed as dist

    dist.all_reduce(t, op=op, group=_GROUP[0])
    return t


def reduce_min(t: Tensor) -> Tensor:
    """Element-wise minimum over ranks (a new tensor; the input is untouched)."""
    if not _GROUP:
        return t
    import torch.distributed as dist

    return _all_reduce(t.detach().clone(), dist.ReduceOp.MIN)


def reduce_max(t: Tensor) -> Tensor:
    """Element-wise maximum over ranks (a new tensor; the input is untouched)."""
    if not _GROUP:
        return t
    import torch.distributed as dist

    return _all_reduce(t.detach().clone(), dist.ReduceOp.MAX)


def reduce_range(lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    """``(min over ranks of lo, max over ranks of hi)`` in one collective (``hi`` negated into a MIN)."""
    if not _GROUP:
        return lo, hi
    both = reduce_min(torch.stack([lo.detach().reshape(()), -hi.detach().reshape(())]))
    return both[0], -both[1]
