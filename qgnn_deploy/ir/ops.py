"""Catalogue of integer-graph ops: arity, float-ness and the contract in words.

The executable definition of each op is its function in
:mod:`qgnn_deploy.ir.interpreter`; backends (ONNX, TVM) provide one handler per
op name listed here and are tested bit-exact against the interpreter.

Conventions
-----------
* Integer arithmetic is exact; an int32 result that would leave the int32
  range is an error (fold-time bounds make it impossible for valid inputs).
* ``requantize`` is the only narrowing op:
  ``y = clip(floor((acc * M + 2**(n-1)) / 2**n) + zp, qmin, qmax)`` computed in
  int64 (round half up).  ``M``/``n``/``qmin``/``qmax`` are attributes
  (per-tensor) or optional tensor inputs of any integer dtype, widened to
  int64 and broadcast against ``acc`` (per-column or per-row, e.g. A2Q's
  per-node bit-widths; fold stores multipliers as int32 and shifts as int8).
* ``lut`` clips its index into the table, so fold stores tables with their
  leading and trailing runs of equal entries cut to one (``fold/tables.py``).
* ``lut_steps`` is the same kind of lookup stored as a step function: only the
  indices where the value changes (``thresholds``, non-decreasing) and the
  ``K + 1`` values between them.  A table of few distinct values with long runs
  (a 4-bit degree coefficient over 1024 degrees) costs ``K`` thresholds plus
  ``K + 1`` values instead of one entry per index; it is exact for every
  integer index, so there is no offset and nothing to clip.
* Graph-structure ops take ``edge_index`` rows as int64 ``src``/``dst`` vectors
  and a ``ref`` tensor whose first dimension is the number of nodes ``N``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

# The bottom of the IR layer: this module imports nothing from qgnn_deploy, so ``ir.graph``, the interpreter
# and every backend import it and never the other way round (tests/test_ops_registry.py checks for cycles).

WIDTH: dict[str, int] = {"uint8": 1, "int8": 1, "uint16": 2, "int16": 2, "int32": 4, "int64": 8}
"""Bytes per element of the IR's integer dtypes: the one table the interpreter and the backends read."""

Shape = tuple[int | str | None, ...]
Attrs = Mapping[str, Any]
DtypeRule = Callable[[Sequence[str], Attrs], str]
RankRule = Callable[[Sequence[int], Attrs], int]
ShapeRule = Callable[[Sequence[Shape], Attrs], Shape]


class NodeLike(Protocol):
    """What :meth:`OpSpec.check_arity` reads of a :class:`~qgnn_deploy.ir.graph.Node`."""

    op: str
    name: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any]


def wider(a: Any, b: Any) -> str:
    """Result dtype of a binary integer op: the wider input; two different 1-byte types give int16."""
    a, b = str(a), str(b)
    if a == b:
        return a
    wa, wb = WIDTH[a], WIDTH[b]
    if wa == wb == 1:
        return "int16"
    return a if wa > wb else b


def broadcast(*shapes: Shape) -> Shape:
    """NumPy broadcasting of static shapes with symbolic (str) or unknown (None) dims."""
    rank = max(len(sh) for sh in shapes)
    out: list[int | str | None] = []
    for k in range(rank):
        dims = {sh[len(sh) - rank + k] for sh in shapes if len(sh) - rank + k >= 0}
        dims.discard(1)
        out.append(dims.pop() if len(dims) == 1 else (1 if not dims else None))
    return tuple(out)


# ------------------------------------------------------------------------ typing rules (by kind of op)
def _attr_dtype(ins: Sequence[str], a: Attrs) -> str:
    return str(a["dtype"])


def _fixed(dtype: str) -> DtypeRule:
    return lambda ins, a: dtype


def _input_dtype(k: int) -> DtypeRule:
    return lambda ins, a: ins[k]


def _wider_dtype(ins: Sequence[str], a: Attrs) -> str:
    return wider(ins[0], ins[1])


def _sum_dtype(ins: Sequence[str], a: Attrs) -> str:
    return "int32" if WIDTH[ins[0]] <= 4 else "int64"


def _first_rank(ins: Sequence[int], a: Attrs) -> int:
    return ins[0]


def _first_shape(ins: Sequence[Shape], a: Attrs) -> Shape:
    return ins[0]


def _binary_rank(ins: Sequence[int], a: Attrs) -> int:
    return max(ins[0], ins[1])


def _reduce_rank(ins: Sequence[int], a: Attrs) -> int:
    return ins[0] if a.get("keepdims", True) else ins[0] - 1


def _reduce_shape(ins: Sequence[Shape], a: Attrs) -> Shape:
    axis = int(a.get("axis", -1)) % max(len(ins[0]), 1)
    keep = a.get("keepdims", True)
    return tuple((1 if k == axis else d) for k, d in enumerate(ins[0]) if keep or k != axis)


def _broadcast_shape(ins: Sequence[Shape], a: Attrs) -> Shape:
    return broadcast(*[s for s in ins if s is not None])


