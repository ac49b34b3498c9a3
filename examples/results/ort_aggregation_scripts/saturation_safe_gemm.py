"""Saturation-safe u8 activations x full-range int8 weights in ORT: the former 7-bit split (two u8 x s8
MatMulIntegers, W = 128*A + B), the split as one GEMM on [W_hi | W_lo], u8 x u8 (W + 128, zero point 128), and the
unsafe single u8 x s8 GEMM (inexact on AVX2 without VNNI), timed interleaved (1-thread CPU ms).

    python saturation_safe_gemm.py M K N REPEATS      # Cora layer 0: 2708 1433 16; size series: 100000 128 16
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper
from onnx import numpy_helper as nh

m, k, n, reps = (int(v) for v in sys.argv[1:5])
rng = np.random.default_rng(0)
a = rng.integers(0, 256, (m, k), dtype=np.uint8)
a[:4] = 255
w = rng.integers(-128, 128, (k, n)).astype(np.int16)
w[:, 0], w[:, 1] = 127, -128
hi = np.floor_divide(w + 64, 128)
lo = w - 128 * hi


def model(nodes: list, inits: list) -> bytes:
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("a", TensorProto.UINT8, ["M", k])],
                          [helper.make_tensor_value_info("y", TensorProto.INT32, None)], initializer=inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)], ir_version=10).SerializeToString()


zp, c128 = nh.from_array(np.array(0, np.uint8), "zp"), nh.from_array(np.array(128, np.int32), "c128")
combine = [helper.make_node("Mul", ["h", "c128"], ["h2"]), helper.make_node("Add", ["h2", "l"], ["y"])]
variants = {
    "split, two GEMMs": model([helper.make_node("MatMulInteger", ["a", "whi", "zp"], ["h"]),
                               helper.make_node("MatMulInteger", ["a", "wlo", "zp"], ["l"]), *combine],
                              [nh.from_array(hi.astype(np.int8), "whi"), nh.from_array(lo.astype(np.int8), "wlo"),
                               zp, c128]),
    "split, one GEMM [hi|lo]": model([helper.make_node("MatMulInteger", ["a", "wcat", "zp"], ["hl"]),
                                      helper.make_node("Split", ["hl"], ["h", "l"], axis=1, num_outputs=2),
                                      *combine],
                                     [nh.from_array(np.concatenate([hi, lo], 1).astype(np.int8), "wcat"), zp, c128]),
    "u8 x u8 (W + 128)": model([helper.make_node("MatMulInteger", ["a", "wu", "zp", "zpb"], ["y"])],
                               [nh.from_array((w + 128).astype(np.uint8), "wu"), zp,
                                nh.from_array(np.array(128, np.uint8), "zpb")]),
    "u8 x s8 single (unsafe)": model([helper.make_node("MatMulInteger", ["a", "ws", "zp"], ["y"])],
                                     [nh.from_array(w.astype(np.int8), "ws"), zp]),
}
want = a.astype(np.int64) @ w.astype(np.int64)
sess = {}
for name, data in variants.items():
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    sess[name] = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    print(f"{name}: {'exact' if np.array_equal(sess[name].run(None, {'a': a})[0], want) else 'WRONG'}")
t: dict[str, list[float]] = {name: [] for name in sess}
for _ in range(reps):
    for name, s in sess.items():
        c = time.process_time()
        s.run(None, {"a": a})
        t[name].append(time.process_time() - c)
print(f"{m}x{k}x{n}, {reps} interleaved runs, 1-thread CPU ms, load {os.getloadavg()[0]:.1f}")
for name, v in t.items():
    print(f"  {name}: median {1e3 * statistics.median(v):.2f} min {1e3 * min(v):.2f}")
