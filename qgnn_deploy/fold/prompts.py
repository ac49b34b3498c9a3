"""Merging prompts into the integer graph.

LoRAP (softmax variant) becomes: int8 scores -> exp lookup table -> integer
normalisation to ``alpha in [0, 255]`` -> ``alpha @ P_q`` in int32 on the
grid ``s_a / (255 * 2^k)`` (``P`` on the aggregate grid ``s_a / 2^k``, see
``models/prompts.py``), so ``255 * 2^k * a_q + alpha @ P_q (+ 2^k * bias)`` is
one accumulator; :func:`emit_lorap` returns its denominator ``255 * 2^k``.
The LoRA variant is two integer matmuls with one requantization.  GPF's
constant prompt folds into the first layer's bias; GPF-plus is the softmax
path on the input features followed by one requantization.
"""

from __future__ import annotations

import numpy as np

from qgnn_deploy.fold.emit import Acc, FoldContext, QTensor
from qgnn_deploy.fold.tables import trim_table
from qgnn_deploy.models.prompts import ALPHA_DEN, GPFPrompt, LoRAP, PromptMixer, exp_table


def emit_softmax_alpha(fc: FoldContext, s: QTensor, mixer: PromptMixer, hint: str) -> str:
    """uint8 ``alpha`` [N, k] exactly as :func:`qgnn_deploy.models.prompts.integer_softmax` computes it."""
    b = fc.b
    w_value, w_int, w_scale = fc.weight(f"{hint}_score_w", mixer.q_weight, mixer.score.weight)
    acc = fc.matmul(s, w_value, w_int, w_scale, f"{hint}_score_acc")
    z = fc.requant_to(acc, mixer.q_score, f"{hint}_score")
    qmax = mixer.q_score.spec.qmax
    # entries are <= exp_one (255: uint8; legacy 2^15: uint16), stored in the narrowest unsigned type and widened
    # after the lookup; the leading zeros (scores far below the row maximum) are trimmed to one, the offset moves
    # with them (fold/tables.py)
    full = exp_table(float(mixer.q_score.scale_zp(None)[0]), qmax, int(mixer.exp_one)).numpy()
    table, dropped = trim_table(full.astype(exp_table_dtype(full)))
    zmax = b.op("reduce_max", [z.value], f"{hint}_score_max", axis=1, keepdims=True)
    d = b.op("sub", [b.op("cast", [z.value], f"{hint}_score_i32", dtype="int32"),
                     b.op("cast", [zmax], f"{hint}_score_max_i32", dtype="int32")], f"{hint}_score_shift")
    e_u = b.op("lut", [d, b.const(f"{hint}_exp_table", table)], f"{hint}_exp_u{8 * table.itemsize}",
               offset=2 * qmax - dropped)
    e = b.op("cast", [e_u], f"{hint}_exp", dtype="int32")
    tot = b.op("reduce_sum", [e], f"{hint}_exp_sum", axis=1, keepdims=True)
    num = b.op("add", [b.op("mul", [e, fc.scalar(2 * ALPHA_DEN)], f"{hint}_exp_scaled"), tot], f"{hint}_alpha_num")
    den = b.op("mul", [tot, fc.scalar(2)], f"{hint}_alpha_den")
    alpha = b.op("div_floor", [num, den], f"{hint}_alpha_i32")
    fc.check_bound(f"{hint}_exp_sum", float(table.astype(np.int64).max()) * mixer.score.weight.shape[0] * 2 * ALPHA_DEN)
    fc.bitwidths[f"{hint}_alpha"] = 8
    return b.op("cast", [alpha], f"{hint}_alpha", dtype="uint8")


def exp_table_dtype(table: np.ndarray) -> type:
    """uint8 when every entry fits (LoRAP's exp(0) = 255 tables), else uint16 (legacy 2^15 tables)."""
    return np.uint8 if int(np.max(table, initial=0)) <= np.iinfo(np.uint8).max else np.uint16


