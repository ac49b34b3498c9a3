"""TVM backend: bit-exact against the reference interpreter, targets, cross-compilation."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from bench_artifacts import run_libraries_under_qemu

from qgnn_deploy.errors import QgnnError
from qgnn_deploy.ir.graph import Graph, GraphBuilder
from qgnn_deploy.ir.interpreter import run
from qgnn_deploy.ir.ops import OPS
from qgnn_deploy.ir.testing import awkward_graphs, lut_steps_graph, op_zoo_graph, pooled_zoo_graph

tvm = pytest.importorskip("tvm")

from qgnn_deploy.backends.tvm import TARGETS, compile_to_dir, resolve_target, run_library  # noqa: E402
from qgnn_deploy.backends.tvm.relax_builder import HANDLERS  # noqa: E402


def misc_graph() -> Graph:
    """Edge cases the zoo graphs do not hit: s8 input with zero points on both matmul sides, negative floor
    division, per-column requantize with tensor qmin/qmax, out-of-dtype clamp bounds, odd int4 packing."""
    rng = np.random.default_rng(5)
    b = GraphBuilder()
    x = b.input("x", "float32", ("N", 7))
    b.input("edge_index", "int64", (2, "E"))
    xq = b.op("quantize", [x], "xq", scale=0.1, zero_point=-3, qmin=-100, qmax=90, dtype="int8")
    w = b.const("w", rng.integers(-128, 128, size=(7, 5)).astype(np.int8))
    acc = b.op("matmul", [xq, w], "acc", a_zero_point=-3, b_zero_point=2)
    neg = b.op("sub", [acc, b.const("k", np.array([[1000]], np.int32))], "neg")
    dv = b.op("div_floor", [neg, b.const("d", np.array([[7]], np.int32))], "dv")
    b.op("reduce_sum", [dv], "rs", axis=0, keepdims=False)  # dead value: must not break the build
    dv16 = b.op("cast", [b.op("clamp", [dv], "cl", lo=-30000, hi=30000)], "dv16", dtype="int16")
    m = b.const("mrow", rng.integers(1, 1 << 20, size=(1, 5)).astype(np.int64))
    sh = b.const("shrow", rng.integers(0, 20, size=(1, 5)).astype(np.int64))
    qmin = b.const("qmin", np.array([[-8]], np.int64))
    qmax = b.const("qmax", np.array([[7]], np.int64))
    rq = b.op("requantize", [dv16, m, sh, qmin, qmax], "rq", zero_point=1, dtype="int8")
    a16 = b.op("add", [rq, b.const("c", np.array(8, np.int8))], "a16")
    u = b.op("clamp", [b.op("cast", [a16], "u8", dtype="uint8")], "cu", lo=-5, hi=300)
    mx = b.op("reduce_max", [u], "mx", axis=-1, keepdims=True)
    u4 = b.op("unpack_int4", [b.const("p4", np.array([0x1F, 0x8E, 0x07], np.uint8))], "w4", shape=[5, 1])
    mm = b.op("matmul", [u, u4], "mm")
    cat = b.op("concat", [mm, b.op("cast", [mx], "mx32", dtype="int32"), b.op("mul", [mm, mm], "sq")], "cat", axis=1)
    y = b.op("dequantize", [cat], "y", scale=0.5, zero_point=3)
    b.output(y, "float32", ("N", 3))
    g = b.graph
    g.validate()
    return g


def _edge_graph_inputs() -> tuple[GraphBuilder, str, str, str]:
    """A builder with inputs ``x`` [N, 6] float32 and ``edge_index``, and its src and dst rows."""
    b = GraphBuilder()
    x = b.input("x", "float32", ("N", 6))
    ei = b.input("edge_index", "int64", (2, "E"))
    return b, x, b.op("take_row", [ei], "src", index=0), b.op("take_row", [ei], "dst", index=1)


def message_graph() -> Graph:
    """Messages the TVM backend gathers narrow (see ``relax_builder._factored_message``): GIN's ``u8 x - zp``,
    a GCN's ``int8 h * cast(u8 coefficient)`` with the coefficient on either side of the product, and
    look-alikes it must not factor (an int64 product, a [1, 1] scalar coefficient)."""
    rng = np.random.default_rng(7)
    b, x, src, dst = _edge_graph_inputs()
    xq = b.op("quantize", [x], "xq", scale=0.02, zero_point=7, qmin=0, qmax=255, dtype="uint8")
    xc = b.op("sub", [b.op("cast", [xq], "x32", dtype="int32"), b.const("zp", np.array(7, np.int32))], "xc")
    gin = b.op("scatter_add", [b.op("gather_rows", [xc, src], "g_gin"), dst, x], "agg_gin")
    h = b.op("requantize", [gin], "h", multiplier=1, shift=3, zero_point=0, qmin=-127, qmax=127, dtype="int8")
    deg = b.op("add", [b.op("degree", [dst, x], "deg"), b.const("one", np.ones((1, 1), np.int32))], "deg1")
    coef8 = b.op("lut", [deg, b.const("table", rng.integers(0, 256, 40).astype(np.uint8))], "coef8", offset=-1)
    coef = b.op("cast", [coef8], "coef", dtype="int32")
    h32 = b.op("cast", [h], "h32", dtype="int32")
    gcn_l = b.op("mul", [h32, coef], "he_left")
    gcn_r = b.op("mul", [coef, h32], "he_right")
    wide = b.op("mul", [h32, b.op("cast", [coef8], "coef64", dtype="int64")], "he_int64")
    scal = b.op("mul", [h32, b.const("k", np.array([[3]], np.int32))], "he_scalar")
    aggs = [b.op("scatter_add", [b.op("gather_rows", [v, src], f"g_{v}"), dst, x], f"agg_{v}")
            for v in (gcn_l, gcn_r, scal)]
    wide32 = b.op("cast", [wide], "he_int64_as_int32", dtype="int32")  # an int32 cast of a wide value
    aggs.append(b.op("scatter_add", [b.op("gather_rows", [wide32, src], "g_wide"), dst, x], "agg_wide"))
    aggs.append(b.op("scatter_max", [b.op("gather_rows", [gcn_l, src], "g_max"), dst, x], "agg_max"))
    cat = b.op("concat", [b.op("add", [aggs[0], gcn_l], "self_loop"), *aggs[1:]], "cat", axis=1)
    y = b.op("dequantize", [cat], "y", scale=0.5, zero_point=0)
    b.output(y, "float32", ("N", 30))
    g = b.graph
    g.validate()
    return g


def gcn_message_graph() -> Graph:
    """Two GCN-style aggregations of ``int8 h * cast(u8 coefficient)`` (add and max) and nothing else reading the
    edge plan's col: every gathered scatter packs its coefficient (``kernels.pack_coef``)."""
    rng = np.random.default_rng(8)
    b, x, src, dst = _edge_graph_inputs()
    h = b.op("quantize", [x], "h", scale=0.02, zero_point=0, qmin=-127, qmax=127, dtype="int8")
    deg = b.op("add", [b.op("degree", [dst, x], "deg"), b.const("one", np.ones((1, 1), np.int32))], "deg1")
    coef8 = b.op("lut", [deg, b.const("table", rng.integers(0, 256, 40).astype(np.uint8))], "coef8", offset=-1)
    he = b.op("mul", [b.op("cast", [h], "h32", dtype="int32"), b.op("cast", [coef8], "coef", dtype="int32")], "he")
    agg = b.op("scatter_add", [b.op("gather_rows", [he, src], "g_add"), dst, x], "agg_add")
    top = b.op("scatter_max", [b.op("gather_rows", [he, src], "g_max"), dst, x], "agg_max")
    y = b.op("dequantize", [b.op("concat", [agg, top], "cat", axis=1)], "y", scale=0.5, zero_point=0)
    b.output(y, "float32", ("N", 12))
    g = b.graph
    g.validate()
    return g


