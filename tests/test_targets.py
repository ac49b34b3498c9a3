"""Targets as data (``qgnn_deploy.targets``): loading, generic evaluation, refusal of malformed files."""

from __future__ import annotations

from pathlib import Path

import pytest

from qgnn_deploy.errors import QgnnError
from qgnn_deploy.targets import evaluate_targets, load_targets, markdown_table, resolve

REPO = Path(__file__).resolve().parents[1]


def test_shipped_target_files_load() -> None:
    suite = {t.name for t in load_targets(REPO / "examples" / "targets" / "bench_suite.toml")}
    assert {"best_vs_fastest_fp32>=3x", "int8_model<=0.27x_fp32", "gat_best_vs_pyg_gatconv>=3x"} <= suite
    ev = {t.name for t in load_targets(REPO / "examples" / "targets" / "evaluation.toml")}
    assert ev == {"fp32>=80.5", "int8_within_1.5", "int4_prompt_improves"}


def test_comparisons_dicts_conditions_and_missing_metrics(tmp_path: Path) -> None:
    f = tmp_path / "t.toml"
    f.write_text("""
[[target]]
name = "fast"
metric = "m.speed.value"
op = ">="
threshold = 3.0

[[target]]
name = "all_close"
metric = "m.gap"
op = ">="
threshold = -1.5

[[target]]
name = "any_gain"
metric = "m.gain"
op = ">"
threshold = 0
require = "any"

[[target]]
name = "two"
  [[target.condition]]
  metric = "m.speed.value"
  op = ">"
  threshold = 1.0
  [[target.condition]]
  metric = "m.rss_ok"
  op = "=="
  threshold = true
  optional = true

[[target]]
name = "absent"
metric = "m.nothing"
op = "=="
threshold = true
""")
    res = {"m": {"speed": {"value": 2.5}, "gap": {"qat": -0.4, "dq": -2.0}, "gain": {"qat": -1.0, "dq": 0.5},
                 "rss_ok": None}}
    t = evaluate_targets(load_targets(f), res)
    assert t["fast"]["met"] is False and t["fast"]["value"] == 2.5
    assert t["all_close"]["met"] is False and t["all_close"]["per_key"] == {"qat": True, "dq": False}
    assert t["any_gain"]["met"] is True
    assert t["two"]["met"] is True  # the optional rss condition was not measured
    res["m"]["rss_ok"] = False
    assert evaluate_targets(load_targets(f), res)["two"]["met"] is False
    assert t["absent"]["met"] is None and t["absent"]["value"] is None  # not measured: not guessed
    md = "\n".join(markdown_table(t))
    assert "| fast | 2.500 | **NO** |" in md and "| absent | — | — |" in md
    assert markdown_table({}) == [] and resolve(res, "m.speed.value") == 2.5 and resolve(res, "m.x.y") is None


@pytest.mark.parametrize("text,needle", [("[[target]]\nname='a'\nmetric='x'\nop='~'\nthreshold=1\n", "op"),
                                         ("[[target]]\nmetric='x'\nop='>'\nthreshold=1\n", "name"),
                                         ("[[target]]\nname='a'\nop='>'\nthreshold=1\n", "metric"),
                                         ("x = 1\n", "no [[target]]"), ("[[target\n", "not TOML")])
def test_malformed_files_are_one_line_errors(tmp_path: Path, text: str, needle: str) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(QgnnError, match=needle.replace("[", r"\[")) as exc:
        load_targets(f)
    assert "\n" not in str(exc.value)


def test_cli_refuses_a_bad_targets_file_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from qgnn_deploy.cli import main

    assert main(["bench-suite", "--quick", "--targets", str(tmp_path / "missing.toml"),
                 "--out-dir", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.count("\n") == 1 and not (tmp_path / "out").exists()


def test_python_api_evaluation_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/python-api.md's evaluation example runs as written (tiny synthetic run) and applies the targets."""
    text = (REPO / "docs" / "python-api.md").read_text()
    blocks = [b.split("```")[0] for b in text.split("```python\n")[1:]]
    block = next(b for b in blocks if "run_evaluation(config)" in b)
    monkeypatch.chdir(REPO)
    scope: dict = {"out": tmp_path}
    exec(compile(block, "python-api.md", "exec"), scope)  # noqa: S102 - our own documentation
    res = scope["result"]
    assert {r["row"] for r in res.summary["rows"]} == {"fp32", "qat-int8-none"}
    assert set(res.summary["targets"]) == {"fp32>=80.5", "int8_within_1.5", "int4_prompt_improves"}
    assert res.summary["targets"]["int4_prompt_improves"]["met"] is None  # no INT4 rows: not measured
    assert "Targets: FP32 ≥ 80.5: " in res.markdown and isinstance(scope["fp32"], float)
    assert (tmp_path / "evaluation" / "runs").is_dir()


def test_ours_ort_vs_ort_fp32_takes_the_slower_input_contract() -> None:
    """Issue 12 asks for both input contracts: the metric is the smaller of the two speed-ups."""
    from qgnn_deploy.perf.metrics import suite_metrics

    def row(ms: float) -> dict:
        return {"latency_ms": {"median": ms}}

    res = {"rows": {"ort_fp32": row(6.0), "ours_ort": row(8.0), "ours_ort_u8": row(3.0), "pyg_eager": {}},
           "ratios": {}}
    m = suite_metrics(res)["ours_ort_vs_ort_fp32"]
    assert m["per_input"] == {"_fp32": 0.75, "_u8": 2.0} and m["value"] == 0.75
    res["rows"]["ours_ort"] = {"error": "failed"}  # a failed row is not measured, not a speed-up
    assert suite_metrics(res)["ours_ort_vs_ort_fp32"]["per_input"] == {"_u8": 2.0}
