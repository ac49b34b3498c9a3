"""Quantized GCN / GIN / GraphSAGE layers on PyG's ``MessagePassing``.

Each layer makes every quantized tensor explicit, in the order the integer
graph computes it, so fold can read one quantizer per tensor:

* GCN:  ``h = Q_msg(x Q_w(W))``;
  ``a_i = Q_agg(e_i (e_i h_i + sum_{j->i} e_j h_j))`` with ``e = Q_edge(deg^-1/2)``, deg incl. self loop;
  ``y_i = prompt(a_i) + Q_bias(b)`` on the ``s_agg / 255`` grid.
* GIN:  ``a_i = Q_agg((1 + eps) x_i + sum_{j->i} x_j)`` (eps on a 2^-8 grid), prompt,
  ``y = Q_w2(W2) Q_hid(relu(Q_w1(W1) a + b1)) + b2``.
* SAGE: ``a_i = Q_in(e_i sum_{j->i} x_j)`` with ``e = Q_edge(1 / deg)`` (the mean shares
  the input's grid so ``[a, x]`` is one int8 matrix), prompt, ``y = Q_w([W_l W_r]) [a; x] + b``.

Shapes: x [N, F_in] (already quantized by the model), edge_index [2, E],
y [N, F_out] (pre-activation; the model applies ReLU and the next quantizer).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing

from qgnn_deploy.models.prompts import ALPHA_DEN, LoRAP
from qgnn_deploy.quant.fake import FixedFakeQuant, QuantContext, Quantizer, TiedFakeQuant, round_ste
from qgnn_deploy.quant.frameworks.base import Framework
from qgnn_deploy.quant.spec import QuantSpec

EPS_FRAC = 256  # GIN's (1 + eps) is stored on a 1/256 grid


def in_degree(edge_index: Tensor, num_nodes: int, dtype: torch.dtype) -> Tensor:
    deg = torch.zeros(num_nodes, dtype=dtype, device=edge_index.device)
    if edge_index.numel():
        deg.scatter_add_(0, edge_index[1], torch.ones(edge_index.shape[1], dtype=dtype, device=edge_index.device))
    return deg


def sampled_degrees(ctx: QuantContext | None, edge_index: Tensor, n: int,
                    dtype: torch.dtype) -> tuple[Tensor, Tensor | None]:
    """(in-degree the normalisation uses, per-node neighbour-sum rescale or None).

    Full graph: the sub-graph in-degree and no rescale (unchanged arithmetic).  Sampled mini-batch
    (``ctx.sampled``): the full-graph in-degree, as the deployed model computes it, and ``deg / sampled_deg`` so
    that a sum over the sampled neighbours estimates the full-graph sum without bias (ranges seen by the
    observers then match the full graph's).
    """
    if ctx is None or not ctx.sampled or ctx.degree is None:
        return in_degree(edge_index, n, dtype), None
    full = ctx.degree.to(dtype)
    return full, full / in_degree(edge_index, n, dtype).clamp_min(1.0)


def _bind(q: Quantizer, weight: nn.Parameter) -> None:
    """Give a weight quantizer its parameter so ``qparams()`` works without a forward."""
    if hasattr(q, "bind"):
        q.bind(weight)


def quantize_bias(bias: Tensor, grid: Tensor | None) -> Tensor:
    """Bias on an int32 accumulator grid (round half up), or unchanged when unquantized."""
    if grid is None:
        return bias
    return round_ste(bias / grid, "half_up") * grid


class QuantLayer(MessagePassing):
    """Shared plumbing: bit-widths per component, quantizer construction, prompt binding."""

    arch = ""

    def __init__(self, in_dim: int, out_dim: int, bits: dict[str, int], framework: Framework,
                 prompt: LoRAP | None, aggr: str = "add") -> None:
        super().__init__(aggr=aggr)
        self.in_dim, self.out_dim = in_dim, out_dim
        self.bits = dict(bits)
        self.framework = framework
        self.prompt = prompt

    def act_q(self, component: str, kind: str, node_wise: bool = True, matmul_input: bool = False) -> Quantizer:
        return self.framework.activation(QuantSpec(bits=self.bits[component], kind=kind), component, node_wise,
                                         matmul_input)

    def weight_q(self, component: str = "weight") -> Quantizer:
        return self.framework.weight(QuantSpec(bits=self.bits[component], kind="signed", axis=0))

    def edge_q(self) -> Quantizer:
        return FixedFakeQuant(QuantSpec(bits=self.bits["edge"], kind="unsigned"))

    def message(self, x_j: Tensor) -> Tensor:
        return x_j

    def apply_prompt(self, a: Tensor) -> Tensor:
        return self.prompt(a) if self.prompt is not None else a

    def bias_grid(self) -> Tensor | None:
        """The ``s_a / 255`` grid a layer that quantizes its aggregate (GCN, GAT) trains its bias on."""
        if not self.q_aggregate.spec.enabled:
            return None
        return self.q_aggregate.scale_zp(None)[0] / ALPHA_DEN


class QGCNConv(QuantLayer):
    arch = "gcn"

    def __init__(self, in_dim: int, out_dim: int, bits: dict[str, int], framework: Framework,
                 prompt: LoRAP | None = None) -> None:
        super().__init__(in_dim, out_dim, bits, framework, prompt)
        self.lin = nn.Linear(in_dim, out_dim, bias=False)
        self.bias = nn.Parameter(torch.zeros(out_dim))
        nn.init.xavier_uniform_(self.lin.weight)
        self.q_weight = self.weight_q()
        _bind(self.q_weight, self.lin.weight)
        self.q_message = self.act_q("message", "signed")
        self.q_edge = self.edge_q()
        self.q_aggregate = self.act_q("aggregate", "signed")
        if prompt is not None:
            prompt.bind(self.q_aggregate)

    def forward(self, x: Tensor, edge_index: Tensor, ctx: QuantContext | None = None) -> Tensor:
        n = x.shape[0]
        h = self.q_message(x @ self.q_weight(self.lin.weight).t(), ctx)
        deg, rescale = sampled_degrees(ctx, edge_index, n, x.dtype)
        e = self.q_edge(deg.add(1.0).rsqrt())
        he = h * e[:, None]
        neigh = self.propagate(edge_index, x=he, size=(n, n))
        if rescale is not None:
            neigh = neigh * rescale[:, None]
        a = e[:, None] * (neigh + he)
        a = self.q_aggregate(a, ctx)
        return self.apply_prompt(a) + quantize_bias(self.bias, self.bias_grid())


class QGINConv(QuantLayer):
    arch = "gin"

    def __init__(self, in_dim: int, out_dim: int, bits: dict[str, int], framework: Framework,
                 prompt: LoRAP | None = None) -> None:
        super().__init__(in_dim, out_dim, bits, framework, prompt)
        self.eps = nn.Parameter(torch.zeros(()))
        self.lin1 = nn.Linear(in_dim, out_dim)
        self.lin2 = nn.Linear(out_dim, out_dim)
        self.q_aggregate = self.act_q("aggregate", "signed", matmul_input=True)
        self.q_w1 = self.weight_q()
        _bind(self.q_w1, self.lin1.weight)
        self.q_hidden = self.act_q("hidden", "unsigned", matmul_input=True)
        self.q_w2 = self.weight_q()
        _bind(self.q_w2, self.lin2.weight)
        if prompt is not None:
            prompt.bind(self.q_aggregate)
            self.q_prompted = self.act_q("aggregate", "signed", matmul_input=True)
        else:
            self.q_prompted = None

    def one_plus_eps(self) -> Tensor:
        if not self.q_aggregate.spec.enabled:
            return 1.0 + self.eps
        return 1.0 + round_ste(self.eps * EPS_FRAC, "half_up") / EPS_FRAC

    def forward(self, x: Tensor, edge_index: Tensor, ctx: QuantContext | None = None) -> Tensor:
        n = x.shape[0]
        neigh = self.propagate(edge_index, x=x, size=(n, n))
        _, rescale = sampled_degrees(ctx, edge_index, n, x.dtype)
        if rescale is not None:
            neigh = neigh * rescale[:, None]
        a = self.one_plus_eps() * x + neigh
        a = self.q_aggregate(a, ctx)
        if self.prompt is not None:
            a = self.q_prompted(self.apply_prompt(a), ctx)
        w1 = self.q_w1(self.lin1.weight)
        h = torch.relu(a @ w1.t() + quantize_bias(self.lin1.bias, self._grid(self.q_aggregate if self.prompt is None
                                                                             else self.q_prompted, self.q_w1, w1)))
        h = self.q_hidden(h, ctx)
        w2 = self.q_w2(self.lin2.weight)
        return h @ w2.t() + quantize_bias(self.lin2.bias, self._grid(self.q_hidden, self.q_w2, w2))

    @staticmethod
    def _grid(act: Quantizer, wq: Quantizer, w: Tensor) -> Tensor | None:
        if not (act.spec.enabled and wq.spec.enabled):
            return None
        return (act.scale_zp(None)[0] * wq.scale_zp(w)[0]).reshape(-1)


class QSAGEConv(QuantLayer):
    arch = "sage"

    def __init__(self, in_dim: int, out_dim: int, bits: dict[str, int], framework: Framework,
                 input_quantizer: Quantizer, prompt: LoRAP | None = None) -> None:
        super().__init__(in_dim, out_dim, bits, framework, prompt)
        self.lin = nn.Linear(2 * in_dim, out_dim)
        self.q_weight = self.weight_q()
        _bind(self.q_weight, self.lin.weight)
        self.q_edge = self.edge_q()
        self._input_q = [input_quantizer]
        spec = input_quantizer.spec
        self.q_aggregate = TiedFakeQuant(spec, input_quantizer)
        if prompt is not None:
            prompt.bind(self.q_aggregate)
            self.q_prompted = TiedFakeQuant(spec, input_quantizer)
        else:
            self.q_prompted = None

    def forward(self, x: Tensor, edge_index: Tensor, ctx: QuantContext | None = None) -> Tensor:
        n = x.shape[0]
        e = self.q_edge(1.0 / in_degree(edge_index, n, x.dtype).clamp_min(1.0))
        a = self.q_aggregate(e[:, None] * self.propagate(edge_index, x=x, size=(n, n)), ctx)
        if self.prompt is not None:
            a = self.q_prompted(self.apply_prompt(a), ctx)
        w = self.q_weight(self.lin.weight)
        grid = None
        inq = self._input_q[0]
        if inq.spec.enabled and self.q_weight.spec.enabled:
            grid = (inq.scale_zp(None)[0] * self.q_weight.scale_zp(w)[0]).reshape(-1)
        return torch.cat([a, x], dim=-1) @ w.t() + quantize_bias(self.lin.bias, grid)
