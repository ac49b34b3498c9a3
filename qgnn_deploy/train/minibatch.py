"""Mini-batch node-level QAT over ``torch_geometric.loader.NeighborLoader``.

What makes it correct for the QAT frameworks (the deployed integer model always runs on the full graph):

* every forward gets a ``QuantContext`` built from the FULL-graph in-degree of the batch nodes (``deg[n_id]``):
  GCN's ``deg^-1/2`` coefficients and GIN's sum use it (sampled neighbour sums rescaled by ``deg / sampled``),
  A2Q's learned per-node step / bit tables are looked up by that degree's bucket, Degree-Quant's protection
  probability is the full graph's degree CDF at the node;
* observers see each batch; MixQ's bit penalty and A2Q's memory penalty are evaluated per batch; LoRAP / GPF
  prompts act on the batch rows like any other layer;
* the loss is taken on the batch's seed nodes (the first ``batch_size`` rows).

Seed nodes are split DistributedSampler-style: each epoch the train nodes are permuted by ``seed + epoch``,
padded to a multiple of the world size and rank ``r`` takes every ``world``-th node from ``r``, so all ranks
run the same number of steps (needed by the collectives inside DDP and the observers).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor
from torch_geometric.data import Data

from qgnn_deploy.models.layers import in_degree
from qgnn_deploy.quant.fake import QuantContext
from qgnn_deploy.train.sampler import TorchNeighborSampler


def parse_num_neighbors(text: str) -> tuple[int, ...]:
    """``"10,10"`` -> ``(10, 10)``; ``-1`` keeps every neighbour of that hop."""
    try:
        values = tuple(int(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        raise ValueError(f"--num-neighbors takes comma-separated integers, got {text!r}") from None
    if not values or any(v == 0 or v < -1 for v in values):
        raise ValueError(f"--num-neighbors needs one positive count (or -1 = all) per hop, got {text!r}")
    return values


def rank_share(train_nodes: Tensor, seed: int, epoch: int, rank: int = 0, world_size: int = 1) -> Tensor:
    """This rank's seed nodes for ``epoch`` (shuffled, padded to equal size on every rank)."""
    g = torch.Generator().manual_seed(int(seed) * 100003 + int(epoch))
    perm = train_nodes[torch.randperm(train_nodes.numel(), generator=g)]
    pad = (-perm.numel()) % world_size
    if pad:
        perm = torch.cat([perm, perm[:pad]])
    return perm[rank::world_size]


@dataclass
class NodeBatches:
    """Builds the epoch's NeighborLoader over one rank's share of the train nodes."""

    data: Data
    batch_size: int
    num_neighbors: tuple[int, ...]
    seed: int = 0
    rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be positive, got {self.batch_size}")
        self.train_nodes = self.data.train_mask.nonzero().view(-1)
        self.degree = in_degree(self.data.edge_index, int(self.data.num_nodes), torch.float32).to(torch.long)
        with warnings.catch_warnings():  # PyG warns about the missing pyg-lib; TorchNeighborSampler covers it
            warnings.simplefilter("ignore")
            self.sampler = TorchNeighborSampler(self.data, num_neighbors=list(self.num_neighbors))

    def num_steps(self) -> int:
        share = -(-self.train_nodes.numel() // self.world_size)
        return -(-share // self.batch_size)

    def epoch(self, epoch: int) -> Iterator[Data]:
        from torch_geometric.loader import NeighborLoader

        seeds = rank_share(self.train_nodes, self.seed, epoch, self.rank, self.world_size)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loader = NeighborLoader(
                self.data,
                num_neighbors=list(self.num_neighbors),
                input_nodes=seeds,
                batch_size=self.batch_size,
                shuffle=False,
                neighbor_sampler=self.sampler,
            )
        yield from loader


def batch_context(framework, model, batch: Data, degree: Tensor) -> QuantContext:
    """The framework's training context for a sampled batch, from full-graph degrees indexed by global id."""
    return framework.context(
        model, batch.edge_index, int(batch.num_nodes), degree=degree[batch.n_id], population=degree
    )
