"""Emitters of the IR ops that read no edges: quantize/dequantize, the int8 GEMM, integer arithmetic, casts,
clamps, lookup tables and reductions."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from onnx import TensorProto, helper

from qgnn_deploy.backends.onnx.exporter import ONNX_DTYPE, EmitContext, compute_dtype, handler
from qgnn_deploy.backends.onnx.handlers.values import (
    FLOAT_SAFE,
    INT32_SAFE,
    abs_bound,
    activation_max,
    clamped_bounds,
    clip64,
    int_info,
    nonnegative,
    producer_of,
    static_trailing,
    weight_range,
)
from qgnn_deploy.backends.onnx.segment import emit_branch
from qgnn_deploy.errors import QgnnError
from qgnn_deploy.ir.graph import Node
from qgnn_deploy.ir.ops import steps_search_plan


def _round_div(ctx: EmitContext, x: str, scale: str) -> str:
    return ctx.emit("Round", [ctx.emit("Div", [x, scale], hint="x_over_s")], hint="rounded")


@handler("quantize")
def quantize(ctx: EmitContext, node: Node) -> None:
    """QuantizeLinear for 8-bit outputs (divides and rounds half-to-even like ``np.rint(x / s)``)."""
    a, out, dtype = node.attrs, node.outputs[0], node.attrs["dtype"]
    x = ctx.value_as(node.inputs[0], "float32")
    zp = int(a["zero_point"])
    scale = ctx.const(np.float32(a["scale"]), "float32", "scale")
    lo, hi = clamped_bounds(a["qmin"], a["qmax"], dtype)

    def linear(zero: int, qdtype: str, lo_: int, hi_: int, output: str | None) -> str:
        full = (lo_, hi_) == (int_info(qdtype).min, int_info(qdtype).max)
        q = ctx.emit("QuantizeLinear", [x, scale, ctx.const(zero, qdtype, "zp")], hint="q",
                     output=output if full else None)
        if not full:
            q = ctx.emit("Clip", [q, ctx.const(lo_, qdtype, "lo"), ctx.const(hi_, qdtype, "hi")], hint="q_clip",
                         output=output)
        return q

    if dtype in ("uint8", "int8") and int_info(dtype).min <= zp <= int_info(dtype).max:
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
    c = ctx.emit("Clip", [r, ctx.const(-FLOAT_SAFE, "float32"), ctx.const(FLOAT_SAFE, "float32")], hint="safe")
    q = ctx.emit("Cast", [c], hint="q64", to=TensorProto.INT64)
    if zp:
        q = ctx.emit("Add", [q, ctx.const(zp, "int64", "zp")], hint="plus_zp")
    q = clip64(ctx, q, ctx.const(lo, "int64", "lo"), ctx.const(hi, "int64", "hi"))
    ctx.emit("Cast", [q], output=out, to=ONNX_DTYPE[dtype])


@handler("quantize_rows")
def quantize_rows(ctx: EmitContext, node: Node) -> None:
    """Per-row step and bounds (A2Q): Div/Round then Max/Min against the broadcast row bounds."""
    out, dtype = node.outputs[0], node.attrs["dtype"]
    x = ctx.value_as(node.inputs[0], "float32")
    scale = ctx.value_as(node.inputs[1], "float32")
    r = _round_div(ctx, x, scale)
    info = int_info(dtype)
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
    c = ctx.emit("Clip", [r, ctx.const(-FLOAT_SAFE, "float32"), ctx.const(FLOAT_SAFE, "float32")], hint="safe")
    q = ctx.emit("Cast", [c], hint="q64", to=TensorProto.INT64)
    q = clip64(ctx, q, ctx.value_as(node.inputs[2], "int64"), ctx.value_as(node.inputs[3], "int64"))
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


_SPLIT_MIN_K = 64  # shorter GEMMs cost less than the halves' combine (~15 us on Cora's 2708 rows)


def _split_gemm(ctx: EmitContext, a_val: str, azp: str, b_name: str, rank: int, out: str | None = None) -> str:
    """``A @ W`` as one u8 x s8 MatMulInteger over ``[Wa | Wb]`` (``Wa = clip(W, -64, 64)``, ``Wb = W - Wa``), then
    ``Ya + Yb`` as a ReduceSum over the pair axis of the rank-``rank`` product viewed as ``[..., 2, H]``.  No Split:
    its halves were two more ``[R, H]`` int32 buffers, and inside the 7-bit check's ``If`` branch (whose buffers
    ORT allocates outside the main graph's memory pattern) that was +38 MiB of peak RSS at 10^6 nodes
    (``ort_aggregation.md`` §13).

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
    pairs = ctx.emit("Reshape", [y, ctx.const([0] * (rank - 1) + [2, w.shape[1]], "int64", "halves")],
                     hint="halves_pair")
    return ctx.emit("ReduceSum", [pairs, ctx.const([-2], "int64", "pair_axis")], output=out, hint="halves_sum",
                    keepdims=0)


