"""Exact neighbour sums on destination-sorted edges: gather + prefix sums + one lookup at the row pointers.

ORT 1.31 runs ``ScatterElements(reduction="add")`` single-threaded at ~7-9 ns per
updated element (a generic per-element loop), which made the aggregation the slowest
part of our ONNX artifact.  When the destinations are ascending (CSR order) the
neighbour sum of row ``i`` is a difference of prefix sums::

    X[p] = sum(v[e] for e < p)                    (CumSum over [0, v...])
    S[i] = X[rowptr[i + 1]] - X[rowptr[i]]        (rowptr = [0, CumSum of the in-degree...])

over whole rows (Gather of the table rows by ``src``, CumSum along the edges, one
Gather of N + 1 rows).  Three exact forms, by what a static bound B on the table proves:
int32 throughout when ``E * B < 2**31``; chunked int32 prefix sums (``csr_chunked_sum``:
rows gathered narrow, e.g. int16, no chunk can overflow, carries in int64 and added only at
the N + 1 row pointers) for larger E; int64 when there is no usable
bound (int64 prefix sums of int32 values cannot overflow below 2**32 edges).  Deterministic
at any thread count.

With ``export_onnx(..., aggregation="csr")`` (the default) the model decides at run time: an ``If``
on "destinations are non-decreasing (one pass over ``dst``) and ``E * H <= CSR_MAX_ELEMENTS``" takes the CSR
branch over the whole graph; larger sorted inputs take the same sums piece by piece (``csr_pieced_sum``: an ONNX
``Loop`` over pieces of whole rows, one piece's buffers alive at a time); unsorted input takes the per-column
ScatterElements branch.  Every input stays exact and each branch's memory bounded.  Measurements:
``examples/results/ort_aggregation.md`` sections 7 to 9; see ``docs/aggregation.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import onnx
from onnx import TensorProto, helper

from qgnn_deploy.backends.onnx.exporter import ONNX_DTYPE, EmitContext


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
(10^5-node series graph: 1.1M x 16 = 17.6M, CSR 1.3x faster than the scatter on Zen 5); bigger sorted inputs
run in pieces (:func:`csr_pieced_sum`)."""


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


def row_pointers(ctx: EmitContext, degree: str) -> str:
    """int64 ``[N + 1]`` row pointers ``[0, CumSum(degree)...]`` of an int32 ``[N]`` in-degree: row i's edges are
    ``rowptr[i] <= e < rowptr[i + 1]``, so one Gather at N + 1 positions reads both ends of every row."""
    key = ("rowptr", degree)
    if key not in ctx.memo:
        saved, ctx.current = ctx.current, None
        d64 = ctx.emit("Cast", [degree], hint="deg64", to=TensorProto.INT64)
        d64 = ctx.emit("Concat", [ctx.const([0], "int64", "zero1"), d64], hint="deg64_0", axis=0)
        ctx.memo[key] = ctx.emit("CumSum", [d64, ctx.const(0, "int64", "axis0")], hint="rowptr")
        ctx.current = saved
    return ctx.memo[key]


def _row_differences(ctx: EmitContext, at: str) -> str:
    """``at[1:] - at[:-1]``: the sum of each row from the prefix sums read at its N + 1 row pointers."""
    one, zero = ctx.const([1], "int64", "one1"), ctx.const([0], "int64", "zero1")
    hi = ctx.emit("Slice", [at, one, ctx.const([2**62], "int64", "end")], hint="at_hi")
    lo = ctx.emit("Slice", [at, zero, ctx.const([-1], "int64", "minus1")], hint="at_lo")
    return ctx.emit("Sub", [hi, lo], hint="sums")


def padded_source(ctx: EmitContext, table: str, src: str) -> str:
    """int64 ``[E + 1]`` index ``[R, src...]`` where R (the table's row count) addresses an appended zero row.

    Keyed by the table's row dimension (:meth:`EmitContext.rows_key`): every layer's table of N rows shares one."""
    key = ("padded_src", ctx.rows_key(table), src)
    if key not in ctx.memo:
        saved, ctx.current = ctx.current, None
        ctx.memo[key] = ctx.emit("Concat", [ctx.rows(table), ctx.value_as(src, "int64")], hint=f"{src}_padded", axis=0)
        ctx.current = saved
    return ctx.memo[key]


