"""The main-graph stage: model, artifacts and the side-by-side table (each backend in its own process)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from qgnn_deploy.perf.config import ARTIFACT_OF, FP32_ROWS, LABELS, OURS, PYG_VARIANTS, SuiteConfig
from qgnn_deploy.perf.determinism import determinism
from qgnn_deploy.perf.gemm_probe import gemm_stage
from qgnn_deploy.perf.graphs import save_graph
from qgnn_deploy.perf.pooling import Job, calls_per_process, measure_rows
from qgnn_deploy.perf.runs import accuracy, export, log, ours_job, train_model, worker_job


def cora_stage(cfg: SuiteConfig, res: dict[str, Any]) -> dict[str, Any]:
    """Model, artifacts and the side-by-side table on the main graph."""
    from qgnn_deploy.fold import fold_checkpoint
    from qgnn_deploy.ir.analysis import buffer_report, model_bytes
    from qgnn_deploy.perf.baselines import export_twin_onnx, fp32_parameter_bytes, quantize_qdq, twin_weights
    from qgnn_deploy.perf.liveness import onnx_buffer_bytes

    work = cfg.work_dir
    dataset = "synthetic" if cfg.quick else "cora"
    epochs = 10 if cfg.quick else cfg.epochs
    t0 = time.perf_counter()
    model_path = cfg.model or train_model(cfg, dataset, 8, work / f"{dataset}_int8_lorap.pt", epochs)
    log(f"model {model_path} ({time.perf_counter() - t0:.0f} s)")
    fold = fold_checkpoint(model_path, data_root=cfg.data_root)
    from qgnn_deploy.data.specs import load_dataset

    ds = load_dataset(fold.payload.get("dataset", {}).get("name", dataset), cfg.data_root)
    feeds = {k: np.ascontiguousarray(v) for k, v in fold.sample_feeds.items()}
    n, e = feeds["x"].shape[0], feeds["edge_index"].shape[1]
    graph_npz = save_graph(feeds, work / "main_graph.npz")
    main = {"dataset": ds.name, "num_nodes": n, "num_edges": e, "features": int(feeds["x"].shape[1]),
            "model": str(model_path), "model_config": fold.payload.get("config"),
            "checkpoint_metrics": fold.payload.get("metrics")}
    res["main"] = main

    target = cfg.tvm_target if cfg.tvm else "onnx"
    graph_u8, feeds_u8, main["input_quantize_once_ms"] = integer_input_twin(fold.graph, feeds)
    graphs = {"fp32_input": (fold.graph, feeds), "uint8_input": (graph_u8, feeds_u8)}
    arts: dict[str, Path] = {}
    manifests: dict[str, dict[str, Any]] = {}
    for kind, (g, f) in graphs.items():
        t0 = time.perf_counter()
        arts[kind] = work / f"artifact_int8_{kind}"
        manifests[kind] = export(g, target, arts[kind], f)
        log(f"artifact {arts[kind]} ({target}, {time.perf_counter() - t0:.0f} s)")
    art = arts["fp32_input"]
    if cfg.tvm and cfg.tune > 0:
        t0 = time.perf_counter()
        arts["tuned"] = work / "artifact_int8_tuned"
        manifests["tuned"] = export(graph_u8, target, arts["tuned"], feeds_u8, tune=cfg.tune)
        graphs["tuned"] = graphs["uint8_input"]
        log(f"tuned artifact ({cfg.tune} trials, {time.perf_counter() - t0:.0f} s)")

    weights = twin_weights(fold.model)
    np.savez(work / "twin_weights.npz", **weights)
    fp32_onnx = export_twin_onnx(weights, work / "pyg_fp32.onnx", feeds)
    qdq_onnx: Path | None = work / "pyg_qdq.onnx"
    qdq_error = None
    try:
        quantize_qdq(fp32_onnx, qdq_onnx, feeds)  # type: ignore[arg-type]
    except Exception as exc:  # noqa: BLE001 - reported in the table
        qdq_onnx, qdq_error = None, f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    import torch

    torch.save({k: torch.from_numpy(v) for k, v in weights.items()}, work / "pyg_state_dict.pt")

    # --------------------------------------------------------------- latency / memory per backend
    # every row in cfg.processes processes, round-robin across rows, pooled (perf.pooling)
    per = calls_per_process(cfg.repeats, cfg.processes)
    base = {"graph": str(graph_npz), "threads": cfg.threads, "warmup": cfg.warmup, "repeats": per}
    jobs: dict[str, Job | dict[str, Any]] = {}
    for key, variant, _ in PYG_VARIANTS:
        jobs[key] = ({"error": "skipped (--no-compile)"} if variant == "compile" and not cfg.torch_compile else
                     worker_job({**base, "kind": "pyg", "variant": variant, "weights": str(work / "twin_weights.npz")},
                                work, key, cfg.timeout))
    for key, path in (("ort_fp32", fp32_onnx), ("ort_qdq", qdq_onnx)):
        jobs[key] = ({"error": qdq_error} if path is None else
                     worker_job({**base, "kind": "ort", "model": str(path)}, work, key, cfg.timeout))
    for key in OURS:
        backend = "onnx" if "_ort" in key else "tvm"
        if ARTIFACT_OF[key] in arts and (backend == "onnx" or cfg.tvm):
            jobs[key] = ours_job(arts[ARTIFACT_OF[key]], backend, cfg, per)
    rows = measure_rows(jobs, cfg.processes, log)

    # --------------------------------------------------------------- accuracy, sizes, buffers
    ref = np.load(art / "reference_output.npz")
    ref_logits = ref[ref.files[0]]
    fp32_params = fp32_parameter_bytes(weights)
    fp32_live = onnx_buffer_bytes(fp32_onnx, feeds)
    ours_buf = {kind: buffer_report(g, f) for kind, (g, f) in graphs.items()}
    ours_live = {kind: onnx_buffer_bytes(arts[kind] / "model.onnx", f) for kind, (g, f) in graphs.items()}
    libs = {kind: next(iter(sorted(a.glob("model_*.so"))), None) for kind, a in arts.items()}
    for key, row in rows.items():
        if key in FP32_ROWS and key != "ort_fp32":
            row["model_bytes"] = fp32_params
            row["model_file_bytes"] = (work / "pyg_state_dict.pt").stat().st_size
            row["buffer_bytes"] = fp32_live["peak_bytes"]
            row["buffer_method"] = "ONNX liveness of the same model's export (identical op graph)"
        elif key == "ort_fp32":
            row["model_bytes"] = fp32_params
            row["model_file_bytes"] = fp32_onnx.stat().st_size
            row["buffer_bytes"] = fp32_live["peak_bytes"]
            row["buffer_method"] = fp32_live["method"]
        elif key == "ort_qdq" and qdq_onnx is not None:
            row["model_file_bytes"] = qdq_onnx.stat().st_size
            row["model_bytes"] = row["model_file_bytes"]
            live = onnx_buffer_bytes(qdq_onnx, feeds)
            row["buffer_bytes"] = live["peak_bytes"]
            row["buffer_method"] = live["method"]
        elif key in OURS:
            kind = ARTIFACT_OF[key]
            lib = libs.get(kind)
            row["artifact"] = str(arts[kind])
            row["input_contract"] = "uint8 x_q (quantized once per dataset)" if kind != "fp32_input" else "FP32 x"
            row["model_bytes"] = model_bytes(graphs[kind][0])
            row["model_file_bytes"] = ((arts[kind] / "model.onnx").stat().st_size if "_ort" in key else
                                       (lib.stat().st_size if lib else None))
            row["buffer_bytes"] = ours_buf[kind].peak_bytes
            row["buffer_peak_at"] = ours_buf[kind].peak_at
            row["buffer_method"] = "ir.analysis.buffer_report (IR liveness, inputs counted)"
            row["buffer_onnx_liveness_bytes"] = ours_live[kind]["peak_bytes"]
            if "_tvm" in key:
                row["buffer_tvm_planned_bytes"] = manifests[kind].get("tvm_buffer_bytes")
        out = work / f"{key}.out.npy"
        if key in OURS:
            row["test_acc"] = accuracy(ref_logits, ds) if row.get("reference_match") else None
        elif out.is_file():
            row["test_acc"] = accuracy(np.load(out), ds)
        row["label"] = LABELS[key]
    main["buffer_detail"] = {"fp32_onnx_liveness": fp32_live, "ours_onnx_liveness": ours_live, "ours_ir": {
        kind: {"peak_bytes": b.peak_bytes, "input_bytes": b.input_bytes, "peak_at": b.peak_at}
        for kind, b in ours_buf.items()}}
    eager_out, fp32_out = work / "pyg_eager.out.npy", work / "ort_fp32.out.npy"
    if eager_out.is_file() and fp32_out.is_file():
        main["ort_fp32_max_abs_diff_vs_pyg"] = float(np.abs(np.load(eager_out) - np.load(fp32_out)).max())
    main["test_acc_fake_quant"] = fold.report.get("parity", {}).get("test_acc_fake_quant")
    main["test_acc_integer_interpreter"] = accuracy(ref_logits, ds)
    eager = np.load(eager_out) if eager_out.is_file() else None
    for key in ("pyg_csr", "torch_sparse_csr"):
        out = work / f"{key}.out.npy"
        if eager is not None and out.is_file() and "error" not in rows.get(key, {}):
            rows[key]["max_abs_diff_vs_pyg_eager"] = float(np.abs(np.load(out) - eager).max())
    res["rows"] = rows
    res["ratios"] = ratios(rows)
    if cfg.tvm:
        res["gemm_vs_ort"] = gemm_stage(cfg, fold.graph, feeds_u8)
    u8_npz = save_graph(feeds_u8, work / "main_graph_uint8.npz")
    det_jobs = [(kind, arts[kind], libs.get(kind), npz, manifests[kind])
                for kind, npz in (("fp32_input", graph_npz), ("uint8_input", u8_npz))]
    res["determinism"] = determinism(cfg, det_jobs, ref_logits)
    res["int4"] = int4_sizes(cfg, dataset, epochs, fp32_params) if cfg.int4 else None
    return {"artifact": art, "graph": fold.graph, "feeds": feeds}


def integer_input_twin(graph: Any, feeds: dict[str, np.ndarray]) -> tuple[Any, dict[str, np.ndarray], float]:
    """The ``--integer-input`` twin of ``graph``, its feeds, and the one-time feature quantization cost (ms)."""
    from qgnn_deploy.ir.passes import prequantized_copy, quantize_input_feeds

    twin = prequantized_copy(graph)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        q_feeds = quantize_input_feeds(twin, feeds)
        times.append(time.perf_counter() - t0)
    return twin, q_feeds, round(1e3 * min(times), 3)


def ratios(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Speed-ups vs PyG eager (and vs the fastest PyG / ORT FP32), size and buffer ratios vs FP32."""
    def med(k: str) -> float | None:
        r = rows.get(k, {})
        return r.get("latency_ms", {}).get("median") if "error" not in r else None

    ref = med("pyg_eager")
    pyg = [m for k in ("pyg_eager", "pyg_cached", "pyg_compile", "pyg_csr") if (m := med(k)) is not None]
    fastest_pyg = min(pyg) if pyg else None
    fp32 = {k: m for k in FP32_ROWS if (m := med(k)) is not None}
    fastest = min(fp32, key=fp32.get) if fp32 else None  # type: ignore[arg-type]
    out: dict[str, Any] = {"reference": "pyg_eager", "fastest_pyg_ms": fastest_pyg, "fastest_fp32": fastest,
                           "fastest_fp32_ms": fp32.get(fastest) if fastest else None, "per_backend": {}}
    base = rows.get("pyg_eager", {})
    for k, r in rows.items():
        m = med(k)
        entry: dict[str, Any] = {}
        if m is not None and ref:
            entry["speedup_vs_pyg_eager"] = ref / m
            entry["speedup_vs_fastest_pyg"] = fastest_pyg / m if fastest_pyg else None
            entry["speedup_vs_fastest_fp32"] = fp32[fastest] / m if fastest else None
            entry["speedup_vs_ort_fp32"] = med("ort_fp32") / m if med("ort_fp32") else None
        for q in ("peak_rss_bytes", "buffer_bytes", "model_bytes", "model_file_bytes"):
            if r.get(q) and base.get(q):
                entry[f"{q}_ratio"] = r[q] / base[q]
        out["per_backend"][k] = entry
    ours = {k: med(k) for k in OURS if med(k) is not None}
    if ours:
        best = min(ours, key=ours.get)  # type: ignore[arg-type]
        out["best_ours"] = best
        out["best_ours_ms"] = ours[best]
    return out


