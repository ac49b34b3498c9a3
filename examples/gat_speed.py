"""Our exported GAT (TVM, 2 threads) against PyG ``GATConv`` FP32 eager (2 threads), each in its own process.

Usage::

    python3 examples/gat_speed.py ART [ART ...] [--rounds 3] [--repeats 50] [--json out.json]

Each ``ART`` is a ``qgnn-export --target x86_64`` artifact of a Cora GAT (with or without ``--integer-input``);
it is timed by ``runtimes/qgnn_bench.py ART --backend tvm --threads 2`` (which also checks its output against the
bundled reference). The PyG side is the same architecture as PyG's ``examples/gat.py`` (``GATConv(F, C, heads=H)``,
ELU, ``GATConv(H*C, classes, heads=1)``, eval mode) with the artifact's layer sizes and random weights, on the
artifact's own sample graph (float ``x``). Runs are interleaved ``--rounds`` times (PyG, then every artifact) so a
loaded machine slows all sides alike; the table gives each side's median over rounds of per-round medians and
the ratio PyG / ours. Timing on a shared machine is only a ratio, not a device figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TVM_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _env(threads: int) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.update({v: str(threads) for v in THREAD_VARS})
    return env


def pyg_worker(graph: str, in_dim: int, hidden: int, heads: int, classes: int, threads: int, warmup: int,
               repeats: int) -> dict:
    """Median latency (ms) of a 2-layer PyG GAT in this process (called with ``--pyg-worker``)."""
    import time

    import numpy as np
    import torch
    from torch_geometric.nn import GATConv

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    with np.load(graph, allow_pickle=False) as z:
        x = torch.from_numpy(np.ascontiguousarray(z["x"])).float()
        ei = torch.from_numpy(np.ascontiguousarray(z["edge_index"])).long()

    class GAT(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = GATConv(in_dim, hidden, heads=heads, dropout=0.6)
            self.conv2 = GATConv(hidden * heads, classes, heads=1, concat=False, dropout=0.6)

        def forward(self, x: torch.Tensor, ei: torch.Tensor) -> torch.Tensor:
            return self.conv2(torch.nn.functional.elu(self.conv1(x, ei)), ei)

    model = GAT().eval()
    times: list[float] = []
    with torch.inference_mode():
        for _ in range(warmup):
            model(x, ei)
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(x, ei)
            times.append(time.perf_counter() - t0)
    return {"median_ms": 1e3 * statistics.median(times), "min_ms": 1e3 * min(times), "threads": torch.get_num_threads(),
            "torch": torch.__version__}


def time_artifact(art: Path, threads: int, warmup: int, repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        cmd = [sys.executable, str(ROOT / "runtimes" / "qgnn_bench.py"), str(art), "--backend", "tvm", "--threads",
               str(threads), "--warmup", str(warmup), "--repeats", str(repeats), "--json", str(out)]
        proc = subprocess.run(cmd, env=_env(threads), capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"gat_speed: {' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
        rep = json.loads(out.read_text())
    lat = rep["latency_ms"]
    return {"median_ms": lat["median"], "min_ms": lat["min"], "bit_exact": rep["reference"].get("match"),
            "integer_input": "x_q" in json.loads((art / "manifest.json").read_text())["input_order"]}


def time_pyg(graph: str, dims: dict, threads: int, warmup: int, repeats: int) -> dict:
    args = [sys.executable, __file__, "--pyg-worker", graph, json.dumps(dims), "--threads", str(threads),
            "--warmup", str(warmup), "--repeats", str(repeats)]
    proc = subprocess.run(args, env=_env(threads), capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"gat_speed: PyG worker failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("artifacts", nargs="+", help="x86_64 artifact directories (first one's sample graph is used)")
    ap.add_argument("--pyg-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=2, help="threads of every side")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    ap.add_argument("--warmup", type=int, default=10, help="untimed calls per process")
    ap.add_argument("--repeats", type=int, default=50, help="timed calls per process")
    ap.add_argument("--hidden", type=int, default=8, help="PyG side: channels per head")
    ap.add_argument("--heads", type=int, default=8, help="PyG side: heads of the first layer")
    ap.add_argument("--json", default=None, help="write the figures here")
    args = ap.parse_args(argv)
    if args.pyg_worker:
        graph, dims = args.artifacts[0], json.loads(args.artifacts[1])
        print(json.dumps(pyg_worker(graph, dims["in_dim"], dims["hidden"], dims["heads"], dims["classes"],
                                    args.threads, args.warmup, args.repeats)))
        return 0
    import numpy as np

    arts = [Path(a) for a in args.artifacts]
    graph = str(arts[0] / "sample_input.npz")
    with np.load(graph, allow_pickle=False) as z:
        if "x" not in z.files:
            raise SystemExit(f"gat_speed: {graph} has no float x (pass the float-input artifact first)")
        in_dim = int(z["x"].shape[1])
    with np.load(arts[0] / "reference_output.npz", allow_pickle=False) as z:
        classes = int(next(iter(z.values())).shape[-1])
    dims = {"in_dim": in_dim, "hidden": args.hidden, "heads": args.heads, "classes": classes}
    runs: dict[str, list[float]] = {"pyg": []}
    best: dict[str, float] = {}
    facts: dict[str, dict] = {}
    for _ in range(args.rounds):
        r = time_pyg(graph, dims, args.threads, args.warmup, args.repeats)
        runs["pyg"].append(r["median_ms"])
        best["pyg"] = min(best.get("pyg", float("inf")), r["min_ms"])
        facts["pyg"] = r
        for a in arts:
            r = time_artifact(a, args.threads, args.warmup, args.repeats)
            runs.setdefault(str(a), []).append(r["median_ms"])
            best[str(a)] = min(best.get(str(a), float("inf")), r["min_ms"])
            facts[str(a)] = r
    load = open("/proc/loadavg").read().split()[:3]
    pyg = statistics.median(runs["pyg"])
    print(f"Cora GAT ({dims}), {args.threads} threads, {args.rounds} interleaved rounds, load average {load}")
    print("| side | median ms (per-round medians) | PyG / side | fastest call ms | PyG / side (fastest) | bit-exact |")
    print("|---|---|---|---|---|---|")
    print(f"| PyG GATConv FP32 eager (torch {facts['pyg']['torch']}) | {pyg:.2f} "
          f"({', '.join(f'{t:.2f}' for t in runs['pyg'])}) | 1.00 | {best['pyg']:.2f} | 1.00 | - |")
    for a in arts:
        med = statistics.median(runs[str(a)])
        kind = "integer input" if facts[str(a)]["integer_input"] else "float input"
        print(f"| ours TVM x86-64, {kind} ({a.name}) | {med:.2f} ({', '.join(f'{t:.2f}' for t in runs[str(a)])}) "
              f"| {pyg / med:.2f} | {best[str(a)]:.2f} | {best['pyg'] / best[str(a)]:.2f} "
              f"| {facts[str(a)]['bit_exact']} |")
    if args.json:
        doc = {"dims": dims, "load": load, "runs": runs, "best": best, "facts": facts}
        Path(args.json).write_text(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
