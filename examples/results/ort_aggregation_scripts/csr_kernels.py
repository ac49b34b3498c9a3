"""Microbench of candidate ORT kernels on series sizes: 1-thread CPU ms, min/median."""

import sys
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto as TP
from onnx import helper

N, E, H = 100000, 1100000, int(sys.argv[1]) if len(sys.argv) > 1 else 16
threads = int(sys.argv[2]) if len(sys.argv) > 2 else 1
rng = np.random.default_rng(0)
src = rng.integers(0, N, E).astype(np.int64)
DT = {"int8": TP.INT8, "int16": TP.INT16, "int32": TP.INT32, "int64": TP.INT64}


def model(nodes, inputs, out, dtype_out):
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, DT[t], None) for n, t in inputs],
        [helper.make_tensor_value_info(out, DT[dtype_out], None)],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    m.ir_version = 10
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])


cases = {}
for dt in ("int8", "int16", "int32", "int64"):
    t = rng.integers(-100, 100, (N + 1, H)).astype(dt)
    cases[f"Gather rows {dt}"] = (
        model([helper.make_node("Gather", ["t", "i"], ["y"], axis=0)], [("t", dt), ("i", "int64")], "y", dt),
        {"t": t, "i": src},
    )
v16 = rng.integers(-30000, 30000, (E, H)).astype(np.int16)
cases["Cast int16->int32 [E,H]"] = (
    model([helper.make_node("Cast", ["a"], ["y"], to=TP.INT32)], [("a", "int16")], "y", "int32"),
    {"a": v16},
)
v32 = v16.astype(np.int32)
ax = {"ax0": np.array(0, np.int64), "ax1": np.array(1, np.int64)}
cases["CumSum int32 [E,H] ax0"] = (
    model([helper.make_node("CumSum", ["a", "ax"], ["y"])], [("a", "int32"), ("ax", "int64")], "y", "int32"),
    {"a": v32, "ax": ax["ax0"]},
)
cases["CumSum int64 [E,H] ax0"] = (
    model([helper.make_node("CumSum", ["a", "ax"], ["y"])], [("a", "int64"), ("ax", "int64")], "y", "int64"),
    {"a": v32.astype(np.int64), "ax": ax["ax0"]},
)
c = 32768
m = -(-E // c)
vp = np.zeros((m * c, H), np.int32)
vp[:E] = v32
cases["CumSum int32 [m,c,H] ax1"] = (
    model([helper.make_node("CumSum", ["a", "ax"], ["y"])], [("a", "int32"), ("ax", "int64")], "y", "int32"),
    {"a": vp.reshape(m, c, H), "ax": ax["ax1"]},
)
cases["Cast int32->int64 [E,H]"] = (
    model([helper.make_node("Cast", ["a"], ["y"], to=TP.INT64)], [("a", "int32")], "y", "int64"),
    {"a": v32},
)
# per-column GatherElements int32 (H of them)
cols = [f"c{k}" for k in range(H)]
t32 = rng.integers(-100, 100, (H, N + 1)).astype(np.int32)
nodes = [helper.make_node("GatherElements", [c_, "i"], [f"g{k}"], axis=0) for k, c_ in enumerate(cols)]
nodes.append(helper.make_node("Concat", [f"g{k}" for k in range(H)], ["y"], axis=0))
cases["GatherElements 1-D x H int32 (+concat)"] = (
    model(nodes, [(c_, "int32") for c_ in cols] + [("i", "int64")], "y", "int32"),
    {**{c_: t32[k] for k, c_ in enumerate(cols)}, "i": src},
)
# per-row factor multiply: int32 [E,H] * [E,1]
f = rng.integers(0, 255, (E, 1)).astype(np.int32)
cases["Mul int32 [E,H]*[E,1]"] = (
    model([helper.make_node("Mul", ["a", "f"], ["y"])], [("a", "int32"), ("f", "int32")], "y", "int32"),
    {"a": v32, "f": f},
)
reps = int(sys.argv[3]) if len(sys.argv) > 3 else 7
clock = time.process_time if threads == 1 else time.perf_counter
res = {k: [] for k in cases}
for s, fd in cases.values():
    s.run(None, fd)
for _ in range(reps):
    for k, (s, fd) in cases.items():
        t0 = clock()
        s.run(None, fd)
        res[k].append(1e3 * (clock() - t0))
print(f"H={H} threads={threads} load {open('/proc/loadavg').read().split()[0]}")
for k, v in res.items():
    print(f"{k:40s} {min(v):8.2f} {np.median(v):8.2f}")
