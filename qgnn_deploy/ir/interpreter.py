"""NumPy reference interpreter: the executable definition of every IR op.

All integer ops compute in int64 and check that the declared result dtype can
hold the value, so an accumulator overflow is reported instead of wrapping.
Backends are correct when they reproduce this interpreter bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from qgnn_deploy.ir.graph import Graph, Node
from qgnn_deploy.ir.ops import WIDTH as _WIDTH
from qgnn_deploy.ir.ops import HandlerTable, wider
from qgnn_deploy.validation import validate_feeds

Kernel = Callable[[list[np.ndarray | None], dict[str, Any]], np.ndarray]
KERNELS: HandlerTable[Kernel] = HandlerTable("interpreter")
"""The executable definition of each IR op declared in :mod:`qgnn_deploy.ir.ops`."""


class IROverflowError(ArithmeticError):
    """An integer result left the range of its declared dtype."""


def kernel(name: str) -> Callable[[Kernel], Kernel]:
    """Register the reference kernel of IR op ``name``."""
    return KERNELS.register(name)


def narrow(v: np.ndarray, dtype: str, what: str) -> np.ndarray:
    """Cast int64 ``v`` to ``dtype``, raising if any value does not fit."""
    info = np.iinfo(dtype)
    if v.size and (v.min() < info.min or v.max() > info.max):
        raise IROverflowError(f"{what}: value range [{v.min()}, {v.max()}] does not fit {dtype}")
    return v.astype(dtype)


def _i64(x: np.ndarray) -> np.ndarray:
    return x.astype(np.int64)


def _check_index(idx: np.ndarray, n: int, what: str) -> None:
    if idx.dtype != np.int64:
        raise TypeError(f"{what}: index must be int64, got {idx.dtype}")
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise IndexError(f"{what}: index out of range [0, {n}) (min {idx.min()}, max {idx.max()})")


def _round_to_int64(v: np.ndarray) -> np.ndarray:
    """``rint`` then int64, saturating first so huge or infinite values clip like any backend's instead of
    hitting NumPy's undefined float->int64 cast (which turned +1e30 into INT64_MIN, i.e. qmin)."""
    return np.clip(np.rint(v), -(2.0**62), 2.0**62).astype(np.int64)


@kernel("quantize")
def _quantize(xs, a):
    x = xs[0].astype(np.float32)
    q = _round_to_int64(x / np.float32(a["scale"])) + int(a["zero_point"])
    return np.clip(q, a["qmin"], a["qmax"]).astype(a["dtype"])


@kernel("quantize_rows")
def _quantize_rows(xs, a):
    x, scale, qmin, qmax = xs
    q = _round_to_int64(x.astype(np.float32) / scale.astype(np.float32))
    return np.clip(q, qmin, qmax).astype(a["dtype"])


@kernel("dequantize")
def _dequantize(xs, a):
    return ((_i64(xs[0]) - int(a["zero_point"])).astype(np.float32) * np.float32(a["scale"])).astype(np.float32)


@kernel("unpack_int4")
def _unpack_int4(xs, a):
    packed = xs[0].astype(np.uint8).reshape(-1)
    nib = np.empty(packed.size * 2, dtype=np.int16)
    nib[0::2] = packed & 0x0F
    nib[1::2] = packed >> 4
    nib = np.where(nib >= 8, nib - 16, nib)
    count = int(np.prod(a["shape"]))
    return nib[:count].astype(np.int8).reshape(a["shape"])


@kernel("matmul")
def _matmul(xs, a):
    lhs = _i64(xs[0]) - int(a.get("a_zero_point", 0))
    rhs = _i64(xs[1]) - int(a.get("b_zero_point", 0))
    return narrow(lhs @ rhs, "int32", "matmul accumulator")


def _binary(fn: Callable[[np.ndarray, np.ndarray], np.ndarray], what: str) -> Kernel:
    def k(xs, a):
        return narrow(fn(_i64(xs[0]), _i64(xs[1])), wider(xs[0].dtype, xs[1].dtype), what)

    return k


