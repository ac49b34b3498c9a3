"""Fold handler for :class:`~qgnn_deploy.models.gat.QGATConv`: graph attention as integer IR ops.

Mirrors ``models/gat.py`` term by term with every head at once (concatenated heads; averaged heads go one head
at a time; the IR has no slice op: head blocks are read through constant matmuls):

* ``h``: one ``matmul`` + ``requantize`` for all heads (int8 [N, H*C]); logits ``p, q``: ``matmul`` with the
  int8 attention vectors as zero-padded block columns [H*C, H] + ``requantize`` onto the shared logit quantizer
  (int8 [N, H]);
* LeakyReLU: ``clamp(z, 0, .) + requantize(clamp(z, ., 0), M=51, n=8)`` (fixed-point multiply/shift);
* segment softmax: ``r = L_edge - gather(L_self, dst)``, ``m = clamp(scatter_max(r, dst), 0, .)`` (the self
  loop's ``r`` is 0, so ``m`` is the max over the edges and the self loop relative to the self loop),
  ``e = lut(r - m)`` (``lut`` or ``lut_steps``), ``tot = scatter_add(e, dst) + e_self``,
  ``alpha = div_floor(2 D e + tot, 2 tot)``;
* ``agg = scatter_add(alpha' * gather(h, src), dst) + alpha_self' * h`` (int32 [N, H*C], bound checked here)
  with ``alpha' = repeat_cols(alpha, C)`` each head's coefficient over its ``C`` columns (the TVM backend reads
  ``alpha`` [E, H] inside one edge kernel: ``fusion.attention_into_scatter``), then one ``requantize`` (concat
  heads); averaged heads: per head (``h_k`` through a 0/1 selection matmul), ``add`` + one ``requantize``;
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


def _attend(
    fc: FoldContext,
    layer: QGATConv,
    h: QTensor,
    g: GraphValues,
    ks: list[int],
    hint: str,
    att_int: np.ndarray,
    att_scale: float,
    exp_lut_args: tuple,
) -> tuple[str, float, float]:
    """Heads ``ks`` (one head, or all of them) of the messages ``h`` [N, H*C]: (int32 ``agg`` [N, len(ks)*C] on
    the grid ``s_h / ATT_DEN``, its bound, ``s_h``).

    Column blocks are never sliced out (the IR has no slice op): the logits of head ``k`` are ``h`` times its
    attention vector zero-padded to ``H*C`` rows, so all heads' logits are one matmul and the segment softmax runs
    on ``[E, len(ks)]`` at once. All heads: ``h`` is aggregated whole with each head's ``alpha`` repeated over
    its ``C`` columns (``repeat_cols``); one head of several: its centred messages ``h_k - zp`` are ``h``
    times a 0/1 selection matrix (a matmul with ``a_zero_point``). Everything is exact in int32.
    """
    b = fc.b
    c, heads = layer.channels, layer.heads
    width = c * heads
    sides = []
    for side, label in enumerate(("src", "dst")):
        cols = np.zeros((width, len(ks)), np.int8)
        for j, k in enumerate(ks):
            cols[k * c : (k + 1) * c, j] = att_int[side, k]
        a_val = fc.int_matrix(f"{hint}_att_{label}", cols, int(layer.q_att_w.spec.bits))
        acc = fc.matmul(h, a_val, cols, np.asarray(att_scale), f"{hint}_logit_{label}_acc")
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
    if len(ks) == heads:
        hc = fc.centered_int32(h, f"{hint}_message")
        if heads > 1:
            a_edge = b.op("repeat_cols", [a_edge], f"{hint}_alpha_edge_rep", repeats=c)
            a_self = b.op("repeat_cols", [a_self], f"{hint}_alpha_self_rep", repeats=c)
    else:
        (k,) = ks
        select = np.zeros((width, c), np.int8)
        select[k * c : (k + 1) * c, :] = np.eye(c, dtype=np.int8)
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
    exp_args = (stored, f"{name}_exp_table")
    if layer.concat or layer.heads == 1:  # every head at once: [E, H] softmax, one [N, H*C] aggregation
        agg, bound, s_h = _attend(fc, layer, h, g, list(range(layer.heads)), name, att_int, att_scale, exp_args)
        a = fc.requant_to(Acc(agg, np.asarray(s_h / ATT_DEN, np.float64), bound), layer.q_aggregate,
                          f"{name}_aggregate")
        return prompted_output(fc, layer, a, name)
    aggs, bound, s_h = [], 0.0, 1.0  # averaged heads: per head, summed before one requantize
    for k in range(layer.heads):
        agg, bound, s_h = _attend(fc, layer, h, g, [k], f"{name}_h{k}", att_int, att_scale, exp_args)
        aggs.append(agg)
    grid = np.asarray(s_h / ATT_DEN, np.float64)
    total = aggs[0]
    for k, v in enumerate(aggs[1:], start=1):
        total = b.op("add", [total, v], f"{name}_head_sum{k}")
    fc.check_bound(f"{name}_head_sum", bound * layer.heads)
    a = fc.requant_to(Acc(total, grid / layer.heads, bound * layer.heads), layer.q_aggregate, f"{name}_aggregate")
    return prompted_output(fc, layer, a, name)
