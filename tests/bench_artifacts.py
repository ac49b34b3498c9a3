"""Small real artifacts for the runtime tests (``runtimes/qgnn_bench.py``, the aarch64 sysroot).

Until ``qgnn_deploy.exporting`` lands these are assembled here the way ``qgnn-export`` lays them
out: the ONNX model from the project's ONNX backend, a TVM library from its Relax backend (x86-64 or
aarch64), the sample input, the reference interpreter's output and a checksummed manifest.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qgnn_deploy.artifact import atomic_directory, write_manifest
from qgnn_deploy.ir.analysis import buffer_report, model_bytes
from qgnn_deploy.ir.graph import Graph
from qgnn_deploy.ir.interpreter import run
from qgnn_deploy.ir.testing import awkward_graphs, op_zoo_graph

FEATURES = 12


def build_artifact(out: Path, target: str = "x86_64", with_tvm: bool = True, graph: Graph | None = None) -> Path:
    """Write an artifact directory for ``target`` ("x86_64" or "arm64") at ``out``.

    Default graph: :func:`qgnn_deploy.ir.testing.op_zoo_graph` (every IR op), through the project's
    ONNX exporter and TVM Relax backend, with the reference interpreter's output as the reference.
    """
    from qgnn_deploy.backends.onnx.exporter import export_onnx, save_onnx
    from qgnn_deploy.backends.tvm.compile import compile_to_dir

    g = graph if graph is not None else op_zoo_graph(features=FEATURES)
    x, ei = awkward_graphs(FEATURES)["random"]
    feeds = {"x": x, "edge_index": ei}
    ref = run(g, feeds)
    with atomic_directory(out) as tmp:
        save_onnx(export_onnx(g), str(tmp / "model.onnx"))
        roles = {"model.onnx": "onnx", "sample_input.npz": "sample_input",
                 "reference_output.npz": "reference_output"}
        fields: dict = {"target": target}
        if with_tvm:
            fields = compile_to_dir(g, target, tmp, sample_feeds=feeds)
            roles[fields["library"]] = "tvm_library"
        np.savez(tmp / "sample_input.npz", **feeds)
        np.savez(tmp / "reference_output.npz", **{o.name: ref[o.name] for o in g.outputs})
        write_manifest(tmp, {
            **fields,
            "inputs": [v.to_json() for v in g.inputs],
            "outputs": [v.to_json() for v in g.outputs],
            "max_in_degree": g.meta["max_in_degree"],
            "num_nodes": None,
            "model_bytes": model_bytes(g),
            "buffer_bytes": buffer_report(g, feeds).peak_bytes,
        }, roles)
    return out


@pytest.fixture(scope="session")
def a64_sysroot() -> Path:
    """The cached aarch64 sysroot, built now if setup.sh has not (skipped only without qemu)."""
    import shutil
    import subprocess

    from qgnn_deploy import arm64

    if shutil.which("qemu-aarch64-static") is None:
        pytest.skip("qemu-aarch64-static is not installed (apt-get install qemu-user-static)")
    root = arm64.sysroot_dir()
    if not arm64.a64_python_available(root):
        script = Path(__file__).resolve().parents[1] / "export" / "make_a64_sysroot.sh"
        proc = subprocess.run(["bash", str(script), str(root)], capture_output=True, text=True, timeout=1800)
        assert proc.returncode == 0, f"building the aarch64 sysroot failed: {proc.stderr[-2000:]}"
    return root
