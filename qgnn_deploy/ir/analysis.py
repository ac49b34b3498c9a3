"""Model size and buffer size: the one definition used by NAS, export and benchmarks.

* **Model size** is the bytes of every stored constant as the artifact holds it
  (int4 weights packed two per byte).  :func:`model_bits` gives the same in bits
  for the search penalty.
* **Buffer size** is the peak number of bytes of intermediate values that are
  live at once when the integer graph runs in node order on a given input graph,
  each value freed after its last use.  Inputs are counted (the runtime must hold
  them), constants are not (they are model size).

:func:`buffer_report` measures the value sizes by running the reference interpreter;
:func:`shape_buffer_report` takes them from the op specs' shape rules for given
``N``/``E`` without computing anything (the NAS cost model, :mod:`qgnn_deploy.nas.cost`,
folds a candidate and counts it this way).  Both walk :func:`live_sets`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from qgnn_deploy.ir.graph import Graph
from qgnn_deploy.ir.infer import value_nbytes
from qgnn_deploy.ir.interpreter import run


def model_bytes(graph: Graph) -> int:
    """Bytes of every stored constant (int4 packed), the model-size definition."""
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


def live_sets(graph: Graph) -> list[tuple[str, frozenset[str]]]:
    """The liveness walk of the buffer definition: ``("inputs", graph inputs)`` and then, per node in order,
    (node name, the values live right after its output is allocated).

    A value is freed after its last use (a value nobody reads right after it is written); graph outputs never.
    Depends only on the graph's structure, so one walk serves every input size.
    """
    last_use: dict[str, int] = {}
    for i, node in enumerate(graph.nodes):
        for name in node.inputs:
            last_use[name] = i
    outputs = {o.name for o in graph.outputs}
    live = {v.name for v in graph.inputs}
    steps = [("inputs", frozenset(live))]
    for i, node in enumerate(graph.nodes):
        out = node.outputs[0]
        live.add(out)
        steps.append((node.name or out, frozenset(live)))
        for name in set(node.inputs) | {out}:
            if name in live and name not in outputs and last_use.get(name, -1) <= i:
                live.discard(name)
    return steps


def peak_of(graph: Graph, sizes: Mapping[str, int]) -> BufferReport:
    """Peak of :func:`live_sets` with each runtime value's bytes from ``sizes``."""
    steps = live_sets(graph)
    totals = [sum(sizes[v] for v in live) for _, live in steps]
    k = int(np.argmax(totals))
    return BufferReport(int(totals[k]), int(totals[0]), steps[k][0], dict(sizes))


def buffer_report(graph: Graph, feeds: Mapping[str, np.ndarray]) -> BufferReport:
    """Peak live activation bytes of ``graph`` on ``feeds`` (liveness in node order)."""
    env = run(graph, feeds, keep_all=True)
    return peak_of(graph, {k: int(v.nbytes) for k, v in env.items() if k not in graph.initializers})


def shape_buffer_report(graph: Graph, dims: Mapping[str, int]) -> BufferReport:
    """:func:`buffer_report` without running: value sizes from the static shapes with ``dims`` (``{"N": .., "E": ..}``).

    Equal to :func:`buffer_report` on any input graph of that size (``tests/test_nas.py`` checks it).
    """
    return peak_of(graph, value_nbytes(graph, dims))
