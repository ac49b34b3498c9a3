"""Small real artifacts for the runtime tests (``runtimes/qgnn_bench.py``, the aarch64 sysroot).

Until the full exporter lands these are assembled here the way ``qgnn-export`` lays them out:
the ONNX model from the project's ONNX backend, TVM libraries for x86-64 and aarch64, the sample
input, the reference interpreter's output and a checksummed manifest.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qgnn_deploy.artifact import atomic_directory, write_manifest
from qgnn_deploy.ir.analysis import buffer_report, model_bytes
from qgnn_deploy.ir.graph import Graph, GraphBuilder
from qgnn_deploy.ir.interpreter import run
from qgnn_deploy.ir.testing import awkward_graphs

FEATURES, HIDDEN = 12, 8


def mini_gcn_graph(seed: int = 0) -> Graph:
    """One integer GCN-style layer (u8 x s8 matmul, gather, scatter-add, requantize)."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder()
    x = b.input("x", "float32", ("N", FEATURES))
    ei = b.input("edge_index", "int64", (2, "E"))
    src = b.op("take_row", [ei], "src", index=0)
    dst = b.op("take_row", [ei], "dst", index=1)
    xq = b.op("quantize", [x], "x_q", scale=0.05, zero_point=128, qmin=0, qmax=255, dtype="uint8")
    w = b.const("w", rng.integers(-127, 128, (FEATURES, HIDDEN)).astype(np.int8))
    acc = b.op("matmul", [xq, w], "acc", a_zero_point=128)
    h = b.op("requantize", [acc], "h", multiplier=1 << 14, shift=22, zero_point=0, qmin=-127, qmax=127,
             dtype="int8")
    h32 = b.op("cast", [h], "h32", dtype="int32")
    agg = b.op("scatter_add", [b.op("gather_rows", [h32, src], "msgs"), dst, x], "agg")
    yq = b.op("requantize", [agg], "y_q", multiplier=1 << 14, shift=17, zero_point=0, qmin=-128, qmax=127,
              dtype="int8")
    y = b.op("dequantize", [yq], "y", scale=0.1, zero_point=0)
    b.output(y, "float32", ("N", HIDDEN))
    g = b.graph
    g.meta.update({"task": "node", "max_in_degree": 1000})
    g.validate()
    return g


def _tvm_library(onnx_path: Path, out: Path, target: str) -> None:
    """Compile through TVM's ONNX importer (stand-in until the Relax backend is wired in)."""
    import onnx
    import tvm
    from tvm.relax.frontend.onnx import from_onnx

    mod = from_onnx(onnx.load(str(onnx_path)), keep_params_in_input=False)
    if target == "arm64":
        from tvm.support import cc

        tgt = tvm.target.Target({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]})
        tvm.compile(mod, target=tgt).export_library(str(out), fcompile=cc.cross_compiler("aarch64-linux-gnu-g++"))
    else:
        tvm.compile(mod, target="llvm").export_library(str(out))


def build_artifact(out: Path, target: str = "x86_64", with_tvm: bool = True) -> Path:
    """Write an artifact directory for ``target`` ("x86_64" or "arm64") at ``out``."""
    from qgnn_deploy.backends.onnx.exporter import export_onnx, save_onnx

    g = mini_gcn_graph()
    x, ei = awkward_graphs(FEATURES)["random"]
    feeds = {"x": x, "edge_index": ei}
    ref = run(g, feeds)
    with atomic_directory(out) as tmp:
        save_onnx(export_onnx(g), str(tmp / "model.onnx"))
        roles = {"model.onnx": "onnx", "sample_input.npz": "sample_input",
                 "reference_output.npz": "reference_output"}
        if with_tvm:
            lib = f"model_{target}.so"
            _tvm_library(tmp / "model.onnx", tmp / lib, target)
            roles[lib] = "tvm_library"
        np.savez(tmp / "sample_input.npz", **feeds)
        np.savez(tmp / "reference_output.npz", **{o.name: ref[o.name] for o in g.outputs})
        write_manifest(tmp, {
            "target": target,
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
