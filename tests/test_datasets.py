"""Dataset specs through the real PyG / ogb loaders, reading tiny files in each dataset's real raw format."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from raw_datasets import write_gnnbenchmark, write_ogbn_arxiv, write_planetoid, write_tu, write_zinc
from torch_geometric.data import Data

from qgnn_deploy import cli
from qgnn_deploy.data.specs import ACCEPTED_FORMS, load_dataset, parse_spec
from qgnn_deploy.errors import QgnnError
from qgnn_deploy.fold import max_in_degree_for, observed_max_in_degree


# --------------------------------------------------------------------------------------------- specs
@pytest.mark.parametrize(
    "spec",
    [
        "",
        "mnist",
        "planetoid:Reddit",
        "tu:",
        "tu:../etc",
        "file:graph.csv",
        "gnnbenchmark:TSP",
        "ogb:ogbn-mag",
        "synthetic:nodes",
        "zinc:full",
    ],
)
def test_bad_spec_is_one_line_with_the_accepted_forms(spec: str) -> None:
    with pytest.raises(QgnnError) as err:
        parse_spec(spec)
    assert "\n" not in str(err.value) and ACCEPTED_FORMS in str(err.value)


def test_spec_forms() -> None:
    assert (parse_spec("cora").kind, parse_spec("cora").name) == ("planetoid", "Cora")
    assert str(parse_spec("planetoid:citeseer")) == "planetoid:CiteSeer"
    assert str(parse_spec("gnnbenchmark:cifar10")) == "gnnbenchmark:CIFAR10"
    assert str(parse_spec("tu:REDDIT-BINARY")) == "tu:REDDIT-BINARY"
    # generator options pass through as keyword arguments (numbers cast)
    s = parse_spec("synthetic:nodes=200000,degree=15")
    assert (s.kind, s.options) == ("synthetic", {"nodes": 200000, "degree": 15})
    ds = load_dataset("synthetic:num_nodes=120,num_classes=3")
    assert (
        ds.data.num_nodes == 120
        and ds.num_classes == 3
        and ds.describe()["spec"] == "synthetic:num_nodes=120,num_classes=3"
    )
    with pytest.raises(QgnnError, match="unknown option"):
        load_dataset("synthetic:colour=3")


def test_cli_unknown_dataset_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["train", "--dataset", "imagenet", "--out", str(tmp_path / "m.pt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "accepted forms" in err and not (tmp_path / "m.pt").exists()


def test_missing_raw_files_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QGNN_SHARED_DATASETS", str(tmp_path / "none"))
    import torch_geometric.data.dataset as pyg_dataset

    def offline(*args, **kwargs):  # no network here either way: fail fast instead of waiting on DNS
        raise OSError("offline")

    monkeypatch.setattr(pyg_dataset.Dataset, "download", offline)
    with pytest.raises(QgnnError) as err:
        load_dataset("tu:PROTEINS", tmp_path)
    assert "\n" not in str(err.value) and "TUDataset" in str(err.value)


# --------------------------------------------------------------------------------------------- loaders
def test_planetoid_citeseer_raw(tmp_path: Path) -> None:
    write_planetoid(tmp_path)
    ds = load_dataset("planetoid:CiteSeer", tmp_path)
    d = ds.data
    assert (ds.task, ds.num_classes, ds.num_features, d.num_nodes) == ("node", 3, 12, 660)
    assert (int(d.train_mask.sum()), int(d.val_mask.sum()), int(d.test_mask.sum())) == (30, 500, 95)
    isolated = (~d.test_mask[560:]).nonzero().view(-1) + 560  # ids missing from test.index: zero-padded by PyG
    assert len(isolated) == 5 and float(d.x[isolated].abs().sum()) == 0.0
    assert ds.describe()["split"] == {"kind": "standard"}


@pytest.mark.parametrize("with_labels", [True, False])
def test_tu_raw(tmp_path: Path, with_labels: bool) -> None:
    write_tu(tmp_path, with_labels=with_labels)
    ds = load_dataset("tu:TOYRINGS", tmp_path, split_seed=3)
    assert (ds.task, ds.num_classes, len(ds.graphs)) == ("graph", 2, 40)
    # node labels (3 one-hot) + 2 attributes, or the one-hot degree when the dataset has no node features
    assert ds.num_features == (5 if with_labels else 64)
    assert sorted(sum(ds.splits.values(), [])) == list(range(40)) and len(ds.splits["test"]) == 4
    assert ds.describe()["split"] == {"kind": "random", "seed": 3, "fractions": [0.8, 0.1, 0.1]}
    assert ds.splits == load_dataset("tu:TOYRINGS", tmp_path, split_seed=3).splits
    assert ds.splits != load_dataset("tu:TOYRINGS", tmp_path, split_seed=4).splits
    rings = [g for g in ds.graphs if int(g.y) == 0]  # label 1 in the file -> class 0
    assert all(int(torch.bincount(g.edge_index[1]).max()) == 2 for g in rings)


def test_zinc_raw(tmp_path: Path) -> None:
    write_zinc(tmp_path)
    ds = load_dataset("zinc", tmp_path)
    assert (ds.task, ds.regression, ds.num_classes, ds.num_features) == ("graph", True, 1, 28)
    assert [len(ds.splits[s]) for s in ("train", "val", "test")] == [60, 20, 20]
    g = ds.graphs[0]
    assert g.y.dtype == torch.float32 and float(g.x.sum()) == g.num_nodes  # one-hot atom types
    assert ds.describe()["metric"] == "mae"


def test_gnnbenchmark_raw(tmp_path: Path) -> None:
    write_gnnbenchmark(tmp_path, "MNIST")
    ds = load_dataset("gnnbenchmark:MNIST", tmp_path)
    assert (ds.task, ds.num_classes, ds.num_features) == ("graph", 2, 3)  # intensity + (x, y) position
    assert [len(ds.splits[s]) for s in ("train", "val", "test")] == [30, 10, 10]


def test_ogb_arxiv_raw(tmp_path: Path) -> None:
    pytest.importorskip("ogb")
    write_ogbn_arxiv(tmp_path)
    for _ in range(2):  # the second load reads ogb's processed file (weights-only, PyG classes allowed)
        ds = load_dataset("ogb:ogbn-arxiv", tmp_path)
    d = ds.data
    assert (d.num_nodes, ds.num_features, ds.num_classes) == (300, 8, 40)
    assert (int(d.train_mask.sum()), int(d.val_mask.sum()), int(d.test_mask.sum())) == (180, 60, 60)
    assert d.edge_index.shape[1] == 2 * len(np.unique(np.sort(d.edge_index.numpy().T, axis=1), axis=0))  # undirected


# --------------------------------------------------------------------------------------------- files
def _node_graph(n: int = 90, seed: int = 0) -> Data:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = torch.nn.functional.one_hot(y, 3).float() * 2 + torch.randn(n, 3, generator=g)
    src = torch.arange(n)
    dst = (src + 3) % n  # same class three steps on
    return Data(x=x, edge_index=torch.cat([torch.stack([src, dst]), torch.stack([dst, src])], 1), y=y)


def test_file_pt_node_graph_with_masks(tmp_path: Path) -> None:
    d = _node_graph()
    d.train_mask = torch.arange(90) < 50
    d.val_mask = (torch.arange(90) >= 50) & (torch.arange(90) < 70)
    d.test_mask = torch.arange(90) >= 70
    torch.save(d, tmp_path / "g.pt")
    ds = load_dataset(f"file:{tmp_path / 'g.pt'}")
    assert (ds.task, ds.num_classes, int(ds.data.test_mask.sum())) == ("node", 3, 20)
    desc = ds.describe()
    assert desc["split"] == {"kind": "file"} and len(desc["source"]["sha256"]) == 64


def test_file_pt_list_of_graphs_and_npz(tmp_path: Path) -> None:
    graphs = [
        Data(x=torch.ones(4, 2) * i, edge_index=torch.tensor([[0, 1, 2], [1, 2, 3]]), y=torch.tensor([i % 2]))
        for i in range(10)
    ]
    torch.save(graphs, tmp_path / "gs.pt")
    ds = load_dataset(f"file:{tmp_path / 'gs.pt'}", split_seed=1)
    assert (ds.task, ds.num_classes, len(ds.graphs), ds.split["kind"]) == ("graph", 2, 10, "random")
    # the same graphs as one .npz with a batch vector; float y = regression
    batch = np.repeat(np.arange(10), 4)
    ei = np.concatenate([np.array([[0, 1, 2], [1, 2, 3]]) + 4 * i for i in range(10)], axis=1)
    np.savez(
        tmp_path / "gs.npz",
        x=np.ones((40, 2), np.float32),
        edge_index=ei,
        batch=batch,
        y=np.linspace(0, 1, 10).astype(np.float32),
    )
    ds = load_dataset(f"file:{tmp_path / 'gs.npz'}")
    assert (ds.task, ds.regression, ds.num_classes, len(ds.graphs)) == ("graph", True, 1, 10)
    assert torch.equal(ds.graphs[3].edge_index, torch.tensor([[0, 1, 2], [1, 2, 3]]))


def test_file_npz_without_masks_gets_a_seeded_split(tmp_path: Path) -> None:
    d = _node_graph()
    np.savez(tmp_path / "g.npz", x=d.x.numpy(), edge_index=d.edge_index.numpy(), y=d.y.numpy())
    a = load_dataset(f"file:{tmp_path / 'g.npz'}", split_seed=7)
    assert a.describe()["split"] == {"kind": "random", "seed": 7, "fractions": [0.6, 0.2, 0.2]}
    assert torch.equal(a.data.test_mask, load_dataset(f"file:{tmp_path / 'g.npz'}", split_seed=7).data.test_mask)
    assert int(a.data.train_mask.sum()) == 54


class NotAGraph:  # any class other than PyG's Data must be refused, never unpickled
    pass


@pytest.mark.parametrize(
    "payload,message",
    [
        (lambda: argparse.Namespace(x=1), "refused"),
        (lambda: [NotAGraph()], "refused"),
        (lambda: {"x": torch.ones(2, 2)}, "expected a torch_geometric Data"),
        (
            lambda: Data(x=torch.ones(3, 2), edge_index=torch.tensor([[0], [7]]), y=torch.zeros(3, dtype=torch.long)),
            "outside 0..2",
        ),
        (
            lambda: Data(x=torch.ones(3, 2), edge_index=torch.tensor([[0], [1]]), y=torch.zeros(2, dtype=torch.long)),
            "y has 2 entries for 3 nodes",
        ),
    ],
)
def test_file_pt_refuses_bad_files(tmp_path: Path, payload, message: str) -> None:
    path = tmp_path / "bad.pt"
    torch.save(payload(), path)
    with pytest.raises(QgnnError, match=message) as err:
        load_dataset(f"file:{path}")
    assert "\n" not in str(err.value)


def test_file_npz_refuses_object_arrays_and_missing_arrays(tmp_path: Path) -> None:
    np.savez(tmp_path / "o.npz", x=np.array([{"a": 1}], dtype=object), edge_index=np.zeros((2, 0)), y=np.zeros(1))
    with pytest.raises(QgnnError, match="object arrays are refused"):
        load_dataset(f"file:{tmp_path / 'o.npz'}")
    np.savez(tmp_path / "m.npz", x=np.ones((2, 2), np.float32))
    with pytest.raises(QgnnError, match="missing array"):
        load_dataset(f"file:{tmp_path / 'm.npz'}")
    with pytest.raises(QgnnError, match="not found"):
        load_dataset(f"file:{tmp_path / 'absent.npz'}")


def test_max_in_degree_rule_is_public() -> None:
    ei = np.array([[0, 1, 2, 3, 4], [5, 5, 5, 5, 0]])
    assert observed_max_in_degree(ei, 6) == 4
    assert max_in_degree_for(ei, 6) == 1023  # the default covers small fan-in
    hub = np.stack([np.arange(1, 1001), np.zeros(1000, np.int64)])
    assert max_in_degree_for(hub, 1001) == 4095  # next 2^k - 1 above 4x the observed 1000


# --------------------------------------------------------------------------------------------- end to end
def _report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def test_citeseer_train_export_stages_agree(tmp_path: Path) -> None:
    """planetoid:CiteSeer (raw fixture) -> qgnn-train -> qgnn-export: fake-quant = integer = ORT accuracy."""
    root = write_planetoid(tmp_path / "data")
    ckpt = tmp_path / "m.pt"
    assert (
        cli.main(
            [
                "train",
                "--dataset",
                "planetoid:CiteSeer",
                "--data-root",
                str(root),
                "--epochs",
                "15",
                "--no-progress",
                "--out",
                str(ckpt),
            ]
        )
        == 0
    )
    out = tmp_path / "art"
    assert cli.main(["export", str(ckpt), "--data-root", str(root), "--out", str(out)]) == 0
    acc = _report(out)["accuracy"]
    assert acc["fake_quant"] == acc["integer_interpreter"] == acc["onnx_runtime"] > 0.6
    assert acc["checkpoint (training run)"] == pytest.approx(acc["fake_quant"], abs=0.02)
    assert _report(out)["dataset"]["spec"] == "planetoid:CiteSeer"


def test_file_graph_train_export_and_sample_input(tmp_path: Path) -> None:
    """file:graph.pt trains and exports; moved elsewhere it is found through --data-root; --sample-input scores."""
    d = _node_graph(120)
    torch.save(d, tmp_path / "my_graph.pt")
    ckpt = tmp_path / "m.pt"
    assert (
        cli.main(
            [
                "train",
                "--dataset",
                f"file:{tmp_path / 'my_graph.pt'}",
                "--split-seed",
                "5",
                "--epochs",
                "20",
                "--no-progress",
                "--out",
                str(ckpt),
            ]
        )
        == 0
    )
    payload = torch.load(ckpt, weights_only=True)
    assert payload["dataset"]["split"] == {"kind": "random", "seed": 5, "fractions": [0.6, 0.2, 0.2]}
    elsewhere = tmp_path / "other"
    elsewhere.mkdir()
    shutil.move(tmp_path / "my_graph.pt", elsewhere / "my_graph.pt")
    assert cli.main(["export", str(ckpt), "--out", str(tmp_path / "a1")]) == 2  # neither path nor root has it
    assert cli.main(["export", str(ckpt), "--data-root", str(elsewhere), "--out", str(tmp_path / "a1")]) == 0
    acc = _report(tmp_path / "a1")["accuracy"]
    assert acc["fake_quant"] == acc["integer_interpreter"] == acc["onnx_runtime"]
    assert acc["checkpoint (training run)"] == pytest.approx(acc["onnx_runtime"], abs=0.05)
    # a sample graph the exporting machine has, with labels: every node is scored
    np.savez(tmp_path / "s.npz", x=d.x.numpy(), edge_index=d.edge_index.numpy(), y=d.y.numpy())
    assert (
        cli.main(["export", str(ckpt), "--sample-input", str(tmp_path / "s.npz"), "--out", str(tmp_path / "a2")]) == 0
    )
    acc2 = _report(tmp_path / "a2")["accuracy"]
    assert acc2["integer_interpreter"] == acc2["onnx_runtime"] and "checkpoint (training run)" not in acc2
    with np.load(tmp_path / "a2" / "sample_input.npz") as z:
        assert z["x"].shape == (120, 3)


def test_tu_graph_classification_end_to_end(tmp_path: Path) -> None:
    root = write_tu(tmp_path / "data")
    ckpt = tmp_path / "m.pt"
    assert (
        cli.main(
            [
                "train",
                "--dataset",
                "tu:TOYRINGS",
                "--data-root",
                str(root),
                "--arch",
                "gin",
                "--epochs",
                "10",
                "--no-progress",
                "--out",
                str(ckpt),
            ]
        )
        == 0
    )
    out = tmp_path / "art"
    assert cli.main(["export", str(ckpt), "--data-root", str(root), "--out", str(out)]) == 0
    rep = _report(out)
    acc = rep["accuracy"]
    assert acc["fake_quant"] == acc["integer_interpreter"] == acc["onnx_runtime"]
    assert rep["task"] == "graph" and rep["dataset"]["split"]["kind"] == "random"


@pytest.mark.parametrize("target", ["onnx", pytest.param("x86_64-generic", marks=pytest.mark.slow)])
def test_zinc_regression_end_to_end_onnx_and_tvm(tmp_path: Path, target: str) -> None:
    """ZINC-style graph regression: L1 training, MAE at every stage, one float output dequantized, ORT and TVM."""
    from qgnn_deploy.data.scoring import score

    root = write_zinc(tmp_path / "data")
    ckpt = tmp_path / "m.pt"
    assert (
        cli.main(
            [
                "train",
                "--dataset",
                "zinc",
                "--data-root",
                str(root),
                "--arch",
                "gin",
                "--epochs",
                "15",
                "--no-progress",
                "--out",
                str(ckpt),
            ]
        )
        == 0
    )
    metrics = torch.load(ckpt, weights_only=True)["metrics"]
    assert metrics["metric"] == "mae" and "test_mae" in metrics and "test_acc" not in metrics
    out = tmp_path / "art"
    assert cli.main(["export", str(ckpt), "--data-root", str(root), "--target", target, "--out", str(out)]) == 0
    rep = _report(out)
    mae = rep["mae"]
    assert "accuracy" not in rep
    assert mae["integer_interpreter"] == mae["onnx_runtime"]
    assert mae["fake_quant"] == pytest.approx(mae["integer_interpreter"], abs=0.02)
    assert mae["checkpoint (training run)"] == pytest.approx(mae["fake_quant"], abs=0.02)
    assert [o["op"] for o in rep["float_ops"]["ops"]] == ["quantize", "dequantize"]  # float only at the boundary
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["outputs"][0]["shape"] == ["G", 1]
    if target == "onnx":
        return
    pytest.importorskip("tvm")
    from qgnn_deploy.backends.tvm import run_library

    assert manifest["tvm_bit_exact_on_sample"] is True
    with np.load(out / "sample_input.npz") as z:
        feeds = {k: z[k] for k in z.files}
    tvm_out = run_library(out / manifest["library"], feeds, list(feeds))
    assert score(tvm_out, load_dataset("zinc", root)) == pytest.approx(mae["onnx_runtime"], abs=1e-9)


@pytest.mark.parametrize(
    "spec,arch,writer", [("planetoid:CiteSeer", "gcn", write_planetoid), ("zinc", "gin", write_zinc)]
)
def test_evaluate_any_spec(tmp_path: Path, spec: str, arch: str, writer) -> None:
    """qgnn evaluate --dataset SPEC: the same table for any dataset; MAE columns for regression; deployed filled."""
    root = writer(tmp_path / "data")
    out = tmp_path / "ev"
    args = [
        "evaluate",
        "--dataset",
        spec,
        "--data-root",
        str(root),
        "--arch",
        arch,
        "--frameworks",
        "qat",
        "--bits",
        "8",
        "--prompts",
        "none",
        "--seeds",
        "0",
        "--epochs",
        "3",
        "--out-dir",
        str(out),
        "--no-progress",
    ]
    assert cli.main(args) == 0
    rep = json.loads((out / "evaluation.json").read_text())
    rows = {r["row"]: r for r in rep["summary"]["rows"]}
    assert set(rows) == {"fp32", "qat-int8-none"}
    md = (out / "evaluation.md").read_text()
    qat = rows["qat-int8-none"]
    assert not np.isnan(qat["deployed_mean"])  # folded integer graph through ORT, scored on the test split
    if spec == "zinc":
        assert rep["summary"]["metric"] == "mae" and "| Test MAE |" in md and "test_mae" in qat
    else:
        assert rep["summary"]["metric"] == "accuracy" and "| Test acc (%) |" in md and "Targets" not in md
        assert abs(qat["deployed_mean"] - qat["test_mean"]) <= 2.0  # % points


def test_evaluate_bad_spec_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["evaluate", "--dataset", "tu:", "--out-dir", str(tmp_path / "ev"), "--no-progress"]) == 2
    assert capsys.readouterr().err.count("\n") == 1 and not (tmp_path / "ev").exists()


def test_python_api_walkthrough(tmp_path: Path) -> None:
    """docs/python-api.md shows examples/python_api.py's marked block verbatim, and the script runs (quick)."""
    import importlib.util
    import textwrap

    repo = Path(__file__).resolve().parents[1]
    script = (repo / "examples" / "python_api.py").read_text()
    block = textwrap.dedent(script.split("    # api:start\n")[1].split("    # api:end\n")[0])
    assert f"```python\n{block}```" in (repo / "docs" / "python-api.md").read_text()
    spec = importlib.util.spec_from_file_location("python_api", repo / "examples" / "python_api.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for extra in ([], ["--wrap"]):
        res = module.main(["--quick", "--out-dir", str(tmp_path / f"api{len(extra)}"), *extra])
        stages = res["stages"]
        assert stages["fake_quant"] == stages["integer_interpreter"] == stages["onnx_runtime"]
        assert res["bench"]["reference"]["match"] is True and res["parity"]["mismatched_codes"] == 0
