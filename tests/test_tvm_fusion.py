"""The TVM build's fusion passes (``backends/tvm/fusion.py``): each pass alone, then the fused kernels bit-exact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qgnn_deploy.ir.graph import Graph, GraphBuilder, ValueInfo
from qgnn_deploy.ir.interpreter import run
from qgnn_deploy.ir.testing import awkward_graphs, op_zoo_graph, pack_int4

tvm = pytest.importorskip("tvm")

from qgnn_deploy.backends.tvm import compile_to_dir, run_library  # noqa: E402
from qgnn_deploy.backends.tvm.fusion import (  # noqa: E402
    Attend,
    FusionPlan,
    add_into_lut_steps,
    attention_into_scatter,
    fusion_pipeline,
    gather_into_scatter,
    plan_fusion,
    requant_epilogue_constants,
    requantize_into_gemm,
)
from qgnn_deploy.backends.tvm.relax_builder import BuildOptions, build_module  # noqa: E402


def int8_matrix(b: GraphBuilder, name: str, rows: int, cols: int, rng: np.random.Generator, int4: bool = False) -> str:
    """A random constant int8 ``[rows, cols]`` matrix named ``name``: 8-bit codes, or with ``int4`` 4-bit ones
    stored packed and unpacked by an ``unpack_int4`` node (as ``fold`` emits 4-bit weights and LoRAP bases)."""
    if not int4:
        return b.const(name, rng.integers(-128, 128, (rows, cols)).astype(np.int8))
    return b.op("unpack_int4", [b.const(f"{name}_packed", pack_int4(rng.integers(-8, 8, (rows, cols))))], name,
                shape=[rows, cols])


def gemm_requant_graph(k: int, n: int, a_dtype: str = "uint8", *, fp32_input: bool = False, zp: int = 0,
                       per_column: bool = True, extra_reader: bool = False, shift: int | None = None,
                       a_zero_point: int = 0, dequantize: bool = False, int4: bool = False) -> Graph:
    """A [N, k] @ W [k, n] (int8; 4-bit codes unpacked with ``int4``) -> requantize with per-column (or scalar)
    multiplier and shift (then a dequantize to float32 logits with ``dequantize``)."""
    rng = np.random.default_rng(k * 31 + n)
    b = GraphBuilder()
    if fp32_input:
        x = b.input("x", "float32", ("N", k))
        info = np.iinfo(a_dtype)
        a = b.op("quantize", [x], "xq", scale=0.05, zero_point=0, qmin=int(info.min), qmax=int(info.max),
                 dtype=a_dtype)
    else:
        a = b.input("a", a_dtype, ("N", k))
    acc = b.op("matmul", [a, int8_matrix(b, "w", k, n, rng, int4)], "acc", a_zero_point=a_zero_point)
    cols = n if per_column else 1
    m = b.const("m", rng.integers(1 << 28, 1 << 30, size=(1, cols)).astype(np.int32))
    sh = b.const("sh", (np.full((1, cols), shift, np.int64) if shift is not None else
                        rng.integers(32, 42, size=(1, cols))).astype(np.int8))
    rq = b.op("requantize", [acc, m, sh], "rq", zero_point=zp, qmin=-127, qmax=127, dtype="int8")
    if dequantize:
        b.output(b.op("dequantize", [rq], "logits", scale=0.0371, zero_point=zp), "float32", ("N", n))
        g = b.graph
        g.validate()
        return g
    out = b.op("cast", [rq], "rq32", dtype="int32")
    if extra_reader:
        out = b.op("add", [out, acc], "sum")
    b.output(out, "int32", ("N", n))
    g = b.graph
    g.validate()
    return g


def _plan(g: Graph, kind: str = "avx2", **kw: object) -> dict[str, str]:
    plan = FusionPlan()
    requantize_into_gemm(g, BuildOptions(gemm_kind=kind, **kw), plan)  # type: ignore[arg-type]
    return plan.requantize_into_gemm


def test_requantize_into_gemm_plan() -> None:
    """Fused only for a GEMM read by the requantize alone, B zero point 0, shifts in [0, 63], x86 (on AVX-512 VNNI
    for a u8 A read in place with K % 4 == 0); an A zero point folds into the constants."""
    assert _plan(gemm_requant_graph(40, 16)) == {"rq": "acc"}
    assert _plan(gemm_requant_graph(40, 7, per_column=False)) == {"rq": "acc"}
    assert _plan(gemm_requant_graph(40, 16, extra_reader=True)) == {}  # the int32 product has another reader
    assert _plan(gemm_requant_graph(40, 16, a_zero_point=3)) == {"rq": "acc"}  # zero point folded in
    assert _plan(gemm_requant_graph(40, 16, shift=64)) == {}  # >> 64 is not the handler's shift
    assert _plan(gemm_requant_graph(3, 16)) == {}  # K < 4: the generic GEMM
    assert _plan(gemm_requant_graph(40, 16), kind="vnni") == {"rq": "acc"}
    assert _plan(gemm_requant_graph(40, 16, "int8"), kind="vnni") == {"rq": "acc"}  # s8 flip folded in
    assert _plan(gemm_requant_graph(40, 16, a_zero_point=3), kind="vnni") == {"rq": "acc"}  # zero point folded in
    assert _plan(gemm_requant_graph(42, 16), kind="vnni") == {"rq": "acc"}  # K tail: int32 before the epilogue
    assert _plan(gemm_requant_graph(7, 8, "int8"), kind="vnni") == {"rq": "acc"}  # LoRAP's K = 7 score GEMM
    assert _plan(gemm_requant_graph(40, 16, fp32_input=True), kind="vnni") == {"rq": "acc"}  # quantize not fused
    assert _plan(gemm_requant_graph(40, 16), kind="sdot") == {}
    assert _plan(gemm_requant_graph(40, 16), fast_matmul=False) == {}


def test_requant_epilogue_constants_match_the_handler() -> None:
    g = gemm_requant_graph(40, 5)
    node = next(nd for nd in g.nodes if nd.op == "requantize")
    rq = requant_epilogue_constants(g, node, 5)
    assert rq is not None and rq.shape == (3, 5) and rq.dtype == np.int64
    np.testing.assert_array_equal(rq[0], g.initializers["m"].reshape(-1))
    np.testing.assert_array_equal(rq[2], g.initializers["sh"].reshape(-1))
    np.testing.assert_array_equal(rq[1], 1 << (rq[2] - 1))


def test_gather_into_scatter_plan_and_pipeline_report() -> None:
    g = op_zoo_graph()
    plan = FusionPlan()
    assert gather_into_scatter(g, BuildOptions(fuse_gather_scatter=False), plan) == [] and not plan.skipped()
    fused = gather_into_scatter(g, BuildOptions(), plan)
    assert fused and all(g.producers()[v].op == "gather_rows" for v in fused)
    plan2, report = plan_fusion(g, BuildOptions(gemm_kind="avx2"))
    assert list(report) == ["gather_into_scatter", "quantize_into_gemm", "requantize_into_gemm",
                            "add_into_lut_steps", "attention_into_scatter", "requantize_into_scatter",
                            "prompt_into_gemm", "dequantize_into_gemm", "widen_gathered_rows", "softmax_into_vbmi"]
    assert report["gather_into_scatter"] == fused and plan2.gather_into_scatter == set(fused)
    plan3 = FusionPlan()
    assert list(fusion_pipeline(BuildOptions(), plan3, skip=("gather_into_scatter",))(g)) == [
        "quantize_into_gemm", "requantize_into_gemm", "add_into_lut_steps",
        "attention_into_scatter", "requantize_into_scatter", "prompt_into_gemm", "dequantize_into_gemm",
        "widen_gathered_rows", "softmax_into_vbmi"] and not plan3.gather_into_scatter


def _kernel_names(g: Graph, kind: str) -> list[str]:
    mod = build_module(g, BuildOptions(gemm_kind=kind))
    return sorted(gv.name_hint for gv, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc))


def test_fused_build_has_one_gemm_kernel_and_no_int32_product() -> None:
    names = _kernel_names(gemm_requant_graph(40, 16), "avx2")
    assert len([n for n in names if n.startswith("qgnn_gemm_avx2")]) == 1 and "_rq_" in names[0]
    fused = str(build_module(gemm_requant_graph(40, 16), BuildOptions(gemm_kind="avx2"))["main"])
    unfused = str(build_module(gemm_requant_graph(40, 16, extra_reader=True), BuildOptions(gemm_kind="avx2"))["main"])
    assert "right_shift" in unfused and "right_shift" not in fused  # the Relax requantize is gone


@pytest.mark.parametrize("k,n,a_dtype,fp32,per_col,zp,a_zp", [
    (1433, 16, "uint8", False, True, 0, 0),  # Cora's first layer
    (40, 7, "uint8", False, True, 5, 0),  # padded columns, zero point
    (16, 20, "int8", False, False, -3, 0),  # two column blocks, s8 A (int16-widened: no flip), scalar constants
    (37, 16, "uint8", True, True, 0, 0),  # quantize fused into the same kernel's panel fill
    (37, 16, "uint8", True, True, 2, 9),  # ... with the GEMM's A zero point folded into the constants
])
def test_fused_gemm_requant_bit_exact(k: int, n: int, a_dtype: str, fp32: bool, per_col: bool, zp: int, a_zp: int,
                                      tmp_path: Path) -> None:
    g = gemm_requant_graph(k, n, a_dtype, fp32_input=fp32, per_column=per_col, zp=zp, a_zero_point=a_zp)
    assert _plan(g) == {"rq": "acc"}
    assert_gemm_library_exact(g, a_dtype, fp32, k, tmp_path, (97, 6, 1))  # off the 6-row block and the 96-row task


def assert_gemm_library_exact(g: Graph, a_dtype: str, fp32: bool, seed: int, tmp_path: Path,
                              row_counts: tuple[int, ...]) -> None:
    """``g`` (one [N, K] input: ``a_dtype`` codes over their whole range, or FP32 with ``fp32``) compiled for the
    host equals the interpreter on its first output, at each of ``row_counts``."""
    rng = np.random.default_rng(seed)
    name, out, k = g.inputs[0].name, g.outputs[0].name, int(g.inputs[0].shape[1])

    def feed(rows: int) -> dict[str, np.ndarray]:
        if fp32:
            return {name: rng.normal(0.0, 3.0, (rows, k)).astype(np.float32)}
        info = np.iinfo(a_dtype)
        return {name: rng.integers(int(info.min), int(info.max) + 1, (rows, k)).astype(a_dtype)}

    fields = compile_to_dir(g, "x86_64", tmp_path, sample_feeds=feed(13))
    lib = tmp_path / fields["library"]
    for rows in row_counts:
        f = feed(rows)
        np.testing.assert_array_equal(run_library(lib, f), run(g, f)[out], err_msg=f"rows={rows}")


def lut_offset_graph(c: int, span: int, x_dtype: str = "int32", c_dtype: str = "int32", *,
                     extra_reader: bool = False, table_input: bool = False) -> Graph:
    """``lut_steps(x + c)`` twice (two layers' degree factors) over thresholds spanning ``span`` indices."""
    b = GraphBuilder()
    x = b.input("x", x_dtype, ("N", 1))
    s = b.op("add", [x, b.const("c", np.array([c], c_dtype))], "xc")
    t = np.array([-span // 2, -3, 0, 1, 5, span // 2], np.int32)
    thr = b.input("t", "int32", (6,)) if table_input else b.const("t", t)
    vals = b.const("v", np.array([9, -2, 4, 0, 7, -5, 3], np.int16))
    y0 = b.op("lut_steps", [s, thr, vals], "y0")
    y1 = b.op("lut_steps", [s, thr, vals], "y1")
    y = b.op("add", [y0, y1], "y")
    if extra_reader:
        y = b.op("add", [y, s], "y2")
    b.output(y, "int32" if extra_reader else "int16", ("N", 1))
    g = b.graph
    g.validate()
    return g


@pytest.mark.parametrize("k,n,a_dtype,zp,a_zp", [(128, 16, "uint8", 0, 125), (40, 7, "uint8", 5, 0),
                                                  (16, 20, "uint8", -3, 0), (16, 8, "int8", 0, 0),
                                                  (128, 8, "int8", 2, -7), (7, 8, "int8", 0, 0),
                                                  (42, 16, "uint8", 1, 3), (6, 20, "int8", -2, 5),
                                                  (5, 8, "int8", 0, -3), (9, 16, "int8", 1, 0)])
def test_fused_vnni_gemm_requant_bit_exact(k: int, n: int, a_dtype: str, zp: int, a_zp: int, tmp_path: Path) -> None:
    """The AVX-512 VNNI GEMM with a requantize epilogue (s8 A's flip and the A zero point folded into the
    constants; a K % 4 tail as one more step over A's last 4 columns, flipped like the rest, against B rows the
    main steps did not cover): one kernel, bit-exact; run only on a CPU with avx512vnni."""
    from qgnn_deploy.backends.tvm.targets import resolve_target

    g = gemm_requant_graph(k, n, a_dtype, zp=zp, a_zero_point=a_zp)
    names = _kernel_names(g, "vnni")
    assert [nm for nm in names if nm.startswith("qgnn_gemm")] == [f"qgnn_gemm_vnni_{k}_{-(-n // 16)}_{a_dtype}_rq_"
                                                                   f"{str(zp).replace('-', 'm')}_m127_127_int8_{n}"]
    assert "right_shift" not in str(build_module(g, BuildOptions(gemm_kind="vnni"))["main"])
    if "avx512vnni" not in resolve_target("x86_64").features:
        pytest.skip("no AVX-512 VNNI here")
    rng = np.random.default_rng(k)
    info = np.iinfo(a_dtype)

    def feed(rows: int) -> dict[str, np.ndarray]:
        return {"a": rng.integers(int(info.min), int(info.max) + 1, (rows, k)).astype(a_dtype)}

    fields = compile_to_dir(g, "x86_64", tmp_path, sample_feeds=feed(13))
    lib = tmp_path / fields["library"]
    for rows in (97, 8, 1):  # off the 8-row register block
        f = feed(rows)
        np.testing.assert_array_equal(run_library(lib, f), run(g, f)["rq32"], err_msg=f"rows={rows}")


@pytest.mark.parametrize("k,a_dtype,fp32", [(5, "int8", False), (7, "uint8", False), (9, "int8", False),
                                             (23, "int8", False), (21, "int8", True)])
def test_vnni_gemm_shifted_k_tail_bit_exact(k: int, a_dtype: str, fp32: bool, tmp_path: Path) -> None:
    """The unfused VNNI GEMM (int32 out: the product has a second reader) and the quantize-fused one with K % 4
    != 0: the tail step reads A's last 4 columns (never past a row, so 1-row inputs are safe) against a packed B
    step whose rows the main steps already covered are zero; s8 A's +128 is undone over all K rows.  Bit-exact
    with the interpreter at row counts off the 8-row block; run only on a CPU with avx512vnni."""
    from qgnn_deploy.backends.tvm.targets import resolve_target

    g = gemm_requant_graph(k, 16, a_dtype, fp32_input=fp32, extra_reader=not fp32)
    if "avx512vnni" not in resolve_target("x86_64").features:
        pytest.skip("no AVX-512 VNNI here")
    assert_gemm_library_exact(g, a_dtype, fp32, k + 100, tmp_path, (97, 8, 1))


@pytest.mark.parametrize("k,n,a_dtype,a_zp", [
    (128, 16, "uint8", 125),  # the uint8-input series model's first GEMM (x_q's zero point)
    (40, 7, "uint8", 3),  # padded columns
    (16, 20, "int8", -7),  # s8 A on the int16-widened kernel (avx2-pair's choice for s8): no flip to fold
])
def test_x86_gemm_folds_the_a_zero_point(k: int, n: int, a_dtype: str, a_zp: int, tmp_path: Path) -> None:
    """Below VNNI too an A zero point folds into the requantize epilogue's rounding constants: one GEMM kernel, no
    Relax subtract or requantize after it, bit-exact at 97, 8 and 1 rows, 1 and 2 threads (AVX2 tier)."""
    from qgnn_deploy.backends.tvm.targets import resolve_target

    g = gemm_requant_graph(k, n, a_dtype, zp=1, a_zero_point=a_zp)
    names = [nm for nm in _kernel_names(g, "avx2-pair") if nm.startswith("qgnn_")]
    assert len(names) == 1 and names[0].startswith("qgnn_gemm_avx2") and "_rq_" in names[0], names
    main = str(build_module(g, BuildOptions(gemm_kind="avx2-pair"))["main"])
    assert main.count("R.call_tir(") == 1 and "R.right_shift" not in main and "R.subtract" not in main, main
    if not set(resolve_target("x86-64-v3").features) <= set(resolve_target("x86_64").features):
        pytest.skip("x86-64-v3 does not run here")
    assert_rows_bit_exact(g, "x86-64-v3", tmp_path, np.random.default_rng(k))


@pytest.mark.parametrize("case,suffix", [("wide_multipliers", "_m64"), ("low_shifts", "_s64"),
                                         ("shift_32", ""), ("shift_63", "")])
def test_gemm_epilogue_arithmetic_variants_exact(case: str, suffix: str, tmp_path: Path) -> None:
    """The epilogue multiplies int32-range multipliers as int32 and, when every shift is in [32, 63], shifts the
    sum's high half by ``s - 32``, adds the zero point and clips in int32; a multiplier outside int32 (``_m64``) or a
    shift below 32 (``_s64``) keeps the int64 op.  Each variant bit-exact on this host at 97, 8 and 1 rows, 1 and 2
    threads (sums far beyond the clip bounds: ``test_x86_gemm_folds_the_a_zero_point``)."""
    g = gemm_requant_graph(40, 16, zp=2)
    rng = np.random.default_rng(3)
    if case == "wide_multipliers":
        g.initializers["m"] = rng.integers(1 << 33, 1 << 34, size=(1, 16)).astype(np.int64)
        g.initializers["sh"] = np.full((1, 16), 50, np.int8)
    elif case == "low_shifts":
        g.initializers["m"] = rng.integers(1 << 10, 1 << 14, size=(1, 16)).astype(np.int32)
        g.initializers["sh"] = rng.integers(20, 34, size=(1, 16)).astype(np.int8)
    else:  # the int32 path at its ends: >> 32 alone, and >> 63 (every code the zero point)
        g.initializers["m"] = rng.integers(-(1 << 31), 1 << 31, size=(1, 16)).astype(np.int32)
        g.initializers["sh"] = np.full((1, 16), int(case[-2:]), np.int8)
    g.validate()
    for kind in ("avx2-pair", "vnni"):
        plain = [nm for nm in _kernel_names(gemm_requant_graph(40, 16, zp=2), kind) if nm.startswith("qgnn_gemm")]
        names = [nm for nm in _kernel_names(g, kind) if nm.startswith("qgnn_gemm")]
        assert len(names) == 1 and names[0] == plain[0] + suffix, (kind, names, plain)
    assert_rows_bit_exact(g, "x86_64", tmp_path, np.random.default_rng(4))


def test_add_into_lut_steps_plan() -> None:
    """Fused when every reader of ``x + c`` is a lut_steps index (c a one-element integer constant)."""
    def plan(g: Graph) -> dict[str, tuple[str, int]]:
        p = FusionPlan()
        add_into_lut_steps(g, BuildOptions(), p)
        return p.add_into_lut_steps

    assert plan(lut_offset_graph(1, 40)) == {"xc": ("x", 1)}
    assert plan(lut_offset_graph(-7, 40, "int16", "int16")) == {"xc": ("x", -7)}
    assert plan(lut_offset_graph(1, 40, extra_reader=True)) == {}  # x + c has another reader
    assert plan(lut_offset_graph(1, 40, table_input=True)) == {}  # thresholds not constant
    g = lut_offset_graph(1, 40)
    assert "xc" in plan_fusion(g, BuildOptions())[0].skipped()


@pytest.mark.parametrize("c,span,x_dtype,c_dtype", [
    (1, 40, "int32", "int32"),  # GCN's degree + 1, dense count table
    (-40000, 40, "int32", "int32"),  # shifted thresholds leave int16
    (3, 1 << 20, "int32", "int32"),  # the binary search
    (-(1 << 31) + 5, 1 << 20, "int64", "int64"),  # thresholds shifted beyond int32: int64 compares
    (2, 40, "int16", "int8"),  # narrow index
])
def test_add_into_lut_steps_bit_exact(c: int, span: int, x_dtype: str, c_dtype: str, tmp_path: Path) -> None:
    g = lut_offset_graph(c, span, x_dtype, c_dtype)
    main = str(build_module(g, BuildOptions())["main"])
    assert main.count("R.add(") == 1 and main.count("qgnn_lut_steps") == 2, main  # y0 + y1 only; one table
    assert main.count("ir.GenericConst\"][0]") == 2, main
    t = np.array([-span // 2, -3, 0, 1, 5, span // 2], np.int64)
    info = np.iinfo(x_dtype)
    xs = np.concatenate([t - c + d for d in (-1, 0, 1)] + [[info.min - min(c, 0), info.max - max(c, 0), 0]])
    feeds = {"x": np.clip(xs, info.min, info.max).astype(x_dtype).reshape(-1, 1)}
    fields = compile_to_dir(g, "x86_64", tmp_path, sample_feeds=feeds)
    np.testing.assert_array_equal(run_library(tmp_path / fields["library"], feeds), run(g, feeds)["y"])


def shared_cast_graph() -> Graph:
    """cast(lut(x)) read on both sides of a hand-written kernel, once more widened: GCN's per-node edge factor
    (both layers' messages and requantize multipliers read it, with the GEMM and the edge kernel between)."""
    b = GraphBuilder()
    x = b.input("x", "int32", ("N", 1))
    h = b.input("h", "int8", ("N", 4))
    q = b.op("lut_steps", [x, b.const("t", np.array([1, 3, 8], np.int16)),
                           b.const("v", np.array([200, 90, 7, 1], np.uint8))], "q")
    q32 = b.op("cast", [q], "q32", dtype="int32")
    q64 = b.op("cast", [q32], "q64", dtype="int64")
    m = b.op("mul", [q64, b.const("m", np.array([[123456789]], np.int64))], "m")
    s = b.const("s", np.array([[30]], np.int8))
    h32 = b.op("cast", [h], "h32", dtype="int32")
    y1 = b.op("requantize", [b.op("mul", [h32, q32], "a1"), m, s], "y1", zero_point=0, qmin=-127, qmax=127,
              dtype="int8")
    r = b.op("lut_steps", [y1, b.const("t2", np.array([-50, 0, 50], np.int16)),  # a hand-written kernel between
                           b.const("v2", np.array([-90, -5, 5, 90], np.int16))], "r")
    r32 = b.op("cast", [r], "r32", dtype="int32")
    y = b.op("requantize", [b.op("mul", [r32, q32], "a2"), m, s], "y", zero_point=0, qmin=-127, qmax=127,
             dtype="int8")
    b.output(y, "int8", ("N", 4))
    g = b.graph
    g.validate()
    return g


def test_rematerialize_casts_alone_and_bit_exact(tmp_path: Path) -> None:
    """The shared casts get a copy per reader, so no kernel is a bare cast; the library stays exact."""
    from tvm import relax

    from qgnn_deploy.backends.tvm.compile import legalize_passes, rematerialize_casts
    from qgnn_deploy.backends.tvm.targets import resolve_target

    g = shared_cast_graph()
    mod = relax.transform.CanonicalizeBindings()(build_module(g, BuildOptions()))
    before = str(mod["main"]).count("R.astype(")
    after = str(rematerialize_casts()(mod)["main"]).count("R.astype(")
    assert after > before  # q32 and q64 read on both sides of the second lookup: copied per reader
    target = resolve_target("x86_64").tvm()
    with target:
        fused = tvm.transform.Sequential(legalize_passes(target))(build_module(g, BuildOptions()))
    kernels = [gv.name_hint for gv, f in fused.functions.items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert not [k for k in kernels if k.startswith("cast")], kernels  # each cast fused into its reader
    rng = np.random.default_rng(0)
    feeds = {"x": rng.integers(-2, 12, (57, 1)).astype(np.int32), "h": rng.integers(-128, 128, (57, 4)).astype(np.int8)}
    fields = compile_to_dir(g, "x86_64", tmp_path, sample_feeds=feeds)
    np.testing.assert_array_equal(run_library(tmp_path / fields["library"], feeds), run(g, feeds)["y"])


def test_narrowing_casts_stay_with_their_producer(tmp_path: Path) -> None:
    """LoRAP's score: requantize's int8 result read by a reduce_max and a subtract.  Its narrowing cast is not
    copied to the readers (each would load the int64 intermediate): the int8 tensor is written once, exactly."""
    from tvm import relax

    from qgnn_deploy.backends.tvm.compile import rematerialize_casts

    b = GraphBuilder()
    x = b.input("x", "int32", ("N", 8))
    sc = b.op("requantize", [x], "sc", multiplier=1 << 20, shift=24, zero_point=0, qmin=-127, qmax=127, dtype="int8")
    mx = b.op("reduce_max", [sc], "mx", axis=1, keepdims=True)
    d = b.op("sub", [b.op("cast", [sc], "sc32", dtype="int32"), b.op("cast", [mx], "mx32", dtype="int32")], "d")
    b.output(d, "int32", ("N", 8))
    g = b.graph
    mod = relax.transform.CanonicalizeBindings()(build_module(g, BuildOptions()))
    assert str(rematerialize_casts()(mod)["main"]).count("R.astype(") == str(mod["main"]).count("R.astype(")
    feeds = {"x": np.random.default_rng(1).integers(-(2**31), 2**31 - 1, (300, 8)).astype(np.int32)}
    fields = compile_to_dir(g, "x86_64", tmp_path, sample_feeds=feeds)
    np.testing.assert_array_equal(run_library(tmp_path / fields["library"], feeds), run(g, feeds)["d"])


def attention_graph(heads: int, c: int, *, self_term: bool = True, column: bool = False, zp: int = 3,
                    extra_reader: bool = False, requant: bool = False) -> Graph:
    """GAT's aggregation shape: ``scatter_add(gather(x - zp, src) * repeat_cols(alpha, c), dst)
    [+ (x - zp) * repeat_cols(alpha_self, c)]`` with per-edge alpha from the endpoints' scores (``column``: one
    head's ``[E, 1]`` coefficient, no repeat_cols); ``extra_reader``: the product is also read elsewhere;
    ``requant``: the sum is requantized to int8 (per-column multipliers, zero point 2)."""
    rng = np.random.default_rng(heads * 10 + c)
    b = GraphBuilder()
    w = heads * c
    xf = b.input("x", "float32", ("N", w))
    ei = b.input("edge_index", "int64", (2, "E"))
    src = b.op("take_row", [ei], "src", index=0)
    dst = b.op("take_row", [ei], "dst", index=1)
    x = b.op("quantize", [xf], "xq", scale=0.05, zero_point=0, qmin=-127, qmax=127, dtype="int8")
    score = b.op("matmul", [x, b.const("w_att", rng.integers(-20, 20, (w, heads)).astype(np.int8))], "score")
    score = b.op("clamp", [score], "score_c", lo=-300, hi=300)
    a_edge = b.op("add", [b.op("gather_rows", [score, src], "s_src"), b.op("gather_rows", [score, dst], "s_dst")],
                  "a_sum")
    a_edge = b.op("clamp", [a_edge], "a_edge", lo=0, hi=600)
    hc = b.op("sub", [b.op("cast", [x], "x32", dtype="int32"), b.const("zp", np.array(zp, np.int32))], "hc")
    coef = a_edge if column else b.op("repeat_cols", [a_edge], "a_edge_rep", repeats=c)
    msgs = b.op("mul", [b.op("gather_rows", [hc, src], "h_src"), coef], "msgs")
    agg = b.op("scatter_add", [msgs, dst, xf], "agg_e")
    if self_term:
        a_self = b.op("clamp", [score], "a_self", lo=0, hi=600)
        coef_s = a_self if column else b.op("repeat_cols", [a_self], "a_self_rep", repeats=c)
        agg = b.op("add", [agg, b.op("mul", [hc, coef_s], "msgs_self")], "agg")
    if extra_reader:
        agg = b.op("add", [agg, b.op("reduce_sum", [msgs], "msgs_sum", axis=0, keepdims=True)], "agg_x")
    if requant:
        m = b.const("agg_m", rng.integers(1 << 20, 1 << 24, (1, w)).astype(np.int32))
        agg = b.op("requantize", [agg, m, b.const("agg_s", np.full((1, w), 33, np.int8))], "agg_q", zero_point=2,
                   qmin=-100, qmax=127, dtype="int8")
    b.output(agg, "int8" if requant else "int32", ("N", w))
    g = b.graph
    g.meta.update({"task": "node", "max_in_degree": 1 << 12})
    g.validate()
    return g


def test_attention_into_scatter_plan() -> None:
    plan = FusionPlan()
    assert attention_into_scatter(attention_graph(4, 3), BuildOptions(), plan) == ["agg"]
    assert plan.attention_into_scatter["agg"] == Attend("agg_e", "h_src", "a_edge", 3, "a_self")
    assert {"msgs", "h_src", "a_edge_rep", "msgs_self", "a_self_rep", "agg_e"} == plan.attention_skipped
    plan = FusionPlan()
    assert attention_into_scatter(attention_graph(2, 4, self_term=False), BuildOptions(), plan) == ["agg_e"]
    assert plan.attention_into_scatter["agg_e"].self_alpha is None
    plan = FusionPlan()
    attention_into_scatter(attention_graph(1, 5, column=True), BuildOptions(), plan)
    assert plan.attention_into_scatter["agg"] == Attend("agg_e", "h_src", "a_edge", 5, "a_self")
    plan = FusionPlan()
    assert attention_into_scatter(attention_graph(4, 3, requant=True), BuildOptions(), plan) == ["agg_q"]
    assert plan.attention_into_scatter["agg_q"] == Attend("agg_e", "h_src", "a_edge", 3, "a_self", "agg_q")
    assert "agg" in plan.attention_skipped
    for g, opts in ((attention_graph(2, 4, extra_reader=True), BuildOptions()),  # the product is needed anyway
                    (attention_graph(2, 4), BuildOptions(fuse_gather_scatter=False))):
        plan = FusionPlan()
        assert attention_into_scatter(g, opts, plan) == [] and not plan.attention_skipped


@pytest.mark.parametrize("heads,c,self_term,column,requant", [(4, 3, True, False, False), (2, 8, False, False, True),
                                                              (1, 5, True, True, False), (8, 8, True, False, True)])
def test_attention_kernel_bit_exact(heads: int, c: int, self_term: bool, column: bool, requant: bool,
                                    tmp_path: Path) -> None:
    """One ``edge_attend`` kernel replaces the gather/mul/scatter (and the self term), bit-exact on the awkward
    graphs: unsorted (owned-edge blocks) and CSR-ordered destinations, isolated nodes, a hub, empty graphs."""
    g = attention_graph(heads, c, self_term=self_term, column=column, requant=requant)
    names = _kernel_names(g, "avx2")
    assert any(n.startswith("qgnn_attend") for n in names) and not any("scatter_add" in n for n in names)
    main = str(build_module(g, BuildOptions(gemm_kind="avx2"))["main"])
    assert "repeat" not in main and "right_shift" not in main  # no requantize outside the kernel either
    cases = awkward_graphs(heads * c, seed=5)
    fields = compile_to_dir(g, "x86_64", tmp_path, sample_feeds={"x": cases["random"][0],
                                                                 "edge_index": cases["random"][1]})
    lib = tmp_path / fields["library"]
    for name, (x, ei) in cases.items():
        feeds = {"x": x * 20, "edge_index": ei}
        np.testing.assert_array_equal(run_library(lib, feeds), run(g, feeds)[g.outputs[0].name], err_msg=name)


def gcn_aggregate_graph(w: int, *, self_term: bool = True, row_mult: bool = True, extra_reader: bool = False,
                        narrow: bool = True) -> Graph:
    """GCN's aggregation: ``requantize(scatter_add(gather(m, src), dst) [+ m], q * M, s)`` with the message
    ``m = int8 h * q`` (``q`` a per-node degree factor from a lookup; ``narrow`` False: an int32 message) and the
    multiplier per row (``row_mult``) or per column."""
    b = GraphBuilder()
    xf = b.input("x", "float32", ("N", w))
    ei = b.input("edge_index", "int64", (2, "E"))
    src = b.op("take_row", [ei], "src", index=0)
    dst = b.op("take_row", [ei], "dst", index=1)
    deg = b.op("add", [b.op("degree", [dst, xf], "deg"), b.const("one", np.array([1], np.int32))], "deg1")
    q = b.op("lut_steps", [deg, b.const("t", np.array([2, 3, 5, 9], np.int16)),
                           b.const("v", np.array([255, 180, 127, 90, 60], np.uint8))], "q")
    q32 = b.op("cast", [q], "q32", dtype="int32")
    h = b.op("quantize", [xf], "h", scale=0.05, zero_point=0, qmin=-127, qmax=127, dtype="int8")
    m = b.op("mul", [b.op("cast", [h], "h32", dtype="int32"), q32 if narrow else b.const("k", np.array([[3]],
                                                                                                        np.int32))],
             "m")
    agg = b.op("scatter_add", [b.op("gather_rows", [m, src], "m_src"), dst, xf], "agg_e")
    if self_term:
        agg = b.op("add", [agg, m], "agg")
    if row_mult:
        mult = b.op("mul", [b.op("cast", [q32], "q64", dtype="int64"), b.const("M", np.array([[1 << 22]], np.int32))],
                    "mult")
    else:
        mult = b.const("M", np.arange(1, w + 1, dtype=np.int32).reshape(1, w) << 14)
    y = b.op("requantize", [agg, mult, b.const("s", np.array([[38]], np.int8))], "y", zero_point=1, qmin=-127,
             qmax=127, dtype="int8")
    if extra_reader:
        y = b.op("add", [b.op("cast", [y], "y32", dtype="int32"), agg], "y2")
    b.output(y, "int32" if extra_reader else "int8", ("N", w))
    g = b.graph
    g.meta.update({"task": "node", "max_in_degree": 1 << 12})
    g.validate()
    return g


def test_requantize_into_scatter_plan() -> None:
    """Fused for the self term or none, per-row or per-column multipliers; not when the sum has another reader."""
    from qgnn_deploy.backends.tvm.fusion import ScatterRequant, requantize_into_scatter

    def planned(g: Graph, **kw: object) -> dict:
        plan = FusionPlan()
        gather_into_scatter(g, BuildOptions(**kw), plan)  # type: ignore[arg-type]
        requantize_into_scatter(g, BuildOptions(**kw), plan)  # type: ignore[arg-type]
        return plan.requantize_into_scatter

    assert planned(gcn_aggregate_graph(4)) == {"y": ScatterRequant("agg_e", "agg", True)}
    assert planned(gcn_aggregate_graph(4, self_term=False)) == {"y": ScatterRequant("agg_e", None, True)}
    assert planned(gcn_aggregate_graph(4, row_mult=False)) == {"y": ScatterRequant("agg_e", "agg", False)}
    assert planned(gcn_aggregate_graph(4, extra_reader=True)) == {}
    assert planned(gcn_aggregate_graph(4), fuse_gather_scatter=False) == {}
    assert "agg_e" in plan_fusion(gcn_aggregate_graph(4), BuildOptions())[0].skipped()


@pytest.mark.parametrize("w,self_term,row_mult,narrow", [(16, True, True, True), (7, True, False, False),
                                                          (5, False, True, True)])
def test_scatter_requant_kernel_bit_exact(w: int, self_term: bool, row_mult: bool, narrow: bool,
                                          tmp_path: Path) -> None:
    """One edge kernel writes the int8 codes (no Relax requantize, no int32 sums), bit-exact on the awkward
    graphs: unsorted (the plan's counting sort), CSR-ordered destinations, isolated nodes, a hub, empty graphs."""
    g = gcn_aggregate_graph(w, self_term=self_term, row_mult=row_mult, narrow=narrow)
    names = _kernel_names(g, "avx2")
    assert [n for n in names if "scatter" in n and "_rq_" in n], names
    main = str(build_module(g, BuildOptions(gemm_kind="avx2"))["main"])
    assert "right_shift" not in main
    cases = awkward_graphs(w, seed=3)
    fields = compile_to_dir(g, "x86_64", tmp_path, sample_feeds={"x": cases["random"][0],
                                                                 "edge_index": cases["random"][1]})
    lib = tmp_path / fields["library"]
    for name, (x, ei) in cases.items():
        for order in ("given", "sorted"):
            if order == "sorted":
                ei = np.ascontiguousarray(ei[:, np.argsort(ei[1], kind="stable")])
            feeds = {"x": x * 3, "edge_index": ei}
            np.testing.assert_array_equal(run_library(lib, feeds), run(g, feeds)["y"], err_msg=f"{name} {order}")


def lorap_tail_graph(h: int, *, k: int = 8, alpha_dtype: str = "uint8", alpha_zp: int = 0, agg_dtype: str = "int8",
                     agg_zp: int = 0, bias: bool = True, den: int = 4080, per_column: bool = False,
                     extra_reader: bool = False, dequantize: tuple[float, int] | None = None, int4: bool = False,
                     ) -> Graph:
    """LoRAP's tail as ``fold.prompts.emit_lorap`` emits it: ``requantize((int32(a) [- za]) * den + alpha @ P
    [+ bias])`` with ``alpha [N, k]``, ``a [N, h]`` 8-bit inputs and a constant int8 ``P`` (4-bit codes unpacked
    with ``int4``); ``dequantize`` = (scale, zero point): then the model's final ``dequantize`` to float32 logits."""
    rng = np.random.default_rng(h * 7 + k)
    b = GraphBuilder()
    alpha = b.input("alpha", alpha_dtype, ("N", k))
    a = b.input("a", agg_dtype, ("N", h))
    v = b.op("cast", [a], "a32", dtype="int32")
    if agg_zp:
        v = b.op("sub", [v, b.const("za", np.array([agg_zp], np.int32))], "a_centered")
    base = b.op("mul", [v, b.const("den", np.array([den], np.int32))], "a_x_den")
    prompt = b.op("matmul", [alpha, int8_matrix(b, "P", k, h, rng, int4)], "prompt", a_zero_point=alpha_zp)
    acc = b.op("add", [base, prompt], "prompted")
    if bias:
        acc = b.op("add", [acc, b.const("bias", rng.integers(-2**20, 2**20, (1, h)).astype(np.int32))], "biased")
    if per_column:
        mult = b.const("m", rng.integers(1 << 28, 1 << 30, size=(1, h)).astype(np.int32))
        sh = b.const("sh", rng.integers(36, 42, size=(1, h)).astype(np.int8))
        y = b.op("requantize", [acc, mult, sh], "y", zero_point=-3, qmin=-127, qmax=127, dtype="int8")
    else:
        y = b.op("requantize", [acc], "y", multiplier=1087746266, shift=40, zero_point=111, qmin=0, qmax=255,
                 dtype="uint8")
    if extra_reader:
        y = b.op("add", [b.op("cast", [y], "y32", dtype="int32"), prompt], "y2")
    if dequantize is not None:
        b.output(b.op("dequantize", [y], "logits", scale=dequantize[0], zero_point=dequantize[1]), "float32", ("N", h))
    else:
        b.output(y, "int32" if extra_reader else ("int8" if per_column else "uint8"), ("N", h))
    g = b.graph
    g.validate()
    return g


def test_prompt_into_gemm_plan() -> None:
    """LoRAP's tail fused on x86 (below AVX-512 VNNI for u8 alpha), with or without bias and zero points; not when a
    value in the chain has another reader, K < 4, or the sums could wrap int32 (then the constants do not fold
    exactly)."""
    from qgnn_deploy.backends.tvm.fusion import PromptTail, prompt_into_gemm

    def planned(g: Graph, kind: str = "vnni") -> dict:
        plan = FusionPlan()
        prompt_into_gemm(g, BuildOptions(gemm_kind=kind), plan)  # type: ignore[arg-type]
        return plan.prompt_into_gemm

    assert planned(lorap_tail_graph(16)) == {"y": PromptTail("alpha", 0, "P", "a", 0, 4080, "bias", (
        "prompt", "a32", "a_x_den", "prompted", "biased"))}
    assert planned(lorap_tail_graph(7, bias=False, agg_zp=5, alpha_zp=3, agg_dtype="uint8")) == {
        "y": PromptTail("alpha", 3, "P", "a", 5, 4080, None, ("prompt", "a_centered", "a_x_den", "prompted", "a32"))}
    assert planned(lorap_tail_graph(16), "avx2-pair") == planned(lorap_tail_graph(16))  # u8 alpha below VNNI
    assert planned(lorap_tail_graph(7, k=6, alpha_dtype="int8", alpha_zp=-7), "avx2") == {}  # s8 alpha: VNNI only
    assert planned(lorap_tail_graph(16), "sdot") == {}
    assert planned(lorap_tail_graph(16, extra_reader=True)) == {}
    assert planned(lorap_tail_graph(16, k=3)) == {}
    assert planned(lorap_tail_graph(16, den=1 << 24)) == {}  # den * a can wrap int32
    plan, _ = plan_fusion(lorap_tail_graph(7), BuildOptions(gemm_kind="vnni"))
    assert {"prompt", "a32", "a_x_den", "prompted", "biased"} <= plan.skipped()


def test_prompt_constants_are_computed_once_per_tail(monkeypatch: pytest.MonkeyPatch) -> None:
    """The plan carries the tail's epilogue constants; the builder emits from them without folding again."""
    from qgnn_deploy.backends.tvm import gemm
    from qgnn_deploy.backends.tvm.fusion import requant_epilogue_constants

    g = lorap_tail_graph(7, agg_zp=5, alpha_zp=3, agg_dtype="uint8")
    plan, _ = plan_fusion(g, BuildOptions(gemm_kind="vnni"))
    tail = plan.prompt_into_gemm["y"]
    rq = next(n for n in g.nodes if n.outputs[0] == "y")
    want = gemm.prompt_epilogue_constants(g, tail, lambda n: requant_epilogue_constants(g, rq, n), "uint8", "uint8")
    assert tail.epilogue is not None and want is not None and tail.epilogue.shape == (3, 16)
    np.testing.assert_array_equal(tail.epilogue, want)
    calls: list[str] = []
    fold = gemm.prompt_epilogue_constants
    monkeypatch.setattr(gemm, "prompt_epilogue_constants", lambda *a, **kw: calls.append("fold") or fold(*a, **kw))
    main = str(build_module(g, BuildOptions(gemm_kind="vnni"))["main"])
    assert calls == ["fold"] and main.count("R.call_tir(") == 1  # planning only; the tail still fused


@pytest.mark.parametrize("h,k,alpha_dtype,alpha_zp,agg_dtype,agg_zp,bias,per_col", [
    (16, 8, "uint8", 0, "int8", 0, True, False),  # layer 0 of the series model
    (7, 8, "uint8", 0, "int8", 0, True, False),  # layer 1: 7 real columns, no slice
    (16, 8, "uint8", 0, "uint8", 128, False, True),  # a's zero point folded, per-column constants
    (7, 6, "int8", -7, "int8", 3, True, True),  # s8 alpha (flip) with a zero point, a K % 4 tail
    (20, 12, "uint8", 2, "uint8", 0, False, False),  # two column blocks
])
def test_prompt_gemm_kernel_bit_exact(h: int, k: int, alpha_dtype: str, alpha_zp: int, agg_dtype: str, agg_zp: int,
                                      bias: bool, per_col: bool, tmp_path: Path) -> None:
    """One VNNI GEMM kernel with the ``den * a`` addend epilogue replaces the prompt GEMM and the elementwise
    requantize (no Relax right_shift, no slice); bit-exact at 1, 8 and 97 rows (run only with avx512vnni)."""
    from qgnn_deploy.backends.tvm.targets import resolve_target

    g = lorap_tail_graph(h, k=k, alpha_dtype=alpha_dtype, alpha_zp=alpha_zp, agg_dtype=agg_dtype, agg_zp=agg_zp,
                         bias=bias, per_column=per_col)
    names = [nm for nm in _kernel_names(g, "vnni") if nm.startswith("qgnn_")]
    assert len(names) == 1 and names[0].startswith(f"qgnn_gemm_vnni_{k}_{-(-h // 16)}_{alpha_dtype}_rq_") and \
        names[0].endswith(f"_{h}_add_4080_{agg_dtype}"), names
    main = str(build_module(g, BuildOptions(gemm_kind="vnni"))["main"])
    assert "right_shift" not in main and main.count("R.call_tir(") == 1
    assert "strided_slice" not in main.split("R.call_tir(")[1]  # only B's packing slices (constant-folded)
    if "avx512vnni" not in resolve_target("x86_64").features:
        pytest.skip("no AVX-512 VNNI here")
    rng = np.random.default_rng(h + k)

    def feed(rows: int) -> dict[str, np.ndarray]:
        ai, di = np.iinfo(alpha_dtype), np.iinfo(agg_dtype)
        return {"alpha": rng.integers(int(ai.min), int(ai.max) + 1, (rows, k)).astype(alpha_dtype),
                "a": rng.integers(int(di.min), int(di.max) + 1, (rows, h)).astype(agg_dtype)}

    fields = compile_to_dir(g, "x86_64", tmp_path, sample_feeds=feed(13))
    lib = tmp_path / fields["library"]
    for rows in (97, 8, 1):
        f = feed(rows)
        np.testing.assert_array_equal(run_library(lib, f), run(g, f)["y"], err_msg=f"rows={rows}")


@pytest.mark.parametrize("h,k,alpha_zp,agg_dtype,agg_zp,bias,per_col", [
    (16, 8, 0, "int8", 0, True, False),  # layer 0 of the series model
    (7, 8, 0, "int8", 0, True, False),  # layer 1: 7 real columns, no slice
    (16, 8, 0, "uint8", 128, False, True),  # a's zero point folded, per-column constants
    (20, 6, 2, "uint8", 0, False, False),  # two column blocks, an alpha zero point, K padded to the step
])
def test_x86_prompt_gemm_kernel_bit_exact(h: int, k: int, alpha_zp: int, agg_dtype: str, agg_zp: int, bias: bool,
                                          per_col: bool, tmp_path: Path) -> None:
    """Below VNNI (the AVX2 tier) LoRAP's tail is one GEMM kernel too, the ``den * a`` addend in its epilogue: no
    Relax right_shift; bit-exact at 97, 8 and 1 rows, 1 and 2 threads."""
    from qgnn_deploy.backends.tvm.targets import resolve_target

    g = lorap_tail_graph(h, k=k, alpha_zp=alpha_zp, agg_dtype=agg_dtype, agg_zp=agg_zp, bias=bias, per_column=per_col)
    names = [nm for nm in _kernel_names(g, "avx2-pair") if nm.startswith("qgnn_")]
    assert len(names) == 1 and names[0].startswith("qgnn_gemm_avx2") and \
        names[0].endswith(f"_{h}_add_4080_{agg_dtype}"), names
    main = str(build_module(g, BuildOptions(gemm_kind="avx2-pair"))["main"])
    assert "right_shift" not in main and main.count("R.call_tir(") == 1, main
    if not set(resolve_target("x86-64-v3").features) <= set(resolve_target("x86_64").features):
        pytest.skip("x86-64-v3 does not run here")
    assert_rows_bit_exact(g, "x86-64-v3", tmp_path, np.random.default_rng(h + k))


def _prompt_model(gpf_k: int | None, bits: int = 8, lorap: dict | None = None, epochs: int = 2,
                  classes: int = 4) -> Graph:
    """A tiny GCN with a GPF-plus prompt of ``gpf_k`` basis vectors and/or LoRAP (``lorap``: its config), trained
    and folded as ``test_fold.py`` does."""
    import torch

    from qgnn_deploy.data.datasets import make_synthetic_nodes
    from qgnn_deploy.fold import fold_model
    from qgnn_deploy.models.net import ModelConfig, default_bits
    from qgnn_deploy.train.trainer import TrainSettings, train

    torch.manual_seed(0)
    ds = make_synthetic_nodes(num_nodes=240, num_features=16, num_classes=classes)
    cfg = ModelConfig(arch="gcn", in_dim=ds.num_features, hidden=16, out_dim=ds.num_classes, framework="qat",
                      bits=default_bits(bits), task=ds.task, lorap=lorap,
                      gpf=None if gpf_k is None else {"mode": "gpf-plus", "k": gpf_k})
    return fold_model(train(cfg, ds, TrainSettings(epochs=epochs, progress=False)).model, max_in_degree=255)


def test_gpf_plus_tail_plan() -> None:
    """GPF-plus's ``requantize((x_q - zp) * 255 + alpha @ P)`` on the input features is LoRAP's tail shape (no bias):
    it fuses with K >= 4 basis vectors, for 8- and 4-bit inputs and the uint8-input contract; with K = 3 (the value
    ``test_fold.py`` trains with) it stays two kernels, since the VNNI epilogue needs K >= 4."""
    from qgnn_deploy.backends.tvm.fusion import PromptTail
    from qgnn_deploy.ir.passes import prequantized_copy

    def planned(g: Graph) -> dict[str, PromptTail]:
        return plan_fusion(g, BuildOptions(gemm_kind="vnni"))[0].prompt_into_gemm

    g = _prompt_model(4)
    tail = planned(g)["gpf_out"]
    assert (tail.alpha, tail.basis, tail.agg, tail.den, tail.bias) == ("gpf_alpha", "gpf_basis", "x_q", 255, None)
    assert set(tail.inner) == {"gpf_prompt", "gpf_x_i32", "gpf_x_x255", "gpf_prompted"} | (
        {"gpf_x_centered"} if tail.agg_zero_point else set())
    assert planned(prequantized_copy(g)) == {"gpf_out": tail}
    assert list(planned(_prompt_model(4, bits=4))) == ["gpf_out"]
    assert planned(_prompt_model(3)) == {}


def test_gpf_plus_model_bit_exact_through_tvm(tmp_path: Path) -> None:
    """A whole GPF-plus model built for the host: its prompt tail is one VNNI GEMM kernel (with avx512vnni) and
    the library equals the interpreter bit for bit on the training graph and the awkward graphs, at 1 and 2
    threads."""
    g = _prompt_model(4)
    names = _kernel_names(g, "vnni")
    assert [nm for nm in names if nm.startswith("qgnn_gemm_vnni_4_1_uint8_rq_") and nm.endswith("_add_255_uint8")]
    assert_model_bit_exact(g, tmp_path, 3)


def test_widen_gathered_rows_plan_and_model_bit_exact(tmp_path: Path) -> None:
    """A GCN+LoRAP with 7 classes: its layer-1 message (GEMM-requantized, gathered by the fused edge kernel) is
    written 8 columns wide and gathered as 8-byte rows (``kernels.edge_reduce(x_width=8)``); with 4 classes nothing
    is widened, nor without the GEMM epilogue (portable kernels).  The widened library equals the interpreter bit
    for bit on the training graph and the awkward graphs (sorted and unsorted edges) at 1 and 2 threads."""
    lorap = {"k": 8, "rank": 2}
    g = _prompt_model(None, lorap=lorap, classes=7)
    assert plan_fusion(g, BuildOptions(gemm_kind="vnni"))[0].widen_gathered_rows == {"layer1_message": (7, 8)}
    assert plan_fusion(g, BuildOptions(gemm_kind="avx2"))[0].widen_gathered_rows == {"layer1_message": (7, 8)}
    assert plan_fusion(g, BuildOptions(fast_matmul=False))[0].widen_gathered_rows == {}
    assert plan_fusion(_prompt_model(None, lorap=lorap), BuildOptions(gemm_kind="vnni"))[0].widen_gathered_rows == {}
    names = _kernel_names(g, "vnni")
    assert [nm for nm in names if nm.startswith("qgnn_gather_scatter_add_7_") and "_x8_" in nm], names
    assert_model_bit_exact(g, tmp_path / "host", 5)
    from qgnn_deploy.backends.tvm.targets import resolve_target

    if set(resolve_target("x86-64-v3").features) <= set(resolve_target("x86_64").features):
        assert_model_bit_exact(g, tmp_path / "avx2", 5, "x86-64-v3")  # the AVX2 GEMM writes the padding column


def assert_model_bit_exact(g: Graph, tmp_path: Path, seed: int, target: str = "x86_64") -> None:
    """Build a model trained on ``_prompt_model``'s data for ``target`` (the host by default) and compare its
    library with the interpreter (output bit patterns) on the training graph and the awkward graphs, at 1 and 2
    threads."""
    from qgnn_deploy.backends.tvm.targets import resolve_target
    from qgnn_deploy.data.datasets import make_synthetic_nodes

    ds = make_synthetic_nodes(num_nodes=240, num_features=16)
    fields = compile_to_dir(g, target, tmp_path, sample_feeds={"x": ds.data.x.numpy(),
                                                               "edge_index": ds.data.edge_index.numpy()})
    if target == "x86_64" and "avx512vnni" in resolve_target("x86_64").features:
        assert fields["kernels"]["gemm_used"] == ["vnni"]
    lib = tmp_path / fields["library"]
    cases = {"train": (ds.data.x.numpy(), ds.data.edge_index.numpy()), **awkward_graphs(16, seed=seed)}
    for name, (x, ei) in cases.items():
        feeds = {"x": x, "edge_index": ei}
        ref = run(g, feeds)[g.outputs[0].name]
        for threads in (1, 2):
            got = run_library(lib, feeds, num_threads=threads)
            assert got.dtype == ref.dtype
            bits = f"u{ref.dtype.itemsize}"
            np.testing.assert_array_equal(got.view(bits), ref.view(bits), err_msg=f"{name}, {threads} threads")


SERIES_LOGITS = (0.025452157482504845, 118)  # the series model's final dequantize (scale, zero point)


def test_dequantize_into_gemm_plan() -> None:
    """The final dequantize joins a GEMM epilogue that computes its requantize (prompt tail or plain GEMM), not
    when nothing fused the requantize, the codes have another reader, or the zero point could wrap int32."""
    from qgnn_deploy.backends.tvm.fusion import dequantize_into_gemm, prompt_into_gemm

    def planned(g: Graph, kind: str) -> dict[str, str]:
        plan = FusionPlan()
        for fn in (requantize_into_gemm, prompt_into_gemm, dequantize_into_gemm):
            fn(g, BuildOptions(gemm_kind=kind), plan)  # type: ignore[arg-type]
        return plan.dequantize_into_gemm

    tail = lorap_tail_graph(7, dequantize=SERIES_LOGITS)
    assert planned(tail, "vnni") == planned(tail, "avx2") == {"logits": "y"} and planned(tail, "generic") == {}
    assert planned(gemm_requant_graph(40, 7, dequantize=True), "avx2") == {"logits": "rq"}
    assert planned(gemm_requant_graph(40, 7, dequantize=True), "vnni") == {"logits": "rq"}
    assert planned(gemm_requant_graph(40, 7, dequantize=True), "generic") == {}
    assert planned(lorap_tail_graph(7, dequantize=(0.5, 1 << 30)), "vnni") == {}
    both = lorap_tail_graph(7, dequantize=SERIES_LOGITS)
    both.outputs.append(ValueInfo("y", "uint8", ("N", 7)))  # the codes are an output too
    assert planned(both, "vnni") == {}
    plan, _ = plan_fusion(tail, BuildOptions(gemm_kind="vnni"))
    assert "y" in plan.skipped() and "logits" not in plan.skipped()


@pytest.mark.parametrize("case,target", [
    ("prompt7", "x86_64"),  # the series model's layer 1 + logits: 7 real columns, u8 codes
    ("prompt16_int8", "x86_64"),  # s8 codes, per-column constants, a negative zero point
    ("gemm7", "x86_64"),  # requantize_into_gemm on VNNI, padded columns
    ("gemm7", "x86-64-v3"),  # requantize_into_gemm on AVX2 (the shared skeleton epilogue)
    ("prompt7", "x86-64-v3"),  # prompt_into_gemm on AVX2: addend and float32 logits in one epilogue
])
def test_dequantize_gemm_epilogue_bit_exact(case: str, target: str, tmp_path: Path) -> None:
    """The GEMM kernel writes the float32 logits itself (no Relax multiply, no separate kernel), bit for bit
    the interpreter's at 97, 8 and 1 rows and at 1 and 2 threads."""
    from qgnn_deploy.backends.tvm.targets import resolve_target

    if case.startswith("prompt"):
        h, int8 = int(case[6:8]), case.endswith("int8")
        g = lorap_tail_graph(h, per_column=int8, dequantize=(0.0371, -3) if int8 else SERIES_LOGITS)
    else:
        h = 7
        g = gemm_requant_graph(40, h, zp=5, dequantize=True)
    kind = "vnni" if target == "x86_64" else "avx2-pair"
    names = [nm for nm in _kernel_names(g, kind) if nm.startswith("qgnn_")]
    assert len(names) == 1 and "_dq_" in names[0], names
    main = str(build_module(g, BuildOptions(gemm_kind=kind))["main"])
    assert "R.multiply" not in main and main.count("R.call_tir(") == 1, main
    if not set(resolve_target(target).features) <= set(resolve_target("x86_64").features) or \
            (kind == "vnni" and "avx512vnni" not in resolve_target("x86_64").features):
        pytest.skip(f"{target} does not run here")
    assert_rows_bit_exact(g, target, tmp_path, np.random.default_rng(h), np.float32)


def assert_rows_bit_exact(g: Graph, target: str, tmp_path: Path, rng: np.random.Generator,
                          dtype: type | None = None) -> None:
    """Build ``g`` (integer ``[rows, width]`` inputs) for ``target`` and compare its output (of ``dtype`` when given)
    with the interpreter's, bit pattern for bit pattern, at 97, 8 and 1 rows, 1 and 2 threads."""

    def feed(rows: int) -> dict[str, np.ndarray]:
        out = {}
        for vi in g.inputs:
            info = np.iinfo(vi.dtype)
            out[vi.name] = rng.integers(int(info.min), int(info.max) + 1, (rows, int(vi.shape[1]))).astype(vi.dtype)
        return out

    fields = compile_to_dir(g, target, tmp_path, sample_feeds=feed(13))
    lib = tmp_path / fields["library"]
    for rows in (97, 8, 1):
        f = feed(rows)
        ref = run(g, f)[g.outputs[0].name]
        assert dtype is None or ref.dtype == dtype
        for threads in (1, 2):
            got = run_library(lib, f, num_threads=threads)
            assert got.dtype == ref.dtype
            bits = f"u{ref.dtype.itemsize}"
            np.testing.assert_array_equal(got.view(bits), ref.view(bits), err_msg=f"rows={rows} t={threads}")


def test_dequantize_after_unfusable_gemm_requant_falls_back() -> None:
    """When the planned GEMM cannot take the requantize after all (AVX2 ``ubsw`` with s8 A needs its flip correction
    first), the GEMM, the requantize and the dequantize run as before, bit-exact."""
    import dataclasses

    from tvm import relax

    from qgnn_deploy.backends.tvm.compile import build_options, pipeline
    from qgnn_deploy.backends.tvm.targets import resolve_target

    g = gemm_requant_graph(16, 7, "int8", zp=-2, dequantize=True)
    plan, _ = plan_fusion(g, BuildOptions(gemm_kind="avx2-ubsw"))
    assert plan.dequantize_into_gemm == {"logits": "rq"}
    preset = resolve_target("x86_64")
    mod = build_module(g, dataclasses.replace(build_options(preset), gemm_kind="avx2-ubsw"))
    names = [gv.name_hint for gv, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert not [nm for nm in names if "_rq_" in nm or "_dq_" in nm] and "R.multiply" in str(mod["main"])
    vm = relax.VirtualMachine(tvm.compile(mod, target=preset.tvm(), relax_pipeline=pipeline(preset)), tvm.cpu())
    a = np.random.default_rng(0).integers(-128, 128, (37, 16)).astype(np.int8)
    got = vm["main"](tvm.runtime.tensor(a)).numpy()
    np.testing.assert_array_equal(got.view(np.uint32), run(g, {"a": a})["logits"].view(np.uint32))


def test_4bit_constants_fuse_like_8bit() -> None:
    """A 4-bit weight or LoRAP basis (``unpack_int4`` of a packed constant) is a constant int8 matrix to every
    matcher (``gemm.int8_constant``): the prompt tail, its final dequantize and the VNNI requantize epilogues with
    s8 A or an A zero point fuse as for 8-bit codes; not when the packed bytes are not a constant."""
    from qgnn_deploy.backends.tvm.fusion import dequantize_into_gemm, prompt_into_gemm
    from qgnn_deploy.backends.tvm.gemm import int8_constant

    def planned(g: Graph) -> FusionPlan:
        plan = FusionPlan()
        for fn in (requantize_into_gemm, prompt_into_gemm, dequantize_into_gemm):
            fn(g, BuildOptions(gemm_kind="vnni"), plan)  # type: ignore[arg-type]
        return plan

    g4 = lorap_tail_graph(7, int4=True, dequantize=SERIES_LOGITS)
    plan = planned(g4)
    assert plan.prompt_into_gemm == planned(lorap_tail_graph(7, dequantize=SERIES_LOGITS)).prompt_into_gemm and \
        plan.dequantize_into_gemm == {"logits": "y"}
    p = int8_constant(g4, "P")
    assert p is not None and p.dtype == np.int8 and p.shape == (8, 7) and -8 <= p.min() and p.max() <= 7
    zeros = {"alpha": np.zeros((1, 8), np.uint8), "a": np.zeros((1, 7), np.int8)}
    np.testing.assert_array_equal(p, run(g4, zeros, keep_all=True)["P"])  # the values the graph computes
    for a_dtype, a_zp in (("uint8", 0), ("int8", 0), ("uint8", 3)):  # s8 flip and A zero point fold the weight
        assert planned(gemm_requant_graph(40, 16, a_dtype, a_zero_point=a_zp, int4=True)).requantize_into_gemm == \
            {"rq": "acc"}
    loose = lorap_tail_graph(7, int4=True)
    packed = loose.initializers.pop("P_packed")
    loose.inputs.append(ValueInfo("P_packed", "uint8", (packed.size,)))  # unpacked at run time: not a constant
    assert int8_constant(loose, "P") is None and planned(loose).prompt_into_gemm == {}


@pytest.mark.parametrize("case,target,kind", [
    ("prompt_dq", "x86_64", "vnni"),  # LoRAP's tail writing the float32 logits
    ("gemm_s8_zp", "x86_64", "vnni"),  # s8 A and an A zero point: offsets folded from the unpacked weight
    ("gemm", "x86-64-v3", "avx2-pair"),  # the pair plan reads the (now constant) weight's values
])
def test_4bit_gemm_epilogues_bit_exact(case: str, target: str, kind: str, tmp_path: Path) -> None:
    """With 4-bit constants each GEMM and its requantize and dequantize are one kernel (the same kernel family as
    for 8-bit codes), bit-exact at 97, 8 and 1 rows, 1 and 2 threads (where the target runs here)."""
    from qgnn_deploy.backends.tvm.targets import resolve_target

    if case == "prompt_dq":
        g = lorap_tail_graph(7, int4=True, dequantize=SERIES_LOGITS)
    else:
        g = gemm_requant_graph(40, 7, "int8" if case.endswith("zp") else "uint8", zp=5,
                               a_zero_point=-3 if case.endswith("zp") else 0, dequantize=True, int4=True)
    names = [nm for nm in _kernel_names(g, kind) if nm.startswith("qgnn_")]
    assert len(names) == 1 and names[0].startswith(f"qgnn_gemm_{kind.replace('-', '_')}_") and "_dq_" in names[0], \
        names
    main = str(build_module(g, BuildOptions(gemm_kind=kind))["main"])
    assert main.count("R.call_tir(") == 1 and "R.right_shift" not in main, main
    if not set(resolve_target(target).features) <= set(resolve_target("x86_64").features) or \
            (kind == "vnni" and "avx512vnni" not in resolve_target("x86_64").features):
        pytest.skip(f"{target} does not run here")
    assert_rows_bit_exact(g, target, tmp_path, np.random.default_rng(7), np.float32)


def test_4bit_prompt_model_fuses_like_8bit_and_is_bit_exact(tmp_path: Path) -> None:
    """A 4-bit GCN with GPF-plus and LoRAP (bases and weights packed) gets the fusion plan of its 8-bit twin (both
    prompt tails and the final dequantize in GEMM epilogues), and its library equals the interpreter bit for bit on
    the training graph and the awkward graphs at 1 and 2 threads."""
    lorap = {"k": 4, "rank": 2}
    g = _prompt_model(4, bits=4, lorap=lorap, epochs=6)
    assert {n.outputs[0] for n in g.nodes if n.op == "unpack_int4"} >= {"layer0_lorap_basis", "layer1_lorap_basis"}
    plan, report = plan_fusion(g, BuildOptions(gemm_kind="vnni"))
    assert report == plan_fusion(_prompt_model(4, lorap=lorap, epochs=6), BuildOptions(gemm_kind="vnni"))[1]
    assert set(plan.prompt_into_gemm) == {"gpf_out", "layer1_input", "output"} and plan.dequantize_into_gemm
    assert_model_bit_exact(g, tmp_path, 5)
