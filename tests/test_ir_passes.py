"""Graph passes: each one preserves the interpreter's output bit for bit on every awkward graph."""

from __future__ import annotations

import numpy as np
import pytest

from qgnn_deploy.ir import run
from qgnn_deploy.ir.analysis import buffer_report
from qgnn_deploy.ir.graph import GraphBuilder
from qgnn_deploy.ir.passes import (
    merge_common_subexpressions,
    prequantize_input,
    prequantized_copy,
    quantize_input_feeds,
)
from qgnn_deploy.ir.testing import awkward_graphs, op_zoo_graph, pooled_zoo_graph


def test_prequantize_input_is_exact_and_moves_the_quantize_out() -> None:
    graph = op_zoo_graph(features=12)
    pre = prequantized_copy(graph)
    assert graph.inputs[0].name == "x" and "quantize" in graph.op_counts()  # the original is untouched
    contract = pre.meta["input_quant"]
    assert contract == {"float_input": "x", "quantized_input": "x_q", "scale": 0.05, "zero_point": 128, "qmin": 0,
                        "qmax": 255, "dtype": "uint8"}
    assert [(v.name, v.dtype, v.shape) for v in pre.inputs][0] == ("x_q", "uint8", ("N", 12))
    assert "quantize" not in pre.op_counts() and all("x" not in n.inputs for n in pre.nodes)
    pre.validate()
    for name, (x, ei) in awkward_graphs(12, seed=4).items():
        x = x.copy()
        x.flat[::7] = 0.025 * np.round(x.flat[::7] / 0.025)  # exact ties of the rounding
        feeds = {"x": x, "edge_index": ei}
        q_feeds = quantize_input_feeds(pre, feeds)
        assert set(q_feeds) == {"x_q", "edge_index"} and q_feeds["x_q"].dtype == np.uint8
        want, got = run(graph, feeds), run(pre, q_feeds)
        assert all(np.array_equal(want[k], got[k]) for k in want), name
        # the uint8 input is a quarter of the float one, which is the peak of neither graph's buffers here
        assert buffer_report(pre, q_feeds).input_bytes < buffer_report(graph, feeds).input_bytes
    assert quantize_input_feeds(pre, q_feeds) == q_feeds  # already quantized: passes through
    assert quantize_input_feeds(graph, feeds) == feeds  # no contract: passes through


def test_prequantize_input_refuses_what_it_cannot_move() -> None:
    with pytest.raises(ValueError, match="exactly one per-tensor quantize"):
        prequantize_input(pooled_zoo_graph())  # A2Q-style per-row quantize needs the in-graph degree
    b = GraphBuilder()
    x = b.input("x", "float32", ("N", 4))
    xq = b.op("quantize", [x], "x_q", scale=0.1, zero_point=0, qmin=-127, qmax=127, dtype="int8")
    y = b.op("dequantize", [xq], "y", scale=0.1, zero_point=0)
    z = b.op("dequantize", [b.op("quantize", [x], "x_q2", scale=0.2, zero_point=0, qmin=-127, qmax=127,
                                 dtype="int8")], "z", scale=0.2, zero_point=0)
    b.output(y, "float32", ("N", 4))
    b.output(z, "float32", ("N", 4))
    with pytest.raises(ValueError, match="exactly one"):
        prequantize_input(b.graph)
    b = GraphBuilder()
    x = b.input("x", "float32", ("N", 4))
    xq = b.op("quantize", [x], "x_q", scale=0.1, zero_point=0, qmin=-127, qmax=127, dtype="int8")
    row = b.op("take_row", [x], "row0", index=0)  # reads the float values themselves
    b.output(b.op("dequantize", [xq], "y", scale=0.1, zero_point=0), "float32", ("N", 4))
    b.output(row, "float32", (4,))
    with pytest.raises(ValueError, match=r"feeds \['take_row'\] as data"):
        prequantize_input(b.graph)


def test_merge_common_subexpressions_drops_repeats_only() -> None:
    """A node repeating an earlier one (op, inputs, attributes) goes, chains of repeats too; a different attribute,
    a graph output and the interpreter's values stay."""
    b = GraphBuilder()
    x = b.input("x", "int32", ("N", 4))
    one = b.const("one", np.array(1, np.int32))
    a1, a2 = b.op("add", [x, one], "a1"), b.op("add", [x, one], "a2")
    m1 = b.op("reduce_max", [a1], "m1", axis=1, keepdims=True)
    m2 = b.op("reduce_max", [a2], "m2", axis=1, keepdims=True)  # a repeat once a2 reads as a1
    s1 = b.op("reduce_sum", [a2], "s1", axis=1, keepdims=True)
    s0 = b.op("reduce_sum", [a2], "s0", axis=0, keepdims=True)  # another axis: kept
    b.output(b.op("add", [m1, m2], "mm"), "int32", ("N", 1))
    b.output(b.op("add", [s1, b.op("reduce_sum", [a1], "s2", axis=1, keepdims=True)], "ss"), "int32", ("N", 1))
    b.output(s0, "int32", (1, 4))
    b.output(b.op("add", [x, one], "a3"), "int32", ("N", 4))  # a graph output: kept
    feeds = {"x": np.arange(-12, 12, dtype=np.int32).reshape(6, 4)}
    want = run(b.graph, feeds)
    assert merge_common_subexpressions(b.graph) == 3  # a2, m2, s2
    assert [n.outputs[0] for n in b.graph.nodes] == ["a1", "m1", "s1", "s0", "mm", "ss", "a3"]
    b.graph.validate()
    got = run(b.graph, feeds)
    assert all(np.array_equal(got[k], want[k]) for k in want)