GRAPHS = {"zoo": op_zoo_graph, "pooled": pooled_zoo_graph, "misc": misc_graph, "messages": message_graph}


def _feeds(name: str, x: np.ndarray, ei: np.ndarray) -> dict[str, np.ndarray]:
    feeds = {"x": x, "edge_index": ei}
    if name == "pooled":
        n = x.shape[0]
        feeds["batch"] = (np.arange(n) * 3 // max(n, 1)).astype(np.int64)  # 3 graphs (1 for a single node)
    return feeds


def _sample(name: str) -> dict[str, np.ndarray]:
    g = GRAPHS[name]()
    x, ei = awkward_graphs(g.inputs[0].shape[1])["random"]
    return _feeds(name, x, ei)


@pytest.fixture(scope="session")
def x86_libs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict]]:
    """One dynamic-shape library per zoo graph, compiled once per session."""
    out: dict[str, tuple[Path, dict]] = {}
    for name, make in GRAPHS.items():
        d = tmp_path_factory.mktemp(f"tvm_{name}")
        fields = compile_to_dir(make(), "x86_64", d, sample_feeds=_sample(name))
        out[name] = (d / fields["library"], fields)
    return out


def test_every_ir_op_has_a_handler() -> None:
    assert set(OPS) <= set(HANDLERS)


@pytest.mark.parametrize("graph_name", list(GRAPHS))
def test_bit_exact_on_awkward_graphs_one_library(graph_name: str, x86_libs: dict) -> None:
    lib, fields = x86_libs[graph_name]
    g = GRAPHS[graph_name]()
    assert fields["static_shapes"] is None and fields["tuned"] is False
    assert fields["input_order"] == [vi.name for vi in g.inputs]
    for case, (x, ei) in awkward_graphs(g.inputs[0].shape[1]).items():
        feeds = _feeds(graph_name, x, ei)
        ref = run(g, feeds)[g.outputs[0].name]
        got = run_library(lib, feeds, input_names=fields["input_order"])
        assert got.dtype == ref.dtype and got.shape == ref.shape, case
        np.testing.assert_array_equal(got, ref, err_msg=f"{graph_name}/{case}")


@pytest.mark.slow  # default-run budget (CI ~20 min on 2 cores): `bash export/run.sh test-all` runs it
def test_parallel_branches_bit_exact() -> None:
    """The awkward graphs are small, so the libraries above run every kernel's serial branch (below
    ``kernels.SERIAL_WORK``); built with ``serial_work=0`` every kernel takes its parallel branch: also exact."""
    from tvm import relax

    from qgnn_deploy.backends.tvm.compile import build
    from qgnn_deploy.backends.tvm.targets import resolve_target

    lut_graph, lut_feeds = lut_steps_graph("int32")
    graphs = [(name, GRAPHS[name]()) for name in GRAPHS] + [("lut_steps", lut_graph)]
    for name, g in graphs:
        vm = relax.VirtualMachine(build(g, resolve_target("x86_64"), serial_work=0), tvm.cpu())
        cases = {"lut": lut_feeds} if name == "lut_steps" else \
            {c: _feeds(name, x, ei) for c, (x, ei) in awkward_graphs(g.inputs[0].shape[1]).items()}
        for case, feeds in cases.items():
            got = vm["main"](*[tvm.runtime.tensor(np.ascontiguousarray(feeds[vi.name])) for vi in g.inputs]).numpy()
            np.testing.assert_array_equal(got, run(g, feeds)[g.outputs[0].name], err_msg=f"{name}/{case}")


def test_gather_rows_clamps_an_index_the_input_checks_missed() -> None:
    """The library alone (no runner's input validation in front): ``gather_rows`` is a clip-mode take, so an
    out-of-range index reads the nearest row instead of memory past the table; in-range rows are exact."""
    from tvm import relax

    from qgnn_deploy.backends.tvm.compile import build_options, pipeline
    from qgnn_deploy.backends.tvm.relax_builder import build_module

    b = GraphBuilder()
    x = b.input("x", "int8", ("N", 4))
    idx = b.input("idx", "int64", ("E",))
    b.output(b.op("gather_rows", [x, idx], "g"), "int8", ("E", 4))
    preset = resolve_target("x86_64")
    vm = relax.VirtualMachine(tvm.compile(build_module(b.graph, build_options(preset)), target=preset.tvm(),
                                          relax_pipeline=pipeline(preset)), tvm.cpu())
    table = np.arange(20, dtype=np.int8).reshape(5, 4)
    got = vm["main"](tvm.runtime.tensor(table), tvm.runtime.tensor(np.array([3, 0, 1 << 40, -7], np.int64))).numpy()
    np.testing.assert_array_equal(got[:2], run(b.graph, {"x": table, "idx": np.array([3, 0])})["g"])
    np.testing.assert_array_equal(got[2:], table[[4, 0]])


@pytest.mark.parametrize("idx_dtype", ["int64", "int32", "uint8"])
def test_lut_steps_every_k_and_index_dtype(idx_dtype: str, tmp_path: Path) -> None:
    """K = 0..9 and 33 with duplicate thresholds, indices at the dtype's extremes and on/next to every threshold."""
    g, feeds = lut_steps_graph(idx_dtype)
    fields = compile_to_dir(g, "x86_64", tmp_path, sample_feeds=feeds)
    got = run_library(tmp_path / fields["library"], feeds, input_names=fields["input_order"])
    np.testing.assert_array_equal(got, run(g, feeds)[g.outputs[0].name])


@pytest.mark.parametrize("span", [40, 1 << 20])  # a count table per call / the binary search
def test_lut_steps_rank1_index(span: int, tmp_path: Path) -> None:
    """A 1-D index (fold's degrees are [N, 1]; other ranks are reshaped around the kernel)."""
    b = GraphBuilder()
    i = b.input("i", "int64", ("N",))
    t = np.array([-span // 2, -3, 0, 5, span // 2], np.int32)
    y = b.op("lut_steps", [i, b.const("t", t), b.const("v", np.array([9, -2, 4, 0, 7, -5], np.int16))], "y")
    b.output(y, "int16", ("N",))
    feeds = {"i": np.concatenate([t.astype(np.int64) + d for d in (-1, 0, 1)] + [[-(2**62), 2**62]])}
    fields = compile_to_dir(b.graph, "x86_64", tmp_path, sample_feeds=feeds)
    got = run_library(tmp_path / fields["library"], feeds, input_names=fields["input_order"])
    np.testing.assert_array_equal(got, run(b.graph, feeds)["y"])


def test_same_result_single_threaded(x86_libs: dict, tmp_path: Path) -> None:
    """Aggregation parallelism never changes results: a 1-thread process equals the interpreter too."""
    import os
    import sys

    lib, fields = x86_libs["zoo"]
    g = op_zoo_graph()
    x, ei = awkward_graphs(g.inputs[0].shape[1])["hub"]
    np.savez(tmp_path / "in.npz", x=x, edge_index=ei)
    code = ("import sys, numpy as np; from qgnn_deploy.backends.tvm import run_library; d = np.load(sys.argv[2]); "
            "np.save(sys.argv[3], run_library(sys.argv[1], {'x': d['x'], 'edge_index': d['edge_index']}))")
    env = dict(os.environ, TVM_NUM_THREADS="1")
    subprocess.run([sys.executable, "-c", code, str(lib), str(tmp_path / "in.npz"), str(tmp_path / "out.npy")],
                   env=env, check=True, capture_output=True)
    ref = run(g, {"x": x, "edge_index": ei})[g.outputs[0].name]
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), ref)