def _u8u8_gemm(ctx: EmitContext, a_val: str, azp: str, b_name: str, b_zp: int, out: str | None = None) -> str:
    """``A @ W`` with W + 128 as uint8 (zero point ``b_zp + 128``): MLAS's u8 x u8 kernel widens to int16 before
    its multiply-add, so it cannot saturate.  One GEMM; measured 1.4x (Cora 2708x1433x16) to 2.3x (10^5x128x16)
    faster here than the former split W = 128*A + B into two u8 x s8 GEMMs (``ort_aggregation.md``, section 5)."""
    w_u8 = (ctx.const_array(b_name).astype(np.int16) + 128).astype(np.uint8)
    inputs = [a_val, ctx.const(w_u8, "uint8", f"{b_name}_u8"), azp, ctx.const(b_zp + 128, "uint8", "b_zp")]
    return ctx.emit("MatMulInteger", inputs, output=out, hint="u8u8")


def _gemm_if_activations_fit(ctx: EmitContext, a_val: str, azp: str, b_name: str, out: str,
                             safe: Callable[[], str]) -> None:
    """``If`` every raw activation is at most 127 (the maximum of ``a_val``), the plain u8 x s8 MatMulInteger
    over W itself, else the saturation-safe form ``safe`` builds.

    Why: with activations <= 127, two adjacent u8 x s8 products stay within int16 for any int8 weights
    (2 * 127 * 128 = 32512), so vpmaddubsw cannot saturate: exact on every CPU, and H GEMM columns instead of the
    split form's 2H plus its Split/Add (or the slower u8 x u8 kernel).  Quantized inputs often stay there (Cora's
    row-normalised features quantize to at most 127).  The result does not depend on the branch taken.

    The maximum is two ReduceMax: per row (last axis), then over the row maxima.  ORT 1.31 runs a reduction over
    every axis on one thread, a last-axis one in parallel over rows: after the FP32-input model's QuantizeLinear
    of Cora's 2708 x 1433 features, 2 threads, QuantizeLinear + max measured 1.24 ms with one ReduceMax and
    0.75 ms with two (AMD Zen 2, ``examples/results/ort_aggregation.md`` section 14).
    """
    rows_max = ctx.emit("ReduceMax", [a_val, ctx.const([-1], "int64", "last_axis")], hint="a_row_max", keepdims=0)
    fits = ctx.emit("LessOrEqual", [ctx.emit("ReduceMax", [rows_max], hint="a_max", keepdims=0),
                                    ctx.const(127, "uint8", "u8_half")], hint="a_fits_s8")
    fast = emit_branch(ctx, f"{out}_u8s8", lambda: ctx.emit("MatMulInteger", [a_val, ctx.value(b_name), azp],
                                                            hint="u8s8"))
    slow = emit_branch(ctx, f"{out}_safe", safe)
    ctx.emit("If", [fits], output=out, then_branch=fast, else_branch=slow)


