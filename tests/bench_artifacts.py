"""Small real artifacts for the runtime tests (``runtimes/qgnn_bench.py``, the aarch64 sysroot).

Built with the project's exporter, exactly as ``qgnn-export`` writes them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qgnn_deploy.ir.graph import Graph
from qgnn_deploy.ir.testing import awkward_graphs, op_zoo_graph

FEATURES = 12


class BuiltOnDemand(dict):
    """A module fixture's libraries, each built the first time a test asks for it: a test deselected into the
    slow run (one preset of many) then costs the default run nothing."""

    def __init__(self, build: Callable[[str], Any]) -> None:
        super().__init__()
        self._build = build

    def __missing__(self, key: str) -> Any:
        self[key] = value = self._build(key)
        return value


def build_artifact(out: Path, target: str = "x86_64", graph: Graph | None = None, integer_input: bool = False,
                   check_emulated: bool = False) -> Path:
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
    export_graph(g, target, out, sample_feeds={"x": x, "edge_index": ei}, check_emulated=check_emulated)
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


_A64_RUN_SCRIPT = """
import platform, sys
import numpy as np
import tvm
from tvm import relax
assert platform.machine() == "aarch64", platform.machine()
feeds_path, out_path, names, *libs = sys.argv[1:]
feeds = np.load(feeds_path)
outs = {}
for i, lib in enumerate(libs):
    vm = relax.VirtualMachine(tvm.runtime.load_module(lib), tvm.cpu())
    for case in sorted({k.split("__")[0] for k in feeds.files}):
        args = [tvm.runtime.tensor(np.ascontiguousarray(feeds[f"{case}__{n}"])) for n in names.split(",")]
        outs[f"{i}__{case}"] = vm["main"](*args).numpy()
np.savez(out_path, **outs)
"""


def run_libraries_under_qemu(arm64, work: Path, cases: dict[str, dict], inputs: tuple[str, ...],
                             libraries: list, env: dict[str, str] | None = None,
                             timeout: float | None = 600.0) -> dict:
    """Run each aarch64 library on every case (feeds named ``inputs``, in call order) in ONE qemu-user
    Python process (its start-up dominates); returns ``{f"{library index}__{case}": output}``."""
    work.mkdir(parents=True, exist_ok=True)
    np.savez(work / "feeds.npz", **{f"{c}__{n}": feeds[n] for c, feeds in cases.items() for n in inputs})
    (work / "run_a64.py").write_text(_A64_RUN_SCRIPT)
    arm64.run_a64_python([str(work / "run_a64.py"), str(work / "feeds.npz"), str(work / "out.npz"), ",".join(inputs),
                          *(str(lib) for lib in libraries)], env=env, timeout=timeout, check=True)
    with np.load(work / "out.npz") as got:
        return {k: got[k] for k in got.files}
