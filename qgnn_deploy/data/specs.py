"""Dataset specs: one string names a dataset on the CLI, in checkpoints and in the Python API.

``parse_spec`` turns ``planetoid:CiteSeer`` / ``tu:PROTEINS`` / ``file:graph.npz`` /
``synthetic:nodes=200000,degree=15`` ... into a :class:`DatasetSpec`; ``load_dataset``
routes it to PyG's own loader (``data/pyg_loaders.py``), the file reader
(``data/files.py``) or the embedded generators (``data/datasets.py``).  A bad spec
is one ``QgnnError`` line that lists the accepted forms.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qgnn_deploy.errors import QgnnError

PLANETOID_NAMES = ("Cora", "CiteSeer", "PubMed")
GNNBENCHMARK_NAMES = ("MNIST", "CIFAR10")
OGB_NAMES = ("ogbn-arxiv", "ogbn-products")
KINDS = ("planetoid", "tu", "zinc", "gnnbenchmark", "ogb", "file", "synthetic", "synthetic-graphs")

ACCEPTED_FORMS = (
    "cora, planetoid:Cora|CiteSeer|PubMed, tu:NAME (e.g. tu:PROTEINS, tu:REDDIT-BINARY), zinc, "
    "gnnbenchmark:MNIST|CIFAR10, ogb:ogbn-arxiv, file:graph.pt, file:graph.npz, "
    "synthetic[:key=value,...], synthetic-graphs[:key=value,...]"
)

_TU_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")
_OPTION = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=([^=,]+)$")


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed spec: ``kind`` plus a name (``CiteSeer``, ``PROTEINS``, a path) and generator options."""

    kind: str
    name: str = ""
    options: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        if self.kind in ("synthetic", "synthetic-graphs"):
            opts = ",".join(f"{k}={v}" for k, v in self.options.items())
            return f"{self.kind}:{opts}" if opts else self.kind
        if self.kind == "zinc":
            return "zinc"
        return f"{self.kind}:{self.name}"


def _bad(spec: str, why: str) -> QgnnError:
    return QgnnError(f"bad dataset spec {spec!r}: {why}; accepted forms: {ACCEPTED_FORMS}")


def _option_value(text: str) -> int | float | str:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_options(spec: str, text: str) -> dict[str, Any]:
    """``nodes=200000,degree=15`` -> ``{"nodes": 200000, "degree": 15}`` (numbers cast, order kept)."""
    options: dict[str, Any] = {}
    for part in text.split(","):
        m = _OPTION.match(part.strip())
        if not m:
            raise _bad(spec, f"option {part!r} is not key=value")
        options[m.group(1)] = _option_value(m.group(2).strip())
    return options


def _canonical(spec: str, name: str, names: tuple[str, ...]) -> str:
    for n in names:
        if n.lower() == name.lower():
            return n
    raise _bad(spec, f"{name!r} is not one of {', '.join(names)}")


def parse_spec(spec: str) -> DatasetSpec:
    """Parse a dataset spec string; every malformed or unknown spec is one ``QgnnError`` line."""
    if not isinstance(spec, str) or not spec.strip():
        raise _bad(str(spec), "empty")
    text = spec.strip()
    kind, sep, rest = text.partition(":")
    kind = kind.lower()
    if kind == "cora" and not sep:
        return DatasetSpec("planetoid", "Cora")
    if kind == "zinc":
        if sep and rest.lower() != "subset":
            raise _bad(spec, "zinc takes no name (the 12k-graph subset is loaded)")
        return DatasetSpec("zinc", "subset")
    if kind in ("synthetic", "synthetic-graphs"):
        return DatasetSpec(kind, "", parse_options(spec, rest) if sep and rest.strip() else {})
    if kind not in KINDS:
        raise _bad(spec, f"unknown dataset kind {kind!r}")
    if not sep or not rest.strip():
        raise _bad(spec, f"{kind}: needs a name after the colon")
    rest = rest.strip()
    if kind == "planetoid":
        return DatasetSpec(kind, _canonical(spec, rest, PLANETOID_NAMES))
    if kind == "gnnbenchmark":
        return DatasetSpec(kind, _canonical(spec, rest, GNNBENCHMARK_NAMES))
    if kind == "ogb":
        return DatasetSpec(kind, _canonical(spec, rest, OGB_NAMES))
    if kind == "tu":
        if not _TU_NAME.match(rest):
            raise _bad(spec, f"{rest!r} is not a TUDataset name")
        return DatasetSpec(kind, rest)
    suffix = Path(rest).suffix.lower()
    if suffix not in (".pt", ".npz"):
        raise _bad(spec, f"file: takes a .pt (torch_geometric Data) or .npz (x, edge_index, y) file, got {rest!r}")
    return DatasetSpec("file", rest)


def load_dataset(
    spec: str | DatasetSpec,
    data_root: str | Path | None = None,
    split_seed: int = 0,
    source: dict[str, Any] | None = None,
):
    """Load any dataset spec as a :class:`~qgnn_deploy.data.datasets.GraphDataset`.

    ``split_seed`` seeds the random split of datasets without a standard one (it is
    recorded in the dataset description, hence in every checkpoint).  ``source`` is
    a checkpoint's recorded description, used to find a ``file:`` graph again.
    """
    from qgnn_deploy.data import datasets, files, pyg_loaders  # loaders sit below the spec layer

    parsed = spec if isinstance(spec, DatasetSpec) else parse_spec(spec)
    if parsed.kind == "synthetic":
        ds = _call_generator(datasets.make_synthetic_nodes, parsed)
    elif parsed.kind == "synthetic-graphs":
        ds = _call_generator(datasets.make_synthetic_graphs, parsed)
    elif parsed.kind == "file":
        ds = files.load_file(parsed.name, data_root, split_seed, source)
    else:
        ds = pyg_loaders.load(parsed, data_root, split_seed)
    ds.spec = ds.name = "cora" if isinstance(spec, str) and spec.strip().lower() == "cora" else str(parsed)
    if parsed.kind in ("synthetic", "synthetic-graphs"):
        ds.split = {"kind": "generator", "seed": int(parsed.options.get("seed", 0))}
    return ds


def _call_generator(fn: Any, parsed: DatasetSpec):
    """Pass ``key=value`` options through as keyword arguments; an unknown key is one line."""
    import inspect

    accepted = [p for p in inspect.signature(fn).parameters]
    unknown = [k for k in parsed.options if k not in accepted]
    if unknown:
        raise QgnnError(
            f"bad dataset spec {str(parsed)!r}: unknown option(s) {', '.join(unknown)}; "
            f"{parsed.kind} takes {', '.join(accepted)}"
        )
    try:
        return fn(**parsed.options)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise QgnnError(f"bad dataset spec {str(parsed)!r}: {str(exc).splitlines()[0] if str(exc) else exc}") from None


def spec_of(description: dict[str, Any]) -> str:
    """The spec a checkpoint's dataset description names (old checkpoints stored only ``name``)."""
    return str(description.get("spec") or description.get("name") or "synthetic")