def quant_gemm_graph(features: int, hidden: int, dtype: str, zero_point: int, scale: float) -> Graph:
    """FP32 input -> quantize -> matmul (K >= 16, N <= 16): the VNNI build quantizes inside the GEMM kernel.
    Then a narrow-row requantize chain and a div_floor (the float64 path) on the int32 accumulators."""
    rng = np.random.default_rng(features + hidden)
    b = GraphBuilder()
    x = b.input("x", "float32", ("N", features))
    info = np.iinfo(dtype)
    xq = b.op("quantize", [x], "xq", scale=scale, zero_point=zero_point, qmin=int(info.min) + 1, qmax=int(info.max),
              dtype=dtype)
    w = b.const("w", rng.integers(-128, 128, size=(features, hidden)).astype(np.int8))
    acc = b.op("matmul", [xq, w], "acc", a_zero_point=zero_point)
    m = b.const("m", rng.integers(1, 1 << 20, size=(1, hidden)).astype(np.int64))
    sh = b.const("sh", rng.integers(8, 24, size=(1, hidden)).astype(np.int64))
    rq = b.op("requantize", [acc, m, sh], "rq", zero_point=0, qmin=-127, qmax=127, dtype="int8")
    den = b.const("den", rng.integers(1, 1000, size=(1, hidden)).astype(np.int32))
    dv = b.op("div_floor", [acc, den], "dv")
    cat = b.op("concat", [acc, b.op("cast", [rq], "rq32", dtype="int32"), dv], "cat", axis=1)
    b.output(cat, "int32", ("N", 3 * hidden))
    g = b.graph
    g.validate()
    return g


@pytest.mark.parametrize("features,hidden,dtype,zp,scale,rows", [
    (1433, 16, "uint8", 0, 1 / 127.5, (2708, 67, 1)),  # Cora's shape; row counts off the 4- and 64-row blocks
    (37, 5, "int8", -3, 0.05, (131, 3)),
    (16, 16, "uint8", 128, 0.1, (5,)),
])
def test_quantize_fused_into_gemm_bit_exact(features: int, hidden: int, dtype: str, zp: int, scale: float,
                                            rows: tuple[int, ...], tmp_path: Path) -> None:
    import os
    import sys

    g = quant_gemm_graph(features, hidden, dtype, zp, scale)
    rng = np.random.default_rng(3)

    def feats(n: int) -> np.ndarray:
        x = rng.normal(0.0, 3.0, size=(n, features)).astype(np.float32)
        x[rng.random(x.shape) < 0.5] = 0.0
        halves = rng.random(x.shape) < 0.1  # exact .5 quotients: round-half-even must match
        x[halves] = ((rng.integers(-300, 300, size=int(halves.sum())) + 0.5) * np.float32(scale)).astype(np.float32)
        x[rng.random(x.shape) < 0.01] = -0.0
        return x

    fields = compile_to_dir(g, "x86_64", tmp_path, sample_feeds={"x": feats(rows[0])})
    lib = tmp_path / fields["library"]
    for n in rows:
        x = feats(n)
        np.save(tmp_path / f"x{n}.npy", x)
        ref = run(g, {"x": x})["cat"]
        np.testing.assert_array_equal(run_library(lib, {"x": x}), ref, err_msg=f"N={n}")
        code = ("import sys, numpy as np; from qgnn_deploy.backends.tvm import run_library; "
                "np.save(sys.argv[3], run_library(sys.argv[1], {'x': np.load(sys.argv[2])}))")
        subprocess.run([sys.executable, "-c", code, str(lib), str(tmp_path / f"x{n}.npy"), str(tmp_path / "o.npy")],
                       env=dict(os.environ, TVM_NUM_THREADS="1"), check=True, capture_output=True)
        np.testing.assert_array_equal(np.load(tmp_path / "o.npy"), ref, err_msg=f"N={n}, 1 thread")


def test_quantize_fusion_plan() -> None:
    """The quantize is folded into the GEMM only on VNNI targets, and never when its output has other readers."""
    from qgnn_deploy.backends.tvm.fusion import FusionPlan, quantize_into_gemm
    from qgnn_deploy.backends.tvm.relax_builder import BuildOptions

    def _plan_quant_fusion(g, opts):  # noqa: ANN001, ANN202
        plan = FusionPlan()
        quantize_into_gemm(g, opts, plan)
        return plan.quantize_into_gemm

    g = quant_gemm_graph(40, 8, "uint8", 0, 0.1)
    assert _plan_quant_fusion(g, BuildOptions(gemm_kind="vnni")) == {"xq"}
    assert _plan_quant_fusion(g, BuildOptions(gemm_kind="generic")) == set()
    assert _plan_quant_fusion(g, BuildOptions(gemm_kind="vnni", fast_matmul=False)) == set()
    assert _plan_quant_fusion(misc_graph(), BuildOptions(gemm_kind="vnni")) == set()  # K=7, b_zero_point=2


def test_portable_x86_build_bit_exact(tmp_path: Path) -> None:
    """``x86_64-generic`` takes the SSE2 GEMM (no AVX) and the same kernels otherwise."""
    g = op_zoo_graph()
    fields = compile_to_dir(g, "x86_64-generic", tmp_path, sample_feeds=_sample("zoo"))
    assert fields["kernels"]["gemm"] == "sse2"  # pmaddwd on xmm: SSE2 is the x86-64 baseline
    for case in ("random", "hub", "single_node"):
        x, ei = awkward_graphs(g.inputs[0].shape[1])[case]
        feeds = _feeds("zoo", x, ei)
        np.testing.assert_array_equal(run_library(tmp_path / fields["library"], feeds),
                                      run(g, feeds)[g.outputs[0].name], err_msg=case)


def test_manifest_fields(x86_libs: dict) -> None:
    lib, fields = x86_libs["zoo"]
    assert lib.is_file() and fields["library"] == "model_x86_64.so"
    assert fields["target"]["name"] == "x86_64" and fields["target"]["cross_compiled"] is False
    assert fields["tvm_buffer_bytes"] is None or fields["tvm_buffer_bytes"] > 0


def test_resolve_target_presets_and_json() -> None:
    for name in ("x86_64", "x86_64-generic", "arm64", "cortex-a53", "cortex-a72", "cortex-a76"):
        p = resolve_target(name)
        assert p.name == name
        p.tvm()  # TVM accepts the target
    assert resolve_target("cortex-a76").has_dotprod and not resolve_target("cortex-a72").has_dotprod
    assert resolve_target("arm64").cross_compile and not resolve_target("x86_64").cross_compile
    custom = resolve_target('{"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a55"}')
    assert custom.cross_compile and custom.triple == "aarch64-linux-gnu"
    assert set(TARGETS.names()) >= {"x86_64", "arm64", "cortex-a53", "cortex-a72", "cortex-a76"}


def test_unknown_target_lists_valid_names() -> None:
    with pytest.raises(QgnnError, match="cortex-a72"):
        resolve_target("pentium-pro")
    with pytest.raises(QgnnError):
        resolve_target('{"kind": "cuda"}')


def test_missing_cross_compiler_names_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(QgnnError, match="g\\+\\+-aarch64-linux-gnu"):
        compile_to_dir(pooled_zoo_graph(), "arm64", tmp_path / "out", sample_feeds=_sample("pooled"))
    assert not (tmp_path / "out" / "model_arm64.so").exists()


def _elf_machine(path: Path) -> int:
    head = path.read_bytes()[:20]
    assert head[:4] == b"\x7fELF"
    return int.from_bytes(head[18:20], "little")


