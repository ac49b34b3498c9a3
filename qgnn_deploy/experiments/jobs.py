"""Training jobs: one per (row, seed), cached as JSON by their settings, run in parallel processes."""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import math
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from qgnn_deploy import progress as progress_bars
from qgnn_deploy.errors import QgnnError
from qgnn_deploy.experiments.config import PROMPT_PARAMS, DeployedFn, EvaluationConfig, Row

_DATASETS: dict[tuple[str, str | None, int], Any] = {}


def cached_dataset(name: str, root: str | None, split_seed: int = 0) -> Any:
    """The dataset, loaded once per process (workers train several jobs on it)."""
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
    ds = cached_dataset(job["dataset"], job["data_root"], job.get("split_seed", 0))
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


