"""Per-element CPU cost of the ORT 1.31 kernels an aggregation can use (issue 12). Usage: python op_costs.py E"""

import statistics
import sys
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto as TP
from onnx import helper as oh
from onnx import numpy_helper as nh

E = int(sys.argv[1])
N = E // 11
rng = np.random.default_rng(0)


def run(name, nodes, ins, feeds, out_t, inits=()):
    g = oh.make_graph(nodes, "g", ins, [oh.make_tensor_value_info("y", out_t, None)], list(inits))
    m = oh.make_model(g, opset_imports=[oh.make_opsetid("", 21)])
    m.ir_version = 10
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    s = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    s.run(None, feeds)
    ts = []
    for _ in range(15):
        c = time.process_time()
        s.run(None, feeds)
        ts.append(time.process_time() - c)
    print(f"{name:40s} {1e9 * statistics.median(ts) / E:6.2f} ns/elem (E={E})")


vi = oh.make_tensor_value_info
for dt, npdt in ((TP.INT32, np.int32), (TP.INT64, np.int64)):
    tab = rng.integers(0, 100, N).astype(npdt)
    for idt, inp in ((TP.INT64, np.int64), (TP.INT32, np.int32)):
        idx = rng.integers(0, N, E).astype(inp)
        run(
            f"GatherElements tab{npdt.__name__} idx{inp.__name__}",
            [oh.make_node("GatherElements", ["t", "i"], ["y"], axis=0)],
            [vi("t", dt, [N]), vi("i", idt, [E])],
            {"t": tab, "i": idx},
            dt,
        )
        run(
            f"ScatterElements add {npdt.__name__} idx{inp.__name__}",
            [oh.make_node("ScatterElements", ["t", "i", "u"], ["y"], axis=0, reduction="add")],
            [vi("t", dt, [N]), vi("i", idt, [E]), vi("u", dt, [E])],
            {"t": tab, "i": np.sort(idx), "u": rng.integers(0, 9, E).astype(npdt)},
            dt,
        )
    v = rng.integers(0, 100, E).astype(npdt)
    run(
        f"CumSum 1-D {npdt.__name__}",
        [oh.make_node("CumSum", ["v", "ax"], ["y"])],
        [vi("v", dt, [E])],
        {"v": v},
        dt,
        [nh.from_array(np.array(0, np.int64), "ax")],
    )
    run("Cast int64<-int32 / Sub", [oh.make_node("Sub", ["v", "v"], ["y"])], [vi("v", dt, [E])], {"v": v}, dt)
    v16 = rng.integers(0, 100, (E, 16)).astype(npdt)
    run(
        f"CumSum [E,16] axis0 {npdt.__name__} (per row)",
        [oh.make_node("CumSum", ["v", "ax"], ["y"])],
        [vi("v", dt, [E, 16])],
        {"v": v16},
        dt,
        [nh.from_array(np.array(0, np.int64), "ax")],
    )
    run(
        f"Gather rows [N,16] {npdt.__name__} (per row)",
        [oh.make_node("Gather", ["t", "i"], ["y"], axis=0)],
        [vi("t", dt, [N, 16]), vi("i", TP.INT64, [E])],
        {"t": rng.integers(0, 9, (N, 16)).astype(npdt), "i": rng.integers(0, N, E)},
        dt,
    )
    run(
        f"Transpose [E,16] {npdt.__name__} (per row)",
        [oh.make_node("Transpose", ["v"], ["y"], perm=[1, 0])],
        [vi("v", dt, [E, 16])],
        {"v": v16},
        dt,
    )
t8 = rng.integers(-9, 9, (N, 16)).astype(np.int8)
run(
    "Gather rows [N,16] int8 (per row)",
    [oh.make_node("Gather", ["t", "i"], ["y"], axis=0)],
    [vi("t", TP.INT8, [N, 16]), vi("i", TP.INT64, [E])],
    {"t": t8, "i": rng.integers(0, N, E)},
    TP.INT8,
)
d = np.sort(rng.integers(0, N, E))
run(
    "TopK full sort int64",
    [oh.make_node("TopK", ["v", "k"], ["y", "ix"], axis=0, largest=0)],
    [vi("v", TP.INT64, [E])],
    {"v": rng.integers(0, N, E)},
    TP.INT64,
    [nh.from_array(np.array([E], np.int64), "k")],
)
