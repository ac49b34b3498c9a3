"""export_graph / qgnn-export: complete, verifiable, all-or-nothing artifact directories."""

from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import pytest

from qgnn_deploy import cli
from qgnn_deploy.artifact import load_manifest
from qgnn_deploy.backends.onnx import HANDLERS, OnnxRunner
from qgnn_deploy.errors import QgnnError
from qgnn_deploy.exporting import export_graph
from qgnn_deploy.ir import run
from qgnn_deploy.ir.analysis import buffer_report, model_bytes
from qgnn_deploy.ir.graph import Graph
from qgnn_deploy.ir.testing import awkward_graphs, op_zoo_graph, pooled_zoo_graph

EXPECTED_FILES = {"manifest.json", "manifest.sha256", "model.onnx", "ir.json", "ir.npz", "sample_input.npz",
                  "reference_output.npz", "report.json", "report.md"}


def _sample(graph: Graph, case: str = "random") -> dict[str, np.ndarray]:
    x, ei = awkward_graphs(graph.inputs[0].shape[1])[case]
    feeds = {"x": x, "edge_index": ei}
    if any(v.name == "batch" for v in graph.inputs):
        feeds["batch"] = (np.arange(x.shape[0]) * 3 // max(x.shape[0], 1)).astype(np.int64)
    return feeds


def _leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if ".partial-" in p.name or ".old-" in p.name]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, Graph, dict]:
    graph = op_zoo_graph()
    feeds = _sample(graph)
    out = tmp_path_factory.mktemp("exp") / "art"
    manifest = export_graph(graph, "onnx", out, sample_feeds=feeds,
                            source={"path": "runs/cora/model.pt", "sha256": "ab" * 32},
                            report_extra={"accuracy": {"float": 0.815, "fake_quant": 0.811, "integer": 0.811}})
    return out, manifest, graph, feeds


def test_artifact_is_complete_and_verifies(artifact) -> None:
    out, manifest, graph, feeds = artifact
    assert {p.name for p in out.iterdir()} == EXPECTED_FILES
    doc = load_manifest(out)
    assert doc == manifest
    assert doc["target"] == "onnx"
    assert doc["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["N", 12]},
                             {"name": "edge_index", "dtype": "int64", "shape": [2, "E"]}]
    assert doc["outputs"] == [{"name": "y", "dtype": "float32", "shape": ["N", 16]}]
    assert doc["task"] == "node" and doc["num_classes"] == 16 and doc["max_in_degree"] == 1023
    assert doc["num_nodes"] is None
    assert doc["model_bytes"] == model_bytes(graph)
    assert doc["buffer_bytes"] == buffer_report(graph, feeds).peak_bytes
    assert doc["source_checkpoint_sha256"] == "ab" * 32
    assert {"python", "numpy", "onnx", "onnxruntime", "qgnn_deploy"} <= set(doc["tool_versions"])
    assert doc["files"]["model.onnx"]["role"] == "onnx"
    assert doc["files"]["sample_input.npz"]["role"] == "sample_input"
    assert doc["quantization"]["inputs"]["x"]["scale"] == pytest.approx(0.05)


def test_artifact_contents_round_trip(artifact) -> None:
    out, _, graph, feeds = artifact
    with np.load(out / "sample_input.npz", allow_pickle=False) as z:
        sample = {k: z[k] for k in z.files}
    with np.load(out / "reference_output.npz", allow_pickle=False) as z:
        reference = {k: z[k] for k in z.files}
    assert all(np.array_equal(sample[k], feeds[k]) for k in feeds)
    assert np.array_equal(reference["y"], run(graph, feeds)["y"])
    again = Graph.load(out / "ir")
    assert np.array_equal(run(again, sample)["y"], reference["y"])
    # the model alone (limits from its metadata) reproduces the reference
    got = OnnxRunner(out / "model.onnx", threads=2).run(sample)
    assert np.array_equal(got["y"], reference["y"])


