"""Latency and memory against graph size on synthetic graphs, and the growth exponents."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from qgnn_deploy.perf.config import SERIES_KEYS, SERIES_ORT_BASELINES, SERIES_TARGET_FROM, SuiteConfig
from qgnn_deploy.perf.graphs import random_graph, save_graph
from qgnn_deploy.perf.pooling import Job, calls_per_process, pool, round_robin
from qgnn_deploy.perf.runs import export, log, ours_job, train_model, worker_job


def series_stage(cfg: SuiteConfig, res: dict[str, Any], main_art: dict[str, Any]) -> None:
    """Latency and memory against graph size for PyG FP32 and our backends."""
    from qgnn_deploy.fold import fold_model
    from qgnn_deploy.perf.baselines import twin_weights
    from qgnn_deploy.train.checkpoint import load_checkpoint

    work = cfg.work_dir / "series"
    work.mkdir(parents=True, exist_ok=True)
    if cfg.quick:
        graph, art = main_art["graph"], main_art["artifact"]
        features = int(main_art["feeds"]["x"].shape[1])
        weights_npz = cfg.work_dir / "twin_weights.npz"
        model_path = res["main"]["model"]
    else:
        features = cfg.series_features
        model_path = train_model(cfg, "synthetic", 8, cfg.work_dir / f"synthetic{features}_int8_lorap.pt", 50, features)
        model, _ = load_checkpoint(model_path)
        graph = fold_model(model)
        weights_npz = work / "twin_weights.npz"
        np.savez(weights_npz, **twin_weights(model))
        art = work / "artifact"
        t0 = time.perf_counter()
        export(graph, cfg.tvm_target if cfg.tvm else "onnx", art, random_graph(cfg.sizes[0], features, cfg.degree))
        log(f"series artifact ({time.perf_counter() - t0:.0f} s)")
    from qgnn_deploy.ir.passes import prequantized_copy
    from qgnn_deploy.perf.baselines import export_twin_onnx

    # the FP32 twin through torch.onnx.export, dynamic N/E: the ORT route a user has without this project
    with np.load(weights_npz) as z:
        fp32_onnx = export_twin_onnx({k: z[k] for k in z.files}, work / "pyg_fp32.onnx",
                                     random_graph(64, features, 4.0))
    graph_u8 = prequantized_copy(graph)
    art_u8 = work / "artifact_uint8_input"
    if cfg.tvm:
        export(graph_u8, cfg.tvm_target, art_u8, random_graph(cfg.sizes[0], features, cfg.degree))
    points = []
    for n in cfg.sizes:
        feeds = random_graph(n, features, cfg.degree, seed=1)
        path = save_graph(feeds, work / f"graph_{n}.npz")
        e = int(feeds["edge_index"].shape[1])
        # PyG cached also gets the sorted edges our sorted rows get (written while the graph is in memory)
        sorted_path = None if cfg.quick else _sorted_copy(feeds, work / f"graph_{n}_sorted.npz")
        del feeds
        reps = max(5, min(cfg.repeats, int(2e7 // max(e, 1))))  # >= 5: a median of 3 is one sample
        warm = max(1, min(cfg.warmup, 3 if e > 1e6 else cfg.warmup))
        point: dict[str, Any] = {"num_nodes": n, "num_edges": e, "repeats": reps, "warmup": warm}
        prev = points[-1] if points else None
        plans = {k: row_plan(prev, k, e, reps, cfg.repeats, cfg.processes if pooled(k, n) else 1, warm)
                 for k in SERIES_KEYS}
        log(f"series N={n} E={e} ({reps} repeats; rows faster at the previous size get more; "
            f"rows a target reads in {cfg.processes} processes, round-robin)")
        jobs: dict[str, Job] = {}
        for key, graph_file in ((("pyg_eager", path),) if cfg.quick else
                                (("pyg_eager", path), ("pyg_cached", path), ("pyg_cached_sorted", sorted_path))):
            jobs[key] = worker_job({"kind": "pyg", "variant": key.split("_")[1], "graph": str(graph_file),
                                    "weights": str(weights_npz), "threads": cfg.threads,
                                    "warmup": plans[key]["warmup"], "repeats": plans[key]["calls_per_process"]},
                                   work, f"{key}_{n}", cfg.timeout, save_output=False)
        jobs["ort_fp32"] = worker_job({"kind": "ort", "model": str(fp32_onnx), "graph": str(path),
                                       "threads": cfg.threads, "warmup": plans["ort_fp32"]["warmup"],
                                       "repeats": plans["ort_fp32"]["calls_per_process"]},
                                      work, f"ort_fp32_{n}", cfg.timeout, save_output=False)
        ours = [("ours_ort", art, "onnx", False),
                # the documented input contract of the CSR branch: destinations ascending (checked inside the model)
                ("ours_ort_sorted", art, "onnx", True)]
        if cfg.tvm:
            # float x in the file: the bench script quantizes it once, outside the timed calls (reported); and
            # with edge_index sorted by destination once (exact; sequential scatter on big graphs)
            ours += [("ours_tvm", art, "tvm", False), ("ours_tvm_u8", art_u8, "tvm", False),
                     ("ours_tvm_u8_sorted", art_u8, "tvm", True)]
        for key, artifact, backend, sort in ours:
            jobs[key] = ours_job(artifact, backend, cfg, plans[key]["calls_per_process"], graph=path,
                                 warmup=plans[key]["warmup"], sort_edges=sort)
        runs = round_robin(jobs, cfg.processes, log, counts={k: plans[k]["processes"] for k in jobs})
        point.update({k: pool(r) for k, r in runs.items()})  # statistics only; peak RSS: the largest process
        point["plans"] = {k: plans[k] for k in jobs}  # processes, calls per process and warm-up of each row
        points.append(point)
        path.unlink(missing_ok=True)
        if sorted_path is not None:
            sorted_path.unlink(missing_ok=True)
    res["series"] = {"features": features, "degree": cfg.degree, "model": str(model_path), "points": points,
                     "growth_exponent_vs_edges": growth_exponents(points),
                     "segment_exponents_vs_edges": segment_exponents(points)}
    # for the roofline; removed before JSON
    res["series"]["_graphs"] = {"ours_ort": graph, "ours_ort_sorted": graph, "ours_tvm": graph, "ours_tvm_u8": graph_u8,
                                "ours_tvm_u8_sorted": graph_u8}


ROW_BUDGET_S = 3.0  # timed seconds per series row, estimated from the row's previous size
SLOW_CALL_S = 0.5  # a row whose call is estimated above this (10^6 nodes but TVM): 1 warm-up, few calls a process
SLOW_CALLS_PER_PROCESS = 3  # pooled over the processes: 3 processes give a median of 9 calls


def pooled(key: str, num_nodes: int) -> bool:
    """Whether series row ``key`` at ``num_nodes`` is measured in several processes: the rows a suite target reads,
    i.e. ours (the growth exponent fits our fastest row over every size) and, from :data:`SERIES_TARGET_FROM`
    nodes, the rows the series target compares ours with (:data:`SERIES_ORT_BASELINES`).  Why not all: each
    process costs seconds of start-up and graph load (PyG eager, or ORT FP32 at 10^4 nodes, only inform)."""
    return key.startswith("ours") or (key in SERIES_ORT_BASELINES and num_nodes >= SERIES_TARGET_FROM)


def call_estimate_s(prev: dict[str, Any] | None, key: str, edges: int) -> float | None:
    """Seconds per call of series row ``key`` at ``edges``: its median at the previous size ``prev``, scaled
    linearly in edges (None: not measured there)."""
    ms = ((prev or {}).get(key) or {}).get("latency_ms", {}).get("median")
    return ms / 1e3 * edges / prev["num_edges"] if ms and prev else None


def row_repeats(prev: dict[str, Any] | None, key: str, edges: int, base: int, most: int) -> int:
    """Timed calls for series row ``key`` at ``edges``: ``base`` (the size's count, from its edges), or, when the
    row was measured at the previous size ``prev``, as many calls as fit :data:`ROW_BUDGET_S` at that latency
    scaled linearly to ``edges``, between 5 and ``most``.  Why: one count per size gives a 0.1 s TVM call the
    5 calls a 10 s ORT FP32 call gets, and a median of 5 calls from one process moves with the machine's noise."""
    est_s = call_estimate_s(prev, key, edges)
    if est_s is None:
        return base
    return max(5, min(most, int(ROW_BUDGET_S / max(est_s, 1e-9))))


def row_plan(prev: dict[str, Any] | None, key: str, edges: int, base: int, most: int, processes: int,
             warmup: int) -> dict[str, int]:
    """Processes, timed calls per process and warm-up of series row ``key`` at ``edges``, in ``processes``
    processes (1: not pooled, see :func:`pooled`).

    Pooled as the Cora rows (a process's median moves ~30-50% with the machine's windows, and one slow window
    flipped the series target), the row's :func:`row_repeats` calls split between its processes
    (:func:`.pooling.calls_per_process`).  A pooled row estimated above :data:`SLOW_CALL_S` a call (ORT FP32 takes
    ~9 s at 10^6 nodes) gets :data:`SLOW_CALLS_PER_PROCESS` calls per process instead, and any such row one warm-up.
    """
    est_s = call_estimate_s(prev, key, edges)
    calls = row_repeats(prev, key, edges, base, most)
    slow = est_s is not None and est_s > SLOW_CALL_S
    per = SLOW_CALLS_PER_PROCESS if slow and processes > 1 else calls_per_process(calls, processes)
    return {"processes": processes, "calls_per_process": per, "warmup": 1 if slow else warmup}


def _sorted_copy(feeds: dict[str, np.ndarray], path: Path) -> Path:
    """``feeds`` with ``edge_index`` sorted by destination, saved to ``path`` (what ``qgnn_bench.py --sort-edges``
    feeds our sorted rows)."""
    from qgnn_deploy.backends.onnx.segment import sort_edges_by_destination

    return save_graph({**feeds, "edge_index": sort_edges_by_destination(feeds["edge_index"])}, path)


def growth_exponents(points: list[dict[str, Any]]) -> dict[str, float | None]:
    """Least-squares slope of log(median latency) against log(edges), per backend."""
    out: dict[str, float | None] = {}
    for key in SERIES_KEYS:
        xs, ys = [], []
        for p in points:
            m = p.get(key, {}).get("latency_ms", {}).get("median")
            if m:
                xs.append(math.log(p["num_edges"]))
                ys.append(math.log(m))
        out[key] = float(np.polyfit(xs, ys, 1)[0]) if len(xs) >= 2 and len(set(xs)) >= 2 else None
    return out


def segment_exponents(points: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Slope between consecutive sizes, per backend: shows where per-edge cost jumps (cache -> DRAM)."""
    out: dict[str, list[float]] = {}
    for key in SERIES_KEYS:
        pts = [(p["num_edges"], p[key]["latency_ms"]["median"]) for p in points
               if p.get(key, {}).get("latency_ms", {}).get("median")]
        out[key] = [math.log(m1 / m0) / math.log(e1 / e0) for (e0, m0), (e1, m1) in zip(pts, pts[1:]) if e1 != e0]
    return out


