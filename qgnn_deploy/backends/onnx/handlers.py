"""One ONNX emitter per IR op, each bit-exact against :mod:`qgnn_deploy.ir.interpreter`.

Pattern choices follow ``shared/notes/toolchain.md`` Q1 (ORT 1.31 CPU):

* activations reach MatMulInteger as uint8 (int8 values are shifted by +128 and
  the zero point with them): MLAS's u8 x s8 kernel is ~10x faster than s8 x s8;
* the neighbour sum is ScatterElements(reduction="add") on int32, which is
  exact and deterministic with several threads (ScatterND-add is racy), run
  column by column as 1-D scatters over the shared ``[E]`` index (see
  ``_scatter``); 1-D lookups use GatherElements, not Gather (ORT 1.31's 1-D
  Gather copies each element with memcpy, ~15x slower);
* int4 weights are an INT4 initializer followed by Cast(to=INT8), never
  DequantizeLinear -> MatMul, which ORT rewrites into the inexact MatMulNBits;
* requantize runs in float64 (Mul, Add, Floor, Clip: ``_requantize_f64``) when
  static bounds prove that exact (int32 accumulators, |M| < 2**53, shifts small
  enough that any rounded product saturates anyway); otherwise in int64/uint64
  with an exact floor division by 2**n done as a logical right shift of an
  offset value (ONNX Div truncates toward zero, and ``(v - Mod(v, d)) / d`` is
  exact but 4x slower in ORT);
* int8 weights that could saturate MLAS's AVX2 u8 x s8 kernel run u8 x u8
  (weights + 128), or, exported for a VNNI CPU, as two 7-bit halves in one
  u8 x s8 GEMM: exact either way (see ``matmul``, ``_split_gemm``);
* constant operands of broadcasting ops get the other operand's rank
  (``exporter.match_constant_ranks``: ORT's broadcaster is ~20x faster then);
* int64 values are never bounded with Clip/Max/Min/ReduceMax: ORT 1.31's CPU
  kernels for those get int64 values just outside the int32 range wrong (e.g.
  ``Clip(4285714437, -1000, 1000)`` returns 4285714437; see ``_clip64``).
  Less/Greater + Where and TopK are exact and are used instead.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from qgnn_deploy.backends.onnx import segment
from qgnn_deploy.backends.onnx.exporter import ONNX_DTYPE, EmitContext, compute_dtype, handler
from qgnn_deploy.errors import QgnnError
from qgnn_deploy.ir.graph import Node
from qgnn_deploy.ir.ops import steps_search_plan

_FLOAT_SAFE = 2.0**40  # clip bound before float -> int64 casts; far outside every integer dtype we narrow to


def _info(dtype: str) -> np.iinfo:
    return np.iinfo(dtype)


def _clamped_bounds(lo: int, hi: int, dtype: str) -> tuple[int, int]:
    info = _info(dtype)
    return max(int(lo), int(info.min)), min(int(hi), int(info.max))


def _clip64(ctx: EmitContext, v: str, lo: str | None, hi: str | None, output: str | None = None) -> str:
    """Bound an int64 tensor by (broadcast) int64 bounds with Less/Greater + Where.

    ORT 1.31's int64 Clip/Max/Min mis-compare values just outside the int32 range
    (seen on this x86 host: 316 of ~6000 random elements wrong), so they are avoided.
    """
    if lo is not None:
        below = ctx.emit("Less", [v, lo], hint="below")
        v = ctx.emit("Where", [below, lo, v], hint="lo_clip", output=output if hi is None else None)
    if hi is not None:
        above = ctx.emit("Greater", [v, hi], hint="above")
        v = ctx.emit("Where", [above, hi, v], hint="hi_clip", output=output)
    return v


def _unsqueeze_to(ctx: EmitContext, vec: str, rank: int) -> str:
    """``vec[E]`` reshaped to ``[E, 1, ..., 1]`` (``rank`` dims) for broadcasting."""
    if rank <= 1:
        return vec
    return ctx.emit("Unsqueeze", [vec, ctx.const(list(range(1, rank)), "int64", "axes")], hint="unsq")


def _expanded_index(ctx: EmitContext, idx: str, values: str) -> str:
    """ScatterElements needs the index with the shape of the updates: ``idx[:, None, ...]`` broadcast."""
    rank = ctx.ranks[values]
    if rank <= 1:
        return ctx.value(idx)
    key = ("expanded_index", idx, values)
    if key not in ctx.memo:
        col = _unsqueeze_to(ctx, ctx.value(idx), rank)
        ctx.memo[key] = ctx.emit("Expand", [col, ctx.shape(values)], hint="idx_e")
    return ctx.memo[key]


def _static_trailing(ctx: EmitContext, values: str) -> tuple[int, ...] | None:
    trailing = ctx.shapes[values][1:]
    if ctx.ranks[values] >= 2 and all(isinstance(d, int) and d > 0 for d in trailing):
        return tuple(int(d) for d in trailing)  # type: ignore[arg-type]
    return None


_MAX_COLUMNS = 256  # wider scatters keep one flat ScatterElements (thousands of nodes would bloat the model)


def _producer(ctx: EmitContext, name: str) -> Node | None:
    key = ("producer", name)
    if key not in ctx.memo:
        ctx.memo[key] = next((n for n in ctx.graph.nodes if name in n.outputs), None)  # type: ignore[assignment]
    return ctx.memo[key]  # type: ignore[return-value]


def _row_scaled_transposed(ctx: EmitContext, table: str, width: int) -> str | None:
    """int32 ``table.T`` when ``table = mul(a[R, H], r[R, 1])`` in int32 (GCN's message times its source's edge
    factor): ``Transpose(a) * r.T`` runs ORT's broadcast as H inner loops of R, not R loops of H (~25 -> ~10 us on
    Cora), and the transpose the columns need anyway moves onto ``a``.  Same int32 products; None otherwise."""
    prod = _producer(ctx, table)
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
    prod = _producer(ctx, values)
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
    trailing = _static_trailing(ctx, values)
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
        base = _unsqueeze_to(ctx, base, len(trailing) + 1)
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

    Keyed by ``ref``'s first dimension when that is a number or a graph input's named dimension (equal names are
    equal sizes by the input contract), so ``degree(dst, x)`` and ``scatter_add(..., dst, in_degree)`` share one
    ScatterElements."""
    first = ctx.shapes[ref][0]
    named = {d for v in ctx.graph.inputs for d in v.shape if isinstance(d, str)}
    key = ("degree", idx, first if isinstance(first, int) or first in named else ref)
    if key not in ctx.memo:
        zeros = _filled(ctx, ctx.rows(ref), 0, "int32")
        ones = _filled(ctx, ctx.shape(idx), 1, "int32")
        ctx.memo[key] = ctx.emit("ScatterElements", [zeros, ctx.value(idx), ones], hint="deg", axis=0,
                                 reduction="add")
    return ctx.memo[key]


# --------------------------------------------------------------------------- boundary (float) ops
def _round_div(ctx: EmitContext, x: str, scale: str) -> str:
    return ctx.emit("Round", [ctx.emit("Div", [x, scale], hint="x_over_s")], hint="rounded")


