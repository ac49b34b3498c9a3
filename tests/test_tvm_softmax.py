"""LoRAP's softmax weights as one AVX-512 VBMI kernel (``backends/tvm/softmax.py``, ``fusion.softmax_into_vbmi``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qgnn_deploy.ir.graph import Graph, GraphBuilder
from qgnn_deploy.ir.interpreter import run

tvm = pytest.importorskip("tvm")

from qgnn_deploy.backends.tvm import compile_to_dir, run_library  # noqa: E402
from qgnn_deploy.backends.tvm import softmax as sm  # noqa: E402
from qgnn_deploy.backends.tvm.fusion import FusionPlan, plan_fusion, softmax_into_vbmi  # noqa: E402
from qgnn_deploy.backends.tvm.relax_builder import BuildOptions, build_module  # noqa: E402

INNER = ("z_max", "z32", "zmax32", "d", "e_u8", "e", "tot", "e_c1", "num", "den", "alpha32")


def exp_table(length: int, step: float = 0.05, top: int = 255) -> np.ndarray:
    """``round(top * exp(step * (i - (length - 1))))``: fold's exp table shape, exp(0) = ``top`` last."""
    return np.round(top * np.exp(step * (np.arange(length) - (length - 1)))).astype(np.uint8)


def softmax_graph(k: int, *, table: np.ndarray | None = None, offset: int | None = None, c1: int = 510,
                  c2: int = 2, e_output: bool = False) -> Graph:
    """``alpha = uint8(floor((c1 * e + tot) / (c2 * tot)))`` over int8 scores ``z [N, k]`` exactly as
    ``fold.prompts.emit_softmax_alpha`` emits it; ``e_output``: the exp codes are a second graph output."""
    table = exp_table(235) if table is None else table
    offset = table.shape[0] - 1 if offset is None else offset
    b = GraphBuilder()
    z = b.input("z", "int8", ("N", k))
    zmax = b.op("reduce_max", [z], "z_max", axis=1, keepdims=True)
    d = b.op("sub", [b.op("cast", [z], "z32", dtype="int32"), b.op("cast", [zmax], "zmax32", dtype="int32")], "d")
    e_u = b.op("lut", [d, b.const("exp_table", table)], "e_u8", offset=offset)
    e = b.op("cast", [e_u], "e", dtype="int32")
    tot = b.op("reduce_sum", [e], "tot", axis=1, keepdims=True)
    num = b.op("add", [b.op("mul", [e, b.const("c1", np.array(c1, np.int32))], "e_c1"), tot], "num")
    den = b.op("mul", [tot, b.const("c2", np.array(c2, np.int32))], "den")
    alpha = b.op("cast", [b.op("div_floor", [num, den], "alpha32")], "alpha", dtype="uint8")
    b.output(alpha, "uint8", ("N", k))
    if e_output:
        b.output(e, "int32", ("N", k))
    g = b.graph
    g.validate()
    return g


def _planned(g: Graph, vbmi: bool = True) -> dict:
    plan = FusionPlan()
    softmax_into_vbmi(g, BuildOptions(vbmi=vbmi), plan)  # type: ignore[arg-type]
    return plan.softmax_into_vbmi


def test_softmax_into_vbmi_plan() -> None:
    """The chain is planned with VBMI, for K in softmax.KS, a uint8 table with a positive entry at the row maximum
    and constants the float32 division is exact for; not when a value inside has another reader."""
    chain = _planned(softmax_graph(8))["alpha"]
    assert (chain.scores, chain.k, chain.c1, chain.c2, chain.inner) == ("z", 8, 510, 2, INNER)
    np.testing.assert_array_equal(chain.table.view(np.uint8)[:3], exp_table(235)[[234, 233, 232]])
    assert chain.table.view(np.uint8)[255] == exp_table(235)[0]  # t beyond the table: its clamped first entry
    assert set(_planned(softmax_graph(16))) == {"alpha"} and set(_planned(softmax_graph(4))) == {"alpha"}
    assert _planned(softmax_graph(8), vbmi=False) == {}
    assert _planned(softmax_graph(6)) == {} and _planned(softmax_graph(2)) == {}
    assert _planned(softmax_graph(8, e_output=True)) == {}
    zero_top = exp_table(235)
    zero_top[-1] = 0
    assert _planned(softmax_graph(8, table=zero_top)) == {}  # tot could be 0
    assert _planned(softmax_graph(8, table=exp_table(235).astype(np.uint16))) == {}
    assert _planned(softmax_graph(64, c1=1 << 17)) == {}  # num + den past 2^24: float32 not exact
    plan, _ = plan_fusion(softmax_graph(8), BuildOptions(vbmi=True))
    assert set(INNER) <= plan.skipped()
    main = str(build_module(softmax_graph(8), BuildOptions(vbmi=True))["main"])
    assert main.count("R.call_tir(") == 1 and "qgnn_softmax_vbmi_8_510_2" in main


