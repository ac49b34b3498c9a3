"""Our TVM GEMM vs ORT ``MatMulInteger`` on identical operands, each runtime timed in its own process.

Why separate processes: in one process both thread pools share the cores, and whichever pool spin-waits
after its call (ORT's by default, TVM's for ``TVM_THREAD_POOL_SPIN_COUNT`` yields) steals them from the
other's next call; measured idle on a 2-core EPYC that biased the ratio by up to 2.5x either way
(``examples/results/isa_x86_avx2.md`` section 3).  Here each side runs alone with its runtime's default
settings, in ``sessions`` alternating processes per side (ours, ORT, ours, ORT, ...), so a change of machine
load during the probe hits both sides alike; times of one side are pooled over its sessions.

``python -m qgnn_deploy.perf.gemm_probe SPEC.json`` is one side's process (``side``: ``ours`` / ``ort``);
:func:`gemm_vs_ort` drives them and returns the dict the suite reports (same keys as before).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from qgnn_deploy.perf.config import SuiteConfig
from qgnn_deploy.perf.measure import THREAD_VARS, latency_stats, load_average, pin_threads, time_calls
from qgnn_deploy.perf.pooling import Job, round_robin
from qgnn_deploy.perf.runs import log

BLOCK = 5  # timed calls per block; one untimed call before each block (as the interleaved probe did)


def _ort_model(b: np.ndarray, m: int) -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    k, n = b.shape
    node = helper.make_node("MatMulInteger", ["a", "b"], ["y"])
    g = helper.make_graph([node], "gemm", [helper.make_tensor_value_info("a", TensorProto.UINT8, [m, k])],
                          [helper.make_tensor_value_info("y", TensorProto.INT32, [m, n])],
                          initializer=[numpy_helper.from_array(b, "b")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10  # onnx 1.23 writes IR 14 by default; ORT 1.31 reads up to 13
    return model.SerializeToString()


def run_side(spec: dict[str, Any]) -> dict[str, Any]:
    """One process: time ``spec["side"]`` alone (``repeats`` calls in blocks) and save its output."""
    with np.load(spec["operands"], allow_pickle=False) as z:
        a, b = np.ascontiguousarray(z["a"]), np.ascontiguousarray(z["b"])
    threads, repeats = int(spec["threads"]), int(spec["repeats"])
    if spec["side"] == "ort":
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        so.log_severity_level = 3
        sess = ort.InferenceSession(_ort_model(b, a.shape[0]), so, providers=["CPUExecutionProvider"])

        def call() -> Any:
            return sess.run(None, {"a": a})[0]
        version = f"onnxruntime {ort.__version__}"
    else:
        import tvm
        from tvm import relax

        vm = relax.VirtualMachine(tvm.runtime.load_module(spec["library"]), tvm.cpu())
        at = tvm.runtime.tensor(a)

        def call() -> Any:
            return vm["main"](at)
        version = f"tvm {tvm.__version__}"
    out = call()
    np.save(spec["output"], out if isinstance(out, np.ndarray) else out.numpy())
    for _ in range(3):
        call()
    times: list[float] = []
    for _ in range(-(-repeats // BLOCK)):
        times += time_calls(call, 1, BLOCK)
    return {"side": spec["side"], "times_s": times[:repeats], "runtime": version}


def _run_process(spec: dict[str, Any], work: Path, name: str, timeout: float) -> dict[str, Any]:
    import os

    spec_path = work / f"{name}.spec.json"
    res_path = work / f"{name}.result.json"
    res_path.unlink(missing_ok=True)
    spec_path.write_text(json.dumps(dict(spec, result=str(res_path))))
    env = dict(os.environ, **{v: str(spec["threads"]) for v in THREAD_VARS})
    try:
        proc = subprocess.run([sys.executable, "-m", "qgnn_deploy.perf.gemm_probe", str(spec_path)],
                              capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"{name}: timed out after {timeout:.0f} s"}
    if not res_path.is_file():
        tail = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        return {"error": f"{name}: {tail[:300]}"}
    res = json.loads(res_path.read_text())
    return {"error": f"{name}: {res['error']}"} if "error" in res else res


def gemm_vs_ort(library: Path, operands: Path, work: Path, threads: int, repeats: int, gemm_kernel: str | None,
                sessions: int = 2, timeout: float = 600.0) -> dict[str, Any]:
    """``repeats`` calls per side, split over ``sessions`` alternating processes per side; both sides'
    outputs checked against int64 NumPy (MLAS's AVX2 u8 x s8 path saturates int16 sums, ours must not)."""
    work.mkdir(parents=True, exist_ok=True)
    per = -(-repeats // sessions)
    load = load_average()

    def side_job(side: str) -> Job:
        spec = {"side": side, "threads": threads, "repeats": per, "library": str(library),
                "operands": str(operands), "output": str(work / f"gemm_{side}.npy")}
        return lambda s: _run_process(spec, work, f"gemm_{side}_{s}", timeout)

    runs = round_robin({side: side_job(side) for side in ("ours", "ort")}, sessions, stop_on_error=True)
    failed = next((r for rs in runs.values() for r in rs if "error" in r), None)
    if failed is not None:
        return {"kind": "gemm_probe", "error": failed["error"]}
    times = {side: [t for r in rs for t in r["times_s"]] for side, rs in runs.items()}
    runtimes = {side: rs[-1]["runtime"] for side, rs in runs.items()}
    with np.load(operands, allow_pickle=False) as z:
        a, b = z["a"], z["b"]
    ours, ref = np.load(work / "gemm_ours.npy"), np.load(work / "gemm_ort.npy")
    exact = a.astype(np.int64) @ b.astype(np.int64)
    (m, k), n = a.shape, b.shape[1]
    ops = 2.0 * m * k * n
    t_ours, t_ort = times["ours"][:repeats], times["ort"][:repeats]
    return {"kind": "gemm_probe", "threads": threads, "shape": [m, k, n], "equal": bool(np.array_equal(ours, ref)),
            "ours_exact": bool(np.array_equal(ours, exact)), "ort_exact": bool(np.array_equal(ref, exact)),
            "ort_wrong_elements": int((ref != exact).sum()), "gemm_kernel": gemm_kernel,
            "ort_ms": latency_stats(t_ort), "ours_ms": latency_stats(t_ours),
            "ort_gops_best": ops / min(t_ort) / 1e9, "ours_gops_best": ops / min(t_ours) / 1e9,
            "ort_over_ours_median": float(np.median(t_ort) / np.median(t_ours)),
            "ort_over_ours_best": min(t_ort) / min(t_ours), "runtimes": runtimes, "load_average_before": load,
            "method": f"ORT MatMulInteger (u8 x s8 -> s32, default session options) vs our TVM GEMM-only library "
                      f"on identical operands, each runtime alone in its own process ({sessions} alternating "
                      f"processes per side), blocks of {BLOCK} calls after one untimed call, {repeats} calls per "
                      "side; ratio > 1: ours faster"}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(args[0]).read_text())
    pin_threads(int(spec["threads"]))  # before the runtime's import sizes its pool
    try:
        result = run_side(spec)
    except Exception as exc:  # noqa: BLE001 - reported to the driver as this side's error
        result = {"error": f"{type(exc).__name__}: {str(exc).strip()[:300]}"}
    Path(spec["result"]).write_text(json.dumps(result))
    return 0 if "error" not in result else 1


def gemm_stage(cfg: SuiteConfig, graph: Any, feeds_u8: dict[str, np.ndarray]) -> dict[str, Any]:
    """The model's largest GEMM (u8 features x its int8 weight) as a GEMM-only TVM library for the host, timed
    against ORT ``MatMulInteger`` on identical operands, each alone in its own process (:func:`gemm_vs_ort`)."""
    from qgnn_deploy.backends.tvm.compile import compile_to_dir, gemm_kind
    from qgnn_deploy.backends.tvm.targets import TARGETS
    from qgnn_deploy.ir.graph import GraphBuilder

    weights = [graph.initializers[n.inputs[1]] for n in graph.nodes if n.op == "matmul" and
               n.inputs[1] in graph.initializers and graph.initializers[n.inputs[1]].ndim == 2 and
               graph.initializers[n.inputs[1]].dtype == np.int8]
    if not weights:
        return {"error": "the model has no int8 weight matrix"}
    w = max(weights, key=lambda a: a.size)
    x = next((v for v in feeds_u8.values() if v.dtype == np.uint8 and v.ndim == 2 and v.shape[1] == w.shape[0]),
             None)
    if x is None:  # not the first layer's input: same shape, random codes
        rows = next(iter(feeds_u8.values())).shape[0]
        x = np.random.default_rng(0).integers(0, 256, (rows, w.shape[0]), dtype=np.uint8)
    b = GraphBuilder()
    a = b.input("a", "uint8", ("N", int(w.shape[0])))
    b.output(b.op("matmul", [a, b.const("w", w)], "y"), "int32", ("N", int(w.shape[1])))
    work = cfg.work_dir / "gemm"
    work.mkdir(parents=True, exist_ok=True)
    fields = compile_to_dir(b.graph, cfg.tvm_target, work, sample_feeds={"a": x})
    np.savez(work / "operands.npz", a=x, b=w)
    log(f"GEMM {x.shape[0]}x{w.shape[0]}x{w.shape[1]} vs ORT MatMulInteger")
    return gemm_vs_ort(work / fields["library"], work / "operands.npz", cfg.work_dir / "runs", cfg.threads,
                       10 if cfg.quick else 100, gemm_kind(TARGETS[cfg.tvm_target]), timeout=cfg.timeout)


if __name__ == "__main__":
    sys.exit(main())
