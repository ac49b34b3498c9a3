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
from qgnn_deploy.fold import a2q as _a2q  # noqa: F401  (registers the degree_bucket per-node handlers)
from qgnn_deploy.fold import gat as _gat  # noqa: F401  (registers the GAT fold handler)
from qgnn_deploy.fold.degree import DEFAULT_MAX_IN_DEGREE, max_in_degree_for, observed_max_in_degree
from qgnn_deploy.fold.emit import PER_NODE_BOUNDARY, Acc, FoldContext, QTensor, quantize_bias_int
from qgnn_deploy.fold.layers import GraphValues, fold_layer, gpf_extra_bias
from qgnn_deploy.fold.prompts import emit_gpf_plus
from qgnn_deploy.ir.graph import Graph
from qgnn_deploy.ir.passes import FOLD_PIPELINE
from qgnn_deploy.models.net import QGNN

__all__ = ["DEFAULT_MAX_IN_DEGREE", "FoldResult", "fold_checkpoint", "fold_model", "max_in_degree_for",
           "observed_max_in_degree", "sample_feeds_for"]


def _boundary_quantize(fc: FoldContext, model: QGNN, x: str) -> QTensor:
    q = model.q_inputs[0]
    if not q.spec.enabled:
        raise QgnnError("fold: the model input is not quantized (an FP32 checkpoint cannot be folded into an "
                        "integer graph; train with --framework qat/dq/a2q/mixq)")
    p = q.qparams()
    rows = PER_NODE_BOUNDARY.get(p.per_node.get("mode")) if p.per_node is not None else None
    if rows is not None:
        return rows(fc, q, x)
    if not p.is_per_tensor:
        raise QgnnError("fold: per-node input quantization is not supported by this fold path")
    v = fc.b.op("quantize", [x], "x_q", scale=float(np.float32(p.scalar_scale())), zero_point=p.zero_point,
                qmin=int(p.qmin), qmax=int(p.qmax), dtype=p.dtype)
    fc.bitwidths[v] = int(p.bits)
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
    FOLD_PIPELINE(graph)  # named graph passes (ir/passes.py), then validate
    return graph


@dataclass
class FoldResult:
    """What :func:`fold_checkpoint` returns: the integer ``graph``, the rebuilt ``model``, the sample graph it
    was trained on as IR feeds, the checkpoint's sha256, the fold ``report`` (parity, bit-widths, float ops,
    bounds) and the raw checkpoint ``payload``."""

    graph: Graph
    model: QGNN
    sample_feeds: dict[str, np.ndarray]
    checkpoint_sha256: str
    report: dict[str, Any] = field(default_factory=dict)
    payload: dict[str, Any] = field(default_factory=dict)
    dataset: Any = None  # the GraphDataset the sample came from (None for an unlabelled --sample-input)


def sample_feeds_for(payload: dict[str, Any], data_root: str | None = None) -> tuple[dict[str, np.ndarray], Any]:
    """The graph the checkpoint was trained on (its recorded dataset spec and split), as IR feeds + the dataset."""
    from qgnn_deploy.data.scoring import dataset_feeds
    from qgnn_deploy.data.specs import load_dataset, parse_spec, spec_of

    described = payload.get("dataset", {}) or {}
    split_seed = int((described.get("split") or {}).get("seed", 0) or 0)
    spec = spec_of(described)
    try:
        parse_spec(spec)
    except QgnnError:
        raise QgnnError(f"the checkpoint's dataset {spec!r} is not a dataset spec this machine can load (a graph "
                        "wrapped in Python?); pass --sample-input graph.npz (x, edge_index[, batch, y])") from None
    ds = load_dataset(spec, data_root, split_seed=split_seed, source=described.get("source"))
    return dataset_feeds(ds), ds


def sample_from_arrays(arrays: dict[str, np.ndarray], path: str | Path | None = None) -> tuple[dict, Any]:
    """A user's sample graph (``--sample-input``): IR feeds, plus a scorable dataset when it carries targets ``y``."""
    dtypes = {"x": np.float32, "edge_index": np.int64, "batch": np.int64}
    feeds = {k: np.asarray(arrays[k]).astype(t) for k, t in dtypes.items() if k in arrays}
    if "y" not in arrays or path is None:
        return feeds, None
    from qgnn_deploy.data.files import load_file
    from qgnn_deploy.data.scoring import dataset_feeds

    ds = load_file(str(path))
    if ds.task == "graph":  # score every graph of the file: the whole file is the test split
        ds.splits = {"train": [], "val": [], "test": list(range(len(ds.graphs)))}
    elif not any(k.endswith("_mask") for k in arrays):
        ds.data.test_mask = ds.data.test_mask | ds.data.train_mask | ds.data.val_mask
    return dataset_feeds(ds), ds


def fold_checkpoint(path: str | Path, max_in_degree: int | None = None, data_root: str | None = None,
                    sample: dict[str, np.ndarray] | None = None, sample_path: str | Path | None = None,
                    dataset: Any = None) -> FoldResult:
    """Load a checkpoint (weights-only), fold it, and check the integer graph against the model.

    The sample graph is ``dataset`` (a loaded ``GraphDataset``, e.g. from ``wrap_data``), else ``sample``
    (arrays of a ``--sample-input`` .npz at ``sample_path``; with targets ``y`` it is scored as well), else the
    checkpoint's recorded dataset spec (under ``data_root``).
    """
    from qgnn_deploy.fold.parity import parity_report
    from qgnn_deploy.train.checkpoint import file_sha256, load_checkpoint

    model, payload = load_checkpoint(path)
    if dataset is not None:
        from qgnn_deploy.data.scoring import dataset_feeds

        feeds, ds = dataset_feeds(dataset), dataset
    elif sample is not None:
        feeds, ds = sample_from_arrays(sample, sample_path)
    else:
        feeds, ds = sample_feeds_for(payload, data_root)
    if "x" not in feeds or "edge_index" not in feeds:
        raise QgnnError("the sample graph needs float features x and edge_index to check the fold against the model")
    observed = observed_max_in_degree(feeds["edge_index"], feeds["x"].shape[0])
    if max_in_degree is None:
        max_in_degree = max_in_degree_for(feeds["edge_index"], feeds["x"].shape[0])
    if max_in_degree < observed:
        raise QgnnError(f"--max-in-degree {max_in_degree} is below the sample graph's maximum in-degree {observed}")
    try:
        graph = fold_model(model, max_in_degree)
    except (ValueError, ArithmeticError) as exc:  # OverflowError from a multiplier, a non-integer zero point, ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise QgnnError(f"fold: {path}: the checkpoint cannot be represented as an integer graph ({first})") from None
    report = {"checkpoint_metrics": payload.get("metrics", {}), "dataset": payload.get("dataset", {}),
              "float_ops": graph.float_ops(), "bitwidths": graph.meta["bitwidths"],
              "accumulator_bounds": graph.meta["accumulator_bounds"], "max_in_degree": max_in_degree,
              "parity": parity_report(model, graph, feeds, ds)}
    return FoldResult(graph, model, feeds, file_sha256(path), report, payload, ds)
