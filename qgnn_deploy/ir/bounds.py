"""Static integer ranges of IR values: what a backend may assume without running the graph.

:func:`value_ranges` walks the graph once, in node order, and gives every integer value an interval
``(lo, hi)`` that holds for any input: graph inputs take their dtype's range, constants their own, and each op
the interval its semantics allow (interval arithmetic for ``add``/``sub``/``mul``, the table's range for ``lut``,
``K`` times the products' range for ``matmul``, the extent of the reduced axis for ``reduce_sum``, ``[qmin,
qmax]`` for ``requantize``...).  Every result is also clipped to its dtype's range: the interpreter raises
rather than wrap (``interpreter.narrow``), so a value that ran is inside it.  Ops without a rule, and any axis of
unknown extent, get the dtype's range, so the intervals are always sound, if sometimes loose.

Backends use them to pick a cheaper exact formulation, e.g. the TVM ``div_floor`` in float32 when both operands
are below 2^24 (LoRAP's softmax weights).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from qgnn_deploy.ir.graph import Graph, Node
from qgnn_deploy.ir.infer import infer_dtypes, infer_shapes

Range = tuple[int, int]
_INT = ("int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64")


def dtype_range(dtype: str) -> Range:
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def _products(a: Range, b: Range) -> Range:
    p = [a[0] * b[0], a[0] * b[1], a[1] * b[0], a[1] * b[1]]
    return min(p), max(p)


def _binary(node: Node, ins: list[Range]) -> Range | None:
    a, b = ins
    if node.op == "add":
        return a[0] + b[0], a[1] + b[1]
    if node.op == "sub":
        return a[0] - b[1], a[1] - b[0]
    if node.op == "mul":
        return _products(a, b)
    if node.op == "div_floor" and b[0] >= 1:  # the divisor is positive by the op's contract
        q = [v // d for v in a for d in b]
        return min(q), max(q)
    return None


def _rule(node: Node, ins: list[Range | None], shapes: dict, table: Callable[[str], Range | None]) -> Range | None:
    """The interval of ``node``'s output from its inputs' (None: no rule, or an input without a range)."""
    op, at = node.op, node.attrs
    if op in ("requantize", "quantize", "quantize_rows"):
        if op == "requantize" and len(node.inputs) > 3 and any(node.inputs[3:]):
            return None  # per-row bounds as tensors
        if "qmin" in at and "qmax" in at:
            return int(at["qmin"]), int(at["qmax"])
        return None
    if op == "clamp":
        lo, hi = int(at["lo"]), int(at["hi"])
        return (hi, hi) if lo > hi else (lo, hi)  # np.clip with lo > hi yields hi everywhere
    if op == "unpack_int4":
        return -8, 7
    if op in ("lut", "lut_steps"):
        return table(node.inputs[1 if op == "lut" else 2])
    if op in ("cast", "reduce_max", "repeat_cols", "gather_rows", "take_row"):
        return ins[0]  # the values of input 0, moved or selected
    if not ins or any(r is None for r in ins):
        return None
    if op == "concat":
        return min(r[0] for r in ins), max(r[1] for r in ins)  # type: ignore[index]
    if op in ("add", "sub", "mul", "div_floor"):
        return _binary(node, ins)  # type: ignore[arg-type]
    if op == "reduce_sum":
        axis = at.get("axis", -1)  # the interpreter's default
        shape = shapes.get(node.inputs[0]) or ()
        extent = shape[axis] if isinstance(axis, int) and shape and -len(shape) <= axis < len(shape) else None
        if not isinstance(extent, int):
            return None
        r = ins[0]
        return extent * min(r[0], 0), extent * max(r[1], 0)  # type: ignore[index]
    if op == "matmul":
        k = (shapes.get(node.inputs[1]) or (None,))[0]
        if not isinstance(k, int):
            return None
        a = (ins[0][0] - int(at.get("a_zero_point", 0)), ins[0][1] - int(at.get("a_zero_point", 0)))  # type: ignore[index]
        b = (ins[1][0] - int(at.get("b_zero_point", 0)), ins[1][1] - int(at.get("b_zero_point", 0)))  # type: ignore[index]
        lo, hi = _products(a, b)
        return k * min(lo, 0), k * max(hi, 0)
    return None


def value_ranges(graph: Graph) -> dict[str, Range]:
    """``(lo, hi)`` for every integer value of ``graph`` (inputs, constants, node outputs): sound for any input."""
    dtypes = infer_dtypes(graph)
    shapes = infer_shapes(graph)
    ranges: dict[str, Range] = {}
    for v in graph.inputs:
        if str(v.dtype) in _INT:
            ranges[v.name] = dtype_range(str(v.dtype))
    for name, arr in graph.initializers.items():
        a = np.asarray(arr)
        if a.dtype.kind in "iu":
            ranges[name] = (int(a.min()), int(a.max())) if a.size else (0, 0)

    def table(name: str) -> Range | None:
        return ranges.get(name)

    for node in graph.nodes:
        out = node.outputs[0]
        dt = dtypes.get(out, "")
        if dt not in _INT:
            continue
        full = dtype_range(dt)
        r = _rule(node, [ranges.get(i) if i else None for i in node.inputs], shapes, table)
        ranges[out] = full if r is None else (max(r[0], full[0]), min(r[1], full[1]))
    return ranges
