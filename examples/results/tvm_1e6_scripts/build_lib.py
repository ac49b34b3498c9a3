"""Compile the series checkpoint's uint8-input library as ``profile_1e6.py`` does, without profiling it.

Usage: ``PYTHONPATH=$PWD python build_lib.py CKPT OUTDIR`` (prints the library path, for ``ab_libraries.py``).
"""

import sys
from pathlib import Path

from qgnn_deploy.backends.tvm.compile import compile_to_dir
from qgnn_deploy.backends.tvm.profile import integer_input_variant
from qgnn_deploy.fold import fold_model
from qgnn_deploy.perf.graphs import random_graph
from qgnn_deploy.train.checkpoint import load_checkpoint

graph = fold_model(load_checkpoint(sys.argv[1])[0])
graph, feeds = integer_input_variant(graph, random_graph(3000, 128, 10.0, seed=1))
samples = {k: v[:, :2000] if k == "edge_index" else v[:1000] for k, v in feeds.items()}
fields = compile_to_dir(graph, "x86_64", Path(sys.argv[2]), sample_feeds=samples)
print(Path(sys.argv[2]) / fields["library"])
