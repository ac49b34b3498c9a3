"""Interleaved per-kernel A/B of compiled series libraries at N nodes (CPU time), sorted or unsorted edges.

Each library's kernel launches are recorded once (``VirtualMachine.set_instrument``, as ``profile.profile_library``
does), then replayed in rounds: every round times every kernel of every library once (the library order reversed
every other round), so load from other processes hits the libraries alike.  Prints each library's kernels
(median and min CPU ms over the rounds, then wall ms) and the sums.
Usage: ``TVM_NUM_THREADS=1 PYTHONPATH=$PWD python ab_kernels.py CKPT N ROUNDS ORDER NAME=LIB ...``
(ORDER: sorted or unsorted; ``KERNELS=edge_plan,scatter`` in the environment replays only the kernels whose
symbol contains one of these).
"""

import os
import statistics
import sys
import time

import numpy as np
import tvm
from tvm import relax

from qgnn_deploy.backends.tvm.profile import integer_input_variant
from qgnn_deploy.fold import fold_model
from qgnn_deploy.perf.graphs import random_graph
from qgnn_deploy.train.checkpoint import load_checkpoint

ckpt, n, rounds, order = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
libs = dict(a.split("=", 1) for a in sys.argv[5:])
graph, feeds = integer_input_variant(fold_model(load_checkpoint(ckpt)[0]), random_graph(n, 128, 10.0, seed=1))
if order == "sorted":
    ei = feeds["edge_index"]
    feeds["edge_index"] = np.ascontiguousarray(ei[:, np.argsort(ei[1], kind="stable")])
args = [tvm.runtime.tensor(np.ascontiguousarray(feeds[vi.name])) for vi in graph.inputs]
only = [s for s in os.environ.get("KERNELS", "").split(",") if s]
calls: dict[str, list] = {}
for name, path in libs.items():
    vm = relax.VirtualMachine(tvm.runtime.load_module(path), tvm.cpu())
    rec: list = []

    def record(func, symbol, before, _ret, *call_args, rec=rec):  # noqa: ANN001, ANN002, ANN202
        if before and not symbol.startswith(("vm.", "relax.")) and (not only or any(s in symbol for s in only)):
            rec.append((symbol, func, list(call_args)))
        return 0

    vm.set_instrument(record)
    vm["main"](*args)
    calls[name] = rec
times = {name: [[] for _ in rec] for name, rec in calls.items()}
walls = {name: [[] for _ in rec] for name, rec in calls.items()}
for r in range(rounds):
    for name in list(calls) if r % 2 == 0 else list(calls)[::-1]:
        for i, (_s, func, call_args) in enumerate(calls[name]):
            c, w = time.process_time(), time.perf_counter()
            func(*call_args)
            times[name][i].append(time.process_time() - c)
            walls[name][i].append(time.perf_counter() - w)
print(f"N={n} {order} edges, TVM_NUM_THREADS={os.environ.get('TVM_NUM_THREADS')}, {rounds} rounds, load "
      f"{os.getloadavg()[0]:.2f} (under load); CPU ms median / min, wall ms median / min")
for name, rec in calls.items():
    print(f"== {name}")
    for (symbol, _f, _a), ts, ws in zip(rec, times[name], walls[name]):
        print(f"  {symbol[:88]:88s} {1e3 * statistics.median(ts):8.2f} {1e3 * min(ts):8.2f}"
              f"  {1e3 * statistics.median(ws):8.2f} {1e3 * min(ws):8.2f}")
    tot = [sum(t[r] for t in times[name]) for r in range(rounds)]
    wt = [sum(t[r] for t in walls[name]) for r in range(rounds)]
    print(f"  {'sum of kernels':88s} {1e3 * statistics.median(tot):8.2f} {1e3 * min(tot):8.2f}"
          f"  {1e3 * statistics.median(wt):8.2f} {1e3 * min(wt):8.2f}")
print(f"load at the end {os.getloadavg()[0]:.2f}")
