"""bench-suite latency rows pooled over several processes (``perf.pooling``): arithmetic, order, CLI (seconds)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qgnn_deploy.cli import main
from qgnn_deploy.errors import QgnnError
from qgnn_deploy.perf.measure import SAMPLES, latency_stats, timing
from qgnn_deploy.perf.pooling import (
    calls_per_process,
    load_text,
    measure_rows,
    median_text,
    method_text,
    pool,
    process_checks,
    process_name,
    round_robin,
)


def _proc(samples_ms: list[float], rss: int, before: int, **extra: Any) -> dict[str, Any]:
    return {**timing([s / 1e3 for s in samples_ms]), "peak_rss_bytes": rss, "rss_before_load_bytes": before,
            "threads": 2, "load_average_before": [0.5, 0.5, 0.5], **extra}


def test_pool_statistics_over_the_pooled_samples() -> None:
    procs = [_proc([1.0, 2.0, 3.0], 100, 10, reference_match=True),
             _proc([10.0, 11.0, 12.0, 13.0], 300, 30, reference_match=True),
             _proc([4.0, 5.0, 6.0], 200, 20, reference_match=True)]
    row = pool(procs)
    every = [1.0, 2.0, 3.0, 10.0, 11.0, 12.0, 13.0, 4.0, 5.0, 6.0]
    want = latency_stats([s / 1e3 for s in every])
    assert row["latency_ms"] == pytest.approx(want) and row["latency_ms"]["n"] == 10
    assert row["latency_ms"]["median"] == pytest.approx(5.5) and row["latency_ms"]["p90"] == pytest.approx(12.1)
    assert [p["median_ms"] for p in row["processes"]] == pytest.approx([2.0, 11.5, 5.0])
    assert [p["n"] for p in row["processes"]] == [3, 4, 3]
    assert row["process_median_spread_ms"] == pytest.approx([2.0, 11.5])
    # peak RSS: the largest process, with that process's RSS before the model load ("above import" stays one process)
    assert row["peak_rss_bytes"] == 300 and row["rss_before_load_bytes"] == 30
    assert row["reference_match"] is True and row["threads"] == 2
    assert SAMPLES not in row and "output" not in row  # statistics only in the JSON
    assert median_text(row) == "5.500 (2.000–11.500)"


def test_load_before_is_the_range_over_the_processes() -> None:
    """The report's "load before" shows every process's 1-minute load (min–max), not only the first one's."""
    from qgnn_deploy.perf.report import _gcn_section

    loads = ([0.4, 1.0, 1.0], [1.87, 1.0, 1.0], [0.9, 1.0, 1.0])
    row = pool([{**_proc([1.0], 1, 0), "load_average_before": la} for la in loads])
    assert row["load_average_before"] == [0.4, 1.0, 1.0]  # the first process's (pool keeps its fields)
    assert load_text(row) == "0.4–1.87"
    assert load_text(pool([_proc([1.0], 1, 0) for _ in range(2)])) == "0.5"  # all alike: one value
    assert load_text(pool([_proc([1.0], 1, 0)])) == "0.5" and load_text({"latency_ms": {}}) == "—"
    res = {"main": {}, "rows": {"ours_ort": {**row, "label": "ours"}}, "ratios": {"per_backend": {}},
           "config": {"threads": 2}}
    assert [ln for ln in _gcn_section(res) if ln.startswith("| ours |")][0].endswith("| 0.4–1.87 |")


@pytest.mark.parametrize(("matches", "want"), [((True, False, True), False), ((True, None, True), None),
                                               ((True, True, True), True)])
def test_pool_reference_match_must_hold_in_every_process(matches: tuple, want: bool | None) -> None:
    row = pool([_proc([1.0], 1, 0, reference_match=m) for m in matches])
    assert row["reference_match"] is want
    assert [p["reference_match"] for p in row["processes"]] == list(matches)


