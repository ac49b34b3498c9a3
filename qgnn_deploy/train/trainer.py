"""Training loop for node (full batch or NeighborLoader mini-batch) and graph (mini-batch) classification
and regression.

``settings.device`` picks where it runs (the returned model is always on the CPU, so checkpoints and folds
never see device tensors); ``settings.node_batch_size`` switches node tasks to sampled mini-batches
(train/minibatch.py); ``settings.dist`` (train/distributed.py) makes it one rank of a DDP run.

Model selection follows the usual Planetoid protocol: the weights (and
quantizer statistics) from the epoch with the best validation accuracy are
kept, and test accuracy is reported for them.  Regression datasets
(``ds.regression``, e.g. ZINC) train an L1 (or MSE) loss and are scored by MAE,
lower is better; their metrics are ``val_mae`` / ``test_mae``.
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
from qgnn_deploy.train.device import resolve_device


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
    regression_loss: str = "l1"  # regression datasets: "l1" (ZINC's usual loss) or "mse"
    device: str = "cpu"  # cpu | cuda | auto
    node_batch_size: int | None = None  # node tasks: NeighborLoader mini-batches of this many seed nodes
    num_neighbors: tuple[int, ...] = (10, 10)  # neighbours sampled per hop (-1 = all)
    dist: Any = None  # train.distributed.DistInfo when this process is one rank of a DDP run


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


def mean_abs_error(out: Tensor, y: Tensor) -> float:
    """MAE of a regression output (the score of regression datasets, where accuracy is for classes)."""
    if y.numel() == 0:
        return float("nan")
    return float((out.reshape(y.shape[0], -1) - y.reshape(y.shape[0], -1).to(out.dtype)).abs().mean())


def task_metric(out: Tensor, y: Tensor, regression: bool) -> float:
    return mean_abs_error(out, y) if regression else accuracy(out, y)


def task_loss(out: Tensor, y: Tensor, regression: bool, regression_loss: str = "l1") -> Tensor:
    if not regression:
        return F.cross_entropy(out, y)
    target = y.reshape(out.shape).to(out.dtype)
    return F.mse_loss(out, target) if regression_loss == "mse" else F.l1_loss(out, target)


@torch.no_grad()
def evaluate_node(model: QGNN, data, regression: bool = False) -> dict[str, float]:
    model.eval()
    out = model(data.x, data.edge_index)
    return {s: task_metric(out[getattr(data, f"{s}_mask")], data.y[getattr(data, f"{s}_mask")], regression)
            for s in ("train", "val", "test")}


@torch.no_grad()
def evaluate_graph(model: QGNN, ds: GraphDataset, batch_size: int = 64) -> dict[str, float]:
    from torch_geometric.loader import DataLoader

    model.eval()
    device = next(model.parameters()).device
    res = {}
    for split, idx in ds.splits.items():
        outs, ys = [], []
        for b in DataLoader([ds.graphs[i] for i in idx], batch_size=batch_size):
            b = b.to(device)
            outs.append(model(b.x, b.edge_index, b.batch))
            ys.append(b.y)
        res[split] = task_metric(torch.cat(outs), torch.cat(ys), ds.regression) if outs else float("nan")
    return res


def train(config: ModelConfig, ds: GraphDataset, settings: TrainSettings,
          init_state: dict[str, Tensor] | None = None) -> TrainResult:
    """Train ``config`` on ``ds``; ``init_state`` starts from a checkpoint (e.g. prompts on top of QAT)."""
    dist = settings.dist
    device = resolve_device(settings.device, dist.local_rank if dist else 0)
    if dist is not None:
        from qgnn_deploy.train.distributed import session

        if ds.task != "node":
            raise ValueError("data-parallel training supports node-classification datasets")
        with session(dist, device):
            return _train(config, ds, settings, init_state, device)
    return _train(config, ds, settings, init_state, device)


def _train(config: ModelConfig, ds: GraphDataset, settings: TrainSettings, init_state: dict[str, Tensor] | None,
           device: torch.device) -> TrainResult:
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
    model.to(device)
    dist = settings.dist
    step = _Stepper(model, ds, settings, device)
    if dist is not None:  # after DDP's broadcast from rank 0, each rank draws its own dropout / sampling stream
        torch.manual_seed(settings.seed * 7919 + dist.rank + 1)
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    regression = bool(getattr(ds, "regression", False))
    sign = -1.0 if regression else 1.0  # selection maximises sign * val metric (MAE: lower is better)
    best: dict[str, Any] = {"val": -1.0 if not regression else float("inf")}
    history: list[dict[str, float]] = []
    framework = model.framework
    quiet_rank = dist is not None and not dist.is_main
    bar = tqdm(range(settings.epochs), disable=progress.disabled(settings.progress) or quiet_rank,
               desc=f"{config.arch}/{config.framework}", leave=False)
    since_best = 0
    for epoch in bar:
        model.train()
        loss = step.epoch(opt, epoch)
        framework.on_epoch_end(model, epoch, settings.epochs)
        if framework_reset_optimizer(framework):
            step.rewrap()
            opt = torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
        accs = evaluate_node(model, step.data, regression) if ds.task == "node" else evaluate_graph(model, ds)
        history.append({"epoch": epoch, "loss": loss, **accs})
        selectable = getattr(framework, "selectable", lambda e, n: True)(epoch, settings.epochs)
        if selectable and sign * accs["val"] > sign * best["val"]:
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
    model.to("cpu")
    model.eval()
    key = "mae" if regression else "acc"
    metrics = {"best_epoch": best.get("epoch", -1), f"val_{key}": best["val"],
               f"test_{key}": best.get("test", float("nan")), f"train_{key}": best.get("train", float("nan")),
               "metric": "mae" if regression else "accuracy"}
    return TrainResult(model, metrics, history)


def framework_reset_optimizer(framework) -> bool:
    """Frameworks that rebuild modules (MixQ fixing bits) ask for a fresh optimizer."""
    flag = getattr(framework, "reset_optimizer", False)
    if flag:
        framework.reset_optimizer = False
    return bool(flag)


class _Stepper:
    """One training epoch in the configured mode: full graph, NeighborLoader mini-batches, graph batches; DDP."""

    def __init__(self, model: QGNN, ds: GraphDataset, settings: TrainSettings, device: torch.device) -> None:
        self.model, self.ds, self.settings, self.device = model, ds, settings, device
        self.data = None
        self.batches = None
        if ds.task == "node":  # a shallow copy: moving it to the device leaves ds.data on the CPU
            self.data = copy.copy(ds.data).to(device) if device.type != "cpu" else ds.data
            if settings.node_batch_size:
                from qgnn_deploy.train.minibatch import NodeBatches

                dist = settings.dist
                self.batches = NodeBatches(ds.data, int(settings.node_batch_size), tuple(settings.num_neighbors),
                                           settings.seed, dist.rank if dist else 0, dist.world_size if dist else 1)
                self.degree = self.batches.degree.to(device)
            else:
                self.train_nodes = ds.data.train_mask.nonzero().view(-1)
        self.net: torch.nn.Module = model
        self.rewrap()

    def rewrap(self) -> None:
        """(Re)build the DDP wrapper, e.g. after MixQ rebuilt the model's modules."""
        if self.settings.dist is not None:
            from qgnn_deploy.train.distributed import wrap

            self.net = wrap(self.model, self.device)

    def epoch(self, opt: torch.optim.Optimizer, epoch: int) -> float:
        if self.batches is not None:
            return self._node_minibatch(opt, epoch)
        if self.ds.task == "node":
            return self._node_full(opt, epoch)
        return _graph_epoch(self.model, self.ds, opt, self.settings, self.device)

    def _node_full(self, opt: torch.optim.Optimizer, epoch: int) -> float:
        data, dist = self.data, self.settings.dist
        opt.zero_grad()
        out = self.net(data.x, data.edge_index)
        regression, kind = self.ds.regression, self.settings.regression_loss
        if dist is None:
            loss = task_loss(out[data.train_mask], data.y[data.train_mask], regression, kind)
        else:  # full graph on every rank, the loss over this rank's share of the train nodes
            from qgnn_deploy.train.minibatch import rank_share

            share = rank_share(self.train_nodes, self.settings.seed, epoch, dist.rank, dist.world_size).to(self.device)
            loss = task_loss(out[share], data.y[share], regression, kind)
        loss = loss + self.model.framework.penalty(self.model)
        loss.backward()
        opt.step()
        return float(loss.detach())

    def _node_minibatch(self, opt: torch.optim.Optimizer, epoch: int) -> float:
        from qgnn_deploy.train.minibatch import batch_context

        framework = self.model.framework
        total, count = 0.0, 0
        for batch in self.batches.epoch(epoch):
            batch = batch.to(self.device)
            ctx = batch_context(framework, self.model, batch, self.degree)
            opt.zero_grad()
            out = self.net(batch.x, batch.edge_index, None, ctx)
            seeds = int(batch.batch_size)
            loss = task_loss(out[:seeds], batch.y[:seeds], self.ds.regression, self.settings.regression_loss) \
                + framework.penalty(self.model)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * seeds
            count += seeds
        return total / max(count, 1)


def _graph_epoch(model: QGNN, ds: GraphDataset, opt: torch.optim.Optimizer, settings: TrainSettings,
                 device: torch.device) -> float:
    from torch_geometric.loader import DataLoader

    total, count = 0.0, 0
    loader = DataLoader([ds.graphs[i] for i in ds.splits["train"]], batch_size=settings.batch_size, shuffle=True)
    for b in loader:
        b = b.to(device)
        opt.zero_grad()
        out = model(b.x, b.edge_index, b.batch)
        loss = task_loss(out, b.y, ds.regression, settings.regression_loss) + model.framework.penalty(model)
        loss.backward()
        opt.step()
        total += float(loss.detach()) * b.num_graphs
        count += b.num_graphs
    return total / max(count, 1)
