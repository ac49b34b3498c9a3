"""One measurement in its own process: ``python -m qgnn_deploy.perf.worker SPEC.json``.

A fresh process per backend keeps peak memory (VmHWM) and thread pools from
mixing.  The spec (JSON) names the ``kind`` and its inputs; the result is written
as JSON to ``spec["result"]`` (first output saved to ``spec["output"]`` if given).

Kinds:
* ``pyg`` - the PyG twin (``variant``: ``eager``, ``cached``, ``compile``, or ``csr``: cached norm on a CSR
  ``adj_t`` made once by ``T.ToSparseTensor``) or the hand-written ``sparse_csr`` GCN from ``weights`` (.npz).
* ``pyg_gat`` - the PyG ``GATConv`` twin (``variant``: ``eager`` on ``edge_index``, ``csr`` on a CSR ``adj_t``
  made once, ``compile``: ``torch.compile`` of the eager model) from ``weights`` (.npz).
* ``ort`` - any ONNX model (``model``) in ONNX Runtime, default session options, fixed threads.
* ``det_ort`` / ``det_tvm`` - run ``model`` / ``library`` ``runs`` times; sha256 of every output.
* ``probe`` - peak int8 GEMM (ORT MatMulInteger u8 x s8) and memory bandwidth (NumPy copy).
* ``gather_probe`` - random row reads per second on the series' largest graph (:mod:`.gather_probe`).
(Our GEMM against ORT ``MatMulInteger``: :mod:`.gemm_probe`, one process per runtime.)
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from qgnn_deploy.perf.measure import peak_rss_bytes, pin_threads, status_bytes, time_calls, timing


def load_feeds(path: str) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: np.ascontiguousarray(z[k]) for k in z.files if k in ("x", "x_q", "edge_index")}


def _finish(spec: dict[str, Any], result: dict[str, Any], first: np.ndarray | None) -> None:
    result["peak_rss_bytes"] = peak_rss_bytes()
    if first is not None and spec.get("output"):
        np.save(spec["output"], np.asarray(first))
    Path(spec["result"]).write_text(json.dumps(result, indent=1))


def run_pyg(spec: dict[str, Any]) -> None:
    import torch

    from qgnn_deploy.perf.baselines import build_twin

    torch.set_num_threads(int(spec["threads"]))
    feeds = load_feeds(spec["graph"])
    rss_before = status_bytes("VmRSS")
    with np.load(spec["weights"]) as z:
        weights = {k: z[k] for k in z.files}
    variant = spec["variant"]
    if spec["kind"] == "pyg_gat":
        from qgnn_deploy.perf.baselines import build_gat_twin

        model = build_gat_twin(weights)
    else:
        model = build_twin(weights, cached=variant in ("cached", "compile", "csr"))
    x = torch.from_numpy(feeds["x"])
    ei = torch.from_numpy(feeds["edge_index"])
    result: dict[str, Any] = {"kind": spec["kind"], "variant": variant, "threads": torch.get_num_threads(),
                              "rss_before_load_bytes": rss_before, "torch": torch.__version__}
    fn = model
    t0 = time.perf_counter()
    if variant == "csr":  # the adjacency is converted once per dataset, outside the timed calls (reported)
        from qgnn_deploy.perf.baselines import csr_adj_t

        ei = csr_adj_t(x, ei)
        result["adjacency_prep_ms"] = round(1e3 * (time.perf_counter() - t0), 2)
    elif variant == "sparse_csr":
        from qgnn_deploy.perf.baselines import SparseCsrGCN

        hand = SparseCsrGCN(weights, ei, int(x.shape[0]))
        result["adjacency_prep_ms"] = round(1e3 * (time.perf_counter() - t0), 2)

        def fn(x: torch.Tensor, _ei: torch.Tensor) -> torch.Tensor:
            return hand(x)
    if variant == "compile":
        fn = torch.compile(model)
        t0 = time.perf_counter()
        with torch.no_grad():
            fn(x, ei)
        result["compile_seconds"] = round(time.perf_counter() - t0, 2)

    def call() -> torch.Tensor:
        with torch.inference_mode():
            return fn(x, ei)

    first = call().numpy()
    result.update(timing(time_calls(call, int(spec["warmup"]), int(spec["repeats"]))))
    _finish(spec, result, first)


def ort_session(model: str | bytes, threads: int) -> Any:
    """An ORT CPU session as every suite row uses it: ``threads`` intra-op threads, sequential, one inter-op thread."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def run_ort(spec: dict[str, Any]) -> None:
    import onnxruntime as ort

    feeds = load_feeds(spec["graph"])
    rss_before = status_bytes("VmRSS")
    sess = ort_session(spec["model"], int(spec["threads"]))
    names = [i.name for i in sess.get_inputs()]
    f = {n: feeds[n] for n in names}
    first = sess.run(None, f)[0]
    times = time_calls(lambda: sess.run(None, f), int(spec["warmup"]), int(spec["repeats"]))
    result = {"kind": "ort", "threads": int(spec["threads"]), "rss_before_load_bytes": rss_before,
              "onnxruntime": ort.__version__, **timing(times)}
    _finish(spec, result, first)


