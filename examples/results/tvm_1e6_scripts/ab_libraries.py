"""Interleaved whole-graph A/B of compiled series libraries at N nodes: CPU and wall time, sorted and unsorted.

Each library is one ``profile_1e6.py`` build (``WORK/lib``) of the same checkpoint; they are loaded into one process
and called in turn on the same inputs (bit-exact against the interpreter once each; the order reversed every other
repeat), so load from other processes hits them alike; the first two libraries' per-repeat ratios are printed
too (a paired comparison: less noisy than comparing medians under load).
Usage: ``TVM_NUM_THREADS=1 PYTHONPATH=$PWD python ab_libraries.py CKPT N REPEATS NAME=LIB ...``
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
from qgnn_deploy.ir.interpreter import run
from qgnn_deploy.perf.graphs import random_graph
from qgnn_deploy.train.checkpoint import load_checkpoint

ckpt, n, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
libs = dict(a.split("=", 1) for a in sys.argv[4:])
graph, feeds = integer_input_variant(fold_model(load_checkpoint(ckpt)[0]), random_graph(n, 128, 10.0, seed=1))
ei = feeds["edge_index"]
orders = {"unsorted": ei, "sorted": np.ascontiguousarray(ei[:, np.argsort(ei[1], kind="stable")])}
mains = {k: relax.VirtualMachine(tvm.runtime.load_module(p), tvm.cpu())["main"] for k, p in libs.items()}
for order, e in orders.items():
    f = {**feeds, "edge_index": e}
    args = [tvm.runtime.tensor(np.ascontiguousarray(f[vi.name])) for vi in graph.inputs]
    ref = run(graph, f)[graph.outputs[0].name]
    cpu: dict[str, list[float]] = {k: [] for k in mains}
    wall: dict[str, list[float]] = {k: [] for k in mains}
    for k, m in mains.items():
        assert np.array_equal(m(*args).numpy(), ref), (k, order)
    for r in range(repeats):
        for k, m in list(mains.items()) if r % 2 == 0 else list(mains.items())[::-1]:
            c, t = time.process_time(), time.perf_counter()
            m(*args)
            cpu[k].append(time.process_time() - c)
            wall[k].append(time.perf_counter() - t)
    print(f"N={n} {order}, TVM_NUM_THREADS={os.environ.get('TVM_NUM_THREADS')}, load {os.getloadavg()[0]:.2f} "
          "(under load); bit-exact: all")
    for k, v in cpu.items():
        print(f"  {k:12s} CPU median {1e3 * statistics.median(v):7.1f} ms  min {1e3 * min(v):7.1f} ms; wall median "
              f"{1e3 * statistics.median(wall[k]):7.1f} ms  min {1e3 * min(wall[k]):7.1f} ms")
    if len(mains) > 1:
        a, b = list(mains)[:2]
        for what, ts in (("CPU", cpu), ("wall", wall)):
            q = sorted(y / x for x, y in zip(ts[a], ts[b]))
            print(f"  {b}/{a} per repeat, {what}: median {statistics.median(q):.3f}, quartiles {q[len(q) // 4]:.3f}"
                  f" {q[3 * len(q) // 4]:.3f}")
    print(f"  load at the end {os.getloadavg()[0]:.2f}", flush=True)
