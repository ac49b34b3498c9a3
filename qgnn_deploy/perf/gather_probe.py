"""How fast this machine reads random rows: the aggregations' share of a GNN's unavoidable time.

The roofline (:mod:`.roofline`) charges every byte as streamed: graph inputs, output and parameters read or
written once.  A neighbour aggregation cannot stream: on a graph without locality (the size series' uniform
random edges) each edge reads the row of a random source node, one cache line for a few useful bytes, and
the time that costs is set by how many misses a core keeps in flight, not by copy bandwidth.  This probe
measures that rate on the machine of the day, so the report can say how far a model is from what its
aggregations alone must cost.

The kernel is the simplest form of our CSR edge kernel (:func:`qgnn_deploy.backends.tvm.kernels.edge_reduce`:
int8 rows summed per destination with software prefetch, requantized to int8 on the way out; no per-edge
coefficient, no self term), on the series' largest graph sorted by destination once, its CSR plan built
before the timed calls.  Row widths are rounded up to a power of two bytes, the layout a gather-bound kernel
would choose (a 7-byte row straddles cache lines and takes three loads).  Best (and median) of ``repeats``
calls per width, at the suite's thread count.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from qgnn_deploy.perf.graphs import random_graph
from qgnn_deploy.perf.measure import time_calls


def probe_width(columns: int) -> int:
    """The int8 row width the probe reads for an aggregation over ``columns`` features (a power of two)."""
    return 1 << max(0, int(columns) - 1).bit_length()


def run_gather_probe(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec``: ``num_nodes``, ``degree``, ``seed`` (the series graph), ``widths`` (int8 bytes per row),
    ``threads``, ``target`` (a TVM target preset), ``repeats``.  Returns per width the best and median seconds."""
    import tvm

    from qgnn_deploy.backends.onnx.segment import sort_edges_by_destination
    from qgnn_deploy.backends.tvm import kernels
    from qgnn_deploy.backends.tvm.targets import resolve_target

    n, threads = int(spec["num_nodes"]), int(spec["threads"])
    ei = sort_edges_by_destination(random_graph(n, 1, float(spec["degree"]), int(spec.get("seed", 1)))["edge_index"])
    e = int(ei.shape[1])
    target = resolve_target(str(spec["target"])).tvm()

    def build(func: Any) -> Any:
        mod = tvm.IRModule({"main": func.with_attr("global_symbol", "main")})
        return tvm.compile(mod, target=target)["main"]

    edges = tvm.runtime.tensor(ei)
    flag = tvm.runtime.tensor(np.zeros(1, np.int32))
    rowptr = tvm.runtime.tensor(np.zeros(n + 1, np.int64))
    col = tvm.runtime.tensor(np.zeros(e, np.int32))
    build(kernels.edge_plan(threads, 1, 0))(edges, flag, rowptr, col)
    if int(flag.numpy()[0]) != 1:
        raise RuntimeError("gather probe: the sorted edges were not recognised as CSR order")
    rng = np.random.default_rng(0)
    unused = tvm.runtime.tensor(np.zeros((1, 1), np.int64))  # the per-row multiplier (none here)
    widths: dict[str, Any] = {}
    for w in sorted({int(v) for v in spec["widths"]}):
        x = tvm.runtime.tensor(rng.integers(-127, 128, (n, w), dtype=np.int8))
        rq = tvm.runtime.tensor(np.array([[1] * w, [1 << 31] * w, [32] * w], np.int64))  # round(sum / 2^32)
        out = tvm.runtime.empty((n, w), "int8")
        f = build(kernels.edge_reduce(w, "int8", threads, "add", 1, 0, csr_col=True,
                                      requant=(0, -127, 127, "int8")))
        args = (x, edges, edges, flag, rowptr, col, rq, unused, out)
        times = time_calls(lambda f=f, args=args: f(*args), 2, int(spec.get("repeats", 7)))
        widths[str(w)] = {"best_s": min(times), "median_s": float(np.median(times)),
                          "ns_per_edge": 1e9 * min(times) / e}
    method = (f"our CSR edge kernel in its simplest form (int8 rows summed per destination with software prefetch, "
              f"int8 out; no coefficient, no self term) on the series graph sorted by destination, rows at a "
              f"power-of-two width, best of {int(spec.get('repeats', 7))} calls, {threads} threads")
    return {"num_nodes": n, "num_edges": e, "widths": widths, "method": method}
