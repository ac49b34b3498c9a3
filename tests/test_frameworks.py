"""QAT frameworks end to end: Degree-Quant masks, A2Q/MixQ learning, LoRAP identity, checkpoints, Cora, evaluate."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from qgnn_deploy.data.datasets import PLANETOID_FILES
from qgnn_deploy.data.specs import load_dataset
from qgnn_deploy.errors import QgnnError
from qgnn_deploy.models.net import QGNN, ModelConfig, default_bits
from qgnn_deploy.quant.fake import RangeFakeQuant
from qgnn_deploy.quant.frameworks.a2q import A2QNodeQuant, LSQFakeQuant
from qgnn_deploy.quant.frameworks.degree_quant import DegreeQuant, PercentileFakeQuant, degree_cdf
from qgnn_deploy.quant.frameworks.mixq import MixQ, MixQActQuant, MixQWeightQuant
from qgnn_deploy.train.checkpoint import load_checkpoint, save_checkpoint
from qgnn_deploy.train.trainer import TrainSettings, train

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def syn(synthetic_dataset):
    return synthetic_dataset


def _config(ds, framework: str, bits: int = 4, **kw) -> ModelConfig:
    return ModelConfig(arch=kw.pop("arch", "gcn"), in_dim=ds.num_features, hidden=16, out_dim=ds.num_classes,
                       framework=framework, bits=default_bits(32 if framework == "fp32" else bits), **kw)


def _steps(model: QGNN, ds, n: int, lr: float = 0.05) -> None:
    """A few plain Adam steps on the training loss plus the framework's penalty."""
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    d = ds.data
    for _ in range(n):
        model.train()
        opt.zero_grad()
        out = model(d.x, d.edge_index)
        loss = nn.functional.cross_entropy(out[d.train_mask], d.y[d.train_mask]) + model.framework.penalty(model)
        loss.backward()
        opt.step()


# ------------------------------------------------------------------------------------------- Degree-Quant
def _star_edges(degrees: list[int]) -> torch.Tensor:
    """Edges giving node i exactly ``degrees[i]`` incoming edges (sources are extra nodes)."""
    n = len(degrees)
    dst = torch.cat([torch.full((d,), i) for i, d in enumerate(degrees)])
    src = n + torch.arange(dst.numel()) % 7
    return torch.stack([src, dst])