A64_PRESETS = ("arm64", "cortex-a76")  # generic NEON GEMM, and the SDOT GEMM


@pytest.fixture(scope="session")
def arm64_libs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict]]:
    if shutil.which("aarch64-linux-gnu-g++") is None:
        pytest.skip("aarch64-linux-gnu-g++ not installed (apt-get install g++-aarch64-linux-gnu)")
    out = {}
    for preset in A64_PRESETS:
        d = tmp_path_factory.mktemp(f"tvm_{preset}")
        fields = compile_to_dir(op_zoo_graph(), preset, d, sample_feeds=_sample("zoo"))
        out[preset] = (d / fields["library"], fields)
    return out


def test_arm64_cross_compile_is_aarch64_elf(arm64_libs: dict) -> None:
    lib, fields = arm64_libs["arm64"]
    assert fields["target"]["cross_compiled"] is True
    assert arm64_libs["cortex-a76"][1]["kernels"]["gemm"] == "sdot"
    assert _elf_machine(lib) == 183  # EM_AARCH64
    if shutil.which("file"):
        assert "aarch64" in subprocess.run(["file", str(lib)], capture_output=True, text=True).stdout


def _a64_runner():
    from qgnn_deploy import arm64

    if not arm64.a64_python_available():
        pytest.skip("aarch64 sysroot/qemu not available: bash export/make_a64_sysroot.sh (see qgnn_deploy.arm64)")
    return arm64


@pytest.mark.arm64
def test_arm64_libraries_bit_exact_under_qemu(arm64_libs: dict, tmp_path: Path) -> None:
    """Both aarch64 builds (NEON and SDOT GEMM) run under qemu-user and equal the interpreter on every case."""
    arm64 = _a64_runner()
    g = op_zoo_graph()
    cases = awkward_graphs(g.inputs[0].shape[1])
    got = run_libraries_under_qemu(arm64, tmp_path, {c: _feeds("zoo", x, ei) for c, (x, ei) in cases.items()},
                                   ("x", "edge_index"), [arm64_libs[p][0] for p in A64_PRESETS])
    for case, (x, ei) in cases.items():
        ref = run(g, _feeds("zoo", x, ei))[g.outputs[0].name]
        for i, preset in enumerate(A64_PRESETS):
            np.testing.assert_array_equal(got[f"{i}__{case}"], ref, err_msg=f"{preset}/{case}")


@pytest.mark.slow
def test_tuned_build_static_shapes_and_db_reuse(tmp_path: Path) -> None:
    """--tune: static-shape library, bit-exact, database kept in out_dir/tuning and reused by a second export."""
    g = op_zoo_graph(features=64, hidden=16)
    rng = np.random.default_rng(3)
    feeds = {"x": rng.normal(size=(300, 64)).astype(np.float32),
             "edge_index": rng.integers(0, 300, size=(2, 1200), dtype=np.int64)}
    first = compile_to_dir(g, "x86_64", tmp_path / "a", sample_feeds=feeds, tune_trials=4)
    assert first["tuned"] is True and first["static_shapes"] == {"N": 300, "E": 1200}
    assert (tmp_path / "a" / "tuning" / "database_workload.json").is_file()
    ref = run(g, feeds)[g.outputs[0].name]
    np.testing.assert_array_equal(run_library(tmp_path / "a" / first["library"], feeds), ref)
    second = compile_to_dir(g, "x86_64", tmp_path / "b", sample_feeds=feeds, tune_trials=4,
                            tuning_db=tmp_path / "a" / "tuning")
    assert second["tuning"]["tuned_now"] == []
    assert (tmp_path / "b" / "tuning" / "database_workload.json").is_file()
    np.testing.assert_array_equal(run_library(tmp_path / "b" / second["library"], feeds), ref)


def test_profile_integer_input_variant(tmp_path: Path) -> None:
    """The profiler's uint8-input variant drops the boundary quantize and stays bit-exact; kernels are listed."""
    from qgnn_deploy.backends.tvm.profile import integer_input_variant, profile_library, render

    g = op_zoo_graph()
    g2, feeds = integer_input_variant(g, _sample("zoo"))
    assert [vi.name for vi in g2.inputs] == ["x_q", "edge_index"] and feeds["x_q"].dtype == np.uint8
    assert "quantize" not in g2.op_counts()
    np.testing.assert_array_equal(run(g2, feeds)["y"], run(g, _sample("zoo"))["y"])
    fields = compile_to_dir(g2, "x86_64", tmp_path, sample_feeds=feeds)
    prof = profile_library(tmp_path / fields["library"], g2, feeds, repeat=2, total_repeat=3)
    assert prof["bit_exact"] and prof["kernels"] and all(us > 0 for _, us in prof["kernels"])
    assert "kernel launches" in render(prof) and "without the VM" in render(prof)
    assert prof["chain_us"]["min"] > 0 and prof["chain_us"]["min"] <= prof["chain_us"]["median"]


def _graph_kernel(func: tvm.tirx.PrimFunc):  # noqa: ANN202
    from qgnn_deploy.backends.tvm.targets import resolve_target

    mod = tvm.IRModule({"main": func.with_attr("global_symbol", "main")})
    return tvm.compile(mod, target=resolve_target("x86_64").tvm())["main"]


def _kernel_edge_cases(rng: np.random.Generator) -> dict[str, tuple[int, np.ndarray, np.ndarray]]:
    """(N, src, dst): edge counts around the ownership block size, hubs spanning blocks, N below the part count."""
    from qgnn_deploy.backends.tvm.kernels import CHUNK

    cases = {"empty": (5, np.zeros(0, np.int64), np.zeros(0, np.int64)),
             "one_node": (1, np.zeros(3, np.int64), np.zeros(3, np.int64))}
    for e in (CHUNK - 1, CHUNK, 2 * CHUNK + 7):
        n = 37
        cases[f"random_{e}"] = (n, rng.integers(0, n, e), rng.integers(0, n, e))
    e = 3 * CHUNK + 5  # one hub row takes most edges of every block; a few rows get none
    dst = np.where(rng.random(e) < 0.8, 2, rng.integers(0, 50, e))
    cases["hub"] = (53, rng.integers(0, 53, e), dst.astype(np.int64))
    # ascending but with rows outside [0, N): not CSR, so the scan path runs and skips those edges
    cases["ascending_out_of_range"] = (10, rng.integers(0, 10, 40), np.sort(rng.integers(-2, 13, 40)))
    # ascending but for one swap in a part's first block, and in a part's last block: edge_plan's block-wise check
    # stops at the failed block (or after it), either way the counting sort runs
    late = np.sort(rng.integers(0, 70, 3 * CHUNK + 9))
    early = late.copy()
    late[[3, 200]] = late[[200, 3]]
    early[[-3, -300]] = early[[-300, -3]]
    cases["unsorted_first_block"] = (70, rng.integers(0, 70, late.size), late)
    cases["unsorted_last_block"] = (70, rng.integers(0, 70, early.size), early)
    return cases


def _edge_reduce_reference(kind: str, n: int, dst: np.ndarray, msg: np.ndarray) -> np.ndarray:
    keep = (dst >= 0) & (dst < n)  # the kernels skip edges into rows they do not have
    dst, msg = dst[keep], msg[keep]
    if kind == "add":
        ref = np.zeros((n, msg.shape[1]), np.int64)
        np.add.at(ref, dst, msg)
        return ref
    low = np.iinfo(np.int64).min
    ref = np.full((n, msg.shape[1]), low)
    np.maximum.at(ref, dst, msg)
    return np.where(ref == low, 0, ref)


