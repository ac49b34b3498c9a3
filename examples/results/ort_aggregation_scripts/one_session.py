"""Time one ONNX model in one process (ORT, sequential, ``--threads``), after checking it against a reference.

    python one_session.py MODEL.onnx FEEDS.npz [--reference OUT.npy] [--threads 2] [--runs 300] [--sort-edges]

Why one model per process: two 2-thread sessions in one process keep each other's spinning pool threads busy,
which made interleaved medians at 2 threads swing by 30% (section 14).  Alternate processes (A B A B ...) instead.
FEEDS.npz holds the model's inputs by name (extra arrays are ignored; ``x_q`` is not derived here).  With
``--reference`` the first output must equal it bit for bit at 1 and at ``--threads`` threads, or the script exits 1.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

from qgnn_deploy.perf.worker import ort_session as _session  # the suite's session options


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("feeds")
    ap.add_argument("--reference")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--sort-edges", action="store_true", help="feed edge_index sorted by destination (stable)")
    args = ap.parse_args()
    data = np.load(args.feeds)
    sess = _session(args.model, args.threads)
    feeds = {i.name: np.ascontiguousarray(data[i.name]) for i in sess.get_inputs()}
    if args.sort_edges and "edge_index" in feeds:
        ei = feeds["edge_index"]
        feeds["edge_index"] = np.ascontiguousarray(ei[:, np.argsort(ei[1], kind="stable")])
    if args.reference:
        want = np.load(args.reference)
        for threads in sorted({1, args.threads}):
            got = (sess if threads == args.threads else _session(args.model, threads)).run(None, feeds)[0]
            if not np.array_equal(got, want):
                sys.exit(f"error: {args.model} differs from {args.reference} at {threads} thread(s)")
    for _ in range(max(args.runs // 10, 3)):
        sess.run(None, feeds)
    times = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        sess.run(None, feeds)
        times.append(time.perf_counter() - t0)
    ms = np.array(times) * 1e3
    print(f"{args.model}: {args.threads} thread(s), {args.runs} runs, median {statistics.median(ms):.3f} ms, "
          f"p10 {np.percentile(ms, 10):.3f}, p90 {np.percentile(ms, 90):.3f}, load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
