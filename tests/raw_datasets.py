"""Tiny datasets written in each loader's REAL raw format, for the real PyG / ogb loaders to read.

Each builder writes under a data root exactly where ``qgnn_deploy.data.pyg_loaders``
points the loader (see its table) and returns that root.  The graphs are small and
learnable (class-dependent features), so a few epochs of training give scores that
the fold/export stages must reproduce.
"""

from __future__ import annotations

import gzip
import pickle
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# --------------------------------------------------------------------------------------------- Planetoid
def write_planetoid(
    root: Path,
    name: str = "CiteSeer",
    classes: int = 3,
    features: int = 12,
    train: int = 30,
    labelled: int = 560,
    test_span: int = 100,
    gaps: int = 5,
) -> Path:
    """``ind.<name>.{x,tx,allx,y,ty,ally,graph,test.index}``: scipy CSR features, one-hot labels, adjacency dict.

    As in the real CiteSeer, a few ids inside the test range are missing from ``test.index``
    (isolated nodes), which PyG pads with zero rows.
    """
    import scipy.sparse as sp

    rng = _rng(1)
    n = labelled + test_span
    labels = rng.integers(0, classes, n)
    centers = rng.normal(size=(classes, features)) * 2.0
    feats = (centers[labels] + rng.normal(size=(n, features)) > 0.8).astype(np.float32)
    one_hot = np.eye(classes, dtype=np.int64)[labels]
    test_ids = np.arange(labelled, n)
    missing = set(rng.choice(test_ids[1:-1], gaps, replace=False).tolist())
    test_index = np.array([i for i in test_ids if i not in missing])
    rng.shuffle(test_index)  # the real file is not sorted
    graph: dict[int, list[int]] = defaultdict(list)
    for i in range(n):
        same = np.flatnonzero(labels == labels[i])
        for j in rng.choice(same, 3, replace=False):
            if j != i and i not in missing and j not in missing:
                graph[i].append(int(j))
                graph[int(j)].append(i)
    for i in range(n):
        graph[i] = graph[i]  # every node has an entry, as in the real adjacency dicts
    raw = root / name / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    prefix = name.lower()
    items = {
        "x": sp.csr_matrix(feats[:train]),
        "y": one_hot[:train],
        "allx": sp.csr_matrix(feats[:labelled]),
        "ally": one_hot[:labelled],
        "tx": sp.csr_matrix(feats[test_index]),
        "ty": one_hot[test_index],
        "graph": graph,
    }
    for key, value in items.items():
        with open(raw / f"ind.{prefix}.{key}", "wb") as fh:
            pickle.dump(value, fh, protocol=2)
    (raw / f"ind.{prefix}.test.index").write_text("\n".join(str(i) for i in test_index) + "\n")
    return root


# --------------------------------------------------------------------------------------------- TU
def write_tu(root: Path, name: str = "TOYRINGS", graphs: int = 40, with_labels: bool = True) -> Path:
    """``NAME_A.txt`` (1-based "i, j" per line), ``NAME_graph_indicator.txt``, ``NAME_graph_labels.txt``,
    ``NAME_node_labels.txt`` and ``NAME_node_attributes.txt``: rings (label 1) against stars (label 2)."""
    rng = _rng(2)
    edges, indicator, glabels, nlabels, attrs = [], [], [], [], []
    offset = 0
    for g in range(graphs):
        label = g % 2
        n = int(rng.integers(5, 10))
        pairs = [(i, (i + 1) % n) for i in range(n)] if label == 0 else [(0, i) for i in range(1, n)]
        for a, b in pairs:
            edges += [(offset + a + 1, offset + b + 1), (offset + b + 1, offset + a + 1)]
        indicator += [g + 1] * n
        glabels.append(label + 1)
        nlabels += [int(rng.integers(0, 3)) for _ in range(n)]
        attrs += [(float(rng.normal()), float(rng.normal())) for _ in range(n)]
        offset += n
    raw = root / "TUDataset" / name / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    (raw / f"{name}_A.txt").write_text("".join(f"{a}, {b}\n" for a, b in edges))
    (raw / f"{name}_graph_indicator.txt").write_text("".join(f"{g}\n" for g in indicator))
    (raw / f"{name}_graph_labels.txt").write_text("".join(f"{y}\n" for y in glabels))
    if with_labels:
        (raw / f"{name}_node_labels.txt").write_text("".join(f"{v}\n" for v in nlabels))
        (raw / f"{name}_node_attributes.txt").write_text("".join(f"{a:.6f}, {b:.6f}\n" for a, b in attrs))
    return root


