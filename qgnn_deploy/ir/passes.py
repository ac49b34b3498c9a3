"""Graph-level clean-ups applied after fold: small, named, individually testable."""

from __future__ import annotations

import hashlib

from qgnn_deploy.ir.graph import Graph


def dedupe_initializers(graph: Graph, consumers: tuple[str, ...] | None = None) -> int:
    """Store identical constants once; returns how many were dropped.

    ``consumers`` restricts the pass to constants read only by those ops (fold uses ``("lut",)``:
    the per-layer degree tables, so that the size model in ``nas/cost.py`` stays a simple formula).
    """
    eligible = set(graph.initializers)
    if consumers is not None:
        for node in graph.nodes:
            if node.op not in consumers:
                eligible -= set(node.inputs)
    first: dict[tuple[str, tuple[int, ...], str], str] = {}
    rename: dict[str, str] = {}
    for name, arr in graph.initializers.items():
        if name not in eligible:
            continue
        key = (str(arr.dtype), tuple(arr.shape), hashlib.sha256(arr.tobytes()).hexdigest())
        if key in first:
            rename[name] = first[key]
        else:
            first[key] = name
    if not rename:
        return 0
    for node in graph.nodes:
        node.inputs = [rename.get(i, i) for i in node.inputs]
    for name in rename:
        del graph.initializers[name]
    return len(rename)
