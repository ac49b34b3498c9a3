"""ONNX Runtime session wrapper: validated inputs, fixed threads, and a report of the kernels that ran.

Inputs are checked (:mod:`qgnn_deploy.validation`, shared by every runner) *before* ORT sees them
because ORT's failure modes are poor for our contract: an out-of-range edge index is a long multi-line error (or,
for negative ids, silently wraps in Gather), and an in-degree above the folded
limit silently overflows the int32 accumulators.  Every problem is one line of
:class:`~qgnn_deploy.errors.QgnnError`.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from qgnn_deploy.errors import QgnnError
from qgnn_deploy.ir.graph import Graph, ValueInfo
from qgnn_deploy.validation import ValidationError
from qgnn_deploy.validation import validate_feeds as shared_validate_feeds

_NP_FROM_ONNX = {onnx.TensorProto.UINT8: "uint8", onnx.TensorProto.INT8: "int8", onnx.TensorProto.INT16: "int16",
                 onnx.TensorProto.INT32: "int32", onnx.TensorProto.INT64: "int64", onnx.TensorProto.FLOAT: "float32"}

def _spec_from_model(model: onnx.ModelProto) -> tuple[list[ValueInfo], dict[str, Any]]:
    inputs = []
    for vi in model.graph.input:
        t = vi.type.tensor_type
        dims: list[int | str] = [d.dim_param if d.dim_param else d.dim_value for d in t.shape.dim]
        inputs.append(ValueInfo(vi.name, _NP_FROM_ONNX.get(t.elem_type, str(t.elem_type)), tuple(dims)))
    meta: dict[str, Any] = {}
    for p in model.metadata_props:
        if p.key.startswith("qgnn."):
            v: Any = p.value
            try:
                v = int(v)
            except ValueError:
                pass
            meta[p.key[5:]] = v
    return inputs, meta


def validate_feeds(inputs: list[ValueInfo], meta: Mapping[str, Any], feeds: Mapping[str, Any]) -> dict[str, Any]:
    """Check feeds against the graph's input spec and limits (:mod:`qgnn_deploy.validation`); returns facts."""
    try:
        return shared_validate_feeds(inputs, meta, feeds)
    except ValidationError as exc:
        raise QgnnError(str(exc)) from None


def _session_options(threads: int, optimized_model_path: str | None = None, profile_prefix: str | None = None,
                     level: str = "all", allow_spinning: bool = True) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3  # errors only: the optimized-model dump warns about hardware-specific fusions
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Spinning worker threads win on an idle machine but lose badly when the cores are shared
    # (measured here under load: 2 threads 16 ms spinning vs 4.8 ms not, op zoo at Cora size).
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    if optimized_model_path:
        so.optimized_model_filepath = str(optimized_model_path)
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = str(profile_prefix)
    return so


