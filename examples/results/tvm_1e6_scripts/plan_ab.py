"""edge_plan alone at N nodes (default 10^6), sorted and unsorted edges: this checkout's kernel against the one at a
git revision, interleaved in one process.

Usage: ``TVM_NUM_THREADS=2 PYTHONPATH=$PWD python examples/results/tvm_1e6_scripts/plan_ab.py REV [N] [ROUNDS]``
(``SORTED_COL=1`` in the environment builds the plans that write ``col`` for sorted edges too).  The revision's
``kernels.py`` is read with ``git show`` into a temporary module; both plans run on
``perf.graphs.random_graph(N, 1, 10.0, seed=1)``'s edges as given and sorted by destination once, ROUNDS calls
each in turn, and must agree on the flag, the row pointers and ``col``.  Prints the median and min wall ms.
"""

import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tvm

from qgnn_deploy.backends.tvm import kernels
from qgnn_deploy.backends.tvm.targets import resolve_target
from qgnn_deploy.perf.graphs import random_graph

rev = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 11
sorted_col = os.environ.get("SORTED_COL") == "1"
source = subprocess.run(["git", "show", f"{rev}:qgnn_deploy/backends/tvm/kernels.py"], check=True,
                        capture_output=True, text=True).stdout
# TVMScript re-reads a macro's source from its file: the old module must live in a file of its own
old_file = Path(tempfile.mkdtemp()) / "kernels_at_rev.py"
old_file.write_text(source.replace("from .gemm_skeleton import", "from qgnn_deploy.backends.tvm.gemm_skeleton import"))
spec = importlib.util.spec_from_file_location("kernels_at_rev", old_file)
old = importlib.util.module_from_spec(spec)
spec.loader.exec_module(old)

target = resolve_target("x86_64").tvm()


def build(func: object) -> object:
    return tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target=target)["main"]


plans = {rev: build(old.edge_plan(2, 1, 0, sorted_col=sorted_col)),
         "this": build(kernels.edge_plan(2, 1, 0, sorted_col=sorted_col))}
ei = random_graph(n, 1, 10.0, seed=1)["edge_index"].astype(np.int64)
e = ei.shape[1]
orders = {"unsorted": ei, "sorted": ei[:, np.argsort(ei[1], kind="stable")]}
print(f"N={n} E={e}, TVM_NUM_THREADS={os.environ.get('TVM_NUM_THREADS')}, sorted_col={sorted_col}, "
      f"load {os.getloadavg()[0]:.2f}; wall ms median (min) of {rounds}")
for order, edges in orders.items():
    idx = tvm.runtime.tensor(np.ascontiguousarray(edges))
    outs = {k: [tvm.runtime.tensor(np.zeros(s, t)) for s, t in ((1, np.int32), (n + 1, np.int64), (e, np.int32))]
            for k in plans}
    wall: dict[str, list[float]] = {k: [] for k in plans}
    for r in range(rounds):
        for k in list(plans) if r % 2 == 0 else list(plans)[::-1]:
            t0 = time.perf_counter()
            plans[k](idx, *outs[k])
            wall[k].append(1e3 * (time.perf_counter() - t0))
    a, b = outs[rev], outs["this"]
    same = np.array_equal(a[0].numpy(), b[0].numpy()) and np.array_equal(a[1].numpy(), b[1].numpy())
    if order == "unsorted" or sorted_col:
        same = same and np.array_equal(a[2].numpy(), b[2].numpy())
    assert same, f"the plans disagree on {order} edges"
    print(f"{order:8s} " + "  ".join(f"{k}: {statistics.median(v):.2f} ({min(v):.2f})" for k, v in wall.items()))
