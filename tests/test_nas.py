"""LPGNAS: relaxation gradients, analytic cost vs ir.analysis on a hand-built graph, determinism, CLI, example."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from qgnn_deploy.cli import main as cli_main
from qgnn_deploy.data.datasets import make_synthetic_nodes
from qgnn_deploy.ir.analysis import buffer_report, model_bytes
from qgnn_deploy.ir.testing import random_edge_index
from qgnn_deploy.models.net import QGNN, ModelConfig, default_bits
from qgnn_deploy.nas.cost import config_cost, shape_fold
from qgnn_deploy.nas.search import SearchSettings, search
from qgnn_deploy.nas.space import SearchSpace, to_model_config
from qgnn_deploy.nas.supernet import GraphCache, SuperNet
from qgnn_deploy.train.checkpoint import load_checkpoint, read_checkpoint

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def one_thread():
    """Small tensors: one torch thread is several times faster than two on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def small_ds():
    return make_synthetic_nodes(num_nodes=120, num_classes=3, num_features=8, seed=1)


# ------------------------------------------------------------------------------------------ gradients
@pytest.mark.parametrize("space_name", ["deployable", "full"])
@pytest.mark.parametrize("relaxation", ["", "hard"])
def test_gradients_reach_every_architecture_and_bit_logit(small_ds, space_name, relaxation):
    torch.manual_seed(0)
    space = SearchSpace(space=space_name, widths=(4, 8), allow_fp32=True)
    net = SuperNet(space, small_ds.num_features, small_ds.num_classes)
    net.gumbel = relaxation
    for a in net.arch_parameters():  # break the symmetric start so every softmax has non-trivial gradients
        a.data.normal_(0.0, 0.5)
    d = small_ds.data
    g = GraphCache(d.edge_index, d.num_nodes)
    net.train()
    for _ in range(6 if relaxation == "hard" else 1):  # a hard sample leaves unused candidates without gradient
        out = net(d.x, g)
        loss = torch.nn.functional.cross_entropy(out, d.y)
        size, buf = net.expected_cost(net.probs(sample=False), d.num_nodes, d.edge_index.shape[1])
        (loss + size / 1e3 + buf / 1e6).backward()
    for name in net.choices:
        grad = net.logits(name).grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name
    assert any(k.endswith("bits.weight") for k in net.choices) and any(k.endswith("bits.message") for k in net.choices)


def test_penalty_alone_moves_bits_towards_smaller_models():
    space = SearchSpace(widths=(8, 16))
    net = SuperNet(space, 10, 3)
    size, _ = net.expected_cost(net.probs(sample=False), 50, 200)
    size.backward()
    g = net.logits("l0.bits.weight").grad  # candidates 2, 4, 8 bits: storage 0.5, 0.5, 1 byte
    assert g[2] > 0 and g[0] < 0 and g[1] < 0
    assert net.logits("width").grad[1] > 0


# ------------------------------------------------------------------------------------------ cost
def calibrated(cfg: ModelConfig, x: torch.Tensor, edge_index: torch.Tensor) -> QGNN:
    """A QGNN of ``cfg`` calibrated on the data (one forward sets the activation ranges), biases and GIN's eps
    non-zero as after training."""
    torch.manual_seed(0)
    model = QGNN(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("bias", "eps")):  # as trained: a zero GIN eps would share the 1 + eps scalar
                p.uniform_(-0.2, 0.2)
    model.train()
    model(x, edge_index)
    model.eval()
    return model


def feeds_of(x: torch.Tensor, edge_index: torch.Tensor) -> dict[str, np.ndarray]:
    return {"x": x.numpy().astype(np.float32), "edge_index": edge_index.numpy().astype(np.int64)}


COST_CASES = [("gcn", (4, 8), 4, 0.0), ("gcn", (8, 2), 5, 3.0), ("sage", (4, 8), 4, 0.0), ("sage", (3, 8), 5, 3.0),
              ("gin", (4, 8), 4, 0.0), ("gin", (8, 2), 5, 3.0), ("gat", (4, 8), 4, 0.0), ("gat", (8, 2), 5, 3.0)]


