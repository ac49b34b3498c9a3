"""edge_plan alone at N nodes (default 10^6), unsorted edges: the sort's record layouts side by side.

Usage: ``TVM_NUM_THREADS=1 PYTHONPATH=$PWD python examples/results/tvm_1e6_scripts/plan_layouts.py [N] [ROUNDS]
[VARIANT ...]`` with variants ``pairs`` (8-byte (row, source) records, 2^16-row buckets) and ``packedR`` (4-byte
``row << 20 | source`` records in 2^R-row buckets, e.g. ``packed11``).  Each variant is compiled on its own and
called ROUNDS times on ``perf.graphs.random_graph(N, 1, 10.0, seed=1)``'s edges (variants in turn, so drift hits
each alike), ``col`` checked against NumPy's stable argsort; prints the median wall and CPU ms per variant.  At 2
threads run one variant per process: the variants share TVM's workspace pool, whose re-allocations between
variants of different staging sizes add page faults to whichever runs next.
"""

import os
import statistics
import sys
import time

import numpy as np
import tvm

from qgnn_deploy.backends.tvm import kernels
from qgnn_deploy.backends.tvm.targets import resolve_target
from qgnn_deploy.perf.graphs import random_graph

n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 7
names = sys.argv[3:] or ["pairs", "packed11"]
ei = random_graph(n, 1, 10.0, seed=1)["edge_index"].astype(np.int64)
e = ei.shape[1]
target = resolve_target("x86_64").tvm()
fns = {}
for name in names:
    bits = (1, 1) if name == "pairs" else (int(name.removeprefix("packed")), 20)
    mod = tvm.IRModule({"main": kernels.edge_plan(2, 1, 0, packed_bits=bits).with_attr("global_symbol", "main")})
    fns[name] = tvm.compile(mod, target=target)["main"]
expected = ei[0][np.argsort(ei[1], kind="stable")]
edges = tvm.runtime.tensor(np.ascontiguousarray(ei))
flag, rowptr, col = (tvm.runtime.tensor(np.zeros(k, t)) for k, t in ((1, np.int32), (n + 1, np.int64), (e, np.int32)))
wall: dict[str, list[float]] = {k: [] for k in fns}
cpu: dict[str, list[float]] = {k: [] for k in fns}
for _ in range(rounds):
    for name, fn in fns.items():
        t0, c0 = time.perf_counter(), time.process_time()
        fn(edges, flag, rowptr, col)
        wall[name].append(1e3 * (time.perf_counter() - t0))
        cpu[name].append(1e3 * (time.process_time() - c0))
        assert flag.numpy()[0] == 0 and np.array_equal(col.numpy(), expected), name
print(f"N={n} E={e} unsorted, TVM_NUM_THREADS={os.environ.get('TVM_NUM_THREADS')}, load {os.getloadavg()[0]:.2f}")
for name in fns:
    print(f"{name}: wall {statistics.median(wall[name]):.1f} ms, CPU {statistics.median(cpu[name]):.1f} ms")
