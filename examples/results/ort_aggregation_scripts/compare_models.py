"""Interleaved comparison of ONNX models on one graph (CPU ms at 1 thread, wall ms at 2 threads).

Usage: python compare_models.py IR_STEM GRAPH.npz REPEATS MODEL.onnx... (IR_STEM: ir.graph.Graph.save stem)
"""

import os
import statistics
import sys
import time

import numpy as np
import onnxruntime as ort

from qgnn_deploy.ir.graph import Graph
from qgnn_deploy.ir.passes import prequantized_copy, quantize_input_feeds

ir, gpath, reps = sys.argv[1], sys.argv[2], int(sys.argv[3])
models = sys.argv[4:]
u8 = any("u8" in m for m in models)
g = Graph.load(ir)
with np.load(gpath) as z:
    feeds = {"x": z["x"], "edge_index": z["edge_index"]}
if u8:
    g = prequantized_copy(g)
    feeds = quantize_input_feeds(g, feeds)
ei = feeds["edge_index"]
order = {"unsorted": ei, "sorted": np.ascontiguousarray(ei[:, np.argsort(ei[1], kind="stable")])}
res = {}
sess = {}
for m in models:
    for th in (1, 2):
        so = ort.SessionOptions()
        so.intra_op_num_threads = th
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        sess[(m, th)] = ort.InferenceSession(m, so, providers=["CPUExecutionProvider"])
outs = {}
for (m, th), s in sess.items():
    for o, e in order.items():
        f = {i.name: (e if i.name == "edge_index" else feeds[i.name]) for i in s.get_inputs()}
        outs[(m, th, o)] = s.run(None, f)[0]
base = next(iter(outs.values()))
exact = all(np.array_equal(v, base) for v in outs.values())
cpu = {}
wall = {}
for _ in range(reps):
    for (m, th), s in sess.items():
        for o, e in order.items():
            f = {i.name: (e if i.name == "edge_index" else feeds[i.name]) for i in s.get_inputs()}
            c0, t0 = time.process_time(), time.perf_counter()
            s.run(None, f)
            c, w = time.process_time() - c0, time.perf_counter() - t0
            if th == 1:
                cpu.setdefault((m, o), []).append(c)
            else:
                wall.setdefault((m, o), []).append(w)
print(
    f"graph {gpath} N={feeds[next(iter(feeds))].shape[0]} E={ei.shape[1]} reps={reps}"
    f" all outputs identical: {exact}; load {os.getloadavg()}"
)
for m, o in cpu:
    print(
        f"  {os.path.basename(m):28s} {o:9s} 1-thread CPU median {1e3 * statistics.median(cpu[(m, o)]):9.2f} ms"
        f" (min {1e3 * min(cpu[(m, o)]):8.2f}) | 2-thread wall median {1e3 * statistics.median(wall[(m, o)]):9.2f} ms"
        f" (min {1e3 * min(wall[(m, o)]):8.2f})"
    )