@handler("matmul")
def matmul(ctx: EmitContext, node: Node) -> None:
    """MatMulInteger on u8 activations x s8 weights with zero-point inputs; int32 MatMul otherwise.

    On x86 CPUs without VNNI, MLAS's u8 x s8 kernel (vpmaddubsw) saturates when
    two adjacent u8*s8 products add up beyond int16, i.e. for weights outside
    [-64, 63] against activations that can exceed 127.  With ``ctx.saturation_safe``
    (the default) such weights (constant or runtime) go to the u8 x u8 kernel
    (weights shifted by +128) or the 7-bit split, exact on every CPU; constant ones with K >= 64 first check the
    activations at run time and keep the plain u8 x s8 GEMM when none exceeds 127 (``_gemm_if_activations_fit``).
    """
    a_name, b_name = node.inputs
    out = node.outputs[0]
    a_zp, b_zp = int(node.attrs.get("a_zero_point", 0)), int(node.attrs.get("b_zero_point", 0))
    adt, bdt = ctx.dtypes[a_name], ctx.dtypes[b_name]
    a_ok = (adt == "uint8" and 0 <= a_zp <= 255) or (adt == "int8" and -128 <= a_zp <= 127)
    b_ok = bdt in ("int8", "uint8") and int_info(bdt).min <= b_zp <= int_info(bdt).max
    if a_ok and b_ok:
        if adt == "int8":
            a_val, a_zp = ctx.as_u8(a_name), a_zp + 128
        else:
            a_val = ctx.value(a_name)
        azp = ctx.const(a_zp, "uint8", "a_zp")
        rng = weight_range(ctx, b_name) if bdt == "int8" else None
        if bdt == "int8" and ctx.saturation_safe and rng is None:  # runtime int8 weights: u8 x u8
            inputs = [a_val, ctx.as_u8(b_name), azp, ctx.const(b_zp + 128, "uint8", "b_zp")]
            ctx.emit("MatMulInteger", inputs, output=out)
            return
        # vpmaddubsw adds two adjacent u8*s8 products in int16: only leave u8 x s8 when that can overflow
        if rng is not None:
            risky = 2 * activation_max(ctx, a_name, adt == "int8") * max(-rng[0], rng[1]) > 32767
        unsafe = bdt == "int8" and ctx.saturation_safe and rng is not None and risky and (rng[0] < -64 or rng[1] > 63)
        split = unsafe and ctx.int8_gemm == "split" and not b_zp and ctx.ranks[b_name] == 2 \
            and _SPLIT_MIN_K <= ctx.const_array(b_name).shape[0] < 2**31 // (255 * 64)
        if unsafe:
            def safe(output: str | None = None) -> str:
                if split:
                    return _split_gemm(ctx, a_val, azp, b_name, ctx.ranks[out], output)
                return _u8u8_gemm(ctx, a_val, azp, b_name, b_zp, output)

            if ctx.ranks[b_name] == 2 and ctx.const_array(b_name).shape[0] >= _SPLIT_MIN_K and not b_zp:
                _gemm_if_activations_fit(ctx, a_val, azp, b_name, out, safe)
            else:
                safe(out)
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
    prod = producer_of(ctx, name)
    if prod is not None and ctx.dtypes[name] == "int32" and ctx.ranks[name] == 2 and ctx.shapes[name][1] == 1:
        if prod.op == "reduce_sum" and int(prod.attrs.get("axis", -1)) in (1, -1) and prod.attrs.get("keepdims", True) \
                and ctx.ranks[prod.inputs[0]] == 2 and static_trailing(ctx, prod.inputs[0]) == (width,):
            src = prod.inputs[0]
            cast = producer_of(ctx, src)
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
        bound = abs_bound(ctx, name) if wide is None else None
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


