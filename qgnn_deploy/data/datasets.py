"""Datasets through PyG's loaders, plus deterministic embedded defaults that need no network.

* ``cora``: ``torch_geometric.datasets.Planetoid`` (standard public split).  The
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
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch_geometric.data import Data

from qgnn_deploy.errors import QgnnError

DATASETS = ("cora", "synthetic", "synthetic-graphs")
PLANETOID_FILES = [f"ind.cora.{s}" for s in ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")]


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

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "task": self.task, "num_features": self.num_features,
                             "num_classes": self.num_classes}
        if self.data is not None:
            d.update(num_nodes=int(self.data.num_nodes), num_edges=int(self.data.edge_index.shape[1]))
        else:
            d.update(num_graphs=len(self.graphs))
        return d


def default_data_root() -> Path:
    env = os.environ.get("QGNN_DATA_ROOT")
    if env:
        return Path(env)
    return Path(os.environ.get("QGNN_CACHE", Path.home() / ".cache" / "qgnn-deploy")) / "datasets"


def _shared_planetoid() -> Path | None:
    candidates = []
    if os.environ.get("QGNN_SHARED_DATASETS"):
        candidates.append(Path(os.environ["QGNN_SHARED_DATASETS"]) / "planetoid")
    repo = Path(__file__).resolve().parents[2]
    candidates += [repo.parent / "shared" / "datasets" / "planetoid", Path.cwd().parent / "shared" / "datasets" /
                   "planetoid"]
    for c in candidates:
        if all((c / "Cora" / "raw" / f).is_file() for f in PLANETOID_FILES):
            return c
    return None


def load_cora(data_root: str | Path | None = None) -> GraphDataset:
    from torch_geometric.datasets import Planetoid

    root = Path(data_root) if data_root else default_data_root()
    raw = root / "Cora" / "raw"
    if not all((raw / f).is_file() for f in PLANETOID_FILES):
        shared = _shared_planetoid()
        if shared is not None:
            raw.mkdir(parents=True, exist_ok=True)
            for f in PLANETOID_FILES:
                shutil.copyfile(shared / "Cora" / "raw" / f, raw / f)
    try:
        ds = Planetoid(str(root), "Cora")
    except Exception as exc:  # noqa: BLE001 - network or parse failure: one clear line
        raise QgnnError(f"could not load Cora under {root} ({type(exc).__name__}: {exc}); pass --data-root "
                        f"pointing at a folder with Cora/raw/ind.cora.* or allow PyG to download it") from None
    data = ds[0]
    return GraphDataset("cora", "node", ds.num_features, ds.num_classes, data=data)


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


def parse_synthetic_options(text: str) -> dict[str, Any]:
    """``"synthetic:nodes=200000,degree=15,seed=1"`` (or the part after the colon) -> builder kwargs.

    Keys: ``nodes`` (int >= 4), ``degree`` (mean degree, > 0), ``seed`` (int).  Bad text is one ``QgnnError``.
    """
    body = text.split(":", 1)[1] if text.startswith("synthetic:") else text
    kinds: dict[str, type] = {"nodes": int, "degree": float, "seed": int}
    out: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in body.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or key not in kinds:
            raise QgnnError(f"bad synthetic option {item!r}; use key=value with keys {', '.join(kinds)}")
        try:
            out[key] = kinds[key](value.strip())
        except ValueError:
            raise QgnnError(f"synthetic option {key} takes a number, got {value.strip()!r}") from None
    if out.get("nodes", 4) < 4:
        raise QgnnError(f"synthetic option nodes must be at least 4, got {out['nodes']}")
    if "degree" in out and not 0 < out["degree"] < out.get("nodes", 600):
        raise QgnnError(f"synthetic option degree must be positive and below the node count, got {out['degree']}")
    return out


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


def load_dataset(name: str, data_root: str | Path | None = None) -> GraphDataset:
    if name == "cora":
        return load_cora(data_root)
    if name == "synthetic":
        return make_synthetic_nodes()
    if name.startswith("synthetic:"):  # synthetic:nodes=200000,degree=15 (the name records the spec)
        ds = make_synthetic_nodes(**parse_synthetic_options(name))
        ds.name = name
        return ds
    if name == "synthetic-graphs":
        return make_synthetic_graphs()
    raise QgnnError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
