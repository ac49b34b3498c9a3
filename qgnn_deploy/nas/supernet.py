"""The LPGNAS supernet: every choice relaxed to a softmax (optionally Gumbel-softmax) mixture.

For a choice with logits ``alpha`` and candidates ``o_k``:
``p = softmax(alpha / tau)`` (or ``gumbel_softmax(alpha, tau)``) and the relaxed output is
``sum_k p_k o_k(x)``.  Applied to

* bit-widths: ``Q(x) = sum_b p_b fq_b(x)`` with ``fq_b`` the toolkit's STE fake-quant at ``b`` bits
  (scale from the tensor's current range; FP32 is the identity);
* width: the hidden output is multiplied by ``m_c = sum_w p_w [c < w]`` (channel ``c``);
* activation: ``sum_a p_a act_a(x)``;
* layer kind: deployable space ``y = sum_k p_k y_k`` over proxies of the three ``QGNN`` layers
  (``gcn``: ``D^-1/2 (A+I) D^-1/2 h``; ``sage``: ``mean_j h_j + x W_r``; ``gin``:
  ``W_2 relu((1+eps) h_i + sum_j h_j)``, all with ``h = Q_msg(Q_in(x) Q_w(W))``); full space:
  edge coefficient ``c = sum_w p_w c_w`` (GCN norm / 1 / GAT attention, self loops added) and
  aggregation ``sum_g p_g AGG_g(c_e h_src)`` over sum / mean / max.

The expected model and buffer size come from :mod:`qgnn_deploy.nas.cost` (folds of the candidates) with the same
probabilities.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qgnn_deploy.nas.cost import CostTable
from qgnn_deploy.nas.space import ARCH_PAIRS, DEPLOYABLE_PAIRS, SEARCHED_COMPONENTS, SearchSpace, to_model_config
from qgnn_deploy.quant.fake import fake_quant


def quantize_mix(x: Tensor, probs: Tensor, bits: tuple[int, ...], per_channel: bool = False) -> Tensor:
    """``sum_b p_b fq_b(x)``: symmetric (signed) or, for non-negative tensors, unsigned fake-quant."""
    xd = x.detach()
    unsigned = bool(xd.numel()) and float(xd.min()) >= 0.0
    if per_channel:
        amax = xd.abs().amax(dim=1, keepdim=True)
    else:
        amax = xd.abs().max() if xd.numel() else torch.zeros(())
    out = torch.zeros_like(x)
    for p, b in zip(probs, bits):
        if b == 32:
            out = out + p * x
            continue
        qmax = 2**b - 1 if unsigned else 2 ** (b - 1) - 1
        qmin = 0 if unsigned else -qmax
        scale = (amax / qmax).clamp_min(1e-8)
        out = out + p * fake_quant(x, scale, 0, qmin, qmax, "half_up")
    return out


class GraphCache:
    """Edge structures every candidate reuses: self loops, degrees, GCN coefficients."""

    def __init__(self, edge_index: Tensor, n: int) -> None:
        loops = torch.arange(n, device=edge_index.device)
        self.n = n
        self.src, self.dst = edge_index[0], edge_index[1]
        self.src_l = torch.cat([self.src, loops])
        self.dst_l = torch.cat([self.dst, loops])
        deg = torch.zeros(n).index_add_(0, self.dst, torch.ones(self.dst.shape[0]))
        self.deg = deg
        deg_l = deg + 1.0
        self.deg_l = deg_l
        self.gcn_coef = deg_l[self.src_l].rsqrt() * deg_l[self.dst_l].rsqrt()


def scatter_sum(values: Tensor, index: Tensor, n: int) -> Tensor:
    return torch.zeros(n, values.shape[1], dtype=values.dtype).index_add_(0, index, values)


def scatter_max(values: Tensor, index: Tensor, n: int) -> Tensor:
    out = torch.zeros(n, values.shape[1], dtype=values.dtype)
    return out.scatter_reduce(0, index[:, None].expand_as(values), values, "amax", include_self=False)


class SuperLayer(nn.Module):
    """One relaxed layer with parameters for every candidate (weights are shared where they commute)."""

    def __init__(self, space: SearchSpace, din: int, dout: int) -> None:
        super().__init__()
        self.space = space
        self.lin = nn.Linear(din, dout, bias=False)
        nn.init.xavier_uniform_(self.lin.weight)
        self.bias = nn.Parameter(torch.zeros(dout))
        if space.space == "deployable":
            self.lin_root = nn.Linear(din, dout, bias=False)  # sage's W_r
            self.lin2 = nn.Linear(dout, dout)  # gin's second MLP layer
            self.eps = nn.Parameter(torch.zeros(()))
        if space.space == "full" or "gat" in space.arch_candidates:
            self.att_src = nn.Parameter(torch.randn(dout) * 0.1)
            self.att_dst = nn.Parameter(torch.randn(dout) * 0.1)

    def forward(self, x: Tensor, g: GraphCache, p: Mapping[str, Tensor], last: bool, dropout: float = 0.0,
                x_cands: list[Tensor] | None = None) -> Tensor:
        """``x_cands``: the input already fake-quantized at every bit candidate (fixed layer-0 features, possibly
        sparse): then ``Q_in(x) W = sum_b p_b (X_b W)`` and dropout moves to the layer's output."""
        bits = self.space.bit_candidates
        if x_cands is not None:
            def mm_in(wt: Tensor) -> Tensor:
                return sum(pb * (torch.sparse.mm(xb, wt) if xb.is_sparse else xb @ wt)
                           for pb, xb in zip(p["bits.input"], x_cands))
        else:
            xq = F.dropout(quantize_mix(x, p["bits.input"], bits), dropout, self.training)

            def mm_in(wt: Tensor) -> Tensor:
                return xq @ wt
        w = quantize_mix(self.lin.weight, p["bits.weight"], bits, per_channel=True)
        h = quantize_mix(mm_in(w.t()), p["bits.message"], bits)
        if x_cands is not None:
            h = F.dropout(h, dropout, self.training)
        n = x.shape[0]
        if self.space.space == "deployable":
            y = self._deployable(mm_in, h, g, p, bits)
        else:
            y = self._full(h, g, p, bits, n)
        return y

    def _deployable(self, mm_in, h: Tensor, g: GraphCache, p: Mapping[str, Tensor],
                    bits: tuple[int, ...]) -> Tensor:
        n = h.shape[0]
        pa = p["arch"]
        outs = {}
        a_gcn = scatter_sum(h[g.src_l] * g.gcn_coef[:, None], g.dst_l, n)
        outs["gcn"] = quantize_mix(a_gcn, p["bits.aggregate"], bits) + self.bias
        wr = quantize_mix(self.lin_root.weight, p["bits.weight"], bits, per_channel=True)
        a_mean = scatter_sum(h[g.src], g.dst, n) / g.deg.clamp_min(1.0)[:, None]
        outs["sage"] = a_mean + mm_in(wr.t()) + self.bias
        a_gin = (1.0 + self.eps) * h + scatter_sum(h[g.src], g.dst, n)
        a_gin = torch.relu(quantize_mix(a_gin + self.bias, p["bits.aggregate"], bits))
        w2 = quantize_mix(self.lin2.weight, p["bits.weight"], bits, per_channel=True)
        outs["gin"] = quantize_mix(a_gin, p["bits.message"], bits) @ w2.t() + self.lin2.bias
        if "gat" in self.space.arch_candidates:  # single-head GAT (models/gat.py) with float attention
            a_gat = scatter_sum(h[g.src_l] * self._attention(h, g, n)[:, None], g.dst_l, n)
            outs["gat"] = quantize_mix(a_gat, p["bits.aggregate"], bits) + self.bias
        return sum(pa[k] * outs[name] for k, name in enumerate(self.space.arch_candidates))

    def _attention(self, h: Tensor, g: GraphCache, n: int) -> Tensor:
        """GAT coefficients per edge (self loops included): softmax_j LeakyReLU(a_src h_j + a_dst h_i)."""
        score = F.leaky_relu((h * self.att_src).sum(-1)[g.src_l] + (h * self.att_dst).sum(-1)[g.dst_l], 0.2)
        score = score - scatter_max(score[:, None].detach(), g.dst_l, n)[g.dst_l, 0]
        ex = score.exp()
        return ex / scatter_sum(ex[:, None], g.dst_l, n)[g.dst_l, 0]

    def _full(self, h: Tensor, g: GraphCache, p: Mapping[str, Tensor], bits: tuple[int, ...], n: int) -> Tensor:
        coefs = {"gcn": g.gcn_coef, "const": torch.ones_like(g.gcn_coef)}
        if "attn" in self.space.weightings:
            coefs["attn"] = self._attention(h, g, n)
        c = sum(p["weighting"][k] * coefs[w] for k, w in enumerate(self.space.weightings))
        m = h[g.src_l] * c[:, None]
        aggs = {}
        if "sum" in self.space.aggregations or "mean" in self.space.aggregations:
            s = scatter_sum(m, g.dst_l, n)
            aggs["sum"] = s
            aggs["mean"] = s / g.deg_l[:, None]
        if "max" in self.space.aggregations:
            aggs["max"] = scatter_max(m, g.dst_l, n)
        a = sum(p["agg"][k] * aggs[name] for k, name in enumerate(self.space.aggregations))
        return quantize_mix(a, p["bits.aggregate"], bits) + self.bias


