"""One place that turns a dataset into model inputs and scores outputs: accuracy for classes, MAE for regression.

Fold parity, the export report's accuracy-by-stage and ``qgnn evaluate``'s
deployed column all score through here, so every dataset (node or graph,
classification or regression) is reported the same way.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def metric_name(ds: Any) -> str:
    """``"mae"`` for regression datasets, else ``"acc"`` (the suffix of the metrics' keys)."""
    return "mae" if getattr(ds, "regression", False) else "acc"


def dataset_feeds(ds: Any, split: str = "test") -> dict[str, np.ndarray]:
    """IR feeds for ``ds``: the whole graph (node tasks) or the ``split``'s graphs as one batch (graph tasks)."""
    if ds.task == "node":
        d = ds.data
        return {"x": d.x.numpy().astype(np.float32), "edge_index": d.edge_index.numpy().astype(np.int64)}
    from torch_geometric.data import Batch

    batch = Batch.from_data_list([ds.graphs[i] for i in ds.splits[split]])
    return {
        "x": batch.x.numpy().astype(np.float32),
        "edge_index": batch.edge_index.numpy().astype(np.int64),
        "batch": batch.batch.numpy().astype(np.int64),
    }


def split_targets(ds: Any, split: str = "test") -> tuple[np.ndarray, np.ndarray | None]:
    """(targets, row mask into the model output) of ``split``: node mask for node tasks, None for graph batches."""
    if ds.task == "node":
        mask = getattr(ds.data, f"{split}_mask").numpy().astype(bool)
        return ds.data.y.numpy()[mask], mask
    return np.concatenate([ds.graphs[i].y.numpy().reshape(1, -1) for i in ds.splits[split]]) if ds.splits[
        split
    ] else np.zeros((0, 1)), None


def score(output: np.ndarray, ds: Any, split: str = "test") -> float | None:
    """Accuracy (classification) or mean absolute error (regression) of ``output`` on ``split``.

    ``output`` is the model's output on :func:`dataset_feeds` ``(ds, split)`` (rows per node, or per graph of
    the split).  ``None`` when the split is empty.
    """
    y, mask = split_targets(ds, split)
    out = np.asarray(output)
    if mask is not None:
        out = out[mask]
    if y.shape[0] == 0:
        return None
    if getattr(ds, "regression", False):
        return float(
            np.abs(out.reshape(y.shape[0], -1).astype(np.float64) - y.reshape(y.shape[0], -1).astype(np.float64)).mean()
        )
    return float((out.argmax(-1) == y.reshape(-1)).mean())
