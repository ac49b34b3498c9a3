"""One IR requantize (int32 [N, 16] -> int8, per-channel M ~ 2**31, shift 41-42: Cora's layer-0 message) and the
uint8 copy MatMulInteger reads, exported with requantize="int64" vs "auto" (float64), timed interleaved.

    python requantize_ab.py N REPEATS
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import numpy as np
import onnxruntime as ort

from qgnn_deploy.backends.onnx import export_onnx
from qgnn_deploy.ir import run
from qgnn_deploy.ir.graph import GraphBuilder

n, reps = int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
b = GraphBuilder()
acc = b.input("acc", "int32", ("N", 16))
q = b.op("requantize", [acc, b.const("m", rng.integers(2**30, 2**31 - 1, (1, 16)).astype(np.int32)),
                        b.const("s", rng.integers(41, 43, (1, 16)).astype(np.int8))], "q",
         zero_point=0, qmin=-127, qmax=127, dtype="int8")
b.output(b.op("matmul", [q, b.const("w", rng.integers(-60, 60, (16, 8)).astype(np.int8))], "y"), "int32", ("N", 8))
feeds = {"acc": rng.integers(-2**24, 2**24, (n, 16)).astype(np.int32)}
want = run(b.graph, feeds)["y"]
sess = {}
for mode in ("int64", "auto"):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    model = export_onnx(b.graph, requantize=mode)
    sess[mode] = s = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    assert np.array_equal(s.run(None, feeds)[0], want)
    print(mode, "ONNX nodes:", len(model.graph.node))
t: dict[str, list[float]] = {k: [] for k in sess}
for _ in range(reps):
    for k, s in sess.items():
        c = time.process_time()
        s.run(None, feeds)
        t[k].append(time.process_time() - c)
print(f"N={n}, {reps} interleaved runs, 1-thread CPU ms, load {os.getloadavg()[0]:.1f}")
for k, v in t.items():
    print(f"  {k}: median {1e3 * statistics.median(v):.3f} min {1e3 * min(v):.3f}")
