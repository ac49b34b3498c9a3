"""Model size and buffer size: the one definition used by NAS, export and benchmarks.

* **Model size** is the bytes of every stored constant as the artifact holds it
  (int4 weights packed two per byte).  :func:`model_bits` gives the same in bits
  for the search penalty.
* **Buffer size** is the peak number of bytes of intermediate values that are
  live at once when the integer graph runs in node order on a given input graph,
  each value freed after its last use.  Inputs are counted (the runtime must hold
  them), constants are not (they are model size).

The same two numbers in analytic form, per layer and in expectation over the LPGNAS
search's relaxed choices, are in :mod:`qgnn_deploy.nas.cost` (``tests/test_nas.py``
checks them against these functions on folded models).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from qgnn_deploy.ir.graph import Graph
from qgnn_deploy.ir.interpreter import run


def model_bytes(graph: Graph) -> int:
    return graph.parameter_bytes()


def model_bits(graph: Graph) -> int:
    """Model size in bits (``8 * model_bytes``)."""
    return 8 * model_bytes(graph)


@dataclass(frozen=True)
class BufferReport:
    peak_bytes: int
    input_bytes: int
    peak_at: str
    per_value: dict[str, int]


def buffer_report(graph: Graph, feeds: Mapping[str, np.ndarray]) -> BufferReport:
    """Peak live activation bytes of ``graph`` on ``feeds`` (liveness in node order)."""
    env = run(graph, feeds, keep_all=True)
    sizes = {k: int(v.nbytes) for k, v in env.items() if k not in graph.initializers}
    last_use: dict[str, int] = {}
    for i, node in enumerate(graph.nodes):
        for name in node.inputs:
            if name in sizes:
                last_use[name] = i
    outputs = {o.name for o in graph.outputs}
    live = {v.name for v in graph.inputs}
    current = sum(sizes[n] for n in live)
    input_bytes = current
    peak, peak_at = current, "inputs"
    for i, node in enumerate(graph.nodes):
        out = node.outputs[0]
        live.add(out)
        current += sizes[out]
        if current > peak:
            peak, peak_at = current, node.name or out
        for name in set(node.inputs) | {out}:
            if name in live and name not in outputs and last_use.get(name, -1) <= i:
                live.discard(name)
                current -= sizes[name]
    return BufferReport(peak, input_bytes, peak_at, sizes)
