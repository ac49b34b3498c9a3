"""The ``requantize`` emitter: ``clip(floor((acc * M + 2^(n-1)) / 2^n) + zp)`` exactly, in float64 where a static
bound proves that exact (5 ORT ops), otherwise as the int64/uint64 shift chain."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from qgnn_deploy.backends.onnx.exporter import ONNX_DTYPE, EmitContext, handler
from qgnn_deploy.backends.onnx.handlers.values import (
    F64_EXACT,
    INT32_SAFE,
    INT_DTYPES,
    abs_bound,
    clip64,
    int_info,
    producer_of,
    static_trailing,
)
from qgnn_deploy.errors import QgnnError
from qgnn_deploy.ir.graph import Node


def _scale_f64(ctx: EmitContext, acc: str, acc_ir: str, scale: np.ndarray) -> str:
    """``acc * scale`` in float64 for a constant ``scale``; a per-column ``[1, H]`` scale as ``MatMul(acc,
    diag(scale))``.

    Why: ORT 1.31 broadcasts ``[N, H] * [1, H]`` with one inner call per row (~27 us for Cora's 2708 x 16), while
    its float64 MatMul is one parallel GEMM (~15 us at 1 thread).  Same values: each output is
    ``acc[c] * scale[c]`` (one correctly rounded product, or one fused multiply-add onto an exact zero) plus
    exact zeros ``acc[k] * 0``, so the float64 requantize's proof is unchanged.
    """
    trailing = static_trailing(ctx, acc_ir)
    if scale.size > 1 and np.all(scale == scale.flat[0]):
        scale = scale.reshape(-1)[:1].reshape(())
    if scale.size > 1 and ctx.ranks[acc_ir] == 2 and trailing is not None and scale.shape == (1, trailing[0]):
        return ctx.emit("MatMul", [acc, ctx.const(np.diag(scale[0]), "float64", "m_diag")], hint="scaled")
    return ctx.emit("Mul", [acc, ctx.const(scale, "float64", "m_scaled")], hint="scaled")


def _row_widened(ctx: EmitContext, scale: str, scale_ir: str, acc_ir: str) -> str:
    """A float64 per-row ``[R, 1]`` scale as ``[R, H]`` (``MatMul(scale, ones[1, H])``) when ``acc_ir`` is
    ``[R, H]``: ORT 1.31 broadcasts ``[R, H] * [R, 1]`` with one inner call per row (~25 us on Cora's 2708 rows),
    a K = 1 float64 MatMul plus a same-shape Mul take ~10 us.  ``x * 1.0`` is exact, so the product is the same."""
    trailing = static_trailing(ctx, acc_ir)
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
    prod = producer_of(ctx, m)
    if prod is not None and prod.op == "mul" and sum(ctx.is_const(i) for i in prod.inputs) == 1:
        v, c = prod.inputs if ctx.is_const(prod.inputs[1]) else prod.inputs[::-1]
        carr = np.asarray(ctx.const_array(c)).astype(np.int64)
        if carr.size and int(np.abs(carr).max()) < F64_EXACT:
            cast = producer_of(ctx, v)
            while cast is not None and cast.op == "cast" and ctx.dtypes[cast.inputs[0]] in INT_DTYPES:
                v, cast = cast.inputs[0], producer_of(ctx, cast.inputs[0])
            return ctx.emit("Mul", [ctx.value_as(v, "float64"), ctx.const(carr.astype(np.float64) * pow2, "float64",
                                                                          "m_scaled_c")], hint="m_scaled")
    mult = ctx.emit("Cast", [ctx.value(m)], hint="m_f64", to=TensorProto.DOUBLE)
    return ctx.emit("Mul", [mult, ctx.const(pow2, "float64", "pow2")], hint="m_scaled")


def _bias_folded(ctx: EmitContext, node: Node, m: np.ndarray, pow2: np.ndarray, c: float,
                 q: np.ndarray) -> str | None:
    """float64 ``p * scale + (bias * scale + c)`` as one ``Gemm(Cast(p), diag(scale), C)`` when the requantized
    ``acc = add(p, bias)`` has a constant per-column bias, the requantize is its only reader, and static bounds
    make every step exact; None (nothing emitted) otherwise.  ``scale = m * pow2`` (``M * 2**-n``), ``q = max(n, 1)``
    (per column when the shift is).

    Why: ORT 1.31 adds a ``[1, H]`` bias to ``[N, H]`` with one inner call per row (~35 us on Cora, serial), and
    the Gemm replaces that Add plus the scale and the ``+ c``.  Exact: with ``Bp = |p|`` and ``Bb = |bias|``
    bounds, ``Bp + Bb < 2**31`` (the int32 add cannot wrap), ``(Bp or Bb) * max|M| < 2**53`` (both products exact)
    and ``(Bp + Bb) * scale + |c| < 2**(53 - q)`` per column (every partial sum a multiple of ``2**-q`` below that, so
    exact in any order, FMA or not; the zeros of diag add exactly), the Gemm yields exactly ``(p + bias) * scale
    + c``, the value the unfused chain's proof starts from.
    """
    acc = node.inputs[0]
    prod = producer_of(ctx, acc)
    trailing = static_trailing(ctx, acc)
    if not ctx.allow_fusion or prod is None or prod.op != "add" or ctx.ranks[acc] != 2 or trailing is None \
            or len(ctx.graph.consumers(acc)) != 1 or any(o.name == acc for o in ctx.graph.outputs):
        return None
    consts = [i for i in prod.inputs if ctx.is_const(i)]
    if len(consts) != 1 or prod.inputs[0] == prod.inputs[1]:
        return None
    bias = np.asarray(ctx.const_array(consts[0])).astype(np.int64)
    p = next(i for i in prod.inputs if i != consts[0])
    width = trailing[0]
    scale = m.astype(np.float64) * pow2
    if bias.size not in (1, width) or bias.ndim > 2 or (bias.ndim == 2 and bias.shape[0] != 1) \
            or ctx.shapes[p] != ctx.shapes[acc] or ctx.dtypes[p] not in INT32_SAFE or scale.size not in (1, width):
        return None
    bp, bb = abs_bound(ctx, p), int(np.abs(bias).max())
    if bp is None or bp + bb >= 2**31 or max(bp, bb) * int(np.abs(m).max(initial=0)) >= F64_EXACT \
            or np.any((bp + bb) * np.abs(scale) + abs(c) >= np.ldexp(1.0, 53 - q)):
        return None
    row = np.broadcast_to(scale.reshape(-1), (width,)).astype(np.float64)
    cols = np.broadcast_to(bias.reshape(-1), (width,)).astype(np.float64) * row + c  # exact by the bounds
    pf = ctx.emit("Cast", [ctx.value(p)], hint="acc_f64", to=TensorProto.DOUBLE)
    return ctx.emit("Gemm", [pf, ctx.const(np.diag(row), "float64", "m_diag"),
                             ctx.const(cols.reshape(1, width), "float64", "bias_c")], hint="scaled_biased")


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
    if ins[3] or ins[4] or ctx.dtypes[ins[0]] not in INT32_SAFE:
        return False  # per-row bounds, or an int64 accumulator: keep the int64 chain
    if ins[2] and not ctx.is_const(ins[2]):
        return False
    n = np.asarray(ctx.const_array(ins[2]) if ins[2] else a["shift"]).astype(np.int64)
    info = int_info(dtype)
    qmin, qmax = int(a.get("qmin", info.min)), int(a.get("qmax", info.max))
    zp = int(a["zero_point"])
    if n.size == 0 or n.min() < 0 or n.max() > 52 or info.bits > 32 or qmin < info.min or qmax > info.max:
        return False
    if 2 ** (52 - int(n.max())) <= max(abs(qmin), abs(qmax)) + abs(zp) + 2:
        return False
    runtime_m = bool(ins[1]) and not ctx.is_const(ins[1])
    if runtime_m:
        bound = abs_bound(ctx, ins[1])
        if bound is None or bound >= F64_EXACT:
            return False
    else:
        m = np.asarray(ctx.const_array(ins[1]) if ins[1] else a["multiplier"]).astype(np.int64)
        if m.size and int(np.abs(m).max()) >= F64_EXACT:
            return False
    pow2 = np.ldexp(1.0, -n).astype(np.float64)  # 2**-n, exact
    out = node.outputs[0]
    lift = 0 if qmin >= 0 else (128 if dtype == "int8" else -qmin)
    lift_form = 2 ** (53 - max(int(n.max()), 1)) > qmax + 2 * lift + abs(zp) + 1 and qmax + lift < 2**31
    u = None
    if lift_form and not runtime_m:
        u = _bias_folded(ctx, node, m, pow2, zp + 0.5 + lift, np.maximum(n, 1))
    if u is None:
        acc = ctx.emit("Cast", [ctx.value(ins[0])], hint="acc_f64", to=TensorProto.DOUBLE)
        if runtime_m:
            y = ctx.emit("Mul", [acc, _row_widened(ctx, _runtime_scale_f64(ctx, ins[1], pow2), ins[1], ins[0])],
                         hint="scaled")
        else:
            y = _scale_f64(ctx, acc, ins[0], m.astype(np.float64) * pow2)
    if lift_form:
        # no Floor (ORT's float64 Floor is a scalar loop, ~0.5 ns per element): clip u = y + c, c = zp + 0.5 + lift,
        # to [lo, hi] = [qmin + lift, qmax + lift] >= 0, where Cast's truncation is the floor (floor(clip(u)) =
        # clip(floor(u)) for integer bounds); the lift comes off in int32, and an int8 result lifted by 128 is its
        # uint8 copy.  Exact: with e = 53 - max(n, 1), y and u are multiples of 2**-max(n, 1), so they are exact
        # while |acc * M| < 2**53 and |u| < 2**e; otherwise (rounding is monotonic and +-2**e is a float64) the
        # computed and the true value are both >= 2**e - |c| > hi or both <= -2**e + |c| < lo, i.e. clip to the
        # same bound, by the condition 2**e > hi + |c|
        if u is None:
            u = ctx.emit("Add", [y, ctx.const(zp + 0.5 + lift, "float64", "zp_half")], hint="plus_half")
        t = ctx.emit("Clip", [u, ctx.const(qmin + lift, "float64", "lo"), ctx.const(qmax + lift, "float64", "hi")],
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
    info = int_info(dtype)
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

    if int_info(dtype).bits <= 16:
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
            return clip64(ctx, src, bound(0, offset, "int64"), bound(1, offset, "int64"))

    ctx.emit("Cast", [clipped(0)], output=out, to=ONNX_DTYPE[dtype])
    if dtype == "int8":
        ctx.u8_makers[out] = lambda: ctx.emit("Cast", [clipped(128)], hint="u8", to=TensorProto.UINT8)
