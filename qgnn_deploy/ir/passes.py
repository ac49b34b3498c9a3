"""Graph-level passes applied after fold: small, named, individually testable, composable.

``dedupe_initializers`` stores equal constants once (fold runs it); ``prequantize_input`` changes the input
contract to pre-quantized features (``qgnn-export --integer-input``).  :class:`GraphPass` names a pass with its
options and :class:`Sequential` runs several in order (like TVM's ``transform.Sequential``), recording what each
returned; :data:`FOLD_PIPELINE` is the pipeline fold applies to every graph.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qgnn_deploy.ir.graph import Graph, ValueInfo


def dedupe_initializers(graph: Graph, consumers: tuple[str, ...] | None = None) -> int:
    """Store identical constants once; returns how many were dropped.

    ``consumers`` restricts the pass to constants read only by those ops (fold uses ``("lut", "lut_steps")``:
    the per-layer degree tables, equal by construction; see :data:`FOLD_PIPELINE`).
    """
    eligible = set(graph.initializers)
    if consumers is not None:
        for node in graph.nodes:
            if node.op not in consumers:
                eligible -= set(node.inputs)
    first: dict[tuple[str, tuple[int, ...], str], str] = {}
    rename: dict[str, str] = {}
    for name, arr in graph.initializers.items():
        if name not in eligible:
            continue
        key = (str(arr.dtype), tuple(arr.shape), hashlib.sha256(arr.tobytes()).hexdigest())
        if key in first:
            rename[name] = first[key]
        else:
            first[key] = name
    if not rename:
        return 0
    for node in graph.nodes:
        node.inputs = [rename.get(i, i) for i in node.inputs]
    for name in rename:
        del graph.initializers[name]
    return len(rename)


def _attr_key(value: Any) -> Any:
    """A hashable, type-preserving stand-in for an attribute value (arrays by dtype, shape and bytes)."""
    if isinstance(value, np.ndarray):
        return ("ndarray", str(value.dtype), value.shape, value.tobytes())
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(_attr_key(v) for v in value))
    if isinstance(value, dict):
        return ("dict", tuple(sorted((k, _attr_key(v)) for k, v in value.items())))
    return (type(value).__name__, value)


def merge_common_subexpressions(graph: Graph) -> int:
    """Drop every node that repeats an earlier one (same op, inputs and attributes); later readers use the earlier
    node's outputs.  Returns how many nodes were dropped.

    IR ops are pure, so the values are unchanged.  Why: fold emits per-layer copies of shared work (GCN's
    ``in_degree + 1`` and its edge-factor lookup in every layer), which a backend would otherwise compute once
    per layer.  Nodes producing a graph output are kept.
    """
    outputs = {v.name for v in graph.outputs}
    rename: dict[str, str] = {}
    seen: dict[tuple[Any, ...], Any] = {}
    kept = []
    before = len(graph.nodes)
    for node in graph.nodes:
        node.inputs = [rename.get(i, i) for i in node.inputs]
        key = (node.op, tuple(node.inputs), _attr_key(node.attrs), len(node.outputs))
        first = seen.get(key)
        if first is not None and not outputs & set(node.outputs):
            rename.update(zip(node.outputs, first.outputs))
            continue
        seen.setdefault(key, node)
        kept.append(node)
    graph.nodes = kept
    return before - len(kept)


# Ops that read an input only for its first dimension (the node count N), and at which position.
REFERENCE_OPS = {"degree": 1, "scatter_add": 2, "scatter_max": 2}


def prequantize_input(graph: Graph, input_name: str = "x") -> dict[str, Any]:
    """Make the graph take ``input_name`` already quantized: the boundary ``quantize`` moves to the caller.

    The float input ``x`` [N, F] is replaced by its quantized twin (``x_q``, uint8 for a
    per-tensor input quantizer) and the ``quantize`` node is dropped; every other use of
    ``x`` (node-count references) reads ``x_q`` instead.  Like an image model that takes
    uint8 pixels, the caller quantizes the features once (per dataset, not per call) with
    :func:`quantize_input_feeds`, whose arithmetic is the interpreter's own ``quantize``, so
    ``run(g', quantize_input_feeds(g', feeds)) == run(g, feeds)`` bit for bit.  Why: the FP32
    features are the largest live buffer and the largest memory stream of a GNN forward pass.

    Returns the quantization contract, also stored as ``graph.meta["input_quant"]``.
    Raises ``ValueError`` when ``input_name`` is not fed only to one per-tensor ``quantize``
    (e.g. A2Q's per-node ``quantize_rows`` needs the in-graph degree).
    """
    quantizers = [n for n in graph.nodes if input_name in n.inputs and n.op == "quantize"]
    others = [n for n in graph.nodes if input_name in n.inputs and n.op != "quantize"]
    spec = next((vi for vi in graph.inputs if vi.name == input_name), None)
    if spec is None or len(quantizers) != 1:
        raise ValueError(f"prequantize_input: {input_name!r} is not a graph input read by exactly one per-tensor "
                         "quantize (per-node input quantizers, e.g. A2Q degree buckets, quantize in the graph)")
    q = quantizers[0]
    if any(n.op not in REFERENCE_OPS or n.inputs.index(input_name) != REFERENCE_OPS[n.op] for n in others):
        bad = sorted({n.op for n in others})
        raise ValueError(f"prequantize_input: {input_name!r} feeds {bad} as data, not only the quantize")
    qname = q.outputs[0]
    contract = {"float_input": input_name, "quantized_input": qname, "scale": float(q.attrs["scale"]),
                "zero_point": int(q.attrs["zero_point"]), "qmin": int(q.attrs["qmin"]), "qmax": int(q.attrs["qmax"]),
                "dtype": str(q.attrs["dtype"])}
    graph.inputs = [ValueInfo(qname, contract["dtype"], vi.shape) if vi.name == input_name else vi
                    for vi in graph.inputs]
    graph.nodes = [n for n in graph.nodes if n is not q]
    for n in others:
        n.inputs = [qname if i == input_name else i for i in n.inputs]
    graph.meta["input_quant"] = contract
    return contract


def prequantized_copy(graph: Graph, input_name: str = "x") -> Graph:
    """A copy of ``graph`` with :func:`prequantize_input` applied; ``graph`` itself is left as it is."""
    twin = copy.deepcopy(graph)
    prequantize_input(twin, input_name)
    return twin


def quantize_input_feeds(graph: Graph, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Feeds for a :func:`prequantize_input` graph: the float input quantized exactly as the graph did.

    Feeds that already hold the quantized input (or a graph without the contract) pass through.
    """
    contract = graph.meta.get("input_quant")
    if not contract or contract["float_input"] not in feeds:
        return dict(feeds)
    from qgnn_deploy.ir.interpreter import KERNELS
    from qgnn_deploy.validation import validate_feeds

    out = {k: v for k, v in feeds.items() if k != contract["float_input"]}
    attrs = {k: contract[k] for k in ("scale", "zero_point", "qmin", "qmax", "dtype")}
    x = np.asarray(feeds[contract["float_input"]])
    validate_feeds([{"name": contract["float_input"], "dtype": None, "shape": None}], {},
                   {contract["float_input"]: x})  # finite before it is quantized (NaN would clip to a code)
    out[contract["quantized_input"]] = KERNELS["quantize"]([x], attrs)
    return out


# ------------------------------------------------------------------------------------------------ pipelines
@dataclass(frozen=True)
class GraphPass:
    """A named in-place rewrite of an IR graph: ``fn(graph, **options)``; its return value is the pass's report."""

    name: str
    fn: Callable[..., Any]
    options: Mapping[str, Any] = field(default_factory=dict)

    def __call__(self, graph: Graph) -> Any:
        return self.fn(graph, **self.options)


@dataclass(frozen=True)
class Sequential:
    """Passes applied in order, then the graph validated; returns ``{pass name: its report}``."""

    passes: Sequence[GraphPass]
    validate: bool = True

    def __post_init__(self) -> None:
        names = [p.name for p in self.passes]
        if len(set(names)) != len(names):
            raise ValueError(f"pass names must be unique in a pipeline: {names}")

    def __call__(self, graph: Graph) -> dict[str, Any]:
        log = {p.name: p(graph) for p in self.passes}
        if self.validate:
            graph.validate()
        return log


FOLD_PIPELINE = Sequential([
    # every layer's identical degree table stored once.  Only lookup tables: they are equal by construction (a
    # function of the config), so a candidate's size is known before training (nas/cost.py folds candidates).
    # Other constants are equal only by coincidence of learned values (all-zero biases of a coarse grid, equal
    # shifts): deduping them saves a few bytes (5 of 864 on a searched SAGE) and makes the size unpredictable.
    GraphPass("dedupe_lookup_tables", dedupe_initializers, {"consumers": ("lut", "lut_steps")}),
])
"""What :func:`qgnn_deploy.fold.fold_model` runs on every folded graph."""
