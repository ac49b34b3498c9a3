"""The evaluation runner: FP32 and every QAT framework at each bit-width, +/- prompts, over seeds, on any dataset.

Python API::

    from qgnn_deploy.experiments.evaluation import EvaluationConfig, run_evaluation
    result = run_evaluation(EvaluationConfig(dataset="cora", frameworks=("qat", "dq"), bits=(8,), seeds=(0,)))
    print(result.markdown)            # the table; result.summary / result.records are the data

``qgnn evaluate`` parses its flags into an :class:`EvaluationConfig`, calls :func:`run_evaluation` and
writes ``evaluation.json`` / ``evaluation.md``.  Parts: :mod:`.config` (the config, rows), :mod:`.jobs`
(training jobs, the run cache, parallel processes, the deployed column), :mod:`.table` (summary, metrics,
markdown).

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

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from qgnn_deploy.errors import QgnnError
from qgnn_deploy.experiments.config import FRAMEWORKS, PROMPTS, DeployedFn, EvaluationConfig, Row, plan_rows
from qgnn_deploy.experiments.jobs import cached_dataset, fill_deployed, make_jobs, run_jobs, write_json
from qgnn_deploy.experiments.table import evaluation_metrics, render_markdown, summarise

__all__ = ["FRAMEWORKS", "PROMPTS", "EvaluationConfig", "EvaluationResult", "Row", "config_dict", "evaluation_metrics",
           "plan_rows", "render_markdown", "run_evaluation", "summarise", "write_json"]


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
    ds = cached_dataset(config.dataset, config.data_root, config.split_seed)  # fail fast (and cache) before forking
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
