"""ORT profiler breakdown of ONNX models, robust under load (issue 12).

    python node_profile.py THREADS RUNS SAMPLE.npz[,SAMPLE2.npz] MODEL.onnx...
    NODE_LIST=10 python node_profile.py ...   # also every node whose minimum is >= 10 us, in run order (section 7)

For each model: the sum over nodes of each node's minimum kernel time across RUNS runs (a load-robust stand-in for
an idle run), per op type, and at THREADS > 1 which op types ran a parallel section (ORT's
``thread_scheduling_stats``: a non-empty ``block_size`` list on the main thread).  SAMPLE.npz: artifacts'
``sample_input.npz`` (x and/or x_q, edge_index), merged; each model gets the inputs it declares.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort


def _parallel(args: dict) -> bool:
    stats = args.get("thread_scheduling_stats")
    if not isinstance(stats, dict):
        return False
    return bool(stats.get("main_thread", {}).get("block_size"))


def profile(path: str, feeds: dict[str, np.ndarray], threads: int, runs: int) -> None:
    names = [i.name for i in onnx.load(path).graph.input]
    f = {k: v for k, v in feeds.items() if k in names}
    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(tmp, "p")
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        for _ in range(runs + 3):
            sess.run(None, f)
        events = json.loads(Path(sess.end_profiling()).read_text())
    model_runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])[3:]
    windows = [(e["ts"], e["ts"] + e["dur"]) for e in model_runs]
    times: dict[str, list[int]] = defaultdict(list)
    op_of: dict[str, str] = {}
    par: dict[str, bool] = defaultdict(bool)
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        if not any(a <= e["ts"] <= b for a, b in windows):
            continue
        node = e["name"][: -len("_kernel_time")]
        times[node].append(e["dur"])
        op_of[node] = e["args"]["op_name"]
        par[node] |= _parallel(e["args"])
    mins = {n: min(v) for n, v in times.items()}
    by_op: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    par_ops: dict[str, int] = defaultdict(int)
    for n, v in mins.items():
        by_op[op_of[n]] += v
        count[op_of[n]] += 1
        par_ops[op_of[n]] += par[n]
    wall = [e["dur"] for e in model_runs]
    print(f"== {Path(path).name}, {threads} thread(s), {runs} runs, load {os.getloadavg()[0]:.1f}: model_run min "
          f"{min(wall) / 1e3:.2f} ms, median {np.median(wall) / 1e3:.2f} ms; sum of node minima "
          f"{sum(mins.values()) / 1e3:.2f} ms over {len(mins)} nodes")
    print("   " + ", ".join(f"{k} {v / 1e3:.2f} ms/{count[k]}" + (f" ({par_ops[k]} parallel)" if threads > 1 else "")
                            for k, v in sorted(by_op.items(), key=lambda kv: -kv[1])))
    floor = os.environ.get("NODE_LIST")
    for n in [n for n in times if floor is not None and mins[n] >= int(floor)]:
        print(f"   {mins[n]:6d} us  {op_of[n]:16s} {n}{'  (parallel)' if par[n] else ''}")


if __name__ == "__main__":
    th, runs = int(sys.argv[1]), int(sys.argv[2])
    feeds = {k: v for f in sys.argv[3].split(",") for k, v in np.load(f).items()}
    for model in sys.argv[4:]:
        profile(model, feeds, th, runs)
