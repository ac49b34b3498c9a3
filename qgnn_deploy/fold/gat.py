"""Fold handler for :class:`~qgnn_deploy.models.gat.QGATConv`: graph attention as integer IR ops.

Mirrors ``models/gat.py`` term by term, one head at a time (the IR has no slicing op, so every head is its own
column block: its weight slice, logits, segment softmax and weighted sum), using existing ops only:

* ``h_k``: ``matmul`` + ``requantize`` (int8); logits ``p_k, q_k``: ``matmul`` with the int8 attention vector
  column + ``requantize`` onto the shared logit quantizer (int8 [N, 1]);
* LeakyReLU: ``clamp(z, 0, .) + requantize(clamp(z, ., 0), M=51, n=8)`` (fixed-point multiply/shift);
* segment softmax: ``r = L_edge - gather(L_self, dst)``, ``m = clamp(scatter_max(r, dst), 0, .)`` (the self
  loop's ``r`` is 0, so ``m`` is the max over the edges and the self loop relative to the self loop),
  ``e = lut(r - m)`` (``lut`` or ``lut_steps``), ``tot = scatter_add(e, dst) + e_self``,
  ``alpha = div_floor(2 D e + tot, 2 tot)``;
* ``agg_k = scatter_add(alpha * gather(h_k, src), dst) + alpha_self * h_k`` (int32, bound checked here), then
  per head ``requantize`` + ``concat`` (concat heads) or ``add`` + one ``requantize`` (averaged heads);
* LoRAP and bias exactly as GCN's (``fold/prompts.py:emit_lorap``).
"""

from __future__ import annotations

import numpy as np

from qgnn_deploy.errors import QgnnError
from qgnn_deploy.fold.emit import Acc, FoldContext, QTensor
from qgnn_deploy.fold.layers import GraphValues, handler, prompted_output
from qgnn_deploy.fold.tables import compact_lookup
from qgnn_deploy.models.gat import (
    ATT_DEN,
    EXP_ONE,
    SLOPE_MULT,
    SLOPE_SHIFT,
    QGATConv,
    attention_exp_table,
    logit_range,
)

CONCAT_MAX = 8  # the IR's concat takes at most 8 inputs
BIG = 2**30  # an open clamp end for int32 values that fold bounds far below it


def _leaky(fc: FoldContext, z: str, hint: str) -> str:
    """Integer LeakyReLU of int32 codes: ``z`` for ``z >= 0``, ``round_half_up(z * 51 / 2^8)`` below."""
    b = fc.b
    pos = b.op("clamp", [z], f"{hint}_pos", lo=0, hi=BIG)
    neg = b.op("clamp", [z], f"{hint}_negpart", lo=-BIG, hi=0)
    neg = b.op(
        "requantize",
        [neg],
        f"{hint}_neg",
        multiplier=SLOPE_MULT,
        shift=SLOPE_SHIFT,
        zero_point=0,
        qmin=-BIG,
        qmax=0,
        dtype="int32",
    )
    return b.op("add", [pos, neg], hint)


def _concat(fc: FoldContext, values: list[str], hint: str) -> str:
    """``concat`` along columns, chained when there are more parts than one op takes."""
    while len(values) > 1:
        parts = [values[i : i + CONCAT_MAX] for i in range(0, len(values), CONCAT_MAX)]
        values = [
            fc.b.op("concat", p, f"{hint}_{j}" if len(parts) > 1 else hint, axis=1) if len(p) > 1 else p[0]
            for j, p in enumerate(parts)
        ]
        hint = f"{hint}_n"
    return values[0]


