"""Compare the ONNX aggregation formulations in ONNX Runtime on one model and graph (issue 12).

    python examples/ort_aggregation.py --checkpoint cora.pt                       # Cora (the checkpoint's graph)
    python examples/ort_aggregation.py --checkpoint syn128.pt --nodes 100000      # synthetic graph, degree 10

Exports the folded model with ``aggregation="scatter"`` and ``"csr"`` (default), runs each on the edges as given
and sorted by destination, interleaved so load drift hits every variant alike, and prints a markdown table:
median CPU time of a 1-thread session (``time.process_time``: less sensitive to other jobs than wall time),
median wall time at ``--threads``, and the ORT profiler's top kernels (sorted edges).  Every output is
checked against the reference interpreter first.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnxruntime as ort

from qgnn_deploy.backends.onnx import export_onnx
from qgnn_deploy.backends.onnx.segment import sort_edges_by_destination
from qgnn_deploy.ir import run


def _session(data: bytes, threads: int, profile: str | None = None) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    if profile:
        so.enable_profiling = True
        so.profile_file_prefix = profile
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def _top_kernels(data: bytes, feeds: dict[str, np.ndarray], threads: int, runs: int = 3) -> str:
    """ORT profiler: summed kernel time per op type (ms per run, runs after one warm-up), top 6."""
    with tempfile.TemporaryDirectory() as tmp:
        sess = _session(data, threads, os.path.join(tmp, "p"))
        for _ in range(runs + 1):
            sess.run(None, feeds)
        events = json.loads(Path(sess.end_profiling()).read_text())
    windows = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run")[1:]
    per: dict[str, int] = defaultdict(int)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and any(a <= e["ts"] <= b for a, b in windows):
            per[e["args"]["op_name"]] += e["dur"]
    top = sorted(per.items(), key=lambda kv: -kv[1])[:6]
    return ", ".join(f"{op} {us / len(windows) / 1e3:.1f}" for op, us in top if op != "If")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, type=Path)
    ap.add_argument("--nodes", type=int, default=0, help="synthetic graph of this many nodes (0: checkpoint's graph)")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    from qgnn_deploy.fold import fold_checkpoint, fold_model

    if args.nodes:
        from qgnn_deploy.perf.graphs import random_graph
        from qgnn_deploy.train.checkpoint import load_checkpoint

        model, _ = load_checkpoint(args.checkpoint)
        graph = fold_model(model)
        g = random_graph(args.nodes, graph.inputs[0].shape[1], 10.0, seed=1)
        feeds = {"x": g["x"], "edge_index": g["edge_index"]}
    else:
        fold = fold_checkpoint(args.checkpoint)
        graph, feeds = fold.graph, {k: np.ascontiguousarray(v) for k, v in fold.sample_feeds.items()}
    orders = {"as given": feeds["edge_index"], "sorted": sort_edges_by_destination(feeds["edge_index"])}
    want = run(graph, feeds)[graph.outputs[0].name]
    models = {agg: export_onnx(graph, aggregation=agg).SerializeToString() for agg in ("scatter", "csr")}
    sessions = {(agg, th): _session(data, th) for agg, data in models.items() for th in (1, args.threads)}
    for (agg, th), sess in sessions.items():
        for order, ei in orders.items():
            got = sess.run(None, {**feeds, "edge_index": ei})[0]
            assert np.array_equal(got, want), f"{agg} differs from the interpreter ({order}, {th} threads)"
    cpu: dict[tuple[str, str], list[float]] = defaultdict(list)
    wall: dict[tuple[str, str], list[float]] = defaultdict(list)
    for _ in range(args.reps):
        for (agg, th), sess in sessions.items():
            for order, ei in orders.items():
                f = {**feeds, "edge_index": ei}
                c0, t0 = time.process_time(), time.perf_counter()
                sess.run(None, f)
                (cpu if th == 1 else wall)[(agg, order)].append(
                    time.process_time() - c0 if th == 1 else time.perf_counter() - t0
                )
    n, e = feeds["x"].shape[0], feeds["edge_index"].shape[1]
    print(
        f"N={n} E={e}, {args.reps} interleaved runs, load average {os.getloadavg()[0]:.1f}; all outputs equal the "
        "interpreter at 1 and {} threads".format(args.threads)
    )
    print(
        f"\n| aggregation | edges | 1-thread CPU ms (median) | {args.threads}-thread wall ms (median) | "
        "top kernels, sorted edges, 1 thread (ms) |\n|---|---|---|---|---|"
    )
    for agg in models:
        prof = _top_kernels(models[agg], {**feeds, "edge_index": orders["sorted"]}, 1)
        for order in orders:
            print(
                f"| {agg} | {order} | {1e3 * statistics.median(cpu[(agg, order)]):.1f} | "
                f"{1e3 * statistics.median(wall[(agg, order)]):.1f} | {prof if order == 'sorted' else ''} |"
            )


if __name__ == "__main__":
    main()
