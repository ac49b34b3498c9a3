"""Fold path for A2Q's degree-bucketed per-node quantizers (``QParams.per_node["mode"] == "degree_bucket"``).

At run time every node picks its parameters by in-degree, with two table lookups::

    bucket_i = lut(in_degree_i, bucket_of_degree)          (clipped: large degrees share the last bucket)
    s_i, qmin_i, qmax_i = lut(bucket_i, step / qmin / qmax tables)

* at the float boundary: ``quantize_rows(x, s_i, qmin_i, qmax_i)``;
* inside the graph (next layer's input): ``requantize(acc, M_b, n_b, qmin_b, qmax_b)`` with one fixed-point
  multiplier per bucket, ``M_b 2^-n_b ~ grid / s_b``.

A per-node-scaled tensor may only feed a matmul: ``(s_i q_i) W = s_i (q_i W)``, so the int32 accumulator
is exact and only its requantization needs the row scale.  The tensor is therefore represented with a
common unit ``u = max_b s_b / 2^ROW_BITS`` and an integer row factor ``R_i = round(s_i / u)`` (``lut`` of
an int64 table), which the requantization multiplies into its multiplier (``FoldContext.requant``'s
``row_factor``), so ``acc * s_i`` never materialises.  ``R`` has ``ROW_BITS`` bits of relative precision.
"""

from __future__ import annotations

import numpy as np

from qgnn_deploy.errors import QgnnError
from qgnn_deploy.fold.emit import PER_NODE_BOUNDARY, PER_NODE_REQUANT, Acc, FoldContext, QTensor
from qgnn_deploy.fold.tables import compact_lookup, requant_arrays
from qgnn_deploy.quant.fake import Quantizer
from qgnn_deploy.quant.fixed_point import quantize_multipliers

ROW_BITS = 20


def _lut(fc: FoldContext, idx: str, table: np.ndarray, hint: str) -> str:
    """``table[clip(idx, 0, T-1)]`` stored trimmed or as a step function, whichever is smaller
    (``fold/tables.py``: the degree -> bucket table is a 7-step function over 128 int64 entries)."""
    return fc.lookup(idx, compact_lookup(table), hint, f"{hint}_table")


def bucket_value(fc: FoldContext, q: Quantizer, hint: str) -> str:
    """``bucket = lut(in_degree, bucket_of_degree)`` (one per bucket rule per fold)."""
    p = q.qparams()
    if fc.node_degree is None:
        raise QgnnError("fold: A2Q per-node quantizers need the in-degree value (fold_model sets it)")
    table = np.asarray(p.per_node["bucket_of_degree"], dtype=np.int64)
    cache: dict[tuple, str] = fc.__dict__.setdefault("_a2q_buckets", {})
    key = tuple(table.tolist())
    if key not in cache:
        cache[key] = _lut(fc, fc.node_degree, table, f"{hint}_bucket")
    return cache[key]


def _row_factor(fc: FoldContext, scales: np.ndarray, bucket: str, hint: str) -> tuple[str, int, float]:
    """Integer per-row factor ``R = round(s / u)`` with ``u = max(s) / 2^ROW_BITS``: (value, max R, u)."""
    s = np.asarray(scales, dtype=np.float64)
    unit = float(s.max()) / 2.0**ROW_BITS
    r = np.maximum(np.round(s / unit), 1).astype(np.int64)
    return _lut(fc, bucket, r, f"{hint}_rowfactor"), int(r.max()), unit


def quantize_rows_boundary(fc: FoldContext, q: Quantizer, x: str, hint: str = "x_q") -> QTensor:
    """The model input quantized per node: ``quantize_rows`` with looked-up step and bounds."""
    p = q.qparams()
    bucket = bucket_value(fc, q, hint)
    scale = _lut(fc, bucket, np.asarray(p.scale, np.float32).reshape(-1), f"{hint}_scale")
    qmin = _lut(fc, bucket, np.asarray(p.qmin, np.int64).reshape(-1), f"{hint}_qmin")
    qmax = _lut(fc, bucket, np.asarray(p.qmax, np.int64).reshape(-1), f"{hint}_qmax")
    v = fc.b.op("quantize_rows", [x, scale, qmin, qmax], hint, dtype=p.dtype)
    fc.bitwidths[v] = int(np.max(p.bits))
    rf, rf_max, unit = _row_factor(fc, p.scale, bucket, hint)
    return QTensor(v, unit, 0, int(np.min(p.qmin)), int(np.max(p.qmax)), p.dtype, rf, rf_max)


def requant_rows(fc: FoldContext, acc: Acc, q: Quantizer, hint: str, relu: bool = False) -> QTensor:
    """Requantize a per-tensor-grid accumulator onto per-node steps: one multiplier/shift/bounds per bucket."""
    grid = np.asarray(acc.grid, dtype=np.float64)
    if grid.size != 1 or acc.row_factor is not None:
        raise QgnnError(f"fold: {hint}: A2Q per-node requantization needs a per-tensor accumulator grid")
    p = q.qparams()
    bucket = bucket_value(fc, q, hint)
    m, n = quantize_multipliers(float(grid.reshape(-1)[0]) / np.asarray(p.scale, np.float64), acc_bound=acc.bound)
    lo = np.asarray(p.qmin, np.int64).reshape(-1)
    hi = np.asarray(p.qmax, np.int64).reshape(-1)
    if relu:
        lo = np.maximum(lo, 0)
    m, n = requant_arrays(m.reshape(-1), n.reshape(-1))
    ins = [acc.value, _lut(fc, bucket, m, f"{hint}_multiplier"), _lut(fc, bucket, n, f"{hint}_shift"),
           _lut(fc, bucket, lo, f"{hint}_qmin"), _lut(fc, bucket, hi, f"{hint}_qmax")]
    v = fc.b.op("requantize", ins, hint, zero_point=0, dtype=p.dtype)
    fc.bitwidths[v] = int(np.max(p.bits))
    rf, rf_max, unit = _row_factor(fc, p.scale, bucket, hint)
    return QTensor(v, unit, 0, int(lo.min()), int(hi.max()), p.dtype, rf, rf_max)


PER_NODE_REQUANT["degree_bucket"] = requant_rows
PER_NODE_BOUNDARY["degree_bucket"] = quantize_rows_boundary