@handler("quantize")
def quantize(ctx: EmitContext, node: Node) -> None:
    """QuantizeLinear for 8-bit outputs (divides and rounds half-to-even like ``np.rint(x / s)``)."""
    a, out, dtype = node.attrs, node.outputs[0], node.attrs["dtype"]
    x = ctx.value_as(node.inputs[0], "float32")
    zp = int(a["zero_point"])
    scale = ctx.const(np.float32(a["scale"]), "float32", "scale")
    lo, hi = _clamped_bounds(a["qmin"], a["qmax"], dtype)

    def linear(zero: int, qdtype: str, lo_: int, hi_: int, output: str | None) -> str:
        full = (lo_, hi_) == (_info(qdtype).min, _info(qdtype).max)
        q = ctx.emit("QuantizeLinear", [x, scale, ctx.const(zero, qdtype, "zp")], hint="q",
                     output=output if full else None)
        if not full:
            q = ctx.emit("Clip", [q, ctx.const(lo_, qdtype, "lo"), ctx.const(hi_, qdtype, "hi")], hint="q_clip",
                         output=output)
        return q

    if dtype in ("uint8", "int8") and _info(dtype).min <= zp <= _info(dtype).max:
        linear(zp, dtype, lo, hi, out)
        if dtype == "int8":
            ctx.u8_makers[out] = lambda: linear(zp + 128, "uint8", lo + 128, hi + 128, None)
        return
    r = _round_div(ctx, x, scale)
    if dtype in ("uint8", "int8", "int16"):
        c = ctx.emit("Clip", [r, ctx.const(lo - zp, "float32"), ctx.const(hi - zp, "float32")], hint="clip")
        if zp:
            c = ctx.emit("Add", [c, ctx.const(zp, "float32", "zp")], hint="plus_zp")
        ctx.emit("Cast", [c], output=out, to=ONNX_DTYPE[dtype])
        return
    c = ctx.emit("Clip", [r, ctx.const(-_FLOAT_SAFE, "float32"), ctx.const(_FLOAT_SAFE, "float32")], hint="safe")
    q = ctx.emit("Cast", [c], hint="q64", to=TensorProto.INT64)
    if zp:
        q = ctx.emit("Add", [q, ctx.const(zp, "int64", "zp")], hint="plus_zp")
    q = _clip64(ctx, q, ctx.const(lo, "int64", "lo"), ctx.const(hi, "int64", "hi"))
    ctx.emit("Cast", [q], output=out, to=ONNX_DTYPE[dtype])


@handler("quantize_rows")
def quantize_rows(ctx: EmitContext, node: Node) -> None:
    """Per-row step and bounds (A2Q): Div/Round then Max/Min against the broadcast row bounds."""
    out, dtype = node.outputs[0], node.attrs["dtype"]
    x = ctx.value_as(node.inputs[0], "float32")
    scale = ctx.value_as(node.inputs[1], "float32")
    r = _round_div(ctx, x, scale)
    info = _info(dtype)
    if dtype in ("uint8", "int8", "int16"):
        def bound(name: str) -> str:
            f = ctx.emit("Cast", [ctx.value_as(name, "int64")], hint="bound_f", to=TensorProto.FLOAT)
            return ctx.emit("Clip", [f, ctx.const(info.min, "float32"), ctx.const(info.max, "float32")],
                            hint="bound")

        lo, hi = bound(node.inputs[2]), bound(node.inputs[3])
        y = ctx.emit("Min", [ctx.emit("Max", [r, lo], hint="lo_clip"), hi], hint="hi_clip")
        ctx.emit("Cast", [y], output=out, to=ONNX_DTYPE[dtype])
        if dtype == "int8":
            ctx.u8_makers[out] = lambda: ctx.emit(
                "Cast", [ctx.emit("Add", [y, ctx.const(128.0, "float32")], hint="p128")], hint="u8",
                to=TensorProto.UINT8)
        return
    c = ctx.emit("Clip", [r, ctx.const(-_FLOAT_SAFE, "float32"), ctx.const(_FLOAT_SAFE, "float32")], hint="safe")
    q = ctx.emit("Cast", [c], hint="q64", to=TensorProto.INT64)
    q = _clip64(ctx, q, ctx.value_as(node.inputs[2], "int64"), ctx.value_as(node.inputs[3], "int64"))
    ctx.emit("Cast", [q], output=out, to=ONNX_DTYPE[dtype])


@handler("dequantize")
def dequantize(ctx: EmitContext, node: Node) -> None:
    """``(q - zp) * scale``: the subtraction stays integer unless float is exact (<= 16-bit input)."""
    a, out = node.attrs, node.outputs[0]
    src = node.inputs[0]
    zp = int(a["zero_point"])
    scale = ctx.const(np.float32(a["scale"]), "float32", "scale")
    if ctx.dtypes[src] in ("uint8", "int8", "int16"):
        f = ctx.value_as(src, "float32")
        if zp:
            f = ctx.emit("Sub", [f, ctx.const(zp, "float32", "zp")], hint="minus_zp")
    else:
        q = ctx.value_as(src, "int64")
        if zp:
            q = ctx.emit("Sub", [q, ctx.const(zp, "int64", "zp")], hint="minus_zp")
        f = ctx.emit("Cast", [q], hint="as_f", to=TensorProto.FLOAT)
    ctx.emit("Mul", [f, scale], output=out)


# --------------------------------------------------------------------------- integer ops
@handler("unpack_int4")
def unpack_int4(ctx: EmitContext, node: Node) -> None:
    """A packed constant becomes an ONNX INT4 initializer (same nibble order) + Cast(to=INT8)."""
    src, out = node.inputs[0], node.outputs[0]
    shape = [int(d) for d in node.attrs["shape"]]
    count = int(np.prod(shape)) if shape else 1
    if ctx.is_const(src):
        packed = np.ascontiguousarray(ctx.const_array(src).astype(np.uint8).reshape(-1))
        if packed.size * 2 < count:
            raise QgnnError(f"unpack_int4 {node.name!r}: {packed.size} bytes cannot hold {count} int4 values")
        if ctx.opset < 21:  # INT4 tensors need opset 21: store the unpacked int8 values instead (2x the bytes)
            nib = np.empty(packed.size * 2, np.int16)
            nib[0::2], nib[1::2] = packed & 0x0F, packed >> 4
            values = np.where(nib >= 8, nib - 16, nib)[:count].astype(np.int8).reshape(shape)
            ctx.emit("Identity", [ctx.const(values, "int8", f"{src}_int8")], output=out)
            return
        need = (count + 1) // 2
        raw = packed[:need].copy()
        if count % 2:  # ONNX wants the unused high nibble of the last byte zero
            raw[-1] &= 0x0F
        name = ctx.fresh(f"{src}_int4")
        ctx.initializers[name] = helper.make_tensor(name, TensorProto.INT4, shape, raw.tobytes(), raw=True)
        ctx.emit("Cast", [name], output=out, to=TensorProto.INT8)
        return
    # Runtime-packed input (no folder emits this today): nibble arithmetic in int32.
    p = ctx.value_as(src, "int32")
    p = ctx.emit("Reshape", [p, ctx.const([-1, 1], "int64", "shape")], hint="col")
    lo = ctx.emit("BitwiseAnd", [p, ctx.const(15, "int32")], hint="lo")
    hi = ctx.emit("BitwiseAnd", [ctx.emit("Div", [p, ctx.const(16, "int32")], hint="shr"), ctx.const(15, "int32")],
                  hint="hi")
    nib = ctx.emit("Reshape", [ctx.emit("Concat", [lo, hi], hint="pair", axis=1), ctx.const([-1], "int64", "flat")],
                   hint="nib")
    nib = ctx.emit("Slice", [nib, ctx.const([0], "int64"), ctx.const([count], "int64")], hint="used")
    signed = ctx.emit("Sub", [ctx.emit("BitwiseXor", [nib, ctx.const(8, "int32")], hint="xor8"),
                              ctx.const(8, "int32")], hint="signed")
    signed = ctx.emit("Reshape", [signed, ctx.const(shape, "int64", "shape")], hint="shaped")
    ctx.emit("Cast", [signed], output=out, to=TensorProto.INT8)