def test_degree_quant_mask_statistics():
    degrees = [i // 10 for i in range(100)]  # ten groups of ten nodes, degrees 0..9
    ei = _star_edges(degrees)
    n = 107  # + 7 source nodes of degree 0
    fw = DegreeQuant(p_min=0.05, p_max=0.5)
    model = nn.Linear(1, 1).train()
    torch.manual_seed(0)
    samples = torch.stack([fw.context(model, ei, n).keep_float for _ in range(3000)]).float()
    deg = torch.tensor(degrees + [0] * 7)
    expected = 0.05 + 0.45 * degree_cdf(deg)
    assert samples.mean().item() == pytest.approx(expected.mean().item(), abs=0.01)
    rate = samples.mean(0)
    groups = [rate[:100][deg[:100] == d].mean().item() for d in range(10)]
    assert all(b > a for a, b in zip(groups, groups[1:])), groups  # rises with degree
    assert groups[0] == pytest.approx(0.05 + 0.45 * 17 / 107, abs=0.02)  # 17 nodes of degree 0
    assert groups[-1] == pytest.approx(0.5, abs=0.02)
    # resampled every forward, and nothing in eval
    a, b = fw.context(model, ei, n).keep_float, fw.context(model, ei, n).keep_float
    assert not torch.equal(a, b)
    assert fw.context(model.eval(), ei, n).keep_float is None


def test_degree_quant_default_rates_and_eval_is_plain(syn):
    fw = DegreeQuant()
    assert (fw.p_min, fw.p_max) == (0.0, 0.1)
    torch.manual_seed(0)
    model = QGNN(_config(syn, "dq", 4))
    rate = torch.stack([fw.context(model.train(), syn.data.edge_index, syn.data.num_nodes).keep_float
                        for _ in range(200)]).float().mean()
    assert 0.02 < float(rate) < 0.08  # mean of p_max * CDF is about p_max / 2
    _steps(model, syn, 3)
    assert all(isinstance(q, (PercentileFakeQuant, RangeFakeQuant)) or not q.spec.enabled or
               q.__class__.__name__ in ("WeightFakeQuant", "FixedFakeQuant", "TiedFakeQuant")
               for q in model.quantizers().values())
    model.eval()
    d = syn.data
    assert torch.equal(model(d.x, d.edge_index), model(d.x, d.edge_index))  # no mask at inference
    assert model.q_inputs[1].qparams().is_per_tensor


# ------------------------------------------------------------------------------------------- A2Q
def test_a2q_parameters_learn(syn):
    torch.manual_seed(0)
    model = QGNN(_config(syn, "a2q", 4, framework_options={"penalty": 0.0}))
    assert isinstance(model.q_inputs[0], A2QNodeQuant) and isinstance(model.q_inputs[1], A2QNodeQuant)
    assert isinstance(model.layers[0].q_message, LSQFakeQuant)
    d = syn.data
    model.train()
    model(d.x, d.edge_index)  # data-initialised steps
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    q = model.q_inputs[1]
    grads = torch.zeros_like(q.bit_delta)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(8):
        opt.zero_grad()
        out = model(d.x, d.edge_index)
        nn.functional.cross_entropy(out[d.train_mask], d.y[d.train_mask]).backward()
        grads += q.bit_delta.grad.abs()
        assert q.log_ratio.grad.abs().sum() > 0
        opt.step()
    changed = [k for k, v in model.named_parameters() if not torch.equal(v, before[k])]
    assert "q_inputs.1.log_ratio" in changed and "layers.0.q_message.log_ratio" in changed
    assert grads.sum() > 0 and "q_inputs.1.bit_delta" in changed


def test_a2q_penalty_pushes_bits_down(syn):
    d = syn.data

    def bits_after(lam: float) -> tuple[float, torch.Tensor]:
        torch.manual_seed(0)
        model = QGNN(_config(syn, "a2q", 4, framework_options={"penalty": lam, "target_bits": 3}))
        model.train()
        model(d.x, d.edge_index)
        pen = model.framework.penalty(model)
        _steps(model, syn, 15, lr=0.1)
        return model.framework.average_bits(model), pen

    hi_bits, pen = bits_after(0.0)
    assert pen == 0.0
    lo_bits, pen = bits_after(10.0)
    assert isinstance(pen, torch.Tensor) and pen.requires_grad
    assert float(pen.detach()) == pytest.approx(10 * (4 / 3 - 1))
    assert lo_bits < 4 <= hi_bits


# ------------------------------------------------------------------------------------------- MixQ
def test_mixq_parameters_learn_and_penalty(syn):
    d = syn.data

    def run(lam: float) -> QGNN:
        torch.manual_seed(0)
        model = QGNN(_config(syn, "mixq", 8, framework_options={"penalty": lam}))
        _steps(model, syn, 10, lr=0.1)
        return model

    m0 = run(0.0)
    qs = MixQ.searchable(m0)
    assert any(isinstance(q, MixQWeightQuant) for q in qs.values())
    assert any(isinstance(q, MixQActQuant) for q in qs.values())
    assert all(not torch.equal(q.logits.detach(), torch.tensor([0.0, 0.0, 1.0])) for q in qs.values())
    m1 = run(5.0)
    pen = m1.framework.penalty(m1)
    assert isinstance(pen, torch.Tensor) and pen.requires_grad
    pen.backward()
    assert all(q.logits.grad is not None for q in MixQ.searchable(m1).values())
    e0 = sum(float(q.expected_bits()) for q in qs.values())
    e1 = sum(float(q.expected_bits()) for q in MixQ.searchable(m1).values())
    assert e1 < e0 - 1.0
    m0.eval()
    assert m0(d.x, d.edge_index).shape == (d.num_nodes, syn.num_classes)


def test_mixq_fix_is_deterministic(syn):
    torch.manual_seed(0)
    model = QGNN(_config(syn, "mixq", 8))
    fw = model.framework
    for path, q in MixQ.searchable(model).items():
        with torch.no_grad():
            q.logits.copy_(torch.tensor([3.0, 0.0, 0.0]) if path == "layers.0.q_weight" else
                           torch.tensor([0.0, 2.0, 2.0]))  # tie 4 vs 8 -> 8
    assert fw.selectable(0, 10) is False
    fw.on_epoch_end(model, 0, 10)  # search is 4 epochs: nothing happens yet
    assert not fw.fixed and fw.reset_optimizer is False
    choice = fw.choose(model)
    assert choice == fw.choose(model)
    assert choice[0]["weight"] == 2 and choice[0]["input"] == 8 and choice[1]["aggregate"] == 8
    fw.on_epoch_end(model, 3, 10)
    assert fw.fixed and fw.reset_optimizer is True and fw.selectable(4, 10) is True
    assert model.config.layer_bits == choice and model.config.framework_options["fixed"] is True
    assert not MixQ.searchable(model)
    assert model.layers[0].q_weight.spec.bits == 2 and model.layers[1].q_weight.spec.bits == 8
    assert model.layers[0].q_weight.qparams().is_per_tensor is False  # per-channel, plain WeightFakeQuant


def test_mixq_trainer_and_checkpoint_roundtrip(syn, tmp_path):
    cfg = _config(syn, "mixq", 4, lorap={"k": 4, "rank": 2})
    res = train(cfg, syn, TrainSettings(epochs=6, seed=0, progress=False))
    assert res.metrics["best_epoch"] >= 2  # selection only after the 40% search (3 epochs)
    assert res.model.config.layer_bits is not None and res.model.config.framework_options["fixed"]
    path = save_checkpoint(tmp_path / "m.pt", res.model, syn.describe(), res.metrics)
    model, payload = load_checkpoint(path)
    assert model.config.layer_bits == res.model.config.layer_bits
    d = syn.data
    assert torch.equal(model(d.x, d.edge_index), res.model(d.x, d.edge_index))


# ------------------------------------------------------------------------------------------- LoRAP identity
@pytest.mark.parametrize("arch,variant", [("gcn", "softmax"), ("gcn", "lora"), ("sage", "softmax")])
def test_lorap_zero_init_equals_plain_model(syn, arch, variant):
    d = syn.data
    torch.manual_seed(0)
    base = QGNN(_config(syn, "qat", 4, arch=arch))
    _steps(base, syn, 3)
    base.eval()
    torch.manual_seed(1)
    prompted = QGNN(_config(syn, "qat", 4, arch=arch, lorap={"k": 4, "rank": 2, "variant": variant,
                                                               "zero_init": True}))
    missing, unexpected = prompted.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and all(".prompt." in k for k in missing)
    prompted.eval()
    assert torch.equal(prompted(d.x, d.edge_index), base(d.x, d.edge_index))


def test_gpf_zero_init_equals_plain_model(syn):
    d = syn.data
    torch.manual_seed(0)
    base = QGNN(_config(syn, "qat", 8))
    _steps(base, syn, 2)
    prompted = QGNN(_config(syn, "qat", 8, gpf={"mode": "gpf", "zero_init": True}))
    prompted.load_state_dict(base.state_dict(), strict=False)
    base.eval()
    prompted.eval()
    assert torch.equal(prompted(d.x, d.edge_index), base(d.x, d.edge_index))


# ------------------------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("framework", ["qat", "dq", "a2q", "mixq"])
def test_checkpoint_roundtrip_is_exact(syn, tmp_path, framework):
    cfg = _config(syn, framework, 4, lorap={"k": 4, "rank": 2})
    res = train(cfg, syn, TrainSettings(epochs=5, seed=0, progress=False))
    path = save_checkpoint(tmp_path / "m.pt", res.model, syn.describe(), res.metrics)
    model, payload = load_checkpoint(path)
    d = syn.data
    assert torch.equal(model(d.x, d.edge_index), res.model(d.x, d.edge_index))
    sd0, sd1 = res.model.state_dict(), model.state_dict()
    assert sd0.keys() == sd1.keys() and all(torch.equal(sd0[k], sd1[k]) for k in sd0)
    assert payload["metrics"]["test_acc"] == res.metrics["test_acc"]
    torch.load(path, weights_only=True)  # loads with the safe unpickler


class _Evil:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_pickled_code_checkpoint_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.pt"
    torch.save({"format": "qgnn-checkpoint", "version": 1, "config": _Evil(str(marker)), "state_dict": {}}, bad)
    with pytest.raises(QgnnError, match="weights-only"):
        load_checkpoint(bad)
    assert not marker.exists()
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(_Evil(str(marker))))  # a bare pickle, not even a zip
    with pytest.raises(QgnnError):
        load_checkpoint(raw)
    assert not marker.exists()


