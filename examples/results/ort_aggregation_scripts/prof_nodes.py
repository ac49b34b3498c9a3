"""Per-node ORT profile (ms per run) of MODEL on GRAPH (sorted edges), THREADS threads."""

import collections
import json
import sys

import numpy as np
import onnxruntime as ort

from qgnn_deploy.backends.onnx.segment import sort_edges_by_destination

model, graph, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
runs = 8
z = np.load(graph)
feeds = {"x": z["x"], "edge_index": sort_edges_by_destination(z["edge_index"])}
so = ort.SessionOptions()
so.intra_op_num_threads = threads
so.inter_op_num_threads = 1
so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
so.enable_profiling = True
so.profile_file_prefix = "/tmp/ortprof"
s = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
for _ in range(runs):
    s.run(None, feeds)
p = s.end_profiling()
ev = json.load(open(p))
agg = collections.defaultdict(list)
op = {}
for e in ev:
    if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
        agg[e["name"]].append(e["dur"])
        op[e["name"]] = e["args"].get("op_name")
print("load", open("/proc/loadavg").read().split()[0])
med = {n: float(np.median(v)) for n, v in agg.items() if op[n] != "If"}
print("sum of node medians ms", sum(med.values()) / 1e3)
for n, d in sorted(med.items(), key=lambda kv: -kv[1])[: int(sys.argv[4]) if len(sys.argv) > 4 else 25]:
    print(f"{op[n]:16s} {d / 1e3:8.2f}  {n[:-12]}")
