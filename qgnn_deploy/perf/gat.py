"""The GAT row pair (issue 14): PyG ``GATConv`` FP32 against our integer GAT on the same graph.

Model: ``--gat-model`` (a GAT checkpoint) or GAT INT8 QAT + LoRAP trained with the project's trainer
(``heads`` x ``hidden`` channels, one averaged output head, as ``docs/gat.md``).  Rows, each in its own
process: PyG ``GATConv`` eager on ``edge_index``, on a CSR ``adj_t`` made once (PyG's documented
sparse form; ``torch_sparse`` is not installed, so ``torch.sparse_csr``), ``torch.compile`` of the
eager model (unless ``--no-compile``); ours: the integer ONNX in ORT and the TVM library, each for both
input contracts (FP32 ``x`` and the ``--integer-input`` uint8 ``x_q``), as for GCN.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from qgnn_deploy.perf.config import SuiteConfig
from qgnn_deploy.perf.graphs import save_graph
from qgnn_deploy.perf.pooling import Job, calls_per_process, measure_rows, median_text, process_checks
from qgnn_deploy.perf.runs import accuracy, export, log, ours_job, worker_job

GAT_PYG = (("pyg_gat_eager", "eager", "PyG GATConv FP32 eager"),
           ("pyg_gat_csr", "csr", "PyG GATConv FP32 on CSR adj_t (ToSparseTensor)"),
           ("pyg_gat_compile", "compile", "PyG GATConv FP32 torch.compile"))
GAT_OURS = {"ours_gat_ort": ("onnx", "fp32_input", "ours: GAT integer ONNX in ORT"),
            "ours_gat_tvm": ("tvm", "fp32_input", "ours: GAT TVM x86-64 (untuned)"),
            "ours_gat_ort_u8": ("onnx", "uint8_input", "ours: GAT integer ONNX in ORT, uint8 input"),
            "ours_gat_tvm_u8": ("tvm", "uint8_input", "ours: GAT TVM x86-64 (untuned), uint8 input")}
GAT_LABELS = {**{k: lab for k, _, lab in GAT_PYG}, **{k: v[2] for k, v in GAT_OURS.items()}}


def train_gat(cfg: SuiteConfig, dataset: str, path: Path, epochs: int) -> Path:
    """GAT INT8 QAT + LoRAP (``cfg.gat_heads`` heads of ``cfg.gat_hidden`` channels; reused if ``path`` exists)."""
    if path.is_file():
        return path
    import torch

    from qgnn_deploy.data.specs import load_dataset
    from qgnn_deploy.models.net import ModelConfig, default_bits
    from qgnn_deploy.train.checkpoint import save_checkpoint
    from qgnn_deploy.train.trainer import TrainSettings, train

    torch.set_num_threads(cfg.threads)
    ds = load_dataset(dataset, cfg.data_root)
    config = ModelConfig(arch="gat", in_dim=ds.num_features, hidden=cfg.gat_hidden, out_dim=ds.num_classes,
                         num_layers=2, dropout=0.6, task="node", framework="qat", bits=default_bits(8),
                         lorap={"k": 8, "rank": 4, "variant": "softmax"}, heads=cfg.gat_heads, out_heads=1)
    res = train(config, ds, TrainSettings(epochs=epochs, lr=0.005, seed=0, progress=False))
    save_checkpoint(path, res.model, ds.describe(), res.metrics, extra={"seed": 0, "epochs": epochs,
                                                                          "by": "bench-suite"})
    return path


def gat_ratios(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Speed-ups vs PyG GATConv eager and our best row against the fastest PyG GATConv row."""
    def med(k: str) -> float | None:
        r = rows.get(k, {})
        return None if "error" in r else r.get("latency_ms", {}).get("median")

    pyg = {k: m for k, _, _ in GAT_PYG if (m := med(k)) is not None}
    ours = {k: m for k in GAT_OURS if (m := med(k)) is not None}
    fastest = min(pyg, key=pyg.get) if pyg else None  # type: ignore[arg-type]
    best = min(ours, key=ours.get) if ours else None  # type: ignore[arg-type]
    eager = med("pyg_gat_eager")
    return {"fastest_pyg": fastest, "fastest_pyg_ms": pyg.get(fastest) if fastest else None,
            "best_ours": best, "best_ours_ms": ours.get(best) if best else None,
            "best_vs_fastest_pyg": pyg[fastest] / ours[best] if fastest and best else None,
            "speedup_vs_pyg_gat_eager": {k: eager / m for k in rows if (m := med(k)) and eager}}


