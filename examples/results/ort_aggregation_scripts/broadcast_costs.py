"""What one ORT 1.31 CPU node costs on Cora-sized tensors, by broadcast shape (issue 12, section 7).

    python broadcast_costs.py THREADS

Each case is a chain of 40 identical nodes (so ORT cannot merge them); prints microseconds per node, min and
median over 30 interleaved runs (1 thread: CPU time; 2: wall).  N = 2708 rows.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto as T
from onnx import helper, numpy_helper

N, K = 2708, 40
NP = {T.INT32: np.int32, T.DOUBLE: np.float64, T.FLOAT: np.float32}


def _chain(op: str, shape: tuple, const: np.ndarray | None, dt: int, threads: int, **attrs) -> ort.InferenceSession:
    """y_k = op(y_{k-1}[, c]): the constant is 2 (no no-op elimination), the input all ones."""
    nodes, prev = [], "a"
    for k in range(K):
        nodes.append(helper.make_node(op, [prev] + (["c"] if const is not None else []), [f"y{k}"], **attrs))
        prev = f"y{k}"
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("a", dt, list(shape))],
                          [helper.make_tensor_value_info(prev, dt, None)],
                          initializer=[numpy_helper.from_array(const, "c")] if const is not None else [])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    m.ir_version = 10
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])


def main(threads: int) -> None:
    two = lambda shape, dt: np.full(shape, 2, NP[dt])  # noqa: E731
    cases = {
        "int32 [N,1] + []": ("Add", (N, 1), two((), T.INT32), T.INT32),
        "int32 [N,1] + [1,1]": ("Add", (N, 1), two((1, 1), T.INT32), T.INT32),
        "int32 [N,16] + [1,16]": ("Add", (N, 16), two((1, 16), T.INT32), T.INT32),
        "int32 [N,16] + [N,16]": ("Add", (N, 16), two((N, 16), T.INT32), T.INT32),
        "int32 [N,8] - [N,1]": ("Sub", (N, 8), two((N, 1), T.INT32), T.INT32),
        "int32 [N,8] / [N,1]": ("Div", (N, 8), two((N, 1), T.INT32), T.INT32),
        "int32 [N,8] / [N,8]": ("Div", (N, 8), two((N, 8), T.INT32), T.INT32),
        "float64 [N,16] * [1,16]": ("Mul", (N, 16), two((1, 16), T.DOUBLE), T.DOUBLE),
        "float64 [N,16] * [N,1]": ("Mul", (N, 16), two((N, 1), T.DOUBLE), T.DOUBLE),
        "float64 [N,16] * [N,16]": ("Mul", (N, 16), two((N, 16), T.DOUBLE), T.DOUBLE),
        "float64 [N,16] @ diag[16,16]": ("MatMul", (N, 16), np.eye(16) * 2, T.DOUBLE),
        "float64 Floor [N,16]": ("Floor", (N, 16), None, T.DOUBLE),
    }
    sessions = {k: (_chain(op, shape, c, dt, threads), np.ones(shape, NP[dt])) for k, (op, shape, c, dt) in
                cases.items()}
    clock = time.process_time if threads == 1 else time.perf_counter
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(30):
        for k, (s, x) in sessions.items():
            t0 = clock()
            s.run(None, {"a": x})
            times[k].append((clock() - t0) * 1e6 / K)
    print(f"{threads} thread(s), load {os.getloadavg()[0]:.1f}; us per node, min / median")
    for k, v in times.items():
        print(f"| {k} | {min(v):.1f} / {np.median(v):.1f} |")


if __name__ == "__main__":
    main(int(sys.argv[1]))