class OnnxRunner:
    """An ORT CPU session for one exported integer graph, with input validation.

    ``graph`` (the IR) supplies the input spec and ``meta`` limits; without it the
    spec is read from the ONNX model's inputs and its ``qgnn.*`` metadata props.
    """

    def __init__(self, model: str | Path | bytes | onnx.ModelProto, graph: Graph | None = None, *, threads: int = 1,
                 optimized_model_path: str | Path | None = None, profile_prefix: str | Path | None = None,
                 level: str = "all", allow_spinning: bool = True) -> None:
        import onnxruntime as ort

        if isinstance(model, onnx.ModelProto):
            proto, data = model, model.SerializeToString()
        elif isinstance(model, bytes):
            proto, data = onnx.load_from_string(model), model
        else:
            path = Path(model)
            if not path.is_file():
                raise QgnnError(f"ONNX model {path} not found")
            data = path.read_bytes()
            proto = onnx.load_from_string(data)
        if graph is not None:
            self.inputs, self.meta = list(graph.inputs), dict(graph.meta)
        else:
            self.inputs, self.meta = _spec_from_model(proto)
        self.output_names = [o.name for o in proto.graph.output]
        so = _session_options(threads, str(optimized_model_path) if optimized_model_path else None,
                              str(profile_prefix) if profile_prefix else None, level, allow_spinning)
        try:
            self.session = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise QgnnError(f"ONNX Runtime cannot load the model: {first}") from None
        self.threads = threads

    def validate(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        return validate_feeds(self.inputs, self.meta, feeds)

    def run(self, feeds: Mapping[str, Any], validate: bool = True) -> dict[str, np.ndarray]:
        """Outputs by name; raises QgnnError on a bad input or a runtime failure."""
        if validate:
            self.validate(feeds)
        try:
            outs = self.session.run(None, {v.name: feeds[v.name] for v in self.inputs})
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise QgnnError(f"ONNX Runtime failed: {first}") from None
        return dict(zip(self.output_names, outs))

    def time(self, feeds: Mapping[str, Any], repeats: int = 20, warmup: int = 3) -> list[float]:
        """Wall-clock seconds of ``repeats`` runs after ``warmup`` runs (inputs validated once)."""
        self.validate(feeds)
        ort_feeds = {v.name: feeds[v.name] for v in self.inputs}
        for _ in range(warmup):
            self.session.run(None, ort_feeds)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            self.session.run(None, ort_feeds)
            times.append(time.perf_counter() - t0)
        return times

    def end_profiling(self) -> str:
        return self.session.end_profiling()


def kernel_report(model: str | Path | bytes | onnx.ModelProto, feeds: Mapping[str, Any], graph: Graph | None = None,
                  threads: int = 1, runs: int = 5) -> dict[str, Any]:
    """Which kernels ORT actually used: the optimized graph's op types and the profiled per-op times.

    ``optimized_ops`` counts node types in ``SessionOptions.optimized_model_filepath``
    (after ORT's fusions); ``profiled`` gives, per op type, the calls and the median
    over ``runs`` profiled runs (after one warm-up run) of the summed kernel time.
    """
    with tempfile.TemporaryDirectory(prefix="qgnn-kernels-") as tmp:
        opt_path = os.path.join(tmp, "optimized.onnx")
        runner = OnnxRunner(model, graph, threads=threads, optimized_model_path=opt_path,
                            profile_prefix=os.path.join(tmp, "profile"))
        for _ in range(runs + 1):
            runner.run(feeds)
        prof_path = runner.end_profiling()
        opt = onnx.load(opt_path)
        events = json.loads(Path(prof_path).read_text())
    ops = Counter((f"{n.domain}." if n.domain and n.domain != "ai.onnx" else "") + n.op_type for n in opt.graph.node)
    windows = sorted((int(ev["ts"]), int(ev["ts"]) + int(ev.get("dur", 0))) for ev in events
                     if ev.get("name") == "model_run")[1:]  # drop the warm-up run
    per_run: list[dict[str, list[int]]] = [{} for _ in windows]
    providers: set[str] = set()
    for ev in events:
        args = ev.get("args", {})
        if ev.get("cat") != "Node" or not str(ev.get("name", "")).endswith("_kernel_time"):
            continue
        ts = int(ev.get("ts", 0))
        k = next((i for i, (t0, t1) in enumerate(windows) if t0 <= ts <= t1), None)
        if k is None:
            continue
        providers.add(args.get("provider", "?"))
        per_run[k].setdefault(args.get("op_name", "?"), []).append(int(ev.get("dur", 0)))
    profiled: dict[str, dict[str, Any]] = {}
    for op in sorted({op for run in per_run for op in run}):
        totals = [sum(run.get(op, [])) for run in per_run]
        profiled[op] = {"calls": len(per_run[0].get(op, [])) if per_run else 0,
                        "total_us": int(statistics.median(totals)) if totals else 0}
    profiled = dict(sorted(profiled.items(), key=lambda kv: -kv[1]["total_us"]))
    # kernels that would break bit-exactness (ORT rewrites int4 DQ->MatMul into MatMulNBits, see toolchain notes)
    inexact = sorted(op for op in ops if op.split(".")[-1] in ("MatMulNBits", "DynamicQuantizeMatMul",
                                                                  "MatMulIntegerToFloat"))
    return {
        "threads": threads,
        "runs": len(windows),
        "optimized_ops": dict(sorted(ops.items())),
        "profiled": profiled,
        "profiled_total_us": sum(e["total_us"] for e in profiled.values()),
        "providers": sorted(providers),
        "integer_matmul": [op for op in ops if op.endswith("MatMulInteger")],
        "inexact_kernels": inexact,
    }
