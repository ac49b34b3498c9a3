"""Degree-Quant (Tailor et al., 2021): percentile ranges and degree-dependent protective masking.

Two training-only ingredients, nothing of which survives into inference:

* **Percentile ranges.**  The observer tracks the ``q``-th and ``(1 - q)``-th
  percentiles of each batch (EMA), ``q = 0.1%`` at >= 8 bits and ``1%`` at <= 4
  bits (linear in between), so a few high-degree outliers cannot stretch the
  grid.  Exact zeros are left out of the percentile: they are always
  representable and carry no range information, and on sparse inputs (Cora's
  bag of words is ~99% zeros) they would collapse the range to zero.
* **Protective mask.**  Every training forward draws, per node,
  ``keep_float_i ~ Bernoulli(p_i)``, ``p_i = p_min + (p_max - p_min) * CDF(deg_i)``
  with ``CDF`` the empirical in-degree CDF of the graph: high in-degree nodes,
  whose aggregates have the widest range, are more often left in full precision
  so their gradients are not dominated by quantization noise.

At evaluation the quantizers are plain per-tensor ones (``scale_zp`` from the
stored range), so fold sees an ordinary QAT model.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from qgnn_deploy.quant.fake import QuantContext, Quantizer, RangeFakeQuant
from qgnn_deploy.quant.frameworks.base import Framework
from qgnn_deploy.quant.spec import QuantSpec

MAX_PERCENTILE_SAMPLES = 1 << 18  # strided subsample above this many nonzeros (the percentile barely moves)


def tail_fraction(bits: int) -> float:
    """Clipped tail mass per side: 0.1% at >= 8 bits, 1% at <= 4 bits, linear in between."""
    if bits >= 8:
        return 0.001
    if bits <= 4:
        return 0.01
    return 0.01 + (bits - 4) * (0.001 - 0.01) / 4


class PercentileFakeQuant(RangeFakeQuant):
    """``RangeFakeQuant`` whose batch range is the (tail, 1 - tail) percentile pair of the nonzero entries."""

    def __init__(self, spec: QuantSpec, momentum: float = 0.1, tail: float | None = None) -> None:
        super().__init__(spec, momentum)
        self.tail = float(tail) if tail is not None else tail_fraction(spec.bits)

    def batch_range(self, x: Tensor) -> tuple[Tensor, Tensor]:
        v = x.reshape(-1)
        v = v[v != 0]
        if v.numel() == 0:
            z = torch.zeros((), dtype=x.dtype, device=x.device)
            return z, z
        if v.numel() > MAX_PERCENTILE_SAMPLES:
            v = v[:: (v.numel() + MAX_PERCENTILE_SAMPLES - 1) // MAX_PERCENTILE_SAMPLES]
        n = v.numel()
        k_lo = max(1, min(n, int(round(self.tail * (n - 1))) + 1))
        k_hi = max(1, min(n, int(round((1.0 - self.tail) * (n - 1))) + 1))
        lo = torch.kthvalue(v, k_lo).values
        hi = torch.kthvalue(v, k_hi).values
        # zeros were removed: the range must still contain 0 (ReLU outputs, sparse inputs)
        return torch.minimum(lo, torch.zeros_like(lo)), torch.maximum(hi, torch.zeros_like(hi))


def degree_cdf(degree: Tensor, population: Tensor | None = None) -> Tensor:
    """Empirical CDF of the in-degree evaluated at each node: ``#{j : deg_j <= deg_i} / N``.

    ``population`` (default ``degree``) is the set of degrees the CDF is taken over: a sampled mini-batch passes
    the full graph's, so a node's protection does not depend on which batch it landed in.
    """
    pop = degree if population is None else population
    n = pop.numel()
    if n == 0 or degree.numel() == 0:
        return degree.to(torch.float32)
    sorted_deg, _ = torch.sort(pop)
    return torch.searchsorted(sorted_deg, degree.to(sorted_deg.dtype), right=True).to(torch.float32) / n


def protection_probability(degree: Tensor, p_min: float, p_max: float, population: Tensor | None = None) -> Tensor:
    """``p_i = p_min + (p_max - p_min) * CDF(deg_i)``: rises monotonically with in-degree."""
    return p_min + (p_max - p_min) * degree_cdf(degree, population)


class DegreeQuant(Framework):
    """Percentile observers + Bernoulli protective mask resampled in every training ``context()``.

    Options: ``p_min`` (default 0.0), ``p_max`` (0.1), ``momentum`` (0.1),
    ``tail`` (override the percentile tail fraction).
    """

    name = "dq"

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.p_min = float(options.get("p_min", 0.0))
        self.p_max = float(options.get("p_max", 0.1))
        if not 0.0 <= self.p_min <= self.p_max <= 1.0:
            raise ValueError(f"Degree-Quant needs 0 <= p_min <= p_max <= 1, got {self.p_min}, {self.p_max}")

    def activation(self, spec: QuantSpec, component: str, node_wise: bool, matmul_input: bool) -> Quantizer:
        tail = self.options.get("tail")
        return PercentileFakeQuant(spec, momentum=float(self.options.get("momentum", 0.1)),
                                   tail=float(tail) if tail is not None else None)

    def context(self, model: nn.Module | None, edge_index: Tensor, num_nodes: int, degree: Tensor | None = None,
                population: Tensor | None = None) -> QuantContext:
        ctx = super().context(model, edge_index, num_nodes, degree, population)
        if model is not None and not model.training:
            return ctx
        if self.p_max > 0:
            p = protection_probability(ctx.degree, self.p_min, self.p_max, population)
            ctx.keep_float = torch.bernoulli(p).to(torch.bool)
        return ctx
