"""The framework interface, FP32 (all quantizers off) and plain QAT."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from qgnn_deploy.quant.fake import QuantContext, Quantizer, RangeFakeQuant, WeightFakeQuant
from qgnn_deploy.quant.spec import QuantSpec


class Framework:
    """Plain QAT behaviour; subclasses override the hooks they change.

    Component names: ``input`` (layer input / update output of the previous
    layer), ``weight``, ``message`` (linear output gathered by neighbours),
    ``aggregate``, ``hidden`` (GIN MLP inner), ``score`` (prompt mixing
    scores), ``output`` (final update output).  ``node_wise`` tells whether the
    tensor has one row per node (so per-node schemes may apply) and
    ``matmul_input`` whether its only consumer is an integer matmul (the
    condition for per-node scales to stay integer-exact).
    """

    name = "qat"
    # How far a folded integer graph may drift from this framework's fake-quant model before export refuses it
    # (``fold/parity.py``).  The fold is exact integer arithmetic and the fake-quant model float32: a code may
    # land one step away when a value sits within float error of a rounding boundary (in practice: none or a
    # handful).  Anything beyond is a broken fold or a corrupt checkpoint.
    parity_tolerance: ClassVar[dict[str, float]] = {"max_code_diff": 1, "mismatched_fraction": 1e-3,
                                                    "mismatched_min": 2}

    def __init__(self, **options: Any) -> None:
        self.options = dict(options)

    def activation(self, spec: QuantSpec, component: str, node_wise: bool, matmul_input: bool) -> Quantizer:
        return RangeFakeQuant(spec, momentum=float(self.options.get("momentum", 0.1)))

    def weight(self, spec: QuantSpec) -> Quantizer:
        return WeightFakeQuant(spec)

    def context(self, model: nn.Module, edge_index: Tensor, num_nodes: int, degree: Tensor | None = None,
                population: Tensor | None = None) -> QuantContext:
        """Called before each forward; the default passes in-degrees only.

        A sampled mini-batch passes ``degree`` (the full-graph in-degree of each batch node) and ``population``
        (every node's full-graph in-degree, for degree statistics such as Degree-Quant's CDF); the context is
        then marked ``sampled``.
        """
        if degree is not None:
            return QuantContext(keep_float=None, degree=degree, sampled=True)
        deg = torch.zeros(num_nodes, dtype=torch.long, device=edge_index.device)
        if edge_index.numel():
            deg.scatter_add_(0, edge_index[1], torch.ones_like(edge_index[1]))
        return QuantContext(keep_float=None, degree=deg)

    def penalty(self, model: nn.Module) -> Tensor | float:
        return 0.0

    def on_epoch_end(self, model: nn.Module, epoch: int, epochs: int) -> None:
        """Hook for schedules (e.g. MixQ fixing its arg-max bits)."""

    def state(self) -> dict[str, Any]:
        """Options to store in the checkpoint so the model can be rebuilt."""
        return {"name": self.name, "options": self.options}


class PlainQAT(Framework):
    """Uniform fake-quant with a straight-through estimator and EMA min/max ranges."""

    name = "qat"


class FP32(Framework):
    """Full precision: every quantizer is the identity (bit-widths forced to 32)."""

    name = "fp32"
