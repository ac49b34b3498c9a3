"""Seeded random splits for datasets without a standard one (the seed is recorded in the checkpoint)."""

from __future__ import annotations

import torch

NODE_FRACTIONS = (0.6, 0.2, 0.2)
GRAPH_FRACTIONS = (0.8, 0.1, 0.1)


def _cut(n: int, fractions: tuple[float, float, float], seed: int) -> dict[str, torch.Tensor]:
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    a = int(round(fractions[0] * n))
    b = a + int(round(fractions[1] * n))
    return {"train": perm[:a], "val": perm[a:b], "test": perm[b:]}


def random_graph_splits(
    num_graphs: int, seed: int, fractions: tuple[float, float, float] = GRAPH_FRACTIONS
) -> dict[str, list[int]]:
    """Graph indices per split, e.g. 80/10/10, reproducible from ``seed``."""
    return {k: sorted(v.tolist()) for k, v in _cut(num_graphs, fractions, seed).items()}


def random_node_masks(
    num_nodes: int, seed: int, fractions: tuple[float, float, float] = NODE_FRACTIONS
) -> dict[str, torch.Tensor]:
    """``train_mask`` / ``val_mask`` / ``test_mask`` over ``num_nodes``, e.g. 60/20/20, reproducible from ``seed``."""
    masks = {}
    for name, idx in _cut(num_nodes, fractions, seed).items():
        m = torch.zeros(num_nodes, dtype=torch.bool)
        m[idx] = True
        masks[f"{name}_mask"] = m
    return masks