_COST_TABLES: dict[tuple, CostTable] = {}  # per space and graph: searches of one process (penalties, seeds) share it

ACTS = {"relu": torch.relu, "relu6": lambda t: torch.clamp(t, 0.0, 6.0), "identity": lambda t: t}


class SuperNet(nn.Module):
    """Relaxed network over a :class:`SearchSpace`; ``alpha`` holds one logit vector per choice."""

    def __init__(self, space: SearchSpace, in_dim: int, out_dim: int, dropout: float = 0.5) -> None:
        super().__init__()
        self.space = space
        self.in_dim, self.out_dim, self.dropout = in_dim, out_dim, dropout
        self.choices = space.choices()
        self.alpha = nn.ParameterDict({k.replace(".", "__"): nn.Parameter(torch.zeros(len(v)))
                                       for k, v in self.choices.items()})
        wmax = max(space.widths)
        dims = [in_dim] + [wmax] * (space.num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(SuperLayer(space, dims[i], dims[i + 1]) for i in range(space.num_layers))
        self.tau = 1.0
        self.gumbel = "hard"  # "hard" (straight-through one-hot samples), "soft" or "" (plain softmax)

    # -------------------------------------------------------------------------- relaxation
    def logits(self, name: str) -> Tensor:
        return self.alpha[name.replace(".", "__")]

    def arch_parameters(self) -> list[nn.Parameter]:
        return list(self.alpha.values())

    def weight_parameters(self) -> list[nn.Parameter]:
        ids = {id(a) for a in self.arch_parameters()}
        return [q for q in self.parameters() if id(q) not in ids]

    def probs(self, sample: bool | None = None) -> dict[str, Tensor]:
        """Per choice: ``softmax(alpha / tau)``, or when sampling (default: in training mode with ``gumbel`` set)
        a Gumbel-softmax sample ``softmax((alpha + G) / tau)``; ``hard`` makes it one-hot in the forward pass
        with the soft sample's gradient (straight-through), so the weights are trained under discrete choices
        and a candidate cannot win by merely rescaling the mixture."""
        use_gumbel = bool(self.gumbel) and (self.training if sample is None else sample)
        out = {}
        for name in self.choices:
            a = self.logits(name)
            if use_gumbel:
                out[name] = F.gumbel_softmax(a, tau=self.tau, hard=self.gumbel == "hard")
            else:
                out[name] = torch.softmax(a / self.tau, -1)
        return out

    def layer_probs(self, probs: Mapping[str, Tensor], i: int) -> dict[str, Tensor]:
        """Layer ``i``'s choices (``l{i}.x`` -> ``x``) plus the global ones (``arch``, ``width``)."""
        pre = f"l{i}."
        out = {k: v for k, v in probs.items() if "." not in k}
        out.update({k[len(pre):]: v for k, v in probs.items() if k.startswith(pre)})
        return out

    # -------------------------------------------------------------------------- forward
    def forward(self, x: Tensor, g: GraphCache, probs: Mapping[str, Tensor] | None = None) -> Tensor:
        probs = self.probs() if probs is None else probs
        h = x
        n_layers = self.space.num_layers
        for i, layer in enumerate(self.layers):
            p = self.layer_probs(probs, i)
            cands = self._input_candidates(x) if i == 0 else None
            h = layer(h, g, p, i == n_layers - 1, self.dropout, cands)
            if i < n_layers - 1:
                if "act" in p:
                    h = sum(p["act"][k] * ACTS[a](h) for k, a in enumerate(self.space.activations))
                else:
                    h = torch.relu(h)
                widths = torch.tensor(self.space.widths, dtype=h.dtype)
                mask = (torch.arange(h.shape[1], dtype=h.dtype)[None, :] < widths[:, None]).to(h.dtype)
                h = h * (p["width"] @ mask)
        return h

    def _input_candidates(self, x: Tensor) -> list[Tensor]:
        """Fake-quantized copies of the (constant) input features, one per bit candidate, cached."""
        key = (x.data_ptr(), tuple(x.shape))
        if getattr(self, "_cache_key", None) != key:
            bits = self.space.bit_candidates
            cands = [quantize_mix(x, torch.eye(len(bits))[k], bits).detach() for k in range(len(bits))]
            sparse = x.numel() and float((x != 0).float().mean()) < 0.2
            self._cache = [c.to_sparse() if sparse else c for c in cands]
            self._cache_key = key
        return self._cache

    # -------------------------------------------------------------------------- cost
    def cost_archs(self) -> tuple[str, ...]:
        """The deployable archs the cost is taken over (the full space projects onto all of them)."""
        return self.space.arch_candidates if self.space.space == "deployable" else tuple(DEPLOYABLE_PAIRS.values())

    def arch_probs(self, probs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """P(the deployed network has each arch): the ``arch`` choice, or in the full space the mean over layers
        of each layer's (aggregation, weighting) probability mapped onto its deployable arch (attention -> gat,
        other pairs -> gcn), as discretisation projects them."""
        archs = self.cost_archs()
        if self.space.space == "deployable":
            return {a: probs["arch"][k] for k, a in enumerate(archs)}
        out = {a: torch.zeros(()) for a in archs}
        n = self.space.num_layers
        for i in range(n):
            p = self.layer_probs(probs, i)
            for ia, agg in enumerate(self.space.aggregations):
                for iw, wt in enumerate(self.space.weightings):
                    kind = DEPLOYABLE_PAIRS.get((agg, wt)) or ("gat" if wt == "attn" else "gcn")
                    out[kind] = out[kind] + p["agg"][ia] * p["weighting"][iw] / n
        return out

    def width_probs(self, probs: Mapping[str, Tensor]) -> dict[int | None, Tensor]:
        """P(hidden width): the global ``width`` (deployable) or the first hidden layer's (full space, as
        :func:`~qgnn_deploy.nas.space.to_model_config` deploys it); ``{None: 1}`` for one layer."""
        if self.space.num_layers == 1:
            return {None: torch.ones(())}
        p = probs["width"] if "width" in probs else probs["l0.width"]
        return {w: p[k] for k, w in enumerate(self.space.widths)}

    def deployed_config(self, arch: str, width: int | None, bits: Mapping[tuple[int, str], int]) -> Any:
        """The ``ModelConfig`` a choice of arch, width and per-layer bits discretises to (``to_model_config``)."""
        choice: dict[str, Any] = {}
        if self.space.space == "deployable":
            choice["arch"] = arch
            if width is not None:
                choice["width"] = width
        else:
            agg, wt = ARCH_PAIRS[arch]
            for i in range(self.space.num_layers):
                choice[f"l{i}.agg"], choice[f"l{i}.weighting"] = agg, wt
                if i < self.space.num_layers - 1:
                    choice[f"l{i}.width"] = width
        choice.update({f"l{i}.bits.{c}": b for (i, c), b in bits.items()})
        return to_model_config(choice, self.space, self.in_dim, self.out_dim, dropout=self.dropout).config

    def cost_table(self, n: int, e: int, storage: str = "deployed", max_in_degree: int = 1023,
                   centered_input: bool = False) -> CostTable:
        """The fold-derived :class:`~qgnn_deploy.nas.cost.CostTable` of this space on a graph of ``n`` nodes and
        ``e`` edges (built once per graph and storage)."""
        key = (json.dumps(self.space.to_dict(), sort_keys=True), self.in_dim, self.out_dim, self.dropout, n, e,
               storage, max_in_degree, centered_input)
        tables = _COST_TABLES
        if key not in tables:
            widths = list(self.space.widths) if self.space.num_layers > 1 else [None]
            if len(tables) >= 16:
                tables.pop(next(iter(tables)))
            tables[key] = CostTable(self.cost_archs(), widths, self.space.num_layers, SEARCHED_COMPONENTS,
                                    self.space.bit_candidates, self.deployed_config, n, e, storage, max_in_degree,
                                    centered_input)
        return tables[key]

    def expected_cost(self, probs: Mapping[str, Tensor], n: int, e: int, storage: str = "deployed",
                      max_in_degree: int = 1023, centered_input: bool = False) -> tuple[Tensor, Tensor]:
        """(E[model bytes], E[buffer bytes]) on a graph with ``n`` nodes and ``e`` edges (see ``nas.cost``)."""
        table = self.cost_table(n, e, storage, max_in_degree, centered_input)
        bits = {(i, c): self.layer_probs(probs, i)[f"bits.{c}"]
                for i in range(self.space.num_layers) for c in SEARCHED_COMPONENTS}
        return table.expected(self.arch_probs(probs), self.width_probs(probs), bits)

    # -------------------------------------------------------------------------- discretisation
    @torch.no_grad()
    def one_hot(self) -> dict[str, Tensor]:
        """The arg-max architecture as one-hot probabilities (evaluates the discrete network)."""
        return {name: F.one_hot(torch.argmax(self.logits(name)), len(c)).float() for name, c in self.choices.items()}

    @torch.no_grad()
    def argmax_choice(self) -> tuple[dict[str, Any], dict[str, list[float]]]:
        """Deterministic arg-max (ties -> the first candidate) and the log-probabilities."""
        choice, logp = {}, {}
        for name, cands in self.choices.items():
            a = self.logits(name).detach()
            choice[name] = cands[int(torch.argmax(a))]
            logp[name] = torch.log_softmax(a, -1).tolist()
        return choice, logp
