"""Training loop for node (full batch) and graph (mini-batch) classification.

Model selection follows the usual Planetoid protocol: the weights (and
quantizer statistics) from the epoch with the best validation accuracy are
kept, and test accuracy is reported for them.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from qgnn_deploy import progress
from qgnn_deploy.data.datasets import GraphDataset
from qgnn_deploy.models.net import QGNN, ModelConfig


@dataclass
class TrainSettings:
    """Optimiser and loop settings of :func:`train` (Adam, model selected on the best validation accuracy)."""

    epochs: int = 200
    lr: float = 0.01
    weight_decay: float = 5e-4
    seed: int = 0
    batch_size: int = 32
    progress: bool = True
    patience: int | None = None
    trainable: tuple[str, ...] | None = None  # train only parameters whose name contains one of these (prompts on top)


@dataclass
class TrainResult:
    """The trained ``model`` (best validation epoch), its ``metrics`` (val/test accuracy, best epoch) and the
    per-epoch ``history``."""

    model: QGNN
    metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def accuracy(logits: Tensor, y: Tensor) -> float:
    if y.numel() == 0:
        return float("nan")
    return float((logits.argmax(-1) == y).float().mean())


@torch.no_grad()
def evaluate_node(model: QGNN, data) -> dict[str, float]:
    model.eval()
    out = model(data.x, data.edge_index)
    return {s: accuracy(out[getattr(data, f"{s}_mask")], data.y[getattr(data, f"{s}_mask")])
            for s in ("train", "val", "test")}


@torch.no_grad()
def evaluate_graph(model: QGNN, ds: GraphDataset, batch_size: int = 64) -> dict[str, float]:
    from torch_geometric.loader import DataLoader

    model.eval()
    res = {}
    for split, idx in ds.splits.items():
        correct = total = 0
        for b in DataLoader([ds.graphs[i] for i in idx], batch_size=batch_size):
            out = model(b.x, b.edge_index, b.batch)
            correct += int((out.argmax(-1) == b.y).sum())
            total += int(b.y.numel())
        res[split] = correct / max(total, 1)
    return res


def train(config: ModelConfig, ds: GraphDataset, settings: TrainSettings,
          init_state: dict[str, Tensor] | None = None) -> TrainResult:
    """Train ``config`` on ``ds``; ``init_state`` starts from a checkpoint (e.g. prompts on top of QAT)."""
    seed_everything(settings.seed)
    model = QGNN(config)
    if init_state is not None:
        missing, unexpected = model.load_state_dict(init_state, strict=False)
        if unexpected:
            raise ValueError(f"initial state has keys the model lacks: {unexpected[:5]}")
    if settings.trainable is not None:
        for name, p in model.named_parameters():
            p.requires_grad_(any(t in name for t in settings.trainable))
        for name, m in model.named_modules():  # frozen parts keep their loaded range statistics too
            if hasattr(m, "momentum") and not any(t in name for t in settings.trainable):
                m.momentum = 0.0
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    best: dict[str, Any] = {"val": -1.0}
    history: list[dict[str, float]] = []
    framework = model.framework
    bar = tqdm(range(settings.epochs), disable=progress.disabled(settings.progress),
               desc=f"{config.arch}/{config.framework}", leave=False)
    since_best = 0
    for epoch in bar:
        model.train()
        loss = _train_epoch(model, ds, opt, settings)
        framework.on_epoch_end(model, epoch, settings.epochs)
        if framework_reset_optimizer(framework):
            opt = torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
        accs = evaluate_node(model, ds.data) if ds.task == "node" else evaluate_graph(model, ds)
        history.append({"epoch": epoch, "loss": loss, **accs})
        selectable = getattr(framework, "selectable", lambda e, n: True)(epoch, settings.epochs)
        if selectable and accs["val"] > best["val"]:
            best = {"val": accs["val"], "test": accs["test"], "train": accs["train"], "epoch": epoch,
                    "state": copy.deepcopy(model.state_dict()), "config": copy.deepcopy(model.config.to_dict())}
            since_best = 0
        elif selectable:  # epochs that cannot be selected (MixQ's search) do not count towards patience
            since_best += 1
        bar.set_postfix(loss=f"{loss:.3f}", val=f"{accs['val']:.3f}", best=f"{best['val']:.3f}")
        if settings.patience and since_best > settings.patience:
            break
    if "state" in best:
        if best["config"] != model.config.to_dict():
            model = QGNN(ModelConfig.from_dict(best["config"]))
        model.load_state_dict(best["state"])
    model.eval()
    metrics = {"best_epoch": best.get("epoch", -1), "val_acc": best["val"], "test_acc": best.get("test", float("nan")),
               "train_acc": best.get("train", float("nan"))}
    return TrainResult(model, metrics, history)


def framework_reset_optimizer(framework) -> bool:
    """Frameworks that rebuild modules (MixQ fixing bits) ask for a fresh optimizer."""
    flag = getattr(framework, "reset_optimizer", False)
    if flag:
        framework.reset_optimizer = False
    return bool(flag)


def _train_epoch(model: QGNN, ds: GraphDataset, opt: torch.optim.Optimizer, settings: TrainSettings) -> float:
    if ds.task == "node":
        data = ds.data
        opt.zero_grad()
        out = model(data.x, data.edge_index)
        loss = F.cross_entropy(out[data.train_mask], data.y[data.train_mask]) + model.framework.penalty(model)
        loss.backward()
        opt.step()
        return float(loss.detach())
    from torch_geometric.loader import DataLoader

    total, count = 0.0, 0
    loader = DataLoader([ds.graphs[i] for i in ds.splits["train"]], batch_size=settings.batch_size, shuffle=True)
    for b in loader:
        opt.zero_grad()
        out = model(b.x, b.edge_index, b.batch)
        loss = F.cross_entropy(out, b.y) + model.framework.penalty(model)
        loss.backward()
        opt.step()
        total += float(loss.detach()) * b.num_graphs
        count += b.num_graphs
    return total / max(count, 1)
