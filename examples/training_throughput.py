"""Training throughput on a large synthetic graph: full batch vs NeighborLoader mini-batch vs 2-process DDP.

Usage (writes examples/results/training_throughput.{json,md}):

    python3 examples/training_throughput.py --nodes 200000 --degree 15 --epochs 3

Each mode trains in a fresh process (so peak RSS is that mode's own): full batch and mini-batch through the
``qgnn-train`` entry point's code path, DDP through ``torchrun --nproc-per-node 2``.  An epoch is what the
trainer does per epoch: one pass over the train nodes plus the full-graph validation forward it uses for model
selection.  Seconds exclude start-up and dataset generation (timed inside the worker around ``train``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def worker(args: argparse.Namespace) -> None:
    """One training process (one rank under torchrun); prints one JSON line."""
    import torch

    from qgnn_deploy.data.specs import load_dataset
    from qgnn_deploy.models.net import ModelConfig, default_bits
    from qgnn_deploy.train.distributed import from_env
    from qgnn_deploy.train.trainer import TrainSettings, train

    torch.set_num_threads(args.threads)
    ds = load_dataset(f"synthetic:nodes={args.nodes},degree={args.degree}")
    cfg = ModelConfig(
        arch="gcn",
        in_dim=ds.num_features,
        hidden=16,
        out_dim=ds.num_classes,
        framework="qat",
        bits=default_bits(8),
        task="node",
    )
    dist = from_env()
    settings = TrainSettings(
        epochs=args.epochs,
        progress=False,
        node_batch_size=args.batch_size or None,
        num_neighbors=tuple(int(v) for v in args.num_neighbors.split(",")),
        dist=dist,
    )
    t0 = time.perf_counter()
    result = train(cfg, ds, settings)
    seconds = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "rank": dist.rank if dist else 0,
                "seconds": seconds,
                "epochs": args.epochs,
                "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "val_acc": result.metrics["val_acc"],
                "test_acc": result.metrics["test_acc"],
            }
        ),
        flush=True,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_mode(name: str, args: argparse.Namespace, batch_size: int, ranks: int) -> dict:
    common = [
        "--worker",
        "--nodes",
        str(args.nodes),
        "--degree",
        str(args.degree),
        "--epochs",
        str(args.epochs),
        "--batch-size",
        str(batch_size),
        "--num-neighbors",
        args.num_neighbors,
        "--threads",
        str(max(1, args.threads // ranks)),
    ]
    if ranks == 1:
        cmd = [sys.executable, __file__, *common]
    else:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            str(ranks),
            "--master-addr",
            "127.0.0.1",
            "--master-port",
            str(_free_port()),
            __file__,
            *common,
        ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    main = next(r for r in lines if r["rank"] == 0)
    return {
        "mode": name,
        "command": " ".join(cmd[1:]).replace(str(REPO) + "/", ""),
        "ranks": ranks,
        "batch_size": batch_size or None,
        "epochs_per_s": main["epochs"] / main["seconds"],
        "seconds": main["seconds"],
        "peak_rss_mib_per_rank": [round(r["peak_rss_mib"]) for r in sorted(lines, key=lambda r: r["rank"])],
        "val_acc": main["val_acc"],
        "test_acc": main["test_acc"],
    }


def cpu_name() -> tuple[str, str]:
    model, flags = platform.processor(), ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("", "x86_64"):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                fl = set(line.split(":", 1)[1].split())
                flags = " ".join(f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni") if f in fl)
    except OSError:
        pass
    return model, flags


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--nodes", type=int, default=200000)
    p.add_argument("--degree", type=float, default=15)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=4096, help="seed nodes per mini-batch (0 = full batch)")
    p.add_argument("--num-neighbors", default="10,10")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(REPO / "examples" / "results" / "training_throughput"))
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    rows = [
        run_mode("full batch", args, 0, 1),
        run_mode("mini-batch", args, args.batch_size, 1),
        run_mode("2-process DDP (mini-batch)", args, args.batch_size, 2),
    ]
    model, flags = cpu_name()
    doc = {
        "nodes": args.nodes,
        "degree": args.degree,
        "epochs": args.epochs,
        "num_neighbors": args.num_neighbors,
        "cpu": model,
        "cpu_flags": flags,
        "cores": os.cpu_count(),
        "rows": rows,
    }
    Path(args.out + ".json").write_text(json.dumps(doc, indent=1))
    Path(args.out + ".md").write_text(render(doc, " ".join(sys.argv[1:])))
    print(json.dumps(doc, indent=1))


def render(doc: dict, argv: str) -> str:
    """The results page: one row per mode, ratios to full batch measured within the same run."""
    base = doc["rows"][0]["epochs_per_s"]
    lines = [
        f"# Training throughput: {doc['nodes']:,}-node synthetic graph (mean degree {doc['degree']:g})",
        "",
        f"Command: `python3 examples/training_throughput.py {argv}`".rstrip(),
        "",
        f"CPU: {doc['cpu']} ({doc['cores']} cores, flags: {doc['cpu_flags']}). Measured while other jobs ran "
        "(7 other sessions sharing the 2 cores): absolute figures are pessimistic, ratios within this one run "
        "are the comparable part.",
        "",
        "GCN, hidden 16, INT8 QAT; an epoch = one pass over the 60,000 train nodes + the full-graph validation "
        f"forward used for model selection; {doc['epochs']} epochs per mode, timed inside the process around "
        f"`train()`; mini-batch: `--batch-size {doc['rows'][1]['batch_size']} --num-neighbors "
        f"{doc['num_neighbors']}`. Peak RSS = `ru_maxrss` of each training process.",
        "",
        "| mode | processes | epochs/s | vs full batch | s/epoch | peak RSS per process (MiB) | test acc |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in doc["rows"]:
        rss = " / ".join(str(v) for v in r["peak_rss_mib_per_rank"])
        lines.append(
            f"| {r['mode']} | {r['ranks']} | {r['epochs_per_s']:.4f} | {r['epochs_per_s'] / base:.2f}x | "
            f"{r['seconds'] / doc['epochs']:.1f} | {rss} | {r['test_acc']:.4f} |"
        )
    lines += ["", "Exact commands per mode:", ""] + [f"- {r['mode']}: `python3 {r['command']}`" for r in doc["rows"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