# --------------------------------------------------------------------------------------------- ZINC
def _molecule(rng: np.random.Generator) -> dict[str, torch.Tensor]:
    n = int(rng.integers(5, 12))
    atoms = torch.from_numpy(rng.integers(0, 4, n)).long()
    adj = torch.zeros(n, n, dtype=torch.long)
    for i in range(1, n):  # a random tree with bond types 1..3
        j = int(rng.integers(0, i))
        adj[i, j] = adj[j, i] = int(rng.integers(1, 4))
    target = 0.3 * float((atoms == 1).sum()) - 0.2 * float((atoms == 2).sum())  # learnable from atom counts
    return {"atom_type": atoms, "logP_SA_cycle_normalized": torch.tensor([target]), "bond_type": adj}


def write_zinc(root: Path, sizes: tuple[int, int, int] = (60, 20, 20)) -> Path:
    """``ZINC/raw/{train,val,test}.pickle`` (lists of molecule dicts of tensors) and the subset's ``.index`` files."""
    rng = _rng(3)
    raw = root / "ZINC" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for split, size in zip(("train", "val", "test"), sizes):
        mols = [_molecule(rng) for _ in range(size + 3)]  # the subset index selects `size` of them
        with open(raw / f"{split}.pickle", "wb") as fh:
            pickle.dump(mols, fh)
        chosen = sorted(rng.choice(len(mols), size, replace=False).tolist())
        (raw / f"{split}.index").write_text(",".join(str(i) for i in chosen) + "\n")
    return root


# --------------------------------------------------------------------------------------------- GNNBenchmark
def write_gnnbenchmark(root: Path, name: str = "MNIST", sizes: tuple[int, int, int] = (30, 10, 10)) -> Path:
    """``GNNBenchmark/NAME/raw/NAME_v2.pt``: (train, val, test) lists of dicts with x, edge_index, edge_attr, y, pos."""
    rng = _rng(4)
    channels = 1 if name == "MNIST" else 3
    splits = []
    for size in sizes:
        items = []
        for k in range(size):
            label = k % 2
            n = int(rng.integers(6, 12))
            pos = torch.from_numpy(rng.random((n, 2))).float()
            x = torch.from_numpy(rng.random((n, channels)) * 0.2 + 0.8 * label).float()
            src = torch.arange(n).repeat_interleave(2)
            dst = torch.stack([(torch.arange(n) + 1) % n, (torch.arange(n) + 2) % n], 1).view(-1)
            items.append(
                {
                    "x": x,
                    "edge_index": torch.stack([src, dst]),
                    "edge_attr": torch.rand(2 * n, 1),
                    "y": torch.tensor([label]),
                    "pos": pos,
                }
            )
        splits.append(items)
    raw = root / "GNNBenchmark" / name / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    torch.save(tuple(splits), raw / f"{name}_v2.pt")
    return root


# --------------------------------------------------------------------------------------------- OGB
def _csv_gz(path: Path, rows: np.ndarray, fmt: str) -> None:
    rows = rows.reshape(len(rows), -1)
    with gzip.open(path, "wt") as fh:
        for r in rows:
            fh.write(",".join(fmt % v for v in r) + "\n")


def write_ogbn_arxiv(root: Path, nodes: int = 300, features: int = 8, classes: int = 4) -> Path:
    """``ogb/ogbn_arxiv/``: ``RELEASE_v1.txt``, ``raw/*.csv.gz`` (edge, node-feat, node-label, node_year, counts)
    and ``split/time/{train,valid,test}.csv.gz``, as in ogb's arxiv.zip."""
    rng = _rng(5)
    labels = rng.integers(0, classes, nodes)
    centers = rng.normal(size=(classes, features))
    feats = centers[labels] + 0.8 * rng.normal(size=(nodes, features))
    src, dst = [], []
    for i in range(nodes):  # directed citations, mostly within a class
        for j in rng.choice(np.flatnonzero(labels == labels[i]), 2, replace=False):
            if j != i:
                src.append(i)
                dst.append(int(j))
    edges = np.stack([src, dst], 1)
    base = root / "ogb" / "ogbn_arxiv"
    (base / "raw").mkdir(parents=True, exist_ok=True)
    (base / "RELEASE_v1.txt").write_text("ogbn-arxiv test fixture\n")
    _csv_gz(base / "raw" / "edge.csv.gz", edges, "%d")
    _csv_gz(base / "raw" / "num-node-list.csv.gz", np.array([nodes]), "%d")
    _csv_gz(base / "raw" / "num-edge-list.csv.gz", np.array([len(edges)]), "%d")
    _csv_gz(base / "raw" / "node-feat.csv.gz", feats, "%.6f")
    _csv_gz(base / "raw" / "node-label.csv.gz", labels, "%d")
    _csv_gz(base / "raw" / "node_year.csv.gz", rng.integers(2000, 2020, nodes), "%d")
    perm = rng.permutation(nodes)
    a, b = int(0.6 * nodes), int(0.8 * nodes)
    (base / "split" / "time").mkdir(parents=True, exist_ok=True)
    for name, idx in (("train", perm[:a]), ("valid", perm[a:b]), ("test", perm[b:])):
        _csv_gz(base / "split" / "time" / f"{name}.csv.gz", np.sort(idx), "%d")
    return root