KERNELS["add"] = _binary(np.add, "add")
KERNELS["sub"] = _binary(np.subtract, "sub")
KERNELS["mul"] = _binary(np.multiply, "mul")


@kernel("div_floor")
def _div_floor(xs, a):
    num, den = _i64(xs[0]), _i64(xs[1])
    if den.size and den.min() <= 0:
        raise ZeroDivisionError("div_floor: divisor must be positive")
    return narrow(np.floor_divide(num, den), wider(xs[0].dtype, xs[1].dtype), "div_floor")


@kernel("cast")
def _cast(xs, a):
    return narrow(_i64(xs[0]), a["dtype"], "cast")


@kernel("clamp")
def _clamp(xs, a):
    return np.clip(_i64(xs[0]), a["lo"], a["hi"]).astype(xs[0].dtype)


def requantize_int64(acc: np.ndarray, multiplier: Any, shift: Any) -> np.ndarray:
    """``floor((acc * M + 2**(n-1)) / 2**n)`` in int64 (round half up)."""
    acc64, m64, n64 = _i64(np.asarray(acc)), _i64(np.asarray(multiplier)), _i64(np.asarray(shift))
    if acc64.size and float(np.abs(acc64).max()) * float(np.abs(m64).max()) >= 2.0**62:
        raise IROverflowError("requantize: acc * multiplier may exceed int64")
    half = np.where(n64 > 0, np.left_shift(np.int64(1), np.maximum(n64 - 1, 0)), 0)
    return np.right_shift(acc64 * m64 + half, n64)


@kernel("requantize")
def _requantize(xs, a):
    acc = xs[0]
    mult = xs[1] if len(xs) > 1 and xs[1] is not None else a["multiplier"]
    shift = xs[2] if len(xs) > 2 and xs[2] is not None else a["shift"]
    info = np.iinfo(a["dtype"])
    qmin = xs[3] if len(xs) > 3 and xs[3] is not None else a.get("qmin", info.min)
    qmax = xs[4] if len(xs) > 4 and xs[4] is not None else a.get("qmax", info.max)
    y = requantize_int64(acc, mult, shift) + int(a["zero_point"])
    return np.clip(y, _i64(np.asarray(qmin)), _i64(np.asarray(qmax))).astype(a["dtype"])


@kernel("take_row")
def _take_row(xs, a):
    return np.ascontiguousarray(xs[0][int(a["index"])])


@kernel("gather_rows")
def _gather_rows(xs, a):
    x, idx = xs
    _check_index(idx, x.shape[0], "gather_rows")
    return x[idx]


def _segment_target(xs: list[np.ndarray], what: str) -> tuple[np.ndarray, np.ndarray, int]:
    values, idx, ref = xs
    n = ref.shape[0]
    _check_index(idx, n, what)
    if values.shape[0] != idx.shape[0]:
        raise ValueError(f"{what}: {values.shape[0]} value rows for {idx.shape[0]} indices")
    return values, idx, n


@kernel("scatter_add")
def _scatter_add(xs, a):
    values, idx, n = _segment_target(xs, "scatter_add")
    out = np.zeros((n,) + values.shape[1:], dtype=np.int64)
    np.add.at(out, idx, _i64(values))
    return narrow(out, "int32", "scatter_add accumulator")


@kernel("scatter_max")
def _scatter_max(xs, a):
    values, idx, n = _segment_target(xs, "scatter_max")
    out = np.full((n,) + values.shape[1:], np.iinfo(np.int64).min, dtype=np.int64)
    np.maximum.at(out, idx, _i64(values))
    out[out == np.iinfo(np.int64).min] = 0
    return narrow(out, "int32", "scatter_max")


@kernel("degree")
def _degree(xs, a):
    idx, ref = xs
    n = ref.shape[0]
    _check_index(idx, n, "degree")
    return np.bincount(idx, minlength=n).astype(np.int32).reshape(n, 1)


@kernel("lut")
def _lut(xs, a):
    idx, table = xs
    pos = np.clip(_i64(idx) + int(a["offset"]), 0, table.shape[0] - 1)
    return table[pos]


