"""``qgnn bench-suite --quick``: the whole pipeline on a tiny synthetic graph (structure only, no timing asserts)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from qgnn_deploy.cli import main
from qgnn_deploy.perf.gather_probe import probe_width
from qgnn_deploy.perf.graphs import random_graph
from qgnn_deploy.perf.measure import latency_stats, percentile
from qgnn_deploy.perf.metrics import suite_metrics
from qgnn_deploy.perf.series import growth_exponents, segment_exponents
from qgnn_deploy.targets import evaluate_targets, load_targets

REPO = Path(__file__).resolve().parents[1]
SUITE_TARGETS = REPO / "examples" / "targets" / "bench_suite.toml"

BACKENDS = ("pyg_eager", "pyg_cached", "pyg_compile", "pyg_csr", "torch_sparse_csr", "ort_fp32", "ort_qdq", "ours_ort",
            "ours_tvm", "ours_ort_u8", "ours_tvm_u8")


def _portable_preset() -> str:
    """The quick run builds the AVX2 psABI level where the CPU has it: the portable route a user ships, on every
    CI machine (host detection is covered by the TVM backend tests)."""
    from qgnn_deploy.backends.tvm.targets import TARGETS, runs_on_host

    return "x86-64-v3" if runs_on_host(TARGETS["x86-64-v3"]) else "x86_64"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("suite")
    code = main(["bench-suite", "--quick", "--no-compile", "--no-gat", "--sizes", "200,1000", "--work-dir",
                 str(out / "work"), "--out-dir", str(out / "results"), "--name", "quick",
                 "--targets", str(SUITE_TARGETS), "--tvm-target", _portable_preset()])
    assert code == 0
    return out / "results", json.loads((out / "results" / "quick.json").read_text())


def test_quick_writes_json_markdown_and_plots(quick_run: tuple[Path, dict]) -> None:
    out, res = quick_run
    for name in ("quick.json", "quick.md", "quick.png", "quick_series.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    md = (out / "quick.md").read_text()
    assert "| backend | median ms |" in md and "Command: `qgnn bench-suite" in md
    assert len(res["load_average"]["start"]) == 3 and len(res["load_average"]["end"]) == 3
    assert res["config"]["threads"] == 2


def test_every_backend_measured_with_the_same_threads(quick_run: tuple[Path, dict]) -> None:
    _, res = quick_run
    rows = res["rows"]
    assert set(rows) == set(BACKENDS)
    assert "error" in rows["pyg_compile"]  # --no-compile: reported, not silently dropped
    for key in BACKENDS:
        if key == "pyg_compile":
            continue
        r = rows[key]
        assert "error" not in r, (key, r.get("error"))
        lat = r["latency_ms"]
        assert lat["median"] > 0 and lat["p90"] >= lat["median"] and lat["p99"] >= lat["p90"]
        assert r["threads"] == 2
        assert len(r["processes"]) == 1 and "latency_samples_ms" not in r  # --quick: one process per row
        assert r["process_median_spread_ms"] == [lat["median"]] * 2
        assert r["peak_rss_bytes"] > 0 and r["buffer_bytes"] > 0 and r["model_bytes"] > 0
        assert 0.0 <= r["test_acc"] <= 1.0
    for key in ("ours_ort", "ours_tvm", "ours_ort_u8", "ours_tvm_u8"):
        assert rows[key]["reference_match"], key
    # the --integer-input artifact holds uint8 features instead of float32 ones (not the peak on this tiny graph)
    assert rows["ours_tvm_u8"]["buffer_bytes"] <= rows["ours_tvm"]["buffer_bytes"]
    assert rows["ours_tvm_u8"]["input_contract"].startswith("uint8") and rows["ours_tvm"]["input_contract"] == "FP32 x"


def test_ratios_and_targets_computed(quick_run: tuple[Path, dict]) -> None:
    out, res = quick_run
    per = res["ratios"]["per_backend"]
    assert per["pyg_eager"]["speedup_vs_pyg_eager"] == pytest.approx(1.0)
    for key in ("ort_fp32", "ours_ort", "ours_tvm"):
        assert per[key]["speedup_vs_pyg_eager"] > 0
        assert per[key]["model_bytes_ratio"] > 0 and per[key]["buffer_bytes_ratio"] > 0
    assert res["ratios"]["best_ours"] in ("ours_ort", "ours_tvm", "ours_ort_u8", "ours_tvm_u8")
    t = res["targets"]
    for key in ("best_vs_fastest_fp32>=3x", "best_vs_ort_fp32>=2x", "gemm_no_slower_than_ort_matmulinteger",
                "tvm_no_slower_than_ours_ort",
                "int8_model<=0.27x_fp32", "int4_model<=0.15x_fp32", "int8_buffer<=0.3x_fp32",
                "latency_no_worse_than_linear_in_edges"):
        assert isinstance(t[key]["met"], bool), key
        assert isinstance(t[key]["value"], float), key  # a slope may be negative on a tiny noisy series
    assert t["1e6_nodes_fit_24GiB"]["met"] is None  # not measured in the quick run
    assert t["gat_best_vs_pyg_gatconv>=3x"]["met"] is None  # --no-gat: not measured, not guessed
    assert res["metrics"]["best_vs_fastest_fp32"]["value"] == t["best_vs_fastest_fp32>=3x"]["value"]
    assert "## Targets" in (out / "quick.md").read_text() and "gat" not in res


def test_stronger_fp32_baselines_and_fastest_fp32(quick_run: tuple[Path, dict]) -> None:
    """PyG on a CSR adj_t and the hand-written torch.sparse_csr GCN compute the eager model's logits; the
    "fastest FP32" the 3x target divides by is the minimum over every FP32 row."""
    _, res = quick_run
    rows, rat = res["rows"], res["ratios"]
    for key in ("pyg_csr", "torch_sparse_csr"):
        assert rows[key]["max_abs_diff_vs_pyg_eager"] < 1e-3, key
        assert rows[key]["adjacency_prep_ms"] >= 0 and rows[key]["model_bytes"] == rows["pyg_eager"]["model_bytes"]
    fp32 = {k: rows[k]["latency_ms"]["median"] for k in ("pyg_eager", "pyg_cached", "pyg_csr", "torch_sparse_csr",
                                                          "ort_fp32")}
    assert rat["fastest_fp32"] == min(fp32, key=fp32.get)
    assert rat["fastest_fp32_ms"] == pytest.approx(min(fp32.values()))
    t = res["targets"]["best_vs_fastest_fp32>=3x"]
    assert t["value"] == pytest.approx(min(fp32.values()) / rat["best_ours_ms"])


def test_isa_tier_and_gemm_ratio_reported(quick_run: tuple[Path, dict]) -> None:
    out, res = quick_run
    from qgnn_deploy.perf.machine import ISA_FLAGS, isa_flags

    flags = res["machine"]["isa_flags"]
    assert set(flags) == set(ISA_FLAGS) and flags == isa_flags(Path("/proc/cpuinfo").read_text())
    assert res["machine"]["gemm_kernel"]
    md = (out / "quick.md").read_text()
    assert "ISA tier: avx2 " in md and f"`{res['machine']['gemm_kernel']}`" in md
    gp = res["gemm_vs_ort"]
    assert gp["ours_exact"] is True and gp["ort_over_ours_median"] > 0 and gp["ours_ms"]["n"] == 10
    assert gp["gemm_kernel"] == res["machine"]["gemm_kernel"]
    assert "ORT / ours = **" in md
    preset = res["machine"]["tvm_target"]
    assert preset == _portable_preset() == res["config"]["tvm_target"]
    if preset != "x86_64":
        from qgnn_deploy.backends.tvm.compile import gemm_kind
        from qgnn_deploy.backends.tvm.targets import TARGETS

        assert res["machine"]["gemm_kernel"] == gemm_kind(TARGETS[preset]) and "avx2" in res["machine"]["gemm_kernel"]
        assert f"TVM rows built for the portable preset `{preset}`" in md
        manifest = json.loads((Path(res["config"]["work_dir"]) / "artifact_int8_uint8_input" / "manifest.json")
                              .read_text())
        assert manifest["target"]["name"] == preset


@pytest.mark.parametrize(("preset", "message"), [
    ("cortex-a53", "time an aarch64 library on the device"), ("pentium", "unknown preset 'pentium'")])
def test_tvm_target_that_cannot_run_here_is_one_line_exit_2(preset: str, message: str, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench-suite", "--quick", "--tvm-target", preset, "--out-dir", str(tmp_path / "out"),
                 "--work-dir", str(tmp_path / "work")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists() and not (tmp_path / "work").exists()


def test_runs_on_host_reads_the_presets_features() -> None:
    from qgnn_deploy.backends.tvm.targets import TARGETS, runs_on_host

    host = set(TARGETS["x86_64"].features)
    assert runs_on_host(TARGETS["x86_64"]) and runs_on_host(TARGETS["x86_64-generic"])
    assert not runs_on_host(TARGETS["neoverse-v1"])
    for name in ("x86-64-v3", "x86-64-v4-vnni"):
        assert runs_on_host(TARGETS[name]) == set(TARGETS[name].features).issubset(host), name


def test_isa_flags_parse_linux_spellings() -> None:
    from qgnn_deploy.perf.machine import isa_flags

    x86 = "flags\t\t: fpu sse2 avx2 avx_vnni avx512f\n"
    assert isa_flags(x86) == {"avx2": True, "avx512vnni": False, "avxvnni": True, "dotprod": False, "i8mm": False}
    zen5 = "flags\t\t: fpu avx2 avx512f avx512_vnni avx512_bf16 avx_vnni\n"  # Linux writes avx512_vnni
    assert isa_flags(zen5) == {"avx2": True, "avx512vnni": True, "avxvnni": True, "dotprod": False, "i8mm": False}
    arm = "Features\t: fp asimd asimddp i8mm\n"
    assert isa_flags(arm) == {"avx2": False, "avx512vnni": False, "avxvnni": False, "dotprod": True, "i8mm": True}


def test_determinism_flags(quick_run: tuple[Path, dict]) -> None:
    _, res = quick_run
    det = res["determinism"]
    for key in ("ours_ort", "ours_tvm", "ours_ort_u8", "ours_tvm_u8"):
        assert set(det[key]["digests_by_threads"]) == {"1", "2"}
        assert det[key]["deterministic"] is True
        assert det[key]["equals_reference"] is True
    assert res["targets"]["deterministic"]["met"] is True


def test_series_and_roofline(quick_run: tuple[Path, dict]) -> None:
    _, res = quick_run
    pts = res["series"]["points"]
    assert [p["num_nodes"] for p in pts] == [200, 1000]
    for p in pts:
        for key in ("pyg_eager", "ort_fp32", "ours_ort", "ours_ort_sorted", "ours_tvm", "ours_tvm_u8",
                    "ours_tvm_u8_sorted"):
            assert p[key]["latency_ms"]["median"] > 0 and p[key]["peak_rss_bytes"] > 0
    slopes = res["series"]["growth_exponent_vs_edges"]
    assert all(isinstance(slopes[k], float) for k in ("pyg_eager", "ort_fp32", "ours_ort", "ours_tvm"))
    assert res["targets"]["series_ours_ort_vs_ort_fp32_and_pyg_cached"]["met"] is None  # sizes below 10^5
    rf = res["roofline"]
    assert rf["probe"]["int8_gemm"]["ops_per_s"] > 0 and rf["probe"]["memory_bandwidth"]["bytes_per_s"] > 0
    assert rf["achieved"]["int_ops_per_s"] > 0 and rf["workload"]["int_ops"] > 0
    # the GCN's two aggregations, each charged the gather probe's time for its row width (16 and 7 -> 8 bytes)
    g = rf["gather"]
    assert rf["workload"]["gather_columns"] == g["aggregation_columns"] and len(g["aggregation_columns"]) == 2
    assert sorted(g["probe"]["widths"]) == sorted(str(probe_width(c)) for c in set(g["aggregation_columns"]))
    assert g["reference_ms"] == pytest.approx(rf["achieved"]["time_at_roofline_ms"] + sum(g["aggregation_ms"]))
    assert all(t > 0 for t in g["aggregation_ms"])


def test_helpers() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == pytest.approx(2.5)
    s = latency_stats([0.001, 0.002, 0.003])
    assert s["median"] == pytest.approx(2.0) and s["n"] == 3
    g = random_graph(100, 8, degree=10.0)
    assert g["x"].shape == (100, 8) and g["edge_index"].shape == (2, 1100)
    assert np.all(np.bincount(g["edge_index"][1], minlength=100) >= 1)  # self-loops
    pts = [{"num_edges": e, "k": {"latency_ms": {"median": 0.5 * e}}} for e in (10, 100, 1000)]
    pts = [{**p, "ours_ort": p["k"]} for p in pts]
    assert growth_exponents(pts)["ours_ort"] == pytest.approx(1.0)
    assert growth_exponents(pts)["pyg_eager"] is None
    pts[2]["ours_ort"] = {"latency_ms": {"median": 0.5 * 1000 * 10 ** 0.2}}  # the last decade costs 1.2
    assert segment_exponents(pts)["ours_ort"] == pytest.approx([1.0, 1.2])
    assert segment_exponents(pts)["pyg_eager"] == []
    assert [probe_width(c) for c in (1, 2, 3, 7, 8, 16, 17)] == [1, 2, 4, 8, 8, 16, 32]  # the gather probe's rows


def test_growth_target_reads_our_fastest_backend_at_the_largest_graph() -> None:
    """Not the smallest slope of any backend: the one a user would run on big graphs decides."""
    def point(n: int, e: int, fast: float, slow: float) -> dict:
        return {"num_nodes": n, "num_edges": e, "ours_tvm": {"latency_ms": {"median": fast}},
                "ours_ort": {"latency_ms": {"median": slow}}}

    # ours_tvm: 1 -> 200 ms over 100x edges (slope 1.15); ours_ort: 10 -> 1000 ms (slope 1.0) but slower
    pts = [point(10_000, 100_000, 1.0, 10.0), point(1_000_000, 10_000_000, 200.0, 1000.0)]
    res = {"series": {"points": pts, "growth_exponent_vs_edges": growth_exponents(pts)}}
    m = suite_metrics(res)["latency_growth_exponent"]
    assert m["backend"] == "ours_tvm" and m["value"] == pytest.approx(np.log10(200) / 2)
    t = evaluate_targets(load_targets(SUITE_TARGETS), {"metrics": suite_metrics(res)})
    assert t["latency_no_worse_than_linear_in_edges"]["met"] is False


def test_series_ort_target_reads_both_baselines_and_peak_rss() -> None:
    from qgnn_deploy.perf.metrics import series_ort_metric

    def series_ort_target(pts: list) -> dict:
        res = {"metrics": {"series_ours_ort_vs_ort_fp32_and_pyg_cached": series_ort_metric(pts)}}
        return {**series_ort_metric(pts), **evaluate_targets(load_targets(SUITE_TARGETS), res)[
            "series_ours_ort_vs_ort_fp32_and_pyg_cached"]}

    def point(n: int, ours: float, fp32: float, cached: float, rss: tuple[int, int]) -> dict:
        return {"num_nodes": n, "ours_ort": {"latency_ms": {"median": ours}, "peak_rss_bytes": rss[0]},
                "ort_fp32": {"latency_ms": {"median": fp32}}, "pyg_cached": {"latency_ms": {"median": cached},
                                                                     "peak_rss_bytes": rss[1]}}

    pts = [point(10_000, 9.0, 1.0, 1.0, (1, 2)), point(100_000, 50.0, 100.0, 80.0, (1, 2)),
           point(1_000_000, 500.0, 900.0, 1000.0, (3, 2))]
    t = series_ort_target(pts)
    assert t["per_size"] == {"100000": pytest.approx(1.6), "1000000": pytest.approx(1.8)}  # 10^4 not counted
    assert t["value"] == pytest.approx(1.6) and t["met"] is False  # faster, but peaks above PyG at 10^6
    pts[-1]["ours_ort"]["peak_rss_bytes"] = 1
    assert series_ort_target(pts)["met"] is True
    # the sorted-edges contract counts where it is the faster ORT row; its own RSS is then the one checked
    pts[1]["ours_ort"]["latency_ms"]["median"] = 100.0
    pts[1]["ours_ort_sorted"] = {"latency_ms": {"median": 40.0}}
    pts[-1]["ours_ort_sorted"] = {"latency_ms": {"median": 400.0}, "peak_rss_bytes": 5}
    t = series_ort_target(pts)
    assert t["row_per_size"] == {"100000": "ours_ort_sorted", "1000000": "ours_ort_sorted"}
    assert t["per_row"]["ours_ort"]["100000"] == pytest.approx(0.8) and t["value"] == pytest.approx(2.0)
    assert t["peak_rss_at_largest"] == {"ours_ort_sorted": 5, "pyg_cached": 2} and t["met"] is False
    pts[1]["pyg_cached_sorted"] = {"latency_ms": {"median": 50.0}}  # the baselines get the sorted edges too
    assert series_ort_target(pts)["per_size"]["100000"] == pytest.approx(1.25)


def test_gemm_probe_exact_where_ort_saturates(tmp_path: Path) -> None:
    """The GEMM probe checks both sides against int64 NumPy: 255 x -128 pairs saturate vpmaddubsw-based paths;
    each side runs in its own process (two alternating sessions here)."""
    from qgnn_deploy.backends.tvm import compile_to_dir
    from qgnn_deploy.ir.graph import GraphBuilder
    from qgnn_deploy.perf.gemm_probe import gemm_vs_ort

    rng = np.random.default_rng(0)
    w = rng.integers(-128, 128, (40, 16)).astype(np.int8)
    w[:8] = -128
    a = np.full((37, 40), 255, np.uint8)
    b = GraphBuilder()
    x = b.input("a", "uint8", ("N", 40))
    b.output(b.op("matmul", [x, b.const("w", w)], "y"), "int32", ("N", 16))
    fields = compile_to_dir(b.graph, "x86_64", tmp_path, sample_feeds={"a": a})
    np.savez(tmp_path / "ops.npz", a=a, b=w)
    r = gemm_vs_ort(tmp_path / fields["library"], tmp_path / "ops.npz", tmp_path / "runs", 1, 6, "avx2")
    assert "error" not in r, r
    assert r["ours_exact"] is True and r["shape"] == [37, 40, 16]
    assert r["ort_exact"] == (r["ort_wrong_elements"] == 0)
    assert r["ours_ms"]["n"] == 6 and r["ort_ms"]["n"] == 6 and r["ort_over_ours_median"] > 0
    assert set(r["runtimes"]) == {"ours", "ort"} and "own process" in r["method"]
    assert sorted(p.name for p in (tmp_path / "runs").glob("*.result.json")) == [
        "gemm_ort_0.result.json", "gemm_ort_1.result.json", "gemm_ours_0.result.json", "gemm_ours_1.result.json"]


def test_gemm_probe_reports_a_failing_side(tmp_path: Path) -> None:
    """A side that cannot run (no library) comes back as one error line, not a crash of the suite."""
    from qgnn_deploy.perf.gemm_probe import gemm_vs_ort

    np.savez(tmp_path / "ops.npz", a=np.zeros((4, 8), np.uint8), b=np.zeros((8, 16), np.int8))
    r = gemm_vs_ort(tmp_path / "missing.so", tmp_path / "ops.npz", tmp_path / "runs", 1, 2, "avx2", sessions=1)
    assert r["kind"] == "gemm_probe" and r["error"].startswith("gemm_ours_0: ")


def test_report_without_targets_file_has_no_targets_table(quick_run: tuple[Path, dict]) -> None:
    """Thresholds are the user's (--targets FILE): without one the report measures and judges nothing."""
    from qgnn_deploy.perf.report import render_markdown

    _, res = quick_run
    md = render_markdown({**res, "targets": {}})
    assert "## Targets" not in md and "| backend | median ms |" in md


