"""Exact neighbour sums on destination-sorted edges: gather + int64 CumSum + two lookups at row pointers.

ORT 1.31 runs ``ScatterElements(reduction="add")`` single-threaded at ~7-9 ns per
updated element (a generic per-element loop), which made the aggregation the slowest
part of our ONNX artifact.  When the destinations are ascending (CSR order) the
neighbour sum of row ``i`` is a difference of prefix sums::

    X[p] = sum(v[e] for e < p)                    (int64 CumSum over [0, v...])
    S[i] = X[rowptr[i + 1]] - X[rowptr[i]]        (rowptr = CumSum of the in-degree)

over whole rows (Gather of the table rows by ``src``, CumSum along the edges, two
Gathers of N rows).  int64 prefix sums of int32 values cannot overflow for fewer than
2**32 edges, so the result is exact and deterministic at any thread count.

With ``export_onnx(..., aggregation="csr")`` (the default) the model decides at run time: an ``If``
on "destinations are non-decreasing (one pass over ``dst``) and ``E * H <= CSR_MAX_ELEMENTS``" takes the CSR
branch, otherwise the per-column ScatterElements branch, so every input stays exact and the branch's memory
bounded.  In ORT 1.31 on Zen 5 the CSR branch is 1.3-1.5x faster than the scatter from Cora to 10^5 nodes
(``examples/results/ort_aggregation.md``, section 7; an older AVX2 host under heavy load could not resolve a
difference, section 3).  See ``docs/aggregation.md``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper

from qgnn_deploy.backends.onnx.exporter import EmitContext


def sort_edges_by_destination(edge_index: np.ndarray) -> np.ndarray:
    """``edge_index`` reordered so destinations ascend (stable): the input order the fast path wants.

    Exact for every IR op that reads edges: sums and maxima over a node's incoming edges do not depend on
    their order.  Costs one argsort on the host, once per graph.
    """
    ei = np.asarray(edge_index)
    if ei.ndim != 2 or ei.shape[0] != 2:
        raise ValueError(f"edge_index must have shape [2, E], got {list(ei.shape)}")
    return np.ascontiguousarray(ei[:, np.argsort(ei[1], kind="stable")])


def destinations_sorted(ctx: EmitContext, idx: str) -> str:
    """bool scalar-like ``[1]`` tensor: ``idx[e] <= idx[e + 1]`` for every e (true for E <= 1), memoized per index."""
    key = ("dst_sorted", idx)
    if key not in ctx.memo:
        saved, ctx.current = ctx.current, None
        i = ctx.value(idx)
        one, zero, big = (
            ctx.const([1], "int64", "one1"),
            ctx.const([0], "int64", "zero1"),
            ctx.const([2**62], "int64", "end"),
        )
        after = ctx.emit("Slice", [i, one, big], hint=f"{idx}_after")
        before = ctx.emit("Slice", [i, zero, ctx.const([-1], "int64", "minus1")], hint=f"{idx}_before")
        drops = ctx.emit(
            "Cast", [ctx.emit("Less", [after, before], hint=f"{idx}_drop")], hint=f"{idx}_drop32", to=TensorProto.INT32
        )
        guarded = ctx.emit("Concat", [ctx.const([0], "int32", "zero32"), drops], hint=f"{idx}_drops", axis=0)
        worst = ctx.emit("ReduceMax", [guarded], hint=f"{idx}_any_drop", keepdims=1)
        ctx.memo[key] = ctx.emit("Equal", [worst, ctx.const([0], "int32", "zero32")], hint=f"{idx}_sorted")
        ctx.current = saved
    return ctx.memo[key]


CSR_MAX_ELEMENTS = 1 << 25
"""Largest ``E * H`` the CSR branch takes: its int64 ``[E + 1, H]`` gather and prefix sum are 256 MiB each there
(10^5-node series graph: 1.1M x 16 = 17.6M, CSR 1.3x faster than the scatter on Zen 5); bigger sums scatter."""


def _and_edges_at_most(ctx: EmitContext, idx: str, cond: str, max_edges: int, name: str) -> str:
    """bool ``[1]``: ``cond`` and ``E <= max_edges`` (E the length of ``idx``), built once per arguments."""
    key = ("edges_at_most", idx, cond, max_edges)
    if key not in ctx.memo:
        saved, ctx.current = ctx.current, None
        small = ctx.emit("LessOrEqual", [ctx.shape(idx), ctx.const([max_edges], "int64", f"{name}_max_edges")],
                         hint=f"{idx}_{name}_small")
        ctx.memo[key] = ctx.emit("And", [cond, small], hint=f"{idx}_{name}")
        ctx.current = saved
    return ctx.memo[key]


def csr_condition(ctx: EmitContext, idx: str, width: int) -> str:
    """bool ``[1]``: the destinations ascend and ``E * width <= CSR_MAX_ELEMENTS`` (bounded branch memory)."""
    return _and_edges_at_most(ctx, idx, destinations_sorted(ctx, idx), CSR_MAX_ELEMENTS // max(width, 1), "csr")


def csr32_condition(ctx: EmitContext, idx: str, cond: str, max_edges: int) -> str:
    """bool ``[1]``: ``cond`` (:func:`csr_condition`) and ``E <= max_edges``, where ``max_edges * bound < 2**31``
    for a static bound on the summed values, so int32 prefix sums cannot overflow."""
    return _and_edges_at_most(ctx, idx, cond, max_edges, "csr32")


def row_pointers(ctx: EmitContext, degree: str) -> tuple[str, str]:
    """int64 ``(rowptr[1:], rowptr[:-1])`` from an int32 ``[N]`` in-degree (CumSum, then minus the degree)."""
    key = ("rowptr", degree)
    if key not in ctx.memo:
        saved, ctx.current = ctx.current, None
        d64 = ctx.emit("Cast", [degree], hint="deg64", to=TensorProto.INT64)
        hi = ctx.emit("CumSum", [d64, ctx.const(0, "int64", "axis0")], hint="rowptr_hi")
        lo = ctx.emit("Sub", [hi, d64], hint="rowptr_lo")
        ctx.memo[key] = (hi, lo)  # type: ignore[assignment]
        ctx.current = saved
    return ctx.memo[key]  # type: ignore[return-value]


def padded_source(ctx: EmitContext, table: str, src: str) -> str:
    """int64 ``[E + 1]`` index ``[R, src...]`` where R (the table's row count) addresses an appended zero row."""
    key = ("padded_src", table, src)
    if key not in ctx.memo:
        saved, ctx.current = ctx.current, None
        ctx.memo[key] = ctx.emit("Concat", [ctx.rows(table), ctx.value_as(src, "int64")], hint=f"{src}_padded", axis=0)
        ctx.current = saved
    return ctx.memo[key]


def csr_gathered_sum(
    ctx: EmitContext, table: str, padded: str, pointers: tuple[str, str], rows: str, trailing: tuple[int, ...],
    wide: str = "int64",
) -> str:
    """int32 ``[rows, *trailing]``: ``out[i] = sum(table[src[e]] for e with dst[e] == i)`` on ascending ``dst``.

    ``padded`` is :func:`padded_source` of ``src``, ``pointers`` :func:`row_pointers` of dst's in-degree (both
    built once outside the branch and shared by every layer).  ``X = CumSum(table64[padded])`` over ``[E + 1, H]``
    rows, then ``S = X[rowptr[1:]] - X[rowptr[:-1]]``: Gather (multi-threaded) and CumSum over whole rows.
    ``wide="int32"`` when the caller proved every prefix sum below 2**31 in magnitude (:func:`csr32_condition`).
    """
    width = int(np.prod(trailing))
    hi, lo = pointers
    t = ctx.value_as(table, wide)
    if ctx.ranks[table] != 2:
        t = ctx.emit("Reshape", [t, ctx.const([0, width], "int64", "as2d")], hint="t64_2d")
    zero_row = ctx.emit(
        "ConstantOfShape",
        [ctx.const([1, width], "int64", "row1")],
        hint="zero_row",
        value=helper.make_tensor("zero", TensorProto.INT64 if wide == "int64" else TensorProto.INT32, [1], [0]),
    )
    t = ctx.emit("Concat", [t, zero_row], hint="t_pad", axis=0)  # row R = 0, read by padded[0]
    prefix = ctx.emit(
        "CumSum", [ctx.emit("Gather", [t, padded], hint="msgs", axis=0), ctx.const(0, "int64", "axis0")], hint="prefix"
    )
    sums = ctx.emit(
        "Sub",
        [
            ctx.emit("Gather", [prefix, hi], hint="at_hi", axis=0),
            ctx.emit("Gather", [prefix, lo], hint="at_lo", axis=0),
        ],
        hint="sums",
    )
    out = sums if wide == "int32" else ctx.emit("Cast", [sums], hint="sums32", to=TensorProto.INT32)  # the fold bound
    if len(trailing) != 1:
        shape = ctx.emit("Concat", [rows, ctx.const(list(trailing), "int64", "trailing")], hint="out_shape", axis=0)
        out = ctx.emit("Reshape", [out, shape], hint="unflat")
    return out


def emit_branch(ctx: EmitContext, name: str, build: Callable[[], str]) -> onnx.GraphProto:
    """Run ``build`` with a fresh node list and caches; its nodes become a subgraph whose one output is the result.

    Values the branch creates stay inside it (memo and cast caches are restored), while values emitted before
    are read from the outer scope.  Constants still go to the top-level initializers (visible to subgraphs).
    """
    saved = (ctx.nodes, dict(ctx.memo), dict(ctx._cast_cache), dict(ctx._u8_cache))
    ctx.nodes = []
    try:
        result = build()
        out = ctx.fresh(f"{name}_out")
        ctx.nodes.append(helper.make_node("Identity", [result], [out], name=ctx.fresh(f"n_{name}_out")))
        nodes = ctx.nodes
    finally:
        ctx.nodes, ctx.memo, ctx._cast_cache, ctx._u8_cache = saved[0], saved[1], saved[2], saved[3]
    return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(out, TensorProto.INT32, None)])