# ------------------------------------------------------------------------------------------- Cora
def test_short_cora_run_is_sane(cora_root):
    ds = load_dataset("cora", cora_root)
    assert all((Path(cora_root) / "Cora" / "raw" / f).is_file() for f in PLANETOID_FILES)
    cfg = _config(ds, "qat", 8)
    res = train(cfg, ds, TrainSettings(epochs=40, seed=0, progress=False))
    assert res.metrics["test_acc"] > 0.70, res.metrics


# ------------------------------------------------------------------------------------------- evaluate
def test_evaluate_command_smoke(tmp_path):
    from qgnn_deploy.cli import main

    out = tmp_path / "ev"
    args = ["evaluate", "--dataset", "synthetic", "--frameworks", "qat", "--bits", "4", "--seeds", "0", "1",
            "--epochs", "3", "--prompt-epochs", "2", "--out-dir", str(out), "--no-progress", "--no-deployed"]
    assert main(args) == 0
    rep = json.loads((out / "evaluation.json").read_text())
    rows = {r["row"]: r for r in rep["summary"]["rows"]}
    assert set(rows) == {"fp32", "qat-int4-none", "qat-int4-lorap"}
    assert all(len(r["test_acc"]) == 2 for r in rows.values())
    md = (out / "evaluation.md").read_text()
    assert "| QAT | INT4 | LoRAP |" in md and "Deployed" in md
    mtime = (out / "runs").stat().st_mtime_ns
    assert main(args) == 0  # second call: everything cached, nothing retrained
    assert len(list((out / "runs").glob("*.json"))) == 6 and (out / "runs").stat().st_mtime_ns == mtime


