"""Activation-buffer estimate of an ONNX model, comparable to :func:`qgnn_deploy.ir.analysis.buffer_report`.

Method: every intermediate value is exposed as a graph output and the model runs
once in ONNX Runtime with graph optimizations disabled on the sample input, so
each value's real shape and dtype on that input are known.  Then the same rule
as the IR definition: walk the nodes in file (topological) order, a value is live
from its producer until its last consumer, graph inputs count, initializers and
``Constant`` outputs do not (they are model size); the peak of the live sum is the
buffer size.  Fusions ORT applies at run time are not reflected (it is the
unfused graph's liveness).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx


def onnx_buffer_bytes(model_path: str | Path, feeds: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """``{"peak_bytes", "input_bytes", "peak_at", "method"}`` for the model at ``model_path`` on ``feeds``."""
    import onnxruntime as ort

    model = onnx.load(str(model_path))
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - types are optional below
        inferred = model
    types = {vi.name: vi.type.tensor_type.elem_type for vi in list(inferred.graph.value_info) +
             list(inferred.graph.output)}
    graph = model.graph
    consts = {i.name for i in graph.initializer}
    consts |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    existing = {o.name for o in graph.output}
    wanted = []
    for node in graph.node:
        for o in node.output:
            if o and o not in consts and o not in existing and types.get(o):
                graph.output.append(onnx.helper.make_tensor_value_info(o, types[o], None))
                wanted.append(o)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    in_names = [i.name for i in sess.get_inputs()]
    outs = sess.run(None, {k: feeds[k] for k in in_names})
    sizes = {o.name: int(np.asarray(v).nbytes) for o, v in zip(sess.get_outputs(), outs)}
    for name in in_names:
        sizes[name] = int(feeds[name].nbytes)
    last_use: dict[str, int] = {}
    for i, node in enumerate(graph.node):
        for name in node.input:
            if name in sizes:
                last_use[name] = i
    final = {o.name for o in model.graph.output if o.name not in wanted}
    live = set(in_names)
    current = sum(sizes[n] for n in live)
    input_bytes = current
    peak, peak_at = current, "inputs"
    for i, node in enumerate(graph.node):
        for out in node.output:
            if out in sizes and out not in live:
                live.add(out)
                current += sizes[out]
        if current > peak:
            peak, peak_at = current, node.name or node.op_type
        for name in set(node.input) | set(node.output):
            if name in live and name not in final and last_use.get(name, -1) <= i:
                live.discard(name)
                current -= sizes[name]
    return {"peak_bytes": int(peak), "input_bytes": int(input_bytes), "peak_at": peak_at,
            "method": "ONNX liveness on the sample (shapes observed by running ORT unoptimized)"}
