"""One LPGNAS round: train the supernet (weights and architecture logits), discretise, retrain with QAT.

Objective (first-order, alternating per epoch as in DARTS; ``joint`` steps both on the train loss)::

    weights w:      min_w  CE_train(w, alpha)
    architecture:   min_alpha  CE_val(w, alpha) + lambda * ((1 - beta) E[size] / size_ref + beta E[buf] / buf_ref)

``size_ref`` / ``buf_ref`` are the cost of the largest uniform 8-bit GCN in the space, so ``lambda`` is
dimensionless.  The discretised network is a normal :class:`~qgnn_deploy.models.net.ModelConfig`
trained by :func:`qgnn_deploy.train.trainer.train` and saved with ``save_checkpoint``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from qgnn_deploy.data.datasets import GraphDataset
from qgnn_deploy.models.net import ModelConfig, default_bits
from qgnn_deploy.nas.cost import Cost, config_cost, fold_max_in_degree
from qgnn_deploy.nas.space import Discretised, SearchSpace, to_model_config
from qgnn_deploy.nas.supernet import GraphCache, SuperNet
from qgnn_deploy.train.checkpoint import save_checkpoint
from qgnn_deploy.train.trainer import TrainResult, TrainSettings, seed_everything, train


@dataclass
class SearchSettings:
    epochs: int = 100
    lr: float = 0.01
    arch_lr: float = 0.05
    weight_decay: float = 5e-4
    penalty: float = 0.0
    buffer_share: float = 0.5
    tau_start: float = 1.0
    tau_end: float = 0.3
    gumbel: str = "hard"  # "hard" | "soft" | "" (plain softmax)
    mode: str = "alternate"  # or "joint"
    storage: str = "deployed"
    warmup: int = 10  # epochs of weight-only training before architecture steps
    seed: int = 0
    dropout: float = 0.5
    eval_every: int = 5


@dataclass
class SearchOutcome:
    """Everything a search run reports: the choice, its expected and exact cost, the trained model."""

    discretised: Discretised
    probabilities: dict[str, list[float]]
    expected: dict[str, float]
    cost: Cost
    supernet_val_acc: float
    history: list[dict[str, float]] = field(default_factory=list)
    retrain: TrainResult | None = None
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        d = self.discretised
        out = {"choice": d.choice, "config": d.config.to_dict(), "projected": d.projected,
               "probabilities": self.probabilities, "expected": self.expected, "cost": self.cost.to_dict(),
               "supernet_val_acc": self.supernet_val_acc, "seconds": round(self.seconds, 1)}
        if self.retrain is not None:
            out["metrics"] = self.retrain.metrics
        if d.config.lorap:
            out["cost_note"] = "model/buffer size of the searched network without the LoRAP prompts added at retraining"
        return out


@dataclass(frozen=True)
class GraphFacts:
    """What the cost model needs to know about the deployment graph (the dataset's graph)."""

    num_nodes: int
    num_edges: int
    max_in_degree: int  # as fold_checkpoint picks it (sizes the degree tables)
    centered_input: bool  # the boundary quantizer gets a non-zero zero point (negative features)

    @staticmethod
    def of(ds: GraphDataset) -> GraphFacts:
        d = ds.data
        n = int(d.num_nodes)
        return GraphFacts(n, int(d.edge_index.shape[1]), fold_max_in_degree(d.edge_index.numpy(), n),
                          bool(d.x.numel()) and float(d.x.min()) < 0.0)

    def cost(self, config: ModelConfig, storage: str = "deployed") -> Cost:
        """Model size and buffer size of ``config`` deployed on this graph (``ir.analysis`` definitions)."""
        return config_cost(config, self.num_nodes, self.num_edges, storage, self.max_in_degree, self.centered_input)


def reference_cost(space: SearchSpace, ds: GraphDataset, storage: str) -> Cost:
    """The normaliser: uniform 8-bit GCN at the widest width."""
    cfg = ModelConfig(arch="gcn", in_dim=ds.num_features, hidden=max(space.widths), out_dim=ds.num_classes,
                      num_layers=space.num_layers, bits=default_bits(8))
    return GraphFacts.of(ds).cost(cfg, storage)


def search(ds: GraphDataset, space: SearchSpace, settings: SearchSettings,
           progress: Callable[[dict[str, float]], None] | None = None) -> SearchOutcome:
    """Train the supernet on ``ds`` (node task) and discretise it (no retraining)."""
    if ds.task != "node":
        raise ValueError("LPGNAS search supports node classification")
    t0 = time.time()
    seed_everything(settings.seed)
    data = ds.data
    facts = GraphFacts.of(ds)
    n, e = facts.num_nodes, facts.num_edges
    g = GraphCache(data.edge_index, n)
    net = SuperNet(space, ds.num_features, ds.num_classes, settings.dropout)
    net.gumbel = settings.gumbel
    ref = reference_cost(space, ds, settings.storage)
    w_opt = torch.optim.Adam(net.weight_parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    a_opt = torch.optim.Adam(net.arch_parameters(), lr=settings.arch_lr)
    history: list[dict[str, float]] = []

    def penalty_terms(probs):
        # the expectation under softmax(alpha / tau), whatever the forward pass sampled
        size, buf = net.expected_cost(net.probs(sample=False), n, e, settings.storage, facts.max_in_degree,
                                       facts.centered_input)
        pen = settings.penalty * ((1 - settings.buffer_share) * size / ref.model_bytes
                                  + settings.buffer_share * buf / ref.buffer_bytes)
        return pen, size, buf

    for epoch in range(settings.epochs):
        frac = epoch / max(settings.epochs - 1, 1)
        net.tau = settings.tau_start * (settings.tau_end / settings.tau_start) ** frac
        net.train()
        arch_on = epoch >= min(settings.warmup, settings.epochs // 4)
        # weights step (train split)
        w_opt.zero_grad()
        a_opt.zero_grad()
        probs = net.probs()
        out = net(data.x, g, probs)
        loss = F.cross_entropy(out[data.train_mask], data.y[data.train_mask])
        if settings.mode == "joint" and arch_on:
            pen, size, buf = penalty_terms(probs)
            (loss + pen).backward()
            a_opt.step()
        else:
            loss.backward()
        w_opt.step()
        # architecture step (validation split)
        if settings.mode == "alternate" and arch_on:
            w_opt.zero_grad()
            a_opt.zero_grad()
            probs = net.probs()
            out = net(data.x, g, probs)
            vloss = F.cross_entropy(out[data.val_mask], data.y[data.val_mask])
            pen, size, buf = penalty_terms(probs)
            (vloss + pen).backward()
            a_opt.step()
        if epoch % settings.eval_every and epoch != settings.epochs - 1:
            continue
        with torch.no_grad():
            net.eval()
            probs = net.probs(sample=False)
            logits = net(data.x, g, net.one_hot() if settings.gumbel == "hard" else probs)
            pred = logits.argmax(-1)
            val = float((pred[data.val_mask] == data.y[data.val_mask]).float().mean())
            size, buf = net.expected_cost(probs, n, e, settings.storage, facts.max_in_degree, facts.centered_input)
        rec = {"epoch": epoch, "loss": float(loss.detach()), "val": val, "tau": net.tau, "exp_size": float(size),
               "exp_buffer": float(buf)}
        history.append(rec)
        if progress is not None:
            progress(rec)
    choice, logp = net.argmax_choice()
    disc = to_model_config(choice, space, ds.num_features, ds.num_classes, log_probs=logp, dropout=settings.dropout)
    with torch.no_grad():
        probs = net.probs(sample=False)
        size, buf = net.expected_cost(probs, n, e, settings.storage, facts.max_in_degree, facts.centered_input)
    prob_table = {k: [round(float(v), 4) for v in p] for k, p in probs.items()}
    cost = facts.cost(disc.config, settings.storage)
    return SearchOutcome(disc, prob_table, {"model_bytes": float(size), "buffer_bytes": float(buf)}, cost,
                         history[-1]["val"] if history else 0.0, history, None, time.time() - t0)


def retrain(outcome: SearchOutcome, ds: GraphDataset, settings: TrainSettings,
            lorap: dict[str, Any] | None = None) -> TrainResult:
    """QAT (plain ``qat`` framework; optional LoRAP prompts) of the discretised config."""
    cfg = outcome.discretised.config
    if lorap:
        cfg = ModelConfig.from_dict({**cfg.to_dict(), "lorap": dict(lorap)})
        outcome.discretised.config = cfg
    result = train(cfg, ds, settings)
    outcome.retrain = result
    return result


def save_searched(path: str | Path, outcome: SearchOutcome, ds: GraphDataset, space: SearchSpace,
                  settings: SearchSettings) -> Path:
    """A normal ``model.pt`` (``save_checkpoint``) with the search record in ``extra['lpgnas']``."""
    if outcome.retrain is None:
        raise ValueError("retrain the searched config before saving it")
    extra = {"lpgnas": {"space": space.to_dict(), "settings": asdict(settings), "choice": outcome.discretised.choice,
                        "projected": outcome.discretised.projected, "expected": outcome.expected,
                        "cost": outcome.cost.to_dict()}}
    return save_checkpoint(path, outcome.retrain.model, ds.describe(), outcome.retrain.metrics, extra=extra)
