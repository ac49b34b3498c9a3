"""Datasets through PyG's own loaders (and ``ogb``'s PyG dataset), laid out under one data root.

Where each loader keeps its files under the root (``--data-root``, else ``$QGNN_DATA_ROOT``):

====================  =====================================================================
``planetoid:NAME``    ``ROOT/NAME/raw/ind.name.*``  (``Planetoid``; standard public split)
``tu:NAME``           ``ROOT/TUDataset/NAME/raw/NAME_A.txt`` ... (``TUDataset``; seeded split)
``zinc``              ``ROOT/ZINC/raw/{train,val,test}.{pickle,index}`` (``ZINC(subset=True)``)
``gnnbenchmark:NAME`` ``ROOT/GNNBenchmark/NAME/raw/NAME_v2.pt`` (``GNNBenchmarkDataset``)
``ogb:NAME``          ``ROOT/ogb/ogbn_arxiv/raw/*.csv.gz`` (``ogb``'s ``PygNodePropPredDataset``)
====================  =====================================================================

Missing files are downloaded by the loader where there is network; any failure
is one ``QgnnError`` line naming the folder the loader expected.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch_geometric.data import Data

from qgnn_deploy.data.datasets import GraphDataset, default_data_root
from qgnn_deploy.data.splits import random_graph_splits
from qgnn_deploy.errors import QgnnError

PLANETOID_SUFFIXES = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")
ZINC_ATOM_TYPES = 28  # atom-type vocabulary of the ZINC molecules (one-hot node features)
DEGREE_FEATURES = 64  # TU graphs without node features: one-hot in-degree, clipped at this many - 1
OGB_RELEASE = {"ogbn-arxiv": 1, "ogbn-products": 1}  # ogb's master.csv versions (RELEASE_v<N>.txt marker)


def _root(data_root: str | Path | None) -> Path:
    return Path(data_root) if data_root else default_data_root()


def _failed(what: str, where: Path, exc: Exception) -> QgnnError:
    first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    return QgnnError(
        f"could not load {what} under {where} ({type(exc).__name__}: {first}); pass --data-root "
        f"pointing at a folder holding its raw files, or allow PyG to download them"
    )


# --------------------------------------------------------------------------------------------- planetoid
def shared_planetoid(name: str) -> Path | None:
    """A local read-only copy of Planetoid's raw files ($QGNN_SHARED_DATASETS or ../shared/datasets)."""
    import os

    files = [f"ind.{name.lower()}.{s}" for s in PLANETOID_SUFFIXES]
    candidates = []
    if os.environ.get("QGNN_SHARED_DATASETS"):
        candidates.append(Path(os.environ["QGNN_SHARED_DATASETS"]) / "planetoid")
    repo = Path(__file__).resolve().parents[2]
    candidates += [
        repo.parent / "shared" / "datasets" / "planetoid",
        Path.cwd().parent / "shared" / "datasets" / "planetoid",
    ]
    for c in candidates:
        if all((c / name / "raw" / f).is_file() for f in files):
            return c
    return None


def load_planetoid(name: str, data_root: str | Path | None = None) -> GraphDataset:
    """Cora / CiteSeer / PubMed with the standard public split (20 per class, 500 val, 1000 test)."""
    from torch_geometric.datasets import Planetoid

    root = _root(data_root)
    raw = root / name / "raw"
    files = [f"ind.{name.lower()}.{s}" for s in PLANETOID_SUFFIXES]
    if not all((raw / f).is_file() for f in files):
        shared = shared_planetoid(name)
        if shared is not None:  # copy into the writable root: PyG writes processed/ next to raw/
            raw.mkdir(parents=True, exist_ok=True)
            for f in files:
                shutil.copyfile(shared / name / "raw" / f, raw / f)
    try:
        ds = Planetoid(str(root), name)
    except Exception as exc:  # noqa: BLE001 - network or parse failure: one clear line
        raise _failed(f"Planetoid {name}", raw, exc) from None
    return GraphDataset(f"planetoid:{name}", "node", ds.num_features, ds.num_classes, data=ds[0])


# --------------------------------------------------------------------------------------------- graph sets
def _degree_one_hot(data: Data) -> torch.Tensor:
    deg = torch.bincount(data.edge_index[1], minlength=int(data.num_nodes)).clamp(max=DEGREE_FEATURES - 1)
    return F.one_hot(deg, DEGREE_FEATURES).float()


def _graph_dataset(
    name: str, graphs: list[Data], splits: dict[str, list[int]], split: dict[str, Any], regression: bool
) -> GraphDataset:
    if not graphs:
        raise QgnnError(f"{name}: the loader returned no graphs")
    num_features = int(graphs[0].x.shape[1])
    if regression:
        num_classes = int(graphs[0].y.view(1, -1).shape[1])
    else:
        num_classes = int(max(int(g.y.max()) for g in graphs)) + 1
    ds = GraphDataset(name, "graph", num_features, num_classes, graphs=graphs, splits=splits, regression=regression)
    ds.split = split
    return ds


def load_tu(name: str, data_root: str | Path | None = None, split_seed: int = 0) -> GraphDataset:
    """A TUDataset (graph classification); node labels/attributes as features, else one-hot degree."""
    from torch_geometric.datasets import TUDataset

    root = _root(data_root) / "TUDataset"
    try:
        ds = TUDataset(str(root), name, use_node_attr=True)
    except Exception as exc:  # noqa: BLE001
        raise _failed(f"TUDataset {name}", root / name / "raw", exc) from None
    graphs = []
    for g in ds:
        x = g.x.float() if g.x is not None else _degree_one_hot(g)
        graphs.append(Data(x=x, edge_index=g.edge_index, y=g.y.view(-1)[:1].long()))
    splits = random_graph_splits(len(graphs), split_seed)
    return _graph_dataset(
        f"tu:{name}",
        graphs,
        splits,
        {"kind": "random", "seed": split_seed, "fractions": [0.8, 0.1, 0.1]},
        regression=False,
    )


