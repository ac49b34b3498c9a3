"""Time every exact x86 int8 GEMM variant this CPU runs against ORT ``MatMulInteger`` on one shape.

    python examples/gemm_x86_variants.py --shape 2708,1433,16 --threads 2 --rounds 50

Each variant is built as a GEMM-only TVM library for the host (``x86_64`` preset, kernel forced through
``BuildOptions.gemm_kind``); all libraries and ORT are called round-robin in one process (blocks of 5 timed
calls after one untimed call: ORT's threads spin after a call) so that a loaded machine slows them alike;
the table reports best and median per call and the ratio to ORT.
The A operand is Cora-like (90% zeros, the rest uniform u8); B is uniform s8, or normal (sigma 30, clipped:
QAT-like, what ``avx2-pair`` is for; with uniform B it falls back to ``avx2``), or ``--operands NPZ`` (arrays
``a`` u8 [M, K] and ``b`` s8 [K, N], e.g. Cora's quantized features and first-layer weight).  Our outputs are checked
against int64 NumPy; ORT's are counted (its AVX2 path saturates).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

BLOCK = 5  # timed calls per kernel per round, after one untimed call


def build(kind: str, k: int, n: int, w: np.ndarray):  # noqa: ANN201 - a relax.VirtualMachine
    import tvm
    from tvm import relax

    from qgnn_deploy.backends.tvm.compile import build_options, pipeline
    from qgnn_deploy.backends.tvm.relax_builder import build_module
    from qgnn_deploy.backends.tvm.targets import TARGETS
    from qgnn_deploy.ir.graph import GraphBuilder

    b = GraphBuilder()
    a = b.input("a", "uint8", ("N", k))
    b.output(b.op("matmul", [a, b.const("w", w)], "y"), "int32", ("N", n))
    preset = TARGETS["x86_64"]
    opts = build_options(preset)
    opts.gemm_kind = kind
    ex = tvm.compile(build_module(b.graph, opts), target=preset.tvm(), relax_pipeline=pipeline(preset))
    return relax.VirtualMachine(ex, tvm.cpu())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="2708,1433,16", help="M,K,N")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--kinds", default="avx2-pair,avx2,avx2-ubsw,sse2,generic")
    ap.add_argument("--weights", choices=("uniform", "normal"), default="uniform")
    ap.add_argument("--operands", help="NPZ with a (u8 [M, K]) and b (s8 [K, N]); overrides --shape/--weights")
    args = ap.parse_args()
    if os.environ.get("TVM_NUM_THREADS") != str(args.threads):  # the pool reads it at start-up
        os.execve(sys.executable, [sys.executable, *sys.argv], dict(os.environ, TVM_NUM_THREADS=str(args.threads)))
    import onnxruntime as ort
    import tvm
    from onnx import TensorProto, helper, numpy_helper

    from qgnn_deploy.backends.tvm.targets import TARGETS

    m, k, n = (int(v) for v in args.shape.split(","))
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (m, k), dtype=np.uint8)
    a[rng.random(a.shape) < 0.9] = 0
    if args.weights == "uniform":
        w = rng.integers(-128, 128, (k, n), dtype=np.int8)
    else:
        w = np.clip(rng.normal(0.0, 30.0, (k, n)).round(), -128, 127).astype(np.int8)
    if args.operands:
        with np.load(args.operands) as z:
            a, w = np.ascontiguousarray(z["a"]), np.ascontiguousarray(z["b"])
        (m, k), n = a.shape, w.shape[1]
    g = helper.make_graph([helper.make_node("MatMulInteger", ["a", "b"], ["y"])], "gemm",
                          [helper.make_tensor_value_info("a", TensorProto.UINT8, [m, k])],
                          [helper.make_tensor_value_info("y", TensorProto.INT32, [m, n])],
                          initializer=[numpy_helper.from_array(w, "b")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = args.threads, 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    exact = a.astype(np.int64) @ w.astype(np.int64)
    ort_wrong = int((sess.run(None, {"a": a})[0] != exact).sum())  # MLAS's AVX2 path saturates vpmaddubsw
    at = tvm.runtime.tensor(a)
    calls = {"ORT MatMulInteger": lambda: sess.run(None, {"a": a})}
    from qgnn_deploy.backends.tvm.gemm_x86 import LANES, pair_plan

    wpad = np.pad(w, ((0, 0), (0, -n % LANES)))
    for kind in args.kinds.split(","):
        vm = build(kind, k, n, w)
        assert np.array_equal(vm["main"](at).numpy(), exact), kind
        if kind == "avx2-pair":
            plan = pair_plan(wpad)
            kind = f"avx2-pair ({plan[1]} residual quads)" if plan else "avx2-pair (fell back to avx2)"
        calls[kind] = lambda vm=vm: vm["main"](at)
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(args.rounds):
        for name, fn in calls.items():
            fn()  # untimed: ORT's pool keeps spinning after a call and would steal the next one's cores
            for _ in range(BLOCK):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    ops = 2.0 * m * k * n
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    host = TARGETS["x86_64"]
    print(f"CPU {cpu} ({', '.join(host.features)}), {args.threads} threads, load {os.getloadavg()[0]:.1f}, "
          f"GEMM {m}x{k}x{n} u8 x s8 -> s32, {args.rounds} round-robin rounds of {BLOCK} calls; "
          "every kernel equals int64 NumPy; "
          f"ORT MatMulInteger differs in {ort_wrong} of {m * n} outputs (saturation)")
    print("\n| kernel | best ms | median ms | Gop/s (best) | ORT / kernel (median) |\n|---|---|---|---|---|")
    ort_med = float(np.median(times["ORT MatMulInteger"]))
    for name, ts in times.items():
        med = float(np.median(ts))
        print(f"| {name} | {1e3 * min(ts):.3f} | {1e3 * med:.3f} | {ops / min(ts) / 1e9:.0f} | {ort_med / med:.2f} |")


if __name__ == "__main__":
    main()
