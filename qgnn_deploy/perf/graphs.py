"""Synthetic graphs for the size series: uniform random edges (average in-degree ``degree``) plus self-loops."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def random_graph(num_nodes: int, features: int, degree: float = 10.0, seed: int = 0) -> dict[str, np.ndarray]:
    """``x`` float32 [N, F] (non-negative, 10% dense like bag-of-words) and ``edge_index`` int64 [2, E].

    ``E = round(degree * N)`` random directed edges plus one self-loop per node, so
    the in-degree is Poisson-like with mean ``degree + 1``.
    """
    rng = np.random.default_rng(seed)
    e = int(round(degree * num_nodes))
    src = rng.integers(0, num_nodes, e, dtype=np.int64)
    dst = rng.integers(0, num_nodes, e, dtype=np.int64)
    loops = np.arange(num_nodes, dtype=np.int64)
    ei = np.stack([np.concatenate([src, loops]), np.concatenate([dst, loops])])
    x = rng.random((num_nodes, features), dtype=np.float32)
    x *= rng.random((num_nodes, features), dtype=np.float32) < 0.1
    return {"x": x, "edge_index": ei}


def save_graph(feeds: dict[str, np.ndarray], path: Path) -> Path:
    """Uncompressed ``.npz`` (what ``qgnn_bench.py --input`` and the workers read)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        np.savez(fh, **feeds)
    return path