def test_report_lists_float_ops_and_kernels(artifact) -> None:
    out, *_ = artifact
    report = json.loads((out / "report.json").read_text())
    assert report["float_ops"]["names"] == ["x_q", "y"]
    assert report["float_ops"]["only_at_boundary"] is True
    assert {e["op"] for e in report["float_ops"]["ops"]} == {"quantize", "dequantize"}
    assert report["parity"]["bit_exact"] is True and report["parity"]["threads"] == {"1": True, "2": True}
    assert report["kernels"]["optimized_ops"]["MatMulInteger"] == 3  # full-range int8 weights run u8 x u8
    assert report["model_size"]["onnx_file_bytes"] == (out / "model.onnx").stat().st_size
    assert report["bit_widths_derived"]["w"] == 4 and report["bit_widths_derived"]["h"] == 8
    assert report["accuracy"]["integer"] == pytest.approx(0.811)
    md = (out / "report.md").read_text()
    for needle in ("Float operations", "x_q", "MatMulInteger", "Bit-exact", "Accuracy", "int4 packed"):
        assert needle in md


def test_graph_level_artifact(tmp_path: Path) -> None:
    graph = pooled_zoo_graph()
    doc = export_graph(graph, "onnx", tmp_path / "g", sample_feeds=_sample(graph, "hub"))
    assert doc["task"] == "graph"
    assert doc["outputs"][0]["shape"] == ["G", 5]
    assert [i["name"] for i in doc["inputs"]] == ["x", "edge_index", "batch"]
    report = json.loads((tmp_path / "g" / "report.json").read_text())
    assert report["float_ops"]["only_at_boundary"] is True


