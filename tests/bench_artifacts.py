"""Small real artifacts for the runtime tests (``runtimes/qgnn_bench.py``, the aarch64 sysroot).

Built with the project's exporter, exactly as ``qgnn-export`` writes them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from qgnn_deploy.ir.graph import Graph
from qgnn_deploy.ir.testing import awkward_graphs, op_zoo_graph

FEATURES = 12


def build_artifact(out: Path, target: str = "x86_64", graph: Graph | None = None, integer_input: bool = False) -> Path:
    """Export ``graph`` (default: :func:`op_zoo_graph`, every IR op) for ``target`` into ``out``.

    Goes through the real exporter (:func:`qgnn_deploy.exporting.export_graph`): ONNX model, TVM
    library for compiled targets, sample input, reference-interpreter output, checksummed manifest.
    ``integer_input`` applies :func:`qgnn_deploy.ir.passes.prequantize_input` first (``--integer-input``).
    """
    from qgnn_deploy.exporting import export_graph
    from qgnn_deploy.ir.passes import prequantize_input

    g = graph if graph is not None else op_zoo_graph(features=FEATURES)
    if integer_input:
        prequantize_input(g)
    x, ei = awkward_graphs(FEATURES)["random"]
    export_graph(g, target, out, sample_feeds={"x": x, "edge_index": ei})
    return out


@pytest.fixture(scope="session")
def a64_sysroot() -> Path:
    """The cached aarch64 sysroot, built now if setup.sh has not (skipped only without qemu).

    Shared by the aarch64 tests of every backend: import it into a test module to use it.
    """
    import shutil
    import subprocess

    from qgnn_deploy import arm64

    if shutil.which("qemu-aarch64-static") is None:
        pytest.skip("qemu-aarch64-static is not installed (apt-get install qemu-user-static)")
    root = arm64.sysroot_dir()
    # Instant when the stamp matches; rebuilds (under a lock) when missing or built from another package set.
    script = Path(__file__).resolve().parents[1] / "export" / "make_a64_sysroot.sh"
    proc = subprocess.run(["bash", str(script), str(root)], capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, f"building the aarch64 sysroot failed: {proc.stderr[-2000:]}"
    assert arm64.a64_python_available(root)
    return root


@pytest.fixture(scope="session")
def x86_zoo_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One op-zoo x86_64 artifact (ONNX + TVM library, symbolic N/E) shared by the validation tests."""
    return build_artifact(tmp_path_factory.mktemp("zoo_x86") / "art", "x86_64")