def load_zinc(data_root: str | Path | None = None) -> GraphDataset:
    """ZINC subset (12k molecules): graph regression of constrained solubility, its standard split."""
    from torch_geometric.datasets import ZINC

    root = _root(data_root) / "ZINC"
    graphs: list[Data] = []
    splits: dict[str, list[int]] = {}
    try:
        for split in ("train", "val", "test"):
            part = ZINC(str(root), subset=True, split=split)
            start = len(graphs)
            for g in part:
                x = F.one_hot(g.x.view(-1).clamp(max=ZINC_ATOM_TYPES - 1), ZINC_ATOM_TYPES).float()
                graphs.append(Data(x=x, edge_index=g.edge_index, y=g.y.view(-1)[:1].float()))
            splits[split] = list(range(start, len(graphs)))
    except Exception as exc:  # noqa: BLE001
        raise _failed("ZINC", root / "raw", exc) from None
    return _graph_dataset("zinc", graphs, splits, {"kind": "standard"}, regression=True)


def load_gnnbenchmark(name: str, data_root: str | Path | None = None) -> GraphDataset:
    """MNIST / CIFAR10 superpixel graphs (graph classification), node features = intensity/colour + position."""
    from torch_geometric.datasets import GNNBenchmarkDataset

    root = _root(data_root) / "GNNBenchmark"
    graphs: list[Data] = []
    splits: dict[str, list[int]] = {}
    try:
        for split in ("train", "val", "test"):
            part = GNNBenchmarkDataset(str(root), name, split=split)
            start = len(graphs)
            for g in part:
                feats = [t.float().view(int(g.num_nodes), -1) for t in (g.x, getattr(g, "pos", None)) if t is not None]
                graphs.append(Data(x=torch.cat(feats, dim=1), edge_index=g.edge_index, y=g.y.view(-1)[:1].long()))
            splits[split] = list(range(start, len(graphs)))
    except Exception as exc:  # noqa: BLE001
        raise _failed(f"GNNBenchmarkDataset {name}", root / name / "raw", exc) from None
    return _graph_dataset(f"gnnbenchmark:{name}", graphs, splits, {"kind": "standard"}, regression=False)


# --------------------------------------------------------------------------------------------- ogb
def load_ogb(name: str, data_root: str | Path | None = None) -> GraphDataset:
    """An OGB node-property dataset through ``ogb``'s PyG dataset, with its standard split."""
    import os

    os.environ.setdefault("OUTDATED_IGNORE", "1")  # ogb otherwise asks PyPI for a newer version on import
    try:
        from ogb.nodeproppred import PygNodePropPredDataset
    except ImportError:
        raise QgnnError(
            f"ogb:{name} needs the 'ogb' package (pip install ogb==1.3.6), which is not installed"
        ) from None
    from qgnn_deploy.data.files import allow_pyg_data_classes

    root = _root(data_root) / "ogb"
    folder = root / name.replace("-", "_")
    marker = folder / f"RELEASE_v{OGB_RELEASE[name]}.txt"
    if folder.is_dir() and not marker.is_file():  # ogb would stop and ask on stdin whether to re-download
        raise QgnnError(
            f"{folder} exists without {marker.name} (the version marker of ogb's {name} zip); "
            f"remove the folder to download it again, or unpack the official zip there"
        )
    try:
        # ogb reloads its own processed file with torch.load (weights-only in this torch): allow PyG's data classes
        with allow_pyg_data_classes():
            ds = PygNodePropPredDataset(name, root=str(root))
            split = ds.get_idx_split()
        data = ds[0]
    except Exception as exc:  # noqa: BLE001
        raise _failed(f"ogb {name}", folder / "raw", exc) from None
    num_nodes = int(data.num_nodes)
    masks = {}
    for ours, theirs in (("train", "train"), ("val", "valid"), ("test", "test")):
        m = torch.zeros(num_nodes, dtype=torch.bool)
        m[split[theirs]] = True
        masks[f"{ours}_mask"] = m
    node = Data(x=data.x.float(), edge_index=_undirected(data.edge_index, num_nodes), y=data.y.view(-1).long(), **masks)
    return GraphDataset(f"ogb:{name}", "node", int(node.x.shape[1]), int(ds.num_classes), data=node)


def _undirected(edge_index: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """ogbn-arxiv is a directed citation graph; GNN baselines train on its symmetrised version."""
    from torch_geometric.utils import to_undirected

    return to_undirected(edge_index, num_nodes=num_nodes)


# --------------------------------------------------------------------------------------------- dispatch
def load(spec: Any, data_root: str | Path | None, split_seed: int) -> GraphDataset:
    """Load a parsed ``data.specs.DatasetSpec`` (duck-typed: this layer sits below the spec parser)."""
    if spec.kind == "planetoid":
        return load_planetoid(spec.name, data_root)
    if spec.kind == "tu":
        return load_tu(spec.name, data_root, split_seed)
    if spec.kind == "zinc":
        return load_zinc(data_root)
    if spec.kind == "gnnbenchmark":
        return load_gnnbenchmark(spec.name, data_root)
    if spec.kind == "ogb":
        return load_ogb(spec.name, data_root)
    raise QgnnError(f"no PyG loader for dataset kind {spec.kind!r}")