def _head(
    fc: FoldContext,
    layer: QGATConv,
    h: QTensor,
    g: GraphValues,
    k: int,
    hint: str,
    att_int: np.ndarray,
    att_scale: float,
    exp_lut_args: tuple,
) -> tuple[str, float, float]:
    """One head of the messages ``h`` [N, H*C] of every head: (int32 ``agg_k`` [N, C] on the grid ``s_h / ATT_DEN``,
    its bound, ``s_h``).

    The head's column block is never sliced out (the IR has no slice op): its logits are ``h`` times the attention
    vector zero-padded to ``H*C`` rows, and its centred messages ``h_k - zp`` are ``h`` times a 0/1 selection
    matrix (a matmul with ``a_zero_point``), both exact in int32.
    """
    b = fc.b
    c = layer.channels
    width = c * layer.heads
    cols = slice(k * c, (k + 1) * c)
    sides = []
    for side, label in enumerate(("src", "dst")):
        col = np.zeros((width, 1), np.int8)
        col[cols, 0] = att_int[side, k]
        a_val = fc.int_matrix(f"{hint}_att_{label}", col, int(layer.q_att_w.spec.bits))
        acc = fc.matmul(h, a_val, col, np.asarray(att_scale), f"{hint}_logit_{label}_acc")
        z = fc.requant_to(acc, layer.q_att, f"{hint}_logit_{label}")
        sides.append(b.op("cast", [z.value], f"{hint}_logit_{label}_i32", dtype="int32"))
    p, q = sides
    l_self = _leaky(fc, b.op("add", [p, q], f"{hint}_z_self"), f"{hint}_l_self")
    z_edge = b.op(
        "add",
        [b.op("gather_rows", [p, g.src], f"{hint}_p_src"), b.op("gather_rows", [q, g.dst], f"{hint}_q_dst")],
        f"{hint}_z_edge",
    )
    l_edge = _leaky(fc, z_edge, f"{hint}_l_edge")
    r = b.op("sub", [l_edge, b.op("gather_rows", [l_self, g.dst], f"{hint}_l_self_dst")], f"{hint}_rel")
    m = b.op("clamp", [b.op("scatter_max", [r, g.dst, g.nodes], f"{hint}_rel_max")], f"{hint}_max", lo=0, hi=BIG)
    d_edge = b.op("sub", [r, b.op("gather_rows", [m, g.dst], f"{hint}_max_dst")], f"{hint}_shift_edge")
    d_self = b.op("sub", [fc.scalar(0), m], f"{hint}_shift_self")
    stored, table_hint = exp_lut_args
    e_edge = b.op(
        "cast", [fc.lookup(d_edge, stored, f"{hint}_exp_edge_u", table_hint)], f"{hint}_exp_edge", dtype="int32"
    )
    e_self = b.op(
        "cast", [fc.lookup(d_self, stored, f"{hint}_exp_self_u", table_hint)], f"{hint}_exp_self", dtype="int32"
    )
    tot = b.op("add", [b.op("scatter_add", [e_edge, g.dst, g.nodes], f"{hint}_exp_in"), e_self], f"{hint}_exp_sum")
    t_edge = b.op("gather_rows", [tot, g.dst], f"{hint}_exp_sum_dst")
    two_d = fc.scalar(2 * ATT_DEN)

    def alpha(e: str, t: str, what: str) -> str:
        num = b.op("add", [b.op("mul", [e, two_d], f"{hint}_{what}_e2d"), t], f"{hint}_{what}_num")
        return b.op("div_floor", [num, b.op("mul", [t, fc.scalar(2)], f"{hint}_{what}_den")], f"{hint}_{what}")

    a_edge = alpha(e_edge, t_edge, "alpha_edge")
    a_self = alpha(e_self, tot, "alpha_self")
    if layer.heads == 1:
        hc = fc.centered_int32(h, f"{hint}_message")
    else:
        select = np.zeros((width, c), np.int8)
        select[cols, :] = np.eye(c, dtype=np.int8)
        hc = b.op("matmul", [h.value, b.const(f"{hint}_select", select)], f"{hint}_message_centered",
                  a_zero_point=int(h.zero_point))
    msgs = b.op("mul", [b.op("gather_rows", [hc, g.src], f"{hint}_gather"), a_edge], f"{hint}_weighted")
    agg = b.op(
        "add",
        [
            b.op("scatter_add", [msgs, g.dst, g.nodes], f"{hint}_scatter"),
            b.op("mul", [hc, a_self], f"{hint}_weighted_self"),
        ],
        f"{hint}_agg",
    )
    # sum_j alpha_j <= sum_j (D e_j / tot + 1/2) = D + (deg + 1) / 2
    bound = float(h.max_abs_centered) * (ATT_DEN + (fc.max_in_degree + 1) / 2.0)
    fc.check_bound(f"{hint}_agg", bound)
    return agg, bound, float(h.scale)