def gat_stage(cfg: SuiteConfig, res: dict[str, Any]) -> None:
    """Train or load the GAT, export both input contracts, measure every row; fills ``res["gat"]``."""
    from qgnn_deploy.data.specs import load_dataset
    from qgnn_deploy.fold import fold_checkpoint
    from qgnn_deploy.ir.analysis import model_bytes
    from qgnn_deploy.perf.baselines import gat_twin_weights
    from qgnn_deploy.perf.cora import integer_input_twin

    work = cfg.work_dir / "gat"
    work.mkdir(parents=True, exist_ok=True)
    dataset = "synthetic" if cfg.quick else "cora"
    t0 = time.perf_counter()
    model_path = cfg.gat_model or train_gat(cfg, dataset, work / f"{dataset}_gat_int8_lorap.pt",
                                            3 if cfg.quick else cfg.gat_epochs)
    fold = fold_checkpoint(model_path, data_root=cfg.data_root)
    if fold.payload.get("config", {}).get("arch") != "gat":
        from qgnn_deploy.errors import QgnnError

        raise QgnnError(f"--gat-model {model_path} is not a GAT checkpoint")
    log(f"GAT model {model_path} ({time.perf_counter() - t0:.0f} s)")
    ds = load_dataset(fold.payload.get("dataset", {}).get("name", dataset), cfg.data_root)
    feeds = {k: np.ascontiguousarray(v) for k, v in fold.sample_feeds.items()}
    graph_npz = save_graph(feeds, work / "graph.npz")
    graph_u8, feeds_u8, quant_ms = integer_input_twin(fold.graph, feeds)
    target = cfg.tvm_target if cfg.tvm else "onnx"
    arts: dict[str, Path] = {}
    graphs = {"fp32_input": (fold.graph, feeds), "uint8_input": (graph_u8, feeds_u8)}
    for kind, (g, f) in graphs.items():
        t0 = time.perf_counter()
        arts[kind] = work / f"artifact_gat_{kind}"
        export(g, target, arts[kind], f)
        log(f"GAT artifact {arts[kind]} ({target}, {time.perf_counter() - t0:.0f} s)")
    model = fold.model
    weights = gat_twin_weights(model)
    np.savez(work / "gat_twin_weights.npz", **weights)
    fp32_params = int(sum(v.size for k, v in weights.items() if k[0] in "wab") * 4)  # w, att, b: 4 B each

    per = calls_per_process(cfg.repeats, cfg.processes)  # each row in cfg.processes processes (perf.pooling)
    base = {"graph": str(graph_npz), "threads": cfg.threads, "warmup": cfg.warmup, "repeats": per,
            "kind": "pyg_gat", "weights": str(work / "gat_twin_weights.npz")}
    jobs: dict[str, Job | dict[str, Any]] = {}
    for key, variant, _ in GAT_PYG:
        jobs[key] = ({"error": "skipped (--no-compile)"} if variant == "compile" and not cfg.torch_compile else
                     worker_job({**base, "variant": variant}, work, key, cfg.timeout))
    for key, (backend, kind, _) in GAT_OURS.items():
        if backend == "onnx" or cfg.tvm:
            jobs[key] = ours_job(arts[kind], backend, cfg, per)
    rows = measure_rows(jobs, cfg.processes, log)

    ref = np.load(arts["fp32_input"] / "reference_output.npz")
    ref_logits = ref[ref.files[0]]
    eager = work / "pyg_gat_eager.out.npy"
    for key, row in rows.items():
        row["label"] = GAT_LABELS[key]
        if "error" in row:
            continue
        if key in GAT_OURS:
            kind = GAT_OURS[key][1]
            row["artifact"] = str(arts[kind])
            row["input_contract"] = "uint8 x_q (quantized once per dataset)" if kind != "fp32_input" else "FP32 x"
            row["model_bytes"] = model_bytes(graphs[kind][0])
            row["test_acc"] = accuracy(ref_logits, ds) if row.get("reference_match") else None
        else:
            row["model_bytes"] = fp32_params
            out = work / f"{key}.out.npy"
            if out.is_file():
                row["test_acc"] = accuracy(np.load(out), ds)
                if eager.is_file() and key != "pyg_gat_eager":
                    row["max_abs_diff_vs_pyg_gat_eager"] = float(np.abs(np.load(out) - np.load(eager)).max())
    cfg_payload = fold.payload.get("config") or {}
    res["gat"] = {"dataset": ds.name, "num_nodes": int(feeds["x"].shape[0]),
                  "num_edges": int(feeds["edge_index"].shape[1]), "features": int(feeds["x"].shape[1]),
                  "model": str(model_path), "model_config": cfg_payload,
                  "checkpoint_metrics": fold.payload.get("metrics"),
                  "test_acc_fake_quant": fold.report.get("parity", {}).get("test_acc_fake_quant"),
                  "test_acc_integer_interpreter": accuracy(ref_logits, ds), "input_quantize_once_ms": quant_ms,
                  "rows": rows, "ratios": gat_ratios(rows)}


