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

from dataclasses import dataclass

from qgnn_deploy.ir.graph import Node


@dataclass(frozen=True)
class OpSpec:
    name: str
    min_inputs: int
    max_inputs: int
    doc: str
    is_float: bool = False
    required_attrs: tuple[str, ...] = ()

    def check_arity(self, node: Node) -> None:
        n = len(node.inputs)
        if not self.min_inputs <= n <= self.max_inputs:
            raise ValueError(f"{node.op} node {node.name!r} takes {self.min_inputs}..{self.max_inputs} inputs, got {n}")
        if len(node.outputs) != 1:
            raise ValueError(f"{node.op} node {node.name!r} must have exactly one output")
        missing = [a for a in self.required_attrs if a not in node.attrs]
        if missing:
            raise ValueError(f"{node.op} node {node.name!r} lacks attributes {missing}")


_SPECS = [
    OpSpec("quantize", 1, 1, "float32 x -> int: clip(round_half_even(x / scale) + zero_point, qmin, qmax) as dtype",
           is_float=True, required_attrs=("scale", "zero_point", "qmin", "qmax", "dtype")),
    OpSpec("quantize_rows", 4, 4, "float32 x[N,F], scale[N,1] f32, qmin[N,1] i64, qmax[N,1] i64 -> dtype: "
           "per-row quantize with zero point 0 (A2Q per-node step and bit-width)", is_float=True,
           required_attrs=("dtype",)),
    OpSpec("dequantize", 1, 1, "int q -> float32: (q - zero_point) * scale", is_float=True,
           required_attrs=("scale", "zero_point")),
    OpSpec("unpack_int4", 1, 1, "packed uint8 (two's-complement nibbles, low nibble first) -> int8 of attr shape",
           required_attrs=("shape",)),
    OpSpec("matmul", 2, 2, "a[M,K] (u8|i8) x b[K,N] (i8) -> int32: sum_k (a - a_zero_point)(b - b_zero_point)"),
    OpSpec("add", 2, 2, "integer a + b with broadcasting; result dtype is the wider input dtype"),
    OpSpec("sub", 2, 2, "integer a - b with broadcasting; result dtype is the wider input dtype"),
    OpSpec("mul", 2, 2, "integer a * b with broadcasting; result dtype is the wider input dtype"),
    OpSpec("div_floor", 2, 2, "integer floor(a / b), b > 0, broadcasting"),
    OpSpec("cast", 1, 1, "integer cast to attr dtype (value must fit)", required_attrs=("dtype",)),
    OpSpec("clamp", 1, 1, "clip(x, lo, hi) in the input dtype (ReLU is clamp(lo=zero_point))",
           required_attrs=("lo", "hi")),
    OpSpec("requantize", 1, 5, "acc, [multiplier], [shift], [qmin], [qmax] -> dtype: fixed-point rescale and narrow "
           "(see module docstring)", required_attrs=("dtype", "zero_point")),
    OpSpec("take_row", 1, 1, "x[R,...] -> x[index] (e.g. src/dst rows of edge_index)", required_attrs=("index",)),
    OpSpec("gather_rows", 2, 2, "x[N,H], idx[E] i64 -> x[idx] of shape [E,H]"),
    OpSpec("scatter_add", 3, 3, "values[E,H] int32, idx[E] i64, ref[N,..] -> int32 [N,H]: out[idx[e]] += values[e]"),
    OpSpec("scatter_max", 3, 3, "values[E,H] int32, idx[E] i64, ref[N,..] -> int32 [N,H]: max over incoming rows, "
           "0 where a row has none"),
    OpSpec("degree", 2, 2, "idx[E] i64, ref[N,..] -> int32 [N,1]: number of occurrences of each row index"),
    OpSpec("lut", 2, 2, "idx (int), table[T] (const int) -> table[clip(idx + offset, 0, T-1)]",
           required_attrs=("offset",)),
    OpSpec("lut_steps", 3, 3, "idx (int), thresholds[K] (const int, non-decreasing), values[K+1] (const) -> "
           "values[#{k : idx >= thresholds[k]}]; K = 0 is a constant"),
    OpSpec("reduce_max", 1, 1, "max over attr axis, keepdims"),
    OpSpec("reduce_sum", 1, 1, "sum over attr axis, keepdims (int32 result must not overflow)"),
    OpSpec("concat", 2, 8, "concatenate along attr axis (same dtype)"),
    OpSpec("pool_sum", 2, 2, "values[N,H] int32, batch[N] i64 -> int32 [G,H], G = max(batch) + 1"),
]

OPS: dict[str, OpSpec] = {s.name: s for s in _SPECS}


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
