"""Paired A/B of TVM libraries on one graph in one process: blocks of 50 calls alternating, order reversed every
other block, wall ms (median and min over all calls). Outputs must be identical across the libraries.

Usage: ``TVM_NUM_THREADS=2 python pair_libraries.py GRAPH.npz BLOCKS NAME=LIB.so ...`` (GRAPH holds ``x_q`` for a
uint8-input library, else ``x``, and ``edge_index``: e.g. a bench-suite work dir's ``main_graph_uint8.npz``).
"""

import statistics
import sys
import time

import numpy as np
import tvm
from tvm import relax

z = np.load(sys.argv[1])
libs = dict(a.split("=", 1) for a in sys.argv[3:])
mains = {k: relax.VirtualMachine(tvm.runtime.load_module(p), tvm.cpu())["main"] for k, p in libs.items()}
feature = "x_q" if "x_q" in z.files else "x"
args = [tvm.runtime.tensor(np.ascontiguousarray(z[k])) for k in (feature, "edge_index")]
outs = {k: m(*args).numpy() for k, m in mains.items()}
names = list(mains)
assert all(np.array_equal(outs[names[0]], outs[k]) for k in names), "outputs differ"
times: dict[str, list[float]] = {k: [] for k in mains}
for r in range(int(sys.argv[2])):
    for k in names if r % 2 == 0 else names[::-1]:
        for _ in range(10):
            mains[k](*args)
        for _ in range(50):
            t = time.perf_counter()
            mains[k](*args)
            times[k].append(time.perf_counter() - t)
for k in names:
    print(f"{k}: median {1e3 * statistics.median(times[k]):.3f} ms, min {1e3 * min(times[k]):.3f} ms")
