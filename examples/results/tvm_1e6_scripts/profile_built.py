"""Per-kernel profile of built series libraries (``profile_1e6.py`` without training or compiling), sorted edges.

Usage: ``TVM_NUM_THREADS=2 PYTHONPATH=$PWD python profile_built.py CKPT LIB [LIB ...]`` with ``CKPT`` the series
checkpoint and each ``LIB`` a ``build_lib.py`` output of it; every library is profiled in turn in this one process
(``backends.tvm.profile.profile_library``, median of 7) on ``random_graph(10**6, 128, 10.0, seed=1)`` with its
edges sorted by destination, and checked bit-exact against the interpreter.
"""

import os
import sys

import numpy as np

from qgnn_deploy.backends.tvm.profile import integer_input_variant, profile_library, render
from qgnn_deploy.fold import fold_model
from qgnn_deploy.perf.graphs import random_graph
from qgnn_deploy.train.checkpoint import load_checkpoint

graph, feeds = integer_input_variant(fold_model(load_checkpoint(sys.argv[1])[0]),
                                     random_graph(10**6, 128, 10.0, seed=1))
ei = feeds["edge_index"]
feeds["edge_index"] = np.ascontiguousarray(ei[:, np.argsort(ei[1], kind="stable")])
for lib in sys.argv[2:]:
    prof = profile_library(lib, graph, feeds, repeat=7, total_repeat=7)
    print(f"{lib}: sorted edges, TVM_NUM_THREADS={os.environ.get('TVM_NUM_THREADS')}, load {os.getloadavg()[0]:.2f}")
    print(render(prof), flush=True)
