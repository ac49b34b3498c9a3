"""The performance suite: one run, one model, one input graph, every route side by side.

Stages (``run_suite``):

1. model: ``--model`` (a GCN checkpoint) or train GCN INT8 QAT + LoRAP with the project's trainer;
   an INT4 twin for the size target (``--int4-model`` or trained);
2. artifacts: fold + :func:`qgnn_deploy.exporting.export_graph` (x86_64: ONNX + TVM library), and
   the DIY routes (PyG twin, ``torch.onnx.export``, ORT ``quantize_static``);
3. Cora table: each backend measured in its own process (:mod:`.worker`; ours through
   ``runtimes/qgnn_bench.py`` via :func:`qgnn_deploy.arm64.run_bench`, as a user runs it);
4. determinism of our backends at 1 and 2 threads over repeated runs;
5. size series on synthetic graphs (``--sizes``) and the growth exponent;
6. roofline note for the largest graph against an int8 GEMM and a copy-bandwidth probe;
7. targets, JSON, markdown, PNGs.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qgnn_deploy.errors import QgnnError
from qgnn_deploy.perf.graphs import random_graph, save_graph
from qgnn_deploy.perf.measure import THREAD_VARS, load_average

PYG_VARIANTS = (("pyg_eager", "eager", "PyG FP32 eager"), ("pyg_cached", "cached", "PyG FP32 eager, cached norm"),
                ("pyg_compile", "compile", "PyG FP32 torch.compile"),
                ("pyg_csr", "csr", "PyG FP32 on CSR adj_t (ToSparseTensor), cached norm"),
                ("torch_sparse_csr", "sparse_csr", "FP32 torch.sparse_csr GCN by hand, A @ (X @ W)"))
FP32_ROWS = (*(k for k, _, _ in PYG_VARIANTS), "ort_fp32")  # "fastest FP32" is the fastest of these
ISA_FLAGS = ("avx2", "avx512vnni", "avxvnni", "dotprod", "i8mm")  # /proc/cpuinfo spells some differently
LABELS = {**{k: lab for k, _, lab in PYG_VARIANTS}, "ort_fp32": "ORT FP32 (torch.onnx.export)",
          "ort_qdq": "ORT quantize_static QDQ", "ours_ort": "ours: integer ONNX in ORT",
          "ours_tvm": "ours: TVM x86-64 (untuned)", "ours_tvm_tuned": "ours: TVM x86-64 (tuned), uint8 input",
          "ours_ort_u8": "ours: integer ONNX in ORT, uint8 input",
          "ours_tvm_u8": "ours: TVM x86-64 (untuned), uint8 input",
          "ours_tvm_u8_sorted": "ours: TVM x86-64 (untuned), uint8 input, edges sorted once"}
OURS = ("ours_ort", "ours_tvm", "ours_ort_u8", "ours_tvm_u8", "ours_tvm_tuned")
# Our rows per artifact: "fp32_input" takes x as the user has it; "uint8_input" (qgnn-export --integer-input) takes
# the features quantized once per dataset, like an image model that takes uint8 pixels.
ARTIFACT_OF = {"ours_ort": "fp32_input", "ours_tvm": "fp32_input", "ours_tvm_tuned": "tuned",
               "ours_ort_u8": "uint8_input", "ours_tvm_u8": "uint8_input"}
SERIES_KEYS = ("pyg_eager", "pyg_cached", "ort_fp32", "ours_ort", "ours_tvm", "ours_tvm_u8", "ours_tvm_u8_sorted")


@dataclass
class SuiteConfig:
    """Everything a run depends on (recorded in the JSON)."""

    out_dir: Path
    work_dir: Path
    model: Path | None = None
    int4_model: Path | None = None
    quick: bool = False
    threads: int = 2
    warmup: int = 10
    repeats: int = 50
    sizes: list[int] = field(default_factory=lambda: [10_000, 100_000, 1_000_000])
    series_features: int = 128
    degree: float = 10.0
    tune: int = 0
    torch_compile: bool = True
    tvm: bool = True
    int4: bool = True
    det_runs: int = 5
    epochs: int = 200
    data_root: str | None = None
    command: str = ""
    timeout: float = 1800.0


# ------------------------------------------------------------------------------------------ processes
def _env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    for var in THREAD_VARS:
        env[var] = str(threads)
    return env


def run_worker(spec: dict[str, Any], work: Path, name: str, timeout: float) -> dict[str, Any]:
    """Run one :mod:`.worker` spec in a fresh process; its result dict (``error`` on failure)."""
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
    return {**json.loads(res_path.read_text()), "load_average_before": load}


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
    return {"latency_ms": rep["latency_ms"], "peak_rss_bytes": rep["memory"]["peak_rss_bytes"],
            "rss_before_load_bytes": rep["memory"].get("rss_before_load_bytes"), "threads": rep["threads"],
            "reference_match": rep["reference"].get("match"), "runtime": rep.get("runtime_version"),
            "timing_label": rep.get("timing_label"), "buffer_bytes_manifest": rep.get("buffer_bytes"),
            "load_average_before": load}


# ------------------------------------------------------------------------------------------ models
def _train(cfg: SuiteConfig, dataset: str, bits: int, path: Path, epochs: int, features: int | None = None) -> Path:
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


def _accuracy(logits: np.ndarray, ds: Any) -> float:
    mask = ds.data.test_mask.numpy()
    return float((np.asarray(logits).argmax(-1)[mask] == ds.data.y.numpy()[mask]).mean())


def _export(graph: Any, target: str, out: Path, feeds: dict[str, np.ndarray], tune: int = 0) -> dict[str, Any]:
    from qgnn_deploy.exporting import export_graph

    return export_graph(graph, target, out, sample_feeds=feeds, tune_trials=tune, force=True)


# ------------------------------------------------------------------------------------------ stages
def log(msg: str) -> None:
    print(f"[bench-suite {time.strftime('%H:%M:%S')}] {msg}", flush=True)


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
    model_path = cfg.model or _train(cfg, dataset, 8, work / f"{dataset}_int8_lorap.pt", epochs)
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

    target = "x86_64" if cfg.tvm else "onnx"
    graph_u8, feeds_u8, main["input_quantize_once_ms"] = integer_input_twin(fold.graph, feeds)
    graphs = {"fp32_input": (fold.graph, feeds), "uint8_input": (graph_u8, feeds_u8)}
    arts: dict[str, Path] = {}
    manifests: dict[str, dict[str, Any]] = {}
    for kind, (g, f) in graphs.items():
        t0 = time.perf_counter()
        arts[kind] = work / f"artifact_int8_{kind}"
        manifests[kind] = _export(g, target, arts[kind], f)
        log(f"artifact {arts[kind]} ({target}, {time.perf_counter() - t0:.0f} s)")
    art = arts["fp32_input"]
    if cfg.tvm and cfg.tune > 0:
        t0 = time.perf_counter()
        arts["tuned"] = work / "artifact_int8_tuned"
        manifests["tuned"] = _export(graph_u8, target, arts["tuned"], feeds_u8, tune=cfg.tune)
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
    rows: dict[str, dict[str, Any]] = {}
    base = {"graph": str(graph_npz), "threads": cfg.threads, "warmup": cfg.warmup, "repeats": cfg.repeats}
    for key, variant, _ in PYG_VARIANTS:
        if variant == "compile" and not cfg.torch_compile:
            rows[key] = {"error": "skipped (--no-compile)"}
            continue
        log(f"measuring {key}")
        rows[key] = run_worker({**base, "kind": "pyg", "variant": variant, "weights": str(work / "twin_weights.npz"),
                                "output": str(work / f"{key}.out.npy")}, work / "runs", key, cfg.timeout)
    for key, path in (("ort_fp32", fp32_onnx), ("ort_qdq", qdq_onnx)):
        log(f"measuring {key}")
        rows[key] = ({"error": qdq_error} if path is None else
                     run_worker({**base, "kind": "ort", "model": str(path), "output": str(work / f"{key}.out.npy")},
                                work / "runs", key, cfg.timeout))
    for key in OURS:
        backend = "onnx" if "_ort" in key else "tvm"
        if ARTIFACT_OF[key] not in arts or (backend == "tvm" and not cfg.tvm):
            continue
        log(f"measuring {key}")
        rows[key] = run_ours(arts[ARTIFACT_OF[key]], backend, cfg, None, cfg.repeats, cfg.warmup)

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
            row["test_acc"] = _accuracy(ref_logits, ds) if row.get("reference_match") else None
        elif out.is_file():
            row["test_acc"] = _accuracy(np.load(out), ds)
        row["label"] = LABELS[key]
    main["buffer_detail"] = {"fp32_onnx_liveness": fp32_live, "ours_onnx_liveness": ours_live, "ours_ir": {
        kind: {"peak_bytes": b.peak_bytes, "input_bytes": b.input_bytes, "peak_at": b.peak_at}
        for kind, b in ours_buf.items()}}
    eager_out, fp32_out = work / "pyg_eager.out.npy", work / "ort_fp32.out.npy"
    if eager_out.is_file() and fp32_out.is_file():
        main["ort_fp32_max_abs_diff_vs_pyg"] = float(np.abs(np.load(eager_out) - np.load(fp32_out)).max())
    main["test_acc_fake_quant"] = fold.report.get("parity", {}).get("test_acc_fake_quant")
    main["test_acc_integer_interpreter"] = _accuracy(ref_logits, ds)
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


def gemm_stage(cfg: SuiteConfig, graph: Any, feeds_u8: dict[str, np.ndarray]) -> dict[str, Any]:
    """The model's largest GEMM (u8 features x its int8 weight) as a GEMM-only TVM library for the host, timed
    against ORT ``MatMulInteger`` on identical operands, each alone in its own process (:mod:`.gemm_probe`)."""
    from qgnn_deploy.backends.tvm.compile import compile_to_dir, gemm_kind
    from qgnn_deploy.backends.tvm.targets import TARGETS
    from qgnn_deploy.ir.graph import GraphBuilder

    weights = [graph.initializers[n.inputs[1]] for n in graph.nodes if n.op == "matmul" and
               n.inputs[1] in graph.initializers and graph.initializers[n.inputs[1]].ndim == 2 and
               graph.initializers[n.inputs[1]].dtype == np.int8]
    if not weights:
        return {"error": "the model has no int8 weight matrix"}
    w = max(weights, key=lambda a: a.size)
    x = next((v for v in feeds_u8.values() if v.dtype == np.uint8 and v.ndim == 2 and v.shape[1] == w.shape[0]),
             None)
    if x is None:  # not the first layer's input: same shape, random codes
        rows = next(iter(feeds_u8.values())).shape[0]
        x = np.random.default_rng(0).integers(0, 256, (rows, w.shape[0]), dtype=np.uint8)
    b = GraphBuilder()
    a = b.input("a", "uint8", ("N", int(w.shape[0])))
    b.output(b.op("matmul", [a, b.const("w", w)], "y"), "int32", ("N", int(w.shape[1])))
    work = cfg.work_dir / "gemm"
    work.mkdir(parents=True, exist_ok=True)
    fields = compile_to_dir(b.graph, "x86_64", work, sample_feeds={"a": x})
    np.savez(work / "operands.npz", a=x, b=w)
    log(f"GEMM {x.shape[0]}x{w.shape[0]}x{w.shape[1]} vs ORT MatMulInteger")
    from qgnn_deploy.perf.gemm_probe import gemm_vs_ort

    return gemm_vs_ort(work / fields["library"], work / "operands.npz", cfg.work_dir / "runs", cfg.threads,
                       10 if cfg.quick else 100, gemm_kind(TARGETS["x86_64"]), timeout=cfg.timeout)


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


def determinism(cfg: SuiteConfig, artifacts: list[tuple[str, Path, Path | None, Path, dict[str, Any]]],
                ref: np.ndarray) -> dict[str, Any]:
    """Identical outputs at 1 and ``threads`` threads, ``det_runs`` runs each, for each of our backends.

    ``artifacts``: (kind, artifact dir, TVM library or None, input graph .npz, manifest) per artifact.
    """
    import hashlib

    ref_digest = hashlib.sha256(np.ascontiguousarray(ref).tobytes()).hexdigest()[:16]
    out: dict[str, Any] = {"reference_digest": ref_digest, "runs": cfg.det_runs}
    jobs = []
    for kind, art, lib, graph_npz, manifest in artifacts:
        suffix = "_u8" if kind == "uint8_input" else ""
        jobs.append((f"ours_ort{suffix}", graph_npz, {"kind": "det_ort", "model": str(art / "model.onnx")}))
        if cfg.tvm and lib is not None:
            order = manifest.get("input_order") or [i["name"] for i in manifest["inputs"]]
            jobs.append((f"ours_tvm{suffix}", graph_npz, {"kind": "det_tvm", "library": str(lib),
                                                          "input_order": order}))
    for key, graph_npz, spec in jobs:
        per: dict[str, Any] = {}
        digests: set[str] = set()
        for t in sorted({1, cfg.threads}):
            r = run_worker({**spec, "graph": str(graph_npz), "threads": t, "runs": cfg.det_runs}, cfg.work_dir / "runs",
                           f"det_{key}_{t}", cfg.timeout)
            per[str(t)] = r.get("digests", r.get("error"))
            digests |= set(r.get("digests", ["<error>"]))
        out[key] = {"digests_by_threads": per, "deterministic": len(digests) == 1,
                    "equals_reference": digests == {ref_digest}}
    return out


def int4_sizes(cfg: SuiteConfig, dataset: str, epochs: int, fp32_params: int) -> dict[str, Any]:
    """INT4 (packed) model size against FP32, and its integer accuracy."""
    from qgnn_deploy.backends.onnx import export_onnx
    from qgnn_deploy.fold import fold_checkpoint
    from qgnn_deploy.ir.analysis import model_bytes
    from qgnn_deploy.ir.interpreter import run

    t0 = time.perf_counter()
    path = cfg.int4_model or _train(cfg, dataset, 4, cfg.work_dir / f"{dataset}_int4_lorap.pt", epochs)
    fold = fold_checkpoint(path, data_root=cfg.data_root)
    onnx_bytes = len(export_onnx(fold.graph).SerializeToString())
    mb = model_bytes(fold.graph)
    logits = run(fold.graph, fold.sample_feeds)[fold.graph.outputs[0].name]
    from qgnn_deploy.data.specs import load_dataset

    ds = load_dataset(fold.payload.get("dataset", {}).get("name", dataset), cfg.data_root)
    log(f"int4 model {path} ({time.perf_counter() - t0:.0f} s)")
    return {"model": str(path), "model_bytes": mb, "onnx_file_bytes": onnx_bytes, "fp32_model_bytes": fp32_params,
            "model_bytes_ratio": mb / fp32_params, "test_acc_integer": _accuracy(logits, ds),
            "parameters": {k: [str(v.dtype), list(v.shape), int(v.nbytes)] for k, v in fold.graph.initializers.items()}}


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
        model_path = _train(cfg, "synthetic", 8, cfg.work_dir / f"synthetic{features}_int8_lorap.pt", 50, features)
        model, _ = load_checkpoint(model_path)
        graph = fold_model(model)
        weights_npz = work / "twin_weights.npz"
        np.savez(weights_npz, **twin_weights(model))
        art = work / "artifact"
        t0 = time.perf_counter()
        _export(graph, "x86_64" if cfg.tvm else "onnx", art, random_graph(cfg.sizes[0], features, cfg.degree))
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
        _export(graph_u8, "x86_64", art_u8, random_graph(cfg.sizes[0], features, cfg.degree))
    points = []
    for n in cfg.sizes:
        feeds = random_graph(n, features, cfg.degree, seed=1)
        path = save_graph(feeds, work / f"graph_{n}.npz")
        e = int(feeds["edge_index"].shape[1])
        del feeds
        reps = max(5, min(cfg.repeats, int(2e7 // max(e, 1))))  # >= 5: a median of 3 is one sample
        warm = max(1, min(cfg.warmup, 3 if e > 1e6 else cfg.warmup))
        point: dict[str, Any] = {"num_nodes": n, "num_edges": e, "repeats": reps, "warmup": warm}
        log(f"series N={n} E={e} ({reps} repeats)")
        for key in ("pyg_eager",) if cfg.quick else ("pyg_eager", "pyg_cached"):
            point[key] = run_worker({"kind": "pyg", "variant": key.split("_")[1], "graph": str(path),
                                     "weights": str(weights_npz), "threads": cfg.threads, "warmup": warm,
                                     "repeats": reps}, work / "runs", f"{key}_{n}", cfg.timeout)
        point["ort_fp32"] = run_worker({"kind": "ort", "model": str(fp32_onnx), "graph": str(path),
                                        "threads": cfg.threads, "warmup": warm, "repeats": reps}, work / "runs",
                                       f"ort_fp32_{n}", cfg.timeout)
        point["ours_ort"] = run_ours(art, "onnx", cfg, path, reps, warm)
        if cfg.tvm:
            point["ours_tvm"] = run_ours(art, "tvm", cfg, path, reps, warm)
            # float x in the file: the bench script quantizes it once, outside the timed calls (reported)
            point["ours_tvm_u8"] = run_ours(art_u8, "tvm", cfg, path, reps, warm)
            # and with edge_index sorted by destination once (exact; sequential scatter on big graphs)
            point["ours_tvm_u8_sorted"] = run_ours(art_u8, "tvm", cfg, path, reps, warm, sort_edges=True)
        points.append(point)
        path.unlink(missing_ok=True)
    res["series"] = {"features": features, "degree": cfg.degree, "model": str(model_path), "points": points,
                     "growth_exponent_vs_edges": growth_exponents(points),
                     "segment_exponents_vs_edges": segment_exponents(points)}
    # for the roofline; removed before JSON
    res["series"]["_graphs"] = {"ours_ort": graph, "ours_tvm": graph, "ours_tvm_u8": graph_u8,
                                "ours_tvm_u8_sorted": graph_u8}


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


def workload_counts(graph: Any, num_nodes: int, num_edges: int, features: int) -> dict[str, Any]:
    """Integer ops and bytes of ``graph`` at N/E, scaled from an interpreter run on a small graph.

    Shapes are observed on a small random graph; every value whose leading dimension is
    N (E) scales with N (E).  ``int_ops``: 2*M*K*N per matmul plus one op per output element
    of every other integer node; ``bytes_unfused``: every node reads its inputs and writes its
    output once (upper estimate); ``bytes_compulsory``: graph inputs + output + parameters.
    """
    from qgnn_deploy.ir.interpreter import run
    from qgnn_deploy.ir.passes import quantize_input_feeds

    n0 = 997
    small = random_graph(n0, features, 10.0, seed=3)
    e0 = int(small["edge_index"].shape[1])
    env = run(graph, quantize_input_feeds(graph, {k: small[k] for k in ("x", "edge_index")}), keep_all=True)

    def scale(shape: tuple[int, ...]) -> float:
        if not shape:
            return 1.0
        if shape[0] == n0:
            return num_nodes / n0
        if shape[0] == e0:
            return num_edges / e0
        if len(shape) > 1 and shape[1] == e0:
            return num_edges / e0
        return 1.0

    def nbytes(name: str) -> float:
        v = np.asarray(env[name])
        return v.nbytes * scale(v.shape)

    ops = bytes_unfused = 0.0
    for node in graph.nodes:
        out = np.asarray(env[node.outputs[0]])
        if node.op == "matmul":
            a, b = np.asarray(env[node.inputs[0]]), np.asarray(env[node.inputs[1]])
            ops += 2.0 * a.shape[0] * a.shape[1] * b.shape[1] * scale(a.shape)
        elif node.op not in ("quantize", "dequantize", "take_row"):
            ops += out.size * scale(out.shape)
        bytes_unfused += sum(nbytes(i) for i in node.inputs if i) + nbytes(node.outputs[0])
    compulsory = sum(nbytes(v.name) for v in graph.inputs) + sum(nbytes(v.name) for v in graph.outputs)
    compulsory += graph.parameter_bytes()
    return {"int_ops": ops, "bytes_unfused": bytes_unfused, "bytes_compulsory": compulsory,
            "method": workload_counts.__doc__.split("\n\n")[1].strip().replace("\n   ", "")}


def roofline_stage(cfg: SuiteConfig, res: dict[str, Any]) -> None:
    """Achieved int ops/s and bytes/s of our best backend on the largest graph vs the probes."""
    series = res.get("series") or {}
    graphs = series.pop("_graphs", None)
    points = series.get("points") or []
    probe = run_worker({"kind": "probe", "threads": cfg.threads, "gemm_size": 1024 if cfg.quick else 2048,
                        "copy_mib": 64 if cfg.quick else 512}, cfg.work_dir / "runs", "probe", cfg.timeout)
    note: dict[str, Any] = {"probe": probe}
    if not graphs or not points:
        res["roofline"] = note
        return
    p = points[-1]
    cands = {k: p[k]["latency_ms"]["median"] for k in graphs if "latency_ms" in p.get(k, {})}
    if not cands or "error" in probe:
        res["roofline"] = note
        return
    best = min(cands, key=cands.get)  # type: ignore[arg-type]
    secs = cands[best] / 1e3
    w = workload_counts(graphs[best], p["num_nodes"], p["num_edges"], series["features"])
    peak_ops = probe["int8_gemm"]["ops_per_s"]
    peak_bw = probe["memory_bandwidth"]["bytes_per_s"]
    achieved = {"backend": best, "median_ms": cands[best], "num_nodes": p["num_nodes"], "num_edges": p["num_edges"],
                "int_ops_per_s": w["int_ops"] / secs, "bytes_unfused_per_s": w["bytes_unfused"] / secs,
                "bytes_compulsory_per_s": w["bytes_compulsory"] / secs}
    achieved["fraction_of_peak_int8_ops"] = achieved["int_ops_per_s"] / peak_ops
    achieved["fraction_of_copy_bandwidth_unfused"] = achieved["bytes_unfused_per_s"] / peak_bw
    achieved["fraction_of_copy_bandwidth_compulsory"] = achieved["bytes_compulsory_per_s"] / peak_bw
    intensity = w["int_ops"] / w["bytes_compulsory"]
    achieved["arithmetic_intensity_ops_per_byte"] = intensity
    achieved["roofline_bound_ops_per_s"] = min(peak_ops, intensity * peak_bw)
    achieved["bound_by"] = "memory" if intensity * peak_bw < peak_ops else "compute"
    achieved["time_at_roofline_ms"] = 1e3 * w["int_ops"] / achieved["roofline_bound_ops_per_s"]
    res["roofline"] = {**note, "workload": w, "achieved": achieved}


# ------------------------------------------------------------------------------------------ targets
def check_targets(res: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets as measured in this run (``met`` is None when not measurable)."""
    rows, rat = res.get("rows", {}), res.get("ratios", {})

    def med(k: str) -> float | None:
        r = rows.get(k, {})
        return None if "error" in r else r.get("latency_ms", {}).get("median")

    t: dict[str, Any] = {}
    best, best_ms = rat.get("best_ours"), rat.get("best_ours_ms")
    fastest = rat.get("fastest_fp32_ms")  # every FP32 row: PyG (edge_index, CSR), hand-written sparse, ORT
    v = fastest / best_ms if fastest and best_ms else None
    t["best_vs_fastest_fp32>=3x"] = {"value": v, "best": best, "fastest_fp32": rat.get("fastest_fp32"),
                                     "met": None if v is None else v >= 3.0}
    gp = res.get("gemm_vs_ort") or {}
    v = gp.get("ort_over_ours_median")
    t["gemm_no_slower_than_ort_matmulinteger"] = {"value": v, "met": None if v is None else v >= 1.0}
    v = med("ort_fp32") / best_ms if med("ort_fp32") and best_ms else None
    t["best_vs_ort_fp32>=2x"] = {"value": v, "met": None if v is None else v >= 2.0}
    # like for like: each input contract's TVM build against the same artifact in ORT
    pairs = {c: (med(f"ours_ort{c}"), med(f"ours_tvm{c}")) for c in ("", "_u8")}
    vals = {c or "_fp32": o / tv for c, (o, tv) in pairs.items() if o and tv}
    v = min(vals.values()) if vals else None
    t["tvm_no_slower_than_ours_ort"] = {"value": v, "per_input": vals, "met": None if v is None else v >= 1.0}
    det = res.get("determinism", {})
    flags = [d["deterministic"] and d["equals_reference"] for k, d in det.items() if isinstance(d, dict)]
    t["deterministic"] = {"met": all(flags) if flags else None}
    e = rows.get("ours_ort", {})
    v = e.get("model_bytes") / rows["pyg_eager"]["model_bytes"] if e.get("model_bytes") and \
        rows.get("pyg_eager", {}).get("model_bytes") else None
    t["int8_model<=0.27x_fp32"] = {"value": v, "met": None if v is None else v <= 0.27}
    i4 = res.get("int4") or {}
    v = i4.get("model_bytes_ratio")
    t["int4_model<=0.15x_fp32"] = {"value": v, "met": None if v is None else v <= 0.15}
    fp32_buf = rows.get("pyg_eager", {}).get("buffer_bytes")
    bufs = {k: rows[k]["buffer_bytes"] / fp32_buf for k in OURS if rows.get(k, {}).get("buffer_bytes") and fp32_buf}
    v = min(bufs.values()) if bufs else None
    t["int8_buffer<=0.3x_fp32"] = {"value": v, "per_backend": bufs, "best": min(bufs, key=bufs.get) if bufs else None,
                                   "met": None if v is None else v <= 0.3}
    # the slope of the backend a user would pick for big graphs (ours, fastest at the largest size)
    g = (res.get("series") or {}).get("growth_exponent_vs_edges", {})
    pts = (res.get("series") or {}).get("points") or []
    last = pts[-1] if pts else {}
    at_largest = {k: last[k]["latency_ms"]["median"] for k in g if k.startswith("ours") and g[k] is not None
                  and "latency_ms" in last.get(k, {})}
    pick = min(at_largest, key=at_largest.get) if at_largest else None  # type: ignore[arg-type]
    v = g[pick] if pick else None
    t["latency_no_worse_than_linear_in_edges"] = {"value": v, "backend": pick, "per_backend": g,
                                                  "met": None if v is None else v <= 1.1}
    t["series_ours_ort_vs_ort_fp32_and_pyg_cached"] = series_ort_target(pts)
    big = [p for p in pts if p["num_nodes"] >= 1_000_000]
    ok = bool(big) and all("error" not in big[-1].get(k, {"error": 1}) for k in ("ours_ort",))
    t["1e6_nodes_fit_24GiB"] = {"met": ok if big else None,
                                "peak_rss_bytes": {k: big[-1].get(k, {}).get("peak_rss_bytes")
                                                   for k in SERIES_KEYS}
                                if big else None}
    return t