def _requantize_shape(ins: Sequence[Shape], a: Attrs) -> Shape:
    return broadcast(*[s for s in ins if s])  # absent optional inputs have the empty shape


def _repeat_cols_shape(ins: Sequence[Shape], a: Attrs) -> Shape:
    h = ins[0][-1]
    return ins[0][:-1] + ((h * int(a["repeats"]) if isinstance(h, int) else None),)


def _concat_shape(ins: Sequence[Shape], a: Attrs) -> Shape:
    axis = int(a.get("axis", -1)) % len(ins[0])
    dims = [s[axis] for s in ins]
    total = sum(dims) if all(isinstance(d, int) for d in dims) else None  # type: ignore[arg-type]
    return tuple(total if k == axis else d for k, d in enumerate(ins[0]))


@dataclass(frozen=True)
class OpSpec:
    """One IR op, declared once: arity, required attributes, float-ness, the contract in words, and the typing
    rules (output dtype, rank and static shape from the inputs') that backends and analyses read."""

    name: str
    min_inputs: int
    max_inputs: int
    doc: str
    is_float: bool = False
    required_attrs: tuple[str, ...] = ()
    dtype: DtypeRule = _input_dtype(0)
    rank: RankRule = _first_rank
    shape: ShapeRule = _first_shape

    def check_arity(self, node: NodeLike) -> None:
        """Input count, single output and required attributes of ``node``; ValueError otherwise."""
        n = len(node.inputs)
        if not self.min_inputs <= n <= self.max_inputs:
            raise ValueError(f"{node.op} node {node.name!r} takes {self.min_inputs}..{self.max_inputs} inputs, got {n}")
        if len(node.outputs) != 1:
            raise ValueError(f"{node.op} node {node.name!r} must have exactly one output")
        missing = [a for a in self.required_attrs if a not in node.attrs]
        if missing:
            raise ValueError(f"{node.op} node {node.name!r} lacks attributes {missing}")


_BINARY: dict[str, Any] = {"dtype": _wider_dtype, "rank": _binary_rank, "shape": _broadcast_shape}
_REDUCE: dict[str, Any] = {"rank": _reduce_rank, "shape": _reduce_shape}

_SPECS = [
    OpSpec("quantize", 1, 1, "float32 x -> int: clip(round_half_even(x / scale) + zero_point, qmin, qmax) as dtype",
           is_float=True, required_attrs=("scale", "zero_point", "qmin", "qmax", "dtype"), dtype=_attr_dtype),
    OpSpec("quantize_rows", 4, 4, "float32 x[N,F], scale[N,1] f32, qmin[N,1] i64, qmax[N,1] i64 -> dtype: "
           "per-row quantize with zero point 0 (A2Q per-node step and bit-width)", is_float=True,
           required_attrs=("dtype",), dtype=_attr_dtype, shape=_broadcast_shape),
    OpSpec("dequantize", 1, 1, "int q -> float32: (q - zero_point) * scale", is_float=True,
           required_attrs=("scale", "zero_point"), dtype=_fixed("float32")),
    OpSpec("unpack_int4", 1, 1, "packed uint8 (two's-complement nibbles, low nibble first) -> int8 of attr shape",
           required_attrs=("shape",), dtype=_fixed("int8"), rank=lambda ins, a: len(a["shape"]),
           shape=lambda ins, a: tuple(int(d) for d in a["shape"])),
    OpSpec("matmul", 2, 2, "a[M,K] (u8|i8) x b[K,N] (i8) -> int32: sum_k (a - a_zero_point)(b - b_zero_point)",
           dtype=_fixed("int32"), shape=lambda ins, a: ins[0][:-1] + ins[1][-1:]),
    OpSpec("add", 2, 2, "integer a + b with broadcasting; result dtype is the wider input dtype", **_BINARY),
    OpSpec("sub", 2, 2, "integer a - b with broadcasting; result dtype is the wider input dtype", **_BINARY),
    OpSpec("mul", 2, 2, "integer a * b with broadcasting; result dtype is the wider input dtype", **_BINARY),
    OpSpec("div_floor", 2, 2, "integer floor(a / b), b > 0, broadcasting", **_BINARY),
    OpSpec("cast", 1, 1, "integer cast to attr dtype (value must fit)", required_attrs=("dtype",), dtype=_attr_dtype),
    OpSpec("clamp", 1, 1, "clip(x, lo, hi) in the input dtype (ReLU is clamp(lo=zero_point))",
           required_attrs=("lo", "hi")),
    OpSpec("requantize", 1, 5, "acc, [multiplier], [shift], [qmin], [qmax] -> dtype: fixed-point rescale and narrow "
           "(see module docstring)", required_attrs=("dtype", "zero_point"), dtype=_attr_dtype,
           shape=_requantize_shape),
    OpSpec("take_row", 1, 1, "x[R,...] -> x[index] (e.g. src/dst rows of edge_index)", required_attrs=("index",),
           rank=lambda ins, a: ins[0] - 1, shape=lambda ins, a: ins[0][1:]),
    OpSpec("gather_rows", 2, 2, "x[N,H], idx[E] i64 -> x[idx] of shape [E,H]",
           rank=lambda ins, a: ins[1] + ins[0] - 1, shape=lambda ins, a: ins[1] + ins[0][1:]),
    OpSpec("scatter_add", 3, 3, "values[E,H] int32, idx[E] i64, ref[N,..] -> int32 [N,H]: out[idx[e]] += values[e]",
           dtype=_fixed("int32"), shape=lambda ins, a: ins[2][:1] + ins[0][1:]),
    OpSpec("scatter_max", 3, 3, "values[E,H] int32, idx[E] i64, ref[N,..] -> int32 [N,H]: max over incoming rows, "
           "0 where a row has none", dtype=_fixed("int32"), shape=lambda ins, a: ins[2][:1] + ins[0][1:]),
    OpSpec("degree", 2, 2, "idx[E] i64, ref[N,..] -> int32 [N,1]: number of occurrences of each row index",
           dtype=_fixed("int32"), rank=lambda ins, a: 2, shape=lambda ins, a: (ins[1][0], 1)),
    OpSpec("lut", 2, 2, "idx (int), table[T] (const int) -> table[clip(idx + offset, 0, T-1)]",
           required_attrs=("offset",), dtype=_input_dtype(1)),
    OpSpec("lut_steps", 3, 3, "idx (int), thresholds[K] (const int, non-decreasing), values[K+1] (const) -> "
           "values[#{k : idx >= thresholds[k]}]; K = 0 is a constant", dtype=_input_dtype(2)),
    OpSpec("reduce_max", 1, 1, "max over attr axis, keepdims", **_REDUCE),
    OpSpec("reduce_sum", 1, 1, "sum over attr axis, keepdims (int32 result must not overflow)", dtype=_sum_dtype,
           **_REDUCE),
    OpSpec("repeat_cols", 1, 1, "x[R,H] -> x[R,H*C], C = attr repeats >= 1: each column repeated C times in place "
           "(out[:, k*C + c] = x[:, k]; a per-head coefficient over its head's C feature columns)",
           required_attrs=("repeats",), shape=_repeat_cols_shape),
    OpSpec("concat", 2, 8, "concatenate along attr axis (same dtype)", shape=_concat_shape),
    OpSpec("pool_sum", 2, 2, "values[N,H] int32, batch[N] i64 -> int32 [G,H], G = max(batch) + 1",
           dtype=_fixed("int32"), shape=lambda ins, a: ("G",) + ins[0][1:]),
]

