"""The performance suite: one run, one model, one input graph, every route side by side.

Python API: build a :class:`SuiteConfig` and call :func:`run_suite` (``qgnn bench-suite`` does only that).
Stages, each its own module:

1. :mod:`.cora` - model (``model`` or GCN INT8 QAT + LoRAP trained), artifacts (fold + export, both input
   contracts), the DIY routes (PyG twin, ``torch.onnx.export``, ORT ``quantize_static``) and the side-by-side
   table, each backend in its own process (:mod:`.worker`; ours through ``runtimes/qgnn_bench.py``);
   :mod:`.gemm_probe` (our GEMM vs ORT ``MatMulInteger``), :mod:`.determinism`, the INT4 size;
2. :mod:`.gat` - the GAT row pair: PyG ``GATConv`` FP32 vs our integer GAT (``gat=False`` skips it;
   ``gcn=False`` skips stage 1, the series and the roofline);
3. :mod:`.series` - size series on synthetic graphs (``sizes``) and the growth exponents;
4. :mod:`.roofline` - the largest graph against an int8 GEMM and a copy-bandwidth probe;
5. :mod:`.metrics` - headline ratios; :mod:`qgnn_deploy.targets` - thresholds from ``targets`` (a TOML
   file), only when given; :mod:`.report` - markdown and PNGs.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from qgnn_deploy.perf.config import SuiteConfig
from qgnn_deploy.perf.cora import cora_stage
from qgnn_deploy.perf.gat import gat_stage
from qgnn_deploy.perf.machine import machine, versions
from qgnn_deploy.perf.measure import load_average
from qgnn_deploy.perf.metrics import suite_metrics
from qgnn_deploy.perf.report import plot, render_markdown
from qgnn_deploy.perf.roofline import roofline_stage
from qgnn_deploy.perf.series import series_stage
from qgnn_deploy.targets import evaluate_targets, load_targets

__all__ = ["SuiteConfig", "run_suite", "clean_work_dir"]


def run_suite(cfg: SuiteConfig, stem: str = "bench_suite") -> dict[str, Any]:
    """Run every stage; writes ``<stem>.json``, ``<stem>.md`` and the PNGs into ``cfg.out_dir``.

    Returns the result dict (the JSON's content plus ``plots``).  With ``cfg.targets`` (a TOML file,
    see :mod:`qgnn_deploy.targets`) the result has a ``targets`` entry and the report a targets table.
    """
    targets = load_targets(cfg.targets) if cfg.targets is not None else None  # a bad file fails before any work
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    cfg.work_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    res: dict[str, Any] = {"command": cfg.command, "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
                           "load_average": {"start": load_average()}, "machine": machine(cfg.tvm_target),
                           "versions": versions(),
                           "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}}
    main_art = cora_stage(cfg, res) if cfg.gcn else None
    if cfg.gat:
        gat_stage(cfg, res)
    if main_art is not None:
        if cfg.sizes:
            series_stage(cfg, res, main_art)
        roofline_stage(cfg, res)
    res["load_average"]["end"] = load_average()
    res["metrics"] = suite_metrics(res)
    res["targets"] = evaluate_targets(targets, res) if targets else {}
    res["seconds"] = round(time.perf_counter() - t0, 1)
    (cfg.out_dir / f"{stem}.json").write_text(json.dumps(res, indent=1, default=_json_default))
    (cfg.out_dir / f"{stem}.md").write_text(render_markdown(res))
    res["plots"] = [str(p) for p in plot(res, cfg.out_dir, stem)]
    return res


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer, np.floating)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    return str(o)


def clean_work_dir(path: Path) -> None:
    """Remove a run's work directory (artifacts, graphs, trained models)."""
    shutil.rmtree(path, ignore_errors=True)
