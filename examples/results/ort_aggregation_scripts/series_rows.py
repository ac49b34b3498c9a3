"""Size-series rows (PyG cached, ORT FP32, ours in ORT) at chosen sizes with the bench-suite's own functions.

    python series_rows.py CHECKPOINT WORKDIR N [N ...]

CHECKPOINT is the series model ``qgnn bench-suite`` trains (``synthetic128_int8_lorap.pt``: GCN INT8 + LoRAP,
128 features, 50 epochs).  Each row runs in its own process (``perf.suite.run_worker`` / ``run_ours``, 2 threads,
peak RSS per process) on ``perf.graphs.random_graph(N, 128, 10.0, seed=1)``, like ``suite.series`` does.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from qgnn_deploy.fold import fold_model
from qgnn_deploy.perf.baselines import export_twin_onnx, twin_weights
from qgnn_deploy.perf.graphs import random_graph, save_graph
from qgnn_deploy.perf.measure import load_average
from qgnn_deploy.perf.suite import SuiteConfig, _export, run_ours, run_worker
from qgnn_deploy.train.checkpoint import load_checkpoint


def main() -> None:
    ckpt, work, sizes = Path(sys.argv[1]), Path(sys.argv[2]), [int(n) for n in sys.argv[3:]]
    cfg = SuiteConfig(out_dir=work, work_dir=work, tvm=False, threads=2, timeout=3600.0)
    work.mkdir(parents=True, exist_ok=True)
    model, _ = load_checkpoint(ckpt)
    graph = fold_model(model)
    features = int(graph.inputs[0].shape[1])
    np.savez(work / "twin_weights.npz", **twin_weights(model))
    art = work / "artifact"
    _export(graph, "onnx", art, random_graph(10_000, features, cfg.degree))
    fp32_onnx = export_twin_onnx(twin_weights(model), work / "pyg_fp32.onnx", random_graph(64, features, 4.0))
    for n in sizes:
        feeds = random_graph(n, features, cfg.degree, seed=1)
        path = save_graph(feeds, work / f"graph_{n}.npz")
        e = int(feeds["edge_index"].shape[1])
        del feeds
        reps = max(5, min(cfg.repeats, int(2e7 // max(e, 1))))
        warm = max(1, min(cfg.warmup, 3 if e > 1e6 else cfg.warmup))
        point = {"num_nodes": n, "num_edges": e, "repeats": reps, "load_before": load_average()}
        point["pyg_cached"] = run_worker({"kind": "pyg", "variant": "cached", "graph": str(path),
                                          "weights": str(work / "twin_weights.npz"), "threads": cfg.threads,
                                          "warmup": warm, "repeats": reps}, work / "runs", f"pyg_cached_{n}",
                                         cfg.timeout)
        point["ort_fp32"] = run_worker({"kind": "ort", "model": str(fp32_onnx), "graph": str(path),
                                        "threads": cfg.threads, "warmup": warm, "repeats": reps}, work / "runs",
                                       f"ort_fp32_{n}", cfg.timeout)
        point["ours_ort"] = run_ours(art, "onnx", cfg, path, reps, warm)
        point["load_after"] = load_average()
        path.unlink(missing_ok=True)
        for k in ("pyg_cached", "ort_fp32", "ours_ort"):
            r = point[k]
            print(f"N={n} {k}: median {r.get('latency_ms', {}).get('median')} ms, "
                  f"peak RSS {r.get('peak_rss_bytes', 0) / 2**20:.0f} MiB {r.get('error', '')}", flush=True)
        (work / f"point_{n}.json").write_text(json.dumps(point, indent=1, default=str))


if __name__ == "__main__":
    main()