OPS: dict[str, OpSpec] = {s.name: s for s in _SPECS}

H = TypeVar("H", bound=Callable[..., Any])


class HandlerTable(dict[str, H], Generic[H]):
    """One backend's implementation of the IR ops, keyed by op name (the interpreter's kernels, the ONNX and TVM
    handlers).  Registering a name that is not in :data:`OPS` fails at import time; :meth:`missing` lists the
    ops still without a handler (tests/test_ops_registry.py requires none for every backend)."""

    def __init__(self, backend: str) -> None:
        super().__init__()
        self.backend = backend

    def __setitem__(self, op: str, fn: H) -> None:
        if op not in OPS:
            raise ValueError(f"{self.backend}: handler for unknown IR op {op!r} (declare it in qgnn_deploy/ir/ops.py)")
        super().__setitem__(op, fn)

    def register(self, op: str) -> Callable[[H], H]:
        """Decorator: ``@table.register("matmul")``."""

        def deco(fn: H) -> H:
            self[op] = fn
            return fn

        return deco

    def missing(self) -> list[str]:
        """IR ops this backend cannot handle yet."""
        return sorted(set(OPS) - set(self))


def steps_search_plan(k: int) -> tuple[int, list[int]]:
    """Probe schedule backends use to evaluate ``lut_steps`` with ``k`` thresholds: ``(first, strides)``.

    A branchless binary search for ``pos = #{j : idx >= t[j]}`` that only ever reads ``t[0 .. k-1]``, so it
    needs neither padding nor sentinels (which would be wrong for an int64 index at the dtype's maximum) and
    keeps memory at one ``pos`` per element (a broadcast ``[N, k]`` compare would not).  With ``b`` the
    largest power of two ``<= k``: ``pos = first if idx >= t[first - 1] else 0`` for ``first = k - b + 1``
    leaves ``pos <= count <= pos + b - 1 <= k`` either way; then for each stride ``s = b/2, ..., 1``,
    ``c = pos + s`` and ``pos = c if idx >= t[c - 1]``.  Every probe is in range because the thresholds are
    sorted; ``k = 0`` needs no probe (``pos = 0``).
    """
    if k <= 0:
        return 0, []
    b = 1 << (int(k).bit_length() - 1)
    strides = []
    s = b >> 1
    while s:
        strides.append(s)
        s >>= 1
    return k - b + 1, strides
