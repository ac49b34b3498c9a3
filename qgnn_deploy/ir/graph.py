"""The integer graph: the one representation between training and every backend.

A :class:`Graph` is a list of :class:`Node` s in topological order over named
values.  Constants live in ``initializers`` (NumPy arrays); runtime inputs are
described by :class:`ValueInfo` with symbolic dimensions (``"N"`` nodes,
``"E"`` edges, ``"G"`` graphs).  The meaning of every op is defined by the NumPy
reference interpreter in :mod:`qgnn_deploy.ir.interpreter`; the op catalogue
with its contract lives in :mod:`qgnn_deploy.ir.ops`.

Serialisation is JSON (structure) plus ``.npz`` (constants) and never pickles.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qgnn_deploy.ir.ops import OPS

Dim = int | str
DTYPES = ("uint8", "int8", "uint16", "int16", "int32", "int64", "float32")


@dataclass(frozen=True)
class ValueInfo:
    """Name, dtype and (possibly symbolic) shape of a graph input or output."""

    name: str
    dtype: str
    shape: tuple[Dim, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @staticmethod
    def from_json(d: dict[str, Any]) -> ValueInfo:
        return ValueInfo(d["name"], d["dtype"], tuple(d["shape"]))


@dataclass
class Node:
    """One op application. ``""`` in ``inputs`` marks an omitted optional input."""

    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    name: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "inputs": self.inputs, "outputs": self.outputs,
                "attrs": jsonable(self.attrs), "name": self.name}

    @staticmethod
    def from_json(d: dict[str, Any]) -> Node:
        return Node(d["op"], list(d["inputs"]), list(d["outputs"]), dict(d["attrs"]), d.get("name", ""))


@dataclass
class Graph:
    """An integer GNN program: inputs, constants, nodes, outputs and metadata.

    ``meta`` carries deployment facts the backends and runtimes need, e.g.
    ``max_in_degree`` (the accumulator-safe limit, checked at run time),
    ``task`` (``"node"`` or ``"graph"``), ``num_classes`` and ``num_nodes``
    (only for transductive per-node parameters).
    """

    inputs: list[ValueInfo]
    outputs: list[ValueInfo]
    nodes: list[Node]
    initializers: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ queries
    def producers(self) -> dict[str, Node]:
        """Value name -> the node that writes it."""
        return {o: n for n in self.nodes for o in n.outputs}

    def consumers(self, value: str) -> list[Node]:
        """The nodes that read ``value``."""
        return [n for n in self.nodes if value in n.inputs]

    def op_counts(self) -> dict[str, int]:
        """Number of nodes per op name."""
        counts: dict[str, int] = {}
        for n in self.nodes:
            counts[n.op] = counts.get(n.op, 0) + 1
        return counts

    def float_ops(self) -> list[str]:
        """Names of nodes that compute in floating point (only the boundary should)."""
        return [n.name or n.outputs[0] for n in self.nodes if OPS[n.op].is_float]

    def parameter_bytes(self) -> int:
        """Bytes of all stored constants as the artifact holds them (int4 packed)."""
        return int(sum(a.nbytes for a in self.initializers.values()))

    # --------------------------------------------------------------- validation
    def validate(self) -> None:
        """Check structure: known ops, SSA names, defined-before-use, arity."""
        defined = {v.name for v in self.inputs} | set(self.initializers)
        for node in self.nodes:
            spec = OPS.get(node.op)
            if spec is None:
                raise ValueError(f"unknown IR op {node.op!r} in node {node.name!r}")
            spec.check_arity(node)
            for i in node.inputs:
                if i and i not in defined:
                    raise ValueError(f"node {node.name!r} ({node.op}) reads undefined value {i!r}")
            for o in node.outputs:
                if o in defined:
                    raise ValueError(f"value {o!r} is defined twice")
                defined.add(o)
        for out in self.outputs:
            if out.name not in defined:
                raise ValueError(f"graph output {out.name!r} is never produced")

    # ------------------------------------------------------------ serialisation
    def save(self, stem: str | Path) -> tuple[Path, Path]:
        """Write ``<stem>.json`` and ``<stem>.npz``; returns both paths."""
        stem = Path(stem)
        js, npz = stem.with_suffix(".json"), stem.with_suffix(".npz")
        doc = {
            "format": "qgnn-ir",
            "version": 1,
            "inputs": [v.to_json() for v in self.inputs],
            "outputs": [v.to_json() for v in self.outputs],
            "nodes": [n.to_json() for n in self.nodes],
            "initializers": {k: {"dtype": str(v.dtype), "shape": list(v.shape)} for k, v in self.initializers.items()},
            "meta": jsonable(self.meta),
        }
        js.write_text(json.dumps(doc, indent=1))
        with open(npz, "wb") as fh:
            np.savez(fh, **self.initializers)
        return js, npz

    @staticmethod
    def load(stem: str | Path) -> Graph:
        """Read ``stem.json`` + ``stem.npz`` written by :meth:`save` (no pickle)."""
        stem = Path(stem)
        doc = json.loads(stem.with_suffix(".json").read_text())
        if doc.get("format") != "qgnn-ir":
            raise ValueError(f"{stem}.json is not a qgnn integer graph")
        with np.load(stem.with_suffix(".npz"), allow_pickle=False) as z:
            inits = {k: z[k] for k in z.files}
        g = Graph(
            inputs=[ValueInfo.from_json(v) for v in doc["inputs"]],
            outputs=[ValueInfo.from_json(v) for v in doc["outputs"]],
            nodes=[Node.from_json(n) for n in doc["nodes"]],
            initializers=inits,
            meta=doc["meta"],
        )
        g.validate()
        return g


def jsonable(obj: Any) -> Any:
    """Plain JSON types from nested dicts/lists of NumPy values and paths."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return obj


class GraphBuilder:
    """Small helper to emit nodes with unique names while folding a model."""

    def __init__(self) -> None:
        self.graph = Graph(inputs=[], outputs=[], nodes=[])
        self._counter: dict[str, int] = {}

    def fresh(self, hint: str) -> str:
        """A value name not used yet: ``hint``, else ``hint_1``, ``hint_2``, ..."""
        k = self._counter.get(hint, 0)
        self._counter[hint] = k + 1
        return hint if k == 0 else f"{hint}_{k}"

    def input(self, name: str, dtype: str, shape: tuple[Dim, ...]) -> str:
        """Declare a graph input."""
        self.graph.inputs.append(ValueInfo(name, dtype, shape))
        return name

    def const(self, hint: str, array: np.ndarray) -> str:
        """Add an initializer; returns its (fresh) name."""
        name = self.fresh(hint)
        self.graph.initializers[name] = np.ascontiguousarray(array)
        return name

    def op(self, op: str, inputs: list[str], hint: str | None = None, **attrs: Any) -> str:
        """Append one single-output node; returns the output value's name."""
        out = self.fresh(hint or op)
        self.graph.nodes.append(Node(op, list(inputs), [out], attrs, name=out))
        return out

    def output(self, name: str, dtype: str, shape: tuple[Dim, ...]) -> None:
        """Declare a graph output."""
        self.graph.outputs.append(ValueInfo(name, dtype, shape))
