"""Measuring one backend in its own process, and the models and artifacts the stages share."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from qgnn_deploy.errors import QgnnError
from qgnn_deploy.perf.config import SuiteConfig
from qgnn_deploy.perf.measure import SAMPLES, THREAD_VARS, load_average
from qgnn_deploy.perf.pooling import Job, process_name


def _env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    for var in THREAD_VARS:
        env[var] = str(threads)
    return env


def run_worker(spec: dict[str, Any], work: Path, name: str, timeout: float) -> dict[str, Any]:
    """Run one :mod:`.worker` spec in a fresh process; its result dict (``error`` on failure; ``output``: the
    spec's output path, so :func:`.pooling.pool` can compare processes)."""
    work.mkdir(parents=True, exist_ok=True)
    spec = dict(spec, result=str(work / f"{name}.result.json"))
    spec_path = work / f"{name}.spec.json"
    spec_path.write_text(json.dumps(spec))
    Path(spec["result"]).unlink(missing_ok=True)
    load = load_average()
    try:
        proc = subprocess.run([sys.executable, "-m", "qgnn_deploy.perf.worker", str(spec_path)], capture_output=True,
                              text=True, timeout=timeout, env=_env(int(spec["threads"])))
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    res_path = Path(spec["result"])
    if not res_path.is_file():
        tail = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        return {"error": f"worker died: {tail[:300]}"}
    out = {**json.loads(res_path.read_text()), "load_average_before": load}
    return {**out, "output": spec["output"]} if spec.get("output") and "error" not in out else out


def run_ours(artifact: Path, backend: str, cfg: SuiteConfig, graph: Path | None, repeats: int,
             warmup: int, sort_edges: bool = False) -> dict[str, Any]:
    """Our artifact through the device-side benchmark script (its own process)."""
    from qgnn_deploy.arm64 import run_bench

    extra = (["--input", str(graph)] if graph is not None else []) + (["--sort-edges"] if sort_edges else [])
    load = load_average()
    try:
        rep = run_bench(artifact, backend=backend, threads=cfg.threads, warmup=warmup, repeats=repeats,
                        extra_args=extra, timeout=cfg.timeout)
    except QgnnError as exc:
        return {"error": str(exc)}
    return {"latency_ms": rep["latency_ms"], SAMPLES: rep[SAMPLES], "peak_rss_bytes": rep["memory"]["peak_rss_bytes"],
            "rss_before_load_bytes": rep["memory"].get("rss_before_load_bytes"), "threads": rep["threads"],
            "reference_match": rep["reference"].get("match"), "runtime": rep.get("runtime_version"),
            "timing_label": rep.get("timing_label"), "buffer_bytes_manifest": rep.get("buffer_bytes"),
            "load_average_before": load}


def worker_job(spec: dict[str, Any], work: Path, key: str, timeout: float, save_output: bool = True) -> Job:
    """Row ``key`` as a :mod:`.worker` spec per process (:mod:`.pooling`): output ``work/<name>.out.npy`` (unless
    not ``save_output``), spec and result under ``work/runs``; ``<name>`` is the row's name for process 1 (as a
    single run)."""
    def job(i: int) -> dict[str, Any]:
        out = {"output": str(work / f"{process_name(key, i)}.out.npy")} if save_output else {}
        return run_worker({**spec, **out}, work / "runs", process_name(key, i), timeout)
    return job


def ours_job(artifact: Path, backend: str, cfg: SuiteConfig, repeats: int, graph: Path | None = None,
             warmup: int | None = None, sort_edges: bool = False) -> Job:
    """Our artifact's row, one :func:`run_ours` per process (:mod:`.pooling`): on its bundled sample, or on
    ``graph`` (edges sorted by destination first with ``sort_edges``); ``warmup`` defaults to ``cfg.warmup``."""
    warm = cfg.warmup if warmup is None else warmup
    return lambda i: run_ours(artifact, backend, cfg, graph, repeats, warm, sort_edges)


# ------------------------------------------------------------------------------------------ models
def train_model(cfg: SuiteConfig, dataset: str, bits: int, path: Path, epochs: int,
                features: int | None = None) -> Path:
    """GCN QAT + LoRAP at ``bits`` via the project's trainer (reused if ``path`` exists)."""
    if path.is_file():
        return path
    import torch

    from qgnn_deploy.data.datasets import make_synthetic_nodes
    from qgnn_deploy.data.specs import load_dataset
    from qgnn_deploy.models.net import ModelConfig, default_bits
    from qgnn_deploy.train.checkpoint import save_checkpoint
    from qgnn_deploy.train.trainer import TrainSettings, train

    torch.set_num_threads(cfg.threads)
    if features is not None:
        ds = make_synthetic_nodes(num_nodes=600, num_classes=7, num_features=features)
    else:
        ds = load_dataset(dataset, cfg.data_root)
    config = ModelConfig(arch="gcn", in_dim=ds.num_features, hidden=16, out_dim=ds.num_classes, num_layers=2,
                         dropout=0.5, task="node", framework="qat", bits=default_bits(bits),
                         lorap={"k": 8, "rank": 4, "variant": "softmax"})
    res = train(config, ds, TrainSettings(epochs=epochs, seed=0, progress=False))
    save_checkpoint(path, res.model, ds.describe(), res.metrics, extra={"seed": 0, "epochs": epochs,
                                                                          "by": "bench-suite"})
    return path


def accuracy(logits: np.ndarray, ds: Any) -> float:
    mask = ds.data.test_mask.numpy()
    return float((np.asarray(logits).argmax(-1)[mask] == ds.data.y.numpy()[mask]).mean())


def export(graph: Any, target: str, out: Path, feeds: dict[str, np.ndarray], tune: int = 0) -> dict[str, Any]:
    from qgnn_deploy.exporting import export_graph

    return export_graph(graph, target, out, sample_feeds=feeds, tune_trials=tune, force=True)


# ------------------------------------------------------------------------------------------ stages
def log(msg: str) -> None:
    print(f"[bench-suite {time.strftime('%H:%M:%S')}] {msg}", flush=True)