# (reduce, H, x dtype, zero point, coefficient dtype, gathered, csr_col): aligned, 28-byte and narrow rows
_EDGE_KERNELS = [("add", 16, "int32", 0, None, True, False), ("add", 7, "int32", 0, None, True, True),
                 ("add", 5, "int8", 0, None, True, False), ("add", 16, "int8", 0, "uint8", True, True),
                 ("add", 7, "int8", 0, "int32", True, False),
                 ("add", 6, "uint8", 3, None, True, True), ("add", 7, "int32", 0, None, False, False),
                 ("max", 7, "int32", 0, None, True, False), ("max", 7, "int8", 0, None, True, True),
                 ("max", 5, "int8", 0, None, False, False)]
# gathered add with the requantize epilogue: (H, x dtype, zero point, coefficient dtype, csr_col, self term,
# row multiplier dtype or None for per-column constants, (zero point, qmin, qmax, dtype))
_EPILOGUE_KERNELS = [(16, "int8", 0, "uint8", True, True, "int64", (0, -127, 127, "int8")),
                     (7, "int8", 0, "uint8", False, True, "int32", (3, -100, 120, "int8")),
                     (6, "uint8", 3, None, True, False, None, (-2, 0, 255, "uint8")),
                     (5, "int32", 0, None, False, False, "int64", (0, -127, 127, "int8"))]


def _messages(rng: np.random.Generator, rows: int, n: int, h: int, dt: str, zp: int, cdt: str | None,
              bound: int) -> tuple[list, np.ndarray]:
    """Random ``x [rows, h]`` (within +-bound) and a per-node coefficient ``[n, 1]`` of dtype ``cdt`` (if any) as
    kernel arguments, and the int64 messages ``(x - zp) [* coef]``."""
    info = np.iinfo(dt)
    x = rng.integers(max(info.min, -bound), min(info.max, bound), size=(rows, h), endpoint=True).astype(dt)
    msg = x.astype(np.int64) - zp
    args = [tvm.runtime.tensor(x)]
    if cdt is not None:
        coef = rng.integers(0, 200, size=(n, 1)).astype(cdt)
        msg = msg * coef
        args.append(tvm.runtime.tensor(coef))
    return args, msg


def _check_epilogue_kernels(built: dict, rng: np.random.Generator, case: str, n: int, src: np.ndarray,
                            dst: np.ndarray, plan_args: list) -> None:
    """The epilogue forms of edge_reduce against NumPy: (sum [+ own message]) requantized per row or column."""
    from qgnn_deploy.ir.interpreter import requantize_int64

    for (h, dt, zp, cdt, csr, self_term, rmdt, (qzp, lo, hi, odt)), f in built.items():
        args, msg = _messages(rng, n, n, h, dt, zp, cdt, 300)
        acc = _edge_reduce_reference("add", n, dst, msg[src]) + (msg if self_term else 0)
        shift = rng.integers(20, 30, size=(1, h)) if rmdt is None else np.full((1, h), 24)
        mult = rng.integers(1 << 10, 1 << 16, size=(n, 1) if rmdt else (1, h))
        half = np.where(shift > 0, np.left_shift(1, np.maximum(shift - 1, 0)), 0)
        rq = np.concatenate([np.ones((1, h), np.int64) if rmdt else mult, half, shift]).astype(np.int64)
        ref = np.clip(requantize_int64(acc.astype(np.int32), mult, shift) + qzp, lo, hi).astype(odt)
        out = tvm.runtime.tensor(np.full((n, h), 9, odt))
        rm = mult.astype(rmdt) if rmdt else np.zeros((1, 1), np.int64)
        ei, flag, rowptr, col = plan_args
        f(*args, ei, ei, flag, rowptr, col if csr else tvm.runtime.tensor(np.zeros(1, np.int32)),
          tvm.runtime.tensor(rq), tvm.runtime.tensor(rm), out)
        np.testing.assert_array_equal(out.numpy(), ref, err_msg=f"{case} H={h} {dt} coef={cdt} csr_col={csr} "
                                                                f"self={self_term} row_mult={rmdt}")


@pytest.mark.parametrize(("parts", "serial_work"), [(1, 0), (2, 0), (3, 0), (2, 1 << 30)])
def test_graph_kernels_exact_across_blocks_and_parts(parts: int, serial_work: int) -> None:
    """Every edge-kernel form (gathered or per-edge, scaled by a per-node coefficient, add or max) and degree
    equal NumPy for every part count, reading src/dst as rows of one [2, E] tensor, on the scan path and (edges
    sorted by destination) the CSR path, and (csr_col) the CSR path over the plan's col for any order;
    edge_plan flags exactly the ascending, in-range cases, and its row pointers and col are a stable sort's for
    every part count; the requantize epilogue forms (self term, per-row or per-column multiplier) equal the
    handler's arithmetic on the same paths.  serial_work 0: the parts run in parallel; 2^30: the small-work
    branch (one part on the calling thread)."""
    from qgnn_deploy.backends.tvm import kernels

    rng = np.random.default_rng(parts)
    sw = {"serial_work": serial_work}
    deg = _graph_kernel(kernels.degree(parts, row=1, **sw))
    # buckets of 4 rows: the counting sort's two-pass scatter spans many buckets on these small graphs
    plan = _graph_kernel(kernels.edge_plan(parts, row=1, src_row=0, bucket_bits=None if parts == 1 else 2, **sw))
    built = {spec: _graph_kernel(kernels.edge_reduce(spec[1], spec[2], parts, spec[0], dst_row=1,
                                                     src_row=0 if spec[5] else None, zero_point=spec[3],
                                                     coef_dtype=spec[4], csr_col=spec[6], **sw))
             for spec in _EDGE_KERNELS}
    epilogues = {spec: _graph_kernel(kernels.edge_reduce(spec[0], spec[1], parts, "add", dst_row=1, src_row=0,
                                                         zero_point=spec[2], coef_dtype=spec[3], csr_col=spec[4],
                                                         self_term=spec[5], requant=spec[7], row_mult=spec[6], **sw))
                 for spec in _EPILOGUE_KERNELS}
    cases = _kernel_edge_cases(rng)
    for case, (n, src, dst) in list(cases.items()):  # and each again with destinations ascending
        order = np.argsort(dst, kind="stable")
        cases[f"{case}_sorted"] = (n, src[order], dst[order])
    for case, (n, src, dst) in cases.items():
        ei = tvm.runtime.tensor(np.ascontiguousarray(np.stack([src, dst])))
        flag = tvm.runtime.tensor(np.full(1, -9, np.int32))
        rowptr = tvm.runtime.tensor(np.full(n + 1, -9, np.int64))
        col = tvm.runtime.tensor(np.full(len(dst), -9, np.int32))
        plan(ei, flag, rowptr, col)
        keep = (dst >= 0) & (dst < n)
        ascending = bool(np.all(np.diff(dst) >= 0)) and bool(np.all(keep))
        assert flag.numpy()[0] == int(ascending), case
        order = np.argsort(dst[keep], kind="stable")  # CSR row pointers: sorted input's, else the counting sort's
        np.testing.assert_array_equal(rowptr.numpy(), np.searchsorted(dst[keep][order], np.arange(n + 1)),
                                      err_msg=case)
        np.testing.assert_array_equal(col.numpy()[:keep.sum()], src[keep][order], err_msg=case)  # sorted too
        out = tvm.runtime.tensor(np.full((n, 1), -9, np.int32))
        deg(ei, flag, rowptr, out)
        np.testing.assert_array_equal(out.numpy()[:, 0], np.bincount(dst[(dst >= 0) & (dst < n)], minlength=n),
                                      err_msg=case)
        for (kind, h, dt, zp, cdt, gathered, csr), f in built.items():
            args, msg = _messages(rng, n if gathered else len(dst), n, h, dt, zp, cdt, 5000)
            msg = msg[src] if gathered else msg
            out = tvm.runtime.tensor(np.full((n, h), -9, np.int32))
            unread = tvm.runtime.tensor(np.zeros(1, np.int32))
            rq_unread = [tvm.runtime.tensor(np.zeros((3, h), np.int64)), tvm.runtime.tensor(np.zeros((1, 1), np.int64))]
            f(*args, *([ei, ei] if gathered else [ei]), flag, rowptr,
              *([col if csr else unread, *rq_unread] if gathered else []), out)
            np.testing.assert_array_equal(out.numpy(), _edge_reduce_reference(kind, n, dst, msg).astype(np.int32),
                                          err_msg=f"{case} {kind} H={h} {dt} zp={zp} coef={cdt} gathered={gathered} "
                                                  f"csr_col={csr}")
        _check_epilogue_kernels(epilogues, rng, case, n, src, dst, [ei, flag, rowptr, col])


