"""The evaluation runner: FP32 and every QAT framework at each bit-width, +/- prompts, over seeds, on any dataset.

Python API::

    from qgnn_deploy.experiments.evaluation import EvaluationConfig, run_evaluation
    result = run_evaluation(EvaluationConfig(dataset="cora", frameworks=("qat", "dq"), bits=(8,), seeds=(0,)))
    print(result.markdown)            # the table; result.summary / result.records are the data

``qgnn evaluate`` parses its flags into an :class:`EvaluationConfig`, calls :func:`run_evaluation` and
writes ``evaluation.json`` / ``evaluation.md``.

Every configuration is trained over several seeds; the table reports test accuracy (model selected on
validation) as mean +/- std, or MAE for regression datasets (ZINC).  Prompt rows either train jointly
with the QAT model (``prompt_mode="joint"``) or on top of the seed's no-prompt checkpoint (``"on-top"``:
zero-initialised prompt basis, so training starts from exactly the base model; only prompt parameters
are trained, so any gain is the prompt's).  Each run's result is cached as JSON under
``out_dir/runs`` (keyed by its full settings), so an interrupted or extended evaluation only trains
what is missing; ``jobs=N`` trains N configurations in parallel processes.  The cache key is the job's
settings, not the code: delete ``runs/`` after changing a framework.

A ``deployed`` column is filled by a callback ``(checkpoint path, dataset) -> accuracy``; the default
folds the checkpoint (``qgnn_deploy.fold``), exports the integer graph to ONNX and runs it with ONNX
Runtime on the test split.  ``metrics`` (FP32 accuracy, each INT8 row's gap to FP32, each INT4 row's
best prompt gain) are compared with thresholds only when ``targets`` names a TOML file
(``examples/targets/evaluation.toml``, see :mod:`qgnn_deploy.targets`).
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import math
import multiprocessing
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from qgnn_deploy import progress as progress_bars
from qgnn_deploy.errors import QgnnError

FRAMEWORKS = ("qat", "dq", "a2q", "mixq")
PROMPTS = ("none", "lorap", "gpf-lorap")
PROMPT_PARAMS = ("prompt.", "gpf.")
DeployedFn = Callable[[Path, Any], "float | None"]


@dataclass(frozen=True)
class EvaluationConfig:
    """Everything an evaluation depends on; the defaults are ``qgnn evaluate``'s."""

    dataset: str = "cora"
    data_root: str | None = None
    split_seed: int = 0
    arch: str = "gcn"
    heads: int = 8  # --arch gat: heads of the hidden layers
    out_heads: int = 1  # --arch gat: heads of the last layer
    frameworks: tuple[str, ...] = FRAMEWORKS
    bits: tuple[int, ...] = (8, 4)
    prompts: tuple[str, ...] = ("none", "lorap")
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int = 100
    patience: int = 30
    lr: float = 0.01
    weight_decay: float = 5e-4
    hidden: int = 16
    dropout: float = 0.5
    framework_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    lorap_k: int = 8
    lorap_rank: int = 4
    lorap_variant: str = "softmax"
    gpf_k: int = 4
    prompt_mode: str = "joint"
    prompt_epochs: int = 40
    prompt_lr: float = 0.01
    deployed: bool = True
    jobs: int = 1
    threads: int | None = None  # torch threads per job (default: 2 / jobs)
    out_dir: Path = Path("evaluation")
    device: str = "cpu"
    progress: bool = True
    targets: Path | None = None  # a TOML targets file; None: no targets
    command: str = ""  # the command line recorded in the report


@dataclass
class EvaluationResult:
    """The table (``summary``), every run record, the rendered markdown and the targets (if any)."""

    config: EvaluationConfig
    summary: dict[str, Any]
    records: list[dict[str, Any]]
    markdown: str
    meta: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """What ``evaluation.json`` holds."""
        return {"command": self.config.command, "meta": self.meta, "summary": self.summary, "runs": self.records}