def test_pool_single_process_and_errors() -> None:
    one = pool([_proc([3.0, 1.0, 2.0], 5, 1)])
    assert one["latency_ms"]["median"] == pytest.approx(2.0) and median_text(one) == "2.000"
    assert len(one["processes"]) == 1 and "reference_match" not in one
    assert pool([{"error": "worker died: boom"}]) == {"error": "worker died: boom"}  # K=1: unchanged text
    row = pool([_proc([1.0], 1, 0), {"error": "timed out after 9 s"}])
    assert row == {"error": "process 2 of 2: timed out after 9 s"}


def test_pool_compares_saved_outputs_across_processes(tmp_path: Path) -> None:
    outs = [tmp_path / f"o{i}.npy" for i in range(3)]
    for i, o in enumerate(outs):
        np.save(o, np.array([1.0, 2.0 + 0.25 * i], np.float32))
    row = pool([_proc([1.0], 1, 0, output=str(o)) for o in outs])
    assert row["max_abs_diff_across_processes"] == pytest.approx(0.5) and "output" not in row
    assert "max_abs_diff_across_processes" not in pool([_proc([1.0], 1, 0, output=str(outs[0]))])


def test_process_checks_note() -> None:
    """The report says whether every process of our rows matched the interpreter, and how FP32 outputs agree."""
    ours = pool([_proc([1.0], 1, 0, reference_match=True) for _ in range(2)])
    fp32 = {**pool([_proc([2.0], 1, 0) for _ in range(2)]), "max_abs_diff_across_processes": 0.0}
    labels = {"pyg": "PyG FP32 eager"}
    assert process_checks({"ours": ours, "pyg": fp32}, ("ours",), labels) == [
        "", "Checked in every process: our rows all equal to the reference interpreter bit for bit; FP32 outputs "
        "identical across processes."]
    bad = pool([_proc([1.0], 1, 0, reference_match=m) for m in (True, False)])
    note = process_checks({"ours": bad, "pyg": {**fp32, "max_abs_diff_across_processes": 2e-7}}, ("ours",), labels)
    assert "our rows NOT all equal" in note[1] and "at most 2e-07 (PyG FP32 eager)" in note[1]
    assert process_checks({"ours": pool([_proc([1.0], 1, 0, reference_match=True)])}, ("ours",), labels) == []
    assert process_checks({"pyg": fp32}, ("ours",), labels) == [
        "", "Checked in every process: FP32 outputs identical across processes."]  # no pooled row of ours


def test_round_robin_order_and_a_failing_row_stops() -> None:
    calls: list[tuple[str, int]] = []

    def job(key: str, fail_at: int | None = None) -> Any:
        def run(i: int) -> dict[str, Any]:
            calls.append((key, i))
            return {"error": "x"} if i == fail_at else {"i": i}
        return run

    logged: list[str] = []
    runs = round_robin({"a": job("a"), "b": job("b", fail_at=1), "c": job("c")}, 3, logged.append)
    assert calls == [("a", 0), ("b", 0), ("c", 0), ("a", 1), ("b", 1), ("c", 1), ("a", 2), ("c", 2)]
    assert [r.get("i") for r in runs["b"]] == [0, None] and len(runs["a"]) == 3
    assert logged[0] == "measuring a (process 1/3)" and len(logged) == len(calls)
    calls.clear()
    runs = round_robin({"a": job("a"), "b": job("b", fail_at=1), "c": job("c")}, 3, stop_on_error=True)
    assert calls == [("a", 0), ("b", 0), ("c", 0), ("a", 1), ("b", 1)] and len(runs["c"]) == 1
    single: list[str] = []
    round_robin({"a": job("a")}, 1, single.append)
    assert single == ["measuring a"]  # one process: the log line of a single run


def test_measure_rows_keeps_fixed_rows_in_place() -> None:
    rows = measure_rows({"a": lambda i: _proc([1.0 + i], 1, 0), "skip": {"error": "skipped (--no-compile)"},
                         "b": lambda i: _proc([5.0], 1, 0)}, 2)
    assert list(rows) == ["a", "skip", "b"] and rows["skip"] == {"error": "skipped (--no-compile)"}
    assert rows["a"]["process_median_spread_ms"] == pytest.approx([1.0, 2.0])


