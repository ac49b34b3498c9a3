"""PyG's ``NeighborSampler`` with a pure-torch homogeneous sampling kernel when pyg-lib / torch-sparse are absent.

Why: ``NeighborLoader`` needs a compiled sampling kernel, and neither pyg-lib nor torch-sparse ships a wheel
for this torch (2.13, CPU).  This subclass keeps PyG's loader, CSC conversion and batch filtering and only
replaces ``_sample`` for the homogeneous, directional, non-disjoint case, uniformly without replacement:
each frontier node keeps ``min(k, in-degree)`` of its incoming edges chosen by random keys (one sort per
hop, no Python loop over nodes).  With a compiled kernel installed it defers to PyG unchanged.
"""

from __future__ import annotations

import torch
import torch_geometric.typing
from torch import Tensor
from torch_geometric.sampler import NeighborSampler, SamplerOutput


def has_compiled_sampler() -> bool:
    return bool(torch_geometric.typing.WITH_PYG_LIB or torch_geometric.typing.WITH_TORCH_SPARSE)


def sample_hop(colptr: Tensor, frontier: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """For each global node in ``frontier``: up to ``k`` CSC positions of its incoming edges.

    Returns ``(positions into row[], index into frontier of the destination)``; ``k < 0`` keeps all edges.
    """
    start = colptr[frontier]
    deg = colptr[frontier + 1] - start
    total = int(deg.sum())
    if total == 0:
        empty = torch.empty(0, dtype=torch.long)
        return empty, empty
    owner = torch.repeat_interleave(torch.arange(frontier.numel()), deg)
    seg_start = torch.cumsum(deg, 0) - deg
    offset = torch.arange(total) - seg_start[owner]
    pos = start[owner] + offset
    if k < 0:
        return pos, owner
    # one sort: owner index plus a uniform key in [0, 0.5) groups by owner, randomly ordered inside a group (the
    # half-width margin keeps owner + key below owner + 1 after float64 rounding)
    order = torch.argsort(owner.to(torch.float64) + 0.5 * torch.rand(total, dtype=torch.float64))
    rank = torch.arange(total) - seg_start[owner[order]]
    keep = order[rank < k]
    return pos[keep], owner[keep]


class TorchNeighborSampler(NeighborSampler):
    """``NeighborSampler`` whose homogeneous ``_sample`` runs in plain torch if no compiled kernel is present."""

    def _sample(self, seed: Tensor, seed_time: Tensor | None = None, **kwargs) -> SamplerOutput:  # type: ignore[override]
        if has_compiled_sampler() or self.is_hetero or self.disjoint or seed_time is not None:
            return super()._sample(seed, seed_time, **kwargs)
        colptr, row = self.colptr.to(torch.long), self.row.to(torch.long)
        num_nodes = colptr.numel() - 1
        local = torch.full((num_nodes,), -1, dtype=torch.long)
        nodes = [seed.to(torch.long)]
        local[nodes[0]] = torch.arange(nodes[0].numel())
        count = nodes[0].numel()
        frontier_lo, frontier_hi = 0, count
        rows, cols, edges = [], [], []
        all_nodes = nodes[0]
        for k in self.num_neighbors.get_mapped_values():
            frontier = all_nodes[frontier_lo:frontier_hi]
            pos, owner = sample_hop(colptr, frontier, int(k))
            src = row[pos]
            fresh = torch.unique(src[local[src] < 0])
            local[fresh] = torch.arange(count, count + fresh.numel())
            count += fresh.numel()
            nodes.append(fresh)
            all_nodes = torch.cat([all_nodes, fresh])
            rows.append(local[src])
            cols.append(owner + frontier_lo)
            edges.append(pos)
            frontier_lo, frontier_hi = frontier_hi, count
        cat = lambda xs: torch.cat(xs) if xs else torch.empty(0, dtype=torch.long)  # noqa: E731
        row_out, col_out = cat(rows), cat(cols)
        if self.sample_direction == "backward":
            row_out, col_out = col_out, row_out
        return SamplerOutput(
            node=all_nodes,
            row=row_out,
            col=col_out,
            edge=cat(edges),
            batch=None,
            num_sampled_nodes=[int(n.numel()) for n in nodes],
            num_sampled_edges=[int(e.numel()) for e in edges],
        )