def series_ort_target(points: list[dict[str, Any]]) -> dict[str, Any]:
    """Issue 12: at >= 10^5 nodes our ORT row beats ORT FP32 and PyG cached, and peaks below PyG at the largest.

    ``value``: the smallest speed-up of ours_ort over the faster of the two baselines across those sizes.
    """
    def med(p: dict[str, Any], k: str) -> float | None:
        return (p.get(k) or {}).get("latency_ms", {}).get("median")

    speedups: dict[str, float] = {}
    for p in points:
        ours, base = med(p, "ours_ort"), [m for k in ("ort_fp32", "pyg_cached") if (m := med(p, k))]
        if p["num_nodes"] >= 100_000 and ours and base:
            speedups[str(p["num_nodes"])] = min(base) / ours
    big = [p for p in points if p["num_nodes"] >= 1_000_000]
    rss = {k: (big[-1].get(k) or {}).get("peak_rss_bytes") for k in ("ours_ort", "pyg_cached")} if big else {}
    rss_ok = None if not rss or None in rss.values() else rss["ours_ort"] < rss["pyg_cached"]
    v = min(speedups.values()) if speedups else None
    met = None if v is None else (v > 1.0 and rss_ok is not False)
    return {"value": v, "per_size": speedups, "peak_rss_at_largest": rss, "met": met}


