"""GAT: integer segment softmax, fake-quant <-> interpreter parity, ONNX Runtime and TVM (x86-64, aarch64) exactness.

The model's forward computes the attention coefficients with the integer program fold emits, so the integer graph
matches it code for code (the float caveat of ``test_fold.py`` applies to the float32 sums around it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from bench_artifacts import run_libraries_under_qemu
from torch_geometric.utils import softmax as segment_softmax

from qgnn_deploy.data.datasets import make_synthetic_nodes
from qgnn_deploy.errors import QgnnError
from qgnn_deploy.fold import fold_model
from qgnn_deploy.fold.parity import graph_output_codes, model_output_codes, parity_report
from qgnn_deploy.ir.interpreter import run
from qgnn_deploy.ir.testing import awkward_graphs
from qgnn_deploy.models.gat import ATT_DEN, QGATConv, integer_attention, leaky_int
from qgnn_deploy.models.net import ModelConfig, default_bits
from qgnn_deploy.train.trainer import TrainSettings, train

MAX_ONE_STEP_FRACTION = 1e-3


@pytest.fixture(scope="module")
def synthetic():
    torch.set_num_threads(2)
    return make_synthetic_nodes(num_nodes=240, num_features=16)


def _train(ds, epochs: int = 6, **cfg) -> torch.nn.Module:
    base = dict(
        arch="gat",
        in_dim=ds.num_features,
        hidden=4,
        heads=2,
        out_dim=ds.num_classes,
        framework="qat",
        bits=default_bits(8),
        task=ds.task,
    )
    base.update(cfg)
    return train(ModelConfig(**base), ds, TrainSettings(epochs=epochs, progress=False)).model


def _feeds(ds) -> dict[str, np.ndarray]:
    return {"x": ds.data.x.numpy(), "edge_index": ds.data.edge_index.numpy()}


def _assert_parity(rep: dict) -> None:
    assert rep["max_code_diff"] <= 1, rep
    assert rep["mismatched_codes"] <= max(2, MAX_ONE_STEP_FRACTION * rep["output_codes"]), rep


def test_leaky_relu_is_a_fixed_point_multiply_shift() -> None:
    z = torch.arange(-300, 301, dtype=torch.int64)
    expect = torch.where(z >= 0, z, torch.floor(z.double() * 51 / 256 + 0.5).long())
    assert torch.equal(leaky_int(z), expect)


def test_integer_attention_is_a_softmax_over_incoming_edges_and_self_loop() -> None:
    """Alpha sums to ATT_DEN per node (within rounding) and is close to PyG's float softmax of the same (integer
    LeakyReLU) logits."""
    g = torch.Generator().manual_seed(0)
    n, heads, e = 30, 3, 120
    src, dst = torch.randint(0, n, (e,), generator=g), torch.randint(0, n, (e,), generator=g)
    dst[:5] = 0  # a hub, and nodes without incoming edges
    p, q = torch.randint(-127, 128, (n, heads), generator=g), torch.randint(-127, 128, (n, heads), generator=g)
    scale = 0.02
    a_e, a_s = integer_attention(p, q, src, dst, scale, 127)
    total = a_s.clone().scatter_add_(0, dst[:, None].expand(-1, heads), a_e)
    deg = torch.bincount(dst, minlength=n)[:, None] + 1
    assert (total - ATT_DEN).abs().le(deg).all()  # each of deg + 1 terms rounds by at most 1/2
    z = leaky_int(torch.cat([p[src] + q[dst], p + q])).double() * scale
    ref = segment_softmax(z, torch.cat([dst, torch.arange(n)]), num_nodes=n)
    got = torch.cat([a_e, a_s]).double() / ATT_DEN
    assert (got - ref).abs().max() < 2e-3


@pytest.mark.parametrize("framework", ["qat", "dq", "a2q", "mixq"])
def test_fold_matches_fake_quant(synthetic, framework):
    """Every framework at INT4 with LoRAP (INT8: the averaged-heads and backend tests below)."""
    model = _train(synthetic, framework=framework, bits=default_bits(4), lorap={"k": 4, "rank": 2})
    graph = fold_model(model, max_in_degree=255)
    rep = parity_report(model, graph, _feeds(synthetic), synthetic)
    _assert_parity(rep)
    assert rep["test_acc_integer"] == pytest.approx(rep["test_acc_fake_quant"], abs=2 / 100)
    assert graph.float_ops() == ["x_q", "logits"]
    assert {"scatter_max", "lut", "div_floor"} <= set(graph.op_counts()) or "lut_steps" in graph.op_counts()


@pytest.mark.parametrize("prompt", [None, "softmax", "lora"])
def test_fold_averaged_heads_and_prompts(synthetic, prompt):
    """Averaged heads in the last layer (out_heads > 1), with each prompt variant."""
    lorap = None if prompt is None else {"k": 4, "rank": 2, "variant": prompt}
    model = _train(synthetic, heads=3, out_heads=2, lorap=lorap)
    assert isinstance(model.layers[-1], QGATConv) and not model.layers[-1].concat and model.layers[-1].heads == 2
    graph = fold_model(model, max_in_degree=255)
    _assert_parity(parity_report(model, graph, _feeds(synthetic), synthetic))


def test_many_heads_fold_as_one_attention(synthetic):
    """Concatenated heads (10 of them) fold into one GEMM, one [E, H] softmax and one aggregation: no concat, and
    the op count does not grow with the number of heads."""
    counts = {}
    for heads in (3, 10):
        model = _train(synthetic, epochs=2, heads=heads, hidden=2)
        graph = fold_model(model, max_in_degree=255)
        counts[heads] = graph.op_counts()
        _assert_parity(parity_report(model, graph, _feeds(synthetic), synthetic))
    assert "concat" not in counts[10] and counts[10] == counts[3]
    assert counts[10]["scatter_max"] == 2  # one segment max per layer


def test_fold_awkward_graphs_interpreter_and_onnx_runtime(synthetic):
    """Empty graph, isolated nodes, hubs, self loops, duplicates: interpreter == model, ORT == interpreter at 1 and
    2 threads."""
    from qgnn_deploy.backends.onnx import export_onnx
    from qgnn_deploy.backends.onnx.runner import OnnxRunner

    model = _train(synthetic, bits=default_bits(4), lorap={"k": 4, "rank": 2})
    graph = fold_model(model, max_in_degree=255)
    proto = export_onnx(graph)
    runners = [OnnxRunner(proto, graph, threads=t) for t in (1, 2)]
    for name, (x, ei) in awkward_graphs(synthetic.num_features, seed=3).items():
        feeds = {"x": x, "edge_index": ei}
        _, codes_m = model_output_codes(model, feeds)
        logits_g, codes_g = graph_output_codes(graph, feeds)
        diff = np.abs(codes_m - codes_g)
        assert diff.max(initial=0) <= 1, name
        assert (diff > 0).sum() <= 2, name
        for r in runners:
            np.testing.assert_array_equal(next(iter(r.run(feeds).values())), logits_g, err_msg=name)


def test_accumulator_bound_checked_at_fold_time(synthetic):
    model = _train(synthetic, epochs=1)
    with pytest.raises(QgnnError, match="accumulator"):
        fold_model(model, max_in_degree=2**20)


def test_fp32_gat_trains_and_is_refused_by_fold(synthetic):
    model = _train(synthetic, epochs=2, framework="fp32", bits=default_bits(32))
    with pytest.raises(QgnnError, match="FP32"):
        fold_model(model)


@pytest.fixture(scope="module")
def small_gat(synthetic):
    model = _train(synthetic, bits=default_bits(8), lorap={"k": 4, "rank": 2})
    return fold_model(model, max_in_degree=255)


@pytest.mark.slow  # default-run budget (CI ~20 min on 2 cores): `bash export/run.sh test-all` runs it
def test_tvm_x86_bit_exact_on_awkward_graphs(small_gat, synthetic, tmp_path: Path):
    from qgnn_deploy.backends.tvm import compile_to_dir, run_library

    fields = compile_to_dir(small_gat, "x86_64", tmp_path, sample_feeds=_feeds(synthetic))
    for name, (x, ei) in {
        "sample": (synthetic.data.x.numpy(), synthetic.data.edge_index.numpy()),
        **awkward_graphs(synthetic.num_features, seed=3),
    }.items():
        feeds = {"x": x, "edge_index": ei}
        ref = run(small_gat, feeds)["logits"]
        np.testing.assert_array_equal(run_library(tmp_path / fields["library"], feeds), ref, err_msg=name)


@pytest.mark.arm64
@pytest.mark.slow
def test_arm64_bit_exact_under_qemu(small_gat, synthetic, tmp_path: Path):
    """The cross-compiled aarch64 library under qemu-user equals the interpreter on the sample and a hub graph."""
    from qgnn_deploy import arm64
    from qgnn_deploy.backends.tvm import compile_to_dir

    if not arm64.a64_python_available():
        pytest.skip("aarch64 sysroot/qemu not available: bash export/make_a64_sysroot.sh")
    # the sample and one awkward graph: python + TVM start-up under qemu-user alone takes minutes on a busy host
    cases = {
        "sample": (synthetic.data.x.numpy(), synthetic.data.edge_index.numpy()),
        "hub": awkward_graphs(synthetic.num_features, seed=3)["hub"],
    }
    fields = compile_to_dir(small_gat, "arm64", tmp_path / "arm", sample_feeds=_feeds(synthetic))
    feeds = {c: {"x": x, "edge_index": ei} for c, (x, ei) in cases.items()}
    got = run_libraries_under_qemu(arm64, tmp_path / "run", feeds,
                                   ("x", "edge_index"), [tmp_path / "arm" / fields["library"]],
                                   env={"TVM_NUM_THREADS": "2"}, timeout=2400)
    for name, (x, ei) in cases.items():
        np.testing.assert_array_equal(got[f"0__{name}"], run(small_gat, {"x": x, "edge_index": ei})["logits"],
                                      err_msg=name)


# ------------------------------------------------------------------------------------------ LPGNAS
def test_lpgnas_attention_is_a_trainable_candidate():
    """With ``gat`` among the deployable archs, its attention vectors and the arch logits get gradients."""
    from qgnn_deploy.nas.space import SearchSpace
    from qgnn_deploy.nas.supernet import GraphCache, SuperNet

    ds = make_synthetic_nodes(num_nodes=60, num_features=8)
    space = SearchSpace(widths=(4, 8), archs=("gcn", "sage", "gin", "gat"))
    assert space.choices()["arch"] == ("gcn", "sage", "gin", "gat")
    net = SuperNet(space, 8, ds.num_classes)
    net.gumbel = ""  # plain softmax mixture: every candidate contributes
    out = net(ds.data.x, GraphCache(ds.data.edge_index, ds.data.num_nodes))
    out.sum().backward()
    assert net.logits("arch").grad.abs().min() > 0
    assert all(layer.att_src.grad.abs().sum() > 0 for layer in net.layers)
    with pytest.raises(ValueError, match="archs"):
        SearchSpace(archs=("gcn", "transformer"))


def test_lpgnas_searched_gat_exports_and_runs(tmp_path: Path):
    """``qgnn search --archs gat`` -> model.pt is a GAT -> ``qgnn export`` (fold + ONNX): ORT == interpreter, and
    the integer graph agrees with the fake-quant model."""
    import json

    from qgnn_deploy.backends.onnx.runner import OnnxRunner
    from qgnn_deploy.cli import main as cli_main
    from qgnn_deploy.ir.graph import Graph
    from qgnn_deploy.train.checkpoint import load_checkpoint

    out, art = tmp_path / "s", tmp_path / "art"
    assert (
        cli_main(
            [
                "search",
                "--archs",
                "gat",
                "--search-epochs",
                "3",
                "--epochs",
                "3",
                "--penalty",
                "1",
                "--widths",
                "8,16",
                "--out-dir",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    model, _ = load_checkpoint(out / "model.pt")
    assert model.config.arch == "gat"
    assert cli_main(["export", str(out / "model.pt"), "--target", "onnx", "--out", str(art)]) == 0
    report = json.loads((art / "report.json").read_text())
    assert report["parity"]["bit_exact"]
    assert report["source_parity"]["max_code_diff"] <= 1
    with np.load(art / "sample_input.npz") as z:
        sample = {k: z[k] for k in z.files}
    got = OnnxRunner(art / "model.onnx", threads=1).run(sample)
    logits = next(v for v in got.values() if v.dtype == np.float32)
    np.testing.assert_array_equal(logits, run(Graph.load(art / "ir"), sample)["logits"])


def test_heads_flag_is_refused_for_other_archs(tmp_path: Path, capsys):
    from qgnn_deploy.cli import main as cli_main

    out = tmp_path / "m.pt"
    assert cli_main(["train", "--arch", "gcn", "--heads", "2", "--epochs", "1", "--out", str(out)]) == 2
    assert "--arch gat only" in capsys.readouterr().err
    assert not out.exists()


def test_train_uses_the_gat_recipe_unless_a_flag_overrides_it(tmp_path: Path):
    from qgnn_deploy.cli import main as cli_main
    from qgnn_deploy.models.gat import TRAIN_RECIPE
    from qgnn_deploy.train.checkpoint import load_checkpoint

    runs = {"gat": ["--arch", "gat"], "gat_flags": ["--arch", "gat", "--dropout", "0.3", "--lr", "0.02"],
            "gcn": ["--arch", "gcn"]}
    for name, flags in runs.items():
        assert cli_main(["train", *flags, "--epochs", "1", "--no-progress", "--out", str(tmp_path / f"{name}.pt")]) == 0
    got = {name: load_checkpoint(tmp_path / f"{name}.pt") for name in runs}
    assert got["gat"][0].config.dropout == TRAIN_RECIPE["dropout"]
    assert got["gat"][1]["extra"]["lr"] == TRAIN_RECIPE["lr"]
    assert got["gat_flags"][0].config.dropout == 0.3 and got["gat_flags"][1]["extra"]["lr"] == 0.02
    assert got["gcn"][0].config.dropout == 0.5 and got["gcn"][1]["extra"]["lr"] == 0.01


def test_evaluate_fills_the_same_recipe_as_train():
    """`qgnn evaluate --arch gat` trains with the GAT recipe too (one rule, commands.train.arch_defaults)."""
    from qgnn_deploy.cli import build_parser
    from qgnn_deploy.commands.evaluate import config_from_args
    from qgnn_deploy.models.gat import TRAIN_RECIPE

    def config(*flags: str):
        return config_from_args(build_parser("evaluate").parse_args(["evaluate", *flags]))

    gat, gcn, given = config("--arch", "gat"), config("--arch", "gcn"), config("--arch", "gat", "--lr", "0.02")
    assert (gat.lr, gat.dropout) == (TRAIN_RECIPE["lr"], TRAIN_RECIPE["dropout"])
    assert (gcn.lr, gcn.dropout) == (0.01, 0.5)
    assert (given.lr, given.dropout) == (0.02, TRAIN_RECIPE["dropout"])

