"""CPU-time micro-benchmark of aggregation formulations in ORT (issue 12).

Usage: python candidates.py N H [threads] [names...]
"""

import os
import statistics
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto as TP
from onnx import helper as oh
from onnx import numpy_helper as nh

N, H = int(sys.argv[1]), int(sys.argv[2])
TH = int(sys.argv[3]) if len(sys.argv) > 3 else 1
E = N * 11
rng = np.random.default_rng(0)
dst = np.sort(rng.integers(0, N, E)).astype(np.int64)
src = rng.integers(0, N, E).astype(np.int64)
T = rng.integers(-(2**20), 2**20, (N, H)).astype(np.int32)
ref = np.zeros((N, H), np.int64)
np.add.at(ref, dst, T[src])
ref = ref.astype(np.int32)


class B:
    def __init__(s):
        s.nodes, s.inits, s.k = [], [], 0

    def c(s, arr, dt):
        s.k += 1
        n = f"c{s.k}"
        s.inits.append(nh.from_array(np.asarray(arr, dt), n))
        return n

    def op(s, t, ins, n_out=1, **a):
        s.k += 1
        outs = [f"v{s.k}_{i}" for i in range(n_out)]
        s.nodes.append(oh.make_node(t, ins, outs, **a))
        return outs[0] if n_out == 1 else outs

    def model(s, out):
        ins = [
            oh.make_tensor_value_info("T", TP.INT32, ["N", H]),
            oh.make_tensor_value_info("src", TP.INT64, ["E"]),
            oh.make_tensor_value_info("dst", TP.INT64, ["E"]),
        ]
        s.nodes.append(oh.make_node("Identity", [out], ["S"]))
        g = oh.make_graph(s.nodes, "g", ins, [oh.make_tensor_value_info("S", TP.INT32, ["N", H])], s.inits)
        m = oh.make_model(g, opset_imports=[oh.make_opsetid("", 21)])
        m.ir_version = 10
        onnx.checker.check_model(m)
        return m


def fill(b, shape, v, dt):
    return b.op("ConstantOfShape", [shape], value=oh.make_tensor("v", dt, [1], [v]))


def rowptr(b, nshape):
    ones = fill(b, b.op("Shape", ["dst"]), 1, TP.INT32)
    deg = b.op("ScatterElements", [fill(b, nshape, 0, TP.INT32), "dst", ones], axis=0, reduction="add")
    d64 = b.op("Cast", [deg], to=TP.INT64)
    return b.op("Concat", [b.c([0], np.int64), b.op("CumSum", [d64, b.c(0, np.int64)])], axis=0)  # [N+1]


def columns(b, t, h):
    tt = b.op("Transpose", [t], perm=[1, 0])
    cols = b.op("Split", [tt], n_out=h, axis=0, num_outputs=h) if h > 1 else [tt]
    return [b.op("Reshape", [c, b.c([-1], np.int64)]) for c in cols]


def stack_back(b, outs, h):
    st = b.op("Concat", outs, axis=0)
    st = b.op("Reshape", [st, b.c([h, -1], np.int64)])
    return b.op("Transpose", [st], perm=[1, 0])


def cand_columns():
    b = B()
    nshape = b.op("Shape", ["T"], start=0, end=1)
    init = fill(b, nshape, 0, TP.INT32)
    outs = [
        b.op("ScatterElements", [init, "dst", b.op("GatherElements", [c, "src"], axis=0)], axis=0, reduction="add")
        for c in columns(b, "T", H)
    ]
    return b.model(stack_back(b, outs, H))


def cand_csrcols(acc=TP.INT64, idx32=False, hilo="gather2"):
    b = B()
    nshape = b.op("Shape", ["T"], start=0, end=1)
    rp = rowptr(b, nshape)
    # src' = [N, src...]: position 0 reads the zero appended at index N, so inclusive CumSum gives X[0..E]
    s = b.op("Concat", [nshape, "src"], axis=0)
    if idx32:
        s = b.op("Cast", [s], to=TP.INT32)
    t = b.op("Cast", ["T"], to=acc) if acc != TP.INT32 else "T"
    t = b.op("Concat", [t, fill(b, b.c([1, H], np.int64), 0, acc)], axis=0)  # [N+1, H], zero row N
    rp_hi = b.op("Slice", [rp, b.c([1], np.int64), b.c([2**62], np.int64)])
    rp_lo = b.op("Slice", [rp, b.c([0], np.int64), b.c([-1], np.int64)])
    if idx32:
        rp_hi, rp_lo, rp32 = (
            b.op("Cast", [rp_hi], to=TP.INT32),
            b.op("Cast", [rp_lo], to=TP.INT32),
            b.op("Cast", [rp], to=TP.INT32),
        )
    else:
        rp32 = rp
    outs = []
    for c in columns(b, t, H):
        x = b.op("CumSum", [b.op("GatherElements", [c, s], axis=0), b.c(0, np.int64)])
        if hilo == "gather2":
            outs.append(
                b.op("Sub", [b.op("GatherElements", [x, rp_hi], axis=0), b.op("GatherElements", [x, rp_lo], axis=0)])
            )
        else:
            at = b.op("GatherElements", [x, rp32], axis=0)
            outs.append(
                b.op(
                    "Sub",
                    [
                        b.op("Slice", [at, b.c([1], np.int64), b.c([2**62], np.int64)]),
                        b.op("Slice", [at, b.c([0], np.int64), b.c([-1], np.int64)]),
                    ],
                )
            )
    y = stack_back(b, outs, H)
    return b.model(y if acc == TP.INT32 else b.op("Cast", [y], to=TP.INT32))


