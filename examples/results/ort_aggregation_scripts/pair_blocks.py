"""Paired A/B of ONNX models in one process: blocks of 20 calls per model, alternating, for REPS rounds.

    python pair_blocks.py THREADS GRAPH.npz REPS NAME=MODEL.onnx...     # first model = the reference

Each model's feeds are the arrays of GRAPH.npz named like its inputs (``U8=OTHER.npz`` adds e.g. ``x_q``).  Per
round the median of each block (first 2 calls dropped) is taken, and the reference's block median over each
model's block median of the same round is its per-block ratio; the median of those ratios is steadier on a
loaded VM than medians taken in separate processes.  1 thread: CPU ms (``process_time``); 2: wall ms.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import numpy as np
import onnxruntime as ort


def session(path: str, threads: int) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def main() -> None:
    threads, graph, reps = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    models = dict(a.split("=", 1) for a in sys.argv[4:])
    feeds = dict(np.load(graph))
    if os.environ.get("U8"):
        feeds.update(np.load(os.environ["U8"]))
    sessions = {k: session(m, threads) for k, m in models.items()}
    inputs = {k: {i.name: feeds[i.name] for i in s.get_inputs()} for k, s in sessions.items()}
    clock = time.process_time if threads == 1 else time.perf_counter
    for k, s in sessions.items():
        for _ in range(10):
            s.run(None, inputs[k])
    calls: dict[str, list[float]] = {k: [] for k in sessions}
    blocks: dict[str, list[float]] = {k: [] for k in sessions}
    load0 = os.getloadavg()[0]
    for _ in range(reps):
        for k, s in sessions.items():
            block = []
            for _ in range(20):
                t = clock()
                s.run(None, inputs[k])
                block.append(clock() - t)
            calls[k] += block[2:]
            blocks[k].append(statistics.median(block[2:]))
    ref = next(iter(sessions))
    print(f"threads {threads}, {'CPU' if threads == 1 else 'wall'} ms, load {load0:.2f} -> {os.getloadavg()[0]:.2f}")
    for k in sessions:
        q = [a / b for a, b in zip(blocks[ref], blocks[k])]
        print(f"| {k} | {1e3 * statistics.median(calls[k]):.3f} | {1e3 * min(calls[k]):.3f} | "
              f"{statistics.median(q):.3f} ({min(q):.2f}-{max(q):.2f}) |")


if __name__ == "__main__":
    main()
