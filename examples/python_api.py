"""The Python API end to end, one call per step: dataset -> QAT + LoRAP training -> fold -> export -> benchmark.

    python3 examples/python_api.py                                  # embedded synthetic graph, ONNX artifact
    python3 examples/python_api.py --dataset planetoid:CiteSeer --epochs 200 --target x86_64
    python3 examples/python_api.py --wrap                           # your own torch_geometric Data, wrapped

docs/python-api.md walks through the lines between the ``api:start`` / ``api:end`` markers;
tests/test_datasets.py runs this script (``--quick``), so the walkthrough stays true.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="synthetic", help="any dataset spec, e.g. planetoid:CiteSeer, tu:PROTEINS")
    p.add_argument("--data-root", default=None)
    p.add_argument("--wrap", action="store_true", help="wrap an in-memory torch_geometric Data instead")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--target", default="onnx")
    p.add_argument("--out-dir", type=Path, default=Path("qgnn-api"))
    p.add_argument("--quick", action="store_true", help="a few epochs and benchmark calls (the test's mode)")
    args = p.parse_args(argv)
    out = args.out_dir
    epochs, repeats = (3, 3) if args.quick else (args.epochs, 50)

    # api:start
    from qgnn_deploy.arm64 import run_bench
    from qgnn_deploy.commands.export import accuracy_by_stage
    from qgnn_deploy.data import load_dataset, wrap_data
    from qgnn_deploy.exporting import export_graph
    from qgnn_deploy.fold import fold_checkpoint
    from qgnn_deploy.models.net import ModelConfig, default_bits
    from qgnn_deploy.train.checkpoint import save_checkpoint
    from qgnn_deploy.train.trainer import TrainSettings, train

    # 1. a dataset: any spec (PyG's loaders, file:graph.pt|npz) -- or wrap a Data / list of Data you already have
    ds = wrap_data(my_graph(), name="my-graph") if args.wrap else load_dataset(args.dataset, args.data_root)

    # 2. QAT (here Degree-Quant at INT4) with LoRAP prompts, model selected on validation
    config = ModelConfig(arch="gcn" if ds.task == "node" else "gin", in_dim=ds.num_features, out_dim=ds.num_classes,
                         task=ds.task, framework="dq", bits=default_bits(4), lorap={"k": 8, "rank": 4})
    result = train(config, ds, TrainSettings(epochs=epochs, progress=False))
    ckpt = save_checkpoint(out / "model.pt", result.model, ds.describe(), result.metrics)

    # 3. fold into the integer IR, checked against the fake-quant model on the dataset (parity + scores)
    folded = fold_checkpoint(ckpt, dataset=ds)

    # 4. export: ONNX (+ a TVM library for compiled targets), bit-exact against the interpreter, atomically
    stages = accuracy_by_stage(folded, saturation_safe=True)  # test accuracy (MAE) of every stage
    manifest = export_graph(folded.graph, args.target, out / "artifact", sample_feeds=folded.sample_feeds,
                            source={"path": str(ckpt), "sha256": folded.checkpoint_sha256},
                            report_extra={**folded.report, "accuracy": stages})

    # 5. benchmark the artifact as the device would (a separate process, no torch)
    bench = run_bench(out / "artifact", backend="onnx", threads=2, warmup=2, repeats=repeats)
    # api:end

    print(f"{ds.name}: test scores by stage {stages}")
    print(f"artifact {out / 'artifact'} ({manifest['model_bytes']} B of parameters): median "
          f"{bench['latency_ms']['median']:.3f} ms, matches reference: {bench['reference']['match']}")
    return {"stages": stages, "manifest": manifest, "bench": bench, "parity": folded.report["parity"]}


def my_graph():
    """Stand-in for the user's own graph: a torch_geometric Data with x, edge_index and y."""
    from qgnn_deploy.data.datasets import make_synthetic_nodes

    return make_synthetic_nodes(num_nodes=300, seed=1).data


if __name__ == "__main__":
    main()
