"""Constant tables and requantization parameters as fold stores them.

* Lookup tables are trimmed: the IR ``lut`` op reads ``table[clip(idx + offset, 0, T-1)]``, so of a leading
  (trailing) run of equal entries one is enough; indices that fell into the dropped part clip onto the kept
  entry, which holds the same value.  :func:`trim_table` returns the shorter table and the number of entries
  dropped in front, which the lookup's ``offset`` subtracts.
* A table with few distinct values and long runs is cheaper as a step function (IR ``lut_steps``): the
  indices where the value changes and the values between them (:func:`step_form`, exact for every integer
  index).  :func:`compact_lookup` stores each table in whichever form takes fewer bytes (:class:`StoredLookup`);
  a 4-bit GCN degree table over 1024 degrees is 901 ``lut`` bytes but 10 int16 thresholds + 11 values.
* Edge-coefficient tables (GCN ``(d+1)^-1/2``, SAGE ``1/max(d, 1)``, indexed by in-degree ``d``) end in a long
  run of equal values (the coefficient rounds to the same code for every large degree); :func:`edge_table`
  builds and stores them.
* Fixed-point multipliers are stored as int32 and shifts as int8 (:func:`requant_arrays`); ``requantize``
  widens tensor inputs to int64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from qgnn_deploy.quant.fake import Quantizer

MULTIPLIER_DTYPE = "int32"  # quantize_multiplier gives M < 2**31 (max_bits 31); larger ones fall back to int64
SHIFT_DTYPE = "int8"  # shifts lie in [0, 62]


def trim_table(table: np.ndarray) -> tuple[np.ndarray, int]:
    """Drop all but one entry of the leading and of the trailing run of equal values.

    Returns (table, entries dropped in front): a ``lut`` with offset ``o`` on the full table reads exactly the
    same values as one with offset ``o - dropped`` on the trimmed table.
    """
    t = np.asarray(table)
    if t.ndim != 1 or t.size == 0:
        return t, 0
    differs_front = np.flatnonzero(t != t[0])
    if differs_front.size == 0:
        return t[:1].copy(), 0
    lead = int(differs_front[0]) - 1
    last = int(np.flatnonzero(t != t[-1])[-1]) + 1
    return t[lead:last + 1].copy(), lead


THRESHOLD_DTYPES = ("int8", "int16", "int32")  # lut_steps thresholds: the narrowest that holds them


@dataclass(frozen=True)
class StoredLookup:
    """An index -> value lookup as fold stores it: ``lut`` (``arrays = (table,)`` with ``offset``) or
    ``lut_steps`` (``arrays = (thresholds, values)``); both read the same value for every integer index."""

    op: str
    arrays: tuple[np.ndarray, ...]
    offset: int = 0

    @property
    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in self.arrays))

    @property
    def attrs(self) -> dict[str, int]:
        return {"offset": int(self.offset)} if self.op == "lut" else {}

    def lookup(self, idx: np.ndarray) -> np.ndarray:
        """The interpreter's result for ``idx`` (tests compare the two forms with it)."""
        from qgnn_deploy.ir.interpreter import KERNELS

        return KERNELS[self.op]([np.asarray(idx), *self.arrays], self.attrs)


def step_form(table: np.ndarray, offset: int = 0) -> tuple[np.ndarray, np.ndarray] | None:
    """``(thresholds, values)`` with ``lut_steps(idx, thresholds, values) == lut(idx, table, offset)`` for every
    integer ``idx``, or None when a threshold does not fit int32.

    ``lut`` reads ``table[clip(idx + offset, 0, T-1)]``, so its value changes exactly where ``idx + offset``
    reaches a position ``j`` with ``table[j] != table[j-1]``: those ``j - offset`` are the thresholds (sorted),
    and the values are ``table[0]`` followed by the entry at each change.
    """
    t = np.asarray(table)
    if t.ndim != 1 or t.size == 0:
        raise ValueError("step_form: needs a non-empty 1-D table")
    change = np.flatnonzero(t[1:] != t[:-1]) + 1
    thresholds = change.astype(np.int64) - int(offset)
    values = np.concatenate([t[:1], t[change]]).astype(t.dtype)
    for dtype in THRESHOLD_DTYPES:
        info = np.iinfo(dtype)
        if thresholds.size == 0 or (thresholds.min() >= info.min and thresholds.max() <= info.max):
            return thresholds.astype(dtype), values
    return None


def compact_lookup(table: np.ndarray, offset: int = 0) -> StoredLookup:
    """``lut(idx, table, offset)`` in the form with the fewest stored bytes: the trimmed ``lut`` or ``lut_steps``
    (on a tie ``lut``: one gather per element instead of a short search)."""
    trimmed, dropped = trim_table(np.asarray(table))
    best = StoredLookup("lut", (trimmed,), int(offset) - dropped)
    steps = step_form(trimmed, int(offset) - dropped)
    if steps is not None and sum(a.nbytes for a in steps) < best.nbytes:
        return StoredLookup("lut_steps", steps)
    return best


def edge_coefficients(arch: str, max_in_degree: int) -> tuple[np.ndarray, int]:
    """Float edge coefficient for in-degree ``d = 0 .. max_in_degree`` and the lookup offset of the index fold
    feeds (GCN looks up ``d + 1``, the degree with its self loop; SAGE looks up ``d``)."""
    d = np.arange(0, int(max_in_degree) + 1, dtype=np.float64)
    if arch == "sage":
        return 1.0 / np.maximum(d, 1.0), 0
    if arch == "gcn":
        return 1.0 / np.sqrt(d + 1.0), -1
    raise ValueError(f"no edge-coefficient table for layer kind {arch!r}")


def edge_table(q: Quantizer, arch: str, max_in_degree: int) -> StoredLookup:
    """A layer's quantized edge coefficients as stored (uint8 codes up to 8 bits), looked up by the index fold
    feeds (GCN: in-degree + 1, SAGE: in-degree); see :func:`compact_lookup`."""
    values, offset = edge_coefficients(arch, max_in_degree)
    codes = q.to_int(torch.as_tensor(values, dtype=torch.float32)).numpy()
    return compact_lookup(codes.astype(np.uint8 if q.spec.qmax <= 255 else np.int32), offset)


def requant_arrays(m: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Multipliers as int32 (int64 if one does not fit) and shifts as int8, the dtypes ``requantize`` inputs use."""
    m = np.asarray(m, dtype=np.int64)
    n = np.asarray(n, dtype=np.int64)
    fits = m.size == 0 or (m.min() >= np.iinfo(MULTIPLIER_DTYPE).min and m.max() <= np.iinfo(MULTIPLIER_DTYPE).max)
    if n.size and (n.min() < 0 or n.max() > np.iinfo(SHIFT_DTYPE).max):
        raise ValueError(f"requantize shift out of range: [{n.min()}, {n.max()}]")
    return m.astype(MULTIPLIER_DTYPE if fits else np.int64), n.astype(SHIFT_DTYPE)

