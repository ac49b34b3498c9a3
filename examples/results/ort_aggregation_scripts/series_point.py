"""1-thread CPU time, interleaved: PyG cached twin vs ORT FP32 twin vs our ORT artifact (scatter default), 10^5 nodes.

Run from a directory holding graph_100000.npz (perf.graphs.random_graph(100000, 128, 10.0, seed=1)), the series
model's twin weights as smoke/tw.npz (perf.baselines.twin_weights), syn128_ort_fp32.onnx (export_twin_onnx) and
syn128_scatter.onnx (export_onnx of the folded series model).  Usage: python series_point.py REPEATS
"""

import os
import statistics
import sys
import time

import numpy as np
import onnxruntime as ort
import torch

from qgnn_deploy.perf.baselines import build_twin

torch.set_num_threads(1)
with np.load("graph_100000.npz") as z:
    x, ei = z["x"], z["edge_index"]
with np.load("smoke/tw.npz") as z:
    w = {k: z[k] for k in z.files}
m = build_twin(w, cached=True)
xt, et = torch.from_numpy(x), torch.from_numpy(ei)


def pyg():
    with torch.inference_mode():
        return m(xt, et)


so = ort.SessionOptions()
so.intra_op_num_threads = 1
so.log_severity_level = 3
sess = {
    k: ort.InferenceSession(f"syn128_{k}.onnx", so, providers=["CPUExecutionProvider"]) for k in ("ort_fp32", "scatter")
}
fns = {
    "pyg_cached": pyg,
    "ort_fp32": lambda: sess["ort_fp32"].run(None, {"x": x, "edge_index": ei}),
    "ours_ort (scatter)": lambda: sess["scatter"].run(None, {"x": x, "edge_index": ei}),
}
for f in fns.values():
    f()
cpu = {k: [] for k in fns}
for _ in range(int(sys.argv[1])):
    for k, f in fns.items():
        c = time.process_time()
        f()
        cpu[k].append(time.process_time() - c)
print("load", os.getloadavg())
for k, v in cpu.items():
    print(f"  {k:20s} 1-thread CPU median {1e3 * statistics.median(v):8.1f} ms (min {1e3 * min(v):8.1f})")
