"""``qgnn demo``: the whole pipeline on the embedded default graph, offline.

train (LoRAP + QAT, INT8) -> fold -> export for x86-64 and arm64 (TVM + ONNX)
-> on-device benchmark on this host, and on the arm64 artifact under qemu-user
-> print the deploy report.  Every step is the same code path the individual
commands use; the demo only strings them together.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from qgnn_deploy.commands import add_list_argument, add_parser
from qgnn_deploy.errors import QgnnError


def register(sub: argparse._SubParsersAction) -> None:
    p = add_parser(sub, "demo", __doc__)
    p.add_argument("--out-dir", type=Path, default=Path("qgnn-demo"),
                   help="where model.pt, the artifacts and demo_summary.json go")
    p.add_argument("--dataset", default="synthetic", help="synthetic (embedded, offline) or cora")
    p.add_argument("--data-root", default=None, help="dataset root (default: $QGNN_DATA_ROOT, else the user cache)")
    p.add_argument("--framework", default="qat", help="QAT framework of the trained model (see qgnn train --help)")
    p.add_argument("--bits", type=int, default=8, help="bit-width of every component")
    p.add_argument("--epochs", type=int, default=60, help="training epochs")
    add_list_argument(p, "--targets", default=["x86_64", "arm64"], metavar="TARGET", help="export targets")
    p.add_argument("--repeats", type=int, default=30, help="timed benchmark runs per native artifact")
    p.add_argument("--no-qemu", action="store_true", help="do not run the arm64 artifact under qemu-user")
    p.set_defaults(func=run)


def _step(msg: str) -> float:
    print(f"\n== {msg}", flush=True)
    return time.perf_counter()


def _done(t0: float) -> None:
    print(f"   ({time.perf_counter() - t0:.1f} s)", flush=True)


def run(args: argparse.Namespace) -> int:
    import torch

    from qgnn_deploy.arm64 import a64_python_available, run_bench
    from qgnn_deploy.data.specs import load_dataset
    from qgnn_deploy.exporting import check_target, export_graph
    from qgnn_deploy.fold import fold_checkpoint
    from qgnn_deploy.models.net import ModelConfig, default_bits
    from qgnn_deploy.train.checkpoint import save_checkpoint
    from qgnn_deploy.train.trainer import TrainSettings, train

    torch.set_num_threads(2)
    targets = list(args.targets)
    for t in targets:
        check_target(t)
    out = args.out_dir.resolve()
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"out_dir": str(out), "targets": targets}

    t0 = _step(f"1/4 train: GCN + LoRAP, {args.framework} INT{args.bits}, {args.dataset} ({args.epochs} epochs)")
    ds = load_dataset(args.dataset, args.data_root)
    cfg = ModelConfig(arch="gcn", in_dim=ds.num_features, hidden=16, out_dim=ds.num_classes, task=ds.task,
                      framework=args.framework, bits=default_bits(args.bits), lorap={"k": 8, "rank": 4})
    result = train(cfg, ds, TrainSettings(epochs=args.epochs, progress=True))
    model_path = save_checkpoint(out / "model.pt", result.model, ds.describe(), result.metrics)
    print(f"   test accuracy (fake-quant) {result.metrics['test_acc']:.4f} -> {model_path}")
    summary["train"] = result.metrics
    _done(t0)

    t0 = _step("2/4 fold into the integer graph (prompts merged) and check it against the model")
    folded = fold_checkpoint(model_path, data_root=args.data_root)
    par = folded.report["parity"]
    print(f"   ops {sum(folded.graph.op_counts().values())}, float ops {folded.report['float_ops']}, "
          f"codes differing from fake-quant {par['mismatched_codes']}/{par['output_codes']}, "
          f"integer test accuracy {par.get('test_acc_integer', float('nan')):.4f}")
    summary["fold"] = par
    _done(t0)

    artifacts = {}
    for target in targets:
        t0 = _step(f"3/4 export --target {target}")
        art = out / f"artifact_{target}"
        manifest = export_graph(folded.graph, target, art, sample_feeds=folded.sample_feeds,
                                source={"path": str(model_path), "sha256": folded.checkpoint_sha256},
                                report_extra=dict(folded.report), force=True)
        artifacts[target] = art
        libs = [n for n, e in manifest["files"].items() if e.get("role") in ("onnx", "tvm_library")]
        print(f"   {art}: {', '.join(libs)}")
        _done(t0)

    t0 = _step("4/4 on-device benchmark (runtimes/qgnn_bench.py)")
    bench = {}
    for target, art in artifacts.items():
        aarch64 = target not in ("onnx", "x86_64", "x86_64-generic") and not target.startswith("{")
        if aarch64:
            if args.no_qemu:
                continue
            if not a64_python_available():
                raise QgnnError("the arm64 artifact needs the aarch64 sysroot to run here: bash export/setup.sh")
            rep = run_bench(art, emulate_a64=True, backend="tvm", threads=2, warmup=2, repeats=3)
            bench[f"{target} (TVM, qemu)"] = rep
        else:
            for backend in ("tvm", "onnx") if target != "onnx" else ("onnx",):
                bench[f"{target} ({backend})"] = run_bench(art, backend=backend, threads=2, warmup=5,
                                                           repeats=args.repeats)
    _done(t0)

    print("\n== deploy report")
    first = next(iter(artifacts.values()))
    print((first / "report.md").read_text())
    print("| run | median ms | p90 ms | peak RSS | matches reference | note |\n|---|---|---|---|---|---|")
    for name, rep in bench.items():
        lat = rep.get("latency_ms", {})
        emu = rep.get("emulated") or rep.get("emulation", {}).get("emulated")
        note = "EMULATED (qemu-user), not device timings" if emu else "native"
        peak = rep.get("peak_rss_bytes") or rep.get("memory", {}).get("peak_rss_bytes")
        match = rep.get("reference", {}).get("match")
        print(f"| {name} | {lat.get('median', float('nan')):.3f} | {lat.get('p90', float('nan')):.3f} | "
              f"{(peak or 0) / 2**20:.1f} MiB | {match} | {note} |")
    summary["bench"] = bench
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(f"\nsummary: {out / 'demo_summary.json'}")
    return 0