def narrow_dtype(bound: int | None) -> str:
    """The narrowest signed dtype holding every value of magnitude <= ``bound`` (int32 when unknown).

    ORT 1.31's row Gather costs grow with the row's bytes (random rows leave the cache): on Zen 4 gathering
    1.1M rows of 16 int16 costs ~15 ms against ~50 ms for int64 rows (``ort_aggregation.md`` section 8)."""
    if bound is not None and bound <= 127:
        return "int8"
    if bound is not None and bound <= 32767:
        return "int16"
    return "int32"


CHUNK_MAX = 1 << 14
"""Longest chunk of the chunked prefix sums: the index is padded to whole chunks (at most CHUNK_MAX - 1 extra
rows), and the per-chunk carries (``[E / c, H]``) stay negligible."""

CHUNK_MIN = 1 << 8
"""Shortest chunk worth the carries; tables bounded too loosely for it take the int64 CSR branch."""


def chunk_length(bound: int | None) -> int | None:
    """Largest power of two ``c <= CHUNK_MAX`` with ``c * bound < 2**31`` (an int32 prefix sum over c values
    bounded by ``bound`` cannot overflow), or None when that is below ``CHUNK_MIN`` or the bound is unknown."""
    if not bound or (2**31 - 1) // bound < CHUNK_MIN:
        return None
    return min(1 << (((2**31 - 1) // bound).bit_length() - 1), CHUNK_MAX)


def chunked_source(ctx: EmitContext, table: str, padded: str, chunk: int) -> str:
    """:func:`padded_source` padded with the zero row's index R to a whole number of ``chunk``-long chunks."""
    key = ("chunked_src", table, padded, chunk)
    if key not in ctx.memo:
        saved, ctx.current = ctx.current, None
        length = ctx.shape(padded)
        up = ctx.emit("Add", [length, ctx.const([chunk - 1], "int64", "chunk_m1")], hint="len_up")
        chunks = ctx.emit("Div", [up, ctx.const([chunk], "int64", "chunk")], hint="chunks")
        whole = ctx.emit("Mul", [chunks, ctx.const([chunk], "int64", "chunk")], hint="chunked_len")
        pads = ctx.emit("Concat", [ctx.const([0], "int64", "zero1"), ctx.emit("Sub", [whole, length], hint="pad_len")],
                        hint="pads", axis=0)
        zero_row = ctx.emit("Reshape", [ctx.rows(table), ctx.const(np.zeros(0, np.int64), "int64", "scalar")],
                            hint="zero_row_index")
        ctx.memo[key] = ctx.emit("Pad", [padded, pads, zero_row], hint=f"{padded}_chunked", mode="constant")
        ctx.current = saved
    return ctx.memo[key]


def chunk_pointers(ctx: EmitContext, rowptr: str, chunk: int) -> tuple[str, str]:
    """``(rowptr, rowptr // chunk)``: the positions :func:`csr_chunked_sum` reads and the chunk of each."""
    key = ("chunk_ptr", rowptr, chunk)
    if key not in ctx.memo:
        saved, ctx.current = ctx.current, None
        ctx.memo[key] = ctx.emit("Div", [rowptr, ctx.const([chunk], "int64", "chunk")], hint="rowptr_chunk")
        ctx.current = saved
    return rowptr, ctx.memo[key]


def _padded_table(ctx: EmitContext, table: str, width: int, dtype: str) -> str:
    """``[table ‖ 0]`` as ``[R + 1, width]`` rows in ``dtype`` (index R reads the appended zero row), built once
    per scope: the pieces of :func:`csr_pieced_sum` read the one their branch builds before its ``Loop``."""
    key = ("padded_table", table, width, dtype)
    if key not in ctx.memo:
        t = ctx.value_as(table, dtype)
        if ctx.ranks[table] != 2:
            t = ctx.emit("Reshape", [t, ctx.const([0, width], "int64", "as2d")], hint="t_2d")
        zero_row = ctx.emit("ConstantOfShape", [ctx.const([1, width], "int64", "row1")], hint="zero_row",
                            value=helper.make_tensor("zero", ONNX_DTYPE[dtype], [1], [0]))
        ctx.memo[key] = ctx.emit("Concat", [t, zero_row], hint="t_pad", axis=0)  # row R = 0, read by padded[0]
    return ctx.memo[key]


def _unflatten(ctx: EmitContext, out: str, rows: str, trailing: tuple[int, ...]) -> str:
    if len(trailing) == 1:
        return out
    shape = ctx.emit("Concat", [rows, ctx.const(list(trailing), "int64", "trailing")], hint="out_shape", axis=0)
    return ctx.emit("Reshape", [out, shape], hint="unflat")


def _prefix_row_sums(ctx: EmitContext, padded_table: str, index: str, at_ptr: str, wide: str) -> str:
    """int32 ``[len(at_ptr) - 1, H]``: ``X = CumSum(padded_table[index])`` in ``wide``, then
    ``X[at_ptr][1:] - X[at_ptr][:-1]``."""
    gathered = ctx.emit("Gather", [padded_table, index], hint="msgs", axis=0)
    prefix = ctx.emit("CumSum", [gathered, ctx.const(0, "int64", "axis0")], hint="prefix")
    sums = _row_differences(ctx, ctx.emit("Gather", [prefix, at_ptr], hint="at_ptr", axis=0))
    return sums if wide == "int32" else ctx.emit("Cast", [sums], hint="sums32", to=TensorProto.INT32)


def _chunked_row_sums(ctx: EmitContext, padded_table: str, chunked: str, at_ptr: str, chunk_of: str, width: int,
                      chunk: int, narrow: str) -> str:
    """int32 ``[len(at_ptr) - 1, width]``: the chunked int32 prefix sums of :func:`csr_chunked_sum` over the
    rows ``padded_table[chunked]`` (dtype ``narrow``; ``len(chunked)`` a multiple of ``chunk``), read at
    ``at_ptr``."""
    gathered = ctx.emit("Gather", [padded_table, chunked], hint="msgs", axis=0)
    if narrow != "int32":
        gathered = ctx.emit("Cast", [gathered], hint="msgs32", to=TensorProto.INT32)
    by_chunk = ctx.emit("Reshape", [gathered, ctx.const([-1, chunk, width], "int64", "by_chunk")], hint="chunked")
    inner = ctx.emit("CumSum", [by_chunk, ctx.const(1, "int64", "axis1")], hint="inner")
    totals = ctx.emit("Slice", [inner, ctx.const([chunk - 1], "int64", "chunk_last"),
                                ctx.const([chunk], "int64", "chunk"), ctx.const([1], "int64", "one1")],
                      hint="chunk_totals")
    carry = ctx.emit("CumSum", [ctx.emit("Cast", [totals], hint="totals64", to=TensorProto.INT64),
                                ctx.const(0, "int64", "axis0")], hint="carry", exclusive=1)
    carry = ctx.emit("Reshape", [carry, ctx.const([-1, width], "int64", "as_rows")], hint="carry_rows")
    flat = ctx.emit("Reshape", [inner, ctx.const([-1, width], "int64", "as_rows")], hint="inner_rows")
    at = ctx.emit("Cast", [ctx.emit("Gather", [flat, at_ptr], hint="at_ptr", axis=0)], hint="at64",
                  to=TensorProto.INT64)
    x = ctx.emit("Add", [at, ctx.emit("Gather", [carry, chunk_of], hint="carry_at", axis=0)], hint="x64")
    return ctx.emit("Cast", [_row_differences(ctx, x)], hint="sums32", to=TensorProto.INT32)


def csr_gathered_sum(
    ctx: EmitContext, table: str, padded: str, rowptr: str, rows: str, trailing: tuple[int, ...],
    wide: str = "int64",
) -> str:
    """int32 ``[rows, *trailing]``: ``out[i] = sum(table[src[e]] for e with dst[e] == i)`` on ascending ``dst``.

    ``padded`` is :func:`padded_source` of ``src``, ``rowptr`` :func:`row_pointers` of dst's in-degree (both
    built once outside the branch and shared by every layer).  ``X = CumSum(table64[padded])`` over ``[E + 1, H]``
    rows, then ``S = X[rowptr][1:] - X[rowptr][:-1]``: Gather (multi-threaded) and CumSum over whole rows.
    ``wide="int32"`` when the caller proved every prefix sum below 2**31 in magnitude (:func:`csr32_condition`).
    (Gathering narrow rows here too measured slower on Cora: the table is cache-resident, the Casts cost more.)
    """
    width = int(np.prod(trailing))
    out = _prefix_row_sums(ctx, _padded_table(ctx, table, width, wide), padded, rowptr, wide)
    return _unflatten(ctx, out, rows, trailing)


def csr_chunked_sum(
    ctx: EmitContext, table: str, chunked: str, positions: tuple[str, str], rows: str, trailing: tuple[int, ...],
    chunk: int, narrow: str,
) -> str:
    """int32 ``[rows, *trailing]``: :func:`csr_gathered_sum` for any E, with int32 prefix sums that cannot
    overflow: the gathered ``[m * c, H]`` rows (:func:`chunked_source`; ``narrow`` bytes each) prefix-summed
    within chunks of ``c = chunk`` rows in int32 (``c * bound < 2**31``, :func:`chunk_length`), the chunk
    totals prefix-summed (exclusive) in int64 over ``[m, H]``, and ``X[p] = carry[p // c] + inner[p]`` formed
    in int64 only at the N + 1 row pointers (:func:`chunk_pointers`), so ``X[1:] - X[:-1]`` is each row sum,
    int32 by the IR's contract.  No value wraps anywhere (a uint32 assembly measured the same, but its final
    uint32 -> int32 Cast of negative sums is an out-of-range conversion).  Halves the bytes of the ``[E, H]``
    passes of the int64 branch.
    """
    width = int(np.prod(trailing))
    out = _chunked_row_sums(ctx, _padded_table(ctx, table, width, narrow), chunked, *positions, width, chunk, narrow)
    return _unflatten(ctx, out, rows, trailing)


PIECE_EDGES = 1 << 20
"""Edges per piece of :func:`csr_pieced_sum` on average (rows per piece are chosen from N and E at run time)."""


def csr_pieced_sum(
    ctx: EmitContext, table: str, padded: str, rowptr: str, rows: str, trailing: tuple[int, ...],
    chunk: int | None, narrow: str,
) -> str:
    """int32 ``[rows, *trailing]``: the CSR sums of :func:`csr_chunked_sum` (or, without a chunk, the int64
    prefix sums of :func:`csr_gathered_sum`) run by an ONNX ``Loop`` over pieces of whole rows, so only one
    piece's ``[E_k, H]`` buffers are alive at a time (bounded memory for any E).

    Piece k holds the ``P`` rows ``[k P, (k + 1) P)`` (``P = clip(N * PIECE_EDGES // E, 1, N)``: ~PIECE_EDGES
    edges each on average; a row is never split, so a hub row makes its piece larger) and their edges
    ``[lo, hi) = [rowptr[k P], rowptr[(k + 1) P])``; the row pointers are padded with E (empty rows) to whole
    pieces so that every piece yields ``[P, H]`` (a ``Loop`` stacks equal shapes).  The piece gathers
    ``padded[lo : hi + 1]``: its prefix sums are the graph's minus the constant ``X[lo - 1]``, which cancels in
    the differences at its local row pointers ``rowptr[k P : (k + 1) P + 1] - lo``.  Integer sums are exact,
    so the result does not depend on the piece size or the thread count.
    """
    width = int(np.prod(trailing))
    t = _padded_table(ctx, table, width, narrow if chunk is not None else "int64")
    one, zero = ctx.const([1], "int64", "one1"), ctx.const([0], "int64", "zero1")
    edges = ctx.emit("Slice", [rowptr, ctx.const([-1], "int64", "minus1"), ctx.const([2**62], "int64", "end")],
                     hint="edges")
    per = ctx.emit("Div", [ctx.emit("Mul", [rows, ctx.const([PIECE_EDGES], "int64", "piece_edges")], hint="np"),
                           ctx.emit("Max", [edges, one], hint="e1")], hint="piece_rows")
    per = ctx.emit("Max", [ctx.emit("Min", [per, rows], hint="piece_rows_n"), one], hint="piece_rows_1")
    pieces = ctx.emit("Div", [ctx.emit("Sub", [ctx.emit("Add", [rows, per], hint="n_p"), one], hint="n_p1"), per],
                      hint="pieces")
    extra = ctx.emit("Sub", [ctx.emit("Mul", [pieces, per], hint="rows_padded"), rows], hint="rows_extra")
    ptr = ctx.emit("Pad", [rowptr, ctx.emit("Concat", [zero, extra], hint="ptr_pads", axis=0)], hint="rowptr_padded",
                   mode="edge")
    span = ctx.emit("Add", [per, one], hint="piece_ptrs")

    def piece(k: str) -> str:
        start = ctx.emit("Mul", [ctx.emit("Reshape", [k, one], hint="k1"), per], hint="piece_start")
        at = ctx.emit("Slice", [ptr, start, ctx.emit("Add", [start, span], hint="piece_stop")], hint="piece_ptr")
        lo = ctx.emit("Slice", [at, zero, one], hint="lo")
        hi = ctx.emit("Slice", [at, ctx.const([-1], "int64", "minus1"), ctx.const([2**62], "int64", "end")],
                      hint="hi")
        local = ctx.emit("Sub", [at, lo], hint="local_ptr")
        index = ctx.emit("Slice", [padded, lo, ctx.emit("Add", [hi, one], hint="hi1")], hint="piece_src")
        if chunk is None:
            return _prefix_row_sums(ctx, t, index, local, "int64")
        chunk_of = ctx.emit("Div", [local, ctx.const([chunk], "int64", "chunk")], hint="local_chunk")
        return _chunked_row_sums(ctx, t, chunked_source(ctx, table, index, chunk), local, chunk_of, width, chunk,
                                 narrow)

    body = emit_loop_body(ctx, "pieces", piece)
    trips = ctx.emit("Reshape", [pieces, ctx.const(np.zeros(0, np.int64), "int64", "scalar")], hint="trips")
    stacked = ctx.emit("Loop", [trips, ctx.const(np.array(True), "bool", "true")], hint="piece_sums", body=body)
    flat = ctx.emit("Reshape", [stacked, ctx.const([-1, width], "int64", "as_rows")], hint="pieces_flat")
    out = ctx.emit("Slice", [flat, zero, rows], hint="piece_rows_out")
    return _unflatten(ctx, out, rows, trailing)


@contextmanager
def _scope(ctx: EmitContext) -> Iterator[None]:
    """A fresh node list and caches for a subgraph; values it creates stay inside it (memo and cast caches are
    restored), values emitted before are read from the outer scope, constants go to the top-level initializers."""
    saved = (ctx.nodes, dict(ctx.memo), dict(ctx._cast_cache), dict(ctx._u8_cache))
    ctx.nodes = []
    try:
        yield
    finally:
        ctx.nodes, ctx.memo, ctx._cast_cache, ctx._u8_cache = saved[0], saved[1], saved[2], saved[3]


def _identity(ctx: EmitContext, value: str, name: str) -> str:
    out = ctx.fresh(name)
    ctx.nodes.append(helper.make_node("Identity", [value], [out], name=ctx.fresh(f"n_{name}")))
    return out


def emit_branch(ctx: EmitContext, name: str, build: Callable[[], str], dtype: int = TensorProto.INT32
                ) -> onnx.GraphProto:
    """Run ``build`` in a :func:`_scope`; its nodes become an ``If`` branch whose one output is the result
    (int32 unless ``dtype`` says otherwise)."""
    with _scope(ctx):
        out = _identity(ctx, build(), f"{name}_out")
        nodes = ctx.nodes
    return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(out, dtype, None)])


def emit_loop_body(ctx: EmitContext, name: str, build: Callable[[str], str]) -> onnx.GraphProto:
    """``Loop`` body (no carried values): ``build(k)`` of the int64 scalar iteration k, in a :func:`_scope`, is
    its one int32 scan output; the condition passes through (the trip count ends the loop)."""
    k, cond = ctx.fresh(f"{name}_k"), ctx.fresh(f"{name}_cond")
    with _scope(ctx):
        out = _identity(ctx, build(k), f"{name}_out")
        cond_out = _identity(ctx, cond, f"{name}_cond_out")
        nodes = ctx.nodes
    inputs = [helper.make_tensor_value_info(k, TensorProto.INT64, []),
              helper.make_tensor_value_info(cond, TensorProto.BOOL, [])]
    outputs = [helper.make_tensor_value_info(cond_out, TensorProto.BOOL, []),
               helper.make_tensor_value_info(out, TensorProto.INT32, None)]
    return helper.make_graph(nodes, name, inputs, outputs)
