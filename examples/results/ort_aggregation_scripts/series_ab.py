"""Size-series check of two exporters' ONNX for the bench-suite's series model (issue 12, section 7).

    python series_ab.py export CKPT OUTDIR TAG        # fold CKPT, write OUTDIR/TAG.onnx with this PYTHONPATH's exporter
    python series_ab.py run OUTDIR N REPS A.onnx B.onnx  # random_graph(N, F, 10, seed=1): A and B equal (and equal
                                                        # the interpreter when N <= 10^5) at 1 and 2 threads, then
                                                        # interleaved 1-thread CPU ms (min / median;
                                                        # AB_THREADS=2: 2-thread wall ms)
    python series_ab.py crossover OUTDIR THREADS N[,N...]  # aggregation="scatter" vs "csr" exported from OUTDIR/ir,
                                                        # on destination-sorted random_graph(N, 128, 10, seed=1)
    python series_ab.py rss OUTDIR N MODEL.onnx [sorted]  # one model in this process: 2-thread wall ms of 3 runs
                                                        # and peak RSS (VmHWM), for 10^6 nodes; ``sorted``: edges
                                                        # sorted by destination first
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from cora_ab import _session  # this folder is on sys.path when the script runs


def _graph(out: Path, n: int, features: int) -> dict[str, np.ndarray]:
    from qgnn_deploy.perf.graphs import random_graph

    return random_graph(n, features, 10.0, seed=1)


def _timed(sessions: dict, feeds: dict[str, np.ndarray], reps: int, threads: int) -> dict:
    """Interleaved runs: 1 thread in CPU ms (process_time), more in wall ms."""
    clock = time.process_time if threads == 1 else time.perf_counter
    times: dict = {k: [] for k in sessions}
    for _ in range(reps):
        for k, s in sessions.items():
            t0 = clock()
            s.run(None, feeds)
            times[k].append((clock() - t0) * 1e3)
    return times


def crossover(out: Path, threads: int, sizes: list[int]) -> None:
    """CSR branch vs column scatter on destination-sorted graphs (exported from OUTDIR/ir here), equal outputs."""
    from qgnn_deploy.backends.onnx import export_onnx, save_onnx
    from qgnn_deploy.backends.onnx.segment import sort_edges_by_destination
    from qgnn_deploy.ir.graph import Graph

    graph = Graph.load(str(out / "ir"))
    for agg in ("scatter", "csr"):
        save_onnx(export_onnx(graph, aggregation=agg), str(out / f"agg_{agg}.onnx"))
    print(f"| N | E | threads | runs | load | scatter {'CPU' if threads == 1 else 'wall'} ms min / median | csr |")
    for n in sizes:
        feeds = _graph(out, n, 128)
        feeds["edge_index"] = sort_edges_by_destination(feeds["edge_index"])
        sessions = {agg: _session(str(out / f"agg_{agg}.onnx"), threads) for agg in ("scatter", "csr")}
        outs = [s.run(None, feeds)[0] for s in sessions.values()]
        assert np.array_equal(outs[0], outs[1])
        reps = max(5, int(3e6 // feeds["edge_index"].shape[1]))
        times = _timed(sessions, feeds, reps, threads)
        print(f"| {n} | {feeds['edge_index'].shape[1]} | {threads} | {reps} | {os.getloadavg()[0]:.1f} | "
              + " | ".join(f"{min(v):.2f} / {np.median(v):.2f}" for v in times.values()) + " |")


def export(ckpt: str, out: Path, tag: str) -> None:
    from qgnn_deploy.backends.onnx import export_onnx, save_onnx
    from qgnn_deploy.fold import fold_model
    from qgnn_deploy.train.checkpoint import load_checkpoint

    model, _ = load_checkpoint(ckpt)
    graph = fold_model(model)
    out.mkdir(parents=True, exist_ok=True)
    graph.save(str(out / "ir"))
    save_onnx(export_onnx(graph), str(out / f"{tag}.onnx"))


def run(out: Path, n: int, reps: int, models: list[str]) -> None:
    features = onnx.load(models[0]).graph.input[0].type.tensor_type.shape.dim[1].dim_value
    feeds = _graph(out, n, features)
    want = None
    if n <= 100_000:
        from qgnn_deploy.ir import run as interpret
        from qgnn_deploy.ir.graph import Graph

        graph = Graph.load(str(out / "ir"))
        want = interpret(graph, feeds)[graph.outputs[0].name]
    sessions = {(m, th): _session(m, th) for m in models for th in (1, 2)}
    outs = {}
    for (m, th), s in sessions.items():
        for _ in range(2):
            got = s.run(None, feeds)[0]
            assert want is None or np.array_equal(got, want), (m, th)
            outs.setdefault(m, got)
            assert np.array_equal(got, outs[models[0]]), (m, th)
    print(f"N={n} E={feeds['edge_index'].shape[1]}: {len(models)} models equal at 1 and 2 threads"
          + (" and equal the interpreter" if want is not None else ""))
    threads = int(os.environ.get("AB_THREADS", "1"))
    one = {m: sessions[(m, threads)] for m in models}
    del sessions
    load0 = os.getloadavg()[0]
    times = _timed(one, feeds, reps, threads)
    print(f"{reps} interleaved runs, {threads} thread(s), {'CPU' if threads == 1 else 'wall'} ms, "
          f"load {load0:.1f} -> {os.getloadavg()[0]:.1f}")
    for m in models:
        print(f"| {Path(m).stem} | {min(times[m]):.1f} | {np.median(times[m]):.1f} |")


def rss(out: Path, n: int, model: str, by_destination: bool) -> None:
    features = onnx.load(model).graph.input[0].type.tensor_type.shape.dim[1].dim_value
    feeds = _graph(out, n, features)
    if by_destination:
        from qgnn_deploy.backends.onnx.segment import sort_edges_by_destination

        feeds["edge_index"] = sort_edges_by_destination(feeds["edge_index"])
    s = _session(model, 2)
    walls = []
    for _ in range(3):
        t0 = time.perf_counter()
        y = s.run(None, feeds)[0]
        walls.append((time.perf_counter() - t0) * 1e3)
    np.save(out / f"{Path(model).stem}_{n}{'_sorted' if by_destination else ''}.npy", y)
    hwm = next(int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines()
               if line.startswith("VmHWM"))
    tag = f"N={n}{' sorted' if by_destination else ''}"
    print(f"| {Path(model).stem} | {tag} | 2-thread wall ms {', '.join(f'{w:.0f}' for w in walls)} | "
          f"peak RSS {hwm / 1024:.0f} MiB | load {os.getloadavg()[0]:.1f} |")


if __name__ == "__main__":
    cmd, out = sys.argv[1], Path(sys.argv[3] if sys.argv[1] == "export" else sys.argv[2])
    if cmd == "export":
        export(sys.argv[2], out, sys.argv[4])
    elif cmd == "run":
        run(out, int(sys.argv[3]), int(sys.argv[4]), sys.argv[5:])
    elif cmd == "crossover":
        crossover(out, int(sys.argv[3]), [int(v) for v in sys.argv[4].split(",")])
    else:
        rss(out, int(sys.argv[3]), sys.argv[4], sys.argv[5:] == ["sorted"])
