"""One fold handler per layer type: quantized PyTorch layer -> integer IR nodes.

Each handler receives the layer's quantized input (:class:`QTensor`) and
returns the layer's pre-activation as an int32 :class:`Acc`; the model-level
fold requantizes it onto the next quantizer (with ReLU as a clamp).  The
formulas mirror ``qgnn_deploy.models.layers`` term by term.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from qgnn_deploy.errors import QgnnError
from qgnn_deploy.fold.emit import Acc, FoldContext, QTensor, quantize_bias_int
from qgnn_deploy.fold.prompts import emit_lorap, gpf_bias
from qgnn_deploy.fold.tables import edge_table
from qgnn_deploy.models.layers import EPS_FRAC, QGCNConv, QGINConv, QSAGEConv
from qgnn_deploy.models.prompts import ALPHA_DEN


@dataclass(frozen=True)
class GraphValues:
    """IR values describing the input graph, shared by every layer."""

    nodes: str  # any [N, ...] value, used as the node-count reference (small, so the input can die early)
    src: str
    dst: str
    degree: str  # int32 [N, 1] in-degree


LayerHandler = Callable[[FoldContext, torch.nn.Module, QTensor, GraphValues, str, np.ndarray | None], Acc]
HANDLERS: dict[type, LayerHandler] = {}


def handler(cls: type) -> Callable[[LayerHandler], LayerHandler]:
    def deco(fn: LayerHandler) -> LayerHandler:
        HANDLERS[cls] = fn
        return fn

    return deco


def fold_layer(fc: FoldContext, layer: torch.nn.Module, x: QTensor, g: GraphValues, name: str,
               extra_bias: np.ndarray | None = None) -> Acc:
    fn = HANDLERS.get(type(layer))
    if fn is None:
        raise QgnnError(f"fold: no integer lowering for layer type {type(layer).__name__}")
    return fn(fc, layer, x, g, name, extra_bias)


def _edge_coefficient(fc: FoldContext, layer, idx: str, name: str) -> str:
    """The layer's quantized edge coefficient per node as int32: a lookup of ``idx`` in the stored table
    (``lut`` or ``lut_steps``, whichever is smaller; see ``fold/tables.py``)."""
    stored = edge_table(layer.q_edge, layer.arch, fc.max_in_degree)
    fc.bitwidths[f"{name}_edge_table"] = int(layer.q_edge.spec.bits)
    e = fc.lookup(idx, stored, f"{name}_edge_q", f"{name}_edge_table")
    return fc.b.op("cast", [e], f"{name}_edge", dtype="int32")


@handler(QGCNConv)
def fold_gcn(fc: FoldContext, layer: QGCNConv, x: QTensor, g: GraphValues, name: str,
             extra_bias: np.ndarray | None) -> Acc:
    b = fc.b
    w_value, w_int, w_scale = fc.weight(f"{name}_w", layer.q_weight, layer.lin.weight)
    acc = fc.matmul(x, w_value, w_int, w_scale, f"{name}_lin", bias=extra_bias)
    h = fc.requant_to(acc, layer.q_message, f"{name}_message")
    # e_i = Q(deg_i^-1/2) with the self loop counted: table index = deg + 1 - 1.
    dmax = fc.max_in_degree
    deg1 = b.op("add", [g.degree, fc.scalar(1)], f"{name}_deg_self")
    e = _edge_coefficient(fc, layer, deg1, name)
    he = b.op("mul", [b.op("cast", [h.value], f"{name}_message_i32", dtype="int32"), e], f"{name}_message_scaled")
    msgs = b.op("gather_rows", [he, g.src], f"{name}_gather")
    agg = b.op("scatter_add", [msgs, g.dst, g.nodes], f"{name}_scatter")
    agg = b.op("add", [agg, he], f"{name}_agg_self")
    emax = layer.q_edge.spec.qmax
    bound = float(h.max_abs_centered) * emax * (dmax + 1)
    fc.check_bound(f"{name}_aggregate_acc", bound)
    s_e = float(layer.q_edge.scale_zp(None)[0])
    agg_acc = Acc(agg, np.asarray(h.scale * s_e * s_e, np.float64), bound)
    a = fc.requant_to(agg_acc, layer.q_aggregate, f"{name}_aggregate", row_factor=e, row_factor_max=emax)
    return prompted_output(fc, layer, a, name)


def prompted_output(fc: FoldContext, layer: Any, a: QTensor, name: str) -> Acc:
    """The requantized aggregate ``a`` plus the layer's LoRAP prompt (when it has one) and bias, as int32.

    Without a prompt the aggregate is scaled onto the ``s_a / 255`` grid the bias was trained on; with one,
    ``emit_lorap`` picks the finer ``s_a / (255 * 2^k)`` grid and the bias is shifted onto it (exact).
    """
    b = fc.b
    grid = layer.q_aggregate.scale_zp(None)[0] / ALPHA_DEN
    bias = quantize_bias_int(layer.bias, grid)  # trained on s_a / 255
    if layer.prompt is not None:
        pre, pbound, den = emit_lorap(fc, a, layer.prompt, f"{name}_lorap")
    else:
        pre = b.op("mul", [fc.centered_int32(a, f"{name}_agg"), fc.scalar(ALPHA_DEN)], f"{name}_agg_x255")
        pbound, den = float(a.max_abs_centered * ALPHA_DEN), ALPHA_DEN
    bias = bias * (den // ALPHA_DEN)  # onto the prompt's s_a / (255 * 2^k) grid (exact: a power of two)
    out = b.op("add", [pre, b.const(f"{name}_bias", bias.reshape(1, -1).astype(np.int32))], f"{name}_out")
    bound = pbound + float(np.abs(bias).max(initial=0))
    fc.check_bound(f"{name}_out", bound)
    return Acc(out, np.asarray(float(grid) / (den // ALPHA_DEN), np.float64), bound)


def _neighbour_sum(fc: FoldContext, kind: str, x: QTensor, g: GraphValues, name: str,
                   extra_bias: np.ndarray | None) -> tuple[str, str]:
    """``(x - zp)`` as int32 and its plain neighbour sum (GIN and SAGE aggregate the layer input itself)."""
    if extra_bias is not None:
        raise QgnnError(f"fold: a constant GPF prompt cannot be folded into {kind} (use --gpf gpf-plus)")
    xc = fc.centered_int32(x, f"{name}_x")
    gathered = fc.b.op("gather_rows", [xc, g.src], f"{name}_gather")
    return xc, fc.b.op("scatter_add", [gathered, g.dst, g.nodes], f"{name}_scatter")


@handler(QGINConv)
def fold_gin(fc: FoldContext, layer: QGINConv, x: QTensor, g: GraphValues, name: str,
             extra_bias: np.ndarray | None) -> Acc:
    b = fc.b
    xc, nsum = _neighbour_sum(fc, "GIN", x, g, name, extra_bias)
    eps_q = int(torch.floor(layer.eps.detach() * EPS_FRAC + 0.5))
    coef = EPS_FRAC + eps_q
    acc = b.op("add", [b.op("mul", [xc, fc.scalar(coef)], f"{name}_self"),
                       b.op("mul", [nsum, fc.scalar(EPS_FRAC)], f"{name}_neigh")], f"{name}_agg_acc")
    bound = float(x.max_abs_centered) * (abs(coef) + EPS_FRAC * fc.max_in_degree)
    fc.check_bound(f"{name}_agg_acc", bound)
    a = fc.requant_to(Acc(acc, np.asarray(x.scale / EPS_FRAC, np.float64), bound), layer.q_aggregate,
                      f"{name}_aggregate")
    mlp_in_q = layer.q_aggregate
    if layer.prompt is not None:
        pre, pbound, den = emit_lorap(fc, a, layer.prompt, f"{name}_lorap")
        a = fc.requant_to(Acc(pre, np.asarray(a.scale / den, np.float64), pbound), layer.q_prompted,
                          f"{name}_prompted")
        mlp_in_q = layer.q_prompted
    w1_value, w1_int, w1_scale = fc.weight(f"{name}_w1", layer.q_w1, layer.lin1.weight)
    w1 = layer.q_w1(layer.lin1.weight)
    grid1 = (mlp_in_q.scale_zp(None)[0] * layer.q_w1.scale_zp(w1)[0]).reshape(-1)
    h_acc = fc.matmul(a, w1_value, w1_int, w1_scale, f"{name}_mlp1", bias=quantize_bias_int(layer.lin1.bias, grid1))
    h = fc.requant_to(h_acc, layer.q_hidden, f"{name}_hidden", relu=True)
    w2_value, w2_int, w2_scale = fc.weight(f"{name}_w2", layer.q_w2, layer.lin2.weight)
    w2 = layer.q_w2(layer.lin2.weight)
    grid2 = (layer.q_hidden.scale_zp(None)[0] * layer.q_w2.scale_zp(w2)[0]).reshape(-1)
    return fc.matmul(h, w2_value, w2_int, w2_scale, f"{name}_mlp2", bias=quantize_bias_int(layer.lin2.bias, grid2))


@handler(QSAGEConv)
def fold_sage(fc: FoldContext, layer: QSAGEConv, x: QTensor, g: GraphValues, name: str,
              extra_bias: np.ndarray | None) -> Acc:
    b = fc.b
    _, nsum = _neighbour_sum(fc, "GraphSAGE", x, g, name, extra_bias)
    dmax = fc.max_in_degree
    e = _edge_coefficient(fc, layer, g.degree, name)
    bound = float(x.max_abs_centered) * dmax
    fc.check_bound(f"{name}_mean_acc", bound)
    s_e = float(layer.q_edge.scale_zp(None)[0])
    a = fc.requant_to(Acc(nsum, np.asarray(x.scale * s_e, np.float64), bound), layer.q_aggregate, f"{name}_mean",
                      row_factor=e, row_factor_max=layer.q_edge.spec.qmax)
    if layer.prompt is not None:
        pre, pbound, den = emit_lorap(fc, a, layer.prompt, f"{name}_lorap")
        a = fc.requant_to(Acc(pre, np.asarray(a.scale / den, np.float64), pbound), layer.q_prompted,
                          f"{name}_prompted")
    if (a.scale, a.zero_point, a.dtype) != (x.scale, x.zero_point, x.dtype):
        raise QgnnError("fold: GraphSAGE mean and input must share one quantization grid")
    cat = b.op("concat", [a.value, x.value], f"{name}_cat", axis=1)
    w_value, w_int, w_scale = fc.weight(f"{name}_w", layer.q_weight, layer.lin.weight)
    w = layer.q_weight(layer.lin.weight)
    grid = (layer._input_q[0].scale_zp(None)[0] * layer.q_weight.scale_zp(w)[0]).reshape(-1)
    xin = QTensor(cat, x.scale, x.zero_point, x.qmin, x.qmax, x.dtype)
    return fc.matmul(xin, w_value, w_int, w_scale, f"{name}_lin", bias=quantize_bias_int(layer.lin.bias, grid))


def gpf_extra_bias(model, layer_index: int, fc: FoldContext) -> np.ndarray | None:
    """GPF's constant prompt becomes an int32 bias of the first GCN matmul."""
    if layer_index != 0 or model.gpf is None or model.gpf.mode != "gpf":
        return None
    layer = model.layers[0]
    if not isinstance(layer, QGCNConv):
        raise QgnnError(f"fold: a constant GPF prompt cannot be folded into {layer.arch} (use --gpf gpf-plus)")
    w_int = layer.q_weight.to_int(layer.lin.weight.detach()).numpy().T
    return gpf_bias(model.gpf, w_int)
