"""Boundary quantize of Cora's x [N, 1433] float32 -> uint8 (issue 12): formulations, interleaved, 1 and 2 threads.

    python boundary_quantize.py ql,ql_flat,chain REPS ARTIFACT/sample_input.npz

ql = QuantizeLinear (what the exporter emits), ql_flat = the same on the flattened tensor, chain =
Div/Round/Clip/Cast.  Each is checked equal to clip(rint(x / s), 0, 255) on x and on random values with ties, and
the profiler says how many parallel sections each node ran at 2 threads.  Wall ms min / median.
"""

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from cora_ab import _session as sess  # this folder is on sys.path when the script runs
from onnx import TensorProto as TP
from onnx import helper as oh
from onnx import numpy_helper as nh

S = np.float32(0.007843137718737125)


def model(kind):
    x = oh.make_tensor_value_info("x", TP.FLOAT, ["N", 1433])
    y = oh.make_tensor_value_info("y", TP.UINT8, ["N", 1433])
    inits = [
        nh.from_array(np.array(S, np.float32), "s"),
        nh.from_array(np.array(0, np.uint8), "zp"),
        nh.from_array(np.array(0, np.float32), "lo"),
        nh.from_array(np.array(255, np.float32), "hi"),
        nh.from_array(np.array([-1], np.int64), "flat"),
        nh.from_array(np.array([-1, 1433], np.int64), "shp"),
    ]
    if kind == "ql":
        nodes = [oh.make_node("QuantizeLinear", ["x", "s", "zp"], ["y"])]
    elif kind == "ql_flat":
        nodes = [
            oh.make_node("Reshape", ["x", "flat"], ["xf"]),
            oh.make_node("QuantizeLinear", ["xf", "s", "zp"], ["yf"]),
            oh.make_node("Reshape", ["yf", "shp"], ["y"]),
        ]
    elif kind == "chain":
        nodes = [
            oh.make_node("Div", ["x", "s"], ["d"]),
            oh.make_node("Round", ["d"], ["r"]),
            oh.make_node("Clip", ["r", "lo", "hi"], ["c"]),
            oh.make_node("Cast", ["c"], ["y"], to=TP.UINT8),
        ]
    g = oh.make_graph(nodes, kind, [x], [y], inits)
    m = oh.make_model(g, opset_imports=[oh.make_opsetid("", 21)])
    m.ir_version = 10
    onnx.checker.check_model(m, full_check=True)
    return m.SerializeToString()


x = np.load(sys.argv[3])["x"]
rng = np.random.default_rng(0)
xr = (rng.standard_normal(x.shape) * 1.5).astype(np.float32)
xr.flat[:1000] = (np.arange(1000) - 500).astype(np.float32) * S / 2  # ties


def want(a):
    return np.clip(np.rint(a / S), 0, 255).astype(np.uint8)


kinds = sys.argv[1].split(",")
reps = int(sys.argv[2])
ss = {}
for k in kinds:
    b = model(k)
    for th in (1, 2):
        s = sess(b, th)
        for a in (x, xr):
            assert np.array_equal(s.run(None, {"x": a})[0], want(a)), (k, th)
        ss[(k, th)] = s
        # profile: parallel?
        with tempfile.TemporaryDirectory() as tmp:
            p = sess(b, th, os.path.join(tmp, "p"))
            p.run(None, {"x": x})
            p.run(None, {"x": x})
            ev = json.loads(Path(p.end_profiling()).read_text())

            def nb(a):
                t = a.get("thread_scheduling_stats", {})
                if isinstance(t, str):
                    return t[:20]
                return t.get("main_thread", {}).get("block_size", [])

            bs = [
                (e["args"]["op_name"], nb(e["args"]))
                for e in ev
                if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")
            ][-len(onnx.load_from_string(b).graph.node) :]
            print(k, th, "parallel sections per node:", bs)
T = {key: [] for key in ss}
for _ in range(reps):
    for key, s in ss.items():
        t = time.perf_counter()
        s.run(None, {"x": x})
        T[key].append(time.perf_counter() - t)
print("load", os.getloadavg())
for key, v in T.items():
    print(key, f"median {np.median(v) * 1e3:.3f} ms, min {min(v) * 1e3:.3f}")
