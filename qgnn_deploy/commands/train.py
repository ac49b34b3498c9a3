"""``qgnn train`` / ``qgnn-train``: train one configuration and write a deployable checkpoint."""

from __future__ import annotations

import argparse
import json

import torch

from qgnn_deploy.commands import add_parser
from qgnn_deploy.data.specs import ACCEPTED_FORMS, load_dataset
from qgnn_deploy.errors import QgnnError
from qgnn_deploy.models.net import ARCHS, ModelConfig, default_bits
from qgnn_deploy.quant.frameworks import FRAMEWORK_NAMES
from qgnn_deploy.train.checkpoint import load_checkpoint, save_checkpoint
from qgnn_deploy.train.device import add_device_argument
from qgnn_deploy.train.trainer import TrainSettings, train


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="synthetic", metavar="SPEC", help=f"dataset spec: {ACCEPTED_FORMS}")
    p.add_argument("--split-seed", type=int, default=0,
                   help="seed of the random split for datasets without a standard one (recorded in the checkpoint)")
    p.add_argument("--data-root", default=None,
                   help="dataset root (default: $QGNN_DATA_ROOT, else ~/.cache/qgnn-deploy/datasets)")
    p.add_argument("--arch", default="gcn", choices=ARCHS, help="GNN layer type")
    p.add_argument("--framework", default="qat", choices=FRAMEWORK_NAMES,
                   help="quantization-aware training method (fp32: no quantization)")
    p.add_argument("--bits", type=int, default=8, help="bit-width of every component (2..8; 32 = FP32)")
    p.add_argument("--bits-json", default=None, help='per-component overrides, e.g. {"edge": 8, "output": 8}')
    p.add_argument("--hidden", type=int, default=16, help="hidden width of every layer")
    p.add_argument("--layers", type=int, default=2, help="number of GNN layers")
    p.add_argument("--heads", type=int, default=1, help="GAT: attention heads of the hidden layers (concatenated)")
    p.add_argument("--out-heads", type=int, default=1, help="GAT: attention heads of the last layer (averaged)")
    p.add_argument("--dropout", type=float, default=None,
                   help="dropout probability during training (default 0.5; --arch gat: 0.6, models.gat.TRAIN_RECIPE)")
    p.add_argument("--lorap", action="store_true", help="add LoRAP prompts after every aggregation")
    p.add_argument("--lorap-k", type=int, default=8, help="number of prompts k")
    p.add_argument("--lorap-rank", type=int, default=4, help="rank r of the prompt basis")
    p.add_argument("--lorap-variant", default="softmax", choices=("softmax", "lora"),
                   help="softmax: prompts mixed by an integer softmax; lora: a plain low-rank update")
    p.add_argument("--gpf", default=None, choices=("gpf", "gpf-plus"), help="input-feature prompt (pre-aggregation)")
    p.add_argument("--gpf-k", type=int, default=4, help="number of GPF-plus basis prompts")
    p.add_argument("--framework-options", default=None,
                   help='JSON options for the QAT framework, e.g. {"penalty": 0.1}')


def arch_defaults(args: argparse.Namespace) -> None:
    """Fill ``--dropout`` / ``--lr`` left unset with the architecture's recipe (GAT trains with its own)."""
    recipe = {"dropout": 0.5, "lr": 0.01}
    if args.arch == "gat":
        from qgnn_deploy.models.gat import TRAIN_RECIPE

        recipe.update({k: TRAIN_RECIPE[k] for k in recipe})
    for key, value in recipe.items():
        if getattr(args, key, 0) is None:
            setattr(args, key, value)


def config_from_args(args: argparse.Namespace, ds) -> ModelConfig:
    arch_defaults(args)
    bits = default_bits(32 if args.framework == "fp32" else args.bits)
    try:
        if args.bits_json:
            bits.update({k: int(v) for k, v in json.loads(args.bits_json).items()})
        options = json.loads(args.framework_options) if args.framework_options else {}
    except (json.JSONDecodeError, ValueError, AttributeError) as exc:
        raise QgnnError(f"bad JSON option: {exc}") from None
    return ModelConfig(
        arch=args.arch, in_dim=ds.num_features, hidden=args.hidden, out_dim=ds.num_classes, num_layers=args.layers,
        dropout=args.dropout, task=ds.task, framework=args.framework, framework_options=options, bits=bits,
        lorap={"k": args.lorap_k, "rank": args.lorap_rank, "variant": args.lorap_variant} if args.lorap else None,
        gpf={"mode": args.gpf, "k": args.gpf_k} if args.gpf else None,
        **_gat_options(args),
    )


def check_init_compatible(path: str, init_config: ModelConfig, init_state: dict, config: ModelConfig) -> None:
    """``--init`` must describe the same module tree (up to parameters the new run adds, e.g. prompts)."""
    from qgnn_deploy.models.net import QGNN

    target = QGNN(config).state_dict()
    extra = sorted(set(init_state) - set(target))
    if extra:
        hint = ""
        if init_config.lorap and not config.lorap:
            hint = "; it has LoRAP prompts: pass --lorap (with the same --lorap-k/--lorap-rank/--lorap-variant)"
        elif init_config.gpf and not config.gpf:
            hint = f"; it has a {init_config.gpf.get('mode')} prompt: pass --gpf {init_config.gpf.get('mode')}"
        raise QgnnError(f"--init {path} holds {len(extra)} parameter(s) this configuration lacks "
                        f"(e.g. {extra[0]}){hint}")
    for name, t in init_state.items():
        if tuple(t.shape) != tuple(target[name].shape):
            raise QgnnError(f"--init {path}: {name} has shape {list(t.shape)}, this configuration needs "
                            f"{list(target[name].shape)} (same --arch/--hidden/--layers/--dataset as the checkpoint?)")


