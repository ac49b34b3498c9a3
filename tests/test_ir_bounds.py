"""Static integer ranges of IR values (qgnn_deploy.ir.bounds): sound on every awkward graph, tight where it matters."""

from __future__ import annotations

import numpy as np

from qgnn_deploy.ir.bounds import value_ranges
from qgnn_deploy.ir.graph import GraphBuilder
from qgnn_deploy.ir.interpreter import run
from qgnn_deploy.ir.passes import quantize_input_feeds
from qgnn_deploy.ir.testing import awkward_graphs, op_zoo_graph, pooled_zoo_graph


def test_ranges_hold_for_every_value_on_awkward_graphs() -> None:
    """Every integer value the interpreter computes lies in its static range (zoo graphs, every awkward graph)."""
    for graph in (op_zoo_graph(), pooled_zoo_graph()):
        ranges = value_ranges(graph)
        features = next(v for v in graph.inputs if v.name == "x").shape[1]
        for case, (x, ei) in awkward_graphs(features).items():
            feeds = {"x": x, "edge_index": ei}
            if any(v.name == "batch" for v in graph.inputs):
                feeds["batch"] = np.zeros(x.shape[0], np.int64)
            env = run(graph, quantize_input_feeds(graph, feeds), keep_all=True)
            for name, value in env.items():
                v = np.asarray(value)
                if name in ranges and v.size and v.dtype.kind in "iu":
                    lo, hi = ranges[name]
                    assert lo <= int(v.min()) and int(v.max()) <= hi, (case, name, (lo, hi), (v.min(), v.max()))


def test_softmax_chain_ranges() -> None:
    """LoRAP's integer softmax: the table bounds the exponentials, k of them their sum, and so the division's
    operands (what lets the TVM build divide in float32)."""
    ranges = value_ranges(op_zoo_graph(prompts=4))
    assert ranges["score_shift"] == (-255, 255)
    assert ranges["exp_q"] == (0, 32768)  # the zoo's legacy 2^15 table
    assert ranges["exp_sum"] == (0, 4 * 32768)
    assert ranges["alpha_num"] == (0, 510 * 32768 + 4 * 32768)
    assert ranges["den"] == (0, 2 * 4 * 32768)


def test_op_rules() -> None:
    b = GraphBuilder()
    x = b.input("x", "int8", ("N", 3))
    c = b.op("clamp", [x], "c", lo=-5, hi=9)
    b.op("clamp", [x], "inv", lo=9, hi=-5)  # np.clip with lo > hi yields hi
    s = b.op("sub", [b.op("cast", [c], "c32", dtype="int32"), b.const("k", np.array([[3, -4, 0]], np.int32))], "s")
    b.op("mul", [s, s], "m")
    b.op("div_floor", [s, b.const("divisor", np.array([[2, 3, 7]], np.int32))], "d")
    w = b.const("w", np.array([[1, -2], [3, 4], [-5, 6]], np.int8))
    mm = b.op("matmul", [c, w], "mm", a_zero_point=1)
    b.op("reduce_sum", [c], "rs", axis=1, keepdims=True)
    b.op("requantize", [mm], "rq", multiplier=3, shift=2, zero_point=0, qmin=-7, qmax=100, dtype="int8")
    b.op("mul", [b.op("cast", [x], "x32", dtype="int32"), b.const("huge", np.array(1 << 30, np.int32))], "big")
    for name in ("inv", "m", "d", "rq", "rs", "big"):
        b.output(name, "int32" if name not in ("inv", "rq") else "int8", ("N", 1))
    r = value_ranges(b.graph)
    assert r["x"] == (-128, 127) and r["c"] == (-5, 9) and r["inv"] == (-5, -5)
    assert r["s"] == (-8, 13) and r["m"] == (-104, 169)
    assert r["d"] == (-4, 6)  # corners of floor(s / [2, 7])
    assert r["mm"] == (3 * 8 * -5, 3 * 8 * 6)  # K times the extreme products of (c - 1) in [-6, 8] and w
    assert r["rs"] == (-15, 27) and r["rq"] == (-7, 100)
    assert r["big"] == (-(2**31), 2**31 - 1)  # clipped to the dtype: the interpreter raises beyond it