def gat_markdown(gat: dict[str, Any]) -> list[str]:
    """The GAT section of the report."""
    c = gat.get("model_config") or {}
    lines = ["", f"## GAT: PyG GATConv FP32 vs ours ({gat['dataset']}, N={gat['num_nodes']}, E={gat['num_edges']}, "
             f"F={gat['features']})", "",
             f"Model `{gat['model']}`: {c.get('heads')} heads × {c.get('hidden')} channels, {c.get('out_heads')} "
             f"output head(s), {c.get('framework')} INT{(c.get('bits') or {}).get('weight', '?')}"
             f"{' + LoRAP' if c.get('lorap') else ''}; fake-quant test accuracy "
             f"{_pct(gat.get('test_acc_fake_quant'))}, integer interpreter {_pct(gat['test_acc_integer_interpreter'])}."
             " The PyG twin has the model's (fake-quantized) weights, attention vectors and biases, float softmax, "
             "no prompts.", "",
             "| backend | median ms | p90 | speed-up vs GATConv eager | peak RSS MiB | model KiB | test acc |",
             "|---|---|---|---|---|---|---|"]
    sp = gat["ratios"]["speedup_vs_pyg_gat_eager"]
    for k, r in gat["rows"].items():
        if "error" in r:
            lines.append(f"| {r.get('label', k)} | failed: {r['error'][:120]} | | | | | |")
            continue
        lat = r["latency_ms"]
        rss, mb = r.get("peak_rss_bytes"), r.get("model_bytes")
        lines.append(f"| {r['label']} | {median_text(r)} | {lat['p90']:.3f} | "
                     f"{'—' if k not in sp else f'{sp[k]:.2f}×'} | {'—' if not rss else f'{rss / 2**20:.1f}'} | "
                     f"{'—' if not mb else f'{mb / 1024:.1f}'} | "
                     f"{_pct(r.get('test_acc'))} |")
    lines += process_checks(gat["rows"], GAT_OURS, GAT_LABELS)
    rt = gat["ratios"]
    if rt.get("best_vs_fastest_pyg"):
        lines += ["", f"Our best GAT row ({GAT_LABELS[rt['best_ours']]}, {rt['best_ours_ms']:.3f} ms) against the "
                  f"fastest PyG GATConv row ({GAT_LABELS[rt['fastest_pyg']]}, {rt['fastest_pyg_ms']:.3f} ms): "
                  f"**{rt['best_vs_fastest_pyg']:.2f}×**."]
    return lines


def _pct(v: Any) -> str:
    return "—" if v is None else f"{100 * v:.1f}%"