def _planned_edge_cases(rng: np.random.Generator, plan):  # noqa: ANN001, ANN202
    """Each edge case of ``_kernel_edge_cases`` as given and sorted by destination: (case, order, n, src, dst,
    [edge_index, flag, rowptr, col] after ``plan`` ran on them)."""
    for case, (n, src, dst) in _kernel_edge_cases(rng).items():
        for order in ("unsorted", "sorted"):
            if order == "sorted":
                o = np.argsort(dst, kind="stable")
                src, dst = src[o], dst[o]
            bufs = [tvm.runtime.tensor(np.ascontiguousarray(np.stack([src, dst]))),
                    tvm.runtime.tensor(np.zeros(1, np.int32)), tvm.runtime.tensor(np.zeros(n + 1, np.int64)),
                    tvm.runtime.tensor(np.zeros(len(dst), np.int32))]
            plan(*bufs)
            yield case, order, n, src, dst, bufs


@pytest.mark.parametrize("parts", [1, 2])
@pytest.mark.parametrize("cdt", ["uint8", "int8"])
def test_packed_coefficients_equal_the_gathered_ones(parts: int, cdt: str) -> None:
    """pack_coef puts each source's 8-bit coefficient in col's top byte, and the packed edge kernels equal the
    gathered-coefficient ones (add and max, a zero point, the requantize epilogue) on every edge case, sorted or
    not; with fewer rows allowed than x has (``pack_limit``) the pack leaves col as it is and the kernels take
    the plain path, so both agree with NumPy there too.  The plan that leaves col unwritten for sorted edges
    (``sorted_col=False``) with the pack reading those sources from the index tensor (``src_row``) packs the same."""
    from qgnn_deploy.backends.tvm import kernels

    rng = np.random.default_rng(7 + parts)
    sw = {"serial_work": 0}
    info = np.iinfo(cdt)
    plan = _graph_kernel(kernels.edge_plan(parts, row=1, src_row=0, bucket_bits=None if parts == 1 else 2, **sw))
    plan_nc = _graph_kernel(kernels.edge_plan(parts, row=1, src_row=0, bucket_bits=None if parts == 1 else 2,
                                              sorted_col=False, **sw))
    rq = (0, -127, 127, "int8")
    for limit in (kernels.PACK_LIMIT, 3):
        pack = _graph_kernel(kernels.pack_coef(cdt, parts, 0, pack_limit=limit, **sw))
        built = {(kind, packed): _graph_kernel(kernels.edge_reduce(
            5, "int8", parts, kind, dst_row=1, src_row=0, zero_point=2, coef_dtype=cdt, csr_col=True,
            packed_col=packed, pack_limit=limit, **sw)) for kind in ("add", "max") for packed in (False, True)}
        fused = {packed: _graph_kernel(kernels.edge_reduce(
            5, "int8", parts, "add", dst_row=1, src_row=0, zero_point=2, coef_dtype=cdt, csr_col=True,
            self_term=True, requant=rq, packed_col=packed, pack_limit=limit, **sw)) for packed in (False, True)}
        for case, order, n, src, dst, (ei, flag, rowptr, col) in _planned_edge_cases(rng, plan):
            x = rng.integers(-128, 128, (n, 5)).astype(np.int8)
            coef = rng.integers(info.min, info.max + 1, (n, 1)).astype(cdt)
            packed_col = tvm.runtime.tensor(np.full(len(dst), -9, np.int32))
            pack(ei, flag, rowptr, col, tvm.runtime.tensor(coef), packed_col)
            kept = int(rowptr.numpy()[-1])
            assert (packed_col.numpy()[kept:] == -9).all(), "edges the plan dropped are not written"
            # the plan without sorted col (col's sentinel left as it is) packs the same: sources from the index
            flag_i = tvm.runtime.tensor(np.zeros(1, np.int32))
            rowptr_i = tvm.runtime.tensor(np.zeros(n + 1, np.int64))
            col_i = tvm.runtime.tensor(np.full(len(dst), -7, np.int32))
            plan_nc(ei, flag_i, rowptr_i, col_i)
            from_index = tvm.runtime.tensor(np.full(len(dst), -9, np.int32))
            pack(ei, flag_i, rowptr_i, col_i, tvm.runtime.tensor(coef), from_index)
            np.testing.assert_array_equal(rowptr_i.numpy(), rowptr.numpy())
            np.testing.assert_array_equal(from_index.numpy(), packed_col.numpy(), err_msg=f"{case} {order}")
            if flag.numpy()[0]:
                assert (col_i.numpy() == -7).all(), "sorted_col=False leaves col unwritten for sorted edges"
            keep = (dst >= 0) & (dst < n)
            msg = f"{case} {order} limit={limit}"
            if n <= limit:
                top = (packed_col.numpy().view(np.uint32) >> kernels.PACK_BITS).astype(np.uint8).view(cdt)
                np.testing.assert_array_equal(top[:keep.sum()], coef[col.numpy()[:keep.sum()], 0], err_msg=msg)
            else:
                np.testing.assert_array_equal(packed_col.numpy()[:kept], col.numpy()[:kept], err_msg=msg)
            m = (x.astype(np.int64) - 2) * coef.astype(np.int64)
            rq_args = [tvm.runtime.tensor(np.stack([np.ones(5), np.full(5, 1 << 9), np.full(5, 10)])
                                          .astype(np.int64)), tvm.runtime.tensor(np.zeros((1, 1), np.int64))]
            for (kind, packed), f in built.items():
                out = tvm.runtime.tensor(np.full((n, 5), -9, np.int32))
                f(tvm.runtime.tensor(x), tvm.runtime.tensor(coef), ei, ei, flag, rowptr,
                  packed_col if packed else col, *rq_args, out)
                np.testing.assert_array_equal(out.numpy(), _edge_reduce_reference(kind, n, dst, m[src]),
                                              err_msg=f"{msg} {kind} packed={packed}")
            outs = []
            for packed, f in fused.items():
                out = tvm.runtime.tensor(np.full((n, 5), -9, np.int8))
                f(tvm.runtime.tensor(x), tvm.runtime.tensor(coef), ei, ei, flag, rowptr,
                  packed_col if packed else col, *rq_args, out)
                outs.append(out.numpy())
            np.testing.assert_array_equal(outs[1], outs[0], err_msg=f"{msg} requantized")