# ------------------------------------------------------------------------------------------ report
def _mb(b: Any) -> str:
    return "—" if not b else f"{b / 2**20:.1f}"


def _kb(b: Any) -> str:
    return "—" if not b else f"{b / 1024:.1f}"


def _x(v: Any) -> str:
    return "—" if v is None else f"{v:.2f}×"


def _above(r: dict[str, Any]) -> int | None:
    """Peak RSS above the process's RSS after importing the runtime, before loading the model."""
    if r.get("peak_rss_bytes") and r.get("rss_before_load_bytes"):
        return int(r["peak_rss_bytes"] - r["rss_before_load_bytes"])
    return None


def render_markdown(res: dict[str, Any]) -> str:
    m = res["main"]
    lines = [f"# bench-suite: {m['dataset']} (N={m['num_nodes']}, E={m['num_edges']}, F={m['features']})", "",
             f"Command: `{res['command']}`", "",
             f"Machine: {res['machine']['cpu']}, {res['machine']['cpus']} CPUs; threads fixed at "
             f"**{res['config']['threads']}** for every backend; load average at start {res['load_average']['start']}"
             f", end {res['load_average']['end']}. {res['config']['warmup']} warm-up + {res['config']['repeats']} "
             "timed runs, each backend in its own process.", "", isa_line(res["machine"]), ""]
    if max(res["load_average"]["start"][0], res["load_average"]["end"][0]) > 2.5:
        lines += ["**Warning: the load average was above 2.5 during this run; the timings are not reliable.**", ""]
    lines += ["| backend | median ms | p90 | p99 | speed-up vs PyG eager | peak RSS MiB (ratio) | above import MiB "
              "| buffer KiB (ratio) | model KiB (ratio) | file KiB | test acc | load before |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for k, r in res["rows"].items():
        rr = res["ratios"]["per_backend"].get(k, {})
        if "error" in r:
            lines.append(f"| {r.get('label', LABELS.get(k, k))} | failed: {r['error'][:120]} | | | | | | | | | | |")
            continue
        lat = r["latency_ms"]
        acc = "—" if r.get("test_acc") is None else f"{100 * r['test_acc']:.1f}"
        lines.append(f"| {r['label']} | {lat['median']:.3f} | {lat['p90']:.3f} | {lat['p99']:.3f} | "
                     f"{_x(rr.get('speedup_vs_pyg_eager'))} | {_mb(r.get('peak_rss_bytes'))} "
                     f"({_x(rr.get('peak_rss_bytes_ratio'))}) | {_mb(_above(r))} | {_kb(r.get('buffer_bytes'))} "
                     f"({_x(rr.get('buffer_bytes_ratio'))}) | {_kb(r.get('model_bytes'))} "
                     f"({_x(rr.get('model_bytes_ratio'))}) | {_kb(r.get('model_file_bytes'))} | {acc} | "
                     f"{(r.get('load_average_before') or ['—'])[0]} |")
    lines += ["", "Model KiB: parameters as stored (FP32: 4 B each; ours: `ir.analysis.model_bytes`, int4 packed; "
              "QDQ: its ONNX file). Buffer: peak live activation bytes with inputs counted (ours: "
              "`ir.analysis.buffer_report`; ORT/PyG: ONNX liveness on the sample, see `liveness.py`). "
              "Peak RSS: VmHWM of the backend's own process (includes the runtime's import: "
              "torch for PyG, libtvm for TVM); 'above import' subtracts the RSS measured after the imports and the "
              "input graph load, before the model load."]
    ir = m.get("buffer_detail", {}).get("ours_ir", {})
    if ir:
        lines += ["", "Input contracts: the FP32-input rows take `x` as the user has it and quantize it inside every "
                  "call; the `uint8 input` rows are the `qgnn-export --integer-input` artifact, which takes `x_q` "
                  "(the features quantized once per dataset with the scale/zero point in its manifest; "
                  f"{m.get('input_quantize_once_ms')} ms for this graph in NumPy, not in the latency), like an "
                  "image model that takes uint8 pixels. Outputs are bit-identical. Buffer peaks: " +
                  ", ".join(f"{kind} {_kb(b['peak_bytes'])} KiB at `{b['peak_at']}` (inputs {_kb(b['input_bytes'])} "
                            "KiB)" for kind, b in ir.items()) + "."]
    gp = res.get("gemm_vs_ort")
    if gp:
        lines += ["", gemm_line(gp)]
    fast = res["ratios"].get("fastest_fp32")
    if fast:
        lines += ["", f"Fastest FP32 row: {LABELS.get(fast, fast)} ({res['ratios']['fastest_fp32_ms']:.3f} ms); "
                  "the ≥3× target compares our best row with it."]
    i4 = res.get("int4")
    if i4:
        lines += ["", f"INT4 (packed) model: {i4['model_bytes']} B = {i4['model_bytes_ratio']:.3f}× FP32 "
                  f"({i4['fp32_model_bytes']} B); integer test accuracy {100 * i4['test_acc_integer']:.1f}%."]
    det = res.get("determinism", {})
    lines += ["", "Determinism (threads 1 and " + str(res["config"]["threads"]) + f", {det.get('runs')} runs each): " +
              ", ".join(f"{k}: {'identical' if d['deterministic'] else 'DIFFERENT'}"
                        f"{' and equal to the interpreter' if d['equals_reference'] else ''}"
                        for k, d in det.items() if isinstance(d, dict))]
    s = res.get("series")
    if s:
        lines += ["", f"## Size series (F={s['features']}, average degree {s['degree']})", "",
                  "| N | E | backend | median ms | ns per edge | peak RSS MiB |", "|---|---|---|---|---|---|"]
        for p in s["points"]:
            for k in SERIES_KEYS:
                r = p.get(k)
                if r is None:
                    continue
                val = (f"{r['latency_ms']['median']:.2f} | {1e6 * r['latency_ms']['median'] / p['num_edges']:.1f} | "
                       f"{_mb(r.get('peak_rss_bytes'))}" if "latency_ms" in r
                       else f"failed: {r.get('error', '')[:80]} | | ")
                lines.append(f"| {p['num_nodes']} | {p['num_edges']} | {LABELS.get(k, k)} | {val} |")
        lines += ["", "Growth exponent of latency vs edges (log-log slope): " +
                  ", ".join(f"{k} {v:.2f}" for k, v in s["growth_exponent_vs_edges"].items() if v is not None)]
        seg = s.get("segment_exponents_vs_edges") or {}
        if any(seg.values()):
            lines += ["", "Slope between consecutive sizes: " +
                      "; ".join(f"{k} " + " → ".join(f"{v:.2f}" for v in vs) for k, vs in seg.items() if vs)]
    rf = res.get("roofline", {})
    if rf.get("achieved"):
        a, pr = rf["achieved"], rf["probe"]
        lines += ["", "## Roofline (largest graph)", "",
                  f"- Probes: int8 GEMM {pr['int8_gemm']['ops_per_s'] / 1e9:.1f} Gop/s ({pr['int8_gemm']['method']}); "
                  f"copy bandwidth {pr['memory_bandwidth']['bytes_per_s'] / 1e9:.1f} GB/s "
                  f"({pr['memory_bandwidth']['method']}).",
                  f"- {LABELS[a['backend']]} at N={a['num_nodes']}, E={a['num_edges']}: {a['median_ms']:.1f} ms, "
                  f"{a['int_ops_per_s'] / 1e9:.2f} Gop/s ({100 * a['fraction_of_peak_int8_ops']:.1f}% of the GEMM "
                  f"peak), {a['bytes_compulsory_per_s'] / 1e9:.2f} GB/s compulsory traffic "
                  f"({100 * a['fraction_of_copy_bandwidth_compulsory']:.1f}% of copy bandwidth), "
                  f"{a['bytes_unfused_per_s'] / 1e9:.2f} GB/s if every op streamed its operands.",
                  f"- Arithmetic intensity {a['arithmetic_intensity_ops_per_byte']:.2f} op/B: {a['bound_by']}-bound; "
                  f"the roofline time is {a['time_at_roofline_ms']:.1f} ms "
                  f"({a['median_ms'] / a['time_at_roofline_ms']:.1f}× away)."]
    lines += ["", "## Targets", "", "| target | value | met |", "|---|---|---|"]
    for k, v in res["targets"].items():
        val = v.get("value")
        lines.append(f"| {k} | {'—' if val is None else f'{val:.3f}'} | "
                     f"{'—' if v.get('met') is None else ('yes' if v['met'] else '**NO**')} |")
    return "\n".join(lines) + "\n"


def plot(res: dict[str, Any], out_dir: Path, stem: str) -> list[Path]:
    """``<stem>.png`` (latency and memory per backend) and ``<stem>_series.png`` (vs graph size)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    rows = {k: r for k, r in res["rows"].items() if "latency_ms" in r}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    names = [LABELS[k].replace("ours: ", "ours:\n").replace(" (", "\n(") for k in rows]
    colors = ["tab:green" if k in OURS else "tab:gray" for k in rows]
    axes[0].barh(names, [r["latency_ms"]["median"] for r in rows.values()], color=colors,
                 xerr=[[0] * len(rows), [r["latency_ms"]["p90"] - r["latency_ms"]["median"] for r in rows.values()]])
    axes[0].set_xlabel("latency ms (median, bar to p90)")
    axes[1].barh(names, [(r.get("peak_rss_bytes") or 0) / 2**20 for r in rows.values()], color=colors)
    axes[1].set_xlabel("peak RSS MiB (own process)")
    axes[2].barh(names, [(r.get("buffer_bytes") or 0) / 2**20 for r in rows.values()], color=colors)
    axes[2].set_xlabel("activation buffer MiB (inputs counted)")
    for ax in axes[1:]:
        ax.set_yticklabels([])
    m = res["main"]
    fig.suptitle(f"{m['dataset']} N={m['num_nodes']} E={m['num_edges']}, {res['config']['threads']} threads")
    fig.tight_layout()
    p = out_dir / f"{stem}.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)
    s = res.get("series")
    if s and s["points"]:
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
        for k in SERIES_KEYS:
            pts = [p for p in s["points"] if "latency_ms" in p.get(k, {})]
            if not pts:
                continue
            lab = f"{LABELS[k]} (slope {s['growth_exponent_vs_edges'].get(k) or float('nan'):.2f})"
            axes[0].loglog([p["num_edges"] for p in pts], [p[k]["latency_ms"]["median"] for p in pts], "o-", label=lab)
            axes[1].loglog([p["num_nodes"] for p in pts], [p[k]["peak_rss_bytes"] / 2**20 for p in pts], "o-",
                           label=LABELS[k])
        axes[0].set_xlabel("edges")
        axes[0].set_ylabel("median latency ms")
        axes[1].set_xlabel("nodes")
        axes[1].set_ylabel("peak RSS MiB")
        for ax in axes:
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
        fig.suptitle(f"synthetic graphs, F={s['features']}, degree {s['degree']}")
        fig.tight_layout()
        p = out_dir / f"{stem}_series.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    return paths


def isa_flags(cpuinfo: str) -> dict[str, bool]:
    """The int8-relevant ISA tier flags of a ``/proc/cpuinfo`` text (x86 ``flags`` / arm64 ``Features``)."""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.startswith(("flags", "Features")):
            flags |= set(line.split(":", 1)[-1].split())
    alias = {"avxvnni": "avx_vnni", "dotprod": "asimddp"}  # the kernel's names -> Linux's
    return {f: f in flags or alias.get(f, f) in flags for f in ISA_FLAGS}


def isa_line(machine: dict[str, Any]) -> str:
    flags = machine.get("isa_flags") or {}
    tier = ", ".join(f"{f} {'yes' if v else 'no'}" for f, v in flags.items()) or "unknown"
    return f"ISA tier: {tier}; our int8 GEMM kernel on this host: `{machine.get('gemm_kernel') or '—'}`."


def gemm_line(gp: dict[str, Any]) -> str:
    if "error" in gp:
        return f"GEMM vs ORT MatMulInteger: failed: {gp['error'][:160]}"
    m, k, n = gp["shape"]
    return (f"GEMM {m}×{k}×{n} (u8 × s8 → s32), same operands, {gp['ours_ms']['n']} calls each, each runtime "
            f"in its own process: ours "
            f"(`{gp.get('gemm_kernel')}`) {gp['ours_ms']['median']:.3f} ms median ({gp['ours_gops_best']:.0f} Gop/s "
            f"best), ORT MatMulInteger {gp['ort_ms']['median']:.3f} ms ({gp['ort_gops_best']:.0f} Gop/s best): "
            f"ORT / ours = **{gp['ort_over_ours_median']:.2f}×** (median), {gp['ort_over_ours_best']:.2f}× (best); "
            f"ours {'exact' if gp.get('ours_exact') else 'NOT EXACT'} (vs int64 NumPy), ORT "
            + ("exact." if gp.get("ort_exact") else f"not exact: {gp.get('ort_wrong_elements')} saturated sums "
               "(MLAS's AVX2 u8 x s8 path uses vpmaddubsw, which saturates int16; the ratio is then vs a "
               "cheaper, inexact computation)."))


def _machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    text = ""
    try:
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    kernel = None
    if platform.machine() in ("x86_64", "AMD64"):
        try:
            from qgnn_deploy.backends.tvm.compile import gemm_kind
            from qgnn_deploy.backends.tvm.targets import TARGETS

            kernel = gemm_kind(TARGETS["x86_64"])
        except Exception:  # noqa: BLE001 - TVM missing: the report still names the CPU
            kernel = None
    return {"cpu": cpu, "cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "isa_flags": isa_flags(text), "gemm_kernel": kernel}


def _versions() -> dict[str, str]:
    out = {}
    for mod in ("torch", "torch_geometric", "onnx", "onnxruntime", "tvm", "numpy"):
        try:
            out[mod] = str(__import__(mod).__version__)
        except Exception:  # noqa: BLE001
            out[mod] = "unavailable"
    return out


def run_suite(cfg: SuiteConfig, stem: str = "bench_suite") -> dict[str, Any]:
    """Run every stage; writes ``<stem>.json``, ``<stem>.md`` and the PNGs into ``cfg.out_dir``."""
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    cfg.work_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    res: dict[str, Any] = {"command": cfg.command, "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
                           "load_average": {"start": load_average()}, "machine": _machine(), "versions": _versions(),
                           "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}}
    main_art = cora_stage(cfg, res)
    if cfg.sizes:
        series_stage(cfg, res, main_art)
    roofline_stage(cfg, res)
    res["load_average"]["end"] = load_average()
    res["targets"] = check_targets(res)
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
    shutil.rmtree(path, ignore_errors=True)