def emit_lorap(fc: FoldContext, a: QTensor, prompt: LoRAP, hint: str) -> tuple[str, float, int]:
    """Return (int32 ``den * (a - zp) + prompt`` value, its bound, ``den``); real value = value * s_a / den.

    ``den = 255 * 2^k`` for a softmax prompt whose basis sits on ``s_a / 2^k``; 255 otherwise (and for a prompt
    dropped because its basis is all zeros, so such a fold is the one without the prompt).
    """
    b = fc.b
    den = ALPHA_DEN
    p_int = None
    if prompt.variant == "softmax":
        p_int = prompt.q_basis.to_int(prompt.basis().detach()).numpy().astype(np.int8)
        if p_int.any():
            den = ALPHA_DEN << prompt.basis_shift()
    base = b.op("mul", [fc.centered_int32(a, f"{hint}_agg"), fc.scalar(den)], f"{hint}_agg_x{den}")
    bound = float(a.max_abs_centered * den)
    if p_int is not None:
        if not p_int.any():
            # every prompt basis vector quantizes to 0: alpha @ P_q = 0 for any alpha, so the prompt adds
            # nothing and its softmax branch (score weights, exp table, basis) is not emitted
            fc.bitwidths[f"{hint}_basis"] = int(prompt.q_basis.spec.bits)
            fc.check_bound(f"{hint}_prompted", bound)
            return base, bound, den
        alpha = emit_softmax_alpha(fc, a, prompt.mixer, hint)
        basis = fc.int_matrix(f"{hint}_basis", p_int, int(prompt.q_basis.spec.bits))
        pacc = b.op("matmul", [alpha, basis], f"{hint}_prompt")
        bound += ALPHA_DEN * float(np.abs(p_int.astype(np.int64)).max(initial=0))
    else:
        a_value, a_int, a_scale = fc.weight(f"{hint}_lora_a", prompt.q_a, prompt.A, transpose=False)
        t_acc = fc.matmul(a, a_value, a_int, a_scale.reshape(()) if a_scale.size == 1 else a_scale,
                          f"{hint}_lora_t_acc")
        t = fc.requant_to(t_acc, prompt.q_mid, f"{hint}_lora_t")
        b_value, b_int, b_scale = fc.weight(f"{hint}_lora_b", prompt.q_b, prompt.B, transpose=False)
        tb = fc.matmul(t, b_value, b_int, b_scale.reshape(()) if b_scale.size == 1 else b_scale,
                       f"{hint}_lora_p_acc")
        grid = float(a.scale) / ALPHA_DEN
        pbound = tb.bound * float(np.max(tb.grid)) / grid
        fc.check_bound(f"{hint}_lora_p", pbound)
        pacc = fc.requant(tb, grid, 0, -(2**31), 2**31 - 1, "int32", f"{hint}_lora_p")
        bound += pbound
    fc.check_bound(f"{hint}_prompted", bound)
    return b.op("add", [base, pacc], f"{hint}_prompted"), bound, den


def gpf_bias(prompt: GPFPrompt, w_int: np.ndarray) -> np.ndarray:
    """GPF's constant prompt through the first matmul: ``p_q @ W_q`` (int32 per output column)."""
    p_int = prompt.q_basis.to_int(prompt.p.detach()).numpy().astype(np.int64).reshape(1, -1)
    return (p_int @ w_int.astype(np.int64)).reshape(-1)


def emit_gpf_plus(fc: FoldContext, x: QTensor, prompt: GPFPrompt) -> QTensor:
    b = fc.b
    alpha = emit_softmax_alpha(fc, x, prompt.mixer, "gpf")
    p_int = prompt.q_basis.to_int(prompt.P.detach()).numpy().astype(np.int8)
    pacc = b.op("matmul", [alpha, fc.int_matrix("gpf_basis", p_int, int(prompt.q_basis.spec.bits))], "gpf_prompt")
    base = b.op("mul", [fc.centered_int32(x, "gpf_x"), fc.scalar(ALPHA_DEN)], "gpf_x_x255")
    bound = float(x.max_abs_centered * ALPHA_DEN + ALPHA_DEN * np.abs(p_int.astype(np.int64)).max(initial=0))
    fc.check_bound("gpf_prompted", bound)
    acc = Acc(b.op("add", [base, pacc], "gpf_prompted"), np.asarray(x.scale / ALPHA_DEN, np.float64), bound)
    return fc.requant_to(acc, prompt.q_out, "gpf_out")
