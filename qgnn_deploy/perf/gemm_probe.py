"""The model's largest GEMM in our TVM kernel against ORT ``MatMulInteger``, interleaved in one process."""

from __future__ import annotations

from typing import Any

import numpy as np

from qgnn_deploy.perf.config import SuiteConfig
from qgnn_deploy.perf.runs import log, run_worker


def gemm_stage(cfg: SuiteConfig, graph: Any, feeds_u8: dict[str, np.ndarray]) -> dict[str, Any]:
    """The model's largest GEMM (u8 features x its int8 weight) as a GEMM-only TVM library for the host, timed
    against ORT ``MatMulInteger`` on identical operands in one process (:func:`.worker.run_gemm_pair`)."""
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
    fields = compile_to_dir(b.graph, "x86_64", work, sample_feeds={"a": x})
    np.savez(work / "operands.npz", a=x, b=w)
    log(f"GEMM {x.shape[0]}x{w.shape[0]}x{w.shape[1]} vs ORT MatMulInteger")
    return run_worker({"kind": "gemm_pair", "threads": cfg.threads, "library": str(work / fields["library"]),
                       "operands": str(work / "operands.npz"), "repeats": 10 if cfg.quick else 100,
                       "gemm_kernel": gemm_kind(TARGETS["x86_64"])}, cfg.work_dir / "runs", "gemm_pair", cfg.timeout)