@pytest.mark.parametrize("arch,wbits,hidden,shift", COST_CASES)
def test_cost_is_ir_analysis_of_the_folded_model(small_ds, arch, wbits, hidden, shift):
    """``config_cost`` == ``model_bytes`` / ``buffer_report`` (the interpreter run on the dataset) of ``fold_model``
    of the config, int4/int8/int2 weight mixes, with and without a centred input, GAT included."""
    from qgnn_deploy.fold import fold_model
    from qgnn_deploy.nas.cost import placeholder_model

    cfg = ModelConfig(arch=arch, in_dim=small_ds.num_features, hidden=hidden, out_dim=small_ds.num_classes,
                      bits=default_bits(8), layer_bits=[{"weight": wbits[0], "aggregate": 4}, {"weight": wbits[1]}])
    x = small_ds.data.x - shift if shift else small_ds.data.x
    ei = small_ds.data.edge_index
    centered = bool(float(x.min()) < 0)
    cost = config_cost(cfg, x.shape[0], ei.shape[1], centered_input=centered)
    graph = fold_model(placeholder_model(cfg, centered), 1023)
    assert (model_bytes(graph), buffer_report(graph, feeds_of(x, ei)).peak_bytes) == (cost.model_bytes,
                                                                                       cost.buffer_bytes)
    # a model calibrated on the data instead: every byte the same, but for what depends on learned values (GAT's
    # exp table is trimmed where exp(d * s) rounds to a constant, s the learned logit scale)
    real = fold_model(calibrated(cfg, x, ei), 1023)
    assert buffer_report(real, feeds_of(x, ei)).peak_bytes == cost.buffer_bytes
    def bytes_without_exp_tables(g) -> int:
        return sum(a.nbytes for k, a in g.initializers.items() if "_exp_table" not in k)

    assert bytes_without_exp_tables(real) == bytes_without_exp_tables(graph)
    assert (model_bytes(real) == cost.model_bytes) or arch == "gat"


def test_cost_is_computed_by_the_fold(small_ds, monkeypatch):
    """Change what fold emits and the cost follows: multipliers stored as int64, and GCN's per-node edge
    coefficient widened to int64 (so the scaled messages and their [E, H] gather, the peak, are int64)."""
    from qgnn_deploy.fold import layers, tables
    from qgnn_deploy.nas import cost as cost_mod

    cfg = ModelConfig(arch="gcn", in_dim=small_ds.num_features, hidden=4, out_dim=small_ds.num_classes,
                      bits=default_bits(8))
    n, e = small_ds.data.num_nodes, small_ds.data.edge_index.shape[1]
    before = config_cost(cfg, n, e)
    narrow = layers._edge_coefficient

    def wide(fc, layer, idx, name):
        return fc.b.op("cast", [narrow(fc, layer, idx, name)], f"{name}_edge64", dtype="int64")

    monkeypatch.setattr(tables, "MULTIPLIER_DTYPE", "int64")
    monkeypatch.setattr(layers, "_edge_coefficient", wide)
    cost_mod._fold_cached.cache_clear()
    try:
        after = config_cost(cfg, n, e)
    finally:
        monkeypatch.undo()
        cost_mod._fold_cached.cache_clear()
    multipliers = (4 + 1) + (3 + 1)  # per layer: per-channel message (H = 4, then 3), per-tensor aggregate
    assert after.model_bytes == before.model_bytes + 4 * multipliers
    assert after.buffer_bytes > before.buffer_bytes + 4 * e * 4 - 1  # the [E, 4] gather alone grows by 4 * E * 4


def test_cost_hand_count_small_gcn():
    """GCN 5 -> 4 -> 3, int4 then int8 weights, 6 nodes, 10 edges: every byte counted by hand."""
    cfg = ModelConfig(arch="gcn", in_dim=5, hidden=4, out_dim=3, bits=default_bits(8),
                      layer_bits=[{"weight": 4}, {"weight": 8}])
    n, e = 6, 10
    # mult/shift pairs are int32 + int8 (5 bytes); the uint8 degree codes Q(255 / sqrt(d + 1)), d = 0..1023, fall
    # from 255 to 8 (a run of 8s from d = 900 on) taking 68 distinct values: as a step function (lut_steps) that is
    # 67 int16 thresholds (the looked-up index d + 1 reaches 901) + 68 uint8 values = 202 bytes, less than the
    # 901 entries of the trimmed table
    # layer 0: W int4 packed 20/2 + message mult/shift 5*4 + degree steps 202 + aggregate mult/shift 5 + bias 4*4
    # layer 1: W int8 12    + 5*3                  + (the same steps, stored once) + 5          + 4*3
    # and the int32 scalars 1 and 255 (c_int32_1, c_int32_255)
    hand_size = (10 + 20 + 202 + 5 + 16) + (12 + 15 + 5 + 12) + 8
    # peak at layer 0's scatter: src+dst int64 [10], in_degree and edge int32 [6,1],
    # message_scaled int32 [6,4], gather int32 [10,4], scatter int32 [6,4] (x f32 died once quantized)
    hand_buffer = 2 * 8 * 10 + 4 * 6 + 4 * 6 + 4 * 6 * 4 + 4 * 10 * 4 + 4 * 6 * 4
    cost = config_cost(cfg, n, e)
    assert (cost.model_bytes, cost.buffer_bytes) == (hand_size, hand_buffer) == (305, 560)
    rng = np.random.default_rng(0)
    ei = torch.from_numpy(random_edge_index(n, e, rng))
    from qgnn_deploy.fold import fold_model

    x = torch.rand(n, 5)
    graph = fold_model(calibrated(cfg, x, ei), 1023)
    assert model_bytes(graph) == hand_size
    assert buffer_report(graph, feeds_of(x, ei)).peak_bytes == hand_buffer


