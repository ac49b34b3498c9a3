"""Fold a trained QGNN into the integer IR.

``fold_model`` walks the model in inference order: boundary quantize, optional
GPF prompt, one handler per layer (``fold/layers.py``), requantization onto the
next quantizer with ReLU as a clamp, pooling head for graph tasks, dequantize.
Training-only machinery (Degree-Quant masks, MixQ relaxations, dropout) does
not exist at this point: fold reads the eval-mode quantizers.

``fold_checkpoint`` adds what deployment needs around it: the sample graph the
model was trained on, parity of the integer graph against the fake-quant model,
and a report of bit-widths, float ops and accumulator bounds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qgnn_deploy.errors import QgnnError
from qgnn_deploy.fold import gat as _gat  # noqa: F401  (registers the GAT fold handler)
from qgnn_deploy.fold.emit import Acc, FoldContext, QTensor, quantize_bias_int
from qgnn_deploy.fold.layers import GraphValues, fold_layer, gpf_extra_bias
from qgnn_deploy.fold.prompts import emit_gpf_plus
from qgnn_deploy.ir.graph import Graph
from qgnn_deploy.ir.passes import dedupe_initializers
from qgnn_deploy.models.net import QGNN

DEFAULT_MAX_IN_DEGREE = 1023


def _boundary_quantize(fc: FoldContext, model: QGNN, x: str) -> QTensor:
    q = model.q_inputs[0]
    if not q.spec.enabled:
        raise QgnnError("fold: the model input is not quantized (an FP32 checkpoint cannot be folded into an "
                        "integer graph; train with --framework qat/dq/a2q/mixq)")
    p = q.qparams()
    if p.per_node is not None and p.per_node.get("mode") == "degree_bucket":
        from qgnn_deploy.fold.a2q import quantize_rows_boundary

        return quantize_rows_boundary(fc, q, x)
    if not p.is_per_tensor:
        raise QgnnError("fold: per-node input quantization is not supported by this fold path")
    fc.bitwidths["input"] = int(p.bits)
    v = fc.b.op("quantize", [x], "x_q", scale=float(np.float32(p.scalar_scale())), zero_point=p.zero_point,
                qmin=int(p.qmin), qmax=int(p.qmax), dtype=p.dtype)
    return QTensor(v, p.scalar_scale(), p.zero_point, int(p.qmin), int(p.qmax), p.dtype)


def _check_quantized(model: QGNN) -> None:
    off = [name for name, q in model.quantizers().items() if not q.spec.enabled]
    if off:
        raise QgnnError(f"fold: checkpoint has FP32 components ({', '.join(off[:4])}{'...' if len(off) > 4 else ''}); "
                        "an integer graph needs every component quantized")


def fold_model(model: QGNN, max_in_degree: int = DEFAULT_MAX_IN_DEGREE) -> Graph:
    """Lower ``model`` (eval mode) into an integer graph accepting up to ``max_in_degree``."""
    model.eval()
    _check_quantized(model)
    cfg = model.config
    fc = FoldContext(max_in_degree)
    b = fc.b
    x = b.input("x", "float32", ("N", cfg.in_dim))
    ei = b.input("edge_index", "int64", (2, "E"))
    batch = b.input("batch", "int64", ("N",)) if cfg.task == "graph" else None
    src = b.op("take_row", [ei], "src", index=0)
    dst = b.op("take_row", [ei], "dst", index=1)
    degree = b.op("degree", [dst, x], "in_degree")
    g = GraphValues(nodes=degree, src=src, dst=dst, degree=degree)
    fc.node_degree = g.degree  # A2Q degree-bucketed quantizers pick their per-node parameters from it

    with torch.no_grad():
        cur = _boundary_quantize(fc, model, x)
        if model.gpf is not None and model.gpf.mode == "gpf-plus":
            cur = emit_gpf_plus(fc, cur, model.gpf)
        acc = None
        for i, layer in enumerate(model.layers):
            if i > 0:
                cur = fc.requant_to(acc, model.q_inputs[i], f"layer{i}_input", relu=True)
            acc = fold_layer(fc, layer, cur, g, f"layer{i}", gpf_extra_bias(model, i, fc))
        if cfg.task == "graph":
            h = fc.requant_to(acc, model.q_head_in, "head_input", relu=True)
            pooled = b.op("pool_sum", [fc.centered_int32(h, "head_input"), batch], "pooled_acc")
            # The pooled sum grows with graph size; the interpreter/runtime reject an int32 overflow.
            p = fc.requant_to(Acc(pooled, np.asarray(h.scale, np.float64), 2.0**31 - 1), model.q_pool, "pooled",
                              relu=True)
            w_value, w_int, w_scale = fc.weight("head_w", model.q_head_w, model.head.weight)
            w = model.q_head_w(model.head.weight)
            grid = (model.q_pool.scale_zp(None)[0] * model.q_head_w.scale_zp(w)[0]).reshape(-1)
            acc = fc.matmul(p, w_value, w_int, w_scale, "head", bias=quantize_bias_int(model.head.bias, grid))
        out = fc.requant_to(acc, model.q_output, "output")
    logits = b.op("dequantize", [out.value], "logits", scale=float(np.float32(out.scale)),
                  zero_point=out.zero_point)
    b.output(logits, "float32", ("G" if cfg.task == "graph" else "N", cfg.out_dim))
    graph = b.graph
    graph.meta.update({
        "task": cfg.task, "num_classes": cfg.out_dim, "max_in_degree": fc.max_in_degree, "num_nodes": None,
        "arch": cfg.arch, "framework": cfg.framework, "bitwidths": fc.bitwidths,
        "accumulator_bounds": fc.accumulators, "quantized_output": out.value,
        "output_quant": {"scale": float(np.float32(out.scale)), "zero_point": out.zero_point},
    })
    dedupe_initializers(graph, consumers=("lut", "lut_steps"))  # e.g. every layer's identical degree table
    graph.validate()
    return graph


@dataclass
class FoldResult:
    graph: Graph
    model: QGNN
    sample_feeds: dict[str, np.ndarray]
    checkpoint_sha256: str
    report: dict[str, Any] = field(default_factory=dict)
    payload: dict[str, Any] = field(default_factory=dict)


def sample_feeds_for(payload: dict[str, Any], data_root: str | None = None) -> tuple[dict[str, np.ndarray], Any]:
    """The graph the checkpoint was trained on, as IR feeds (plus the PyG dataset object)."""
    from qgnn_deploy.data.datasets import load_dataset

    name = payload.get("dataset", {}).get("name", "synthetic")
    ds = load_dataset(name, data_root)
    if ds.task == "node":
        d = ds.data
        return {"x": d.x.numpy().astype(np.float32), "edge_index": d.edge_index.numpy().astype(np.int64)}, ds
    from torch_geometric.data import Batch

    batch = Batch.from_data_list([ds.graphs[i] for i in ds.splits["test"]])
    return {"x": batch.x.numpy().astype(np.float32), "edge_index": batch.edge_index.numpy().astype(np.int64),
            "batch": batch.batch.numpy().astype(np.int64)}, ds


def fold_checkpoint(path: str | Path, max_in_degree: int | None = None, data_root: str | None = None) -> FoldResult:
    """Load a checkpoint (weights-only), fold it, and check the integer graph against the model."""
    from qgnn_deploy.fold.parity import parity_report
    from qgnn_deploy.train.checkpoint import file_sha256, load_checkpoint

    model, payload = load_checkpoint(path)
    feeds, ds = sample_feeds_for(payload, data_root)
    observed = int(np.bincount(feeds["edge_index"][1], minlength=feeds["x"].shape[0]).max(initial=0))
    if max_in_degree is None:
        max_in_degree = max(DEFAULT_MAX_IN_DEGREE, int(2 ** np.ceil(np.log2(4 * observed + 1))) - 1)
    if max_in_degree < observed:
        raise QgnnError(f"--max-in-degree {max_in_degree} is below the sample graph's maximum in-degree {observed}")
    graph = fold_model(model, max_in_degree)
    report = {"checkpoint_metrics": payload.get("metrics", {}), "dataset": payload.get("dataset", {}),
              "float_ops": graph.float_ops(), "bitwidths": graph.meta["bitwidths"],
              "accumulator_bounds": graph.meta["accumulator_bounds"], "max_in_degree": max_in_degree,
              "parity": parity_report(model, graph, feeds, ds)}
    return FoldResult(graph, model, feeds, file_sha256(path), report, payload)