def test_offset_past_the_table_reads_its_last_entry() -> None:
    """offset 240 on a 235-entry table: positions past the end clamp to the last entry, as the IR's lut does."""
    rtab = _planned(softmax_graph(8, offset=240))["alpha"].table.view(np.uint8)
    table = exp_table(235)
    np.testing.assert_array_equal(rtab, table[np.clip(240 - np.arange(256), 0, 234)])
    assert (rtab[:7] == 255).all() and rtab[7] == table[233]


def _scores(rows: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """Random int8 scores with the awkward rows: ties, all equal, the extremes, spreads past the table."""
    z = rng.integers(-128, 128, (rows, k)).astype(np.int8)
    z[::3] = rng.integers(-2, 3, (len(z[::3]), k))
    if rows > 4:
        z[1], z[2], z[3] = 127, -128, -128
        z[3, -1] = 127
    return z


@pytest.mark.parametrize("k,rows", [(8, 1000), (8, 7), (4, 97), (16, 1000), (64, 33)])
def test_softmax_kernel_bit_exact(k: int, rows: int, tmp_path: Path) -> None:
    """The kernel against the interpreter: whole 64-code steps (in parallel parts above the serial threshold) and
    the scalar tail rows, 1 and 2 threads, at ``rows`` and at 1 row (run only with avx512vbmi)."""
    from qgnn_deploy.backends.tvm.targets import resolve_target

    if "avx512vbmi" not in resolve_target("x86_64").features:
        pytest.skip("no AVX-512 VBMI here")
    g = softmax_graph(k, table=exp_table(200, step=0.03))
    rng = np.random.default_rng(k * 1000 + rows)
    fields = compile_to_dir(g, "x86_64", tmp_path, sample_feeds={"z": _scores(13, k, rng)})
    lib = tmp_path / fields["library"]
    assert "softmax" in fields["kernels"], fields["kernels"]
    for n in (rows, 1):
        feeds = {"z": _scores(n, k, rng)}
        for threads in (1, 2):
            np.testing.assert_array_equal(run_library(lib, feeds, num_threads=threads), run(g, feeds)["alpha"],
                                          err_msg=f"rows={n} threads={threads}")


def test_patterns_rotate_inside_groups() -> None:
    """Every byte rotation stays inside its K-byte group; the last rows spread each dword to its 4 codes."""
    p = sm.patterns(8)
    assert p.shape == (3 + 1 + 4, 64)
    for r, step in enumerate((1, 2, 4)):
        idx = p[r].view(np.uint8).astype(int)
        assert all(i // 8 == b // 8 and i % 8 == (b + step) % 8 for b, i in enumerate(idx))
    np.testing.assert_array_equal(p[3].view(np.int32), [d ^ 1 for d in range(16)])
    np.testing.assert_array_equal(p[5].view(np.int32), [4 + lane // 4 for lane in range(16)])


def test_build_options_take_vbmi_from_the_target() -> None:
    """Only an x86 target whose features include avx512vbmi plans the kernel: a JSON target with ``+avx512vbmi``
    does, the ``x86-64-v4-vnni`` preset (VNNI without VBMI, as Cascade Lake) and AArch64 presets do not."""
    from qgnn_deploy.backends.tvm.compile import build_options
    from qgnn_deploy.backends.tvm.targets import resolve_target

    json_vbmi = '{"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "x86-64-v4", "mattr": ["+avx512vbmi"]}'
    assert build_options(resolve_target(json_vbmi)).vbmi
    assert not build_options(resolve_target("x86-64-v4-vnni")).vbmi
    assert not build_options(resolve_target("cortex-a76")).vbmi
