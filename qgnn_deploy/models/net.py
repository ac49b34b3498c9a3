"""The quantized GNN: boundary quantizer, optional GPF prompt, layers, optional pooling head.

``ModelConfig`` is a plain, JSON-able description stored in every checkpoint so
the model (and its fold) can be rebuilt without pickled code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from qgnn_deploy.models.layers import QGCNConv, QGINConv, QSAGEConv, QuantLayer, quantize_bias
from qgnn_deploy.models.prompts import BASIS_MAX_SHIFT, GPFPrompt, LoRAP
from qgnn_deploy.quant.fake import QuantContext, Quantizer
from qgnn_deploy.quant.frameworks import get_framework
from qgnn_deploy.quant.frameworks.base import Framework
from qgnn_deploy.quant.spec import QuantSpec

ARCHS = ("gcn", "gin", "sage", "gat")
COMPONENTS = ("input", "weight", "message", "edge", "aggregate", "hidden", "score", "output")


def default_bits(bits: int) -> dict[str, int]:
    """Every component at ``bits`` except edge coefficients and prompt scores, kept at 8."""
    table = {c: bits for c in COMPONENTS}
    if bits != 32:
        table["edge"] = max(8, bits) if bits < 8 else bits
        table["score"] = 8
    return table


@dataclass
class ModelConfig:
    """Everything that defines a model's structure and quantization; stored in the checkpoint, so a checkpoint
    rebuilds its model without code-side defaults.

    ``bits`` maps each quantized component (see :func:`default_bits`) to a bit-width, ``layer_bits`` overrides it
    per layer; ``lorap`` / ``gpf`` switch the prompts on; ``framework`` is one of ``FRAMEWORK_NAMES``.
    """

    arch: str = "gcn"
    in_dim: int = 16
    hidden: int = 16
    out_dim: int = 7
    num_layers: int = 2
    dropout: float = 0.5
    task: str = "node"  # "node" or "graph"
    framework: str = "qat"
    framework_options: dict[str, Any] = field(default_factory=dict)
    bits: dict[str, int] = field(default_factory=lambda: default_bits(8))
    layer_bits: list[dict[str, int]] | None = None  # per-layer overrides (MixQ / LPGNAS)
    # {"k": 8, "rank": 4, "variant": "softmax"|"lora"}; optional "basis_max_shift" (models/prompts.py BASIS_MAX_SHIFT)
    lorap: dict[str, Any] | None = None
    gpf: dict[str, Any] | None = None  # {"mode": "gpf"|"gpf-plus", "k": 4}
    heads: int = 1  # GAT: attention heads of the hidden layers (concatenated; ``hidden`` channels each)
    out_heads: int = 1  # GAT: heads of the last layer (averaged)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (what the checkpoint stores)."""
        return asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error, not silently dropped."""
        known = {f for f in ModelConfig.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return ModelConfig(**d)

    def bits_for(self, layer: int) -> dict[str, int]:
        """Bit-width per component of ``layer``: ``bits`` with that layer's ``layer_bits`` applied (32 for fp32)."""
        table = dict(self.bits)
        if self.framework == "fp32":
            return {c: 32 for c in table}
        if self.layer_bits and layer < len(self.layer_bits):
            table.update(self.layer_bits[layer])
        return table


