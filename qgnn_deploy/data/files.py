"""A user's own graph: ``file:graph.pt`` (PyG ``Data`` or a list of them) or ``file:graph.npz`` (plain arrays).

* ``.pt`` is read with ``torch.load(weights_only=True)`` and only PyG's data
  classes allow-listed (``Data`` and the storage/attribute classes it pickles as):
  a file holding anything else is refused, never unpickled.
* ``.npz`` is read with ``allow_pickle=False``: ``x`` [N, F] float, ``edge_index``
  [2, E] int, ``y`` ([N] labels, or floats for regression), optional
  ``train_mask`` / ``val_mask`` / ``test_mask``; with a ``batch`` [N] vector it is a
  set of graphs and ``y`` holds one target per graph.

Integer targets are classes, float targets are regression (MAE).  Without masks
the split is random with ``split_seed`` (recorded in the checkpoint).
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch_geometric.data import Data

from qgnn_deploy.data.datasets import GraphDataset
from qgnn_deploy.data.splits import GRAPH_FRACTIONS, NODE_FRACTIONS, random_graph_splits, random_node_masks
from qgnn_deploy.errors import QgnnError

MASKS = ("train_mask", "val_mask", "test_mask")


def pyg_data_classes() -> list[type]:
    """The classes a pickled ``torch_geometric.data.Data`` refers to: the only globals a .pt graph may name."""
    from torch_geometric.data.data import DataEdgeAttr, DataTensorAttr
    from torch_geometric.data.storage import GlobalStorage

    return [Data, DataEdgeAttr, DataTensorAttr, GlobalStorage]


def allow_pyg_data_classes() -> Any:
    """``safe_globals`` for PyG's data classes that are not allow-listed yet.

    Only the missing ones: leaving the context removes what it added, and PyG
    allow-lists ``Data`` itself on import (its own dataset loads rely on that).
    """
    present = set(torch.serialization.get_safe_globals())
    return torch.serialization.safe_globals([c for c in pyg_data_classes() if c not in present])


def resolve_file(name: str, data_root: str | Path | None = None, source: dict[str, Any] | None = None) -> Path:
    """Find the graph file: as given, where the checkpoint recorded it, or by name under ``data_root``."""
    given = Path(name).expanduser()
    candidates = [given]
    if source and source.get("path"):
        candidates.append(Path(source["path"]))
    if data_root:
        candidates += [Path(data_root) / given, Path(data_root) / given.name]
    for c in candidates:
        if c.is_file():
            return c.resolve()
    raise QgnnError(
        f"graph file {name} not found (looked at {', '.join(str(c) for c in candidates)}); pass "
        f"--data-root DIR holding it, or --sample-input graph.npz when exporting"
    )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_file(
    name: str, data_root: str | Path | None = None, split_seed: int = 0, source: dict[str, Any] | None = None
) -> GraphDataset:
    path = resolve_file(name, data_root, source)
    if path.suffix.lower() == ".npz":
        ds = _from_arrays(path, _read_npz(path), split_seed)
    else:
        ds = _from_pt(path, _read_pt(path), split_seed)
    ds.source = {"path": str(path), "sha256": _sha256(path)}
    return ds


def wrap_data(data: Data | list[Data], name: str = "my-graph", split_seed: int = 0) -> GraphDataset:
    """A ``Data`` (node task) or list of ``Data`` (graph task) already in memory, checked like a ``file:`` graph.

    Its checkpoints cannot be reloaded by spec: fold them with ``fold_checkpoint(path, dataset=ds)`` in Python,
    or save the graph (``torch.save`` / ``.npz``) and train on ``file:`` to use the CLI end to end.
    """
    ds = _from_pt(Path(name), data, split_seed)
    ds.name = ds.spec = name
    return ds


# --------------------------------------------------------------------------------------------- readers
def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as exc:  # noqa: BLE001 - BadZipFile, object arrays (pickles) refused, OSError
        raise QgnnError(
            f"{path} is not a readable .npz graph ({type(exc).__name__}; object arrays are refused)"
        ) from None


def _read_pt(path: Path) -> Any:
    try:
        with allow_pyg_data_classes():
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise QgnnError(
            f"{path}: the weights-only loader refused it (it names classes other than PyG's Data; "
            "such files are never unpickled) - save a torch_geometric Data or a list of Data"
        ) from None
    except Exception as exc:  # noqa: BLE001 - zip/EOF errors of a corrupt file
        raise QgnnError(f"{path} is not a readable torch file ({type(exc).__name__})") from None


# --------------------------------------------------------------------------------------------- checks
def _float_x(path: Path, x: Any, num_nodes: int | None = None) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if t.dim() == 1:
        t = t.view(-1, 1)
    if t.dim() != 2 or t.shape[0] == 0 or not (t.is_floating_point() or not t.dtype.is_complex):
        raise QgnnError(f"{path}: x must be a non-empty [num_nodes, num_features] array, got shape {list(t.shape)}")
    if num_nodes is not None and t.shape[0] != num_nodes:
        raise QgnnError(f"{path}: x has {t.shape[0]} rows for {num_nodes} nodes")
    t = t.float()
    if not torch.isfinite(t).all():
        raise QgnnError(f"{path}: x holds NaN or infinite values")
    return t


def _edge_index(path: Path, ei: Any, num_nodes: int) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(ei) if not isinstance(ei, torch.Tensor) else ei)
    if t.dim() != 2 or t.shape[0] != 2 or t.is_floating_point() or t.dtype == torch.bool:
        raise QgnnError(f"{path}: edge_index must be an integer [2, num_edges] array, got {t.dtype} {list(t.shape)}")
    t = t.long()
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_nodes):
        raise QgnnError(
            f"{path}: edge_index refers to node {int(t.max()) if int(t.min()) >= 0 else int(t.min())} "
            f"outside 0..{num_nodes - 1}"
        )
    return t


def _targets(path: Path, y: Any, count: int, what: str) -> tuple[torch.Tensor, bool]:
    """(targets, regression?) with one row per node/graph; integer = classes, float = regression."""
    if y is None:
        raise QgnnError(f"{path}: no targets y")
    t = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y)
    if t.dim() == 0:
        t = t.view(1)
    if t.shape[0] != count:
        raise QgnnError(f"{path}: y has {t.shape[0]} entries for {count} {what}")
    if t.is_floating_point():
        if not torch.isfinite(t).all():
            raise QgnnError(f"{path}: y holds NaN or infinite values")
        return t.float().view(count, -1), True
    if t.dtype == torch.bool or t.dim() != 1 or (t.numel() and int(t.min()) < 0):
        raise QgnnError(f"{path}: class labels y must be non-negative integers, one per {what[:-1]}")
    return t.long(), False


def _node_dataset(
    path: Path,
    x: torch.Tensor,
    ei: torch.Tensor,
    y: torch.Tensor,
    regression: bool,
    masks: dict[str, Any],
    split_seed: int,
) -> GraphDataset:
    n = x.shape[0]
    if all(masks.get(m) is not None for m in MASKS):
        fixed = {
            m: torch.as_tensor(np.asarray(masks[m]) if not isinstance(masks[m], torch.Tensor) else masks[m])
            .bool()
            .view(-1)
            for m in MASKS
        }
        if any(v.numel() != n for v in fixed.values()):
            raise QgnnError(f"{path}: every mask needs one entry per node ({n})")
        split: dict[str, Any] = {"kind": "file"}
    else:
        fixed = random_node_masks(n, split_seed)
        split = {"kind": "random", "seed": split_seed, "fractions": list(NODE_FRACTIONS)}
    data = Data(x=x, edge_index=ei, y=y, **fixed)
    classes = int(y.shape[1]) if regression else int(y.max()) + 1
    ds = GraphDataset(f"file:{path.name}", "node", int(x.shape[1]), classes, data=data, regression=regression)
    ds.split = split
    return ds


def _graph_dataset(path: Path, graphs: list[Data], regression: bool, split_seed: int) -> GraphDataset:
    dims = {int(g.x.shape[1]) for g in graphs}
    if len(dims) != 1:
        raise QgnnError(f"{path}: graphs have different feature widths {sorted(dims)}")
    classes = int(graphs[0].y.numel()) if regression else max(int(g.y.max()) for g in graphs) + 1
    ds = GraphDataset(
        f"file:{path.name}",
        "graph",
        dims.pop(),
        classes,
        graphs=graphs,
        splits=random_graph_splits(len(graphs), split_seed),
        regression=regression,
    )
    ds.split = {"kind": "random", "seed": split_seed, "fractions": list(GRAPH_FRACTIONS)}
    return ds


# --------------------------------------------------------------------------------------------- builders
def _from_arrays(path: Path, arrays: dict[str, np.ndarray], split_seed: int) -> GraphDataset:
    missing = [k for k in ("x", "edge_index", "y") if k not in arrays]
    if missing:
        raise QgnnError(
            f"{path}: missing array(s) {', '.join(missing)} (needs x, edge_index, y; optional "
            f"train_mask, val_mask, test_mask, batch)"
        )
    x = _float_x(path, arrays["x"])
    ei = _edge_index(path, arrays["edge_index"], x.shape[0])
    if "batch" not in arrays:
        y, regression = _targets(path, arrays["y"], x.shape[0], "nodes")
        return _node_dataset(path, x, ei, y, regression, arrays, split_seed)
    batch = torch.as_tensor(arrays["batch"]).long().view(-1)
    if batch.numel() != x.shape[0] or (batch.numel() and (int(batch.min()) < 0 or bool((batch.diff() < 0).any()))):
        raise QgnnError(f"{path}: batch must give each node's graph id, sorted, one entry per node")
    num_graphs = int(batch.max()) + 1 if batch.numel() else 0
    y, regression = _targets(path, arrays["y"], num_graphs, "graphs")
    if bool((batch[ei[0]] != batch[ei[1]]).any()):
        raise QgnnError(f"{path}: an edge joins two different graphs of the batch")
    starts = torch.zeros(num_graphs + 1, dtype=torch.long)
    starts[1:] = torch.cumsum(torch.bincount(batch, minlength=num_graphs), 0)
    graphs = []
    for gi in range(num_graphs):
        keep = batch[ei[0]] == gi
        graphs.append(Data(x=x[starts[gi] : starts[gi + 1]], edge_index=ei[:, keep] - starts[gi], y=y[gi : gi + 1]))
    return _graph_dataset(path, graphs, regression, split_seed)


def _from_pt(path: Path, obj: Any, split_seed: int) -> GraphDataset:
    if isinstance(obj, Data):
        n = int(obj.num_nodes)
        x = _float_x(path, obj.x, n) if obj.x is not None else None
        if x is None:
            raise QgnnError(f"{path}: the Data has no node features x")
        ei = _edge_index(path, obj.edge_index, n)
        y, regression = _targets(path, obj.y, n, "nodes")
        return _node_dataset(path, x, ei, y, regression, {m: getattr(obj, m, None) for m in MASKS}, split_seed)
    if isinstance(obj, (list, tuple)) and obj and all(isinstance(g, Data) for g in obj):
        graphs, kinds = [], set()
        for i, g in enumerate(obj):
            if g.x is None:
                raise QgnnError(f"{path}: graph {i} has no node features x")
            x = _float_x(path, g.x)
            y, regression = _targets(path, g.y, 1, "graphs")
            kinds.add(regression)
            graphs.append(Data(x=x, edge_index=_edge_index(path, g.edge_index, x.shape[0]), y=y))
        if len(kinds) != 1:
            raise QgnnError(f"{path}: graphs mix integer and float targets")
        return _graph_dataset(path, graphs, kinds.pop(), split_seed)
    raise QgnnError(f"{path}: expected a torch_geometric Data or a non-empty list of Data, got {type(obj).__name__}")