@handler(QGATConv)
def fold_gat(
    fc: FoldContext, layer: QGATConv, x: QTensor, g: GraphValues, name: str, extra_bias: np.ndarray | None
) -> Acc:
    b = fc.b
    if extra_bias is not None:
        raise QgnnError("fold: a constant GPF prompt cannot be folded into GAT (use --gpf gpf-plus)")
    w = layer.lin.weight.detach()
    w_int = layer.q_weight.to_int(w).numpy().astype(np.int8).T.copy()  # [F, H*C]
    w_scale = np.asarray(layer.q_weight.scale_zp(w)[0].numpy(), np.float32).reshape(-1).astype(np.float64)
    att = layer.att.detach()
    att_int = layer.q_att_w.to_int(att).numpy().astype(np.int8)
    att_scale = float(np.float32(layer.q_att_w.scale_zp(att)[0]))
    # the exp table: one per layer (same logit scale for every head), checked against int32 for the sums
    qmax = layer.q_att.spec.qmax
    table, offset = attention_exp_table(float(layer.q_att.scale_zp(None)[0]), qmax)
    full = table.numpy()
    stored = compact_lookup(full.astype(np.uint16 if full.max() <= np.iinfo(np.uint16).max else np.int32), offset)
    fc.bitwidths[f"{name}_exp_table"] = 16
    lo, hi = logit_range(qmax)
    fc.accumulators[f"{name}_logit_range"] = float(hi - lo)
    tot_bound = float(EXP_ONE) * (fc.max_in_degree + 1)
    fc.check_bound(f"{name}_exp_sum", tot_bound)
    fc.check_bound(f"{name}_alpha_num", 2.0 * ATT_DEN * EXP_ONE + tot_bound)
    fc.check_bound(f"{name}_alpha_den", 2.0 * tot_bound)
    # one GEMM for every head (the input is read and, at the model boundary, quantized once), one requantize
    w_val = fc.int_matrix(f"{name}_w", w_int, int(layer.q_weight.spec.bits))
    h = fc.requant_to(fc.matmul(x, w_val, w_int, w_scale, f"{name}_lin"), layer.q_message, f"{name}_message")
    aggs, bound, s_h = [], 0.0, 1.0
    for k in range(layer.heads):
        agg, bound, s_h = _head(fc, layer, h, g, k, f"{name}_h{k}", att_int, att_scale, (stored, f"{name}_exp_table"))
        aggs.append(agg)
    grid = np.asarray(s_h / ATT_DEN, np.float64)
    if layer.concat:
        parts = [
            fc.requant_to(Acc(v, grid, bound), layer.q_aggregate, f"{name}_h{k}_aggregate") for k, v in enumerate(aggs)
        ]
        a0 = parts[0]
        a = QTensor(
            _concat(fc, [t.value for t in parts], f"{name}_aggregate"),
            a0.scale,
            a0.zero_point,
            a0.qmin,
            a0.qmax,
            a0.dtype,
        )
    else:
        total = aggs[0]
        for k, v in enumerate(aggs[1:], start=1):
            total = b.op("add", [total, v], f"{name}_head_sum{k}")
        fc.check_bound(f"{name}_head_sum", bound * layer.heads)
        a = fc.requant_to(Acc(total, grid / layer.heads, bound * layer.heads), layer.q_aggregate, f"{name}_aggregate")
    return prompted_output(fc, layer, a, name)