def _gat_options(args: argparse.Namespace) -> dict[str, int]:
    """``heads``/``out_heads`` for ``--arch gat`` (refused for other architectures, where they mean nothing)."""
    heads, out_heads = getattr(args, "heads", 1), getattr(args, "out_heads", 1)
    if heads < 1 or out_heads < 1:
        raise QgnnError(f"--heads and --out-heads must be >= 1, got {heads} and {out_heads}")
    if args.arch != "gat":
        if (heads, out_heads) != (1, 1):
            raise QgnnError(f"--heads/--out-heads apply to --arch gat only (got --arch {args.arch})")
        return {}
    return {"heads": heads, "out_heads": out_heads}


def register(sub: argparse._SubParsersAction) -> None:
    p = add_parser(sub, "train", __doc__)
    add_model_arguments(p)
    p.add_argument("--epochs", type=int, default=200, help="training epochs (the best validation epoch is kept)")
    p.add_argument("--lr", type=float, default=None,
                   help="Adam learning rate (default 0.01; --arch gat: 0.005, models.gat.TRAIN_RECIPE)")
    p.add_argument("--weight-decay", type=float, default=5e-4, help="Adam weight decay")
    p.add_argument("--seed", type=int, default=0, help="random seed (training is deterministic per seed)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    p.add_argument("--init", default=None, help="start from this checkpoint (e.g. train prompts on top of QAT)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (also off when stderr is not a "
                   "terminal)")
    p.add_argument("--loss", default="l1", choices=("l1", "mse"), help="regression datasets (e.g. zinc): the loss")
    p.add_argument("--out", default="model.pt", help="checkpoint file to write (weights only, no pickle)")
    add_scale_arguments(p)
    p.set_defaults(func=run)


def add_scale_arguments(p: argparse.ArgumentParser) -> None:
    """--device and mini-batch flags (docs/training.md); data parallelism comes from torchrun's environment."""
    add_device_argument(p)
    p.add_argument("--batch-size", type=int, default=None,
                   help="node tasks: NeighborLoader mini-batches of this many seed nodes (default: full graph); "
                        "graph tasks: graphs per batch (default 32)")
    p.add_argument("--num-neighbors", default="10,10", help="neighbours sampled per hop for --batch-size, e.g. 10,10")


def scale_settings(args: argparse.Namespace, task: str) -> dict:
    """TrainSettings fields from the scale flags (``--batch-size``, ``--num-neighbors``, ``--device``, torchrun)."""
    from qgnn_deploy.train.distributed import from_env
    from qgnn_deploy.train.minibatch import parse_num_neighbors

    try:
        hops = parse_num_neighbors(args.num_neighbors)
    except ValueError as exc:
        raise QgnnError(str(exc)) from None
    if args.batch_size is not None and args.batch_size < 1:
        raise QgnnError(f"--batch-size must be positive, got {args.batch_size}")
    dist = from_env()
    if dist is not None and task != "node":
        raise QgnnError("data-parallel training (torchrun) supports node-classification datasets only")
    out: dict = {"device": args.device, "num_neighbors": hops, "dist": dist}
    if task == "node":
        out["node_batch_size"] = args.batch_size
    elif args.batch_size is not None:
        out["batch_size"] = args.batch_size
    return out


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.bits not in (2, 3, 4, 5, 6, 7, 8, 32):
        raise QgnnError(f"--bits must be 2..8 or 32, got {args.bits}")
    ds = load_dataset(args.dataset, args.data_root, split_seed=args.split_seed)
    config = config_from_args(args, ds)  # also fills --lr / --dropout from the architecture's recipe
    init_state = None
    if args.init:
        init_model, _ = load_checkpoint(args.init)
        init_state = init_model.state_dict()
        check_init_compatible(args.init, init_model.config, init_state, config)
    scale = scale_settings(args, ds.task)
    result = train(config, ds, TrainSettings(epochs=args.epochs, lr=args.lr, weight_decay=args.weight_decay,
                                             seed=args.seed, progress=not args.no_progress,
                                             regression_loss=args.loss, **scale), init_state)
    dist = scale["dist"]
    if dist is not None and not dist.is_main:  # every rank holds the same model; rank 0 alone writes it
        return 0
    save_checkpoint(args.out, result.model, ds.describe(), result.metrics,
                    extra={"seed": args.seed, "epochs": args.epochs, "lr": args.lr, "init": args.init,
                           "split_seed": args.split_seed, "batch_size": args.batch_size,
                           "world_size": dist.world_size if dist else 1})
    m = result.metrics
    key = "mae" if m.get("metric") == "mae" else "acc"
    print(f"{config.arch} {config.framework} bits={args.bits} lorap={bool(config.lorap)} gpf={args.gpf}: "
          f"val {key} {m[f'val_{key}']:.4f} test {key} {m[f'test_{key}']:.4f} (epoch {m['best_epoch']}) -> {args.out}")
    return 0
