"""Our backends give identical outputs at 1 and N threads over repeated runs (each in its own process)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from qgnn_deploy.perf.config import SuiteConfig
from qgnn_deploy.perf.runs import run_worker


def determinism(cfg: SuiteConfig, artifacts: list[tuple[str, Path, Path | None, Path, dict[str, Any]]],
                ref: np.ndarray) -> dict[str, Any]:
    """Identical outputs at 1 and ``threads`` threads, ``det_runs`` runs each, for each of our backends.

    ``artifacts``: (kind, artifact dir, TVM library or None, input graph .npz, manifest) per artifact.
    """
    import hashlib

    ref_digest = hashlib.sha256(np.ascontiguousarray(ref).tobytes()).hexdigest()[:16]
    out: dict[str, Any] = {"reference_digest": ref_digest, "runs": cfg.det_runs}
    jobs = []
    for kind, art, lib, graph_npz, manifest in artifacts:
        suffix = "_u8" if kind == "uint8_input" else ""
        jobs.append((f"ours_ort{suffix}", graph_npz, {"kind": "det_ort", "model": str(art / "model.onnx")}))
        if cfg.tvm and lib is not None:
            order = manifest.get("input_order") or [i["name"] for i in manifest["inputs"]]
            jobs.append((f"ours_tvm{suffix}", graph_npz, {"kind": "det_tvm", "library": str(lib),
                                                          "input_order": order}))
    for key, graph_npz, spec in jobs:
        per: dict[str, Any] = {}
        digests: set[str] = set()
        for t in sorted({1, cfg.threads}):
            r = run_worker({**spec, "graph": str(graph_npz), "threads": t, "runs": cfg.det_runs}, cfg.work_dir / "runs",
                           f"det_{key}_{t}", cfg.timeout)
            per[str(t)] = r.get("digests", r.get("error"))
            digests |= set(r.get("digests", ["<error>"]))
        out[key] = {"digests_by_threads": per, "deterministic": len(digests) == 1,
                    "equals_reference": digests == {ref_digest}}
    return out