@handler("div_floor")
def div_floor(ctx: EmitContext, node: Node) -> None:
    """Floor division as ``(a - Mod(a, b)) / b``: exact because the numerator is a multiple of b.

    The divisor is positive by the op's contract, so a numerator proven non-negative (LoRAP's softmax
    weights) needs only ONNX's truncating Div: two fewer passes, Mod being one of ORT's slower kernels."""
    res = ctx.dtypes[node.outputs[0]]
    cd = compute_dtype(res)
    num, den = _wide_operands(ctx, node, cd)
    if nonnegative(ctx, node.inputs[0]):
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
    lo, hi = clamped_bounds(node.attrs["lo"], node.attrs["hi"], dt)
    if dt == "int64":
        clip64(ctx, ctx.value(src), ctx.const(lo, "int64", "lo"), ctx.const(hi, "int64", "hi"), output=out)
        return
    work = dt if dt in ("uint8", "int8", "int32") else "int32"
    v = ctx.emit("Clip", [ctx.value_as(src, work), ctx.const(lo, work, "lo"), ctx.const(hi, work, "hi")],
                 output=out if work == dt else None, hint="clip")
    if work != dt:
        ctx.narrow_to(v, work, dt, out)


@handler("lut")
def lut(ctx: EmitContext, node: Node) -> None:
    """Gather on the table at ``clip(idx + offset, 0, T-1)`` (index arithmetic in int64)."""
    idx, table = node.inputs
    offset = int(node.attrs["offset"])
    if ctx.is_const(table) and ctx.ranks[table] == 1 and ctx.ranks[idx] >= 1 and ctx.dtypes[idx] in INT32_SAFE:
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
    pos = clip64(ctx, pos, ctx.const(0, "int64", "zero"), last)
    if ctx.ranks[table] == 1 and ctx.ranks[idx] >= 1:
        # 1-D GatherElements is a typed loop; ORT 1.31's Gather copies each element with memcpy (~15x slower)
        flat = ctx.emit("Reshape", [pos, ctx.const([-1], "int64", "flat")], hint="pos_flat")
        got = ctx.emit("GatherElements", [ctx.value(table), flat], hint="looked_up", axis=0)
        ctx.emit("Reshape", [got, ctx.shape(idx)], output=node.outputs[0])
        return
    ctx.emit("Gather", [ctx.value(table), pos], output=node.outputs[0], axis=0)


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
        if ctx.dtypes[idx] in INT32_SAFE and -(2**30) < t[0] and t[-1] < 2**30:
            # int32 Clip (exact; ORT's int64 Clip is not), then the subtraction stays in [0, span)
            pos = ctx.emit("Clip", [ctx.value_as(idx, "int32"), ctx.const(int(t[0]) - 1, "int32", "t_lo"),
                                    ctx.const(int(t[-1]), "int32", "t_hi")], hint="idx_clip")
            pos = ctx.emit("Sub", [pos, ctx.const(int(t[0]) - 1, "int32", "t_base")], hint="pos")
            got = ctx.emit("GatherElements", [dense, ctx.emit("Reshape", [pos, flat_shape], hint="pos_flat")],
                           hint="looked_up", axis=0)
            ctx.emit("Reshape", [got, ctx.shape(idx)], output=node.outputs[0])
            return
        pos = clip64(ctx, ctx.value_as(idx, "int64"), ctx.const(int(t[0]) - 1, "int64", "t_lo"),
                      ctx.const(int(t[-1]), "int64", "t_hi"))
        pos = ctx.emit("Sub", [pos, ctx.const(int(t[0]) - 1, "int64", "t_base")], hint="pos")
        got = ctx.emit("GatherElements", [dense, ctx.emit("Reshape", [pos, flat_shape], hint="pos_flat")],
                       hint="looked_up", axis=0)
        ctx.emit("Reshape", [got, ctx.shape(idx)], output=node.outputs[0])
        return
    cmp = "int32" if ctx.dtypes[idx] in INT32_SAFE and ctx.dtypes[thresholds] in INT32_SAFE else "int64"
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
    if dt == "int64":  # ORT's int64 ReduceMax is unreliable (see clip64); TopK(k=1) is exact
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