def _digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]


def run_det(spec: dict[str, Any]) -> None:
    feeds = load_feeds(spec["graph"])
    threads, runs = int(spec["threads"]), int(spec["runs"])
    if spec["kind"] == "det_ort":
        sess = ort_session(spec["model"], threads)
        f = {i.name: feeds[i.name] for i in sess.get_inputs()}

        def call() -> np.ndarray:
            return sess.run(None, f)[0]
    else:
        import tvm
        from tvm import relax

        vm = relax.VirtualMachine(tvm.runtime.load_module(spec["library"]), tvm.cpu())
        args = [tvm.runtime.tensor(feeds[n]) for n in spec["input_order"]]

        def call() -> np.ndarray:
            return vm["main"](*args).numpy()

    digests = [_digest(call()) for _ in range(runs)]
    _finish(spec, {"kind": spec["kind"], "threads": threads, "runs": runs, "digests": digests}, None)


def run_probe(spec: dict[str, Any]) -> None:
    """Peak int8 GEMM ops/s (u8 x s8 -> s32, ORT MatMulInteger) and copy bandwidth (NumPy, one thread)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    threads, size = int(spec["threads"]), int(spec.get("gemm_size", 2048))
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (size, size), dtype=np.uint8)
    b = rng.integers(-128, 128, (size, size), dtype=np.int8)
    node = helper.make_node("MatMulInteger", ["a", "b"], ["y"])
    g = helper.make_graph([node], "gemm", [helper.make_tensor_value_info("a", TensorProto.UINT8, [size, size]),
                                           helper.make_tensor_value_info("b", TensorProto.INT8, [size, size])],
                          [helper.make_tensor_value_info("y", TensorProto.INT32, [size, size])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    m.ir_version = 10  # onnx 1.23 writes IR 14 by default; ORT 1.31 reads up to 13
    sess = ort_session(m.SerializeToString(), threads)
    times = time_calls(lambda: sess.run(None, {"a": a, "b": b}), 2, int(spec.get("repeats", 10)))
    gemm_s = min(times)
    mb = int(spec.get("copy_mib", 512))
    src = np.ones(mb << 20, np.uint8)
    dst = np.empty_like(src)
    copies = time_calls(lambda: np.copyto(dst, src), 1, 5)
    result = {"kind": "probe", "threads": threads, "onnxruntime": ort.__version__, "onnx": onnx.__version__,
              "int8_gemm": {"shape": [size, size, size], "best_s": gemm_s, "ops_per_s": 2 * size**3 / gemm_s,
                            "method": "ORT MatMulInteger u8 x s8 -> s32, best of runs, ops = 2*M*N*K"},
              "memory_bandwidth": {"bytes": 2 * src.nbytes, "best_s": min(copies),
                                   "bytes_per_s": 2 * src.nbytes / min(copies),
                                   "method": f"numpy.copyto of {mb} MiB (read + write), one thread, best of 5"}}
    _finish(spec, result, None)


def run_gather(spec: dict[str, Any]) -> None:
    from qgnn_deploy.perf.gather_probe import run_gather_probe

    _finish(spec, {"kind": "gather_probe", "threads": int(spec["threads"]), **run_gather_probe(spec)}, None)


KINDS = {"pyg": run_pyg, "pyg_gat": run_pyg, "ort": run_ort, "det_ort": run_det, "det_tvm": run_det,
         "probe": run_probe, "gather_probe": run_gather}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(args[0]).read_text())
    pin_threads(int(spec["threads"]))
    try:
        KINDS[spec["kind"]](spec)
    except Exception as exc:  # noqa: BLE001 - reported to the suite as this backend's error
        Path(spec["result"]).write_text(json.dumps({"kind": spec["kind"], "error": f"{type(exc).__name__}: "
                                                    f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"}))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