def test_calls_per_process_names_and_method_text() -> None:
    assert calls_per_process(50, 1) == 50 and calls_per_process(5, 1) == 5
    assert calls_per_process(50, 3) == 17 and calls_per_process(10, 3) == 5  # at least 5 each
    assert [process_name("ours_ort", i) for i in range(3)] == ["ours_ort", "ours_ort.p2", "ours_ort.p3"]
    assert method_text(1, 2, 5) == "2 warm-up + 5 timed runs, each backend in its own process."
    text = method_text(3, 10, 50)
    assert "pooled over 3 processes, round-robin" in text and "10 warm-up + 17 timed runs" in text
    assert "51 pooled runs" in text


def test_worker_rows_pooled_end_to_end(tmp_path: Path) -> None:
    """Two real ORT worker processes per row: per-process output files, identical outputs, pooled samples."""
    from onnx import TensorProto, helper

    from qgnn_deploy.perf.runs import worker_job

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    (tmp_path / "relu.onnx").write_bytes(model.SerializeToString())
    np.savez(tmp_path / "g.npz", x=np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4),
             edge_index=np.zeros((2, 1), np.int64))
    spec = {"kind": "ort", "model": str(tmp_path / "relu.onnx"), "graph": str(tmp_path / "g.npz"), "threads": 1,
            "warmup": 1, "repeats": calls_per_process(6, 2)}
    rows = measure_rows({"ort_relu": worker_job(spec, tmp_path, "ort_relu", 120.0)}, 2)
    r = rows["ort_relu"]
    assert "error" not in r, r
    assert r["latency_ms"]["n"] == 10 and len(r["processes"]) == 2 and r["max_abs_diff_across_processes"] == 0.0
    assert (tmp_path / "ort_relu.out.npy").is_file() and (tmp_path / "ort_relu.p2.out.npy").is_file()
    assert sorted(p.name for p in (tmp_path / "runs").glob("*.result.json")) == [
        "ort_relu.p2.result.json", "ort_relu.result.json"]


@pytest.mark.parametrize("bad", ["0", "-2"])
def test_processes_below_one_is_one_line_exit_2(bad: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench-suite", "--quick", "--no-tvm", "--processes", bad, "--out-dir", str(tmp_path / "out"),
                 "--work-dir", str(tmp_path / "work")])
    err = capsys.readouterr().err
    assert code == 2 and err == f"qgnn: error: --processes must be >= 1 (got {int(bad)})\n"
    assert not (tmp_path / "out").exists() and not (tmp_path / "work").exists()


def test_processes_not_a_number_is_an_argparse_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["bench-suite", "--processes", "three"])
    assert exc.value.code == 2 and "argument --processes: invalid int value: 'three'" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "want"), [(["--quick"], 1), ([], 3), (["--quick", "--processes", "2"], 2),
                                            (["--processes", "1"], 1)])