class QGNN(nn.Module):
    """Node classifier (or graph classifier with sum pooling) with explicit quantizers.

    ``forward(x [N, F], edge_index [2, E], batch [N] | None) -> logits [N | G, C]``.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.arch not in ARCHS:
            raise ValueError(f"unknown architecture {config.arch!r}; choose from {', '.join(ARCHS)}")
        self.config = config
        self.framework: Framework = get_framework(config.framework, **config.framework_options)
        width = config.hidden * config.heads if config.arch == "gat" else config.hidden
        dims = [config.in_dim] + [width] * (config.num_layers - 1) + [config.out_dim]
        if config.task == "graph":
            dims[-1] = config.hidden
        self.q_inputs = nn.ModuleList()
        self.layers = nn.ModuleList()
        for i in range(config.num_layers):
            bits = config.bits_for(i)
            kind = "affine" if i == 0 else "unsigned"
            rounding = "half_even" if i == 0 else "half_up"
            self.q_inputs.append(self.framework.activation(
                QuantSpec(bits=bits["input"], kind=kind, rounding=rounding), "input", True,
                # per-node scales need a matmul as the only consumer: not SAGE (the input also feeds the
                # neighbour mean) nor a GPF-prompted first input
                config.arch in ("gcn", "gat") and not (i == 0 and config.gpf)))
            self.layers.append(self._make_layer(i, dims[i], dims[i + 1], bits))
        self.gpf: GPFPrompt | None = None
        if config.gpf:
            b0 = config.bits_for(0)
            self.gpf = GPFPrompt(config.in_dim, config.gpf.get("mode", "gpf-plus"), int(config.gpf.get("k", 4)),
                                 self._act_factory(b0), self._weight_factory(), bits=b0["score"],
                                 zero_init=bool(config.gpf.get("zero_init", False)))
            self.gpf.bind(self.q_inputs[0])
        last_bits = config.bits_for(config.num_layers - 1)
        if config.task == "graph":
            self.q_pool = self.framework.activation(QuantSpec(bits=last_bits["output"], kind="unsigned"), "pool",
                                                    False, True)
            self.q_head_in = self.framework.activation(QuantSpec(bits=last_bits["input"], kind="unsigned"),
                                                       "input", True, False)
            self.head = nn.Linear(config.hidden, config.out_dim)
            self.q_head_w = self.framework.weight(QuantSpec(bits=last_bits["weight"], kind="signed", axis=0))
            if hasattr(self.q_head_w, "bind"):
                self.q_head_w.bind(self.head.weight)
        self.q_output = self.framework.activation(QuantSpec(bits=max(last_bits["output"], 8)
                                                            if last_bits["output"] != 32 else 32, kind="affine"),
                                                  "output", config.task == "node", False)

    # ------------------------------------------------------------------ build
    def _act_factory(self, bits: dict[str, int]):
        def make(spec: QuantSpec, component: str) -> Quantizer:
            if bits.get(component, spec.bits) == 32 or not spec.enabled:
                spec = QuantSpec(bits=32)
            return self.framework.activation(spec, component, True, False)

        return make

    def _weight_factory(self):
        return self.framework.weight

    def _make_layer(self, i: int, din: int, dout: int, bits: dict[str, int]) -> QuantLayer:
        cfg = self.config
        prompt = None
        if cfg.lorap:
            dim = dout if cfg.arch in ("gcn", "gat") else din
            prompt = LoRAP(dim, int(cfg.lorap.get("k", 8)), int(cfg.lorap.get("rank", 4)), self._act_factory(bits),
                           self._weight_factory(), variant=cfg.lorap.get("variant", "softmax"),
                           bits=bits["score"] if bits["score"] != 32 else 8,
                           zero_init=bool(cfg.lorap.get("zero_init", False)),
                           basis_max_shift=int(cfg.lorap.get("basis_max_shift", BASIS_MAX_SHIFT)))
        if cfg.arch == "gcn":
            return QGCNConv(din, dout, bits, self.framework, prompt)
        if cfg.arch == "gat":
            from qgnn_deploy.models.gat import QGATConv

            last = i == cfg.num_layers - 1
            heads = cfg.out_heads if last else cfg.heads
            return QGATConv(din, dout if last else cfg.hidden, heads, not last, bits, self.framework, prompt,
                            attn_dropout=cfg.dropout)
        if cfg.arch == "gin":
            return QGINConv(din, dout, bits, self.framework, prompt)
        return QSAGEConv(din, dout, bits, self.framework, self.q_inputs[i], prompt)

    # ---------------------------------------------------------------- forward
    def forward(self, x: Tensor, edge_index: Tensor, batch: Tensor | None = None,
                ctx: QuantContext | None = None) -> Tensor:
        """Fake-quant forward pass: logits per node (or per graph with ``batch``), on the grid fold reproduces."""
        if ctx is None:  # in-degrees for node-wise quantizers (A2Q); training-only parts check model.training
            ctx = self.framework.context(self, edge_index, x.shape[0])
        h = x
        for i, layer in enumerate(self.layers):
            if i > 0:
                h = torch.relu(h)
                h = nn.functional.dropout(h, self.config.dropout, self.training)
            elif self.config.dropout and self.config.arch != "gin":
                h = nn.functional.dropout(h, self.config.dropout, self.training)
            h = self.q_inputs[i](h, ctx)
            if i == 0 and self.gpf is not None:
                h = self.gpf(h)
            h = layer(h, edge_index, ctx)
        if self.config.task == "graph":
            h = self.q_head_in(torch.relu(h), ctx)
            if batch is None:
                batch = torch.zeros(h.shape[0], dtype=torch.long, device=h.device)
            g = int(batch.max()) + 1 if batch.numel() else 0
            pooled = torch.zeros(g, h.shape[1], dtype=h.dtype, device=h.device).index_add_(0, batch, h)
            pooled = self.q_pool(pooled)
            w = self.q_head_w(self.head.weight)
            grid = None
            if self.q_pool.spec.enabled and self.q_head_w.spec.enabled:
                grid = (self.q_pool.scale_zp(None)[0] * self.q_head_w.scale_zp(w)[0]).reshape(-1)
            h = pooled @ w.t() + quantize_bias(self.head.bias, grid)
        return self.q_output(h, ctx if self.config.task == "node" else None)

    def quantizers(self) -> dict[str, Quantizer]:
        """Every quantizer module by qualified name (what fold and the frameworks read)."""
        return {name: m for name, m in self.named_modules() if isinstance(m, Quantizer)}
