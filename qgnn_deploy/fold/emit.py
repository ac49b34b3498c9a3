"""Emission helpers shared by the per-layer fold handlers.

Fold tracks two kinds of values while it walks the model:

* :class:`QTensor` — an int8/uint8 activation with its (scale, zero point) and
  the quantizer range it was clamped to;
* :class:`Acc` — an int32 accumulator whose real value is ``acc * grid`` (grid a
  scalar or one value per output column), plus a bound on ``|acc|`` used to rule
  out overflow and to size fixed-point multipliers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from qgnn_deploy.errors import QgnnError
from qgnn_deploy.fold.tables import StoredLookup, requant_arrays
from qgnn_deploy.ir.graph import GraphBuilder
from qgnn_deploy.ir.testing import pack_int4
from qgnn_deploy.quant.fake import Quantizer
from qgnn_deploy.quant.fixed_point import quantize_multipliers

INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class QTensor:
    value: str
    scale: float
    zero_point: int
    qmin: int
    qmax: int
    dtype: str
    # A2Q per-node scales (see fold/a2q.py): row i's real value is (q - zp) * scale * row_factor_i, row_factor an
    # int64 [N, 1] IR value; such a tensor may only feed a matmul, whose accumulator inherits the factor.
    row_factor: str | None = None
    row_factor_max: int = 1

    @property
    def max_abs_centered(self) -> int:
        """Largest ``|q - zp|`` the tensor can hold."""
        return max(abs(self.qmax - self.zero_point), abs(self.qmin - self.zero_point))


@dataclass(frozen=True)
class Acc:
    value: str
    grid: np.ndarray  # float64, shape () or (C,)
    bound: float
    row_factor: str | None = None  # per-row integer factor of the grid (A2Q inputs; see QTensor)
    row_factor_max: int = 1


PER_NODE_REQUANT: dict[str, Callable[..., QTensor]] = {}
"""Requantizers onto per-node activation grids, keyed by ``qparams().per_node["mode"]``: framework modules register
theirs (``fold/a2q.py``: ``degree_bucket``), so generic fold code names no framework and imports none."""
PER_NODE_BOUNDARY: dict[str, Callable[..., QTensor]] = {}
"""The same for the model input's boundary quantize (float features -> per-node integer codes)."""


