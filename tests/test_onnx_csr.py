"""ONNX ``aggregation="csr"``: prefix-sum neighbour sums on ascending destinations, scatter otherwise; bit-exact."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto

from qgnn_deploy.backends.onnx import export_onnx
from qgnn_deploy.backends.onnx.segment import sort_edges_by_destination
from qgnn_deploy.errors import QgnnError
from qgnn_deploy.ir import run
from qgnn_deploy.ir.graph import Graph, GraphBuilder
from qgnn_deploy.ir.testing import awkward_graphs, op_zoo_graph


def _sessions(graph: Graph) -> tuple[list[str], dict[int, ort.InferenceSession]]:
    model = export_onnx(graph, expose_all=True, aggregation="csr")
    data = model.SerializeToString()
    sessions = {}
    for threads in (1, 2):
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.log_severity_level = 3
        sessions[threads] = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    return [o.name for o in model.graph.output], sessions


def _assert_exact(graph: Graph, names: list[str], sessions: dict, feeds: dict[str, np.ndarray]) -> None:
    ref = run(graph, feeds, keep_all=True)
    for threads, sess in sessions.items():
        for _ in range(2):
            for name, got in zip(names, sess.run(None, feeds)):
                want = ref[name]
                assert got.dtype == want.dtype and got.shape == want.shape, name
                assert np.array_equal(got, want), f"{name} differs at {threads} threads"


def _cast_to(node: onnx.NodeProto) -> int:
    return next(a.i for a in node.attribute if a.name == "to")


def _gather_sum_graph(width: int, table_dtype: str) -> Graph:
    """Sums of gathered rows (rank-2 and a constant table), next to a max and the degree on the same edges."""
    b = GraphBuilder()
    x = b.input("x", table_dtype, ("N", width))
    ei = b.input("edge_index", "int64", (2, "E"))
    src, dst = b.op("take_row", [ei], "src", index=0), b.op("take_row", [ei], "dst", index=1)
    x32 = b.op("cast", [x], "x32", dtype="int32")
    g = b.op("gather_rows", [x32, src], "g")
    outs = [b.op("scatter_add", [g, dst, x], "sa"), b.op("scatter_max", [g, dst, x], "sm"),
            b.op("degree", [dst, x], "d")]
    table = b.const("table", (np.arange(50 * width, dtype=np.int32).reshape(50, width) % 201) - 100)
    tidx = b.op("clamp", [src], "src_lt50", lo=0, hi=49)
    outs.append(b.op("scatter_add", [b.op("gather_rows", [table, tidx], "g_const"), dst, x], "sa_const"))
    b.output(outs[0], "int32", ("N", width))
    return b.graph


@pytest.mark.parametrize("order", ["as_given", "sorted"])
def test_op_zoo_exact_in_both_orders(order: str) -> None:
    graph = op_zoo_graph()
    names, sessions = _sessions(graph)
    for x, ei in awkward_graphs(12).values():
        edges = sort_edges_by_destination(ei) if order == "sorted" else ei
        _assert_exact(graph, names, sessions, {"x": x, "edge_index": edges})


@pytest.mark.parametrize("width", [1, 7, 16])
def test_gathered_sums_exact_on_awkward_edges(width: int) -> None:
    graph = _gather_sum_graph(width, "int16")
    names, sessions = _sessions(graph)
    rng = np.random.default_rng(width)
    for x, ei in awkward_graphs(width).values():
        xv = rng.integers(-32768, 32768, x.shape).astype(np.int16)
        for edges in (ei, sort_edges_by_destination(ei)):
            _assert_exact(graph, names, sessions, {"x": xv, "edge_index": edges})
    xv = rng.integers(-9, 9, (6, width)).astype(np.int16)
    _assert_exact(graph, names, sessions, {"x": xv, "edge_index": np.zeros((2, 0), np.int64)})  # no edges


def test_prefix_sums_beyond_int32_stay_exact() -> None:
    """Running prefix sums far outside int32 (int64 CumSum), every row sum inside it."""
    b = GraphBuilder()
    x = b.input("x", "int32", ("N", 2))
    ei = b.input("edge_index", "int64", (2, "E"))
    src, dst = b.op("take_row", [ei], "src", index=0), b.op("take_row", [ei], "dst", index=1)
    b.output(b.op("scatter_add", [b.op("gather_rows", [x, src], "g"), dst, x], "s"), "int32", ("N", 2))
    graph = b.graph
    names, sessions = _sessions(graph)
    n = 4000
    xv = np.full((n, 2), 2**30 - 1, np.int32)
    xv[:, 1] = -(2**30)
    edges = np.stack([np.arange(n), np.arange(n) // 2]).astype(np.int64)  # two edges per row: |sum| < 2**31
    _assert_exact(graph, names, sessions, {"x": xv, "edge_index": edges})


def test_csr_branch_structure_and_default() -> None:
    graph = _gather_sum_graph(16, "int8")
    scatter = export_onnx(graph, aggregation="scatter")
    assert not any(n.op_type == "If" for n in scatter.graph.node)
    default_ifs = [n for n in export_onnx(graph).graph.node if n.op_type == "If"]
    assert len(default_ifs) == 1  # "csr" (y only); no If for the chunked index (built in its branch)
    model = export_onnx(graph, aggregation="csr", expose_all=True)
    onnx.checker.check_model(model, full_check=True)
    # the whole-graph chunked index (one per table: its zero row) is padded only if the whole-graph branch runs:
    # inside that branch, not at the top level nor in the int32 branch
    assert "Pad" not in [n.op_type for n in model.graph.node]
    ifs = [n for n in model.graph.node if n.op_type == "If"]
    assert len(ifs) == 2  # the two sums of gathered rows; scatter_max and degree stay top-level
    for node in ifs:
        branches = {a.name: a.g for a in node.attribute}
        ops = {k: [n.op_type for n in g.node] for k, g in branches.items()}
        assert "CumSum" in ops["then_branch"] and "ScatterElements" not in ops["then_branch"]
        if "If" in ops["else_branch"]:  # a bounded table: int32 CSR first, then int64 CSR or the scatter
            inner_if = next(n for n in branches["else_branch"].node if n.op_type == "If")
            inner = {a.name: [n.op_type for n in a.g.node] for a in inner_if.attribute}
            assert "CumSum" in inner["then_branch"] and "ScatterElements" not in inner["then_branch"]
            # above the whole-graph bound: sorted edges take the pieces (a Loop), others the scatter
            last = {a.name: a.g for a in next(n for a in inner_if.attribute if a.name == "else_branch"
                                               for n in a.g.node if n.op_type == "If").attribute}
            assert [n.op_type for n in last["then_branch"].node].count("Loop") == 1
            assert "ScatterElements" in [n.op_type for n in last["else_branch"].node]
            body = next(a.g for n in last["then_branch"].node if n.op_type == "Loop" for a in n.attribute)
            body_ops = [n.op_type for n in body.node]
            assert body_ops.count("CumSum") == 2 and body_ops.count("Gather") == 3 and "ScatterElements" not in body_ops
            assert "Cast" not in ops["then_branch"]  # int32 all the way
            # above the int32 bound: chunked int32 prefix sums (bounded table); int64 only for the [m, H] chunk
            # totals and the values read at the N + 1 row pointers
            chunked = next(a.g for n in branches["else_branch"].node if n.op_type == "If" for a in n.attribute
                           if a.name == "then_branch")
            casts = [_cast_to(n) for n in chunked.node if n.op_type == "Cast"]
            assert casts.count(TensorProto.INT64) == 2 and TensorProto.UINT32 not in casts
            assert sum(n.op_type == "CumSum" for n in chunked.node) == 2
            assert [n.op_type for n in chunked.node].count("Pad") == 1 and "Pad" not in ops["then_branch"]
        else:
            assert "ScatterElements" in ops["else_branch"]
    # row pointers and the padded source index are built once, outside the branches
    top = [n.op_type for n in model.graph.node]
    assert top.count("CumSum") == 1


@pytest.mark.parametrize("extra", [0, 1])
def test_csr_branch_bounded_by_edge_count(monkeypatch: pytest.MonkeyPatch, extra: int) -> None:
    """Sorted edges take the CSR branch only while ``E * H <= CSR_MAX_ELEMENTS`` (its int64 ``[E + 1, H]``
    buffers bounded); at the bound and one edge above it both branches are exact at 1 and 2 threads."""
    from qgnn_deploy.backends.onnx import segment

    width, edges = 7, 40
    monkeypatch.setattr(segment, "CSR_MAX_ELEMENTS", width * edges)
    graph = _gather_sum_graph(width, "int16")
    model = export_onnx(graph)
    caps = [t for t in model.graph.initializer if t.name.startswith("csr_max_edges")]
    assert [onnx.numpy_helper.to_array(t).tolist() for t in caps] == [[edges]]
    names, sessions = _sessions(graph)
    rng = np.random.default_rng(extra)
    n = 12
    ei = sort_edges_by_destination(rng.integers(0, n, (2, edges + extra)).astype(np.int64))
    ei[:, :3] = [[0, 0, 0], [0, 0, 0]]  # duplicates, a self loop
    ei = sort_edges_by_destination(ei)
    xv = rng.integers(-32768, 32768, (n, width)).astype(np.int16)
    _assert_exact(graph, names, sessions, {"x": xv, "edge_index": ei})


@pytest.mark.parametrize("edges", [3, 4])
def test_int32_prefix_sums_only_below_their_bound(edges: int) -> None:
    """A table bounded by 2**29 (int16 * 2**14) sums in int32 for E <= 3 ((2**31 - 1) // 2**29), in int64 above:
    sorted edges at the extremes are exact on both sides of the bound, at 1 and 2 threads."""
    b = GraphBuilder()
    x = b.input("x", "int16", ("N", 2))
    ei = b.input("edge_index", "int64", (2, "E"))
    src, dst = b.op("take_row", [ei], "src", index=0), b.op("take_row", [ei], "dst", index=1)
    t = b.op("mul", [b.op("cast", [x], "x32", dtype="int32"), b.const("k", np.array(2**14, np.int32))], "t")
    b.output(b.op("scatter_add", [b.op("gather_rows", [t, src], "g"), dst, x], "s"), "int32", ("N", 2))
    model = export_onnx(b.graph)
    caps = [onnx.numpy_helper.to_array(t).tolist() for t in model.graph.initializer
            if t.name.startswith("csr32_max_edges")]
    assert caps == [[3]]
    names, sessions = _sessions(b.graph)
    xv = np.array([[-32768, 32767], [-32768, 32767], [32767, -32768], [1, -1]], np.int16)
    for target in (0, 3):  # all edges into one node: prefix sums reach 3 or 4 * 2**29 in magnitude
        ei_v = np.stack([np.arange(edges) % 3, np.full(edges, target)]).astype(np.int64)
        _assert_exact(b.graph, names, sessions, {"x": xv, "edge_index": ei_v})


def test_degree_shared_across_references_of_equal_rows() -> None:
    """GCN's ``degree(dst, x)`` and ``scatter_add(..., dst, in_degree)`` (refs with the same row dimension N) share
    one degree ScatterElements, which the CSR row pointers read; exact on sorted and unsorted edges."""
    b = GraphBuilder()
    x = b.input("x", "int16", ("N", 3))
    ei = b.input("edge_index", "int64", (2, "E"))
    src, dst = b.op("take_row", [ei], "src", index=0), b.op("take_row", [ei], "dst", index=1)
    deg = b.op("degree", [dst, x], "deg")
    x32 = b.op("cast", [x], "x32", dtype="int32")
    s = b.op("scatter_add", [b.op("gather_rows", [x32, src], "g"), dst, deg], "s")
    b.output(b.op("add", [s, b.op("mul", [x32, deg], "xd")], "y"), "int32", ("N", 3))
    model = export_onnx(b.graph)
    assert sum(n.op_type == "ScatterElements" for n in model.graph.node) == 1
    names, sessions = _sessions(b.graph)
    rng = np.random.default_rng(9)
    for xv, e in awkward_graphs(3).values():
        xv = rng.integers(-32768, 32768, xv.shape).astype(np.int16)
        for edges in (e, sort_edges_by_destination(e)):
            _assert_exact(b.graph, names, sessions, {"x": xv, "edge_index": edges})


def test_sort_helper_and_bad_option() -> None:
    ei = np.array([[5, 1, 2, 0], [3, 0, 3, 1]], np.int64)
    got = sort_edges_by_destination(ei)
    assert got.tolist() == [[1, 0, 5, 2], [0, 1, 3, 3]]  # stable
    with pytest.raises(ValueError, match="shape"):
        sort_edges_by_destination(np.zeros((3, 2), np.int64))
    with pytest.raises(QgnnError, match="aggregation"):
        export_onnx(op_zoo_graph(), aggregation="dense")


def test_chunk_length_at_its_limits() -> None:
    """``c * bound < 2**31`` for the chosen power-of-two chunk, and no chunk shorter than CHUNK_MIN."""
    from qgnn_deploy.backends.onnx import segment

    assert segment.chunk_length(32385) == segment.CHUNK_MAX  # GCN's int8 x uint8 messages
    assert segment.chunk_length(32768 * 255) == 256 and 256 * 32768 * 255 < 2**31
    assert segment.chunk_length(32768 * 256) is None and segment.chunk_length(None) is None
    for bound in (1, 127, 32385, 2**17 + 1, 2**23 - 1):
        c = segment.chunk_length(bound)
        assert c is not None and c * bound <= 2**31 - 1 and (c == segment.CHUNK_MAX or 2 * c * bound > 2**31 - 1)
    assert [segment.narrow_dtype(b) for b in (127, 128, 32767, 32768, None)] == \
        ["int8", "int16", "int16", "int32", "int32"]


def _subgraphs(graph: onnx.GraphProto) -> list[onnx.GraphProto]:
    found = [graph]
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                found += _subgraphs(attr.g)
    return found


def _scaled_sum_graph(x_dtype: str, width: int = 2) -> Graph:
    """``scatter_add(gather_rows(cast(x) * 255, src), dst)``: a table bounded by 255 times x's dtype."""
    b = GraphBuilder()
    x = b.input("x", x_dtype, ("N", width))
    ei = b.input("edge_index", "int64", (2, "E"))
    src, dst = b.op("take_row", [ei], "src", index=0), b.op("take_row", [ei], "dst", index=1)
    t = b.op("mul", [b.op("cast", [x], "x32", dtype="int32"), b.const("k", np.array(255, np.int32))], "t")
    b.output(b.op("scatter_add", [b.op("gather_rows", [t, src], "g"), dst, x], "s"), "int32", ("N", width))
    return b.graph


def _extremes(x_dtype: str, n: int) -> np.ndarray:
    lo, hi = int(np.iinfo(x_dtype).min), int(np.iinfo(x_dtype).max)
    return np.array([[lo, hi], [hi, lo], [lo, lo], [hi, hi]] * (n // 4 + 1), x_dtype)[:n]


def _check_chunked_sums(x_dtype: str, cap: int, chunk: int, edges: int) -> None:
    """:func:`_scaled_sum_graph` with x at its dtype's extremes, on sorted edges with
    rows of at most 250 edges (every row sum in int32) ending on and across chunk boundaries, an empty first row
    and empty last rows, sources all alike (running sums far beyond int32) or random; exact at 1 and 2 threads,
    and the unsorted copy (the scatter branch) too.  ``cap``: the int32 CSR's edge bound the export must show."""
    graph = _scaled_sum_graph(x_dtype)
    model = export_onnx(graph)
    caps = [onnx.numpy_helper.to_array(t).tolist() for t in model.graph.initializer
            if t.name.startswith("csr32_max_edges")]
    assert caps == [[cap]]
    chunk_consts = [onnx.numpy_helper.to_array(t).tolist() for t in model.graph.initializer
                    if "by_chunk" in t.name]
    assert chunk_consts == [[-1, chunk, 2]]
    gathered = {_cast_to(n) for g in _subgraphs(model.graph) for n in g.node if n.op_type == "Cast"}
    assert (TensorProto.INT16 in gathered) == (x_dtype == "int8")  # rows gathered as int16 when they fit
    names, sessions = _sessions(graph)
    rng = np.random.default_rng(edges)
    n = edges // 200 + 40
    xv = _extremes(x_dtype, n)
    boundaries = [chunk - 1, chunk, chunk + 1, 2 * chunk - 1, 2 * chunk, cap]
    ends = np.sort(np.concatenate([boundaries, rng.integers(0, edges, 8)]))
    ends = np.unique(np.clip(np.concatenate([ends, np.arange(250, edges, 250)]), 0, edges))
    ends = ends[np.diff(np.concatenate([[0], ends])) <= 250]  # rows of at most 250 edges: |row sum| < 2**31
    dst_v = np.searchsorted(ends, np.arange(edges), side="right") + 1  # row 0 empty, then consecutive rows
    for same_sign in (True, False):
        src_v = np.full(edges, 3) if same_sign else rng.integers(0, n, edges)
        ei_v = np.stack([src_v, dst_v]).astype(np.int64)
        assert np.bincount(dst_v).max() <= 250 and dst_v[0] == 1 and dst_v[-1] < n - 2
        _assert_exact(graph, names, sessions, {"x": xv, "edge_index": ei_v})
        _assert_exact(graph, names, sessions, {"x": xv, "edge_index": ei_v[:, ::-1].copy()})  # unsorted


@pytest.mark.parametrize("edges", [257, 258, 511, 512, 513, 1300])
def test_chunked_prefix_sums_across_chunk_boundaries(edges: int) -> None:
    """A table bounded by B = 32768 * 255 (int32 rows, chunks of 256, int32 CSR up to 257 edges): sorted edges
    beyond that take the chunked int32 prefix sums, whose running sums pass 2**32 several times."""
    _check_chunked_sums("int16", 257, 256, edges)


@pytest.mark.parametrize("edges", [65793, 65794, 70000])
def test_chunked_prefix_sums_over_int16_rows(edges: int) -> None:
    """GCN's bound, int8 * 255 (|v| <= 32640): rows gathered as int16, chunks of 2**14, int32 CSR up to 65793
    edges; above it every running sum past 2**31 stays exact."""
    _check_chunked_sums("int8", 65793, 16384, edges)


def _pieces_for_every_sorted_graph(monkeypatch: pytest.MonkeyPatch, piece_edges: int) -> None:
    """Whole-graph CSR only for E = 0, so sorted edges take :func:`segment.csr_pieced_sum`, ~``piece_edges`` each."""
    from qgnn_deploy.backends.onnx import segment

    monkeypatch.setattr(segment, "CSR_MAX_ELEMENTS", 0)
    monkeypatch.setattr(segment, "PIECE_EDGES", piece_edges)


@pytest.mark.parametrize("piece_edges", [1, 5, 64, 1 << 20])
def test_pieced_sums_exact_on_awkward_edges(monkeypatch: pytest.MonkeyPatch, piece_edges: int) -> None:
    """The CSR sums piece by piece: int16-bounded and constant tables (chunked int32 pieces), the op zoo, and an
    unbounded int32 table (int64 pieces, prefix sums beyond int32), on every awkward graph in both orders; pieces of
    one row up to the whole graph give the interpreter's result at 1 and 2 threads."""
    _pieces_for_every_sorted_graph(monkeypatch, piece_edges)
    rng = np.random.default_rng(piece_edges)
    graph = _gather_sum_graph(7, "int16")
    names, sessions = _sessions(graph)
    loops = [n for g in _subgraphs(export_onnx(graph, expose_all=True).graph) for n in g.node if n.op_type == "Loop"]
    assert len(loops) == 2  # one per sum of gathered rows
    zoo = op_zoo_graph()
    zoo_names, zoo_sessions = _sessions(zoo)
    for x, ei in awkward_graphs(7).values():
        xv = rng.integers(-32768, 32768, x.shape).astype(np.int16)
        for edges in (ei, sort_edges_by_destination(ei)):
            _assert_exact(graph, names, sessions, {"x": xv, "edge_index": edges})
    for x, ei in awkward_graphs(12).values():
        _assert_exact(zoo, zoo_names, zoo_sessions, {"x": x, "edge_index": sort_edges_by_destination(ei)})
    b = GraphBuilder()
    x = b.input("x", "int32", ("N", 2))
    ei = b.input("edge_index", "int64", (2, "E"))
    src, dst = b.op("take_row", [ei], "src", index=0), b.op("take_row", [ei], "dst", index=1)
    b.output(b.op("scatter_add", [b.op("gather_rows", [x, src], "g"), dst, x], "s"), "int32", ("N", 2))
    names, sessions = _sessions(b.graph)
    n = 300
    xv = np.stack([np.full(n, 2**30 - 1), np.full(n, -(2**30))], axis=1).astype(np.int32)
    wide = np.stack([np.arange(n), np.arange(n) // 2]).astype(np.int64)  # two edges per row: |sum| < 2**31
    _assert_exact(b.graph, names, sessions, {"x": xv, "edge_index": wide})


@pytest.mark.parametrize("piece_edges", [1, 3, 40, 300, 700])
def test_pieced_sums_across_rows_chunks_and_empty_pieces(monkeypatch: pytest.MonkeyPatch, piece_edges: int) -> None:
    """Sorted edges through the pieces with chunks of 256 (a table bounded by 32768 * 255): an empty first row,
    single-edge rows, a 250-edge row (pieces far above ``piece_edges``), a run of isolated nodes longer than
    a piece (pieces without edges), random rows, empty last rows; pieces crossing chunk boundaries; extreme values
    (running sums past 2**32 with all sources alike).  Exact at 1 and 2 threads, the unsorted copy too."""
    _pieces_for_every_sorted_graph(monkeypatch, piece_edges)
    graph = _scaled_sum_graph("int16")
    names, sessions = _sessions(graph)
    rng = np.random.default_rng(piece_edges)
    n = 120
    deg = np.zeros(n, np.int64)
    deg[1:6] = 1
    deg[6] = 250
    deg[60:110] = rng.integers(0, 30, 50)
    deg[70] = 249
    dst_v = np.repeat(np.arange(n), deg)
    xv = _extremes("int16", n)
    for same_sign in (True, False):
        src_v = np.full(dst_v.size, 3) if same_sign else rng.integers(0, n, dst_v.size)
        ei_v = np.stack([src_v, dst_v]).astype(np.int64)
        _assert_exact(graph, names, sessions, {"x": xv, "edge_index": ei_v})
        _assert_exact(graph, names, sessions, {"x": xv, "edge_index": ei_v[:, ::-1].copy()})


@pytest.mark.parametrize("width", [1, 3])
def test_pieces_one_and_odd_widths(monkeypatch: pytest.MonkeyPatch, width: int) -> None:
    """The pieces with one column and an odd width, int16 rows (GCN's bound) and int32 rows (chunks of 256, one
    to several chunks per piece): hub rows, rows of exactly one chunk, isolated runs, at 1 and 2 threads, against
    the interpreter."""
    from qgnn_deploy.backends.onnx import segment

    for x_dtype, hub in (("int8", 300), ("int16", 250)):
        for piece_edges in (7, 256, 900):
            _pieces_for_every_sorted_graph(monkeypatch, piece_edges)
            graph = _scaled_sum_graph(x_dtype, width)
            assert segment.chunk_length(255 * (128 if x_dtype == "int8" else 32768)) in (16384, 256)
            names, sessions = _sessions(graph)
            rng = np.random.default_rng(piece_edges + width)
            n = 90
            deg = rng.integers(0, 9, n)
            deg[[0, n - 1]] = 0
            deg[5], deg[40:55] = hub, 0
            deg[60] = 256
            dst_v = np.repeat(np.arange(n), deg)
            xv = np.resize(_extremes(x_dtype, n * width).ravel(), (n, width))
            src_v = rng.integers(0, n, dst_v.size)
            ei_v = np.stack([src_v, dst_v]).astype(np.int64)
            _assert_exact(graph, names, sessions, {"x": xv, "edge_index": ei_v})
