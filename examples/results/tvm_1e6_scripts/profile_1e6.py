"""Per-kernel TVM profile of the size series' model at N nodes (default 10^6), sorted and unsorted edges.

The bench-suite's series model (GCN INT8 QAT+LoRAP, 128 features, trained on a 600-node synthetic set for 50
epochs: ``perf.runs.train_model``), folded, its uint8-input variant compiled for x86_64 (dynamic N/E), run on
``perf.graphs.random_graph(N, 128, 10.0, seed=1)`` with edges as given and sorted by destination once.
Usage: ``TVM_NUM_THREADS=2 PYTHONPATH=$PWD python examples/results/tvm_1e6_scripts/profile_1e6.py WORK [N]``
(WORK keeps the checkpoint and the library).
"""

import os
import sys
from pathlib import Path

import numpy as np

from qgnn_deploy.backends.tvm.compile import compile_to_dir
from qgnn_deploy.backends.tvm.profile import integer_input_variant, profile_library, render
from qgnn_deploy.fold import fold_model
from qgnn_deploy.perf.config import SuiteConfig
from qgnn_deploy.perf.graphs import random_graph
from qgnn_deploy.perf.runs import train_model
from qgnn_deploy.train.checkpoint import load_checkpoint

work = Path(sys.argv[1])
n = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000
repeat = int(sys.argv[3]) if len(sys.argv) > 3 else 5
work.mkdir(parents=True, exist_ok=True)
cfg = SuiteConfig(out_dir=work, work_dir=work)
ckpt = train_model(cfg, "synthetic", 8, work / "synthetic128_int8_lorap.pt", 50, 128)
graph = fold_model(load_checkpoint(ckpt)[0])
feeds = random_graph(n, 128, 10.0, seed=1)
graph, feeds = integer_input_variant(graph, feeds)
lib_dir = work / "lib"
fields = compile_to_dir(graph, "x86_64", lib_dir, sample_feeds={k: v[:, :2000] if k == "edge_index" else v[:1000]
                                                                 for k, v in feeds.items()})
lib = lib_dir / fields["library"]
for order in ("unsorted", "sorted"):
    if order == "sorted":
        ei = feeds["edge_index"]
        feeds["edge_index"] = np.ascontiguousarray(ei[:, np.argsort(ei[1], kind="stable")])
    prof = profile_library(lib, graph, feeds, repeat=repeat, total_repeat=repeat)
    print(f"N={n} E={feeds['edge_index'].shape[1]} {order} edges, TVM_NUM_THREADS={os.environ.get('TVM_NUM_THREADS')},"
          f" load {os.getloadavg()[0]:.2f} (under load)")
    print(render(prof), flush=True)
