"""Named graph passes composed into pipelines (``ir/passes.py``): each pass alone, then in a Sequential."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from qgnn_deploy.ir.graph import GraphBuilder
from qgnn_deploy.ir.interpreter import run
from qgnn_deploy.ir.passes import (
    FOLD_PIPELINE,
    GraphPass,
    Sequential,
    dedupe_initializers,
    prequantize_input,
    quantize_input_feeds,
)
from qgnn_deploy.ir.testing import awkward_graphs, op_zoo_graph


def _two_equal_tables():
    b = GraphBuilder()
    idx = b.input("idx", "int32", ("N",))
    table = np.arange(10, dtype=np.int16) * 3
    a = b.op("lut", [idx, b.const("table", table)], "a", offset=0)
    c = b.op("lut", [idx, b.const("table", table.copy())], "c", offset=0)
    out = b.op("add", [a, c], "y")
    b.output(out, "int16", ("N",))
    return b.graph


def test_fold_pipeline_dedupes_lookup_tables_and_keeps_results() -> None:
    g = _two_equal_tables()
    feeds = {"idx": np.array([0, 3, 9, 42, -5], dtype=np.int32)}
    before = run(g, feeds)["y"]
    assert FOLD_PIPELINE(g) == {"dedupe_lookup_tables": 1}
    assert len(g.initializers) == 1
    np.testing.assert_array_equal(run(g, feeds)["y"], before)
    assert FOLD_PIPELINE(g) == {"dedupe_lookup_tables": 0}  # idempotent


def test_a_pass_alone_equals_the_same_pass_in_a_pipeline() -> None:
    g1, g2 = _two_equal_tables(), _two_equal_tables()
    assert dedupe_initializers(g1, consumers=("lut", "lut_steps")) == GraphPass(
        "d", dedupe_initializers, {"consumers": ("lut", "lut_steps")})(g2) == 1
    assert g1.initializers.keys() == g2.initializers.keys()


def test_sequential_runs_in_order_and_reports_each_pass() -> None:
    graph = op_zoo_graph(features=12)
    x, ei = awkward_graphs(12)["random"]
    feeds = {"x": x, "edge_index": ei}
    reference = run(copy.deepcopy(graph), feeds)
    pipeline = Sequential([GraphPass("dedupe", dedupe_initializers), GraphPass("integer_input", prequantize_input)])
    log = pipeline(graph)
    assert list(log) == ["dedupe", "integer_input"]
    assert log["integer_input"]["float_input"] == "x" and graph.inputs[0].dtype == log["integer_input"]["dtype"]
    out = run(graph, quantize_input_feeds(graph, feeds))
    for name, value in reference.items():
        np.testing.assert_array_equal(out[name], value)


def test_pipeline_names_are_unique() -> None:
    with pytest.raises(ValueError, match="unique"):
        Sequential([GraphPass("a", dedupe_initializers), GraphPass("a", dedupe_initializers)])
