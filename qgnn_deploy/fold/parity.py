"""Integer graph vs fake-quant model: how far apart, on which nodes, at what accuracy.

The fake-quant model computes in float32: a product such as ``x_fq @ w_fq`` is
rounded, and a value that lands within float error of a rounding boundary can
quantize one step away from the exact integer result the IR computes.  Parity is
therefore reported as the number of output codes that differ and by how much
(expected: none, or a few by one step), plus both accuracies.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from qgnn_deploy.ir.graph import Graph
from qgnn_deploy.ir.interpreter import run
from qgnn_deploy.models.net import QGNN
from qgnn_deploy.quant.frameworks import framework_class
from qgnn_deploy.quant.frameworks.base import Framework


def model_output_codes(model: QGNN, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(float logits, integer output codes) of the fake-quant model on ``feeds``."""
    model.eval()
    with torch.no_grad():
        batch = torch.from_numpy(feeds["batch"]) if "batch" in feeds else None
        logits = model(torch.from_numpy(feeds["x"]), torch.from_numpy(feeds["edge_index"]), batch)
    codes = model.q_output.to_int(logits).numpy()
    return logits.numpy(), codes


def graph_output_codes(graph: Graph, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    env = run(graph, feeds, keep_all=True)
    return env[graph.outputs[0].name], env[graph.meta["quantized_output"]].astype(np.int64)


def parity_report(model: QGNN, graph: Graph, feeds: dict[str, np.ndarray], ds: Any = None) -> dict[str, Any]:
    logits_m, codes_m = model_output_codes(model, feeds)
    logits_g, codes_g = graph_output_codes(graph, feeds)
    diff = np.abs(codes_g - codes_m)
    rep: dict[str, Any] = {
        "output_codes": int(diff.size),
        "mismatched_codes": int((diff > 0).sum()),
        "max_code_diff": int(diff.max(initial=0)),
        "prediction_agreement": float((logits_m.argmax(-1) == logits_g.argmax(-1)).mean()) if diff.size else 1.0,
    }
    if ds is not None:  # accuracy, or MAE for regression (test_mae_*), of both on the test split
        from qgnn_deploy.data.scoring import metric_name, score

        key = metric_name(ds)
        rep[f"test_{key}_fake_quant"] = score(logits_m, ds)
        rep[f"test_{key}_integer"] = score(logits_g, ds)
    return rep


def parity_tolerance(framework: str | None) -> dict[str, float]:
    """The framework's own ``parity_tolerance`` (a hook of :class:`~qgnn_deploy.quant.frameworks.base.Framework`,
    so this generic module names no framework); the base one for an unknown or missing name."""
    try:
        return dict(framework_class(str(framework)).parity_tolerance)
    except KeyError:
        return dict(Framework.parity_tolerance)


def parity_violation(rep: dict[str, Any], framework: str | None) -> str | None:
    """Why ``rep`` (from :func:`parity_report`) is outside the framework's :func:`parity_tolerance`, or None."""
    tol = parity_tolerance(framework)
    codes, bad, worst = int(rep["output_codes"]), int(rep["mismatched_codes"]), int(rep["max_code_diff"])
    allowed = max(tol["mismatched_min"], tol["mismatched_fraction"] * codes)
    if worst <= tol["max_code_diff"] and bad <= allowed:
        return None
    acc = ""
    if "test_acc_fake_quant" in rep:
        acc = f", test accuracy fake-quant {rep['test_acc_fake_quant']:.4f} vs integer {rep['test_acc_integer']:.4f}"
    return (f"the folded integer graph disagrees with the checkpoint's fake-quant model on the sample: "
            f"{bad}/{codes} output codes differ, by up to {worst} (tolerance for {framework or 'this framework'}: "
            f"{int(allowed)} codes by at most {int(tol['max_code_diff'])}){acc}")