@dataclass(frozen=True)
class Row:
    """One table row: a framework at a bit-width with a prompt variant."""

    framework: str
    bits: int
    prompt: str = "none"

    @property
    def key(self) -> str:
        return "fp32" if self.framework == "fp32" else f"{self.framework}-int{self.bits}-{self.prompt}"

    @property
    def base(self) -> Row:
        return Row(self.framework, self.bits, "none")


def plan_rows(frameworks: list[str], bits: list[int], prompts: list[str]) -> list[Row]:
    rows = [Row("fp32", 32)]
    for b in bits:
        for fw in frameworks:
            rows += [Row(fw, b, p) for p in prompts]
    return rows


# ------------------------------------------------------------------------------------------------ workers
_DATASETS: dict[tuple[str, str | None, int], Any] = {}


def _dataset(name: str, root: str | None, split_seed: int = 0):
    from qgnn_deploy.data.specs import load_dataset

    key = (name, root, split_seed)
    if key not in _DATASETS:
        _DATASETS[key] = load_dataset(name, root, split_seed=split_seed)
    return _DATASETS[key]


def _worker_init(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def prompt_settings(job: dict[str, Any], zero_init: bool) -> dict[str, Any]:
    lorap = {"k": job["lorap_k"], "rank": job["lorap_rank"], "variant": job["lorap_variant"]}
    gpf = {"mode": "gpf-plus", "k": job["gpf_k"]} if job["prompt"] == "gpf-lorap" else None
    if zero_init:
        lorap["zero_init"] = True
        if gpf:
            gpf["zero_init"] = True
    return {"lorap": lorap, "gpf": gpf}


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Train one (row, seed); returns the run record (also written to ``job['record']``)."""
    from qgnn_deploy.models.net import ModelConfig, default_bits
    from qgnn_deploy.train.checkpoint import load_checkpoint, save_checkpoint
    from qgnn_deploy.train.trainer import TrainSettings, train

    t0 = time.time()
    ds = _dataset(job["dataset"], job["data_root"], job.get("split_seed", 0))
    init_state = None
    trainable = None
    if job["prompt"] != "none" and job["prompt_mode"] == "on-top":
        base_model, payload = load_checkpoint(job["init"])
        cfg_dict = dict(payload["config"])
        cfg_dict.update(prompt_settings(job, zero_init=True))
        config = ModelConfig.from_dict(cfg_dict)
        init_state = base_model.state_dict()
        trainable = PROMPT_PARAMS
        epochs, lr = job["prompt_epochs"], job["prompt_lr"]
    else:
        fw = job["framework"]
        extra = prompt_settings(job, zero_init=False) if job["prompt"] != "none" else {"lorap": None, "gpf": None}
        config = ModelConfig(arch=job["arch"], in_dim=ds.num_features, hidden=job["hidden"], out_dim=ds.num_classes,
                             dropout=job["dropout"], task=ds.task, framework=fw,
                             framework_options=dict(job["framework_options"].get(fw, {})),
                             bits=default_bits(32 if fw == "fp32" else job["bits"]), **extra,
                             **({"heads": job["heads"], "out_heads": job["out_heads"]} if job["arch"] == "gat" else {}))
        epochs, lr = job["epochs"], job["lr"]
    settings = TrainSettings(epochs=epochs, lr=lr, weight_decay=job["weight_decay"], seed=job["seed"],
                             progress=False, patience=job["patience"], trainable=trainable,
                             device=job.get("device", "cpu"))
    result = train(config, ds, settings, init_state)
    model = result.model
    save_checkpoint(job["checkpoint"], model, ds.describe(), result.metrics,
                    extra={"seed": job["seed"], "epochs": epochs, "lr": lr, "init": job.get("init")})
    key = "mae" if result.metrics.get("metric") == "mae" else "acc"
    record: dict[str, Any] = {"row": job["row"], "seed": job["seed"], "signature": job["signature"],
                              f"test_{key}": result.metrics[f"test_{key}"], f"val_{key}": result.metrics[f"val_{key}"],
                              "best_epoch": result.metrics["best_epoch"], "epochs_run": len(result.history),
                              "seconds": round(time.time() - t0, 1), "checkpoint": job["checkpoint"],
                              "layer_bits": model.config.layer_bits}
    avg = getattr(model.framework, "average_bits", None)
    if avg is not None:
        record["a2q_avg_bits"] = avg(model)
    record["deployed_acc"] = None
    write_json(Path(job["record"]), record)
    return record


def default_deployed() -> DeployedFn | None:
    """Test accuracy of the folded integer graph exported to ONNX and run by ONNX Runtime (if both exist)."""
    def deployed(path: Path, ds) -> float | None:
        from qgnn_deploy.backends.onnx import OnnxRunner, export_onnx
        from qgnn_deploy.data.scoring import dataset_feeds, score
        from qgnn_deploy.fold import fold_model, max_in_degree_for
        from qgnn_deploy.train.checkpoint import load_checkpoint

        model, _ = load_checkpoint(path)
        if model.config.framework == "fp32":
            return None
        feeds = dataset_feeds(ds)  # node tasks: the whole graph; graph tasks: the test graphs as one batch
        graph = fold_model(model, max_in_degree_for(feeds["edge_index"], feeds["x"].shape[0]))
        runner = OnnxRunner(export_onnx(graph), graph, threads=1)
        return score(runner.run(feeds)[graph.outputs[0].name], ds)

    return deployed


def fill_deployed(records: list[dict[str, Any]], jobs: list[dict[str, Any]], ds, progress: bool = True,
                  fn: DeployedFn | None = None) -> None:
    """Add ``deployed_acc`` to quantized runs lacking it (from their checkpoints; no retraining)."""
    fn = fn or default_deployed()
    if fn is None:
        return
    todo = [(r, j) for r, j in zip(records, jobs) if r.get("deployed_acc") is None and "deployed_error" not in r
            and j["framework"] != "fp32"]
    for rec, job in tqdm(todo, desc="deployed", disable=progress_bars.disabled(progress)):
        try:
            rec["deployed_acc"] = fn(Path(rec["checkpoint"]), ds)
        except Exception as exc:  # noqa: BLE001 - a fold failure must not lose the training result
            rec["deployed_error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
        write_json(Path(job["record"]), rec)


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON atomically (a temporary file renamed over ``path``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=_json_default))
    os.replace(tmp, path)


def _json_default(o: Any) -> Any:
    if isinstance(o, float) and math.isnan(o):
        return None
    return str(o)


# ------------------------------------------------------------------------------------------------ jobs
def make_jobs(rows: list[Row], seeds: list[int] | tuple[int, ...], args: EvaluationConfig,
              out_dir: Path) -> list[dict[str, Any]]:
    """One job per (row, seed); its signature (the cache key) hashes every setting that changes the result."""
    fw_opts = dict(args.framework_options)
    jobs = []
    for row in rows:
        for seed in seeds:
            job: dict[str, Any] = {
                "row": row.key, "framework": row.framework, "bits": row.bits, "prompt": row.prompt, "seed": seed,
                "dataset": args.dataset, "data_root": args.data_root, "arch": args.arch, "hidden": args.hidden,
                **({"split_seed": args.split_seed} if args.split_seed else {}),
                "dropout": args.dropout, "epochs": args.epochs, "lr": args.lr, "weight_decay": args.weight_decay,
                "patience": args.patience, "framework_options": fw_opts, "lorap_k": args.lorap_k,
                "lorap_rank": args.lorap_rank, "lorap_variant": args.lorap_variant, "gpf_k": args.gpf_k,
                "prompt_mode": args.prompt_mode, "prompt_epochs": args.prompt_epochs, "prompt_lr": args.prompt_lr,
            }
            if args.arch == "gat":  # only then part of the signature, so cached runs of other archs stay valid
                job.update(heads=args.heads, out_heads=args.out_heads)
            if row.prompt == "none" or args.prompt_mode == "joint":
                for k in ("prompt_mode", "prompt_epochs", "prompt_lr"):
                    job.pop(k) if row.prompt == "none" else None
            if row.prompt == "none":
                for k in ("lorap_k", "lorap_rank", "lorap_variant", "gpf_k"):
                    job.pop(k)
            if row.prompt != "none" and args.prompt_mode == "on-top":
                base = next(j for j in jobs if j["row"] == row.base.key and j["seed"] == seed)
                job["base_signature"] = base["signature"]
                job["frozen_observers"] = True  # the base's range statistics stay as trained
            sig = hashlib.sha256(json.dumps(job, sort_keys=True).encode()).hexdigest()[:16]
            # fill defaults the worker reads even when they are not part of the signature
            job.setdefault("prompt_mode", args.prompt_mode)
            job.setdefault("prompt_epochs", args.prompt_epochs)
            job.setdefault("prompt_lr", args.prompt_lr)
            for k in ("lorap_k", "lorap_rank", "lorap_variant", "gpf_k"):
                job.setdefault(k, getattr(args, k))
            job["signature"] = sig
            job["device"] = args.device  # where it trains; not part of the cached result's identity
            job["checkpoint"] = str(out_dir / "checkpoints" / f"{row.key}-s{seed}-{sig}.pt")
            job["record"] = str(out_dir / "runs" / f"{row.key}-s{seed}-{sig}.json")
            if "base_signature" in job:
                job["init"] = next(j for j in jobs if j["signature"] == job["base_signature"])["checkpoint"]
            jobs.append(job)
    return jobs


def cached(job: dict[str, Any]) -> dict[str, Any] | None:
    p = Path(job["record"])
    if not p.is_file() or not Path(job["checkpoint"]).is_file():
        return None
    try:
        rec = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if rec.get("signature") != job["signature"]:
        return None
    return rec


def run_jobs(jobs: list[dict[str, Any]], n_jobs: int, threads: int, progress: bool) -> list[dict[str, Any]]:
    """Run jobs (prompt-on-top jobs after their base), ``n_jobs`` processes in parallel."""
    records: dict[str, dict[str, Any]] = {}
    pending = []
    for j in jobs:
        rec = cached(j)
        if rec is not None:
            records[j["signature"]] = rec
        else:
            pending.append(j)
    bar = tqdm(total=len(jobs), initial=len(records), desc="evaluate", disable=progress_bars.disabled(progress))

    def ready(j: dict[str, Any]) -> bool:
        return "base_signature" not in j or j["base_signature"] in records

    if n_jobs <= 1:
        import torch

        torch.set_num_threads(threads)
        while pending:
            j = next(x for x in pending if ready(x))
            pending.remove(j)
            bar.set_postfix_str(f"{j['row']} s{j['seed']}")
            rec = run_job(j)
            records[j["signature"]] = rec
            bar.update(1)
            bar.write(_line(rec))
    else:
        ctx = multiprocessing.get_context("spawn")
        with cf.ProcessPoolExecutor(n_jobs, mp_context=ctx, initializer=_worker_init, initargs=(threads,)) as pool:
            running: dict[cf.Future, dict[str, Any]] = {}
            while pending or running:
                while len(running) < n_jobs:
                    nxt = next((x for x in pending if ready(x)), None)
                    if nxt is None:
                        break
                    pending.remove(nxt)
                    running[pool.submit(run_job, nxt)] = nxt
                if not running:
                    raise QgnnError("evaluate: jobs wait on base runs that never ran")
                done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    j = running.pop(fut)
                    rec = fut.result()
                    records[j["signature"]] = rec
                    bar.update(1)
                    bar.write(_line(rec))
    bar.close()
    return [records[j["signature"]] for j in jobs]


def _line(rec: dict[str, Any]) -> str:
    if "test_mae" in rec:
        dep = f" deployed MAE {rec['deployed_acc']:.4f}" if rec.get("deployed_acc") is not None else ""
        return (f"  {rec['row']:<24} seed {rec['seed']}: test MAE {rec['test_mae']:.4f} (val "
                f"{rec['val_mae']:.4f}, epoch {rec['best_epoch']}){dep}  {rec['seconds']:.0f}s")
    dep = f" deployed {100 * rec['deployed_acc']:.1f}" if rec.get("deployed_acc") is not None else ""
    return (f"  {rec['row']:<24} seed {rec['seed']}: test {100 * rec['test_acc']:.1f} (val "
            f"{100 * rec['val_acc']:.1f}, epoch {rec['best_epoch']}){dep}  {rec['seconds']:.0f}s")


# ------------------------------------------------------------------------------------------------ table
def _stats(values: list[float], scale: float = 100.0) -> tuple[float, float]:
    vals = [scale * v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return math.nan, math.nan
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def summarise(rows: list[Row], records: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean +/- std per row: accuracy in %, or MAE as is for regression runs (records with ``test_mae``)."""
    mae = any("test_mae" in r for r in records)
    key, scale = ("test_mae", 1.0) if mae else ("test_acc", 100.0)
    by_row: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_row.setdefault(r["row"], []).append(r)
    out = []
    for row in rows:
        recs = sorted(by_row.get(row.key, []), key=lambda r: r["seed"])
        mean, std = _stats([r[key] for r in recs], scale)
        dmean, dstd = _stats([r.get("deployed_acc") for r in recs], scale)
        entry = {"row": row.key, "framework": row.framework, "bits": row.bits, "prompt": row.prompt,
                 "test_mean": mean, "test_std": std, "deployed_mean": dmean, "deployed_std": dstd,
                 "seeds": [r["seed"] for r in recs], key: [r[key] for r in recs]}
        bits = [r["a2q_avg_bits"] for r in recs if r.get("a2q_avg_bits") is not None
                and not math.isnan(r["a2q_avg_bits"])]
        if bits:
            entry["avg_node_bits"] = statistics.fmean(bits)
        lb = [r["layer_bits"] for r in recs if r.get("layer_bits")]
        if lb and row.framework == "mixq":
            entry["mixq_bits"] = lb
        out.append(entry)
    return {"rows": out, "metric": "mae" if mae else "accuracy", "metrics": evaluation_metrics(out)}


def evaluation_metrics(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The table's headline figures (no thresholds): FP32 mean, each INT8 row's gap to it, each framework's
    best INT4 prompt gain (points; ``None`` where a row is missing)."""
    def num(v: Any) -> float | None:
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)

    e = {x["row"]: x for x in entries}
    fp = num(e.get("fp32", {}).get("test_mean"))
    int8 = {x["framework"]: num(x["test_mean"]) for x in entries if x["bits"] == 8 and x["prompt"] == "none"}
    gains: dict[str, float | None] = {}
    for fw in sorted({x["framework"] for x in entries if x["bits"] == 4}):
        base = num(e.get(f"{fw}-int4-none", {}).get("test_mean"))
        best = max((m for k in (f"{fw}-int4-lorap", f"{fw}-int4-gpf-lorap")
                    if k in e and (m := num(e[k]["test_mean"])) is not None), default=None)
        gains[fw] = best - base if best is not None and base is not None else None
    return {"fp32_test_mean": fp,
            "int8_minus_fp32": {fw: (v - fp if v is not None and fp is not None else None)
                                for fw, v in sorted(int8.items())},
            "int4_best_prompt_gain": gains}


def _fmt(mean: float, std: float) -> str:
    return "—" if math.isnan(mean) else f"{mean:.2f} ± {std:.2f}"


PROMPT_NAMES = {"none": "—", "lorap": "LoRAP", "gpf-lorap": "GPF-LoRAP"}
FW_NAMES = {"fp32": "FP32", "qat": "QAT", "dq": "Degree-Quant", "a2q": "A2Q", "mixq": "MixQ"}


def render_markdown(summary: dict[str, Any], command: str, meta: dict[str, Any]) -> str:
    mae = summary.get("metric") == "mae"
    what, test_col, dep_col = (("test MAE (lower is better)", "Test MAE", "Deployed MAE") if mae else
                               ("test accuracy %", "Test acc (%)", "Deployed (%)"))
    lines = [f"{meta['dataset']} ({meta['arch'].upper()}), {what} over seeds {meta['seeds']}, "
             f"mean ± std (model selected on validation).", "",
             f"Command: `{command}`", "",
             f"| Framework | Bits | Prompt | {test_col} | Δ vs no prompt | {dep_col} | Bits chosen |",
             "|---|---|---|---|---|---|---|"]
    fmt = _fmt_mae if mae else _fmt
    base = {x["row"]: x["test_mean"] for x in summary["rows"] if x["prompt"] == "none"}
    for x in summary["rows"]:
        delta = ""
        if x["prompt"] != "none":
            b = base.get(f"{x['framework']}-int{x['bits']}-none", math.nan)
            delta = "" if math.isnan(b) or math.isnan(x["test_mean"]) else \
                (f"{x['test_mean'] - b:+.4f}" if mae else f"{x['test_mean'] - b:+.2f}")
        chosen = ""
        if "avg_node_bits" in x:
            chosen = f"avg node bits {x['avg_node_bits']:.2f}"
        elif "mixq_bits" in x:
            chosen = "; ".join(sorted({_bits_str(lb) for lb in x["mixq_bits"]}))
        lines.append(f"| {FW_NAMES.get(x['framework'], x['framework'])} | "
                     f"{'FP32' if x['bits'] == 32 else 'INT' + str(x['bits'])} | {PROMPT_NAMES[x['prompt']]} | "
                     f"{fmt(x['test_mean'], x['test_std'])} | {delta} | "
                     f"{fmt(x['deployed_mean'], x['deployed_std'])} | {chosen} |")
    targets = summary.get("targets") or {}
    if targets:
        lines += ["", "Targets: " + "; ".join(
            f"{v.get('label') or k}: " + ("—" if v.get("met") is None else ("yes" if v["met"] else "NO")) +
            (" (" + ", ".join(f"{fw} {'—' if m is None else ('yes' if m else 'NO')}"
                              for fw, m in v["per_key"].items()) + ")" if v.get("per_key") else "")
            for k, v in targets.items()) + "."]
    return "\n".join(lines) + "\n"


def _fmt_mae(mean: float, std: float) -> str:
    return "—" if math.isnan(mean) else f"{mean:.4f} ± {std:.4f}"


def _bits_str(layer_bits: list[dict[str, int]]) -> str:
    return " / ".join(",".join(f"{k[0]}{v}" for k, v in sorted(lb.items())) for lb in layer_bits)




# ------------------------------------------------------------------------------------------------ API
def run_evaluation(config: EvaluationConfig, deployed_fn: DeployedFn | None = None) -> EvaluationResult:
    """Train (or reuse from ``out_dir/runs``) every (row, seed), fill the deployed column, summarise, render.

    Writes the run cache (``runs/``, ``checkpoints/``) under ``config.out_dir``; the caller writes the
    report files (``qgnn evaluate`` writes ``evaluation.json`` and ``evaluation.md``).
    """
    from qgnn_deploy.models.net import ARCHS
    from qgnn_deploy.targets import evaluate_targets, load_targets

    if config.arch not in ARCHS:
        raise QgnnError(f"unknown arch {config.arch!r}; choose from {', '.join(ARCHS)}")
    for fw in config.frameworks:
        if fw not in FRAMEWORKS:
            raise QgnnError(f"unknown framework {fw!r}; choose from {', '.join(FRAMEWORKS)}")
    for p in config.prompts:
        if p not in PROMPTS:
            raise QgnnError(f"unknown prompt variant {p!r}; choose from {', '.join(PROMPTS)}")
    targets = load_targets(config.targets) if config.targets is not None else None
    ds = _dataset(config.dataset, config.data_root, config.split_seed)  # fail fast (and cache) before forking
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    threads = config.threads or max(1, 2 // max(1, config.jobs))
    rows = plan_rows(list(config.frameworks), list(config.bits), list(config.prompts))
    jobs = make_jobs(rows, config.seeds, config, out_dir)
    records = run_jobs(jobs, config.jobs, threads, progress=config.progress)
    if config.deployed:
        fill_deployed(records, jobs, ds, progress=config.progress, fn=deployed_fn)
    summary = summarise(rows, records)
    if targets:
        summary["targets"] = evaluate_targets(targets, summary)
    meta = {"arch": config.arch, "seeds": list(config.seeds), "dataset": config.dataset}
    md = render_markdown(summary, config.command, meta)
    return EvaluationResult(config, summary, records, md, meta)


def config_dict(config: EvaluationConfig) -> dict[str, Any]:
    """The config as JSON-ready values."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()}
