"""PyG cached (the bench-suite's twin) and our ONNX models interleaved in one process, same sorted graph (§9).

    THREADS=2 python vs_pyg.py GRAPH_SORTED.npz REPS MODEL.onnx...   # 2-thread wall ms, min / median
    THREADS=1 python vs_pyg.py ...                                     # 1-thread CPU ms (process_time)

One call of each per round, so load drift hits every row alike (the suite times each row in its own process).
Weights: the lead's series twin, ``/tmp/lead/w_s10/series/twin_weights.npz`` (``TWIN`` overrides).
"""

import os
import sys
import time

import numpy as np
import onnxruntime as ort
import torch

from qgnn_deploy.perf.baselines import build_twin

th = int(os.environ.get("THREADS", "2"))
torch.set_num_threads(th)
z = np.load(sys.argv[1])
feeds = {"x": z["x"], "edge_index": z["edge_index"]}
reps, models = int(sys.argv[2]), sys.argv[3:]
with np.load(os.environ.get("TWIN", "/tmp/lead/w_s10/series/twin_weights.npz")) as w:
    pyg = build_twin({k: w[k] for k in w.files}, cached=True)
x, ei = torch.from_numpy(feeds["x"]), torch.from_numpy(feeds["edge_index"])
so = ort.SessionOptions()
so.intra_op_num_threads, so.inter_op_num_threads = th, 1
so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
runs = {"pyg_cached_sorted": lambda: pyg(x, ei)}
for m in models:
    s = ort.InferenceSession(m, so, providers=["CPUExecutionProvider"])
    runs[m] = lambda s=s: s.run(None, feeds)
clock = time.process_time if th == 1 else time.perf_counter
with torch.no_grad():
    for f in runs.values():
        f()  # warm-up; PyG fills its norm cache here
    t: dict = {k: [] for k in runs}
    l0 = os.getloadavg()[0]
    for _ in range(reps):
        for k, f in runs.items():
            t0 = clock()
            f()
            t[k].append(1e3 * (clock() - t0))
print(f"{reps} interleaved runs, {th} thread(s), {'CPU' if th == 1 else 'wall'} ms, "
      f"load {l0:.2f} -> {os.getloadavg()[0]:.2f}")
for k in runs:
    print(f"| {k} | {min(t[k]):.0f} | {np.median(t[k]):.0f} |", flush=True)