# ------------------------------------------------------------------------------------------- A2Q fold
@pytest.mark.parametrize("bits,lorap", [(4, None), (8, {"k": 4, "rank": 2})])
def test_a2q_fold_matches_fake_quant(syn, bits, lorap):
    import numpy as np

    from qgnn_deploy.fold import fold_model
    from qgnn_deploy.fold.parity import parity_report
    from qgnn_deploy.ir.interpreter import run

    res = train(_config(syn, "a2q", bits, lorap=lorap), syn, TrainSettings(epochs=4, seed=0, progress=False))
    model = res.model
    graph = fold_model(model)
    ops = graph.op_counts()
    assert ops.get("quantize_rows") == 1 and ops.get("lut", 0) + ops.get("lut_steps", 0) >= 5
    assert ops.get("lut_steps", 0) >= 1  # the degree -> bucket table is a step function (7 steps, 128 entries)
    d = syn.data
    feeds = {"x": d.x.numpy().astype(np.float32), "edge_index": d.edge_index.numpy().astype(np.int64)}
    rep = parity_report(model, graph, feeds, syn)
    # the per-row factor has ROW_BITS of precision (float32 fake-quant has 24): a few codes may move by a step
    assert rep["max_code_diff"] <= 2 and rep["mismatched_codes"] <= rep["output_codes"] // 100
    assert rep["prediction_agreement"] >= 0.99
    assert rep["test_acc_integer"] == pytest.approx(rep["test_acc_fake_quant"], abs=0.005)
    # the boundary integers are exactly the quantizer's per-node to_int
    env = run(graph, feeds, keep_all=True)
    ctx = model.framework.context(model.eval(), d.edge_index, d.num_nodes)
    assert np.array_equal(env["x_q"].astype(np.int64), model.q_inputs[0].to_int(d.x, ctx).numpy())
