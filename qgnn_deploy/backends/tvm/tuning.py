"""Meta-schedule tuning on the sample graph's static shapes, with a reusable JSON database.

Only the kernels TVM lowers itself are tuned (fused elementwise/reduction
chains above a FLOP threshold); our hand-written GEMM/aggregation kernels are
already scheduled and are skipped.  Tasks already in the database are not
tuned again, so a second export of the same model and graph shape only
compiles.  Cross targets are tuned on the host: the notes (Q3) verified that
x86 schedules apply to aarch64 builds and stay bit-exact; real ARM tuning needs
an RPC runner on the board.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from qgnn_deploy.errors import QgnnError

from .targets import TargetPreset, host_preset

MIN_FLOPS = 1e6  # on Cora only the input quantisation (N x F) qualifies; the rest is tiny
TRIALS_PER_ITER = 16
RUN_TIMEOUT_S = 60.0
DONE_FILE = "qgnn_tuned_tasks.json"


def tuning_target(preset: TargetPreset) -> Any:
    """The target schedules are tuned and looked up under (the host for cross builds)."""
    return (host_preset() if preset.cross_compile else preset).tvm()


def open_database(db_dir: Path) -> Any:
    from tvm.s_tir import meta_schedule as ms

    db_dir.mkdir(parents=True, exist_ok=True)
    return ms.database.JSONDatabase(work_dir=str(db_dir))


def tune(module: Any, preset: TargetPreset, db_dir: Path, trials: int) -> tuple[Any, dict[str, Any]]:
    """Tune the heavy untuned tasks of ``module`` (the legalized Relax module the build will apply the database
    to: ``compile.legalized_module``) into ``db_dir``, ``trials`` per task at most; returns (database, info)."""
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.analysis import estimate_tir_flops

    t0 = time.perf_counter()
    db_dir = Path(db_dir)
    if db_dir.exists() and not db_dir.is_dir():
        raise QgnnError(f"tuning database {db_dir} is not a directory")
    target = tuning_target(preset)
    mod = module
    tasks = ms.relax_integration.extract_tasks(mod, target)
    heavy = [t for t in tasks if _tunable(t.dispatched[0], estimate_tir_flops)]
    db = open_database(db_dir)
    done = _done_hashes(db_dir)
    todo = [t for t in heavy if _task_hash(t.dispatched[0], target) not in done
            and not _has_record(db, t.dispatched[0], target)]
    info: dict[str, Any] = {"database": str(db_dir), "tasks": [t.task_name for t in heavy],
                            "tuned_now": [t.task_name for t in todo], "trials_per_task": trials,
                            "tuning_target": dict((host_preset() if preset.cross_compile else preset).tvm_target)}
    if todo and trials > 0:
        logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)
        work = db_dir / "logs"
        ctxs, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(todo, str(work))
        per_iter = min(TRIALS_PER_ITER, trials)
        db = ms.tune.tune_tasks(tasks=ctxs, task_weights=weights, work_dir=str(db_dir),
                                max_trials_global=trials * len(todo), max_trials_per_task=trials,
                                num_trials_per_iter=per_iter, database=db,
                                builder=_in_process_builder(),
                                runner=ms.runner.LocalRunner(timeout_sec=RUN_TIMEOUT_S))
        # Remember what was tuned even when every trial failed (e.g. builder timeouts on a loaded
        # machine): such tasks keep the default schedule, and a re-export must not spend the time again.
        _save_done(db_dir, done | {_task_hash(t.dispatched[0], target) for t in todo})
    info["seconds"] = round(time.perf_counter() - t0, 1)
    return db, info


def _in_process_builder() -> Any:
    """A meta-schedule builder that compiles candidates in this process.

    TVM's LocalBuilder starts fresh worker processes for every batch, and each imports
    ``tvm.s_tir.tensor_intrin`` (parses every bundled TVMScript intrinsic): measured 111 s per import
    on a busy 2-core machine, so every batch timed out.  Building here pays that import once.
    """
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
    from tvm.s_tir.meta_schedule.builder.local_builder import default_build, default_export

    @derived_object
    class InProcessBuilder(PyBuilder):
        def build(self, build_inputs: list[Any]) -> list[Any]:
            out = []
            for bi in build_inputs:
                try:
                    out.append(BuilderResult(default_export(default_build(bi.mod, bi.target, None)), None))
                except Exception as exc:  # noqa: BLE001 - a failed candidate is a result, not an error
                    out.append(BuilderResult(None, f"{type(exc).__name__}: {exc}"))
            return out

    return InProcessBuilder()


def _task_hash(mod: Any, target: Any) -> str:
    import hashlib

    import tvm_ffi

    return f"{tvm_ffi.structural_hash(mod):x}-{hashlib.sha256(str(target).encode()).hexdigest()[:12]}"


def _done_hashes(db_dir: Path) -> set[str]:
    f = db_dir / DONE_FILE
    try:
        return set(json.loads(f.read_text())) if f.is_file() else set()
    except (OSError, ValueError):
        return set()


def _save_done(db_dir: Path, hashes: set[str]) -> None:
    tmp = db_dir / (DONE_FILE + ".tmp")
    tmp.write_text(json.dumps(sorted(hashes)))
    tmp.replace(db_dir / DONE_FILE)


def _tunable(mod: Any, flops: Any) -> bool:
    """Unscheduled (not one of our kernels) and heavy enough to be worth trials."""
    funcs = [f for _, f in mod.functions_items()]
    if any(f.attrs is not None and f.attrs.get("tirx.is_scheduled", False) for f in funcs):
        return False
    try:
        return flops(mod) >= MIN_FLOPS
    except Exception:  # noqa: BLE001 - the estimator rejects some vector/opaque code: skip those
        return False


def _has_record(db: Any, mod: Any, target: Any) -> bool:
    try:
        return db.has_workload(mod) and db.query_tuning_record(mod, target, "main") is not None
    except Exception:  # noqa: BLE001 - a corrupt/foreign record means "tune again"
        return False
