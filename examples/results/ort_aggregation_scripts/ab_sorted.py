"""Interleaved A/B of whole models on the sorted 10^5 series graph: exact vs interpreter at 1 and 2 threads,
then 1-thread CPU ms (AB_THREADS=1) or 2-thread wall ms (AB_THREADS=2), min / median."""

import os
import sys
import time

import numpy as np
import onnxruntime as ort

from qgnn_deploy.backends.onnx.segment import sort_edges_by_destination

graph_npz, reps, models = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
z = np.load(graph_npz)
feeds = {"x": z["x"], "edge_index": sort_edges_by_destination(z["edge_index"])}


def sess(m, th):
    so = ort.SessionOptions()
    so.intra_op_num_threads = th
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(m, so, providers=["CPUExecutionProvider"])


if os.environ.get("CHECK", "1") == "1":
    from qgnn_deploy.ir import run as interpret
    from qgnn_deploy.ir.graph import Graph

    g = Graph.load(os.environ.get("IR", "s/ir"))
    want = interpret(g, feeds)[g.outputs[0].name]
    for m in models:
        for th in (1, 2):
            s = sess(m, th)
            for _ in range(2):
                assert np.array_equal(s.run(None, feeds)[0], want), (m, th)
    print("all equal the interpreter at 1 and 2 threads (sorted edges)")
th = int(os.environ.get("AB_THREADS", "1"))
ss = {m: sess(m, th) for m in models}
for s in ss.values():
    s.run(None, feeds)
clock = time.process_time if th == 1 else time.perf_counter
t = {m: [] for m in models}
l0 = os.getloadavg()[0]
for _ in range(reps):
    for m, s in ss.items():
        t0 = clock()
        s.run(None, feeds)
        t[m].append(1e3 * (clock() - t0))
print(
    f"{reps} interleaved runs, {th} thread(s), {'CPU' if th == 1 else 'wall'} ms, "
    f"load {l0:.2f} -> {os.getloadavg()[0]:.2f}"
)
for m in models:
    print(f"| {m} | {min(t[m]):.1f} | {np.median(t[m]):.1f} |")
