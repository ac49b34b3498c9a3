"""The ``avx2-pair`` x86 GEMM: pair-bounded ``vpmaddubsw`` weights plus residual quads, exact for any u8/s8 A."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qgnn_deploy.ir.graph import GraphBuilder
from qgnn_deploy.ir.interpreter import run

tvm = pytest.importorskip("tvm")

from qgnn_deploy.backends.tvm import gemm_x86  # noqa: E402
from qgnn_deploy.backends.tvm.gemm_x86 import LANES, PAIR_BOUND, pair_pack  # noqa: E402


def _weights(k: int, n: int, seed: int, uniform: bool) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if not uniform:
        return np.clip(rng.normal(0.0, 30.0, (k, n)).round(), -128, 127).astype(np.int8)
    w = rng.integers(-128, 128, (k, n)).astype(np.int8)
    w[: min(4, k)], w[4:8] = -128, 127  # the extremes: adjacent pairs of -128 / 127 in every column
    w[8:12:2], w[9:12:2] = -128, 127
    return w


def _unpack(packed: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(main, residual, permutation) back in [Kp, N] row order of the permuted K axis."""
    _, nb, nq, _, _ = packed.shape
    main = packed[0].astype(np.int64).transpose(1, 3, 0, 2).reshape(4 * nq, nb * LANES)
    resid = np.zeros_like(main)
    for j in range(nb):
        for e in range(nq):
            q = int(packed[3, j, e, 0].view("<i4")[0])
            resid[4 * q:4 * q + 4, j * LANES:(j + 1) * LANES] += packed[2, j, e].astype(np.int64).T
    perm = np.arange(4 * nq)
    for c in range(k // 16):
        perm[16 * c:16 * c + 16] = 16 * c + packed[1, 0, c, :4].reshape(16).astype(np.int64)
    return main, resid, perm


@pytest.mark.parametrize(("k", "n", "uniform"), [(23, 16, True), (41, 32, True), (64, 16, False), (1433, 16, False)])
def test_pair_pack_is_exact_and_bounded(k: int, n: int, uniform: bool) -> None:
    w = _weights(k, n, k + n, uniform)
    packed, r = pair_pack(w)
    main, resid, perm = _unpack(packed, k)
    assert sorted(perm.tolist()) == list(range(len(perm)))
    wide = np.zeros((len(perm), n), np.int64)
    wide[:k] = w
    np.testing.assert_array_equal(main + resid, wide[perm])  # b == main + residual, K permuted per 16 rows
    for plane in (main, resid):  # every (pair, column) keeps 255 * (positive / negative part sum) in int16
        pairs = plane.reshape(-1, 2, n)
        assert np.maximum(pairs, 0).sum(1).max() <= PAIR_BOUND and np.maximum(-pairs, 0).sum(1).max() <= PAIR_BOUND
    assert 0 <= r <= packed.shape[2]
    assert (packed[2][:, r:] == 0).all()  # entries past R are zero weights
    if uniform:
        assert r > 0


def test_pair_choice_from_the_weights() -> None:
    """QAT-like weights (Cora's first layer: 4 residual quads of 359) keep avx2-pair; uniform int8 weights, whose
    residual would cost more than vpmaddubsw saves, fall back to the int16 kernel."""
    qat = _weights(1433, 16, 0, False)
    plan = gemm_x86.pair_plan(qat)
    assert plan is not None and plan[1] <= gemm_x86.PAIR_RESIDUAL_MAX * 359
    assert gemm_x86.pair_plan(qat.copy())[0] is plan[0]  # the search runs once per weight (cached by its bytes)
    assert gemm_x86.pair_plan(_weights(1433, 16, 0, True)) is None
    packed, r = pair_pack(_weights(1433, 16, 0, True), gemm_x86.PAIR_RESIDUAL_MAX)  # stops early: over the limit
    assert packed is None and r > gemm_x86.PAIR_RESIDUAL_MAX * 359
    assert gemm_x86.pair_plan(None) is None  # a weight that is not a constant


def _avx2() -> bool:
    text = Path("/proc/cpuinfo").read_text()
    return "avx2" in next((ln for ln in text.splitlines() if ln.startswith("flags")), "").split()


@pytest.mark.skipif(not _avx2(), reason="needs AVX2")
@pytest.mark.parametrize("a_dtype", ["uint8", "int8"])
def test_pair_kernel_bit_exact_at_the_extremes(a_dtype: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Forced avx2-pair (no fallback) on uniform weights with -128 / 127 pairs, against int64 NumPy and the
    interpreter: A rows all max / all min / random, K with and without a tail, one and two column blocks,
    row counts around the 6-row block and the 16-block task."""
    from tvm import relax

    from qgnn_deploy.backends.tvm.compile import build_options, pipeline
    from qgnn_deploy.backends.tvm.relax_builder import build_module
    from qgnn_deploy.backends.tvm.targets import resolve_target

    monkeypatch.setattr(gemm_x86, "PAIR_RESIDUAL_MAX", 1.0)
    info = np.iinfo(a_dtype)
    preset = resolve_target("x86-64-v3")
    for k, n in ((23, 16), (41, 20), (64, 32)):
        w = _weights(k, n, k, True)
        assert pair_pack(np.pad(w, ((0, 0), (0, -n % LANES))))[1] > 0
        b = GraphBuilder()
        a = b.input("a", a_dtype, ("N", k))
        b.output(b.op("matmul", [a, b.const("w", w)], "y"), "int32", ("N", n))
        opts = build_options(preset)
        opts.gemm_kind = "avx2-pair"
        mod = build_module(b.graph, opts)
        # the pair kernel itself, also when N needs zero columns (no silent fallback to madd16)
        assert any("gemm_avx2_pair" in gv.name_hint for gv in mod.functions), (k, n)
        vm = relax.VirtualMachine(tvm.compile(mod, target=preset.tvm(), relax_pipeline=pipeline(preset)), tvm.cpu())
        for m in (1, 5, 6, 7, 97, 200):
            feeds = np.random.default_rng(m).integers(info.min, info.max + 1, (m, k)).astype(a_dtype)
            feeds[0] = info.max
            if m > 1:
                feeds[1] = info.min
            got = vm["main"](tvm.runtime.tensor(feeds)).numpy()
            exact = feeds.astype(np.int64) @ w.astype(np.int64)
            np.testing.assert_array_equal(got, exact, err_msg=f"{a_dtype} K={k} N={n} M={m}")
            np.testing.assert_array_equal(got, run(b.graph, {"a": feeds})["y"])


@pytest.mark.skipif(not _avx2(), reason="needs AVX2")
def test_pair_kernel_fused_quantize_and_requantize(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """FP32 x -> quantize (in the panel fill, codes up to 255) -> matmul -> requantize (epilogue) with the forced
    avx2-pair kernel on extreme weights: bit-exact with the interpreter."""
    from qgnn_deploy.backends.tvm import compile_to_dir, run_library

    monkeypatch.setattr(gemm_x86, "PAIR_RESIDUAL_MAX", 1.0)
    monkeypatch.setattr(gemm_x86, "x86_gemm_kind", lambda features: "avx2-pair" if "avx2" in features else "sse2")
    b = GraphBuilder()
    x = b.input("x", "float32", ("N", 37))
    xq = b.op("quantize", [x], "xq", scale=0.05, zero_point=0, qmin=0, qmax=255, dtype="uint8")
    acc = b.op("matmul", [xq, b.const("w", _weights(37, 16, 3, True))], "acc")
    y = b.op("requantize", [acc], "y", multiplier=1 << 20, shift=30, zero_point=5, qmin=0, qmax=255, dtype="uint8")
    b.output(y, "uint8", ("N", 16))
    g = b.graph
    rng = np.random.default_rng(0)
    feeds = {"x": rng.normal(0.0, 6.0, (103, 37)).astype(np.float32)}
    feeds["x"][:3] = 100.0  # all-255 codes
    fields = compile_to_dir(g, "x86-64-v3", tmp_path, sample_feeds=feeds)
    assert fields["kernels"]["gemm"] == fields["kernels"]["gemm_used"][0] == "avx2-pair"
    np.testing.assert_array_equal(run_library(tmp_path / fields["library"], feeds), run(g, feeds)["y"])


def test_manifest_names_the_gemm_kernels_a_build_used() -> None:
    """``kernels.gemm_used`` comes from the emitted kernel names: a fallback GEMM shows as its own kind."""
    from qgnn_deploy.backends.tvm.compile import gemm_kinds_used

    names = ["qgnn_gemm_avx2_pair_1433_1_uint8_r4", "qgnn_gemm_avx2_16_1_uint8", "qgnn_edge_reduce_7",
             "qgnn_gemm_avxvnni_quant_37_uint8", "qgnn_gemm_vnni_16_1_int8", "qgnn_gemm_sdot4_16_1_int8"]
    assert gemm_kinds_used(names) == ["avx2", "avx2-pair", "avxvnni", "sdot", "vnni"]
