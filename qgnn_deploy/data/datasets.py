"""The dataset container, plus deterministic embedded datasets that need no network.

Every other dataset comes through PyG's own loaders (``data/pyg_loaders.py``) or a
user's file (``data/files.py``), named by a spec string (``data/specs.py``):

* ``cora`` / ``planetoid:NAME``: ``torch_geometric.datasets.Planetoid`` (standard public split).  The
  root is ``--data-root``, else ``$QGNN_DATA_ROOT``, else ``~/.cache/qgnn-deploy/datasets``.
  If the root lacks the raw files and a local read-only copy exists
  (``$QGNN_SHARED_DATASETS`` or ``<repo>/../shared/datasets``), it is copied in
  first; otherwise PyG downloads as usual.
* ``synthetic``: a contextual stochastic block model generated in-process
  (the embedded default of ``qgnn demo``).
* ``synthetic-graphs``: small graph-classification set (ring / star / dense
  families) for GIN with sum pooling.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch_geometric.data import Data

from qgnn_deploy.errors import QgnnError

# the spec-free names; any spec of data/specs.py is accepted too (e.g. planetoid:CiteSeer, tu:PROTEINS, file:g.npz)
DATASETS = ("cora", "synthetic", "synthetic-graphs")


@dataclass
class GraphDataset:
    """What training needs: node-level data (one graph) or a list of graphs."""

    name: str
    task: str  # "node" | "graph"
    num_features: int
    num_classes: int
    data: Data | None = None
    graphs: list[Data] = field(default_factory=list)
    splits: dict[str, list[int]] = field(default_factory=dict)  # graph task: indices per split
    spec: str = ""  # the dataset spec that reloads it (data/specs.py); recorded in checkpoints
    regression: bool = False  # float targets scored by MAE (num_classes = output width)
    split: dict[str, Any] = field(default_factory=lambda: {"kind": "standard"})  # how splits were made (+ seed)
    source: dict[str, Any] = field(default_factory=dict)  # file: datasets: absolute path and sha256

    def describe(self) -> dict[str, Any]:
        """JSON-able summary recorded in checkpoints (name, task, sizes) so fold can rebuild the sample graph."""
        d: dict[str, Any] = {"name": self.name, "task": self.task, "num_features": self.num_features,
                             "num_classes": self.num_classes, "spec": self.spec or self.name,
                             "metric": "mae" if self.regression else "accuracy", "regression": self.regression,
                             "split": dict(self.split)}
        if self.source:
            d["source"] = dict(self.source)
        if self.data is not None:
            d.update(num_nodes=int(self.data.num_nodes), num_edges=int(self.data.edge_index.shape[1]))
        else:
            d.update(num_graphs=len(self.graphs))
        return d


def default_data_root() -> Path:
    """``$QGNN_DATA_ROOT``, else ``$QGNN_CACHE/datasets``, else ``~/.cache/qgnn-deploy/datasets``."""
    env = os.environ.get("QGNN_DATA_ROOT")
    if env:
        return Path(env)
    return Path(os.environ.get("QGNN_CACHE", Path.home() / ".cache" / "qgnn-deploy")) / "datasets"


PLANETOID_FILES = [f"ind.cora.{s}" for s in ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")]


SYNTHETIC_DEGREE = 9.5  # mean degree of the classic generator: 8 within-class + 1.5 across classes
SYNTHETIC_HOMOPHILY = 8.0 / 9.5
DENSE_MAX_NODES = 20000  # above this (or with an explicit degree) edges are sampled sparsely: O(E) memory


def make_synthetic_nodes(num_nodes: int = 600, num_classes: int = 4, num_features: int = 32,
                         seed: int = 0, *, nodes: int | None = None, degree: float | None = None) -> GraphDataset:
    """Contextual SBM: dense within-class edges, class-dependent Gaussian features.

    ``nodes`` (alias of ``num_nodes``, the ``synthetic:nodes=...`` option) and ``degree`` (mean degree) scale
    it: without ``degree`` and up to ``DENSE_MAX_NODES`` nodes the classic all-pairs generator runs (unchanged
    graphs); otherwise ``N * degree / 2`` undirected edges are drawn directly with the same homophily, so
    ``nodes=200000,degree=15`` takes seconds and O(E) memory.
    """
    if nodes is not None:
        num_nodes = int(nodes)
    if num_nodes < num_classes or num_classes < 2:
        raise QgnnError(f"synthetic graph needs at least {max(num_classes, 2)} nodes and 2 classes")
    if degree is not None and not degree > 0:
        raise QgnnError(f"synthetic graph degree must be positive, got {degree}")
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(num_nodes) % num_classes
    y = y[torch.randperm(num_nodes, generator=g)]
    if degree is None and num_nodes <= DENSE_MAX_NODES:
        p_in, p_out = 8.0 / num_nodes * num_classes, 1.5 / num_nodes * num_classes
        same = y[:, None] == y[None, :]
        prob = torch.where(same, torch.tensor(p_in), torch.tensor(p_out / (num_classes - 1)))
        adj = torch.rand(num_nodes, num_nodes, generator=g) < prob
        adj = torch.triu(adj, diagonal=1)
        src, dst = adj.nonzero(as_tuple=True)
        edge_index = torch.cat([torch.stack([src, dst]), torch.stack([dst, src])], dim=1)
    else:
        edge_index = _sparse_sbm_edges(y, num_classes, SYNTHETIC_DEGREE if degree is None else float(degree), g)
    means = torch.randn(num_classes, num_features, generator=g)
    x = means[y] * 0.6 + torch.randn(num_nodes, num_features, generator=g)
    perm = torch.randperm(num_nodes, generator=g)
    n_train, n_val = int(0.3 * num_nodes), int(0.2 * num_nodes)
    masks = {}
    for name, idx in (("train", perm[:n_train]), ("val", perm[n_train:n_train + n_val]),
                      ("test", perm[n_train + n_val:])):
        m = torch.zeros(num_nodes, dtype=torch.bool)
        m[idx] = True
        masks[name] = m
    data = Data(x=x, edge_index=edge_index, y=y, train_mask=masks["train"], val_mask=masks["val"],
                test_mask=masks["test"])
    return GraphDataset("synthetic", "node", num_features, num_classes, data=data)


def _sparse_sbm_edges(y: Tensor, num_classes: int, degree: float, g: torch.Generator) -> Tensor:
    """``round(N * degree / 2)`` undirected edges: a uniform source, a partner of the same class with probability
    ``SYNTHETIC_HOMOPHILY`` else of a uniformly chosen other class; self loops and duplicates dropped."""
    from torch_geometric.utils import coalesce

    n = y.numel()
    m = max(1, int(round(n * degree / 2)))
    order = torch.argsort(y, stable=True)  # nodes grouped by class
    count = torch.bincount(y, minlength=num_classes)
    start = torch.cumsum(count, 0) - count
    src = torch.randint(n, (m,), generator=g)
    same = torch.rand(m, generator=g) < SYNTHETIC_HOMOPHILY
    shift = torch.randint(1, num_classes, (m,), generator=g)
    cls = torch.where(same, y[src], (y[src] + shift) % num_classes)
    pick = (torch.rand(m, generator=g) * count[cls]).long().clamp_max(count[cls] - 1)
    dst = order[start[cls] + pick]
    keep = src != dst
    src, dst = src[keep], dst[keep]
    edge_index = torch.cat([torch.stack([src, dst]), torch.stack([dst, src])], dim=1)
    return coalesce(edge_index, num_nodes=n)


def make_synthetic_graphs(num_graphs: int = 240, seed: int = 0) -> GraphDataset:
    """Three structural families (ring, star, dense random) to classify with GIN."""
    g = torch.Generator().manual_seed(seed)
    graphs = []
    for i in range(num_graphs):
        label = i % 3
        n = int(torch.randint(8, 20, (1,), generator=g))
        if label == 0:
            src = torch.arange(n)
            dst = (src + 1) % n
        elif label == 1:
            src = torch.zeros(n - 1, dtype=torch.long)
            dst = torch.arange(1, n)
        else:
            adj = torch.triu(torch.rand(n, n, generator=g) < 0.35, diagonal=1)
            src, dst = adj.nonzero(as_tuple=True)
        ei = torch.cat([torch.stack([src, dst]), torch.stack([dst, src])], dim=1)
        x = torch.ones(n, 4) + 0.1 * torch.randn(n, 4, generator=g)
        graphs.append(Data(x=x, edge_index=ei, y=torch.tensor([label])))
    perm = torch.randperm(num_graphs, generator=g).tolist()
    a, b = int(0.6 * num_graphs), int(0.8 * num_graphs)
    splits = {"train": perm[:a], "val": perm[a:b], "test": perm[b:]}
    return GraphDataset("synthetic-graphs", "graph", 4, 3, graphs=graphs, splits=splits)
