"""Static typing of an IR graph: dtype, rank and shape of every value from the op specs' rules (``ir/ops.py``).

One implementation that backends (the ONNX exporter's handlers) and analyses (the shape-only buffer count of
:mod:`qgnn_deploy.ir.analysis`, which the NAS cost model uses) read, so no array has to be computed to know
how large a value is.  Shapes keep the graph's symbolic dims (``"N"``, ``"E"``, ``"G"``); unknown dims are None.
"""

from __future__ import annotations

from collections.abc import Mapping

from qgnn_deploy.ir.graph import Graph
from qgnn_deploy.ir.ops import OPS, WIDTH, OpSpec, Shape

ITEMSIZE: dict[str, int] = {**WIDTH, "float32": 4}
"""Bytes per element of every IR dtype (the integer widths plus the float boundary)."""


def _spec(op: str) -> OpSpec:
    spec = OPS.get(op)
    if spec is None:  # Graph.validate rejects unknown ops before anything is inferred
        raise ValueError(f"unknown IR op {op!r}")
    return spec


def infer_dtypes(graph: Graph) -> dict[str, str]:
    """Dtype of every value, by the op specs' typing rules (``ir/ops.py``, the interpreter's rules)."""
    dt: dict[str, str] = {v.name: v.dtype for v in graph.inputs}
    dt.update({k: str(v.dtype) for k, v in graph.initializers.items()})
    for node in graph.nodes:
        dt[node.outputs[0]] = _spec(node.op).dtype([dt[i] if i else "" for i in node.inputs], node.attrs)
    return dt


def infer_ranks(graph: Graph) -> dict[str, int]:
    """Rank of every value (handlers need it to broadcast edge indices against [E, H] values)."""
    rk: dict[str, int] = {v.name: len(v.shape) for v in graph.inputs}
    rk.update({k: v.ndim for k, v in graph.initializers.items()})
    for node in graph.nodes:
        rk[node.outputs[0]] = _spec(node.op).rank([rk[i] if i else 0 for i in node.inputs], node.attrs)
    return rk


def infer_shapes(graph: Graph) -> dict[str, Shape]:
    """Static shapes with symbolic ("N", "E", "G") or unknown (None) dims."""
    sh: dict[str, Shape] = {v.name: tuple(v.shape) for v in graph.inputs}
    sh.update({k: tuple(v.shape) for k, v in graph.initializers.items()})
    for node in graph.nodes:
        sh[node.outputs[0]] = _spec(node.op).shape([sh[i] if i else () for i in node.inputs], node.attrs)
    return sh


def value_nbytes(graph: Graph, dims: Mapping[str, int]) -> dict[str, int]:
    """Bytes of every runtime value (graph inputs and node outputs, not constants) when the symbolic dims take
    the sizes in ``dims`` (e.g. ``{"N": 2708, "E": 10556}``), without running the graph.

    Raises ValueError when a shape has a dim that ``dims`` does not give or the rules cannot infer.
    """
    dtypes, shapes = infer_dtypes(graph), infer_shapes(graph)
    out: dict[str, int] = {}
    names = [v.name for v in graph.inputs] + [n.outputs[0] for n in graph.nodes]
    for name in names:
        count = 1
        for d in shapes[name]:
            size = dims.get(d) if isinstance(d, str) else d
            if size is None:
                raise ValueError(f"value {name!r}: dim {d!r} of shape {shapes[name]} is not known")
            count *= int(size)
        out[name] = count * ITEMSIZE[dtypes[name]]
    return out