@pytest.mark.parametrize("parts", [1, 2])
def test_wide_rows_sum_like_narrow_ones(parts: int) -> None:
    """edge_reduce over 8-byte rows of which 7 are real (``x_width``, a GEMM that wrote a padding column) equals the
    7-column kernel on the same rows, whatever the padding holds: add and max, packed or gathered coefficients, the
    self term and requantize epilogue, on every edge case, sorted or not."""
    from qgnn_deploy.backends.tvm import kernels

    rng = np.random.default_rng(21 + parts)
    sw = {"serial_work": 0}
    plan = _graph_kernel(kernels.edge_plan(parts, row=1, src_row=0, bucket_bits=None if parts == 1 else 2, **sw))
    pack = _graph_kernel(kernels.pack_coef("uint8", parts, 0, **sw))
    variants = [dict(reduce=kind, packed_col=packed) for kind in ("add", "max") for packed in (False, True)]
    variants.append(dict(reduce="add", packed_col=True, self_term=True, requant=(0, -127, 127, "int8")))
    built = [(v, *(_graph_kernel(kernels.edge_reduce(7, "int8", parts, dst_row=1, src_row=0, zero_point=1,
                                                     coef_dtype="uint8", csr_col=True, x_width=w, **v, **sw))
                   for w in (None, 8))) for v in variants]
    rq = tvm.runtime.tensor(np.stack([np.ones(7), np.full(7, 1 << 9), np.full(7, 10)]).astype(np.int64))
    rm = tvm.runtime.tensor(np.zeros((1, 1), np.int64))
    for case, order, n, _src, dst, (ei, flag, rowptr, col) in _planned_edge_cases(rng, plan):
        packed_col = tvm.runtime.tensor(np.zeros(len(dst), np.int32))
        coef = tvm.runtime.tensor(rng.integers(0, 256, (n, 1)).astype(np.uint8))
        pack(ei, flag, rowptr, col, coef, packed_col)
        x8 = rng.integers(-128, 128, (n, 8)).astype(np.int8)
        for v, narrow, wide in built:
            dt = "int8" if v.get("requant") else "int32"
            outs = []
            for f, x in ((narrow, x8[:, :7]), (wide, x8)):
                out = tvm.runtime.tensor(np.full((n, 7), -9, dt))
                f(tvm.runtime.tensor(np.ascontiguousarray(x)), coef, ei, ei, flag, rowptr,
                  packed_col if v["packed_col"] else col, rq, rm, out)
                outs.append(out.numpy())
            np.testing.assert_array_equal(outs[1], outs[0], err_msg=f"{case} {order} {v}")


def _plan_cases(rng: np.random.Generator) -> dict[str, tuple[int, np.ndarray, np.ndarray]]:
    """(N, src, dst) for edge_plan beyond the edge-kernel cases: sorted runs with rows without edges at the
    start, in the middle and at the end, one row's run filling whole parts, more rows than one default bucket
    (2^16), no rows at all, every edge out of range."""
    from qgnn_deploy.backends.tvm.kernels import CHUNK

    n = 3000
    dst = np.sort(rng.integers(0, n, 5 * CHUNK))
    dst = dst[((dst < 100) | (dst > 200)) & (dst >= 7) & (dst < n - 5)]
    hub = np.sort(np.concatenate([np.full(4 * CHUNK, 11), rng.integers(0, 40, 300)]))
    big = rng.integers(0, 200_000, 300_000)
    cases = {"gaps": (n, rng.integers(0, n, dst.size), dst),
             "hub_over_parts": (40, rng.integers(0, 40, hub.size), hub),
             "many_buckets": (200_000, rng.integers(0, 200_000, big.size), big),
             "no_rows": (0, np.zeros(5, np.int64), np.arange(5)),
             "all_out_of_range": (4, np.arange(3), np.array([-1, 4, 7]))}
    cases.update(_kernel_edge_cases(rng))
    for case, (n, src, dst) in list(cases.items()):  # and each again the other way round
        if np.all(np.diff(dst) >= 0):
            perm = rng.permutation(dst.size)
            cases[f"{case}_shuffled"] = (n, src[perm], dst[perm])
        else:
            order = np.argsort(dst, kind="stable")
            cases[f"{case}_sorted"] = (n, src[order], dst[order])
    return cases


@pytest.mark.parametrize(("parts", "bucket_bits", "with_col", "serial_work", "packed_bits"),
                         [(1, None, True, 0, (12, 20)), (2, 1, True, 0, (2, 8)), (3, 3, False, 0, (12, 20)),
                          (4, None, True, 0, (3, 12)), (2, 16, False, 0, (12, 20)), (3, 2, True, 1 << 30, (2, 18))])
def test_edge_plan_is_a_stable_sort(parts: int, bucket_bits: int | None, with_col: bool, serial_work: int,
                                    packed_bits: tuple[int, int]) -> None:
    """edge_plan flags exactly the ascending, in-range destinations, and its row pointers (and col) are NumPy's
    stable sort's with out-of-range edges left out, for any part count and bucket size, with 1 and 2 threads
    (the kernel is called once more with the thread pool at one thread), in both record layouts: 4-byte
    ``row | source`` records where every source fits ``packed_bits[1]`` bits (here the cases up to 256, 4096 or
    2^18 nodes, with 4- or 8-row buckets), the 8-byte pairs above that."""
    from qgnn_deploy.backends.tvm import kernels

    plan = _graph_kernel(kernels.edge_plan(parts, row=1, src_row=0 if with_col else None, serial_work=serial_work,
                                           bucket_bits=bucket_bits, packed_bits=packed_bits))
    config = tvm.get_global_func("runtime.config_threadpool")  # (affinity mode 0: default, threads; 0 = all)
    rng = np.random.default_rng(10 * parts + (bucket_bits or 0))
    try:
        for threads in (2, 1):
            config(0, threads)
            assert threads == 2 or tvm.get_global_func("runtime.NumThreads")() == 1
            for case, (n, src, dst) in _plan_cases(rng).items():
                ei = tvm.runtime.tensor(np.ascontiguousarray(np.stack([src, dst]).astype(np.int64)))
                flag = tvm.runtime.tensor(np.full(1, -9, np.int32))
                rowptr = tvm.runtime.tensor(np.full(n + 1, -9, np.int64))
                col = tvm.runtime.tensor(np.full(len(dst), -9, np.int32))
                plan(ei, flag, rowptr, *([col] if with_col else []))
                keep = (dst >= 0) & (dst < n)
                ascending = bool(np.all(np.diff(dst) >= 0)) and bool(np.all(keep))
                msg = f"{case}, {threads} threads"
                assert flag.numpy()[0] == int(ascending), msg
                order = np.argsort(dst[keep], kind="stable")
                np.testing.assert_array_equal(rowptr.numpy(), np.searchsorted(dst[keep][order], np.arange(n + 1)),
                                              err_msg=msg)
                if with_col:  # sorted input too: its sources narrowed to int32
                    np.testing.assert_array_equal(col.numpy()[:keep.sum()], src[keep][order], err_msg=msg)
    finally:
        config(0, 0)


@pytest.mark.parametrize("parts", [1, 2])
def test_edge_plan_keeps_scalars_out_of_the_workspace_pool(parts: int) -> None:
    """edge_plan's compiled code asks TVM's workspace pool only for its arrays (bucket counts and starts, the
    staging records, the row cursors), never for a scalar: a plain ``x = ...`` in TVMScript 0.27 is a
    one-element buffer, which here became a TVMBackendAllocWorkspace call with a store and reload per use in
    the hot loops (~35% of the unsorted plan's CPU at 10^6 nodes)."""
    import re

    from qgnn_deploy.backends.tvm import kernels
    from qgnn_deploy.backends.tvm.targets import resolve_target

    mod = tvm.IRModule({"main": kernels.edge_plan(parts, row=1, src_row=0).with_attr("global_symbol", "main")})
    ll = tvm.compile(mod, target=resolve_target("x86_64").tvm()).mod.inspect_source("ll")
    sizes = re.findall(r"call ptr %\w+\(i32 1, i32 %\w+, i64 (%?\w+)", ll)  # (device, id, bytes, ...)
    assert len(sizes) == ll.count("@__TVMBackendAllocWorkspace, align") >= 4, sizes
    assert all(size.startswith("%") or int(size) > 64 for size in sizes), sizes