class FoldContext:
    """The builder plus fold-wide facts (max in-degree, bit-width log, accumulator log)."""

    def __init__(self, max_in_degree: int) -> None:
        self.b = GraphBuilder()
        self.max_in_degree = int(max_in_degree)
        # bit-width of each quantized value or weight, keyed by its IR name (reports; nas/cost.py reads it to
        # count FP32 / ideal storage)
        self.bitwidths: dict[str, int] = {}
        self.accumulators: dict[str, float] = {}
        self._consts: dict[str, str] = {}
        self.node_degree: str | None = None  # int32 [N, 1] in-degree value (set by fold_model)

    # ------------------------------------------------------------ constants
    def scalar(self, value: int, dtype: str = "int32") -> str:
        key = f"{dtype}:{value}"
        if key not in self._consts:
            self._consts[key] = self.b.const(f"c_{dtype}_{value}".replace("-", "m"), np.array(value, dtype=dtype))
        return self._consts[key]

    def lookup(self, idx: str, stored: StoredLookup, hint: str, const_hint: str) -> str:
        """Emit a stored lookup of ``idx``: ``lut`` on constant ``const_hint``, or ``lut_steps`` on constants
        ``<const_hint>_thresholds`` and ``<const_hint>_values`` (whichever form ``fold/tables.py`` chose)."""
        if stored.op == "lut":
            names = [self.b.const(const_hint, stored.arrays[0])]
        else:
            names = [self.b.const(f"{const_hint}_{part}", arr) for part, arr in zip(("thresholds", "values"),
                                                                                     stored.arrays)]
        return self.b.op(stored.op, [idx, *names], hint, **stored.attrs)

    def check_bound(self, what: str, bound: float) -> None:
        self.accumulators[what] = float(bound)
        if bound > INT32_MAX:
            raise QgnnError(f"fold: accumulator {what!r} may reach {bound:.3g} > 2^31-1 at max in-degree "
                            f"{self.max_in_degree}; lower --max-in-degree or widen the accumulator")

    # -------------------------------------------------------------- weights
    def weight(self, hint: str, q: Quantizer, w: torch.Tensor, transpose: bool = True) -> tuple[str, np.ndarray,
                                                                                               np.ndarray]:
        """Quantized weight as an IR value ([in, out] when ``transpose``); int4 and below stored packed.

        Returns (value name, integer matrix, per-output-column scale).
        """
        w = w.detach()
        w_int = q.to_int(w).numpy().astype(np.int8)
        scale = np.asarray(q.scale_zp(w)[0].detach().numpy(), dtype=np.float32).reshape(-1).astype(np.float64)
        mat = w_int.T.copy() if transpose else w_int
        return self.int_matrix(hint, mat, int(q.spec.bits)), mat, scale

    def int_matrix(self, hint: str, mat: np.ndarray, bits: int) -> str:
        """A constant int8 matrix of ``bits``-bit codes as an IR value; int4 and below stored packed."""
        mat = np.asarray(mat, dtype=np.int8)
        if bits <= 4:
            v = self.b.op("unpack_int4", [self.b.const(f"{hint}_packed", pack_int4(mat))], hint,
                          shape=list(mat.shape))
        else:
            v = self.b.const(hint, mat)
        self.bitwidths[v] = int(bits)
        return v

    # ------------------------------------------------------------- requant
    def requant(self, acc: Acc, out_scale: float, zero_point: int, qmin: int, qmax: int, dtype: str, hint: str,
                row_factor: str | None = None, row_factor_max: int = 1) -> str:
        """``clip(round(acc * grid [* row_factor] / out_scale) + zp, qmin, qmax)`` as fixed point.

        ``row_factor`` is an optional int [N,1] value (e.g. a per-node edge factor)
        multiplied into the multiplier, so ``acc * factor`` never materialises.
        """
        if acc.row_factor is not None:
            if row_factor is not None:
                raise QgnnError(f"fold: {hint} would need two per-row factors (A2Q input and edge coefficients)")
            row_factor, row_factor_max = acc.row_factor, acc.row_factor_max
        real = np.asarray(acc.grid, dtype=np.float64) / float(out_scale)
        m, n = quantize_multipliers(real, acc_bound=acc.bound * max(row_factor_max, 1))
        b = self.b
        if row_factor is None and m.ndim == 0:
            return b.op("requantize", [acc.value], hint, multiplier=int(m), shift=int(n), zero_point=int(zero_point),
                        qmin=int(qmin), qmax=int(qmax), dtype=dtype)
        shape = (1, -1) if m.ndim else (1, 1)
        m_arr, n_arr = requant_arrays(m.reshape(shape), n.reshape(shape))  # int32 / int8, widened by requantize
        mult = b.const(f"{hint}_multiplier", m_arr)
        shift = b.const(f"{hint}_shift", n_arr)  # per-column multipliers may need per-column shifts
        if row_factor is not None:
            # int64 row factor x int32 multiplier: the product is int64 (the wider input)
            rf = b.op("cast", [row_factor], f"{hint}_rowfactor64", dtype="int64")
            mult = b.op("mul", [rf, mult], f"{hint}_rowmult")
        return b.op("requantize", [acc.value, mult, shift], hint, zero_point=int(zero_point), qmin=int(qmin),
                    qmax=int(qmax), dtype=dtype)

    def requant_to(self, acc: Acc, q: Quantizer, hint: str, relu: bool = False, row_factor: str | None = None,
                   row_factor_max: int = 1) -> QTensor:
        """Requantize an accumulator onto quantizer ``q``'s grid (ReLU folded into qmin)."""
        p = q.qparams()
        rows = PER_NODE_REQUANT.get(p.per_node.get("mode")) if p.per_node is not None else None
        if rows is not None:
            return rows(self, acc, q, hint, relu)
        if not p.is_per_tensor:
            raise QgnnError(f"fold: {hint} uses per-node/per-channel activation parameters, which this fold path "
                            "does not deploy yet")
        qmin, qmax = int(p.qmin), int(p.qmax)
        if relu:
            qmin = max(qmin, p.zero_point)
        value = self.requant(acc, p.scalar_scale(), p.zero_point, qmin, qmax, p.dtype, hint, row_factor,
                             row_factor_max)
        self.bitwidths[value] = int(p.bits)
        return QTensor(value, p.scalar_scale(), p.zero_point, qmin, qmax, p.dtype)

    def centered_int32(self, t: QTensor, hint: str) -> str:
        """``q - zp`` as int32 (the form aggregations sum)."""
        if t.row_factor is not None:
            raise QgnnError(f"fold: {hint} has per-node (A2Q) scales but feeds more than a matmul")
        v = self.b.op("cast", [t.value], f"{hint}_i32", dtype="int32")
        if t.zero_point:
            v = self.b.op("sub", [v, self.scalar(t.zero_point)], f"{hint}_centered")
        return v

    def matmul(self, x: QTensor, w_value: str, w_int: np.ndarray, w_scale: np.ndarray, hint: str,
               bias: np.ndarray | None = None, extra_bound: float = 0.0) -> Acc:
        """Integer matmul with zero-point correction (+ int32 bias on the same grid)."""
        acc = self.b.op("matmul", [x.value, w_value], hint, a_zero_point=int(x.zero_point))
        bound = float(x.max_abs_centered) * float(np.abs(w_int.astype(np.int64)).sum(axis=0).max(initial=0))
        if bias is not None:
            acc = self.b.op("add", [acc, self.b.const(f"{hint}_bias", bias.reshape(1, -1).astype(np.int32))],
                            f"{hint}_b")
            bound += float(np.abs(bias).max(initial=0))
        bound += extra_bound
        self.check_bound(hint, bound)
        return Acc(acc, np.asarray(x.scale, np.float64) * w_scale, bound, x.row_factor, x.row_factor_max)


def quantize_bias_int(bias: torch.Tensor, grid: np.ndarray | torch.Tensor) -> np.ndarray:
    """Round-half-up bias on the accumulator grid, with the float32 arithmetic training used."""
    g = torch.as_tensor(grid, dtype=torch.float32)
    q = torch.floor(bias.detach().to(torch.float32) / g + 0.5)
    if q.numel() and (not bool(torch.isfinite(q).all()) or float(q.abs().max()) >= 2.0**31):
        raise OverflowError("a bias does not fit the int32 accumulator on its grid (bias / (s_in * s_w) >= 2^31)")
    return q.to(torch.int64).numpy()