def cand_csr2d(acc=TP.INT64, idx32=False):
    b = B()
    nshape = b.op("Shape", ["T"], start=0, end=1)
    rp = rowptr(b, nshape)
    s = b.op("Concat", [nshape, "src"], axis=0)
    if idx32:
        s = b.op("Cast", [s], to=TP.INT32)
        rp = b.op("Cast", [rp], to=TP.INT32)
    t = b.op("Cast", ["T"], to=acc) if acc != TP.INT32 else "T"
    t = b.op("Concat", [t, fill(b, b.c([1, H], np.int64), 0, acc)], axis=0)
    x = b.op("CumSum", [b.op("Gather", [t, s], axis=0), b.c(0, np.int64)])
    at = b.op("Gather", [x, rp], axis=0)
    d = b.op(
        "Sub",
        [
            b.op("Slice", [at, b.c([1], np.int64), b.c([2**62], np.int64), b.c([0], np.int64)]),
            b.op("Slice", [at, b.c([0], np.int64), b.c([-1], np.int64), b.c([0], np.int64)]),
        ],
    )
    return b.model(d if acc == TP.INT32 else b.op("Cast", [d], to=TP.INT32))


def cand_topk():
    b = B()
    _, perm = b.op("TopK", ["dst", b.op("Shape", ["dst"])], n_out=2, axis=0, largest=0, sorted=1)
    ss = b.op("GatherElements", ["src", perm], axis=0)
    y = b.op("Slice", [b.op("Cast", [ss], to=TP.INT32), b.c([0], np.int64), b.op("Shape", ["T"], start=0, end=1)])
    return b.model(b.op("Expand", [b.op("Unsqueeze", [y, b.c([1], np.int64)]), b.c([1, H], np.int64)]))


def cand_degree():
    b = B()
    rp = rowptr(b, b.op("Shape", ["T"], start=0, end=1))
    y = b.op("Slice", [b.op("Cast", [rp], to=TP.INT32), b.c([1], np.int64), b.c([2**62], np.int64)])
    return b.model(b.op("Expand", [b.op("Unsqueeze", [y, b.c([1], np.int64)]), b.c([1, H], np.int64)]))


cands = {
    "cols_scatter": cand_columns,
    "csrcols64": cand_csrcols,
    "csrcols64_i32": lambda: cand_csrcols(idx32=True),
    "csrcols64_i32_1g": lambda: cand_csrcols(idx32=True, hilo="one"),
    "csrcols32wrap_i32": lambda: cand_csrcols(TP.INT32, True),
    "csr2d64": cand_csr2d,
    "csr2d64_i32": lambda: cand_csr2d(idx32=True),
    "csr2d32wrap_i32": lambda: cand_csr2d(TP.INT32, True),
    "rowptr_only": cand_degree,
    "topk_sort_only": cand_topk,
}
sel = [a for a in sys.argv[4:]] or list(cands)
feeds = {"T": T, "src": src, "dst": dst}
reps = max(3, min(30, int(1e7 // E)))
sess = {}
for name in sel:
    so = ort.SessionOptions()
    so.intra_op_num_threads = TH
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    s = ort.InferenceSession(cands[name]().SerializeToString(), so, providers=["CPUExecutionProvider"])
    out = s.run(None, feeds)[0]
    ok = np.array_equal(out, ref) if "only" not in name else "-"
    sess[name] = (s, ok)
cpu = {n: [] for n in sel}
wall = {n: [] for n in sel}
for _ in range(reps):  # interleaved, so load drift hits every candidate alike
    for name in sel:
        c0, t0 = time.process_time(), time.perf_counter()
        sess[name][0].run(None, feeds)
        cpu[name].append(time.process_time() - c0)
        wall[name].append(time.perf_counter() - t0)
for name in sel:
    print(
        f"N={N} E={E} H={H} th={TH} {name:18s} cpu median {1e3 * statistics.median(cpu[name]):8.2f} ms"
        f"  min {1e3 * min(cpu[name]):8.2f} | wall median {1e3 * statistics.median(wall[name]):8.2f}"
        f" min {1e3 * min(wall[name]):8.2f}  exact={sess[name][1]}",
        flush=True,
    )
print("load", os.getloadavg())
if os.environ.get("PROF"):
    import json
    from collections import defaultdict

    for name in sel:
        so = ort.SessionOptions()
        so.intra_op_num_threads = TH
        so.log_severity_level = 3
        so.enable_profiling = True
        so.profile_file_prefix = "/tmp/ortagg/mprof"
        s = ort.InferenceSession(cands[name]().SerializeToString(), so, providers=["CPUExecutionProvider"])
        for _ in range(4):
            s.run(None, feeds)
        p = s.end_profiling()
        ev = json.load(open(p))
        os.unlink(p)
        runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in ev if e.get("name") == "model_run")[1:]
        per = defaultdict(list)
        for e in ev:
            if (
                e.get("cat") == "Node"
                and e["name"].endswith("_kernel_time")
                and any(a <= e["ts"] <= b for a, b in runs)
            ):
                per[e["args"]["op_name"]].append(e["dur"])
        k = len(runs)
        tot = sum(sum(v) for v in per.values()) / k
        print(
            name,
            f"total {tot / 1e3:.1f} ms:",
            " ".join(
                f"{op}={100 * sum(v) / k / tot:.0f}%" for op, v in sorted(per.items(), key=lambda kv: -sum(kv[1]))
            ),
        )
