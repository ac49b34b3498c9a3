"""Achieved integer ops/s and bytes/s on the largest graph against a GEMM and a copy-bandwidth probe.

The roofline time charges only compulsory traffic, streamed.  Beside it the report gives a gather-aware
reference: the roofline time plus, per neighbour aggregation of the model, the time the machine needs for its
random row reads alone (:mod:`.gather_probe`), which no kernel avoids on a graph without locality.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from qgnn_deploy.perf.config import SuiteConfig
from qgnn_deploy.perf.gather_probe import probe_width
from qgnn_deploy.perf.graphs import random_graph
from qgnn_deploy.perf.runs import run_worker


def workload_counts(graph: Any, num_nodes: int, num_edges: int, features: int) -> dict[str, Any]:
    """Integer ops and bytes of ``graph`` at N/E, scaled from an interpreter run on a small graph.

    Shapes are observed on a small random graph; every value whose leading dimension is
    N (E) scales with N (E).  ``int_ops``: 2*M*K*N per matmul plus one op per output element
    of every other integer node; ``bytes_unfused``: every node reads its inputs and writes its
    output once (upper estimate); ``bytes_compulsory``: graph inputs + output + parameters;
    ``gather_columns``: the feature count of every per-edge row gather (one per aggregation).
    """
    from qgnn_deploy.ir.interpreter import run
    from qgnn_deploy.ir.passes import quantize_input_feeds

    n0 = 997
    small = random_graph(n0, features, 10.0, seed=3)
    e0 = int(small["edge_index"].shape[1])
    env = run(graph, quantize_input_feeds(graph, {k: small[k] for k in ("x", "edge_index")}), keep_all=True)

    def scale(shape: tuple[int, ...]) -> float:
        if not shape:
            return 1.0
        if shape[0] == n0:
            return num_nodes / n0
        if shape[0] == e0:
            return num_edges / e0
        if len(shape) > 1 and shape[1] == e0:
            return num_edges / e0
        return 1.0

    def nbytes(name: str) -> float:
        v = np.asarray(env[name])
        return v.nbytes * scale(v.shape)

    ops = bytes_unfused = 0.0
    gather_columns = []
    for node in graph.nodes:
        out = np.asarray(env[node.outputs[0]])
        if node.op == "gather_rows" and out.ndim == 2 and out.shape[0] == e0:
            gather_columns.append(int(out.shape[1]))
        if node.op == "matmul":
            a, b = np.asarray(env[node.inputs[0]]), np.asarray(env[node.inputs[1]])
            ops += 2.0 * a.shape[0] * a.shape[1] * b.shape[1] * scale(a.shape)
        elif node.op not in ("quantize", "dequantize", "take_row"):
            ops += out.size * scale(out.shape)
        bytes_unfused += sum(nbytes(i) for i in node.inputs if i) + nbytes(node.outputs[0])
    compulsory = sum(nbytes(v.name) for v in graph.inputs) + sum(nbytes(v.name) for v in graph.outputs)
    compulsory += graph.parameter_bytes()
    method = workload_counts.__doc__.split("\n\n")[1].strip().replace("\n   ", "")
    return {"int_ops": ops, "bytes_unfused": bytes_unfused, "bytes_compulsory": compulsory,
            "gather_columns": gather_columns, "method": method}


def roofline_stage(cfg: SuiteConfig, res: dict[str, Any]) -> None:
    """Achieved int ops/s and bytes/s of our best backend on the largest graph vs the probes."""
    series = res.get("series") or {}
    graphs = series.pop("_graphs", None)
    points = series.get("points") or []
    probe = run_worker({"kind": "probe", "threads": cfg.threads, "gemm_size": 1024 if cfg.quick else 2048,
                        "copy_mib": 64 if cfg.quick else 512}, cfg.work_dir / "runs", "probe", cfg.timeout)
    note: dict[str, Any] = {"probe": probe}
    if not graphs or not points:
        res["roofline"] = note
        return
    p = points[-1]
    cands = {k: p[k]["latency_ms"]["median"] for k in graphs if "latency_ms" in p.get(k, {})}
    if not cands or "error" in probe:
        res["roofline"] = note
        return
    best = min(cands, key=cands.get)  # type: ignore[arg-type]
    secs = cands[best] / 1e3
    w = workload_counts(graphs[best], p["num_nodes"], p["num_edges"], series["features"])
    peak_ops = probe["int8_gemm"]["ops_per_s"]
    peak_bw = probe["memory_bandwidth"]["bytes_per_s"]
    achieved = {"backend": best, "median_ms": cands[best], "num_nodes": p["num_nodes"], "num_edges": p["num_edges"],
                "int_ops_per_s": w["int_ops"] / secs, "bytes_unfused_per_s": w["bytes_unfused"] / secs,
                "bytes_compulsory_per_s": w["bytes_compulsory"] / secs}
    achieved["fraction_of_peak_int8_ops"] = achieved["int_ops_per_s"] / peak_ops
    achieved["fraction_of_copy_bandwidth_unfused"] = achieved["bytes_unfused_per_s"] / peak_bw
    achieved["fraction_of_copy_bandwidth_compulsory"] = achieved["bytes_compulsory_per_s"] / peak_bw
    intensity = w["int_ops"] / w["bytes_compulsory"]
    achieved["arithmetic_intensity_ops_per_byte"] = intensity
    achieved["roofline_bound_ops_per_s"] = min(peak_ops, intensity * peak_bw)
    achieved["bound_by"] = "memory" if intensity * peak_bw < peak_ops else "compute"
    achieved["time_at_roofline_ms"] = 1e3 * w["int_ops"] / achieved["roofline_bound_ops_per_s"]
    res["roofline"] = {**note, "workload": w, "achieved": achieved}
    if cfg.tvm and w["gather_columns"]:
        res["roofline"]["gather"] = gather_reference(cfg, p, series["degree"], w["gather_columns"],
                                                     achieved["time_at_roofline_ms"])


def gather_reference(cfg: SuiteConfig, point: dict[str, Any], degree: float, columns: list[int],
                     roofline_ms: float) -> dict[str, Any]:
    """The gather probe on ``point``'s graph, and the reference time: ``roofline_ms`` plus the probe's best time
    for each aggregation's row width (``columns``: one entry per aggregation)."""
    spec = {"kind": "gather_probe", "threads": cfg.threads, "num_nodes": point["num_nodes"], "degree": degree,
            "seed": 1, "target": cfg.tvm_target, "widths": sorted({probe_width(c) for c in columns}),
            "repeats": 3 if cfg.quick else 7}
    probe = run_worker(spec, cfg.work_dir / "runs", "gather_probe", cfg.timeout)
    if "error" in probe:
        return {"probe": probe}
    per_agg = [1e3 * probe["widths"][str(probe_width(c))]["best_s"] for c in columns]
    return {"probe": probe, "aggregation_columns": columns, "aggregation_ms": per_agg,
            "reference_ms": roofline_ms + sum(per_agg)}