def int4_sizes(cfg: SuiteConfig, dataset: str, epochs: int, fp32_params: int) -> dict[str, Any]:
    """INT4 (packed) model size against FP32, and its integer accuracy."""
    from qgnn_deploy.backends.onnx import export_onnx
    from qgnn_deploy.fold import fold_checkpoint
    from qgnn_deploy.ir.analysis import model_bytes
    from qgnn_deploy.ir.interpreter import run

    t0 = time.perf_counter()
    path = cfg.int4_model or train_model(cfg, dataset, 4, cfg.work_dir / f"{dataset}_int4_lorap.pt", epochs)
    fold = fold_checkpoint(path, data_root=cfg.data_root)
    onnx_bytes = len(export_onnx(fold.graph).SerializeToString())
    mb = model_bytes(fold.graph)
    logits = run(fold.graph, fold.sample_feeds)[fold.graph.outputs[0].name]
    from qgnn_deploy.data.specs import load_dataset

    ds = load_dataset(fold.payload.get("dataset", {}).get("name", dataset), cfg.data_root)
    log(f"int4 model {path} ({time.perf_counter() - t0:.0f} s)")
    return {"model": str(path), "model_bytes": mb, "onnx_file_bytes": onnx_bytes, "fp32_model_bytes": fp32_params,
            "model_bytes_ratio": mb / fp32_params, "test_acc_integer": accuracy(logits, ds),
            "parameters": {k: [str(v.dtype), list(v.shape), int(v.nbytes)] for k, v in fold.graph.initializers.items()}}


