"""Aggregation formulations on Cora's edges (issue 12): out[dst] += T[src] for an int32 table T [N, H].

    python aggregation_packing.py H REPS A,B,C ARTIFACT/sample_input.npz

A: H per-column GatherElements + ScatterElements in int32 (the exporter's).  B: columns c and c + H/2 packed into
one int64 (c + 2**32 * (c + H/2)), H/2 int64 column scatters, unpacked with Mod/Sub/Div (exact while every partial
column sum stays in int32).  C: one Gather of rows + one 2-D ScatterElements with an Expand-ed index.  Each is
checked equal to NumPy; wall ms min / median, 1 and 2 threads, interleaved.
"""

import os
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto as TP
from onnx import helper as oh
from onnx import numpy_helper as nh

H = int(sys.argv[1])
assert H % 2 == 0 or "B" not in sys.argv[3], "B packs column pairs: H must be even"
REPS = int(sys.argv[2])


def mk(kind):
    nodes, inits = [], []

    def c(name, arr):
        inits.append(nh.from_array(np.asarray(arr), name))
        return name

    def n(op, ins, outs=None, **kw):
        outs = outs or [f"{op}_{len(nodes)}"]
        nodes.append(oh.make_node(op, ins, outs, **kw))
        return outs[0] if len(outs) == 1 else outs

    T, src, dst = "T", "src", "dst"
    zeros32 = n("ConstantOfShape", [n("Shape", [T], start=0, end=1)], value=oh.make_tensor("v", TP.INT32, [1], [0]))
    zeros64 = n("ConstantOfShape", [n("Shape", [T], start=0, end=1)], value=oh.make_tensor("v", TP.INT64, [1], [0]))
    flat = c("flat", np.array([-1], np.int64))

    def columns(t, w, zeros):
        tt = n("Transpose", [t], perm=[1, 0])
        parts = n("Split", [tt], [f"sp{k}_{len(nodes)}" for k in range(w)], axis=0, num_outputs=w)
        sc = [
            n(
                "ScatterElements",
                [zeros, dst, n("GatherElements", [n("Reshape", [p, flat]), src], axis=0)],
                axis=0,
                reduction="add",
            )
            for p in parts
        ]
        st = n("Concat", sc, axis=0)
        shp = n("Concat", [c(f"w{w}", np.array([w], np.int64)), n("Shape", [t], start=0, end=1)], axis=0)
        return n("Transpose", [n("Reshape", [st, shp])], perm=[1, 0])

    if kind == "C":
        g2 = n("Gather", [T, src], axis=0)
        idx = n("Expand", [n("Unsqueeze", [dst, c("ax1u", np.array([1], np.int64))]), n("Shape", [g2])])
        zeros2 = n("ConstantOfShape", [n("Shape", [T])], value=oh.make_tensor("v", TP.INT32, [1], [0]))
        n("ScatterElements", [zeros2, idx, g2], ["out"], axis=0, reduction="add")
    elif kind == "A":
        columns(T, H, zeros32)
        nodes[-1].output[0] = "out"
    else:
        h = H // 2
        lo = n(
            "Slice",
            [T, c("s0", np.array([0], np.int64)), c("s1", np.array([h], np.int64)), c("ax1", np.array([1], np.int64))],
        )
        hi = n("Slice", [T, "s1", c("s2", np.array([H], np.int64)), "ax1"])
        P = n(
            "Add",
            [
                n("Cast", [lo], to=TP.INT64),
                n("Mul", [n("Cast", [hi], to=TP.INT64), c("two32", np.array(2**32, np.int64))]),
            ],
        )
        S = columns(P, h, zeros64)
        a = n("Sub", [n("Mod", [n("Add", [S, c("two31", np.array(2**31, np.int64))]), "two32"], fmod=0), "two31"])
        b = n("Div", [n("Sub", [S, a]), "two32"])
        n("Cast", [n("Concat", [a, b], axis=1)], ["out"], to=TP.INT32)
    g = oh.make_graph(
        nodes,
        kind,
        [
            oh.make_tensor_value_info("T", TP.INT32, ["N", H]),
            oh.make_tensor_value_info("src", TP.INT64, ["E"]),
            oh.make_tensor_value_info("dst", TP.INT64, ["E"]),
        ],
        [oh.make_tensor_value_info("out", TP.INT32, ["N", H])],
        inits,
    )
    m = oh.make_model(g, opset_imports=[oh.make_opsetid("", 21)])
    m.ir_version = 10
    onnx.checker.check_model(m, full_check=True)
    return m.SerializeToString()


ei = np.load(sys.argv[4])["edge_index"]
N = 2708
rng = np.random.default_rng(0)
T = rng.integers(-32640, 32641, (N, H)).astype(np.int32)
feeds = {"T": T, "src": ei[0], "dst": ei[1]}
want = np.zeros((N, H), np.int64)
np.add.at(want, ei[1], T[ei[0]].astype(np.int64))
ss = {}
for k in sys.argv[3].split(","):
    b = mk(k)
    for th in (1, 2):
        so = ort.SessionOptions()
        so.intra_op_num_threads = th
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        s = ort.InferenceSession(b, so, providers=["CPUExecutionProvider"])
        for _ in range(3):
            assert np.array_equal(s.run(None, feeds)[0], want), (k, th)
        ss[(k, th)] = s
Tm = {k: [] for k in ss}
for _ in range(REPS):
    for k, s in ss.items():
        t = time.perf_counter()
        s.run(None, feeds)
        Tm[k].append(time.perf_counter() - t)
print("load", os.getloadavg())
for k, v in Tm.items():
    print(k, f"median {np.median(v) * 1e3:.3f} min {min(v) * 1e3:.3f} ms")