def test_factored_messages_reach_the_narrow_kernel() -> None:
    """Factored messages get the narrow kernel, look-alikes the int32 one; src/dst are read in place from
    edge_index, so no strided-slice copy of it is left after the build."""
    from qgnn_deploy.backends.tvm.relax_builder import BuildOptions, build_module

    mod = build_module(message_graph(), BuildOptions(parts=2))
    names = sorted(gv.name_hint for gv in mod.functions if "scatter" in gv.name_hint)
    # he_scalar (a [1, 1] factor is not per node) and the int32 cast of an int64 product keep int32 rows
    # _csr: the edge plan counting-sorts src for unsorted edges, so these walk CSR runs for any edge order
    assert names == ["qgnn_gather_scatter_add_6_int32_2_0_1_csr",
                     # GCN, coefficient on either side: packed into col's top byte (kernels.pack_coef)
                     "qgnn_gather_scatter_add_6_int8_2_0_1_0_uint8_csr_packed",
                     # GIN's x - zp, its requantize applied by the edge kernel (fusion.requantize_into_scatter)
                     "qgnn_gather_scatter_add_6_uint8_2_0_1_7_none_csr_rq_0_m127_127_int8_col",
                     "qgnn_gather_scatter_max_6_int8_2_0_1_0_uint8_csr_packed"], names
    assert [gv.name_hint for gv in mod.functions if "edge_plan" in gv.name_hint] == ["qgnn_edge_plan_2_1_col0"]
    # one pack for every scatter scaled by the same coefficients over the same col
    assert [gv.name_hint for gv in mod.functions if "pack_coef" in gv.name_hint] == ["qgnn_pack_coef_uint8_2_src0"]
    text = mod["main"].script()
    assert text.count("qgnn_pack_coef_uint8_2_src0") == 1, "one pack_coef call"
    assert "strided_slice" not in text


def test_plan_skips_sorted_col_when_only_the_pack_reads_it(tmp_path: Path) -> None:
    """A graph whose every gathered scatter packs its coefficient into col (GCN) gets the plan that leaves col
    unwritten for sorted edges (``relax_builder.finish_edge_plans``); the message graph, whose GIN scatter reads
    col itself, keeps the full plan.  Both libraries are bit-exact on sorted and unsorted edges."""
    from qgnn_deploy.backends.tvm import kernels
    from qgnn_deploy.backends.tvm.relax_builder import BuildOptions, build_module
    from qgnn_deploy.backends.tvm.targets import resolve_target

    def plan_func(mod: tvm.IRModule) -> tvm.tirx.PrimFunc:
        (gv,) = [gv for gv in mod.functions if "edge_plan" in gv.name_hint]
        return mod[gv]

    for g, sorted_col in ((message_graph(), True), (gcn_message_graph(), False)):
        mod = build_module(g, BuildOptions(parts=2))
        expected = kernels.edge_plan(2, 1, 0, sorted_col=sorted_col)
        tvm.ir.assert_structural_equal(plan_func(mod), expected)
        lib = tmp_path / f"plan_{sorted_col}.so"
        tvm.compile(mod, target=resolve_target("x86_64").tvm()).export_library(str(lib))
        x, ei = awkward_graphs(g.inputs[0].shape[1])["random"]
        for ei_case in (ei, ei[:, np.argsort(ei[1], kind="stable")]):
            feeds = _feeds("messages", x, np.ascontiguousarray(ei_case))
            np.testing.assert_array_equal(run_library(lib, feeds), run(g, feeds)[g.outputs[0].name])


def test_unfused_gathers_get_their_row_copy(tmp_path: Path) -> None:
    """Without gather/scatter fusion a gather_rows needs ``src`` as its own vector: the deferred take_row copy is
    emitted on first use and the library stays bit-exact (sorted and unsorted edge lists)."""
    from qgnn_deploy.backends.tvm.relax_builder import BuildOptions, build_module
    from qgnn_deploy.backends.tvm.targets import resolve_target

    g = message_graph()
    mod = build_module(g, BuildOptions(parts=2, fuse_gather_scatter=False))
    assert "strided_slice" in mod["main"].script()
    lib = tmp_path / "unfused.so"
    tvm.compile(mod, target=resolve_target("x86_64").tvm()).export_library(str(lib))
    x, ei = awkward_graphs(g.inputs[0].shape[1])["random"]
    for ei_case in (ei, ei[:, np.argsort(ei[1], kind="stable")]):
        feeds = _feeds("messages", x, np.ascontiguousarray(ei_case))
        np.testing.assert_array_equal(run_library(lib, feeds), run(g, feeds)[g.outputs[0].name])


def test_div_floor_in_float32_is_exact_up_to_its_bound(tmp_path: Path) -> None:
    """A div_floor whose operands' static ranges keep |a| + b below 2^24 runs in float32 (``relax_builder._div_floor``)
    and equals NumPy's floor division on quotients next to an integer from either side, at the bound's largest
    numerators and divisors, negative numerators included; an unbounded one (float64 path) alongside."""
    from qgnn_deploy.backends.tvm.relax_builder import F32_EXACT_DIVISION
    from qgnn_deploy.ir.bounds import value_ranges

    half = F32_EXACT_DIVISION // 2
    b = GraphBuilder()
    a, d = b.input("a", "int32", ("N", 4)), b.input("d", "int32", ("N", 4))
    num = b.op("clamp", [a], "num", lo=-half + 1, hi=half - 1)
    den = b.op("clamp", [d], "den", lo=1, hi=half)
    q32 = b.op("div_floor", [num, den], "q32")
    q64 = b.op("div_floor", [a, b.op("clamp", [d], "den_any", lo=1, hi=2**31 - 1)], "q64")
    b.output(b.op("concat", [q32, q64], "q", axis=1), "int32", ("N", 8))
    g = b.graph
    ranges = value_ranges(g)
    assert max(-ranges["num"][0], ranges["num"][1]) + ranges["den"][1] < F32_EXACT_DIVISION  # the float32 path
    assert ranges["a"][1] + ranges["den_any"][1] >= F32_EXACT_DIVISION  # the float64 path
    rng = np.random.default_rng(24)
    n = 50_000
    den_v = np.concatenate([rng.integers(1, half + 1, n // 2), rng.integers(half - 1000, half + 1, n - n // 2)])
    quot = rng.integers(-(half - 1) // den_v, (half - 1) // den_v + 1)
    off = rng.choice(np.array([-1, 0, 1]), n)
    num_v = np.clip(quot * den_v + off, -half + 1, half - 1)  # a multiple of the divisor, or one away from one
    num_v[: n // 10] = rng.integers(-half + 1, half, n // 10)
    feeds = {"a": num_v.astype(np.int32).reshape(-1, 4), "d": den_v.astype(np.int32).reshape(-1, 4)}
    ref = run(g, feeds)["q"]
    np.testing.assert_array_equal(ref[:, :4], np.floor_divide(feeds["a"], feeds["d"]))
    fields = compile_to_dir(g, "x86_64", tmp_path, sample_feeds={k: v[:8] for k, v in feeds.items()})
    np.testing.assert_array_equal(run_library(tmp_path / fields["library"], feeds), ref)
