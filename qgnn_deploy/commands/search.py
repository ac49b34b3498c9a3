"""``qgnn search`` / ``qgnn-search``: LPGNAS search, discretise, QAT retrain, normal ``model.pt``.

Writes into ``--out-dir``: ``model.pt`` (``save_checkpoint``; folds/exports like any trained model),
``search.json`` (space, settings, chosen configuration, probabilities, expected and exact cost,
metrics), ``points.csv`` (one row per evaluated point: penalty, seed, choices, expected size/buffer,
exact size/buffer, accuracy) and prints the chosen configuration as a table.  Several ``--penalty``
and ``--seed`` values search every combination; the checkpoint is the best validation accuracy.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

from qgnn_deploy import progress as progress_bars
from qgnn_deploy.commands import add_list_argument, add_parser
from qgnn_deploy.data.specs import ACCEPTED_FORMS, load_dataset
from qgnn_deploy.errors import QgnnError
from qgnn_deploy.nas.search import SearchSettings, retrain, save_searched, search
from qgnn_deploy.nas.space import SearchSpace
from qgnn_deploy.train.device import add_device_argument, resolve_device
from qgnn_deploy.train.trainer import TrainSettings

CSV_FIELDS = ["penalty", "seed", "arch", "hidden", "choice", "projected", "expected_model_bytes",
              "expected_buffer_bytes", "model_bytes", "buffer_bytes", "supernet_val_acc", "val_acc", "test_acc",
              "seconds"]


def register(sub: argparse._SubParsersAction) -> None:
    p = add_parser(sub, "search", __doc__)
    p.add_argument("--dataset", default="synthetic", metavar="SPEC",
                   help=f"node-classification dataset spec: {ACCEPTED_FORMS}")
    p.add_argument("--data-root", default=None, help="dataset root (default: $QGNN_DATA_ROOT, else the user cache)")
    p.add_argument("--space", default="deployable", choices=("deployable", "full"),
                   help="deployable: only what QGNN builds; full: also max/attention/activations (projected)")
    p.add_argument("--layers", type=int, default=2, help="number of GNN layers")
    add_list_argument(p, "--archs", default=["gcn", "sage", "gin"], metavar="ARCH",
                      help="deployable space: layer candidates (add gat for graph attention)")
    add_list_argument(p, "--widths", item=int, default=[16, 32, 64], metavar="W", help="searched hidden widths")
    add_list_argument(p, "--bits", item=int, default=[2, 4, 8], metavar="B", help="searched bit-widths per component")
    p.add_argument("--allow-fp32", action="store_true", help="add FP32 as a bit-width candidate")
    add_list_argument(p, "--penalty", item=float, default=[1.0], metavar="LAMBDA",
                      help="penalty weight(s) lambda; each is searched")
    p.add_argument("--buffer-share", type=float, default=0.5, help="beta: share of the penalty on buffer size")
    p.add_argument("--storage", default="deployed", choices=("deployed", "ideal"),
                   help="deployed: bytes as the integer graph stores them; ideal: b/8 bytes per element")
    add_list_argument(p, "--seed", item=int, default=[0], metavar="SEED", help="seed(s); each is searched")
    p.add_argument("--search-epochs", type=int, default=100, help="supernet training epochs per search")
    p.add_argument("--arch-lr", type=float, default=0.05, help="learning rate of the architecture logits")
    p.add_argument("--mode", default="alternate", choices=("alternate", "joint"),
                   help="alternate: an architecture step on the validation loss after each weight step; "
                        "joint: one step on the training loss for both")
    p.add_argument("--relaxation", default="hard", choices=("hard", "soft", "softmax"),
                   help="hard: straight-through Gumbel one-hot samples; soft: Gumbel-softmax; softmax: plain mixture")
    add_list_argument(p, "--tau", item=float, default=[1.0, 0.3], metavar="TAU",
                      help="Gumbel temperature start and end (geometric schedule)")
    p.add_argument("--epochs", type=int, default=200, help="QAT retraining epochs of the chosen network")
    p.add_argument("--patience", type=int, default=None,
                   help="stop retraining after this many epochs without a better validation accuracy")
    p.add_argument("--lr", type=float, default=0.01, help="weight learning rate (search and retraining)")
    p.add_argument("--lorap", action="store_true", help="retrain with LoRAP prompts")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars (also off when stderr is not a terminal)")
    p.add_argument("--out-dir", default="search_out", help="where model.pt, search.json and points.csv go")
    add_device_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    resolve_device(args.device)  # an unusable --device fails here, before any work
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        space = SearchSpace(num_layers=args.layers, widths=tuple(args.widths),
                            bits=tuple(args.bits), allow_fp32=args.allow_fp32,
                            space=args.space, archs=tuple(args.archs))
    except ValueError as exc:
        raise QgnnError(str(exc)) from None
    taus = list(args.tau)
    if len(taus) != 2 or min(taus) <= 0:
        raise QgnnError("--tau takes 'start,end' with positive values")
    ds = load_dataset(args.dataset, args.data_root)
    if ds.task != "node":
        raise QgnnError("qgnn search supports node-classification datasets")
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    penalties, seeds = list(args.penalty), list(args.seed)
    runs = [(pen, seed) for pen in penalties for seed in seeds]
    lorap = {"k": 8, "rank": 4, "variant": "softmax"} if args.lorap else None
    rows, best = [], None
    for k, (pen, seed) in enumerate(runs):
        settings = SearchSettings(epochs=args.search_epochs, arch_lr=args.arch_lr, lr=args.lr, penalty=pen,
                                  buffer_share=args.buffer_share, tau_start=taus[0], tau_end=taus[1],
                                  gumbel="" if args.relaxation == "softmax" else args.relaxation, mode=args.mode,
                                  storage=args.storage, seed=seed)
        bar = tqdm(total=settings.epochs, desc=f"search {k + 1}/{len(runs)} lambda={pen:g} seed={seed}",
                   disable=progress_bars.disabled(not args.no_progress), leave=False, file=sys.stderr)

        def progress(rec: dict, bar=bar) -> None:
            bar.n = rec["epoch"] + 1
            bar.set_postfix(val=f"{rec['val']:.3f}", size=f"{rec['exp_size'] / 1024:.1f}KiB",
                            buf=f"{rec['exp_buffer'] / 1024:.0f}KiB", tau=f"{rec['tau']:.2f}")
            bar.refresh()

        outcome = search(ds, space, settings, progress)
        bar.close()
        result = retrain(outcome, ds, TrainSettings(epochs=args.epochs, lr=args.lr, seed=seed,
                                                    progress=not args.no_progress, patience=args.patience,
                                                    device=args.device), lorap)
        cfg = outcome.discretised.config
        row = {"penalty": pen, "seed": seed, "arch": cfg.arch, "hidden": cfg.hidden,
               "choice": json.dumps(outcome.discretised.choice), "projected": "; ".join(outcome.discretised.projected),
               "expected_model_bytes": round(outcome.expected["model_bytes"], 1),
               "expected_buffer_bytes": round(outcome.expected["buffer_bytes"], 1),
               "model_bytes": outcome.cost.model_bytes, "buffer_bytes": outcome.cost.buffer_bytes,
               "supernet_val_acc": outcome.supernet_val_acc, "val_acc": result.metrics["val_acc"],
               "test_acc": result.metrics["test_acc"], "seconds": round(outcome.seconds, 1)}
        rows.append(row)
        print(f"lambda={pen:g} seed={seed}: {cfg.arch}/{cfg.hidden} size {outcome.cost.model_bytes / 1024:.2f} KiB "
              f"buffer {outcome.cost.buffer_bytes / 1024:.0f} KiB val {row['val_acc']:.4f} test {row['test_acc']:.4f}")
        if best is None or row["val_acc"] > best[0]["val_acc"]:
            best = (row, outcome, settings)
    with open(out_dir / "points.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        w.writeheader()
        w.writerows(rows)
    assert best is not None
    row, outcome, settings = best
    ckpt = save_searched(out_dir / "model.pt", outcome, ds, space, settings)
    doc = {"dataset": ds.describe(), "space": space.to_dict(), "settings": asdict(settings), **outcome.summary()}
    doc.pop("history", None)
    (out_dir / "search.json").write_text(json.dumps(doc, indent=1, default=str))
    print()
    print(outcome.discretised.table())
    print(f"{'model size':<17}  {outcome.cost.model_bytes:.0f} B (expected {outcome.expected['model_bytes']:.0f} B)")
    print(f"{'buffer size':<17}  {outcome.cost.buffer_bytes:.0f} B (expected {outcome.expected['buffer_bytes']:.0f} B)")
    print(f"{'accuracy':<17}  val {row['val_acc']:.4f} test {row['test_acc']:.4f}")
    print(f"wrote {ckpt}, {out_dir / 'search.json'}, {out_dir / 'points.csv'}")
    return 0