def test_tampered_file_is_detected(tmp_path: Path) -> None:
    graph = op_zoo_graph()
    out = tmp_path / "art"
    export_graph(graph, "onnx", out, sample_feeds=_sample(graph))
    data = bytearray((out / "model.onnx").read_bytes())
    data[-1] ^= 0x01
    (out / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(QgnnError, match="checksum mismatch for model.onnx"):
        load_manifest(out)


def test_failure_mid_export_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    graph = op_zoo_graph()

    def boom(ctx, node):
        raise RuntimeError("handler exploded")

    monkeypatch.setitem(HANDLERS, "scatter_add", boom)
    with pytest.raises(RuntimeError, match="exploded"):
        export_graph(graph, "onnx", tmp_path / "art", sample_feeds=_sample(graph))
    assert not (tmp_path / "art").exists()
    assert _leftovers(tmp_path) == []


def test_failure_while_writing_keeps_previous_artifact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash after files were staged: no partial dir, and the old artifact is untouched."""
    graph = op_zoo_graph()
    out = tmp_path / "art"
    export_graph(graph, "onnx", out, sample_feeds=_sample(graph))
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    import qgnn_deploy.exporting as exporting

    def broken_md(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(exporting, "render_markdown", broken_md)
    with pytest.raises(QgnnError, match="disk full"):  # every OSError is a one-line user error
        export_graph(graph, "onnx", out, sample_feeds=_sample(graph, "hub"), force=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert _leftovers(tmp_path) == []
    load_manifest(out)


def test_force_semantics(tmp_path: Path) -> None:
    graph = op_zoo_graph()
    out = tmp_path / "art"
    export_graph(graph, "onnx", out, sample_feeds=_sample(graph), force=False)
    first = load_manifest(out)
    with pytest.raises(QgnnError, match="already exists"):
        export_graph(graph, "onnx", out, sample_feeds=_sample(graph, "hub"), force=False)
    assert load_manifest(out) == first
    export_graph(graph, "onnx", out, sample_feeds=_sample(graph, "hub"), force=True)
    second = load_manifest(out)
    assert second["files"]["sample_input.npz"]["sha256"] != first["files"]["sample_input.npz"]["sha256"]
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("target,message", [("bogus", "valid targets: onnx"), ("", "unknown target")])
def test_unknown_target(tmp_path: Path, target: str, message: str) -> None:
    graph = op_zoo_graph()
    with pytest.raises(QgnnError, match=message):
        export_graph(graph, target, tmp_path / "art", sample_feeds=_sample(graph))
    assert not (tmp_path / "art").exists()


def test_bad_sample_input_writes_nothing(tmp_path: Path) -> None:
    graph = op_zoo_graph()
    feeds = _sample(graph)
    feeds["edge_index"] = feeds["edge_index"].copy()
    feeds["edge_index"][0, 0] = 60
    with pytest.raises(QgnnError, match="outside"):
        export_graph(graph, "onnx", tmp_path / "art", sample_feeds=feeds)
    graph.meta["max_in_degree"] = 2
    with pytest.raises(QgnnError, match="in-degree"):
        export_graph(graph, "onnx", tmp_path / "art", sample_feeds=_sample(graph))
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------ CLI
@pytest.fixture
def fake_fold(monkeypatch: pytest.MonkeyPatch) -> None:
    """fold_checkpoint without training a model: the CLI plumbing only (the slow suite folds real checkpoints)."""
    import qgnn_deploy.fold as fold

    def fold_checkpoint(path, **kwargs):
        graph = op_zoo_graph()
        return types.SimpleNamespace(graph=graph, sample_feeds=_sample(graph), checkpoint_sha256="cd" * 32,
                                     report={"accuracy": {"fake_quant": 0.8}, "bit_widths": {"h": 8}})

    monkeypatch.setattr(fold, "fold_checkpoint", fold_checkpoint, raising=False)


def test_cli_export(tmp_path: Path, fake_fold, capsys: pytest.CaptureFixture) -> None:
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"not read by the fake fold")
    out = tmp_path / "art"
    assert cli.main(["export", str(ckpt), "--target", "onnx", "--out", str(out)]) == 0
    doc = load_manifest(out)
    assert doc["source_checkpoint_sha256"] == "cd" * 32
    assert json.loads((out / "report.json").read_text())["bit_widths"] == {"h": 8}
    assert "model.onnx" in capsys.readouterr().out
    # without --force an existing directory is refused, with it replaced
    assert cli.main(["export", str(ckpt), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    sample = tmp_path / "s.npz"
    x, ei = awkward_graphs(12)["hub"]
    np.savez(sample, x=x, edge_index=ei)
    assert cli.main(["export", str(ckpt), "--out", str(out), "--force", "--sample-graph", str(sample)]) == 0
    with np.load(out / "sample_input.npz") as z:
        assert z["x"].shape == x.shape


def test_cli_export_integer_input(tmp_path: Path, fake_fold, capsys: pytest.CaptureFixture) -> None:
    """--integer-input: the artifact takes uint8 x_q, states its quantization, and is still checked bit-exact."""
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"not read by the fake fold")
    out = tmp_path / "art"
    assert cli.main(["export", str(ckpt), "--out", str(out), "--integer-input"]) == 0
    doc = load_manifest(out)
    assert doc["inputs"][0] == {"name": "x_q", "dtype": "uint8", "shape": ["N", 12]}
    assert doc["input_quant"]["float_input"] == "x" and doc["input_quant"]["scale"] == pytest.approx(0.05)
    assert doc["quantization"]["inputs"]["x_q"]["prequantized_from"] == "x"
    report = json.loads((out / "report.json").read_text())
    assert report["parity"]["bit_exact"] is True and report["float_ops"]["names"] == ["y"]
    with np.load(out / "sample_input.npz") as z:
        assert sorted(z.files) == ["edge_index", "x_q"] and z["x_q"].dtype == np.uint8
    with np.load(out / "reference_output.npz") as z:
        graph = op_zoo_graph()
        assert np.array_equal(z["y"], run(graph, _sample(graph))["y"])  # same output as the float-input model


def test_cli_integer_input_refused_for_per_node_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture) -> None:
    import qgnn_deploy.fold as fold

    graph = pooled_zoo_graph()
    monkeypatch.setattr(fold, "fold_checkpoint", lambda path, **kw: types.SimpleNamespace(
        graph=graph, sample_feeds=_sample(graph), checkpoint_sha256="cd" * 32, report={}), raising=False)
    (tmp_path / "m.pt").write_bytes(b"x")
    assert cli.main(["export", str(tmp_path / "m.pt"), "--out", str(tmp_path / "o"), "--integer-input"]) == 2
    err = capsys.readouterr().err
    assert "--integer-input" in err and "per-node" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("argv,message", [
    (["export", "missing.pt", "--out", "o"], "checkpoint missing.pt not found"),
    (["export", "{ckpt}", "--out", "o", "--target", "riscv"], "valid targets: onnx"),
    (["export", "{ckpt}", "--out", "o", "--sample-graph", "nope.npz"], "sample graph nope.npz not found"),
])
def test_cli_errors_are_one_line(tmp_path: Path, fake_fold, capsys: pytest.CaptureFixture, monkeypatch,
                                 argv: list[str], message: str) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.pt").write_bytes(b"x")
    argv = [a.replace("{ckpt}", "m.pt") for a in argv]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_compiled_target_artifact(tmp_path: Path) -> None:
    """x86_64 through the TVM backend: library + model.onnx in one verified artifact."""
    pytest.importorskip("tvm")
    graph = op_zoo_graph()
    out = tmp_path / "x86"
    doc = export_graph(graph, "x86_64", out, sample_feeds=_sample(graph))
    load_manifest(out)
    libs = [k for k, v in doc["files"].items() if v["role"] == "tvm_library"]
    assert libs == [doc["library"]] and (out / "model.onnx").is_file()
    assert doc["tvm_bit_exact_on_sample"] is True
    assert "tvm" in doc["tool_versions"]
    assert json.loads((out / "report.json").read_text())["compiled"]["library"] == doc["library"]


@pytest.mark.slow
@pytest.mark.parametrize("train_args", [
    ["--dataset", "synthetic", "--arch", "gcn", "--framework", "qat", "--bits", "4", "--lorap"],
    ["--dataset", "synthetic", "--arch", "gin", "--framework", "dq", "--bits", "8", "--lorap"],
    ["--dataset", "synthetic-graphs", "--arch", "gin", "--framework", "qat", "--bits", "8"],
    ["--dataset", "synthetic", "--arch", "gcn", "--framework", "a2q", "--bits", "4"],  # quantize_rows + row factors
    ["--dataset", "synthetic", "--arch", "sage", "--framework", "mixq", "--bits", "8", "--lorap"],
])
def test_cli_train_then_export_end_to_end(tmp_path: Path, train_args: list[str]) -> None:
    """Real checkpoint -> real fold -> artifact whose ONNX model reproduces the interpreter on the sample."""
    ckpt = tmp_path / "model.pt"
    assert cli.main(["train", *train_args, "--hidden", "16", "--epochs", "2", "--no-progress",
                     "--out", str(ckpt)]) == 0
    out = tmp_path / "art"
    assert cli.main(["export", str(ckpt), "--target", "onnx", "--out", str(out)]) == 0
    doc = load_manifest(out)
    report = json.loads((out / "report.json").read_text())
    assert report["parity"]["bit_exact"] and report["float_ops"]["only_at_boundary"]
    assert report["source_parity"]["mismatched_codes"] == 0  # fold's own fake-quant vs integer check
    acc = report["accuracy"]
    assert acc["onnx_runtime"] == acc["integer_interpreter"] == acc["fake_quant"]
    with np.load(out / "sample_input.npz") as z:
        sample = {k: z[k] for k in z.files}
    with np.load(out / "reference_output.npz") as z:
        reference = {k: z[k] for k in z.files}
    got = OnnxRunner(out / "model.onnx", threads=2).run(sample)
    assert all(np.array_equal(got[k], reference[k]) for k in reference)
    assert doc["source_checkpoint_sha256"] and doc["task"] in ("node", "graph")