def test_processes_default_and_flag(argv: list[str], want: int, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import qgnn_deploy.perf.suite as suite

    seen = {}

    def fake_run_suite(cfg: Any, name: str) -> dict[str, Any]:
        seen["cfg"] = cfg
        raise QgnnError("stop before any work")

    monkeypatch.setattr(suite, "run_suite", fake_run_suite)
    code = main(["bench-suite", "--no-tvm", *argv, "--out-dir", str(tmp_path / "o"), "--work-dir", str(tmp_path)])
    assert code == 2 and seen["cfg"].processes == want
    assert ("--processes" in seen["cfg"].command) == ("--processes" in argv)


def test_series_rows_get_calls_from_their_previous_latency() -> None:
    """A row fast at the previous size gets more calls (a time budget), a slow one at least 5; no previous: base."""
    from qgnn_deploy.perf.series import ROW_BUDGET_S, row_repeats

    prev = {"num_edges": 1000, "fast": {"latency_ms": {"median": 10.0}}, "slow": {"latency_ms": {"median": 1e4}},
            "failed": {"error": "x"}}
    # 10 ms at 1000 edges -> 100 ms at 10^4 edges: ROW_BUDGET_S / 0.1 s calls, capped by ``most``
    assert row_repeats(prev, "fast", 10_000, 5, 500) == int(ROW_BUDGET_S / 0.1)
    assert row_repeats(prev, "fast", 10_000, 5, 20) == 20
    assert row_repeats(prev, "slow", 10_000, 18, 50) == 5
    assert row_repeats(prev, "failed", 10_000, 18, 50) == 18
    assert row_repeats(None, "fast", 10_000, 18, 50) == 18


def _tiny_series(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, processes: int, **attrs: Any) -> dict[str, Any]:
    """The series stage (quick rows: PyG eager, ORT FP32, our ORT as given and sorted) with real workers on graphs
    of 300 and 3000 nodes, a 2-epoch 16-feature model, ``processes`` processes per row and ``attrs`` of
    :mod:`.series` patched; ``res["series"]``."""
    from qgnn_deploy.fold import fold_model
    from qgnn_deploy.perf import series
    from qgnn_deploy.perf.baselines import twin_weights
    from qgnn_deploy.perf.config import SuiteConfig
    from qgnn_deploy.perf.graphs import random_graph
    from qgnn_deploy.perf.runs import export, train_model
    from qgnn_deploy.train.checkpoint import load_checkpoint

    cfg = SuiteConfig(out_dir=tmp_path / "out", work_dir=tmp_path, quick=True, tvm=False, sizes=[300, 3000],
                      repeats=40, warmup=1, threads=1, processes=processes)
    model, _ = load_checkpoint(train_model(cfg, "synthetic", 8, tmp_path / "m.pt", 2, features=16))
    graph, feeds = fold_model(model), random_graph(64, 16, 4.0)
    np.savez(tmp_path / "twin_weights.npz", **twin_weights(model))
    export(graph, "onnx", tmp_path / "art", feeds)
    for name, value in attrs.items():
        monkeypatch.setattr(series, name, value)
    res: dict[str, Any] = {"main": {"model": str(tmp_path / "m.pt")}}
    series.series_stage(cfg, res, {"graph": graph, "artifact": tmp_path / "art", "feeds": feeds})
    return res["series"]


SERIES_QUICK_ROWS = ("pyg_eager", "ort_fp32", "ours_ort", "ours_ort_sorted")


def test_series_rows_run_the_calls_row_repeats_gives_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The series stage with real workers on two tiny graphs and a small budget: at the first size every row runs
    the size's count, at the second each row runs what :func:`row_repeats` gives it from its own recorded latency,
    so the rows' calls differ (the quick suite's ``--repeats 5`` clamps them all to 5 and cannot show it)."""
    from qgnn_deploy.perf import series

    # rows of ~3-12 ms at the second size: ~8-33 calls each
    first, second = _tiny_series(tmp_path, monkeypatch, 1, ROW_BUDGET_S=0.1)["points"]
    rows = SERIES_QUICK_ROWS
    assert all("error" not in first[k] and "error" not in second[k] for k in rows), (first, second)
    assert [first[k]["latency_ms"]["n"] for k in rows] == [first["repeats"]] * 4 == [40] * 4
    want = [series.row_repeats(first, k, second["num_edges"], second["repeats"], 40) for k in rows]
    assert [second[k]["latency_ms"]["n"] for k in rows] == want
    assert len(set(want)) > 1, want  # each row its own count, not one per size


def test_series_row_plan() -> None:
    """Pooled: ours at every size, ORT FP32 and PyG cached from 10^5 nodes; fast rows split their calls between
    the processes, a slow one (10^6 nodes) gets 1 warm-up and, when pooled, 3 calls a process."""
    from qgnn_deploy.perf.series import SLOW_CALLS_PER_PROCESS, pooled, row_plan

    assert pooled("ours_tvm", 10_000) and pooled("ours_ort_sorted", 10_000) and not pooled("ort_fp32", 10_000)
    assert pooled("ort_fp32", 100_000) and pooled("pyg_cached_sorted", 10**6) and not pooled("pyg_eager", 10**6)
    prev = {"num_edges": 1000, "pyg_cached": {"latency_ms": {"median": 500.0}},
            "ours_tvm": {"latency_ms": {"median": 10.0}}}
    assert row_plan(None, "ort_fp32", 1000, 50, 50, 3, 10) == {"processes": 3, "calls_per_process": 17, "warmup": 10}
    # 10 ms at 1000 edges -> 100 ms at 10^4: ~30 calls over 3 processes
    assert row_plan(prev, "ours_tvm", 10_000, 5, 50, 3, 3) == {"processes": 3, "calls_per_process": 10, "warmup": 3}
    # 0.5 s at 1000 edges -> 5 s at 10^4 edges
    assert row_plan(prev, "pyg_cached", 10_000, 5, 50, 3, 3) == {
        "processes": 3, "calls_per_process": SLOW_CALLS_PER_PROCESS, "warmup": 1}
    assert row_plan(prev, "pyg_cached", 10_000, 5, 50, 1, 3) == {"processes": 1, "calls_per_process": 5, "warmup": 1}


def test_series_rows_pooled_over_processes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Real workers, 2 processes per pooled row (the target's comparison from 3000 nodes here): each keeps every
    process's median and peak RSS, its latency is over the pooled calls and its peak RSS the largest process.  At
    the second size every row counts as slow: PyG eager (no target reads it) runs once after 1 warm-up, the others
    2 x 3 calls."""
    from qgnn_deploy.perf.report import _gcn_section
    from qgnn_deploy.perf.series import SLOW_CALLS_PER_PROCESS

    s = _tiny_series(tmp_path, monkeypatch, 2, SLOW_CALL_S=1e-9, SERIES_TARGET_FROM=3000)
    first, second = s["points"]
    for p in (first, second):
        for k in SERIES_QUICK_ROWS:
            r, plan = p[k], p["plans"][k]
            assert "error" not in r, r
            procs = r["processes"]
            assert len(procs) == plan["processes"] and all(q["median_ms"] > 0 for q in procs)
            assert r["latency_ms"]["n"] == sum(q["n"] for q in procs) == plan["processes"] * plan["calls_per_process"]
            assert r["peak_rss_bytes"] == max(q["peak_rss_bytes"] for q in procs) > 0
            assert r["process_median_spread_ms"] == [min(q["median_ms"] for q in procs),
                                                     max(q["median_ms"] for q in procs)]
            assert SAMPLES not in r
    # 300 nodes: ours pooled (40 calls split), PyG eager and ORT FP32 once (no target compares them there)
    assert [len(first[k]["processes"]) for k in SERIES_QUICK_ROWS] == [1, 1, 2, 2]
    assert [first["plans"][k]["calls_per_process"] for k in SERIES_QUICK_ROWS] == [40, 40, 20, 20]
    assert [len(second[k]["processes"]) for k in SERIES_QUICK_ROWS] == [1, 2, 2, 2]
    assert [second[k]["latency_ms"]["n"] for k in SERIES_QUICK_ROWS[1:]] == [2 * SLOW_CALLS_PER_PROCESS] * 3
    assert {second["plans"][k]["warmup"] for k in SERIES_QUICK_ROWS} == {1}
    assert (tmp_path / "series" / "runs" / "ort_fp32_3000.p2.result.json").is_file()
    res = {"main": {}, "rows": {}, "ratios": {"per_backend": {}}, "config": {"threads": 1}, "series": s}
    section = _gcn_section(res)
    ort = next(ln for ln in section if ln.startswith("| 3000 |") and "| ORT FP32" in ln)
    lo, hi = second["ort_fp32"]["process_median_spread_ms"]
    assert f"({lo:.3f}–{hi:.3f}) | 6 (2) |" in ort
    assert any(ln.startswith("Rows a target reads") for ln in section)