@pytest.mark.parametrize("seed,archs", [(3, ("gcn", "sage", "gin")), (4, ("gcn", "sage", "gin")), (1, ("gat",))])
def test_expected_cost_at_one_hot_equals_exact_config_cost(small_ds, seed, archs):
    """At a one-hot choice (random per-layer bit mixes) the search's expectation is the folded config's cost."""
    space = SearchSpace(widths=(4, 8), archs=archs)
    net = SuperNet(space, small_ds.num_features, small_ds.num_classes)
    torch.manual_seed(seed)
    for a in net.arch_parameters():
        a.data.normal_(0.0, 1.0)
    choice, logp = net.argmax_choice()
    disc = to_model_config(choice, space, small_ds.num_features, small_ds.num_classes, log_probs=logp)
    assert not disc.projected  # deployable space: global arch and width, nothing to project
    n, e = small_ds.data.num_nodes, small_ds.data.edge_index.shape[1]
    size, buf = net.expected_cost(net.one_hot(), n, e)
    exact = config_cost(disc.config, n, e)
    assert float(buf) == pytest.approx(exact.buffer_bytes)
    # GAT's exp table is trimmed by the (placeholder-)learned logit scale, which every upstream choice moves: the
    # expectation adds up its per-choice changes, so only it may differ
    graph, _ = shape_fold(disc.config)
    slack = sum(a.nbytes for k, a in graph.initializers.items() if "_exp_table" in k)
    assert abs(float(size) - exact.model_bytes) <= slack
    assert (float(size) == exact.model_bytes) or archs == ("gat",)
    shared = net.cost_table(n, e).shared()  # sizes that move with several choices: only GAT's exp tables
    assert all("_exp_table" in k for keys in shared.values() for k in keys) and bool(shared) == (archs == ("gat",))
    # a soft choice lies between the cheapest and the dearest candidates
    size, buf = net.expected_cost(net.probs(sample=False), n, e)
    assert 0 < float(size) and 0 < float(buf)


# ------------------------------------------------------------------------------------------ discretisation
def test_discretisation_is_deterministic(small_ds):
    settings = SearchSettings(epochs=6, penalty=1.0, seed=5, warmup=1)
    a = search(small_ds, SearchSpace(widths=(4, 8)), settings)
    b = search(small_ds, SearchSpace(widths=(4, 8)), settings)
    assert a.discretised.choice == b.discretised.choice
    assert a.discretised.config.to_dict() == b.discretised.config.to_dict()
    # ties resolve to the first candidate; the arch projection is a pure function of the logits
    net = SuperNet(SearchSpace(widths=(4, 8)), 8, 3)
    choice, logp = net.argmax_choice()
    assert all(v == net.choices[k][0] for k, v in choice.items())
    d1 = to_model_config(choice, net.space, 8, 3, log_probs=logp)
    d2 = to_model_config(choice, net.space, 8, 3, log_probs=logp)
    assert d1.config == d2.config and d1.config.layer_bits == [{"input": 2, "weight": 2, "message": 2,
                                                                "aggregate": 2}] * 2


