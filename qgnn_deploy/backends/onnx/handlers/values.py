"""What the emitters know about IR values without running the graph, shared by every handler family.

Static bounds (``abs_bound`` and ``nonnegative``, from the IR's own :mod:`qgnn_deploy.ir.bounds`;
``weight_range``, ``activation_max``) decide which exact ONNX formulation a handler may take; ``clip64``
bounds int64 tensors the way ORT 1.31 gets right (see the package docstring); ``producer_of`` finds the IR
node that writes a value.
"""

from __future__ import annotations

import numpy as np

from qgnn_deploy.backends.onnx.exporter import EmitContext
from qgnn_deploy.ir.bounds import value_ranges
from qgnn_deploy.ir.graph import Node

FLOAT_SAFE = 2.0**40  # clip bound before float -> int64 casts; far outside every integer dtype we narrow to


INT32_SAFE = ("int8", "uint8", "int16", "uint16", "int32")


F64_EXACT = 1 << 53  # every integer of magnitude <= 2**53 is a float64


INT_DTYPES = ("int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64")


def int_info(dtype: str) -> np.iinfo:
    return np.iinfo(dtype)


def clamped_bounds(lo: int, hi: int, dtype: str) -> tuple[int, int]:
    info = int_info(dtype)
    return max(int(lo), int(info.min)), min(int(hi), int(info.max))


def clip64(ctx: EmitContext, v: str, lo: str | None, hi: str | None, output: str | None = None) -> str:
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


def unsqueeze_to(ctx: EmitContext, vec: str, rank: int) -> str:
    """``vec[E]`` reshaped to ``[E, 1, ..., 1]`` (``rank`` dims) for broadcasting."""
    if rank <= 1:
        return vec
    return ctx.emit("Unsqueeze", [vec, ctx.const(list(range(1, rank)), "int64", "axes")], hint="unsq")


def static_trailing(ctx: EmitContext, values: str) -> tuple[int, ...] | None:
    trailing = ctx.shapes[values][1:]
    if ctx.ranks[values] >= 2 and all(isinstance(d, int) and d > 0 for d in trailing):
        return tuple(int(d) for d in trailing)  # type: ignore[arg-type]
    return None


def producer_of(ctx: EmitContext, name: str) -> Node | None:
    key = ("producer", name)
    if key not in ctx.memo:
        ctx.memo[key] = next((n for n in ctx.graph.nodes if name in n.outputs), None)  # type: ignore[assignment]
    return ctx.memo[key]  # type: ignore[return-value]


def value_range(ctx: EmitContext, name: str) -> tuple[int, int] | None:
    """The static interval of integer IR value ``name`` (:func:`qgnn_deploy.ir.bounds.value_ranges`, computed once
    per export); None for a value without one (floats)."""
    key = ("value_ranges",)
    if key not in ctx.memo:
        ctx.memo[key] = value_ranges(ctx.graph)  # type: ignore[assignment]
    return ctx.memo[key].get(name)  # type: ignore[attr-defined]


def nonnegative(ctx: EmitContext, name: str) -> bool:
    """True if integer IR value ``name`` is statically >= 0."""
    r = value_range(ctx, name)
    return r is not None and r[0] >= 0


def abs_bound(ctx: EmitContext, name: str) -> int | None:
    """A static bound on ``|value|`` of integer IR value ``name`` (None for a float value): enough, e.g., to prove
    a runtime requantize multiplier such as ``edge_factor * M`` below 2**53.  int64 values without a tighter rule
    get their dtype's bound, which every caller treats like an unknown one."""
    r = value_range(ctx, name)
    return None if r is None else max(-r[0], r[1])


def weight_range(ctx: EmitContext, name: str) -> tuple[int, int] | None:
    """Static value range of a matmul weight: constants, and unpacked int4 constants ([-8, 7])."""
    if ctx.is_const(name):
        arr = ctx.const_array(name)
        return (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
    producer = producer_of(ctx, name)
    if producer is not None and producer.op == "unpack_int4":
        return (-8, 7)
    return None


def activation_max(ctx: EmitContext, name: str, as_u8: bool) -> int:
    """Largest raw uint8 value MatMulInteger can see for activation ``name`` (255 unless a producer bounds it)."""
    producer = producer_of(ctx, name)
    if producer is None or producer.op not in ("quantize", "requantize", "clamp"):
        return 255
    a = producer.attrs
    if producer.op == "requantize" and len(producer.inputs) > 4 and producer.inputs[4]:
        return 255  # per-row upper bounds: not analysed
    hi = a.get("hi") if producer.op == "clamp" else a.get("qmax", np.iinfo(ctx.dtypes[name]).max)
    return int(min(255, int(hi) + (128 if as_u8 else 0)))
