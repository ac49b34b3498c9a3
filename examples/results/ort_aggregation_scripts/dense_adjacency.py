"""Dense-adjacency aggregation vs the exporter's per-column scatter, Cora-sized (issue 12, section 7).

    python dense_adjacency.py REPS SAMPLE.npz

Both compute ``S[i] = sum(V[src[e]] for e with dst[e] == i)`` for an int32 ``V[N, 16]`` with GCN's message range
(|v| <= 127 * 255) on the sample's edges, and are checked equal to NumPy:

* ``columns``: ``export_onnx`` of ``scatter_add(gather_rows(V, src), dst)`` (GatherElements + ScatterElements per
  column, what the models ship);
* ``dense``: the count adjacency ``A[N, N]`` (uint8 ScatterElements-add of ones at ``dst * N + src`` into zeros),
  ``V + 32768`` split into low/high bytes, one u8 x u8 ``MatMulInteger(A, [lo | hi])`` (exact for every count
  <= 255, no int16 saturation), ``S = Y_lo + 256 * Y_hi - 32768 * deg``;
* ``dense_gemm_only``: the MatMulInteger alone, on a prebuilt A (a lower bound for any dense variant).

Prints 1-thread CPU ms and 2-thread wall ms (min / median) of interleaved runs.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto as T
from onnx import helper, numpy_helper


def _session(model: onnx.ModelProto, threads: int) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _model(nodes, inputs, output, inits) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info(output, T.INT32, None)],
                          initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    m.ir_version = 10
    return m


def columns_model() -> onnx.ModelProto:
    from qgnn_deploy.backends.onnx import export_onnx
    from qgnn_deploy.ir.graph import GraphBuilder

    b = GraphBuilder()
    v = b.input("v", "int32", ("N", 16))
    ei = b.input("edge_index", "int64", (2, "E"))
    src, dst = b.op("take_row", [ei], "src", index=0), b.op("take_row", [ei], "dst", index=1)
    b.output(b.op("scatter_add", [b.op("gather_rows", [v, src], "g"), dst, v], "s"), "int32", ("N", 16))
    return export_onnx(b.graph)


def dense_model() -> onnx.ModelProto:
    vi = helper.make_tensor_value_info
    n = helper.make_node
    nodes = [
        n("Shape", ["v"], ["n1"], start=0, end=1),
        n("Mul", ["n1", "n1"], ["nn"]),
        n("ConstantOfShape", ["nn"], ["zeros"], value=helper.make_tensor("z", T.UINT8, [1], [0])),
        n("Gather", ["edge_index", "c0"], ["src"], axis=0),
        n("Gather", ["edge_index", "c1"], ["dst"], axis=0),
        n("Shape", ["src"], ["e1"]),
        n("ConstantOfShape", ["e1"], ["ones"], value=helper.make_tensor("o", T.UINT8, [1], [1])),
        n("Add", [n_ := "dstn", "src"], ["flat"]),
        n("ScatterElements", ["zeros", "flat", "ones"], ["a_flat"], axis=0, reduction="add"),
        n("Concat", ["n1", "n1"], ["nn2"], axis=0),
        n("Reshape", ["a_flat", "nn2"], ["a"]),
        n("Add", ["v", "c32768"], ["vp"]),
        n("Mod", ["vp", "c256"], ["lo32"]),
        n("Div", ["vp", "c256"], ["hi32"]),
        n("Concat", ["lo32", "hi32"], ["lohi32"], axis=1),
        n("Cast", ["lohi32"], ["lohi"], to=T.UINT8),
        n("MatMulInteger", ["a", "lohi"], ["y"]),
        n("Split", ["y", "halves"], ["ylo", "yhi"], axis=1),
        n("Mul", ["yhi", "c256"], ["yhi256"]),
        n("Add", ["ylo", "yhi256"], ["ysum"]),
        n("Cast", ["a"], ["a32"], to=T.INT32),
        n("ReduceSum", ["a32", "axis1"], ["deg"], keepdims=1),
        n("Mul", ["deg", "c32768"], ["off"]),
        n("Sub", ["ysum", "off"], ["s"]),
    ]
    nodes.insert(7, n("Mul", ["dst", "n1"], [n_]))
    inits = {"c0": np.array(0, np.int64), "c1": np.array(1, np.int64), "c32768": np.array([[32768]], np.int32),
             "c256": np.array([[256]], np.int32), "halves": np.array([16, 16], np.int64),
             "axis1": np.array([1], np.int64)}
    return _model(nodes, [vi("v", T.INT32, ["N", 16]), vi("edge_index", T.INT64, [2, "E"])], "s", inits)


def gemm_only_model() -> onnx.ModelProto:
    vi = helper.make_tensor_value_info
    return _model([helper.make_node("MatMulInteger", ["a", "b"], ["y"])],
                  [vi("a", T.UINT8, ["N", "N"]), vi("b", T.UINT8, ["N", 32])], "y", {})


def main(reps: int, sample: str) -> None:
    ei = np.load(sample)["edge_index"].astype(np.int64)
    n = int(ei.max()) + 1
    rng = np.random.default_rng(0)
    v = rng.integers(-127 * 255, 127 * 255 + 1, (n, 16)).astype(np.int32)
    want = np.zeros((n, 16), np.int64)
    np.add.at(want, ei[1], v[ei[0]].astype(np.int64))
    a = np.zeros((n, n), np.uint8)
    np.add.at(a, (ei[1], ei[0]), 1)
    cases = {"columns": (columns_model(), {"v": v, "edge_index": ei}),
             "dense": (dense_model(), {"v": v, "edge_index": ei}),
             "dense_gemm_only": (gemm_only_model(), {"a": a, "b": rng.integers(0, 256, (n, 32)).astype(np.uint8)})}
    for th in (1, 2):
        sessions = {k: _session(m, th) for k, (m, _) in cases.items()}
        for k in ("columns", "dense"):
            assert np.array_equal(sessions[k].run(None, cases[k][1])[0], want), (k, th)
        times: dict[str, list[float]] = {k: [] for k in cases}
        load0 = os.getloadavg()[0]
        clock = time.process_time if th == 1 else time.perf_counter
        for _ in range(reps):
            for k, s in sessions.items():
                t0 = clock()
                s.run(None, cases[k][1])
                times[k].append((clock() - t0) * 1e3)
        print(f"N={n} E={ei.shape[1]}, {th} thread(s) ({'CPU' if th == 1 else 'wall'} ms), {reps} interleaved runs, "
              f"load {load0:.1f}; columns and dense equal NumPy")
        for k, t in times.items():
            print(f"| {k} | {min(t):.3f} | {np.median(t):.3f} |")


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