def test_full_space_projects_onto_deployable_layers():
    space = SearchSpace(space="full", widths=(4, 8))
    choice = {"l0.agg": "max", "l0.weighting": "attn", "l0.act": "relu6", "l0.width": 8,
              "l1.agg": "sum", "l1.weighting": "gcn"}
    choice.update({f"l{i}.bits.{c}": 4 for i in range(2) for c in ("input", "weight", "message", "aggregate")})
    disc = to_model_config(choice, space, 8, 3)
    assert disc.config.arch == "gcn" and disc.config.hidden == 8
    assert any("max/attn" in p for p in disc.projected) and any("relu6" in p for p in disc.projected)
    QGNN(disc.config)  # buildable


# ------------------------------------------------------------------------------------------ CLI and example
def test_search_cli_writes_loadable_checkpoint(tmp_path, capsys):
    out = tmp_path / "s"
    rc = cli_main(["search", "--search-epochs", "4", "--epochs", "3", "--penalty", "0,2", "--widths", "8,16",
                   "--out-dir", str(out), "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "-> arch" in printed and "model size" in printed
    payload = read_checkpoint(out / "model.pt")  # weights-only unpickler
    assert "lpgnas" in payload["extra"]
    model, _ = load_checkpoint(out / "model.pt")
    assert isinstance(model, QGNN) and model.config.layer_bits is not None
    doc = json.loads((out / "search.json").read_text())
    assert doc["config"] == model.config.to_dict()
    rows = (out / "points.csv").read_text().strip().splitlines()
    assert len(rows) == 3 and rows[0].startswith("penalty,seed,arch")


def test_pareto_example_quick(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "lpgnas_pareto.py"), "--quick", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "lpgnas_pareto_quick.png").stat().st_size > 1000
    lines = (tmp_path / "lpgnas_pareto_quick.csv").read_text().strip().splitlines()
    assert len(lines) == 1 + 7 + 2  # header, 7 baselines, 2 penalties x 1 seed


# ------------------------------------------------------------------------------------------ deployment
def _search_and_export(tmp_path, target: str):
    """A short ``qgnn search`` and ``qgnn export --target target`` of its model.pt: (search dir, artifact dir)."""
    out, art = tmp_path / "s", tmp_path / f"art_{target}"
    assert cli_main(["search", "--search-epochs", "4", "--epochs", "4", "--penalty", "1", "--widths", "8,16",
                     "--out-dir", str(out), "--no-progress"]) == 0
    assert cli_main(["export", str(out / "model.pt"), "--target", target, "--out", str(art)]) == 0
    return out, art


def test_searched_checkpoint_exports_to_onnx_and_reproduces_predictions(tmp_path):
    """Searched model.pt -> qgnn export (fold + ONNX) with no special case; ONNX == interpreter == fake-quant."""
    pytest.importorskip("onnxruntime")
    from qgnn_deploy.backends.onnx.runner import OnnxRunner
    from qgnn_deploy.nas.search import GraphFacts

    out, art = _search_and_export(tmp_path, "onnx")
    report = json.loads((art / "report.json").read_text())
    assert report["parity"]["bit_exact"]
    assert report["source_parity"]["mismatched_codes"] == 0
    assert report["source_parity"]["test_acc_integer"] == report["source_parity"]["test_acc_fake_quant"]
    with np.load(art / "sample_input.npz") as z:
        sample = {k: z[k] for k in z.files}
    got = OnnxRunner(art / "model.onnx", threads=1).run(sample)
    logits = next(v for v in got.values() if v.dtype == np.float32)
    model, _ = load_checkpoint(out / "model.pt")
    with torch.no_grad():
        fake = model(torch.from_numpy(sample["x"]), torch.from_numpy(sample["edge_index"])).numpy()
    assert np.array_equal(logits.argmax(-1), fake.argmax(-1))
    # the size the search reported is the size of the deployed graph (ir.analysis definition)
    from qgnn_deploy.ir.graph import Graph

    graph = Graph.load(art / "ir")
    doc = json.loads((out / "search.json").read_text())
    assert model_bytes(graph) == doc["cost"]["model_bytes"]
    assert buffer_report(graph, sample).peak_bytes == doc["cost"]["buffer_bytes"]
    assert GraphFacts.of(make_synthetic_nodes()).num_nodes == sample["x"].shape[0]


@pytest.mark.slow
def test_searched_checkpoint_compiles_with_tvm(tmp_path):
    """Searched model.pt -> qgnn export --target x86_64 (TVM): the compiled library is bit-exact on the sample."""
    pytest.importorskip("tvm")
    out, art = _search_and_export(tmp_path, "x86_64")
    from qgnn_deploy.artifact import load_manifest

    doc = load_manifest(art)
    assert doc["tvm_bit_exact_on_sample"] is True
