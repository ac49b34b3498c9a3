"""``qgnn evaluate``: the benchmark table (FP32 and every QAT framework at INT8/INT4, +/- prompts) on any dataset.

``--dataset`` takes any dataset spec (Cora by default; ``planetoid:CiteSeer``,
``tu:PROTEINS``, ``zinc``, ``file:graph.npz``, ...).  Classification datasets
report accuracy in %, regression datasets (ZINC) MAE.  ``--targets FILE`` adds a
targets line (``examples/targets/evaluation.toml`` holds the Cora goals).

Every configuration is trained over several seeds (mean +/- std of the test
score, model selected on validation); runs are cached under ``--out-dir/runs``
so an interrupted or extended evaluation only trains what is missing.  This
command only parses arguments and writes ``evaluation.json`` / ``evaluation.md``:
the runner is :func:`qgnn_deploy.experiments.evaluation.run_evaluation`.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from qgnn_deploy.commands import add_list_argument, add_parser
from qgnn_deploy.errors import QgnnError
from qgnn_deploy.experiments.evaluation import FRAMEWORKS, PROMPTS, EvaluationConfig, run_evaluation, write_json
from qgnn_deploy.train.device import add_device_argument, resolve_device


# ------------------------------------------------------------------------------------------------ CLI
def register(sub: argparse._SubParsersAction) -> None:
    from qgnn_deploy.data.specs import ACCEPTED_FORMS

    p = add_parser(sub, "evaluate", __doc__)
    p.add_argument("--dataset", default="cora", metavar="SPEC", help=f"dataset spec: {ACCEPTED_FORMS}")
    p.add_argument("--split-seed", type=int, default=0,
                   help="seed of the random split (datasets without a standard one)")
    p.add_argument("--data-root", default=None, help="dataset root (default: $QGNN_DATA_ROOT, else the user cache)")
    p.add_argument("--arch", default="gcn", help="GNN layer type (any architecture of models.net.ARCHS: gcn, gin, "
                   "sage, gat)")
    p.add_argument("--heads", type=int, default=8, help="--arch gat: attention heads of the hidden layers")
    p.add_argument("--out-heads", type=int, default=1, help="--arch gat: attention heads of the last layer")
    add_list_argument(p, "--frameworks", choices=FRAMEWORKS, default=FRAMEWORKS,
                      help="QAT frameworks (each gets rows; an FP32 row is always added)")
    add_list_argument(p, "--bits", item=int, default=[8, 4], metavar="B", help="bit-widths of the quantized rows")
    add_list_argument(p, "--prompts", choices=PROMPTS, default=["none", "lorap"], help="prompt variants per row")
    add_list_argument(p, "--seeds", item=int, default=[0, 1, 2], metavar="SEED", help="training seeds per row")
    p.add_argument("--epochs", type=int, default=100, help="training epochs per run")
    p.add_argument("--patience", type=int, default=30, help="stop after this many epochs without a better val")
    p.add_argument("--lr", type=float, default=None,
                   help="Adam learning rate (default 0.01; --arch gat: 0.005, models.gat.TRAIN_RECIPE)")
    p.add_argument("--weight-decay", type=float, default=5e-4, help="Adam weight decay")
    p.add_argument("--hidden", type=int, default=16, help="hidden width")
    p.add_argument("--dropout", type=float, default=None,
                   help="dropout probability during training (default 0.5; --arch gat: 0.6, models.gat.TRAIN_RECIPE)")
    p.add_argument("--framework-options", default=None, help='JSON {framework: {option: value}}')
    p.add_argument("--lorap-k", type=int, default=8, help="LoRAP: number of prompts k")
    p.add_argument("--lorap-rank", type=int, default=4, help="LoRAP: rank r of the prompt basis")
    p.add_argument("--lorap-variant", default="softmax", choices=("softmax", "lora"), help="LoRAP variant")
    p.add_argument("--gpf-k", type=int, default=4, help="GPF-plus: number of basis prompts (gpf-lorap rows)")
    p.add_argument("--prompt-mode", default="joint", choices=("on-top", "joint"),
                   help="joint: prompts train with the QAT model; on-top: only prompts, on the no-prompt checkpoint")
    p.add_argument("--prompt-epochs", type=int, default=40, help="on-top: epochs of prompt training")
    p.add_argument("--prompt-lr", type=float, default=0.01, help="on-top: learning rate of prompt training")
    p.add_argument("--no-deployed", dest="deployed", action="store_false",
                   help="skip the deployed (folded integer graph) accuracy column")
    p.add_argument("--jobs", type=int, default=1, help="parallel training processes")
    p.add_argument("--threads", type=int, default=None, help="torch threads per job (default: 2 / jobs)")
    p.add_argument("--out-dir", default="evaluation",
                   help="where evaluation.json/.md, runs/ (the cache) and checkpoints/ go")
    add_device_argument(p)
    p.add_argument("--targets", type=Path, default=None, metavar="FILE",
                   help="TOML file of targets to check (e.g. examples/targets/evaluation.toml; default: none)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars (also off when stderr is not a terminal)")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> EvaluationConfig:
    """The :class:`EvaluationConfig` of parsed ``qgnn evaluate`` flags (unset --lr/--dropout: the arch's recipe,
    exactly as ``qgnn train`` fills them)."""
    from qgnn_deploy.commands.train import arch_defaults

    arch_defaults(args)
    try:
        fw_opts = json.loads(args.framework_options) if args.framework_options else {}
    except json.JSONDecodeError as exc:
        raise QgnnError(f"--framework-options is not JSON: {exc}") from None
    if not isinstance(fw_opts, dict):
        raise QgnnError("--framework-options must be a JSON object {framework: {option: value}}")
    return EvaluationConfig(
        dataset=args.dataset, data_root=args.data_root, split_seed=args.split_seed, arch=args.arch, heads=args.heads,
        out_heads=args.out_heads, frameworks=tuple(args.frameworks), bits=tuple(args.bits), prompts=tuple(args.prompts),
        seeds=tuple(args.seeds), epochs=args.epochs, patience=args.patience, lr=args.lr,
        weight_decay=args.weight_decay, hidden=args.hidden, dropout=args.dropout, framework_options=fw_opts,
        lorap_k=args.lorap_k, lorap_rank=args.lorap_rank, lorap_variant=args.lorap_variant, gpf_k=args.gpf_k,
        prompt_mode=args.prompt_mode, prompt_epochs=args.prompt_epochs, prompt_lr=args.prompt_lr,
        deployed=args.deployed, jobs=args.jobs, threads=args.threads, out_dir=Path(args.out_dir), device=args.device,
        progress=not args.no_progress, targets=args.targets,
        command="qgnn evaluate " + " ".join(shlex.quote(a) for a in sys.argv[2:]))


def run(args: argparse.Namespace) -> int:
    resolve_device(args.device)  # an unusable --device fails here, before any work
    result = run_evaluation(config_from_args(args))
    out_dir = Path(args.out_dir)
    write_json(out_dir / "evaluation.json", result.to_json())
    (out_dir / "evaluation.md").write_text(result.markdown)
    print(result.markdown)
    return 0