@kernel("lut_steps")
def _lut_steps(xs, a):
    idx, thresholds, values = xs
    if thresholds.ndim != 1 or values.ndim != 1 or values.shape[0] != thresholds.shape[0] + 1:
        raise ValueError(f"lut_steps: needs thresholds[K] and values[K+1], got {thresholds.shape} and {values.shape}")
    t = _i64(thresholds)
    if t.size and np.any(t[1:] < t[:-1]):
        raise ValueError("lut_steps: thresholds must be non-decreasing")  # backends binary-search them
    if not np.issubdtype(idx.dtype, np.integer):
        raise TypeError(f"lut_steps: index must be an integer, got {idx.dtype}")
    # searchsorted(side="right") counts the thresholds <= idx; compared in int64, so no index dtype wraps
    return values[np.searchsorted(t, _i64(idx), side="right")]


@kernel("reduce_max")
def _reduce_max(xs, a):
    return xs[0].max(axis=a.get("axis", -1), keepdims=a.get("keepdims", True))


@kernel("reduce_sum")
def _reduce_sum(xs, a):
    s = _i64(xs[0]).sum(axis=a.get("axis", -1), keepdims=a.get("keepdims", True))
    return narrow(s, "int32" if _WIDTH[str(xs[0].dtype)] <= 4 else "int64", "reduce_sum")


@kernel("repeat_cols")
def _repeat_cols(xs, a):
    c = int(a["repeats"])
    if c < 1 or xs[0].ndim != 2:
        raise ValueError(f"repeat_cols: needs a 2-D input and repeats >= 1, got shape {xs[0].shape}, repeats {c}")
    return np.repeat(xs[0], c, axis=1)


@kernel("concat")
def _concat(xs, a):
    if len({str(x.dtype) for x in xs}) != 1:
        raise TypeError("concat: inputs must share one dtype")
    return np.concatenate(xs, axis=a.get("axis", -1))


@kernel("pool_sum")
def _pool_sum(xs, a):
    values, batch = xs
    _check_index(batch, max(int(batch.max()) + 1, 0) if batch.size else 0, "pool_sum")
    g = int(batch.max()) + 1 if batch.size else 0
    out = np.zeros((g,) + values.shape[1:], dtype=np.int64)
    np.add.at(out, batch, _i64(values))
    return narrow(out, "int32", "pool_sum accumulator")


def run(graph: Graph, feeds: Mapping[str, np.ndarray], keep_all: bool = False,
        check: bool = True) -> dict[str, np.ndarray]:
    """Execute ``graph`` on ``feeds``; returns the graph outputs (or every value).

    ``check`` (default) first applies the input contract every runner shares
    (:func:`qgnn_deploy.validation.validate_feeds`: dtypes, shapes, finite floats, edge ids in range,
    in-degree within ``graph.meta["max_in_degree"]``), raising :class:`~qgnn_deploy.validation.ValidationError`
    (a ``ValueError``); pass ``check=False`` only for feeds already validated.
    """
    if check:
        validate_feeds(graph.inputs, graph.meta, {k: np.asarray(v) for k, v in feeds.items()})
    env: dict[str, np.ndarray] = dict(graph.initializers)
    for vi in graph.inputs:
        if vi.name not in feeds:
            raise KeyError(f"missing graph input {vi.name!r}")
        arr = np.asarray(feeds[vi.name])
        if str(arr.dtype) != vi.dtype:
            raise TypeError(f"input {vi.name!r} must be {vi.dtype}, got {arr.dtype}")
        if arr.ndim != len(vi.shape):
            raise ValueError(f"input {vi.name!r} must have rank {len(vi.shape)}, got shape {arr.shape}")
        env[vi.name] = arr
    for node in graph.nodes:
        env[node.outputs[0]] = _run_node(node, env)
    if keep_all:
        return env
    return {o.name: env[o.name] for o in graph.outputs}


def _run_node(node: Node, env: dict[str, np.ndarray]) -> np.ndarray:
    fn = KERNELS.get(node.op)
    if fn is None:
        raise NotImplementedError(f"interpreter has no kernel for op {node.op!r}")
    args = [env[i] if i else None for i in node.inputs]
    return fn(args, node.attrs)