@pytest.mark.slow
def test_gat_pair_quick(tmp_path: Path) -> None:
    """The GAT rows alone (--no-gcn): PyG GATConv eager / CSR adj_t and ours (ORT, TVM, both input contracts),
    each in its own process, with accuracy columns and the gat target evaluated (several minutes: TVM build)."""
    code = main(["bench-suite", "--quick", "--no-compile", "--no-gcn", "--gat-heads", "2", "--gat-hidden", "4",
                 "--work-dir", str(tmp_path / "work"), "--out-dir", str(tmp_path / "res"), "--name", "gat",
                 "--targets", str(SUITE_TARGETS)])
    assert code == 0
    res = json.loads((tmp_path / "res" / "gat.json").read_text())
    rows = res["gat"]["rows"]
    assert set(rows) == {"pyg_gat_eager", "pyg_gat_csr", "pyg_gat_compile", "ours_gat_ort", "ours_gat_tvm",
                         "ours_gat_ort_u8", "ours_gat_tvm_u8"}
    assert "error" in rows["pyg_gat_compile"]  # --no-compile
    for key, r in rows.items():
        if key == "pyg_gat_compile":
            continue
        assert "error" not in r, (key, r.get("error"))
        assert r["latency_ms"]["median"] > 0 and r["peak_rss_bytes"] > 0 and 0.0 <= r["test_acc"] <= 1.0
        if key.startswith("ours"):
            assert r["reference_match"] is True and r["threads"] == 2
    assert rows["pyg_gat_csr"]["max_abs_diff_vs_pyg_gat_eager"] < 1e-3  # the same model on a CSR adj_t
    assert rows["ours_gat_tvm_u8"]["input_contract"].startswith("uint8")
    rt = res["gat"]["ratios"]
    assert rt["best_vs_fastest_pyg"] == pytest.approx(rt["fastest_pyg_ms"] / rt["best_ours_ms"])
    t = res["targets"]["gat_best_vs_pyg_gatconv>=3x"]
    assert t["value"] == pytest.approx(rt["best_vs_fastest_pyg"]) and isinstance(t["met"], bool)
    assert "main" not in res and "rows" not in res  # --no-gcn
    md = (tmp_path / "res" / "gat.md").read_text()
    assert "## GAT: PyG GATConv FP32 vs ours" in md and "| PyG GATConv FP32 eager |" in md
