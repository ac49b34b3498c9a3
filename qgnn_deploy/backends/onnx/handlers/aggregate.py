"""Emitters of the neighbour ops (``gather_rows``, ``scatter_add``/``scatter_max``, ``degree``, ``pool_sum``).

Sums run as per-column 1-D ScatterElements over the shared ``[E]`` index, or, for destination-sorted edges,
as the CSR prefix-sum branch of :mod:`qgnn_deploy.backends.onnx.segment` (chosen at run time by an ``If``).
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from qgnn_deploy.backends.onnx import segment
from qgnn_deploy.backends.onnx.exporter import ONNX_DTYPE, EmitContext, handler
from qgnn_deploy.backends.onnx.handlers.values import (
    abs_bound,
    producer_of,
    static_trailing,
    unsqueeze_to,
)
from qgnn_deploy.ir.graph import Node

_MAX_COLUMNS = 256  # wider scatters keep one flat ScatterElements (thousands of nodes would bloat the model)


def _expanded_index(ctx: EmitContext, idx: str, values: str) -> str:
    """ScatterElements needs the index with the shape of the updates: ``idx[:, None, ...]`` broadcast."""
    rank = ctx.ranks[values]
    if rank <= 1:
        return ctx.value(idx)
    key = ("expanded_index", idx, values)
    if key not in ctx.memo:
        col = unsqueeze_to(ctx, ctx.value(idx), rank)
        ctx.memo[key] = ctx.emit("Expand", [col, ctx.shape(values)], hint="idx_e")
    return ctx.memo[key]


def _row_scaled_transposed(ctx: EmitContext, table: str, width: int) -> str | None:
    """int32 ``table.T`` when ``table = mul(a[R, H], r[R, 1])`` in int32 (GCN's message times its source's edge
    factor): ``Transpose(a) * r.T`` runs ORT's broadcast as H inner loops of R, not R loops of H (~25 -> ~10 us on
    Cora), and the transpose the columns need anyway moves onto ``a``.  Same int32 products; None otherwise."""
    prod = producer_of(ctx, table)
    if prod is None or prod.op != "mul" or ctx.dtypes[table] != "int32" or ctx.ranks[table] != 2:
        return None
    for a, r in (prod.inputs, prod.inputs[::-1]):
        if ctx.ranks[a] == 2 and ctx.ranks[r] == 2 and ctx.shapes[r][1] == 1 and ctx.shapes[a][1] == width \
                and ctx.shapes[a][0] == ctx.shapes[r][0] == ctx.shapes[table][0] and not ctx.is_const(r):
            at = ctx.emit("Transpose", [ctx.value_as(a, "int32")], hint=f"{a}_T", perm=[1, 0])
            rt = ctx.emit("Reshape", [ctx.value_as(r, "int32"), ctx.const([1, -1], "int64", "as_row")], hint=f"{r}_T")
            return ctx.emit("Mul", [at, rt], hint=f"{table}_T")
    return None


def _columns(ctx: EmitContext, table: str, width: int, hint: str) -> list[str]:
    """The ``width`` columns of int32 ``table[R, ...]`` as contiguous 1-D ``[R]`` tensors (a transpose + a split)."""
    key = ("columns", table, width)
    if key not in ctx.memo:
        saved, ctx.current = ctx.current, None  # shared between handlers: name it after the table
        t = _row_scaled_transposed(ctx, table, width)
        if t is None:
            t = ctx.value_as(table, "int32")
            if ctx.ranks[table] != 2:
                t = ctx.emit("Reshape", [t, ctx.const([0, width], "int64", "as2d")], hint=f"{table}_2d")
            t = ctx.emit("Transpose", [t], hint=f"{table}_{hint}T", perm=[1, 0])
        rows = ctx.shape(t, 1, 2)  # R, read off the [H, R] transpose (the table itself may never be built)
        # the flat [H*R] vector split into H pieces of R (sizes given at run time, so R = 0 works too): one Reshape
        # instead of one per column
        t = ctx.emit("Reshape", [t, ctx.const([-1], "int64", "flat")], hint=f"{table}_{hint}flat")
        if width == 1:
            ctx.memo[key] = [t]
        else:
            sizes = ctx.emit("Expand", [rows, ctx.const([width], "int64", "width1")], hint="col_sizes")
            first = ctx.emit("Split", [t, sizes], hint=f"{table}_{hint}", n_outputs=width, axis=0)
            ctx.memo[key] = [first, *ctx.nodes[-1].output[1:]]  # type: ignore[assignment]
        ctx.current = saved
    return ctx.memo[key]  # type: ignore[return-value]


def _edge_columns(ctx: EmitContext, values: str, width: int) -> list[str]:
    """``values[E, ...]`` as ``width`` contiguous int32 ``[E]`` columns.

    When ``values`` is a ``gather_rows`` of a table ``T[R, ...]``, column h is a
    1-D GatherElements of ``T``'s column h (R elements, cache-resident) by the
    gather's index, so the ``[E, H]`` gather is not needed (it is pruned unless
    something else reads it).  1-D GatherElements is ~15x faster than 1-D Gather
    in ORT 1.31 (a typed loop instead of a memcpy per element).  Otherwise
    ``values`` itself is transposed and split.
    """
    prod = producer_of(ctx, values)
    if prod is not None and prod.op == "gather_rows" and ctx.ranks[prod.inputs[1]] == 1:
        table, src = prod.inputs
        key = ("gathered_columns", table, src, width)
        if key not in ctx.memo:
            saved, ctx.current = ctx.current, None
            ctx.memo[key] = [ctx.emit("GatherElements", [c, ctx.value(src)], hint=f"{values}_col{k}",  # type: ignore[assignment]
                                      axis=0)
                             for k, c in enumerate(_columns(ctx, table, width, "col"))]
            ctx.current = saved
        return ctx.memo[key]  # type: ignore[return-value]
    return _columns(ctx, values, width, "col")


def _scatter(ctx: EmitContext, values: str, idx: str, rows: str, reduction: str, fill: int,
             output: str | None = None, init_table: str | None = None) -> str:
    """int32 ``out[rows, ...]`` filled with ``fill`` then ``out[idx[e]] (reduction)= values[e]``.

    ORT 1.31's ScatterElements is single-threaded and per element, and its cost
    per element grows with the output size (a ``[N*H]`` output leaves the cache).
    With static trailing dims of total width H <= ``_MAX_COLUMNS`` the scatter
    therefore runs column by column: H 1-D ScatterElements of ``[E]`` updates into
    ``[rows]`` (cache-resident), all sharing the 1-D edge index, then one
    transpose back to ``[rows, H]``.  ~3x faster than one scatter over the
    flattened buffer at 10^5 nodes, and no ``[E*H]`` int64 index is built.
    ScatterElements is exact and deterministic at any thread count; ScatterND is
    ~10x faster but loses updates when ORT parallelises it (seen here at 2
    threads for E >= 200k), so it is not used.

    ``init_table`` (int32 ``[rows, H]``, per-column path only): start each column from that table's column
    instead of ``fill``, i.e. return ``init_table + scatter`` without a separate Add (GCN's self loop).
    """
    trailing = static_trailing(ctx, values)
    if trailing is None:
        vals = ctx.value_as(values, "int32")
        shape = rows if ctx.ranks[values] <= 1 else ctx.emit("Concat", [rows, ctx.shape(values, 1)], hint="out_shape",
                                                              axis=0)
        init = _filled(ctx, shape, fill, "int32")
        return ctx.emit("ScatterElements", [init, _expanded_index(ctx, idx, values), vals], output=output,
                        hint="scatter", axis=0, reduction=reduction)
    width = int(np.prod(trailing))
    if width > _MAX_COLUMNS:
        return _flat_scatter(ctx, values, idx, rows, trailing, reduction, fill, output)
    if init_table is not None:
        inits = _columns(ctx, init_table, width, "col")
    else:
        inits = [_filled(ctx, rows, fill, "int32")] * width
    cols = [ctx.emit("ScatterElements", [inits[k], ctx.value(idx), c], hint=f"scatter{k}", axis=0,
                     reduction=reduction)
            for k, c in enumerate(_edge_columns(ctx, values, width))]
    stacked = ctx.emit("Concat", cols, hint="stacked", axis=0) if width > 1 else cols[0]
    by_col = ctx.emit("Reshape", [stacked, ctx.emit("Concat", [ctx.const([width], "int64", "width1"), rows],
                                                    hint="hn", axis=0)], hint="by_col")
    if len(trailing) == 1:
        return ctx.emit("Transpose", [by_col], output=output, hint="by_row", perm=[1, 0])
    by_row = ctx.emit("Transpose", [by_col], hint="by_row", perm=[1, 0])
    shape = ctx.emit("Concat", [rows, ctx.const(list(trailing), "int64", "trailing")], hint="out_shape", axis=0)
    return ctx.emit("Reshape", [by_row, shape], output=output, hint="unflat")


def _flat_index(ctx: EmitContext, idx: str, trailing: tuple[int, ...]) -> str:
    """``idx[e] * H + h`` flattened to ``[E*H]``, shared by every flat scatter over the same index and width."""
    key = ("flat_index", idx, trailing)
    if key not in ctx.memo:
        width = int(np.prod(trailing))
        base = ctx.emit("Mul", [ctx.value(idx), ctx.const(width, "int64", "width")], hint="row_base")
        base = unsqueeze_to(ctx, base, len(trailing) + 1)
        cols = ctx.const(np.arange(width, dtype=np.int64).reshape((1, *trailing)), "int64", "cols")
        grid = ctx.emit("Add", [base, cols], hint="flat_grid")
        ctx.memo[key] = ctx.emit("Reshape", [grid, ctx.const([-1], "int64", "flat")], hint="flat_idx")
    return ctx.memo[key]


def _flat_scatter(ctx: EmitContext, values: str, idx: str, rows: str, trailing: tuple[int, ...], reduction: str,
                  fill: int, output: str | None) -> str:
    """Wide values: one ScatterElements over the flattened ``[rows*H]`` buffer with a flat ``[E*H]`` index."""
    width = int(np.prod(trailing))
    total = ctx.emit("Mul", [rows, ctx.const([width], "int64", "width1")], hint="flat_len")
    init = _filled(ctx, total, fill, "int32")
    flat_vals = ctx.emit("Reshape", [ctx.value_as(values, "int32"), ctx.const([-1], "int64", "flat")],
                         hint="flat_vals")
    flat = ctx.emit("ScatterElements", [init, _flat_index(ctx, idx, trailing), flat_vals], hint="scatter", axis=0,
                    reduction=reduction)
    shape = ctx.emit("Concat", [rows, ctx.const(list(trailing), "int64", "trailing")], hint="out_shape", axis=0)
    return ctx.emit("Reshape", [flat, shape], output=output, hint="unflat")


def _filled(ctx: EmitContext, shape: str, fill: int, dtype: str) -> str:
    value = helper.make_tensor("value", ONNX_DTYPE[dtype], [1], [int(fill)])
    return ctx.emit("ConstantOfShape", [shape], hint=f"fill{fill}", value=value)


def _degree_vector(ctx: EmitContext, idx: str, ref: str) -> str:
    """int32 ``[N]`` count of each index (shared by degree, the scatter_max fix-up and the CSR row pointers).

    Keyed by ``ref``'s first dimension (:meth:`EmitContext.rows_key`), so ``degree(dst, x)`` and
    ``scatter_add(..., dst, in_degree)`` share one ScatterElements."""
    key = ("degree", idx, ctx.rows_key(ref))
    if key not in ctx.memo:
        zeros = _filled(ctx, ctx.rows(ref), 0, "int32")
        ones = _filled(ctx, ctx.shape(idx), 1, "int32")
        ctx.memo[key] = ctx.emit("ScatterElements", [zeros, ctx.value(idx), ones], hint="deg", axis=0,
                                 reduction="add")
    return ctx.memo[key]


# --------------------------------------------------------------------------- boundary (float) ops


@handler("take_row")
def take_row(ctx: EmitContext, node: Node) -> None:
    """Gather with a scalar index (drops the axis, like ``x[i]``)."""
    ctx.emit("Gather", [ctx.value(node.inputs[0]), ctx.const(int(node.attrs["index"]), "int64", "row")],
             output=node.outputs[0], axis=0)


@handler("gather_rows")
def gather_rows(ctx: EmitContext, node: Node) -> None:
    """Gather along axis 0 in the value's own (narrow) dtype: moves 1 byte per int8 element."""
    ctx.emit("Gather", [ctx.value(node.inputs[0]), ctx.value(node.inputs[1])], output=node.outputs[0], axis=0)


def _self_loop_add(ctx: EmitContext, node: Node) -> Node | None:
    """The ``add`` that is the only reader of scatter_add ``node``'s output and adds back the very table the
    scatter's values were gathered from (``T + scatter_add(T[src], dst)``: GCN's self loop), when the per-column
    scatter can start from ``T``'s columns instead (same int32 shape, nothing else needs the bare sum)."""
    out = node.outputs[0]
    prod = producer_of(ctx, node.inputs[0])
    if not ctx.allow_fusion or prod is None or prod.op != "gather_rows" or ctx.ranks[prod.inputs[1]] != 1:
        return None
    table = prod.inputs[0]
    readers = ctx.graph.consumers(out)
    if len(readers) != 1 or readers[0].op != "add" or sorted(readers[0].inputs) != sorted([out, table]) \
            or table == out or any(o.name == out for o in ctx.graph.outputs):
        return None
    add = readers[0]
    trailing = static_trailing(ctx, table)
    same = ctx.shapes[table] == ctx.shapes[out] and isinstance(ctx.shapes[out][0], (int, str))
    if not same or trailing is None or len(trailing) != 1 or trailing[0] > _MAX_COLUMNS \
            or ctx.ranks[node.inputs[1]] != 1:
        return None
    if not all(ctx.dtypes[v] == "int32" for v in (table, out, add.outputs[0])):
        return None
    return add


@handler("scatter_add")
def scatter_add(ctx: EmitContext, node: Node) -> None:
    """ScatterElements(reduction=add) into int32 zeros (per column, see ``_scatter``); with ``aggregation="csr"``
    a sum of gathered rows takes CSR prefix sums ``If`` the destinations ascend (``segment.py``).  Exact and
    deterministic at any thread count."""
    values, idx, ref = node.inputs
    rows = ctx.rows(ref)
    prod = producer_of(ctx, values)
    trailing = static_trailing(ctx, values)
    fused = prod is not None and prod.op == "gather_rows" and ctx.ranks[prod.inputs[1]] == 1
    if ctx.aggregation != "csr" or not fused or trailing is None or ctx.ranks[idx] != 1:
        self_add = _self_loop_add(ctx, node)
        if self_add is not None:
            _scatter(ctx, values, idx, rows, "add", 0, output=self_add.outputs[0], init_table=prod.inputs[0])
            ctx.fused_outputs.add(self_add.outputs[0])
            return
        _scatter(ctx, values, idx, rows, "add", 0, output=node.outputs[0])
        return
    table, src = prod.inputs  # type: ignore[union-attr]
    cond = segment.csr_condition(ctx, idx, int(np.prod(trailing)))
    rowptr = segment.row_pointers(ctx, _degree_vector(ctx, idx, ref))
    padded = segment.padded_source(ctx, table, src)
    out = node.outputs[0]
    bound = abs_bound(ctx, table)
    narrow = segment.narrow_dtype(bound)
    chunk = segment.chunk_length(bound)

    def csr() -> str:
        if chunk is None:
            return segment.csr_gathered_sum(ctx, table, padded, rowptr, rows, trailing)
        # the chunk-padded index and chunk pointers are built inside this branch, the only one that reads them:
        # no extra If (~40-100 us of ORT's per-If cost on Cora, whose small E takes the int32 branch) and
        # nothing built at 10^6, where the pieces run
        chunked = segment.chunked_source(ctx, table, padded, chunk)
        positions = segment.chunk_pointers(ctx, rowptr, chunk)
        return segment.csr_chunked_sum(ctx, table, chunked, positions, rows, trailing, chunk, narrow)

    def pieces_or_scatter() -> str:
        # sorted edges above the whole-graph bound: the CSR sums piece by piece (bounded memory), else the scatter
        pieces = segment.emit_branch(ctx, f"{out}_pieces", lambda: segment.csr_pieced_sum(
            ctx, table, padded, rowptr, rows, trailing, chunk, narrow))
        scatter = segment.emit_branch(ctx, f"{out}_scatter", lambda: _scatter(ctx, values, idx, rows, "add", 0))
        return ctx.emit("If", [segment.destinations_sorted(ctx, idx)], hint="pieces_or_scatter", then_branch=pieces,
                        else_branch=scatter)

    def csr_or_scatter(output: str | None = None) -> str:
        then = segment.emit_branch(ctx, f"{out}_csr", csr)
        rest = segment.emit_branch(ctx, f"{out}_pieces_or_scatter", pieces_or_scatter)
        return ctx.emit("If", [cond], output=output, hint="csr_or_scatter", then_branch=then, else_branch=rest)

    if not bound or (2**31 - 1) // bound < 1:
        csr_or_scatter(out)
        return
    # every int32 prefix sum is at most E * bound in magnitude: below 2**31 the whole branch runs in int32 (half
    # the bytes; ORT's int32 CumSum ~2x faster than int64), exact without any overflow; above it the chunked
    # int32 prefix sums (segment.csr_chunked_sum) when the bound allows chunks, else int64
    csr32 = segment.emit_branch(ctx, f"{out}_csr32", lambda: segment.csr_gathered_sum(
        ctx, table, padded, rowptr, rows, trailing, wide="int32"))
    rest = segment.emit_branch(ctx, f"{out}_csr64_or_scatter", csr_or_scatter)
    ctx.emit("If", [segment.csr32_condition(ctx, idx, cond, (2**31 - 1) // bound)], output=out,
             then_branch=csr32, else_branch=rest)


@handler("scatter_max")
def scatter_max(ctx: EmitContext, node: Node) -> None:
    """ScatterElements(reduction=max) from INT32_MIN, then rows without an incoming edge set to 0."""
    values, idx, ref = node.inputs
    mx = _scatter(ctx, values, idx, ctx.rows(ref), "max", int(np.iinfo(np.int32).min))
    has = ctx.emit("Greater", [_degree_vector(ctx, idx, ref), ctx.const(0, "int32")], hint="has_in")
    has = unsqueeze_to(ctx, has, ctx.ranks[values])
    ctx.emit("Where", [has, mx, ctx.const(0, "int32")], output=node.outputs[0])


@handler("degree")
def degree(ctx: EmitContext, node: Node) -> None:
    """ScatterElements-add of ones over a 1-D int32 counter, shaped [N, 1]."""
    idx, ref = node.inputs
    ctx.emit("Unsqueeze", [_degree_vector(ctx, idx, ref), ctx.const([1], "int64", "axes")], output=node.outputs[0])


@handler("pool_sum")
def pool_sum(ctx: EmitContext, node: Node) -> None:
    """Sum pooling: G = max(batch) + 1 at run time (0 for an empty batch), then ScatterElements-add."""
    values, batch = node.inputs
    b = ctx.value(batch)
    # batch ids are < N (checked by the runner), so the max runs in int32 (ORT's int64 ReduceMax is unreliable)
    b32 = ctx.emit("Cast", [b], hint="batch32", to=TensorProto.INT32)
    guarded = ctx.emit("Concat", [b32, ctx.const([-1], "int32", "minus1")], hint="batch_guard", axis=0)
    gmax = ctx.emit("Cast", [ctx.emit("ReduceMax", [guarded], hint="bmax", keepdims=1)], hint="bmax64",
                    to=TensorProto.INT64)
    g = ctx.emit("Add", [gmax, ctx.const([1], "int64")], hint="num_graphs")
    _scatter(ctx, values, batch, g, "add", 0, output=node.outputs[0])
