"""Training that scales: --device, NeighborLoader mini-batch QAT, DDP over gloo, large synthetic graphs.

The numbers compared: sampled sub-graphs against the graph they come from, mini-batch vs full-batch accuracy,
folded integer codes against the fake-quant model on the full graph, rank 0 vs rank 1 and run A vs run B
state dicts of a 2-process data-parallel run.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from qgnn_deploy.data.datasets import make_synthetic_nodes
from qgnn_deploy.data.specs import load_dataset, parse_spec
from qgnn_deploy.errors import QgnnError
from qgnn_deploy.models.net import ModelConfig, default_bits
from qgnn_deploy.train.checkpoint import load_checkpoint, save_checkpoint
from qgnn_deploy.train.device import resolve_device
from qgnn_deploy.train.minibatch import NodeBatches, parse_num_neighbors, rank_share
from qgnn_deploy.train.trainer import TrainSettings, train

REPO = Path(__file__).resolve().parents[1]
SMALL = "synthetic:nodes=400,degree=6,seed=2"


def _config(ds, framework: str = "qat", **kw) -> ModelConfig:
    base = dict(
        arch="gcn",
        in_dim=ds.num_features,
        hidden=16,
        out_dim=ds.num_classes,
        framework=framework,
        bits=default_bits(8),
        task=ds.task,
    )
    base.update(kw)
    return ModelConfig(**base)


# ---------------------------------------------------------------------------------------------- datasets
def test_synthetic_options_and_sparse_builder():
    assert parse_spec("synthetic:nodes=2000,degree=6,seed=3").options == {"nodes": 2000, "degree": 6, "seed": 3}
    for bad in (
        "synthetic:nodes=x",
        "synthetic:colour=1",
        "synthetic:nodes",
        "synthetic:nodes=2",
        "synthetic:nodes=10,degree=0",
    ):
        with pytest.raises(QgnnError):
            load_dataset(bad)
    ds = load_dataset("synthetic:nodes=2000,degree=6,seed=3")
    assert ds.name == "synthetic:nodes=2000,degree=6,seed=3" and ds.data.num_nodes == 2000
    ei = ds.data.edge_index
    assert ei.shape[1] / 2000 == pytest.approx(6.0, rel=0.05)  # mean degree as asked (few duplicates dropped)
    assert bool((ei[0] != ei[1]).all())
    assert torch.equal(torch.sort(ei[0] * 2000 + ei[1]).values, torch.sort(ei[1] * 2000 + ei[0]).values)  # undirected
    y = ds.data.y
    assert float((y[ei[0]] == y[ei[1]]).float().mean()) == pytest.approx(8 / 9.5, abs=0.03)
    assert torch.equal(load_dataset("synthetic:nodes=2000,degree=6,seed=3").data.edge_index, ei)  # deterministic
    # without options the classic graph is unchanged
    assert torch.equal(make_synthetic_nodes(nodes=600).data.edge_index, make_synthetic_nodes().data.edge_index)


# ---------------------------------------------------------------------------------------------- sampling
def test_neighbor_loader_batches_are_subgraphs_of_the_graph():
    ds = load_dataset(SMALL)
    data = ds.data
    edges = set(map(tuple, data.edge_index.t().tolist()))
    nb = NodeBatches(data, 32, (3, 2), seed=0)
    torch.manual_seed(0)
    batches = list(nb.epoch(0))
    assert len(batches) == nb.num_steps()
    seeds = torch.cat([b.n_id[: b.batch_size] for b in batches])
    assert torch.equal(torch.sort(seeds).values, data.train_mask.nonzero().view(-1))  # every train node once
    deg = torch.bincount(data.edge_index[1], minlength=data.num_nodes)
    for b in batches:
        glob = b.n_id[b.edge_index]
        assert all(tuple(e) in edges for e in glob.t().tolist())
        local_in = torch.bincount(b.edge_index[1], minlength=b.num_nodes)[: b.batch_size]
        assert torch.equal(local_in, deg[b.n_id[: b.batch_size]].clamp_max(3))  # fan-out min(k, degree)
        assert torch.equal(b.y, data.y[b.n_id]) and torch.equal(b.x, data.x[b.n_id])
    # -1 keeps the whole in-neighbourhood
    full = next(iter(NodeBatches(data, 8, (-1,), seed=0).epoch(0)))
    assert torch.equal(torch.bincount(full.edge_index[1], minlength=full.num_nodes)[:8], deg[full.n_id[:8]])


def test_rank_shares_partition_the_train_nodes():
    nodes = torch.arange(11) * 3
    shares = [rank_share(nodes, seed=4, epoch=1, rank=r, world_size=2) for r in range(2)]
    assert shares[0].numel() == shares[1].numel() == 6
    assert set(torch.cat(shares).tolist()) == set(nodes.tolist())
    assert not torch.equal(rank_share(nodes, 4, 2, 0, 2), shares[0])  # reshuffled per epoch
    assert parse_num_neighbors("10,10") == (10, 10) and parse_num_neighbors("-1") == (-1,)
    for bad in ("", "a", "0,1", "-2"):
        with pytest.raises(ValueError):
            parse_num_neighbors(bad)


def test_degree_quant_protection_uses_full_graph_degrees():
    from qgnn_deploy.quant.frameworks.degree_quant import degree_cdf

    population = torch.tensor([1, 1, 2, 3, 8, 8, 9, 20])
    batch_deg = torch.tensor([8, 1])  # a batch that happens to hold one hub and one leaf
    assert degree_cdf(batch_deg, population).tolist() == [6 / 8, 2 / 8]
    assert degree_cdf(population).tolist() == degree_cdf(population, population).tolist()


# ---------------------------------------------------------------------------------------------- device
def test_device_resolution():
    assert resolve_device("cpu") == torch.device("cpu")
    if torch.cuda.is_available():
        assert resolve_device("auto").type == "cuda"
    else:
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(QgnnError, match="no CUDA device"):
            resolve_device("cuda")
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "qgnn_deploy.cli",
                "train",
                "--device",
                "cuda",
                "--epochs",
                "1",
                "--no-progress",
                "--out",
                "/nonexistent/never.pt",
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            cwd=REPO,
        )
        assert proc.returncode == 2 and proc.stderr.strip().startswith("qgnn: error:"), proc.stderr
        assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------------------------------------- mini-batch
@pytest.fixture(scope="module")
def synthetic():
    torch.set_num_threads(2)
    return make_synthetic_nodes()


@pytest.mark.slow  # default-run budget (CI ~20 min on 2 cores): `bash export/run.sh test-all` runs it
def test_minibatch_accuracy_within_two_points_of_full_batch(synthetic):
    full = train(_config(synthetic), synthetic, TrainSettings(epochs=30, progress=False))
    mini = train(
        _config(synthetic),
        synthetic,
        TrainSettings(epochs=30, progress=False, node_batch_size=64, num_neighbors=(10, 10)),
    )
    assert mini.metrics["test_acc"] >= full.metrics["test_acc"] - 0.02, (mini.metrics, full.metrics)
    assert next(mini.model.parameters()).device.type == "cpu"


@pytest.mark.parametrize(
    "framework,extra",
    [
        ("qat", {}),
        ("dq", {}),
        ("a2q", {}),
        ("mixq", {}),
        pytest.param(
            "qat", {"lorap": {"k": 4, "rank": 2}, "gpf": {"mode": "gpf-plus", "k": 3}}, marks=pytest.mark.slow
        ),
        pytest.param("qat", {"arch": "gin"}, marks=pytest.mark.slow),
        pytest.param("qat", {"arch": "sage"}, marks=pytest.mark.slow),
    ],
)
def test_minibatch_checkpoint_folds_code_for_code(synthetic, tmp_path, framework, extra):
    from qgnn_deploy.fold import fold_checkpoint

    bits = default_bits(4) if framework in ("a2q", "mixq") else default_bits(8)
    result = train(
        _config(synthetic, framework, bits=bits, **extra),
        synthetic,
        TrainSettings(epochs=6, progress=False, node_batch_size=64, num_neighbors=(5, 5)),
    )
    assert result.metrics["test_acc"] > 0.5, result.metrics
    path = save_checkpoint(tmp_path / "mb.pt", result.model, synthetic.describe(), result.metrics)
    rep = fold_checkpoint(path).report["parity"]
    assert rep["mismatched_codes"] == 0 and rep["prediction_agreement"] == 1.0, rep
    assert rep["test_acc_integer"] == rep["test_acc_fake_quant"]


# ---------------------------------------------------------------------------------------------- DDP
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ddp_rank(rank: int, world: int, ports: list[int], out: str, framework: str) -> None:
    """One rank: two data-parallel trainings with the same seed; each rank writes what it holds."""
    from qgnn_deploy.train.distributed import DistInfo

    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    ds = load_dataset(SMALL)
    for run, port in enumerate(ports):
        os.environ["MASTER_PORT"] = str(port)
        settings = TrainSettings(
            epochs=4, progress=False, seed=5, node_batch_size=48, num_neighbors=(5, 5), dist=DistInfo(rank, world, rank)
        )
        result = train(_config(ds, framework), ds, settings)
        save_checkpoint(Path(out) / f"run{run}-rank{rank}.pt", result.model, ds.describe(), result.metrics)


@pytest.mark.parametrize("framework", ["dq"])
def test_two_process_ddp_checkpoint_is_deterministic_and_deploys(tmp_path, framework):
    import torch.multiprocessing as mp

    from qgnn_deploy.backends.onnx import OnnxRunner
    from qgnn_deploy.exporting import export_graph
    from qgnn_deploy.fold import fold_checkpoint
    from qgnn_deploy.fold.parity import graph_output_codes, model_output_codes

    mp.spawn(_ddp_rank, args=(2, [_free_port(), _free_port()], str(tmp_path), framework), nprocs=2, join=True)
    states = {
        (run, rank): load_checkpoint(tmp_path / f"run{run}-rank{rank}.pt")[0].state_dict()
        for run in (0, 1)
        for rank in (0, 1)
    }
    ref = states[(0, 0)]
    for key, state in states.items():  # every rank, both runs: the same tensors, bit for bit
        assert state.keys() == ref.keys()
        for name, t in state.items():
            assert torch.equal(t, ref[name]), (key, name)
    fold = fold_checkpoint(tmp_path / "run0-rank0.pt")
    rep = fold.report["parity"]
    assert rep["mismatched_codes"] == 0 and rep["prediction_agreement"] == 1.0, rep
    assert rep["test_acc_fake_quant"] > 0.5, rep
    export_graph(fold.graph, "onnx", tmp_path / "art", sample_feeds=fold.sample_feeds)
    runner = OnnxRunner(tmp_path / "art" / "model.onnx", threads=1)
    onnx_logits = runner.run(fold.sample_feeds)[fold.graph.outputs[0].name]
    ir_logits, _ = graph_output_codes(fold.graph, fold.sample_feeds)
    model_logits, _ = model_output_codes(fold.model, fold.sample_feeds)
    assert np.array_equal(onnx_logits, ir_logits)  # ONNX Runtime runs the integer graph exactly
    assert np.array_equal(onnx_logits.argmax(-1), model_logits.argmax(-1))


@pytest.mark.slow
def test_torchrun_cli_two_runs_identical(tmp_path):
    """The documented launch: torchrun --nproc-per-node 2 qgnn-train ...; rank 0 writes one checkpoint."""
    outs = []
    for run in range(2):
        out = tmp_path / f"ddp{run}.pt"
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            "2",
            "--master-addr",
            "127.0.0.1",
            "--master-port",
            str(_free_port()),
            "-m",
            "qgnn_deploy.cli",
            "train",
            "--dataset",
            SMALL,
            "--epochs",
            "5",
            "--batch-size",
            "48",
            "--num-neighbors",
            "5,5",
            "--no-progress",
            "--seed",
            "3",
            "--out",
            str(out),
        ]
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO, timeout=900
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert proc.stdout.count("->") == 1  # one line, from rank 0
        outs.append(load_checkpoint(out)[0].state_dict())
    for name, t in outs[0].items():
        assert torch.equal(t, outs[1][name]), name
