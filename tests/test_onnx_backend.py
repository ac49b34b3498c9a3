"""ONNX backend: ORT reproduces the reference interpreter bit for bit, on every op and awkward graph."""

from __future__ import annotations

import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from qgnn_deploy.backends.onnx import HANDLERS, OnnxRunner, export_onnx, infer_dtypes, kernel_report
from qgnn_deploy.errors import QgnnError
from qgnn_deploy.ir import OPS, run
from qgnn_deploy.ir.graph import Graph, GraphBuilder
from qgnn_deploy.ir.testing import awkward_graphs, lut_steps_graph, op_zoo_graph, pooled_zoo_graph

CASES = list(awkward_graphs(4))
THREADS = (1, 2)
REPEATS = 3


def _batch(n: int) -> np.ndarray:
    return (np.arange(n) * 3 // max(n, 1)).astype(np.int64)


def _feeds(graph: Graph, case: str) -> dict[str, np.ndarray]:
    x, ei = awkward_graphs(graph.inputs[0].shape[1])[case]
    feeds = {"x": x, "edge_index": ei}
    if any(v.name == "batch" for v in graph.inputs):
        feeds["batch"] = _batch(x.shape[0])
    return feeds


class AllValues:
    """ORT sessions (1 and 2 threads) over a model exposing every IR value as an output."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.model = export_onnx(graph, expose_all=True)
        self.names = [o.name for o in self.model.graph.output]
        data = self.model.SerializeToString()
        self.sessions = {}
        for threads in THREADS:
            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            so.log_severity_level = 3
            self.sessions[threads] = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])

    def assert_exact(self, feeds: dict[str, np.ndarray]) -> None:
        ref = run(self.graph, feeds, keep_all=True)
        for threads, sess in self.sessions.items():
            for rep in range(REPEATS):
                outs = dict(zip(self.names, sess.run(None, feeds)))
                for name, got in outs.items():
                    want = ref[name]
                    assert got.dtype == want.dtype, (name, got.dtype, want.dtype)
                    assert got.shape == want.shape, (name, got.shape, want.shape)
                    assert np.array_equal(got, want), f"{name} differs (threads={threads}, run {rep})"


@pytest.fixture(scope="module")
def zoo() -> AllValues:
    return AllValues(op_zoo_graph())


@pytest.fixture(scope="module")
def pooled() -> AllValues:
    return AllValues(pooled_zoo_graph())


def test_one_handler_per_ir_op() -> None:
    assert set(HANDLERS) == set(OPS)


def test_zoo_uses_every_op() -> None:
    used = set(op_zoo_graph().op_counts()) | set(pooled_zoo_graph().op_counts())
    assert used == set(OPS)


@pytest.mark.parametrize("case", CASES)
def test_op_zoo_bit_exact(zoo: AllValues, case: str) -> None:
    zoo.assert_exact(_feeds(zoo.graph, case))


@pytest.mark.parametrize("case", CASES)
def test_pooled_zoo_bit_exact(pooled: AllValues, case: str) -> None:
    pooled.assert_exact(_feeds(pooled.graph, case))


def test_dtype_inference_matches_interpreter() -> None:
    for graph in (op_zoo_graph(), pooled_zoo_graph()):
        env = run(graph, _feeds(graph, "random"), keep_all=True)
        dtypes = infer_dtypes(graph)
        assert {k: str(v.dtype) for k, v in env.items()} == {k: dtypes[k] for k in env}


@pytest.mark.parametrize("make", [op_zoo_graph, pooled_zoo_graph])
def test_checker_full_check_and_dynamic_dims(make) -> None:
    model = export_onnx(make())
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version >= 18
    dims = {d.dim_param for vi in list(model.graph.input) + list(model.graph.output)
            for d in vi.type.tensor_type.shape.dim if d.dim_param}
    assert {"N", "E"} <= dims


def test_int4_weights_stay_int4_and_exact(zoo: AllValues) -> None:
    model = export_onnx(zoo.graph)
    int4 = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT4]
    assert len(int4) == 1 and list(int4[0].dims) == [12, 8]
    assert len(int4[0].raw_data) == 12 * 8 // 2  # stored at 4 bits
    casts = [n for n in model.graph.node if n.op_type == "Cast" and n.input[0] == int4[0].name]
    assert casts and casts[0].attribute[0].i == onnx.TensorProto.INT8
    ref = run(zoo.graph, _feeds(zoo.graph, "random"), keep_all=True)
    got = dict(zip(zoo.names, zoo.sessions[1].run(None, _feeds(zoo.graph, "random"))))
    assert np.array_equal(got["w"], ref["w"])


def test_saturation_safe_weights_use_u8u8() -> None:
    """Full-range int8 weights against full-range u8 activations go to one u8 x u8 MatMulInteger (weights + 128,
    zero point + 128): no vpmaddubsw saturation on non-VNNI x86, and one GEMM instead of a 7-bit split."""
    graph = op_zoo_graph()
    safe, fast = export_onnx(graph, int8_gemm="u8u8"), export_onnx(graph, saturation_safe=False)
    mmi = lambda m: [n for n in m.graph.node if n.op_type == "MatMulInteger"]  # noqa: E731
    assert (len(mmi(safe)), len(mmi(fast))) == (3, 3)
    inits = {t.name: t.data_type for t in safe.graph.initializer}
    assert [inits.get(n.input[1]) for n in mmi(safe)].count(onnx.TensorProto.UINT8) == 2
    feeds = _feeds(graph, "hub")
    want = run(graph, feeds)["y"]
    for model in (safe, fast):
        assert np.array_equal(OnnxRunner(model, graph).run(feeds)["y"], want)


def _short_split_graph() -> Graph:
    b = GraphBuilder()
    xq = b.op("quantize", [b.input("x", "float32", ("N", 63))], "xq", scale=1.0, zero_point=0, qmin=0, qmax=255,
              dtype="uint8")
    b.output(b.op("matmul", [xq, b.const("w", np.full((63, 2), -128, np.int8))], "y"), "int32", ("N", 2))
    return b.graph


def test_split_gemm_halves_are_7bit_and_exact() -> None:
    """``int8_gemm="split"``: full-range constant weights become ``[Wa | Wb]`` with every entry in [-64, 64] (two
    adjacent u8 x s8 products cannot leave int16 on any CPU), one MatMulInteger per weight, summed exactly; shorter
    GEMMs (K < 64) keep u8 x u8."""
    b = GraphBuilder()
    x = b.input("x", "float32", ("N", 65))
    xq = b.op("quantize", [x], "xq", scale=1.0, zero_point=0, qmin=0, qmax=255, dtype="uint8")
    w = np.tile(np.array([[-128, 127, -65, 64, 0, -1]], np.int8), (65, 1))
    w[::2] = w[::2, ::-1]
    b.output(b.op("matmul", [xq, b.const("w", w)], "y"), "int32", ("N", 6))
    model = export_onnx(b.graph, int8_gemm="split")
    mmi = [n for n in _if_branch(model, "else_branch").node if n.op_type == "MatMulInteger"]  # activations > 127
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    assert len(mmi) == 1 and inits[mmi[0].input[1]].dtype == np.int8
    halves = inits[mmi[0].input[1]].astype(np.int16)
    assert halves.shape == (65, 12) and np.abs(halves).max() <= 64
    assert np.array_equal(halves[:, :6] + halves[:, 6:], w)
    feeds = {"x": np.array([[255.0] * 65, [0.0] * 65, [255.0, 0.0] * 32 + [17.0], [128.0] * 65], np.float32)}
    want = run(b.graph, feeds)["y"]
    assert want.min() < -2**15 < 2**15 < want.max()  # sums a saturating int16 pair would get wrong
    for threads in THREADS:
        assert np.array_equal(OnnxRunner(model, b.graph, threads=threads).run(feeds)["y"], want)
    short = export_onnx(_short_split_graph(), int8_gemm="split")
    assert not any(n.op_type == "Split" for n in short.graph.node)
    zoo = op_zoo_graph()
    zoo_feeds = _feeds(zoo, "hub")
    assert np.array_equal(OnnxRunner(export_onnx(zoo, int8_gemm="split"), zoo).run(zoo_feeds)["y"],
                          run(zoo, zoo_feeds)["y"])


def _if_branch(model: onnx.ModelProto, branch: str) -> onnx.GraphProto:
    """The ``branch`` subgraph of the model's one top-level ``If``."""
    ifs = [n for n in model.graph.node if n.op_type == "If"]
    assert len(ifs) == 1
    return next(a.g for a in ifs[0].attribute if a.name == branch)


@pytest.mark.parametrize("form", ["split", "u8u8"])
def test_gemm_takes_u8s8_when_activations_fit_7bit(form: str) -> None:
    """Full-range constant weights against u8 activations that may exceed 127: their maximum (row maxima, then
    their maximum) decides at run time;
    activations <= 127 run the plain u8 x s8 MatMulInteger over W (pairs within 2 * 127 * 128 = 32512: exact on
    every CPU), larger ones the saturation-safe form.  Exact either way, at 1 and 2 threads, also for N = 0."""
    b = GraphBuilder()
    x = b.input("x", "float32", ("N", 65))
    xq = b.op("quantize", [x], "xq", scale=1.0, zero_point=0, qmin=0, qmax=255, dtype="uint8")
    w = np.tile(np.array([[-128, 127, -128, -128, 0, -1]], np.int8), (65, 1))
    b.output(b.op("matmul", [xq, b.const("w", w)], "y"), "int32", ("N", 6))
    model = export_onnx(b.graph, int8_gemm=form)
    top = [n.op_type for n in model.graph.node]
    assert top.count("ReduceMax") == 2 and top.count("If") == 1 and "MatMulInteger" not in top
    fast = [n for n in _if_branch(model, "then_branch").node if n.op_type == "MatMulInteger"]
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    assert len(fast) == 1 and np.array_equal(inits[fast[0].input[1]], w)
    safe = [n for n in _if_branch(model, "else_branch").node if n.op_type == "MatMulInteger"]
    assert len(safe) == 1 and inits[safe[0].input[1]].dtype == (np.int8 if form == "split" else np.uint8)
    rng = np.random.default_rng(3)
    cases = {"max127": np.full((3, 65), 127.0, np.float32), "one128": np.full((3, 65), 127.0, np.float32),
             "random": rng.integers(0, 128, (40, 65)).astype(np.float32), "empty": np.zeros((0, 65), np.float32),
             "full": rng.integers(0, 256, (40, 65)).astype(np.float32)}
    cases["one128"][1, 7] = 128.0
    for name, xv in cases.items():
        want = run(b.graph, {"x": xv})["y"]
        if name == "max127":
            assert want.min() == -128 * 127 * 65  # every pair at -32512, the int16 edge the proof needs
        for threads in THREADS:
            assert np.array_equal(OnnxRunner(model, b.graph, threads=threads).run({"x": xv})["y"], want), name


def test_host_int8_gemm_reads_cpu_flags(tmp_path) -> None:
    """The ``auto`` GEMM form follows the exporting CPU: split with AVX-512 VNNI or AVX-VNNI, else u8 x u8."""
    from qgnn_deploy.backends.onnx.exporter import host_int8_gemm

    cases = {"fma avx2 avx512f avx512_vnni": "split", "avx2 avx_vnni": "split", "avx2 fma": "u8u8"}
    for flags, want in cases.items():
        (tmp_path / "cpuinfo").write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        assert host_int8_gemm(str(tmp_path / "cpuinfo")) == want
    assert host_int8_gemm(str(tmp_path / "absent")) == "u8u8"


def test_artifact_int8_gemm_follows_the_target_not_the_exporting_host() -> None:
    """An artifact for a compiled target gets the GEMM form that is fast on that target's CPU."""
    from qgnn_deploy.backends.tvm import resolve_target
    from qgnn_deploy.exporting import onnx_int8_gemm

    assert onnx_int8_gemm(None) == "auto"  # --target onnx: the exporting host
    assert onnx_int8_gemm(resolve_target("arm64")) == onnx_int8_gemm(resolve_target("x86-64-v3")) == "u8u8"
    for vnni in ("x86-64-v4-vnni", "x86-64-v3-vnni"):
        assert onnx_int8_gemm(resolve_target(vnni)) == "split"
    with pytest.raises(QgnnError, match="int8_gemm"):
        export_onnx(op_zoo_graph(), int8_gemm="fast")


def test_constants_take_the_broadcast_rank() -> None:
    """Scalar constants against ``[N, 1]`` operands are stored as ``[1, 1]`` (ORT's broadcaster then runs one loop,
    not one per row); values unchanged, so ORT still equals the interpreter."""
    b = GraphBuilder()
    x = b.input("x", "int32", ("N", 1))
    y = b.op("mul", [b.op("add", [x, b.const("one", np.array(1, np.int32))], "x1"),
                     b.const("two", np.array(2, np.int32))], "y")
    b.output(y, "int32", ("N", 1))
    model = export_onnx(b.graph)
    inits = {t.name: list(t.dims) for t in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type in ("Add", "Mul"):
            assert [inits[i] for i in n.input if i in inits] == [[1, 1]], n
    feeds = {"x": np.arange(-5, 6, dtype=np.int32).reshape(-1, 1)}
    assert np.array_equal(OnnxRunner(model, b.graph).run(feeds)["y"], run(b.graph, feeds)["y"])


def test_no_split_when_activations_are_7bit() -> None:
    """u8 activations bounded by 127 cannot overflow int16 pairs even with full-range weights."""
    b = GraphBuilder()
    x = b.input("x", "float32", ("N", 20))
    xq = b.op("quantize", [x], "xq", scale=0.1, zero_point=0, qmin=0, qmax=127, dtype="uint8")
    w = np.tile(np.array([-128, 127], np.int8), (20, 3))
    b.output(b.op("matmul", [xq, b.const("w", w)], "y"), "int32", ("N", 6))
    model = export_onnx(b.graph)
    assert sum(n.op_type == "MatMulInteger" for n in model.graph.node) == 1
    AllValues(b.graph).assert_exact({"x": np.full((4, 20), 100.0, np.float32)})


def test_runtime_int8_weights_use_u8u8() -> None:
    b = GraphBuilder()
    a = b.input("a", "int8", ("N", 40))
    w = b.input("w", "int8", (40, 6))
    b.output(b.op("matmul", [a, w], "y", a_zero_point=-3, b_zero_point=5), "int32", ("N", 6))
    rng = np.random.default_rng(7)
    model = export_onnx(b.graph)
    mmi = [n for n in model.graph.node if n.op_type == "MatMulInteger"]
    assert len(mmi) == 1
    AllValues(b.graph).assert_exact({"a": rng.integers(-128, 128, (50, 40)).astype(np.int8),
                                     "w": rng.integers(-128, 128, (40, 6)).astype(np.int8)})


def test_odd_count_int4() -> None:
    b = GraphBuilder()
    x = b.input("x", "uint8", ("N", 3))
    w = np.array([[-8, 7, 1], [0, -1, 3], [5, -6, 2]], np.int8)  # 9 nibbles: odd count
    from qgnn_deploy.ir.testing import pack_int4

    wq = b.op("unpack_int4", [b.const("wp", pack_int4(w))], "w", shape=[3, 3])
    y = b.op("matmul", [x, wq], "y", a_zero_point=3)
    b.output(y, "int32", ("N", 3))
    AllValues(b.graph).assert_exact({"x": np.arange(30, dtype=np.uint8).reshape(10, 3) * 8})


def test_optimized_model_runs_integer_kernels() -> None:
    graph = op_zoo_graph()
    rep = kernel_report(export_onnx(graph), _feeds(graph, "random"), graph)
    ops = rep["optimized_ops"]
    # 3 IR matmuls, one MatMulInteger each (full-range int8 weights run u8 x u8 against saturation)
    assert ops.get("MatMulInteger") == 3
    assert ops.get("ScatterElements", 0) >= 3
    assert not rep["inexact_kernels"]
    assert not any("MatMulNBits" in op for op in ops)
    # float MatMuls only as exact helpers: x @ ones[1, H] (a row broadcast) or acc @ diag(scale)
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in export_onnx(graph).graph.initializer}
    for node in export_onnx(graph).graph.node:
        if node.op_type == "MatMul":
            b = inits[node.input[1]]
            assert (b.shape[0] == 1 and np.all(b == 1)) or np.array_equal(b, np.diag(np.diag(b))), node.name
    assert "MatMulInteger" in rep["profiled"] and rep["providers"] == ["CPUExecutionProvider"]
    # every MatMulInteger gets uint8 activations (MLAS u8s8 is ~10x faster than s8s8)
    model = export_onnx(graph)
    producers = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        if node.op_type == "MatMulInteger":
            src = producers.get(node.input[0])
            assert src is not None and (src.op_type in ("QuantizeLinear", "Cast")), src
            if src.op_type == "Cast":
                assert src.attribute[0].i == onnx.TensorProto.UINT8


# ------------------------------------------------------------------- edge values, op by op
def _single(op: str, inputs: list[tuple[str, str, tuple]], out_dtype: str, **attrs) -> Graph:
    b = GraphBuilder()
    names = [b.input(n, dt, shape) for n, dt, shape in inputs]
    y = b.op(op, names, "y", **attrs)
    b.output(y, out_dtype, ("N", "H"))
    return b.graph


def test_quantize_edge_values() -> None:
    rng = np.random.default_rng(0)
    for scale, zp, dtype, qmin, qmax in [(0.5, 0, "int8", -128, 127), (0.05, 128, "uint8", 0, 255),
                                         (0.1, 3, "int8", -7, 7), (0.013, 0, "int16", -30000, 30000),
                                         (0.7, 5, "int32", -2**31, 2**31 - 1)]:
        s = np.float32(scale)
        vals = np.concatenate([np.arange(-300, 300, dtype=np.float32) * s * np.float32(0.5),  # exact ties
                               (np.arange(-300, 300) + 0.5).astype(np.float32) * s,
                               rng.normal(0, 100, 4000).astype(np.float32),
                               np.array([1e10, -1e10, 3e9, -3e9, 1e30, -1e30, 2**31, -2**31, 0, -0.0], np.float32)])
        vals = vals[: len(vals) // 8 * 8].reshape(-1, 8)
        g = _single("quantize", [("x", "float32", ("N", 8))], dtype, scale=scale, zero_point=zp, qmin=qmin,
                    qmax=qmax, dtype=dtype)
        AllValues(g).assert_exact({"x": vals})


@pytest.mark.parametrize("adt,azp,bzp", [("uint8", 0, 0), ("uint8", 128, 0), ("int8", 0, 0), ("int8", -5, 3),
                                         ("uint8", 255, -128)])
def test_matmul_extremes(adt: str, azp: int, bzp: int) -> None:
    """Saturating inputs over K=1433 (Cora's width): no int16 saturation in the u8 x s8 kernel."""
    rng = np.random.default_rng(1)
    k = 1433
    b = GraphBuilder()
    x = b.input("x", adt, ("N", k))
    for name, w in (("w_max", np.full((k, 16), 127, np.int8)), ("w_min", np.full((k, 16), -128, np.int8)),
                    ("w_rand", rng.integers(-128, 128, (k, 16)).astype(np.int8))):
        b.output(b.op("matmul", [x, b.const(name, w)], f"y_{name}", a_zero_point=azp, b_zero_point=bzp),
                 "int32", ("N", 16))
    info = np.iinfo(adt)
    xv = np.concatenate([np.full((3, k), info.max, adt), np.full((3, k), info.min, adt),
                         rng.integers(info.min, info.max + 1, (20, k)).astype(adt)])
    AllValues(b.graph).assert_exact({"x": xv})


def test_requantize_edge_values() -> None:
    rng = np.random.default_rng(2)
    b = GraphBuilder()
    acc = b.input("acc", "int32", ("N", 4))
    m = b.input("M", "int64", ("N", 1))
    n = b.input("n", "int64", ("N", 1))
    lo = b.input("lo", "int64", ("N", 1))
    hi = b.input("hi", "int64", ("N", 1))
    outs = [
        (b.op("requantize", [acc, m, n, lo, hi], "per_row", zero_point=-3, dtype="int8"), "int8"),
        (b.op("requantize", [acc], "attrs", multiplier=12345, shift=17, zero_point=0, dtype="int8"), "int8"),
        (b.op("requantize", [acc, "", n], "rt_shift", multiplier=7, zero_point=100, dtype="uint8"), "uint8"),
        (b.op("requantize", [acc], "narrow", multiplier=1, shift=0, zero_point=0, qmin=-100, qmax=100,
              dtype="int16"), "int16"),
        (b.op("requantize", [acc, b.const("m_big", np.array([[2**30 - 1]], np.int64)),
                             b.const("n_rows", np.array([[0], [62], [31], [1]] * 50, np.int64))],
              "const_rows", zero_point=-7, dtype="int32"), "int32"),
        (b.op("requantize", [acc], "shift62", multiplier=2**30 - 1, shift=62, zero_point=0, dtype="int8"), "int8"),
        (b.op("requantize", [acc], "wide", multiplier=2**30 - 1, shift=0, zero_point=0, dtype="int64"), "int64"),
    ]
    for name, dt in outs:
        b.output(name, dt, ("N", 4))
    rows = 200
    a = rng.integers(-2**31, 2**31, (rows, 4)).astype(np.int32)
    a[:4] = [[-2**31, 2**31 - 1, -1, 0]] * 4
    a[10:20, 0] = np.arange(-5, 5) * 2 + 1  # exact .5 ties with M=1, n=1
    mult = rng.integers(1, 2**30, (rows, 1)).astype(np.int64)
    mult[10:20] = 1
    shift = rng.integers(0, 31, (rows, 1)).astype(np.int64)
    shift[:3, 0] = [0, 30, 1]
    shift[10:20] = 1
    feeds = {"acc": a, "M": mult, "n": shift, "lo": rng.integers(-128, 0, (rows, 1)).astype(np.int64),
             "hi": rng.integers(0, 128, (rows, 1)).astype(np.int64)}
    AllValues(b.graph).assert_exact(feeds)


@pytest.mark.parametrize("idx_dtype", ["int64", "int32", "int16", "int8", "uint8"])
def test_lut_steps_every_k_and_index_dtype(idx_dtype: str) -> None:
    """K = 0..9 and 33, duplicate thresholds, indices at the dtype's extremes and on/next to every threshold."""
    graph, feeds = lut_steps_graph(idx_dtype)
    AllValues(graph).assert_exact(feeds)
    ops = [n.op_type for n in export_onnx(graph).graph.node]
    assert "ReduceSum" not in ops and "Expand" in ops  # no [N, K] compare; K = 0 is a constant
    assert "CumSum" in ops  # narrow threshold spans: a dense table built in-graph from the stored steps
    if idx_dtype in ("int64", "int32"):
        assert "GreaterOrEqual" in ops  # int32 thresholds spanning billions: the binary search


def test_lut_steps_refuses_unsorted_thresholds() -> None:
    b = GraphBuilder()
    i = b.input("i", "int32", ("N",))
    y = b.op("lut_steps", [i, b.const("t", np.array([3, 1], np.int16)), b.const("v", np.arange(3, dtype=np.int8))],
             "y")
    b.output(y, "int8", ("N",))
    with pytest.raises(ValueError, match="non-decreasing"):
        run(b.graph, {"i": np.arange(4, dtype=np.int32)})


def test_integer_ops_in_narrow_and_wide_dtypes() -> None:
    """int8/int16/int64 arithmetic, clamp, reductions and LUTs (ORT lacks several of these kernels natively)."""
    rng = np.random.default_rng(3)
    b = GraphBuilder()
    p = b.input("p", "int8", ("N", 6))
    q = b.input("q", "int16", ("N", 6))
    r = b.input("r", "int64", ("N", 6))
    s16 = b.op("add", [p, q], "s16")
    m64 = b.op("mul", [r, p], "m64")
    outs = [s16, m64, b.op("clamp", [m64], "c64", lo=-2**31 - 5, hi=2**32),
            b.op("reduce_max", [m64], "rm64", axis=1, keepdims=False),
            b.op("reduce_max", [s16], "rm16", axis=0, keepdims=True),
            b.op("clamp", [s16], "c16", lo=-300, hi=300),
            b.op("div_floor", [m64, b.const("d7", np.array([[7]], np.int64))], "d64"),
            b.op("div_floor", [s16, b.op("clamp", [p], "p_pos", lo=1, hi=127)], "d16"),
            b.op("reduce_sum", [m64], "rs64", axis=1),
            b.op("reduce_sum", [s16], "rs16", axis=0, keepdims=False),
            b.op("sub", [p, b.op("cast", [q], "q8", dtype="int8")], "sub8"),
            b.op("lut", [m64, b.const("tab", np.arange(10, dtype=np.int32))], "lut64", offset=-2**32),
            b.op("lut", [p, b.const("tab16", np.arange(-50, 50, dtype=np.int16) * 3)], "lut8", offset=20)]
    b.output(outs[0], "int16", ("N", 6))  # AllValues exposes every other value too
    g = b.graph
    feeds = {"p": rng.integers(-60, 60, (300, 6)).astype(np.int8),
             "q": rng.integers(-60, 60, (300, 6)).astype(np.int16),
             "r": rng.integers(-2**33, 2**33, (300, 6)).astype(np.int64)}
    AllValues(g).assert_exact(feeds)


# ------------------------------------------------------------------- runner validation
@pytest.fixture(scope="module")
def runner() -> OnnxRunner:
    graph = op_zoo_graph()
    graph.meta["max_in_degree"] = 5
    return OnnxRunner(export_onnx(graph), graph, threads=1)


def _ok_feeds() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(4)
    return {"x": rng.normal(size=(10, 12)).astype(np.float32),
            "edge_index": np.array([[0, 1, 2, 3], [1, 2, 3, 4]], np.int64)}


@pytest.mark.parametrize("mutate,message", [
    (lambda f: f.__setitem__("edge_index", np.array([[0, 10], [1, 2]], np.int64)), "outside [0, 10)"),
    (lambda f: f.__setitem__("edge_index", np.array([[0, -1], [1, 2]], np.int64)), "node id -1"),
    (lambda f: f.__setitem__("edge_index", f["edge_index"].astype(np.int32)), "dtype int32"),
    (lambda f: f.__setitem__("x", f["x"].astype(np.float64)), "dtype float64"),
    (lambda f: f.__setitem__("edge_index", np.zeros((2, 6), np.int64)), "in-degree 6"),
    (lambda f: f.__setitem__("edge_index", np.zeros((3, 2), np.int64)), "has 3 in dimension 0"),
    (lambda f: f.__setitem__("x", f["x"][:, :5]), "expects 12"),
    (lambda f: f.pop("edge_index"), "missing input"),
    (lambda f: f["x"].__setitem__((0, 0), np.nan), "NaN"),
])
def test_malformed_inputs(runner: OnnxRunner, mutate, message: str) -> None:
    feeds = _ok_feeds()
    runner.run(feeds)
    mutate(feeds)
    with pytest.raises(QgnnError, match=re.escape(message)) as exc:
        runner.run(feeds)
    assert "\n" not in str(exc.value)


def test_runner_from_model_metadata_only() -> None:
    """Without the IR, limits come from the model's qgnn.* metadata props."""
    graph = op_zoo_graph()
    graph.meta["max_in_degree"] = 2
    r = OnnxRunner(export_onnx(graph).SerializeToString(), threads=2)
    feeds = _ok_feeds()
    assert np.array_equal(r.run(feeds)["y"], run(graph, feeds)["y"])
    feeds["edge_index"] = np.array([[0, 1, 2], [4, 4, 4]], np.int64)
    with pytest.raises(QgnnError, match="max_in_degree 2"):
        r.run(feeds)


def test_batch_and_transductive_checks() -> None:
    graph = pooled_zoo_graph()
    graph.meta["num_nodes"] = 10
    r = OnnxRunner(export_onnx(graph), graph)
    feeds = {"x": np.zeros((10, 6), np.float32), "edge_index": np.zeros((2, 0), np.int64),
             "batch": np.zeros(10, np.int64)}
    r.run(feeds)
    with pytest.raises(QgnnError, match="graph id 10"):
        r.run({**feeds, "batch": np.full(10, 10, np.int64)})
    with pytest.raises(QgnnError, match="exactly 10 nodes"):
        r.run({**feeds, "x": np.zeros((9, 6), np.float32), "batch": np.zeros(9, np.int64)})


def test_unsupported_graph_is_a_clear_error() -> None:
    graph = op_zoo_graph()
    graph.nodes[0].op = "conv2d"
    with pytest.raises(QgnnError, match="conv2d"):
        export_onnx(graph)


def test_cora_sized_parity_and_determinism() -> None:
    """N=2708, E=10556, F=1433 (Cora's shape): exact and identical across threads and repeated runs."""
    rng = np.random.default_rng(5)
    n, e, f = 2708, 10556, 1433
    graph = op_zoo_graph(features=f, hidden=16)
    feeds = {"x": (rng.random((n, f)) < 0.05).astype(np.float32) * rng.normal(1, 2, (n, f)).astype(np.float32),
             "edge_index": rng.integers(0, n, (2, e)).astype(np.int64)}
    ref = run(graph, feeds)["y"]
    model = export_onnx(graph)
    for threads in THREADS:
        runner = OnnxRunner(model, graph, threads=threads)
        for _ in range(REPEATS):
            assert np.array_equal(runner.run(feeds)["y"], ref)


@pytest.mark.parametrize("opset", [18, 20])
def test_older_opsets_store_int4_as_int8(opset: int) -> None:
    graph = op_zoo_graph()
    model = export_onnx(graph, opset=opset)
    onnx.checker.check_model(model, full_check=True)
    assert not any(t.data_type == onnx.TensorProto.INT4 for t in model.graph.initializer)
    feeds = _feeds(graph, "duplicate_edges")
    assert np.array_equal(OnnxRunner(model, graph).run(feeds)["y"], run(graph, feeds)["y"])


def test_scatter_with_symbolic_width_and_rank1_values() -> None:
    """The Expand fallback (width unknown at export) and 1-D values, including empty edge sets."""
    b = GraphBuilder()
    v = b.input("v", "int32", ("E", "H"))
    w = b.input("w", "int8", ("E",))
    idx = b.input("idx", "int64", ("E",))
    ref = b.input("ref", "int8", ("N", 1))
    batch = b.input("batch", "int64", ("N",))
    outs = [b.op("scatter_add", [v, idx, ref], "sa"), b.op("scatter_max", [v, idx, ref], "sm"),
            b.op("scatter_add", [w, idx, ref], "sa1"), b.op("scatter_max", [w, idx, ref], "sm1"),
            b.op("pool_sum", [b.op("cast", [ref], "ref32", dtype="int32"), batch], "ps")]
    b.output(outs[0], "int32", ("N", "H"))
    graph = b.graph
    rng = np.random.default_rng(6)
    checker = AllValues(graph)
    for n, e, h in [(7, 30, 3), (5, 0, 2), (1, 4, 1)]:
        checker.assert_exact({"v": rng.integers(-9, 9, (e, h)).astype(np.int32),
                              "w": rng.integers(-9, 9, e).astype(np.int8),
                              "idx": rng.integers(0, n, e).astype(np.int64),
                              "ref": rng.integers(-9, 9, (n, 1)).astype(np.int8),
                              "batch": np.sort(rng.integers(0, min(2, n), n)).astype(np.int64)})  # graph ids < N


def test_scatter_stays_exact_where_scatternd_races() -> None:
    """At E=200k with a hub, ORT's ScatterND-add loses updates at 2+ threads; our ScatterElements must not."""
    b = GraphBuilder()
    v = b.input("v", "int32", ("E", 16))
    idx = b.input("idx", "int64", ("E",))
    ref = b.input("ref", "int8", ("N", 1))
    src = b.input("src", "int64", ("E",))
    b.output(b.op("scatter_add", [v, idx, ref], "sa"), "int32", ("N", 16))
    gathered = b.op("gather_rows", [b.op("cast", [ref], "ref32", dtype="int32"), src], "g")  # fused-gather path
    b.output(b.op("scatter_add", [gathered, idx, ref], "sg"), "int32", ("N", 1))
    b.output(b.op("scatter_max", [v, idx, ref], "sm"), "int32", ("N", 16))
    graph = b.graph
    rng = np.random.default_rng(8)
    n, e = 1000, 200_000
    feeds = {"v": rng.integers(-1000, 1000, (e, 16)).astype(np.int32), "idx": rng.integers(0, n, e).astype(np.int64),
             "ref": rng.integers(-128, 128, (n, 1)).astype(np.int8), "src": rng.integers(0, n, e).astype(np.int64)}
    feeds["idx"][::2] = 0
    want = run(graph, feeds)
    model = export_onnx(graph)
    for threads in (2, 4):
        runner = OnnxRunner(model, threads=threads)
        for _ in range(5):
            got = runner.session.run(None, feeds)
            assert all(np.array_equal(g, want[o.name]) for g, o in zip(got, graph.outputs))


def _column_scatter_graph(width: int, table_dtype: str = "int8") -> Graph:
    """Every aggregation path with a static width: gathered rows (fused per-column gather) with the [E, H] gather
    also read elsewhere, a constant table, values that are not a gather, rank-3 values, and sum pooling."""
    b = GraphBuilder()
    x = b.input("x", table_dtype, ("N", width))
    ei = b.input("edge_index", "int64", (2, "E"))
    v = b.input("v", "int16", ("E", width))
    v3 = b.input("v3", "int32", ("E", 2, 3))
    batch = b.input("batch", "int64", ("N",))
    src = b.op("take_row", [ei], "src", index=0)
    dst = b.op("take_row", [ei], "dst", index=1)
    g = b.op("gather_rows", [x, src], "g")
    outs = [b.op("scatter_add", [g, dst, x], "sa_gather"), b.op("scatter_max", [g, dst, x], "sm_gather"),
            b.op("reduce_sum", [g], "g_elsewhere", axis=1, keepdims=True),
            b.op("scatter_add", [v, dst, x], "sa_values"), b.op("scatter_max", [v, dst, x], "sm_values"),
            b.op("scatter_add", [v3, dst, x], "sa_rank3"), b.op("scatter_max", [v3, dst, x], "sm_rank3"),
            b.op("degree", [dst, x], "deg")]
    table = b.const("table", (np.arange(50 * width, dtype=np.int32).reshape(50, width) % 201) - 100)
    tidx = b.op("clamp", [src], "src_lt50", lo=0, hi=49)
    outs.append(b.op("scatter_add", [b.op("gather_rows", [table, tidx], "g_const"), dst, x], "sa_const"))
    outs.append(b.op("pool_sum", [b.op("cast", [x], "x32", dtype="int32"), batch], "pooled"))
    b.output(outs[0], "int32", ("N", width))
    return b.graph


def _column_feeds(rng: np.random.Generator, n: int, ei: np.ndarray, width: int, dtype: str = "int8"):
    e = ei.shape[1]
    info = np.iinfo(dtype)
    return {"x": rng.integers(info.min, int(info.max) + 1, (n, width)).astype(dtype), "edge_index": ei,
            "v": rng.integers(-30000, 30000, (e, width)).astype(np.int16),
            "v3": rng.integers(-2**20, 2**20, (e, 2, 3)).astype(np.int32),
            "batch": np.sort(rng.integers(0, min(3, n), n)).astype(np.int64)}


@pytest.mark.parametrize("width", [1, 5, 16])
def test_column_scatter_exact_on_awkward_edges(width: int) -> None:
    """Per-column aggregation: unsorted/duplicate edges, isolated nodes (scatter_max -> 0), hubs, no edges."""
    graph = _column_scatter_graph(width)
    checker = AllValues(graph)
    rng = np.random.default_rng(width)
    for x, ei in awkward_graphs(width).values():
        checker.assert_exact(_column_feeds(rng, x.shape[0], ei, width))
    unsorted = np.stack([rng.integers(0, 9, 40), np.repeat(np.arange(8, 0, -1), 5)]).astype(np.int64)
    checker.assert_exact(_column_feeds(rng, 12, unsorted, width))  # nodes 0, 9, 10, 11 have no in-edges
    checker.assert_exact(_column_feeds(rng, 6, np.zeros((2, 0), np.int64), width))  # empty edge list


def test_column_scatter_extreme_values_and_pruned_gather() -> None:
    """Large int32 values through both scatters, full int16 range in the table; without expose_all the [E, H]
    gather feeding only scatters is not in the model and no [E*H] index is built."""
    graph = _column_scatter_graph(4, "int16")
    checker = AllValues(graph)
    rng = np.random.default_rng(3)
    ei = np.stack([rng.integers(0, 30, 400), rng.integers(0, 25, 400)]).astype(np.int64)
    feeds = _column_feeds(rng, 30, ei, 4, "int16")
    big = 2**31 // 64  # in-degree stays below 64 here, so every int32 sum fits (the interpreter checks)
    feeds["v3"] = rng.integers(-big, big, (400, 2, 3)).astype(np.int32)
    feeds["v3"][:100] = -big  # all-negative segments: the max must not leak the INT32_MIN fill
    checker.assert_exact(feeds)
    b = GraphBuilder()
    x = b.input("x", "int8", ("N", 16))
    ei_in = b.input("edge_index", "int64", (2, "E"))
    src, dst = b.op("take_row", [ei_in], "src", index=0), b.op("take_row", [ei_in], "dst", index=1)
    b.output(b.op("scatter_add", [b.op("gather_rows", [x, src], "g"), dst, x], "s"), "int32", ("N", 16))
    model = export_onnx(b.graph, aggregation="scatter")
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Gather") == 2 and ops.count("GatherElements") == 16 and ops.count("ScatterElements") == 16
    assert not any(o == "g" for n in model.graph.node for o in n.output)  # only take_row's two Gathers remain
    assert not any("flat_idx" in o for n in model.graph.node for o in n.output)


def test_wide_scatter_keeps_flat_fallback_exact() -> None:
    """Widths above the per-column limit use one flat ScatterElements; still exact."""
    from qgnn_deploy.backends.onnx.handlers import aggregate

    width = aggregate._MAX_COLUMNS + 1
    b = GraphBuilder()
    v = b.input("v", "int32", ("E", width))
    idx = b.input("idx", "int64", ("E",))
    ref = b.input("ref", "int8", ("N", 1))
    outs = [b.op("scatter_add", [v, idx, ref], "sa"), b.op("scatter_max", [v, idx, ref], "sm")]
    b.output(outs[0], "int32", ("N", width))
    checker = AllValues(b.graph)
    assert sum(n.op_type == "ScatterElements" for n in checker.model.graph.node) == 3  # 2 flat + degree
    rng = np.random.default_rng(9)
    for n, e in [(7, 30), (5, 0)]:
        checker.assert_exact({"v": rng.integers(-999, 999, (e, width)).astype(np.int32),
                              "idx": rng.integers(0, n, e).astype(np.int64), "ref": np.zeros((n, 1), np.int8)})


_A64_GUEST = """
import sys, numpy as np, onnxruntime as ort, platform
assert platform.machine() == "aarch64"
res = {}
with np.load(sys.argv[1]) as mz, np.load(sys.argv[2]) as iz:
    for key in mz.files:
        for th in (1, 2):
            so = ort.SessionOptions(); so.intra_op_num_threads = th; so.log_severity_level = 3
            s = ort.InferenceSession(mz[key].tobytes(), so, providers=["CPUExecutionProvider"])
            names = [i.name for i in s.get_inputs()]
            for case in sorted({f.split("__")[1] for f in iz.files if f.startswith(key + "__")}):
                outs = s.run(None, {n: iz[f"{key}__{case}__{n}"] for n in names})
                res.update({f"{key}__{case}__{th}__{o.name}": v for o, v in zip(s.get_outputs(), outs)})
np.savez(sys.argv[3], **res)
"""


@pytest.mark.arm64
def test_aarch64_onnxruntime_bit_exact(tmp_path) -> None:
    """aarch64 ORT (qemu-user sysroot) reproduces every intermediate value, both int8 weight modes."""
    from qgnn_deploy import arm64

    if not arm64.a64_python_available():
        pytest.skip("no aarch64 sysroot (bash export/make_a64_sysroot.sh)")
    models, inputs, refs = {}, {}, {}
    for key, graph in (("zoo", op_zoo_graph()), ("pooled", pooled_zoo_graph())):
        for safe in (True, False):
            name = f"{key}{int(safe)}"
            model = export_onnx(graph, expose_all=True, saturation_safe=safe)
            models[name] = np.frombuffer(model.SerializeToString(), np.uint8)
            for case in CASES:
                feeds = _feeds(graph, case)
                inputs.update({f"{name}__{case}__{k}": v for k, v in feeds.items()})
                refs[(name, case)] = run(graph, feeds, keep_all=True)
    np.savez(tmp_path / "models.npz", **models)
    np.savez(tmp_path / "inputs.npz", **inputs)
    script = tmp_path / "guest.py"
    script.write_text(_A64_GUEST)
    proc = arm64.run_a64_python([script, tmp_path / "models.npz", tmp_path / "inputs.npz", tmp_path / "out.npz"],
                                timeout=1200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with np.load(tmp_path / "out.npz") as got:
        assert len(got.files) > 500
        for key in got.files:
            name, case, threads, value = key.split("__")
            want = refs[(name, case)][value]
            assert got[key].dtype == want.dtype and np.array_equal(got[key], want), key


def test_runtime_row_multiplier_after_matmul_loads_in_ort() -> None:
    """A2Q-style requantize right after a matmul with a runtime per-row multiplier (a product of two values).

    ORT 1.31 would fuse MatMulInteger -> Cast -> Mul(., Mul(a, b)) into an invalid MatMulIntegerToFloat.
    """
    b = GraphBuilder()
    x = b.input("x", "uint8", ("N", 8))
    r = b.input("r", "int32", ("N", 1))
    acc = b.op("matmul", [x, b.const("w", np.arange(-24, 24, dtype=np.int8).reshape(8, 6))], "acc")
    mult = b.op("mul", [b.op("cast", [r], "r64", dtype="int64"), b.const("m", np.array([[12345]], np.int64))], "mult")
    y = b.op("requantize", [acc, mult, b.const("n", np.array([[20]], np.int64))], "y", zero_point=0, dtype="int8")
    b.output(y, "int8", ("N", 6))
    rng = np.random.default_rng(9)
    AllValues(b.graph).assert_exact({"x": rng.integers(0, 256, (30, 8)).astype(np.uint8),
                                     "r": rng.integers(1, 300, (30, 1)).astype(np.int32)})


def _f64_requantize_graph() -> Graph:
    """Requantizes the float64 path must take, at the limits of its exactness bound (see _requantize_f64)."""
    b = GraphBuilder()
    acc = b.input("acc", "int32", ("N", 4))
    acc_t = b.input("acc_t", "int32", ("N", 4))  # |acc_t| < 2**18: the interpreter needs |acc*M| < 2**62
    m32 = b.input("m32", "int32", ("N", 1))
    b.output(b.op("requantize", [acc_t], "ties", multiplier=2**43, shift=44, zero_point=0, dtype="int8"), "int8",
             ("N", 4))
    b.output(b.op("requantize", [acc], "m_max", multiplier=2**31 - 1, shift=44, zero_point=0, dtype="int8"), "int8",
             ("N", 4))
    b.output(b.op("requantize", [acc], "neg_m", multiplier=-(2**31 - 1), shift=42, zero_point=111, qmin=0, qmax=255,
                  dtype="uint8"), "uint8", ("N", 4))
    b.output(b.op("requantize", [acc, b.const("m_ch", np.array([[3, 2**30 + 1, 7, 2**31 - 1]], np.int64)),
                                 b.const("n_ch", np.array([[1, 35, 0, 36]], np.int64))], "per_channel",
                  zero_point=-5, qmin=-30000, qmax=30000, dtype="int16"), "int16", ("N", 4))
    b.output(b.op("requantize", [acc, m32, b.const("n20", np.array([[20]], np.int64))], "runtime_m",
                  zero_point=3, dtype="int8"), "int8", ("N", 4))
    b.output(b.op("requantize", [acc], "small", multiplier=1, shift=0, zero_point=0, qmin=-100, qmax=100,
                  dtype="int8"), "int8", ("N", 4))
    return b.graph


def _f64_requantize_feeds(rows: int = 400) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    a = rng.integers(-2**31 + 1, 2**31, (rows, 4)).astype(np.int64)
    a[:8] = [[-2**31 + 1, 2**31 - 1, -1, 0]] * 8
    t = rng.integers(-2**18 + 1, 2**18, (rows, 4)).astype(np.int64)
    t[:64] = (np.arange(-256, 256) * 2 + 1).reshape(64, 8)[:, :4]  # x.5 ties across the int8 range (ties)
    t[64:96] = (np.arange(-256, 256, 4) * 2 + 1).reshape(32, 4)
    t[96] = [2**18 - 1, -(2**18) + 1, 0, 1]
    # acc*M crossing 2**53 (float64 stops being exact there) with M = 2**31 - 1
    edge = 2**53 // (2**31 - 1)
    a[72:104, :] = (edge + np.arange(-64, 64)).reshape(32, 4) * np.array([1, -1, 1, -1])
    # values whose rounded result lands right at the clip bounds: y = acc*M/2**n near 127.5 / -128.5
    for row, target in enumerate((127.5, -128.5, 126.5, 255.5 - 111, -111.5)):
        base = int(target * 2**44 / (2**31 - 1))
        a[104 + 4 * row: 108 + 4 * row, :] = base + np.arange(-8, 8).reshape(4, 4)
    # per_channel ties: acc * 3 / 2 = k + 0.5 (column 0) and acc * (2**30 + 1) / 2**35 near k + 0.5 (column 1),
    # positive and negative, inside the int16 clip range
    a[124:188, 0] = np.arange(-63, 65, 2) * 2 - 1
    a[124:188, 1] = (np.arange(-32, 32) * 2 + 1) * 2**4
    m32 = rng.integers(-2**31 + 1, 2**31, (rows, 1)).astype(np.int64)
    m32[:8, 0] = [-2**31 + 1, 2**31 - 1, 1, 0, -1, 2**20, -(2**20), 3]
    return {"acc": a.astype(np.int32), "acc_t": t.astype(np.int32), "m32": m32.astype(np.int32)}


def test_requantize_f64_exact_at_its_bound() -> None:
    """The float64 requantize matches the interpreter at ties, clip bounds, int32 extremes and where acc*M
    crosses 2**53; the int64 chain (requantize="int64") too, and "auto" really uses float64 here."""
    graph = _f64_requantize_graph()
    feeds = _f64_requantize_feeds()
    ref = run(graph, feeds)
    auto, chain = export_onnx(graph), export_onnx(graph, requantize="int64")
    to_f64 = lambda m: sum(n.op_type == "Cast" and n.attribute[0].i == onnx.TensorProto.DOUBLE  # noqa: E731
                           for n in m.graph.node)
    assert (to_f64(auto), to_f64(chain)) == (7, 0)  # 6 accumulators and runtime_m's multiplier
    assert sum(n.op_type == "Floor" for n in auto.graph.node) < 6  # truncating Casts of lifted values instead
    diag = [n for n in auto.graph.node if n.op_type == "MatMul" and "m_diag" in n.input[1]]
    assert len(diag) == 1  # per_channel: acc @ diag(M * 2**-n)
    for model in (auto, chain):
        for threads in THREADS:
            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
            for name, got in zip([o.name for o in model.graph.output], sess.run(None, feeds)):
                assert np.array_equal(got, ref[name]), (name, threads)


def test_requantize_f64_falls_back_outside_its_bound() -> None:
    """Shifts above the bound, runtime shifts, per-row bounds, int64 accumulators and runtime int64 multipliers
    without a static bound keep the exact int64 chain."""
    b = GraphBuilder()
    acc = b.input("acc", "int32", ("N", 2))
    acc64 = b.input("acc64", "int64", ("N", 2))
    m64 = b.input("m64", "int64", ("N", 1))
    n = b.input("n", "int64", ("N", 1))
    lo = b.input("lo", "int64", ("N", 1))
    hi = b.input("hi", "int64", ("N", 1))
    outs = [b.op("requantize", [acc], "n45", multiplier=2**30, shift=45, zero_point=0, dtype="int8"),
            b.op("requantize", [acc, "", n], "rt_shift", multiplier=7, zero_point=0, dtype="int8"),
            b.op("requantize", [acc, b.const("m1", np.array([[5]], np.int64)), b.const("n1", np.array([[3]])),
                                lo, hi], "rows", zero_point=0, dtype="int8"),
            b.op("requantize", [acc64], "wide_acc", multiplier=3, shift=2, zero_point=0, dtype="int8"),
            b.op("requantize", [acc, m64, b.const("n2", np.array([[4]], np.int64))], "rt_m64", zero_point=0,
                 dtype="int8")]
    for o in outs:
        b.output(o, "int8", ("N", 2))
    model = export_onnx(b.graph)
    assert not any(n.op_type == "Floor" for n in model.graph.node)
    rng = np.random.default_rng(3)
    rows = 64
    feeds = {"acc": rng.integers(-2**31, 2**31, (rows, 2)).astype(np.int32),
             "acc64": rng.integers(-2**40, 2**40, (rows, 2)).astype(np.int64),
             "m64": rng.integers(1, 2**20, (rows, 1)).astype(np.int64),
             "n": rng.integers(0, 31, (rows, 1)).astype(np.int64),
             "lo": rng.integers(-128, 0, (rows, 1)).astype(np.int64),
             "hi": rng.integers(0, 128, (rows, 1)).astype(np.int64)}
    AllValues(b.graph).assert_exact(feeds)


def test_requantize_f64_runtime_multiplier_bound_from_lut() -> None:
    """A runtime multiplier built as cast(lut_steps table value) * constant (GCN's per-row edge factor) is proven
    below 2**53, so the float64 path is used, and stays exact."""
    b = GraphBuilder()
    acc = b.input("acc", "int32", ("N", 3))
    deg = b.input("deg", "int32", ("N", 1))
    q = b.op("lut_steps", [deg, b.const("t", np.array([2, 5, 9], np.int16)),
                           b.const("v", np.array([255, 180, 90, 8], np.uint8))], "edge_q")
    f64 = b.op("cast", [b.op("cast", [q], "edge", dtype="int32")], "edge64", dtype="int64")
    rowm = b.op("mul", [f64, b.const("M", np.array([[189900700]], np.int32))], "rowm")
    b.output(b.op("requantize", [acc, rowm, b.const("n", np.array([[44]], np.int8))], "y", zero_point=0,
                  qmin=-127, qmax=127, dtype="int8"), "int8", ("N", 3))
    model = export_onnx(b.graph)
    # float64 path, lifted by 128 (2**9 > 127 + 2 * 128 + 1): a truncating Cast instead of Floor
    assert any(n.op_type == "Cast" and n.attribute[0].i == onnx.TensorProto.DOUBLE for n in model.graph.node)
    assert not any(n.op_type == "Floor" for n in model.graph.node)
    # the scale is Cast(edge_q) * (M * 2**-44): the int64 product and its casts are not in the model
    assert not {"rowm", "edge64"} & {o for n in model.graph.node for o in n.output}
    rng = np.random.default_rng(4)
    acc_v = rng.integers(-2**26 + 1, 2**26, (300, 3)).astype(np.int32)  # |acc * rowm| < 2**62 (interpreter)
    acc_v[:100] = rng.integers(-2**17, 2**17, (100, 3))
    acc_v[100] = [2**26 - 1, -(2**26) + 1, 0]
    AllValues(b.graph).assert_exact({"acc": acc_v, "deg": rng.integers(0, 12, (300, 1)).astype(np.int32)})


def _bias_requantize_graph(dtype: str, qmin: int, qmax: int, bias: np.ndarray, x_dtype: str = "int8") -> Graph:
    """``requantize(cast(x) * 4080 + alpha @ basis + bias)``: LoRAP's ``prompted + bias`` before the next layer."""
    b = GraphBuilder()
    x = b.input("x", x_dtype, ("N", 4))
    alpha = b.input("alpha", "uint8", ("N", 8))
    scaled = b.op("mul", [b.op("cast", [x], "x32", dtype="int32"), b.const("k", np.array(4080, np.int32))], "xs")
    basis = np.array([[-128, 127, 5, -7]] * 8, np.int8)
    p = b.op("add", [scaled, b.op("matmul", [alpha, b.const("basis", basis)], "prompt")], "p")
    acc = b.op("add", [p, b.const("bias", bias)], "acc")
    b.output(b.op("requantize", [acc, b.const("M", np.array([[3, 1087746266, 5, 1]], np.int32)),
                                 b.const("n", np.array([[10, 42, 12, 0]], np.int8))], "y", zero_point=3, qmin=qmin,
                  qmax=qmax, dtype=dtype), dtype, ("N", 4))
    return b.graph


@pytest.mark.parametrize(("dtype", "qmin", "qmax"), [("uint8", 0, 255), ("int8", -127, 127)])
def test_requantize_folds_a_constant_bias_into_one_gemm(dtype: str, qmin: int, qmax: int) -> None:
    """``requantize(p + bias)`` with static bounds on p runs as ``Gemm(Cast(p), diag(scale), bias * scale + c)``
    (no int32 ``[N, H] + [1, H]`` Add); exact at ties (column 0: ``3 * (p + 512) = 512 mod 1024``), both clip
    bounds, the shift-0 column and the bounds' extremes, at 1 and 2 threads.  An unbounded p keeps the Add."""
    bias = np.array([[512, -700000, 2**20, -5]], np.int32)
    graph = _bias_requantize_graph(dtype, qmin, qmax, bias)
    model = export_onnx(graph)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Gemm") == 1 and "acc" not in {o for n in model.graph.node for o in n.output}
    rng = np.random.default_rng(11)
    x = rng.integers(-128, 128, (400, 4)).astype(np.int8)
    alpha = rng.integers(0, 256, (400, 8)).astype(np.uint8)
    x[:4], alpha[:4] = 0, 0  # p = 0: column 0 sits on a tie, 3 * 512 = 1536 = 512 mod 1024
    x[4:8], alpha[4:8] = [[-128] * 4, [127] * 4, [-128] * 4, [127] * 4], [[0] * 8, [255] * 8, [255] * 8, [0] * 8]
    x[8:40, 0] = (np.arange(32) * 1024 // 4080).astype(np.int8)  # more residues of 3 * p mod 1024 near ties
    feeds = {"x": x, "alpha": alpha}
    want = run(graph, feeds)["y"]
    assert {qmin, qmax} <= set(want[:, 1].tolist()) | set(want[:, 2].tolist())  # both clip bounds reached
    for threads in THREADS:
        assert np.array_equal(OnnxRunner(model, graph, threads=threads).run(feeds)["y"], want)
    wide = _bias_requantize_graph(dtype, qmin, qmax, bias, x_dtype="int32")  # |x * 4080| unbounded in int32
    assert "Gemm" not in [n.op_type for n in export_onnx(wide).graph.node]


def test_emitter_bounds_are_the_ir_value_ranges() -> None:
    """The handlers' ``abs_bound`` / ``nonnegative`` read :func:`qgnn_deploy.ir.bounds.value_ranges`: a clamp's
    interval, not its dtype's; sums and products of bounded values; None only for floats."""
    from qgnn_deploy.backends.onnx.exporter import EmitContext
    from qgnn_deploy.backends.onnx.handlers.values import abs_bound, nonnegative

    b = GraphBuilder()
    x = b.input("x", "int8", ("N", 4))
    w = b.input("w", "int64", ("N", 4))
    f = b.input("f", "float32", ("N", 4))
    c = b.op("clamp", [x], "c", lo=-100, hi=50)
    z = b.op("clamp", [x], "z", lo=0, hi=9)
    s = b.op("mul", [b.op("cast", [c], "c32", dtype="int32"), b.const("k", np.array(3, np.int32))], "s")
    for name, dtype in ((c, "int8"), (z, "int8"), (s, "int32")):
        b.output(name, dtype, ("N", 4))
    ctx = EmitContext(b.graph)
    assert (abs_bound(ctx, "x"), abs_bound(ctx, c), abs_bound(ctx, z), abs_bound(ctx, s)) == (128, 100, 9, 300)
    assert abs_bound(ctx, w) == 2**63 and abs_bound(ctx, f) is None
    assert nonnegative(ctx, z) and not nonnegative(ctx, c) and not nonnegative(ctx, f)


def test_div_floor_drops_mod_only_for_nonnegative_numerators() -> None:
    """floor == trunc for a numerator proven >= 0 (the divisor is positive by contract): plain Div; a numerator
    that can be negative keeps the exact Mod/Sub/Div form.  Both match the interpreter."""
    b = GraphBuilder()
    e = b.input("e", "uint8", ("N", 8))
    s = b.input("s", "int32", ("N", 8))
    e32 = b.op("cast", [e], "e32", dtype="int32")
    tot = b.op("reduce_sum", [e32], "tot", axis=1, keepdims=True)
    num = b.op("add", [b.op("mul", [e32, b.const("c510", np.array(510, np.int32))], "scaled"), tot], "num")
    den = b.op("add", [b.op("mul", [tot, b.const("c2", np.array(2, np.int32))], "tot2"),
                       b.const("c1", np.array(1, np.int32))], "den")
    b.output(b.op("div_floor", [num, den], "pos"), "int32", ("N", 8))
    b.output(b.op("div_floor", [s, den], "signed"), "int32", ("N", 8))
    model = export_onnx(b.graph)
    mods = [n for n in model.graph.node if n.op_type == "Mod"]
    assert len(mods) == 1 and mods[0].output[0].startswith("signed")
    rng = np.random.default_rng(8)
    ev = rng.integers(0, 256, (300, 8)).astype(np.uint8)
    ev[:3] = [[0] * 8, [255] * 8, [255] + [0] * 7]
    AllValues(b.graph).assert_exact({"e": ev, "s": rng.integers(-2**20, 2**20, (300, 8)).astype(np.int32)})


def test_lut_int32_index_path_exact_at_extremes() -> None:
    """A constant 1-D table looked up by an int8/int16/int32 index clips in int32 (clip(idx, -off, T-1-off) + off,
    nothing can overflow; for 0 < off <= T a rotated table read with negative indices replaces the + off): no int64
    Where chain, and exact at the dtype extremes and around both table ends."""
    b = GraphBuilder()
    outs = []
    for dt, off, tab in [("int8", 152, np.arange(153, dtype=np.uint8)), ("int16", -7, np.arange(40, dtype=np.int8)),
                         ("int32", 29, np.arange(30, dtype=np.uint8) * 8), ("int32", 0, np.arange(5, dtype=np.int32)),
                         ("int32", -(2**29), np.arange(-3, 9, dtype=np.int16))]:
        i = b.input(f"i_{dt}_{len(outs)}", dt, ("N", 3))
        outs.append(b.op("lut", [i, b.const(f"tab{len(outs)}", tab)], f"lut{len(outs)}", offset=off))
        b.output(outs[-1], str(tab.dtype), ("N", 3))
    model = export_onnx(b.graph)
    assert not any(n.op_type in ("Where", "Less", "Greater") for n in model.graph.node)
    # offsets in (0, T] read a rotated table with negative indices (no Add); -7 and -2**29 keep the Add
    assert sum(n.op_type == "Add" for n in model.graph.node) == 2
    rng = np.random.default_rng(5)
    feeds = {}
    for v in b.graph.inputs:
        info = np.iinfo(v.dtype)
        probes = np.array([info.min, info.max, 0, -1, 1, -152, -153, -151, 7, 6, 8, 46, 47, -29, -30, 2**29,
                           2**29 + 11, 2**29 + 12, -(2**29)], np.int64)
        probes = probes[(probes >= info.min) & (probes <= info.max)]
        vals = np.concatenate([probes, rng.integers(info.min, int(info.max) + 1, 300 - probes.size)])
        feeds[v.name] = vals.reshape(100, 3).astype(v.dtype)
    AllValues(b.graph).assert_exact(feeds)


def test_row_sum_broadcasts_run_full_width() -> None:
    """LoRAP's ``(510 * e + S) // (2 * S)`` with ``S`` the row sum of uint8 ``e``: ``S`` and ``2 * S`` reach the
    ``[N, 8]`` ops as a MatMulInteger with ones (every column the row sum), not as ``[N, 1]`` broadcasts; exact."""
    b = GraphBuilder()
    e8 = b.input("e8", "uint8", ("N", 8))
    e = b.op("cast", [e8], "e", dtype="int32")
    s = b.op("reduce_sum", [e], "s", axis=1, keepdims=True)
    num = b.op("add", [b.op("mul", [e, b.const("k510", np.array(510, np.int32))], "e510"), s], "num")
    den = b.op("mul", [s, b.const("k2", np.array(2, np.int32))], "den")
    b.output(b.op("div_floor", [num, den], "alpha"), "int32", ("N", 8))
    b.output(b.op("sub", [e, s], "minus_s"), "int32", ("N", 8))
    model = export_onnx(b.graph)
    assert any(n.op_type == "MatMulInteger" for n in model.graph.node)
    assert not any(n.op_type == "ReduceSum" for n in model.graph.node)
    rng = np.random.default_rng(12)
    x = rng.integers(0, 256, (300, 8)).astype(np.uint8)
    x[:4] = [[255] * 8, [1] + [0] * 7, [0] * 7 + [255], [128, 127, 0, 1, 2, 3, 254, 255]]
    ref = run(b.graph, {"e8": x})
    for threads in THREADS:
        got = OnnxRunner(model, b.graph, threads=threads).run({"e8": x})
        assert all(np.array_equal(got[k], ref[k]) for k in ("alpha", "minus_s")), threads


def test_casts_of_a_float64_requantize_read_the_float64() -> None:
    """cast(requantize) to int32/int64/int16 (and dequantize's float32) reads the requantize's int32 result (the
    truncated lifted float64 minus the lift), not an int8 copy, and reduce_max of it runs on that int32 (no int8
    copy left in the model); exact."""
    b = GraphBuilder()
    acc = b.input("acc", "int32", ("N", 4))
    q = b.op("requantize", [acc], "q", multiplier=1082462131, shift=36, zero_point=3, qmin=-127, qmax=127,
             dtype="int8")
    outs = [b.op("cast", [q], "q32", dtype="int32"), b.op("cast", [q], "q64", dtype="int64"),
            b.op("cast", [q], "q16", dtype="int16"), b.op("mul", [q, b.const("k", np.array(3, np.int32))], "m"),
            b.op("dequantize", [q], "deq", scale=0.125, zero_point=-3),
            b.op("sub", [b.op("cast", [q], "q32b", dtype="int32"),
                         b.op("cast", [b.op("reduce_max", [q], "qmax", axis=1, keepdims=True)], "qmax32",
                              dtype="int32")], "shifted")]
    b.output(outs[0], "int32", ("N", 4))
    for o, dt in zip(outs[1:], ("int64", "int16", "int32", "float32", "int32")):
        b.output(o, dt, ("N", 4))
    model = export_onnx(b.graph)
    clip = next(n.output[0] for n in model.graph.node if n.op_type == "Clip")
    lifted = next(n.output[0] for n in model.graph.node if n.op_type == "Cast" and n.input[0] == clip)
    q32 = next(n.output[0] for n in model.graph.node if n.op_type == "Sub" and n.input[0] == lifted)
    assert {n.output[0] for n in model.graph.node if n.input and n.input[0] == q32} >= {"q32", "q64", "q16"}
    assert not any(n.op_type == "Floor" for n in model.graph.node)
    assert "q" not in {o for n in model.graph.node for o in n.output}  # no int8 copy: nothing reads it
    rng = np.random.default_rng(6)
    a = rng.integers(-2**31, 2**31, (400, 4)).astype(np.int32)
    a[:100] = rng.integers(-2**10, 2**10, (100, 4))  # ties and in-range values (acc * M * 2**-36)
    a[100] = [2**31 - 1, -(2**31), 0, 1]
    ref = run(b.graph, {"acc": a})
    for threads in THREADS:
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        for name, got in zip([o.name for o in model.graph.output], sess.run(None, {"acc": a})):
            assert got.dtype == ref[name].dtype and np.array_equal(got, ref[name]), (name, threads)
    AllValues(b.graph).assert_exact({"acc": a})


def _self_loop_graph(width: int, extra_reader: bool = False) -> Graph:
    b = GraphBuilder()
    x = b.input("x", "int8", ("N", width))
    ei = b.input("edge_index", "int64", (2, "E"))
    src, dst = b.op("take_row", [ei], "src", index=0), b.op("take_row", [ei], "dst", index=1)
    t = b.op("mul", [b.op("cast", [x], "x32", dtype="int32"), b.const("f", np.array(257, np.int32))], "t")
    s = b.op("scatter_add", [b.op("gather_rows", [t, src], "g"), dst, x], "s")
    y = b.op("add", [t, s], "y")
    b.output(y, "int32", ("N", width))
    if extra_reader:
        b.output(b.op("reduce_sum", [s], "s_sum", axis=1, keepdims=True), "int32", ("N", 1))
    return b.graph


@pytest.mark.parametrize("width", [1, 7, 16])
def test_self_loop_add_starts_the_column_scatters(width: int) -> None:
    """``T + scatter_add(T[src], dst)`` (GCN's self loop): each column's ScatterElements starts from T's column, no
    Add; exact and deterministic on awkward edges (isolated nodes, hubs, duplicates, no edges) at 1 and 2 threads.
    A second reader of the bare sum keeps the separate Add."""
    graph = _self_loop_graph(width)
    model = export_onnx(graph, aggregation="scatter")
    ops = [n.op_type for n in model.graph.node]
    assert "Add" not in ops and ops.count("ScatterElements") == width
    assert "Add" in [n.op_type for n in export_onnx(_self_loop_graph(width, extra_reader=True),
                                                    aggregation="scatter").graph.node]
    sessions = []
    for threads in THREADS:
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        sessions.append(ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]))
    rng = np.random.default_rng(width)
    cases = [ei for _, ei in awkward_graphs(width).values()]
    for ei in cases + [np.zeros((2, 0), np.int64)]:
        n = int(ei.max()) + 3 if ei.size else 5
        feeds = {"x": rng.integers(-128, 128, (n, width)).astype(np.int8), "edge_index": ei}
        want = run(graph, feeds)["y"]
        for sess in sessions:
            for _ in range(REPEATS):
                assert np.array_equal(sess.run(None, feeds)[0], want)
    AllValues(_self_loop_graph(width, extra_reader=True)).assert_exact(feeds)