def _weight_range(ctx: EmitContext, name: str) -> tuple[int, int] | None:
    """Static value range of a matmul weight: constants, and unpacked int4 constants ([-8, 7])."""
    if ctx.is_const(name):
        arr = ctx.const_array(name)
        return (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
    producer = next((n for n in ctx.graph.nodes if name in n.outputs), None)
    if producer is not None and producer.op == "unpack_int4":
        return (-8, 7)
    return None


def _activation_max(ctx: EmitContext, name: str, as_u8: bool) -> int:
    """Largest raw uint8 value MatMulInteger can see for activation ``name`` (255 unless a producer bounds it)."""
    producer = next((n for n in ctx.graph.nodes if name in n.outputs), None)
    if producer is None or producer.op not in ("quantize", "requantize", "clamp"):
        return 255
    a = producer.attrs
    if producer.op == "requantize" and len(producer.inputs) > 4 and producer.inputs[4]:
        return 255  # per-row upper bounds: not analysed
    hi = a.get("hi") if producer.op == "clamp" else a.get("qmax", np.iinfo(ctx.dtypes[name]).max)
    return int(min(255, int(hi) + (128 if as_u8 else 0)))


_SPLIT_MIN_K = 64  # shorter GEMMs cost less than the halves' combine (~15 us on Cora's 2708 rows)


def _split_gemm(ctx: EmitContext, a_val: str, azp: str, b_name: str, out: str) -> None:
    """``A @ W`` as one u8 x s8 MatMulInteger over ``[Wa | Wb]`` (``Wa = clip(W, -64, 64)``, ``Wb = W - Wa``), then
    ``Ya + Yb``.

    Both halves lie in [-64, 64], so two adjacent u8 x s8 products stay within int16 (255 * 128 = 32640) and
    vpmaddubsw cannot saturate: exact on every CPU.  Where MLAS's u8 x s8 kernel is VNNI (``vpdpbusd``) it runs
    the 2H columns faster than the u8 x u8 kernel (widened to int16) runs H: Cora's 2708x1433x16 layer measured
    1.7x faster here (Zen 5), plus ~20 us for the Split and Add (``ort_aggregation.md``, section 7).  Each half
    sums at most 255 * 64 * K in magnitude, so the caller keeps it for K with that below 2**31.
    """
    w = ctx.const_array(b_name).astype(np.int16)
    wa = np.clip(w, -64, 64)
    both = ctx.const(np.concatenate([wa, w - wa], axis=1), "int8", f"{b_name}_halves")
    y = ctx.emit("MatMulInteger", [a_val, both, azp], hint="halves_acc")
    sizes = ctx.const([w.shape[1], w.shape[1]], "int64", "halves")
    ya = ctx.emit("Split", [y, sizes], hint="half", n_outputs=2, axis=-1)
    ctx.emit("Add", [ya, ctx.nodes[-1].output[1]], output=out)


@handler("matmul")
def matmul(ctx: EmitContext, node: Node) -> None:
    """MatMulInteger on u8 activations x s8 weights with zero-point inputs; int32 MatMul otherwise.

    On x86 CPUs without VNNI, MLAS's u8 x s8 kernel (vpmaddubsw) saturates when
    two adjacent u8*s8 products add up beyond int16, i.e. for weights outside
    [-64, 63] against activations that can exceed 127.  With ``ctx.saturation_safe``
    (the default) such weights (constant or runtime) go to the u8 x u8 kernel
    (weights shifted by +128), exact on every CPU.
    """
    a_name, b_name = node.inputs
    out = node.outputs[0]
    a_zp, b_zp = int(node.attrs.get("a_zero_point", 0)), int(node.attrs.get("b_zero_point", 0))
    adt, bdt = ctx.dtypes[a_name], ctx.dtypes[b_name]
    a_ok = (adt == "uint8" and 0 <= a_zp <= 255) or (adt == "int8" and -128 <= a_zp <= 127)
    b_ok = bdt in ("int8", "uint8") and _info(bdt).min <= b_zp <= _info(bdt).max
    if a_ok and b_ok:
        if adt == "int8":
            a_val, a_zp = ctx.as_u8(a_name), a_zp + 128
        else:
            a_val = ctx.value(a_name)
        azp = ctx.const(a_zp, "uint8", "a_zp")
        rng = _weight_range(ctx, b_name) if bdt == "int8" else None
        if bdt == "int8" and ctx.saturation_safe and rng is None:  # runtime int8 weights: u8 x u8
            inputs = [a_val, ctx.as_u8(b_name), azp, ctx.const(b_zp + 128, "uint8", "b_zp")]
            ctx.emit("MatMulInteger", inputs, output=out)
            return
        # vpmaddubsw adds two adjacent u8*s8 products in int16: only leave u8 x s8 when that can overflow
        if rng is not None:
            risky = 2 * _activation_max(ctx, a_name, adt == "int8") * max(-rng[0], rng[1]) > 32767
        unsafe = bdt == "int8" and ctx.saturation_safe and rng is not None and risky and (rng[0] < -64 or rng[1] > 63)
        if unsafe and ctx.int8_gemm == "split" and not b_zp and ctx.ranks[b_name] == 2 \
                and _SPLIT_MIN_K <= ctx.const_array(b_name).shape[0] < 2**31 // (255 * 64):
            _split_gemm(ctx, a_val, azp, b_name, out)
            return
        if unsafe:
            # W + 128 as uint8 with zero point b_zp + 128: MLAS's u8 x u8 kernel widens to int16 before its
            # multiply-add, so it cannot saturate.  One GEMM; measured 1.4x (Cora 2708x1433x16) to 2.3x
            # (10^5x128x16) faster here than the former split W = 128*A + B into two u8 x s8 GEMMs
            # (examples/results/ort_aggregation.md, section 5).
            w_u8 = (ctx.const_array(b_name).astype(np.int16) + 128).astype(np.uint8)
            inputs = [a_val, ctx.const(w_u8, "uint8", f"{b_name}_u8"), azp,
                      ctx.const(b_zp + 128, "uint8", "b_zp")]
            ctx.emit("MatMulInteger", inputs, output=out)
            return
        inputs = [a_val, ctx.value(b_name), azp]
        if b_zp:
            inputs.append(ctx.const(b_zp, bdt, "b_zp"))
        ctx.emit("MatMulInteger", inputs, output=out)
        return
    lhs, rhs = ctx.value_as(a_name, "int32"), ctx.value_as(b_name, "int32")
    if a_zp:
        lhs = ctx.emit("Sub", [lhs, ctx.const(a_zp, "int32", "a_zp")], hint="a_centered")
    if b_zp:
        rhs = ctx.emit("Sub", [rhs, ctx.const(b_zp, "int32", "b_zp")], hint="b_centered")
    ctx.emit("MatMul", [lhs, rhs], output=out)


def _row_wide(ctx: EmitContext, name: str, width: int) -> str | None:
    """int32 ``[R, width]`` with every column equal to the ``[R, 1]`` IR value ``name``, where it comes cheap: a
    row sum of uint8 values as ``MatMulInteger(u8, ones[width, width])`` (each column sums the row; parallel,
    exact: at most 255 * width, and 255 + 255 per int16 pair), a constant times/plus/minus such a value, or any
    value below 2**24 in magnitude through a float32 ``MatMul(x, ones[1, width])`` (``x * 1.0``: exact).

    Why: ORT 1.31 runs ``[R, H] op [R, 1]`` with one inner call per row (~22 us on Cora's 2708 rows); with the
    operand already ``[R, H]`` the op is one loop (~4 us for Add), and the MatMulInteger replaces the ReduceSum.
    LoRAP's softmax divides and adds its row sum: ``alpha = (510 * e + S) // (2 * S)``.  None otherwise.
    """
    key = ("row_wide", name, width)
    if key in ctx.memo:
        return ctx.memo[key]  # type: ignore[return-value]
    wide = None
    prod = _producer(ctx, name)
    if prod is not None and ctx.dtypes[name] == "int32" and ctx.ranks[name] == 2 and ctx.shapes[name][1] == 1:
        if prod.op == "reduce_sum" and int(prod.attrs.get("axis", -1)) in (1, -1) and prod.attrs.get("keepdims", True) \
                and ctx.ranks[prod.inputs[0]] == 2 and _static_trailing(ctx, prod.inputs[0]) == (width,):
            src = prod.inputs[0]
            cast = _producer(ctx, src)
            u8 = src if ctx.dtypes[src] == "uint8" else (
                cast.inputs[0] if cast is not None and cast.op == "cast" and ctx.dtypes[cast.inputs[0]] == "uint8"
                else None)
            if u8 is not None:
                wide = ctx.emit("MatMulInteger", [ctx.value(u8), ctx.const(np.ones((width, width)), "int8", "ones_sq")],
                                hint=f"{name}_wide")
        elif prod.op in ("mul", "add", "sub") and len(prod.inputs) == 2:
            a, b = prod.inputs
            ca, cb = ctx.is_const(a) and ctx.const_array(a).size == 1, ctx.is_const(b) and ctx.const_array(b).size == 1
            inner = _row_wide(ctx, b if ca else a, width) if ca != cb else None
            if inner is not None:
                c = ctx.value_as(a if ca else b, "int32")
                wide = ctx.emit({"mul": "Mul", "add": "Add", "sub": "Sub"}[prod.op], [c, inner] if ca else [inner, c],
                                hint=f"{name}_wide")
        bound = _abs_bound(ctx, name) if wide is None else None
        if bound is not None and bound < 2**24:
            # any float32-exact value: Cast, K = 1 float32 MatMul with ones (x * 1.0, exact), Cast back
            f = ctx.emit("Cast", [ctx.value_as(name, "int32")], hint=f"{name}_f32", to=TensorProto.FLOAT)
            f = ctx.emit("MatMul", [f, ctx.const(np.ones((1, width)), "float32", "ones_row")], hint=f"{name}_wide_f")
            wide = ctx.emit("Cast", [f], hint=f"{name}_wide", to=TensorProto.INT32)
    ctx.memo[key] = wide  # type: ignore[assignment]
    return wide


def _wide_operands(ctx: EmitContext, node: Node, cd: str) -> list[str]:
    """The ONNX operands of binary ``node`` in ``cd``, a ``[R, 1]`` one replaced by its :func:`_row_wide` copy when
    the result is ``[R, H]``."""
    vals = [ctx.value_as(i, cd) for i in node.inputs]
    out = ctx.shapes[node.outputs[0]]
    if cd != "int32" or ctx.ranks[node.outputs[0]] != 2 or not isinstance(out[1], int) or out[1] < 2:
        return vals
    for k, name in enumerate(node.inputs):
        if ctx.ranks[name] == 2 and ctx.shapes[name] == (out[0], 1):
            wide = _row_wide(ctx, name, out[1])
            if wide is not None:
                vals[k] = wide
    return vals


def _binary(onnx_op: str):
    def emit(ctx: EmitContext, node: Node) -> None:
        res = ctx.dtypes[node.outputs[0]]
        cd = compute_dtype(res)
        v = ctx.emit(onnx_op, _wide_operands(ctx, node, cd), output=node.outputs[0] if cd == res else None)
        if cd != res:
            ctx.narrow_to(v, cd, res, node.outputs[0])

    emit.__doc__ = f"Integer {onnx_op} in int32/int64 (ORT has no int8/int16 {onnx_op}), narrowed to the IR dtype."
    return emit


add = handler("add")(_binary("Add"))
sub = handler("sub")(_binary("Sub"))
mul = handler("mul")(_binary("Mul"))


def _nonnegative(ctx: EmitContext, name: str, depth: int = 0) -> bool:
    """True if integer IR value ``name`` is statically >= 0 (unsigned, a non-negative constant or table, or a
    sum/product/cast/reduce_sum of such values)."""
    dt = ctx.dtypes[name]
    if dt.startswith("uint"):
        return True
    if ctx.is_const(name):
        arr = np.asarray(ctx.const_array(name))
        return not arr.size or bool(arr.min() >= 0)
    prod = _producer(ctx, name)
    if prod is None or depth >= 32:
        return False
    if prod.op in ("cast", "reduce_sum", "repeat_cols"):
        return _nonnegative(ctx, prod.inputs[0], depth + 1)
    if prod.op in ("add", "mul"):
        return all(_nonnegative(ctx, i, depth + 1) for i in prod.inputs)
    if prod.op in ("lut", "lut_steps"):
        return _nonnegative(ctx, prod.inputs[1 if prod.op == "lut" else 2], depth + 1)
    return False


@handler("div_floor")
def div_floor(ctx: EmitContext, node: Node) -> None:
    """Floor division as ``(a - Mod(a, b)) / b``: exact because the numerator is a multiple of b.

    The divisor is positive by the op's contract, so a numerator proven non-negative (LoRAP's softmax
    weights) needs only ONNX's truncating Div: two fewer passes, Mod being one of ORT's slower kernels."""
    res = ctx.dtypes[node.outputs[0]]
    cd = compute_dtype(res)
    num, den = _wide_operands(ctx, node, cd)
    if _nonnegative(ctx, node.inputs[0]):
        exact = num
    else:
        rem = ctx.emit("Mod", [num, den], hint="rem", fmod=0)
        exact = ctx.emit("Sub", [num, rem], hint="num_exact")
    q = ctx.emit("Div", [exact, den], output=node.outputs[0] if cd == res else None, hint="q")
    if cd != res:
        ctx.narrow_to(q, cd, res, node.outputs[0])


@handler("cast")
def cast(ctx: EmitContext, node: Node) -> None:
    """Plain Cast (the interpreter guarantees the value fits); a value a float64 requantize produced is cast from
    its wider exact source (one Cast, or none, instead of two)."""
    if node.inputs[0] in ctx.exact_sources:
        src, src_dt = ctx.exact_sources[node.inputs[0]]
        ctx.narrow_to(src, src_dt, node.attrs["dtype"], node.outputs[0])
        return
    ctx.narrow_to(ctx.value(node.inputs[0]), ctx.dtypes[node.inputs[0]], node.attrs["dtype"], node.outputs[0])


@handler("clamp")
def clamp(ctx: EmitContext, node: Node) -> None:
    """Clip in the input dtype (bounds clamped to its range; int16 goes through int32)."""
    src, out = node.inputs[0], node.outputs[0]
    dt = ctx.dtypes[src]
    lo, hi = _clamped_bounds(node.attrs["lo"], node.attrs["hi"], dt)
    if dt == "int64":
        _clip64(ctx, ctx.value(src), ctx.const(lo, "int64", "lo"), ctx.const(hi, "int64", "hi"), output=out)
        return
    work = dt if dt in ("uint8", "int8", "int32") else "int32"
    v = ctx.emit("Clip", [ctx.value_as(src, work), ctx.const(lo, work, "lo"), ctx.const(hi, work, "hi")],
                 output=out if work == dt else None, hint="clip")
    if work != dt:
        ctx.narrow_to(v, work, dt, out)


_F64_EXACT = 1 << 53  # every integer of magnitude <= 2**53 is a float64


def _abs_bound(ctx: EmitContext, name: str, depth: int = 0) -> int | None:
    """A static bound on ``|value|`` of integer IR value ``name`` (None if unknown).

    From constants, lookup tables, casts and products of bounded values, else the dtype's range
    (int64/uint64/float values have none): enough to prove a runtime requantize multiplier such as
    ``edge_factor * M`` below 2**53.
    """
    dt = ctx.dtypes[name]
    if ctx.is_const(name):
        arr = np.asarray(ctx.const_array(name))
        return int(np.abs(arr.astype(np.int64)).max()) if arr.size else 0
    bounds: list[int] = []
    if dt in _INT32_SAFE or dt == "uint32":
        bounds.append(max(-int(_info(dt).min), int(_info(dt).max)))
    prod = _producer(ctx, name)
    if prod is not None and depth < 32:
        if prod.op in ("cast", "repeat_cols"):
            b = _abs_bound(ctx, prod.inputs[0], depth + 1)
        elif prod.op == "mul":
            ba, bb = (_abs_bound(ctx, i, depth + 1) for i in prod.inputs)
            b = None if ba is None or bb is None else ba * bb
        elif prod.op == "lut":
            b = _abs_bound(ctx, prod.inputs[1], depth + 1)
        elif prod.op == "lut_steps":
            b = _abs_bound(ctx, prod.inputs[2], depth + 1)
        else:
            b = None
        if b is not None:
            bounds.append(b)
    return min(bounds) if bounds else None


def _scale_f64(ctx: EmitContext, acc: str, acc_ir: str, scale: np.ndarray) -> str:
    """``acc * scale`` in float64 for a constant ``scale``; a per-column ``[1, H]`` scale as ``MatMul(acc,
    diag(scale))``.

    Why: ORT 1.31 broadcasts ``[N, H] * [1, H]`` with one inner call per row (~27 us for Cora's 2708 x 16), while
    its float64 MatMul is one parallel GEMM (~15 us at 1 thread).  Same values: each output is
    ``acc[c] * scale[c]`` (one correctly rounded product, or one fused multiply-add onto an exact zero) plus
    exact zeros ``acc[k] * 0``, so the float64 requantize's proof is unchanged.
    """
    trailing = _static_trailing(ctx, acc_ir)
    if scale.size > 1 and np.all(scale == scale.flat[0]):
        scale = scale.reshape(-1)[:1].reshape(())
    if scale.size > 1 and ctx.ranks[acc_ir] == 2 and trailing is not None and scale.shape == (1, trailing[0]):
        return ctx.emit("MatMul", [acc, ctx.const(np.diag(scale[0]), "float64", "m_diag")], hint="scaled")
    return ctx.emit("Mul", [acc, ctx.const(scale, "float64", "m_scaled")], hint="scaled")


def _row_widened(ctx: EmitContext, scale: str, scale_ir: str, acc_ir: str) -> str:
    """A float64 per-row ``[R, 1]`` scale as ``[R, H]`` (``MatMul(scale, ones[1, H])``) when ``acc_ir`` is
    ``[R, H]``: ORT 1.31 broadcasts ``[R, H] * [R, 1]`` with one inner call per row (~25 us on Cora's 2708 rows),
    a K = 1 float64 MatMul plus a same-shape Mul take ~10 us.  ``x * 1.0`` is exact, so the product is the same."""
    trailing = _static_trailing(ctx, acc_ir)
    if ctx.ranks[acc_ir] != 2 or trailing is None or trailing[0] < 2 or ctx.ranks[scale_ir] != 2 \
            or ctx.shapes[scale_ir][1] != 1:
        return scale
    return ctx.emit("MatMul", [scale, ctx.const(np.ones((1, trailing[0])), "float64", "ones_row")], hint="scale_wide")


def _runtime_scale_f64(ctx: EmitContext, m: str, pow2: np.ndarray) -> str:
    """float64 ``m * 2**-n`` for a runtime multiplier ``m`` already proven ``|m| < 2**53``.

    When ``m = mul(v, c)`` with ``c`` constant (GCN's ``cast(edge_factor) * M``) this is ``Cast(v) * (c * 2**-n)``
    with integer casts in front of ``v`` looked through: 2 ops on ``[N, 1]`` instead of 4 (Cast to int64, Mul,
    Cast to float64, Mul), and the same float64: ``c * 2**-n`` is exact, ``|v| <= |m|`` (or ``c = 0``) so
    ``Cast(v)`` is exact, and ``|v * c| < 2**53`` so the product is exactly ``m * 2**-n``.
    """
    prod = _producer(ctx, m)
    if prod is not None and prod.op == "mul" and sum(ctx.is_const(i) for i in prod.inputs) == 1:
        v, c = prod.inputs if ctx.is_const(prod.inputs[1]) else prod.inputs[::-1]
        carr = np.asarray(ctx.const_array(c)).astype(np.int64)
        if carr.size and int(np.abs(carr).max()) < _F64_EXACT:
            cast = _producer(ctx, v)
            while cast is not None and cast.op == "cast" and ctx.dtypes[cast.inputs[0]] in _INT_DTYPES:
                v, cast = cast.inputs[0], _producer(ctx, cast.inputs[0])
            return ctx.emit("Mul", [ctx.value_as(v, "float64"), ctx.const(carr.astype(np.float64) * pow2, "float64",
                                                                          "m_scaled_c")], hint="m_scaled")
    mult = ctx.emit("Cast", [ctx.value(m)], hint="m_f64", to=TensorProto.DOUBLE)
    return ctx.emit("Mul", [mult, ctx.const(pow2, "float64", "pow2")], hint="m_scaled")


_INT_DTYPES = ("int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64")


def _requantize_f64(ctx: EmitContext, node: Node, ins: list[str]) -> bool:
    """Requantize in float64 when static bounds prove it exact; False (nothing emitted) otherwise.

    Emits ``Cast(clip(Floor(acc * (M * 2**-n) + (zp + 0.5)), qmin, qmax))``: 5 ops on ``[N, F]`` instead of
    the int64 chain's ~10 (int64 Mul/Add/BitShift/Sub and the casts between them).  Exact when
    ``|acc| <= 2**53`` and ``|M| < 2**53`` (so both are float64s), ``n`` constant in [0, 52] and
    ``2**(52 - n) > max(|qmin|, |qmax|) + |zp| + 2``:

    * ``M * 2**-n`` and ``p * 2**-n`` are exact (power-of-two scaling, no underflow for n <= 62);
    * if ``|acc*M| <= 2**53`` the product is exact, and so is ``y + zp + 0.5`` unless its magnitude reaches
      ``2**(53-n)``; float rounding is monotonic, so when the product or the sum is rounded, both the true and
      the computed value lie beyond ``2**(52-n) - |zp| - 2``, outside ``[qmin, qmax]`` on the same side,
      and clip to the same bound.  ``Floor(y + 0.5)`` is the interpreter's round-half-up.

    Tests put values at the clip bounds, ties and the int32 extremes (``test_requantize_f64_*``).
    """
    a, dtype = node.attrs, node.attrs["dtype"]
    if ins[3] or ins[4] or ctx.dtypes[ins[0]] not in _INT32_SAFE:
        return False  # per-row bounds, or an int64 accumulator: keep the int64 chain
    if ins[2] and not ctx.is_const(ins[2]):
        return False
    n = np.asarray(ctx.const_array(ins[2]) if ins[2] else a["shift"]).astype(np.int64)
    info = _info(dtype)
    qmin, qmax = int(a.get("qmin", info.min)), int(a.get("qmax", info.max))
    zp = int(a["zero_point"])
    if n.size == 0 or n.min() < 0 or n.max() > 52 or info.bits > 32 or qmin < info.min or qmax > info.max:
        return False
    if 2 ** (52 - int(n.max())) <= max(abs(qmin), abs(qmax)) + abs(zp) + 2:
        return False
    runtime_m = bool(ins[1]) and not ctx.is_const(ins[1])
    if runtime_m:
        bound = _abs_bound(ctx, ins[1])
        if bound is None or bound >= _F64_EXACT:
            return False
    else:
        m = np.asarray(ctx.const_array(ins[1]) if ins[1] else a["multiplier"]).astype(np.int64)
        if m.size and int(np.abs(m).max()) >= _F64_EXACT:
            return False
    pow2 = np.ldexp(1.0, -n).astype(np.float64)  # 2**-n, exact
    acc = ctx.emit("Cast", [ctx.value(ins[0])], hint="acc_f64", to=TensorProto.DOUBLE)
    if runtime_m:
        y = ctx.emit("Mul", [acc, _row_widened(ctx, _runtime_scale_f64(ctx, ins[1], pow2), ins[1], ins[0])],
                     hint="scaled")
    else:
        y = _scale_f64(ctx, acc, ins[0], m.astype(np.float64) * pow2)
    out = node.outputs[0]
    lift = 0 if qmin >= 0 else (128 if dtype == "int8" else -qmin)
    if 2 ** (53 - max(int(n.max()), 1)) > qmax + 2 * lift + abs(zp) + 1 and qmax + lift < 2**31:
        # no Floor (ORT's float64 Floor is a scalar loop, ~0.5 ns per element): clip u = y + c, c = zp + 0.5 + lift,
        # to [lo, hi] = [qmin + lift, qmax + lift] >= 0, where Cast's truncation is the floor (floor(clip(u)) =
        # clip(floor(u)) for integer bounds); the lift comes off in int32, and an int8 result lifted by 128 is its
        # uint8 copy.  Exact: with e = 53 - max(n, 1), y and u are multiples of 2**-max(n, 1), so they are exact
        # while |acc * M| < 2**53 and |u| < 2**e; otherwise (rounding is monotonic and +-2**e is a float64) the
        # computed and the true value are both >= 2**e - |c| > hi or both <= -2**e + |c| < lo, i.e. clip to the
        # same bound, by the condition 2**e > hi + |c|
        t = ctx.emit("Clip", [ctx.emit("Add", [y, ctx.const(zp + 0.5 + lift, "float64", "zp_half")],
                                       hint="plus_half"),
                              ctx.const(qmin + lift, "float64", "lo"), ctx.const(qmax + lift, "float64", "hi")],
                     hint="clip")
        if not lift:
            ctx.emit("Cast", [t], output=out, to=ONNX_DTYPE[dtype])
            return True
        v32 = ctx.emit("Sub", [ctx.emit("Cast", [t], hint="lifted", to=TensorProto.INT32),
                               ctx.const(lift, "int32", "lift")], hint="q32")
        ctx.narrow_to(v32, "int32", dtype, out)
        ctx.exact_sources[out] = (v32, "int32")
        if lift == 128:
            ctx.u8_makers[out] = lambda: ctx.emit("Cast", [t], hint="u8", to=TensorProto.UINT8)
        return True
    f = ctx.emit("Floor", [ctx.emit("Add", [y, ctx.const(zp + 0.5, "float64", "zp_half")], hint="plus_half")],
                 hint="floor")
    clipped = ctx.emit("Clip", [f, ctx.const(qmin, "float64", "lo"), ctx.const(qmax, "float64", "hi")], hint="clip")
    ctx.emit("Cast", [clipped], output=out, to=ONNX_DTYPE[dtype])
    ctx.exact_sources[out] = (clipped, "float64")
    if dtype == "int8":
        ctx.u8_makers[out] = lambda: ctx.emit(
            "Cast", [ctx.emit("Add", [clipped, ctx.const(128.0, "float64", "c128")], hint="p128")], hint="u8",
            to=TensorProto.UINT8)
    return True


_OFFSET = 1 << 62  # makes acc*M + half non-negative: |acc*M| < 2**62 is the interpreter's own precondition


@handler("requantize")
def requantize(ctx: EmitContext, node: Node) -> None:
    """``clip(floor((acc*M + 2^(n-1)) / 2^n) + zp, qmin, qmax)``, exactly.

    The floor division is a logical right shift of ``acc*M + half + 2**62`` in
    uint64 (never negative, and 2**62 is a multiple of 2**n for n <= 62), minus
    ``2**(62-n)``: 4x faster in ORT than ``(v - Mod(v, d)) / d`` and exact for
    every v > -2**62.  8/16-bit outputs are clipped in float32 (exact: the bounds
    are representable and rounding is monotonic); wider ones with Where.
    """
    a, out, dtype = node.attrs, node.outputs[0], node.attrs["dtype"]
    ins = list(node.inputs) + [""] * (5 - len(node.inputs))
    if ctx.requantize == "auto" and _requantize_f64(ctx, node, ins):
        return
    info = _info(dtype)
    zp = int(a["zero_point"])
    acc = ctx.value_as(ins[0], "int64")
    mult = ctx.value_as(ins[1], "int64") if ins[1] else ctx.const(int(a["multiplier"]), "int64", "M")
    if ins[1] and not ctx.is_const(ins[1]):
        # ORT 1.31's MatMulIntegerToFloatFusion rewrites MatMulInteger -> Cast -> Mul(., Mul(a, b)) into
        # MatMulIntegerToFloat without checking dtypes (an invalid graph for int64, e.g. A2Q row factors).
        # A no-op BitwiseOr (which ORT does not eliminate) keeps the runtime multiplier out of that pattern.
        mult = ctx.emit("BitwiseOr", [mult, ctx.const(0, "int64", "zero")], hint="mult_barrier")
    v = ctx.emit("Mul", [acc, mult], hint="scaled")

    if ins[2] and not ctx.is_const(ins[2]):  # runtime shift tensor
        n_u = ctx.emit("Cast", [ctx.value_as(ins[2], "int64")], hint="n_u64", to=TensorProto.UINT64)
        one = ctx.const(1, "uint64", "one")
        # half = 2**n >> 1 (0 for n = 0); offset 2**62 >> n
        half = ctx.emit("BitShift", [ctx.emit("BitShift", [one, n_u], hint="pow2", direction="LEFT"), one],
                        hint="half", direction="RIGHT")
        add = ctx.emit("Add", [half, ctx.const(_OFFSET, "uint64", "offset")], hint="half_off")
        k = ctx.emit("Cast", [ctx.emit("BitShift", [ctx.const(_OFFSET, "uint64", "offset"), n_u], hint="k_u",
                                       direction="RIGHT")], hint="k", to=TensorProto.INT64)
        if zp:
            k = ctx.emit("Sub", [k, ctx.const(zp, "int64", "zp")], hint="k_zp")
        shift = n_u
    else:
        n = np.asarray(ctx.const_array(ins[2]) if ins[2] else a["shift"]).astype(np.int64)
        if n.size and (n.min() < 0 or n.max() > 62):
            raise QgnnError(f"requantize {node.name!r}: shift must lie in [0, 62], got [{n.min()}, {n.max()}]")
        half_arr = np.where(n > 0, np.left_shift(np.int64(1), np.maximum(n - 1, 0)), 0).astype(np.uint64)
        add = ctx.const(half_arr + np.uint64(_OFFSET), "uint64", "half_off")
        shift = ctx.const(n.astype(np.uint64), "uint64", "n")
        k = ctx.const(np.right_shift(np.int64(_OFFSET), n) - zp, "int64", "k_zp")
    u = ctx.emit("Add", [ctx.emit("Cast", [v], hint="v_u64", to=TensorProto.UINT64), add], hint="v_off")
    q = ctx.emit("Cast", [ctx.emit("BitShift", [u, shift], hint="floor_off", direction="RIGHT")], hint="floor_i64",
                 to=TensorProto.INT64)
    y = ctx.emit("Sub", [q, k], hint="plus_zp")  # floor(...) + zp

    def bound(k: int, offset: int, work: str) -> str:
        name, key, default = (ins[3], "qmin", info.min) if k == 0 else (ins[4], "qmax", info.max)
        if not name:
            return ctx.const(int(a.get(key, default)) + offset, work, key)
        b = ctx.value_as(name, "int64")
        if work == "float32":
            b = ctx.emit("Cast", [b], hint=f"{key}_f", to=TensorProto.FLOAT)
        if offset:
            b = ctx.emit("Add", [b, ctx.const(offset, work, "off")], hint=f"{key}_128")
        return b

    if _info(dtype).bits <= 16:
        yf = ctx.emit("Cast", [y], hint="y_f", to=TensorProto.FLOAT)

        def clipped(offset: int) -> str:
            src = yf if not offset else ctx.emit("Add", [yf, ctx.const(float(offset), "float32", "off")], hint="p128")
            if not ins[3] and not ins[4]:
                return ctx.emit("Clip", [src, bound(0, offset, "float32"), bound(1, offset, "float32")], hint="clip")
            lo = ctx.emit("Max", [src, bound(0, offset, "float32")], hint="lo_clip")
            return ctx.emit("Min", [lo, bound(1, offset, "float32")], hint="hi_clip")
    else:
        def clipped(offset: int) -> str:
            src = y if not offset else ctx.emit("Add", [y, ctx.const(offset, "int64", "off")], hint="p128")
            return _clip64(ctx, src, bound(0, offset, "int64"), bound(1, offset, "int64"))

    ctx.emit("Cast", [clipped(0)], output=out, to=ONNX_DTYPE[dtype])
    if dtype == "int8":
        ctx.u8_makers[out] = lambda: ctx.emit("Cast", [clipped(128)], hint="u8", to=TensorProto.UINT8)


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
    prod = _producer(ctx, node.inputs[0])
    if not ctx.allow_fusion or prod is None or prod.op != "gather_rows" or ctx.ranks[prod.inputs[1]] != 1:
        return None
    table = prod.inputs[0]
    readers = ctx.graph.consumers(out)
    if len(readers) != 1 or readers[0].op != "add" or sorted(readers[0].inputs) != sorted([out, table]) \
            or table == out or any(o.name == out for o in ctx.graph.outputs):
        return None
    add = readers[0]
    trailing = _static_trailing(ctx, table)
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
    prod = _producer(ctx, values)
    trailing = _static_trailing(ctx, values)
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
    pointers = segment.row_pointers(ctx, _degree_vector(ctx, idx, ref))
    padded = segment.padded_source(ctx, table, src)
    out = node.outputs[0]

    def csr_or_scatter(output: str | None = None) -> str:
        csr = segment.emit_branch(ctx, f"{out}_csr",
                                  lambda: segment.csr_gathered_sum(ctx, table, padded, pointers, rows, trailing))
        scatter = segment.emit_branch(ctx, f"{out}_scatter", lambda: _scatter(ctx, values, idx, rows, "add", 0))
        return ctx.emit("If", [cond], output=output, hint="csr_or_scatter", then_branch=csr, else_branch=scatter)

    bound = _abs_bound(ctx, table)
    if not bound or (2**31 - 1) // bound < 1:
        csr_or_scatter(out)
        return
    # every int32 prefix sum is at most E * bound in magnitude: below 2**31 the whole branch runs in int32 (half
    # the bytes; ORT's int32 CumSum ~2x faster than int64), exact without any overflow
    csr32 = segment.emit_branch(ctx, f"{out}_csr32", lambda: segment.csr_gathered_sum(
        ctx, table, padded, pointers, rows, trailing, wide="int32"))
    rest = segment.emit_branch(ctx, f"{out}_csr64_or_scatter", csr_or_scatter)
    ctx.emit("If", [segment.csr32_condition(ctx, idx, cond, (2**31 - 1) // bound)], output=out,
             then_branch=csr32, else_branch=rest)


@handler("scatter_max")
def scatter_max(ctx: EmitContext, node: Node) -> None:
    """ScatterElements(reduction=max) from INT32_MIN, then rows without an incoming edge set to 0."""
    values, idx, ref = node.inputs
    mx = _scatter(ctx, values, idx, ctx.rows(ref), "max", int(np.iinfo(np.int32).min))
    has = ctx.emit("Greater", [_degree_vector(ctx, idx, ref), ctx.const(0, "int32")], hint="has_in")
    has = _unsqueeze_to(ctx, has, ctx.ranks[values])
    ctx.emit("Where", [has, mx, ctx.const(0, "int32")], output=node.outputs[0])


@handler("degree")
def degree(ctx: EmitContext, node: Node) -> None:
    """ScatterElements-add of ones over a 1-D int32 counter, shaped [N, 1]."""
    idx, ref = node.inputs
    ctx.emit("Unsqueeze", [_degree_vector(ctx, idx, ref), ctx.const([1], "int64", "axes")], output=node.outputs[0])


@handler("lut")
def lut(ctx: EmitContext, node: Node) -> None:
    """Gather on the table at ``clip(idx + offset, 0, T-1)`` (index arithmetic in int64)."""
    idx, table = node.inputs
    offset = int(node.attrs["offset"])
    if ctx.is_const(table) and ctx.ranks[table] == 1 and ctx.ranks[idx] >= 1 and ctx.dtypes[idx] in _INT32_SAFE:
        # int32 index arithmetic: clip(idx + off, 0, T-1) = clip(idx, -off, T-1-off) + off, so nothing can overflow;
        # one int32 Clip (and an Add unless the table can be rotated) instead of the int64
        # Cast/Add/Less/Where/Greater/Where chain
        size = int(ctx.const_array(table).shape[0])
        if max(abs(offset), size) < 2**30:
            pos = ctx.emit("Clip", [ctx.value_as(idx, "int32"), ctx.const(-offset, "int32", "lo"),
                                    ctx.const(size - 1 - offset, "int32", "hi")], hint="idx_clip")
            tab = ctx.value(table)
            if 0 < offset <= size:
                # GatherElements counts negative indices from the end: with the table rotated left by `offset`,
                # index j in [-offset, T-1-offset] reads rotated[j mod T] = table[j + offset], so no Add
                tab = ctx.const(np.roll(ctx.const_array(table), -offset), ctx.dtypes[table], "rotated")
            elif offset:
                pos = ctx.emit("Add", [pos, ctx.const(offset, "int32", "offset")], hint="pos")
            flat = ctx.emit("Reshape", [pos, ctx.const([-1], "int64", "flat")], hint="pos_flat")
            got = ctx.emit("GatherElements", [tab, flat], hint="looked_up", axis=0)
            ctx.emit("Reshape", [got, ctx.shape(idx)], output=node.outputs[0])
            return
    pos = ctx.value_as(idx, "int64")
    if offset:
        pos = ctx.emit("Add", [pos, ctx.const(offset, "int64", "offset")], hint="pos")
    if ctx.is_const(table):
        last = ctx.const(int(ctx.const_array(table).shape[0]) - 1, "int64", "last")
    else:
        t = ctx.emit("Squeeze", [ctx.rows(table), ctx.const([0], "int64", "axes")], hint="t")
        last = ctx.emit("Sub", [t, ctx.const(1, "int64", "one")], hint="last")
    pos = _clip64(ctx, pos, ctx.const(0, "int64", "zero"), last)
    if ctx.ranks[table] == 1 and ctx.ranks[idx] >= 1:
        # 1-D GatherElements is a typed loop; ORT 1.31's Gather copies each element with memcpy (~15x slower)
        flat = ctx.emit("Reshape", [pos, ctx.const([-1], "int64", "flat")], hint="pos_flat")
        got = ctx.emit("GatherElements", [ctx.value(table), flat], hint="looked_up", axis=0)
        ctx.emit("Reshape", [got, ctx.shape(idx)], output=node.outputs[0])
        return
    ctx.emit("Gather", [ctx.value(table), pos], output=node.outputs[0], axis=0)


_INT32_SAFE = ("int8", "uint8", "int16", "uint16", "int32")
_DENSE_SPAN = 1 << 16  # lut_steps whose thresholds span at most this many indices run as a table built in-graph


def _steps_dense_table(ctx: EmitContext, thresholds: str, values: str, t: np.ndarray) -> str:
    """``dense[r] = values[#{k : t[k] <= t[0] - 1 + r}]`` for ``r`` in ``[0, t[K-1] - t[0] + 1]``, built from the
    stored thresholds and values (ScatterElements of ones at ``t - t[0] + 1``, CumSum, GatherElements): only
    constants feed it, so ORT folds it once at session start and the file keeps the compact form."""
    span = int(t[-1] - t[0] + 2)
    slot = ctx.emit("Sub", [ctx.emit("Cast", [ctx.value(thresholds)], hint="t64", to=TensorProto.INT64),
                            ctx.const(int(t[0]) - 1, "int64", "t_base")], hint="slot")
    ones = ctx.emit("ConstantOfShape", [ctx.const([t.size], "int64", "k")], hint="ones",
                    value=helper.make_tensor("one", TensorProto.INT32, [1], [1]))
    zeros = ctx.emit("ConstantOfShape", [ctx.const([span], "int64", "span")], hint="zeros",
                     value=helper.make_tensor("zero", TensorProto.INT32, [1], [0]))
    marks = ctx.emit("ScatterElements", [zeros, slot, ones], hint="marks", axis=0, reduction="add")
    count = ctx.emit("CumSum", [marks, ctx.const(0, "int64", "axis0")], hint="count")
    return ctx.emit("GatherElements", [ctx.value(values), count], hint="dense", axis=0)


@handler("lut_steps")
def lut_steps(ctx: EmitContext, node: Node) -> None:
    """Thresholds spanning at most ``_DENSE_SPAN`` indices (every table fold emits): clip the index to
    ``[t[0] - 1, t[K-1]]`` and GatherElements from the dense table ``_steps_dense_table`` builds in-graph (the
    ops ``lut`` runs per call).  Wider ones: a branchless binary search (``ir.ops.steps_search_plan``) with
    GreaterOrEqual / GatherElements / Where on one ``pos`` per element, O(N log K) work and O(N) memory.  Both
    are exact for any index; K = 0 is a constant."""
    idx, thresholds, values = node.inputs
    if not (ctx.is_const(thresholds) and ctx.is_const(values)):
        raise QgnnError(f"ONNX export: lut_steps {node.name!r} needs constant thresholds and values")
    t = np.asarray(ctx.const_array(thresholds)).astype(np.int64)
    vdt = ctx.dtypes[values]
    if t.size == 0:  # a constant: values[0] in the index's shape
        first_value = ctx.const(ctx.const_array(values)[0], vdt, "value0")
        ctx.emit("Expand", [first_value, ctx.shape(idx)], output=node.outputs[0])
        return
    flat_shape = ctx.const([-1], "int64", "flat")
    if t[-1] - t[0] + 2 <= _DENSE_SPAN:
        dense = _steps_dense_table(ctx, thresholds, values, t)
        if ctx.dtypes[idx] in _INT32_SAFE and -(2**30) < t[0] and t[-1] < 2**30:
            # int32 Clip (exact; ORT's int64 Clip is not), then the subtraction stays in [0, span)
            pos = ctx.emit("Clip", [ctx.value_as(idx, "int32"), ctx.const(int(t[0]) - 1, "int32", "t_lo"),
                                    ctx.const(int(t[-1]), "int32", "t_hi")], hint="idx_clip")
            pos = ctx.emit("Sub", [pos, ctx.const(int(t[0]) - 1, "int32", "t_base")], hint="pos")
            got = ctx.emit("GatherElements", [dense, ctx.emit("Reshape", [pos, flat_shape], hint="pos_flat")],
                           hint="looked_up", axis=0)
            ctx.emit("Reshape", [got, ctx.shape(idx)], output=node.outputs[0])
            return
        pos = _clip64(ctx, ctx.value_as(idx, "int64"), ctx.const(int(t[0]) - 1, "int64", "t_lo"),
                      ctx.const(int(t[-1]), "int64", "t_hi"))
        pos = ctx.emit("Sub", [pos, ctx.const(int(t[0]) - 1, "int64", "t_base")], hint="pos")
        got = ctx.emit("GatherElements", [dense, ctx.emit("Reshape", [pos, flat_shape], hint="pos_flat")],
                       hint="looked_up", axis=0)
        ctx.emit("Reshape", [got, ctx.shape(idx)], output=node.outputs[0])
        return
    cmp = "int32" if ctx.dtypes[idx] in _INT32_SAFE and ctx.dtypes[thresholds] in _INT32_SAFE else "int64"
    flat = ctx.emit("Reshape", [ctx.value_as(idx, cmp), flat_shape], hint="idx_flat")
    first, strides = steps_search_plan(int(t.size))
    ge = ctx.emit("GreaterOrEqual", [flat, ctx.const(int(t[first - 1]), cmp, "t_first")], hint="ge")
    pos = ctx.emit("Where", [ge, ctx.const(first, "int64", "first"), ctx.const(0, "int64", "zero")], hint="pos")
    if strides:
        probe = ctx.const(np.concatenate([t[:1], t]), cmp, "t_probe")  # probe[c] = t[c - 1]; probe[0] unread
    for s in strides:
        c = ctx.emit("Add", [pos, ctx.const(s, "int64", "stride")], hint="cand")
        ge = ctx.emit("GreaterOrEqual", [flat, ctx.emit("GatherElements", [probe, c], hint="t_c", axis=0)],
                      hint="ge")
        pos = ctx.emit("Where", [ge, c, pos], hint="pos")
    got = ctx.emit("GatherElements", [ctx.value(values), pos], hint="looked_up", axis=0)
    ctx.emit("Reshape", [got, ctx.shape(idx)], output=node.outputs[0])


def _axes(ctx: EmitContext, node: Node) -> tuple[str, int]:
    return ctx.const([int(node.attrs.get("axis", -1))], "int64", "axes"), int(bool(node.attrs.get("keepdims", True)))


@handler("reduce_max")
def reduce_max(ctx: EmitContext, node: Node) -> None:
    """ReduceMax in the input dtype (int16 via int32); over a float64 requantize's float64 when it has one (its
    casts then read the float64 max, and the narrow copy of the input is dropped if nothing else reads it)."""
    src, out = node.inputs[0], node.outputs[0]
    dt = ctx.dtypes[src]
    axes, keep = _axes(ctx, node)
    if dt == "int64":  # ORT's int64 ReduceMax is unreliable (see _clip64); TopK(k=1) is exact
        v = ctx.emit("TopK", [ctx.value(src), ctx.const([1], "int64", "k")], hint="top1",
                     n_outputs=2, axis=int(node.attrs.get("axis", -1)))
        if not keep:
            v = ctx.emit("Squeeze", [v, axes], hint="squeezed")
        ctx.emit("Identity", [v], output=out)
        return
    if src in ctx.exact_sources:  # the max of a requantize's wider integers, kept wide for its casts
        wide, wide_dt = ctx.exact_sources[src]
        m = ctx.emit("ReduceMax", [wide, axes], hint="max_wide", keepdims=keep)
        ctx.exact_sources[out] = (m, wide_dt)
        ctx.narrow_to(m, wide_dt, dt, out)
        return
    work = dt if dt in ("uint8", "int8", "int32") else "int32"
    v = ctx.emit("ReduceMax", [ctx.value_as(src, work), axes], output=out if work == dt else None, keepdims=keep)
    if work != dt:
        ctx.narrow_to(v, work, dt, out)


@handler("reduce_sum")
def reduce_sum(ctx: EmitContext, node: Node) -> None:
    """ReduceSum in int32 (int64 for int64 input), the interpreter's result dtype."""
    res = ctx.dtypes[node.outputs[0]]
    axes, keep = _axes(ctx, node)
    ctx.emit("ReduceSum", [ctx.value_as(node.inputs[0], res), axes], output=node.outputs[0], keepdims=keep)


@handler("concat")
def concat(ctx: EmitContext, node: Node) -> None:
    """Concat along the IR axis (inputs share one dtype)."""
    ctx.emit("Concat", [ctx.value(i) for i in node.inputs], output=node.outputs[0],
             axis=int(node.attrs.get("axis", -1)))


@handler("repeat_cols")
def repeat_cols(ctx: EmitContext, node: Node) -> None:
    """``Unsqueeze`` to [R, H, 1], ``Expand`` to [R, H, C], ``Reshape`` to ``Shape(x) * [1, C]``: pure data movement
    in the input dtype (exact; the target shape is computed, so R = 0 and any H work)."""
    x, c = ctx.value(node.inputs[0]), int(node.attrs["repeats"])
    col = ctx.emit("Unsqueeze", [x, ctx.const([2], "int64", "axes")], hint="rep_unsq")
    wide = ctx.emit("Expand", [col, ctx.const([1, 1, c], "int64", "rep_shape")], hint="rep_expand")
    shape = ctx.emit("Mul", [ctx.shape(node.inputs[0]), ctx.const([1, c], "int64", "rep_factor")], hint="rep_to")
    ctx.emit("Reshape", [wide, shape], output=node.outputs[0])


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
