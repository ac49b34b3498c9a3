"""Sanity of a checkpoint's numbers before anything trains on, folds or exports them.

A NaN bias or a 1e30 weight loads fine and then either crashes deep inside the fold (an OverflowError
from a fixed-point multiplier, a NaN zero point) or, worse, folds into an integer graph that agrees
with nothing.  Every float tensor of a state dict must be finite and within ``MAX_ABS_VALUE``: float32
represents every integer only up to 2**24, so beyond it the fake-quant arithmetic (and the integer
accumulators the fold derives from it) cannot be reproduced exactly.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from qgnn_deploy.errors import QgnnError

MAX_ABS_VALUE = float(2**24)


def check_state_values(state: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise a one-line QgnnError naming the first non-finite or out-of-range float tensor in ``state``."""
    for name, t in state.items():
        if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.numel() == 0:
            continue
        finite = torch.isfinite(t)
        if not bool(finite.all()):
            bad = t[~finite].reshape(-1)[0].item()
            raise QgnnError(
                f"{source}: {name} holds {bad} (NaN or infinite values); the checkpoint is corrupt "
                "and cannot be trained on or exported"
            )
        peak = float(t.detach().abs().max())
        if peak > MAX_ABS_VALUE:
            raise QgnnError(
                f"{source}: {name} holds a value of magnitude {peak:.3g}, beyond 2^24 where float32 "
                "fake-quant arithmetic stops being exact (the integer graph would overflow or disagree); "
                "the checkpoint is corrupt"
            )
