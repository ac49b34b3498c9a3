"""The aarch64 Python sysroot under qemu-user (export/make_a64_sysroot.sh, qgnn_deploy.arm64)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from bench_artifacts import a64_sysroot  # noqa: F401  (fixture)

from qgnn_deploy import arm64
from qgnn_deploy.errors import QgnnError

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "export" / "make_a64_sysroot.sh"

PROBE = """
import json, platform, sys, numpy, tvm, tvm_ffi, onnxruntime
print(json.dumps({"machine": platform.machine(), "python": platform.python_version(), "numpy": numpy.__version__,
                  "tvm": tvm.__version__, "tvm_ffi": tvm_ffi.__version__, "ort": onnxruntime.__version__,
                  "threads": __import__("os").environ.get("TVM_NUM_THREADS")}))
"""


@pytest.mark.slow  # default-run budget (CI ~20 min on 2 cores): `bash export/run.sh test-all` runs it
@pytest.mark.arm64
def test_sysroot_python_is_aarch64_and_imports_tvm(a64_sysroot: Path) -> None:  # noqa: F811
    assert arm64.a64_python_available()
    proc = arm64.run_a64_python(["-c", PROBE], env={"TVM_NUM_THREADS": "3"}, timeout=300, check=True)
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["machine"] == "aarch64"
    assert info["python"].startswith("3.11.")
    assert info["tvm"] == "0.27.0.post1" and info["tvm_ffi"] == "0.1.14.post1"
    assert info["ort"] == "1.31.1"
    assert info["threads"] == "3"  # env reaches the guest


@pytest.mark.arm64
def test_sysroot_script_second_run_is_instant(a64_sysroot: Path) -> None:  # noqa: F811
    t0 = time.monotonic()
    proc = subprocess.run(["bash", str(SCRIPT), str(a64_sysroot)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "up to date" in proc.stderr
    assert time.monotonic() - t0 < 5


def test_sysroot_location_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("QGNN_A64_SYSROOT", raising=False)
    monkeypatch.setenv("QGNN_CACHE", str(tmp_path / "cache"))
    assert arm64.sysroot_dir() == tmp_path / "cache" / "a64"
    monkeypatch.setenv("QGNN_A64_SYSROOT", str(tmp_path / "elsewhere"))
    assert arm64.sysroot_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv("QGNN_CACHE")
    monkeypatch.delenv("QGNN_A64_SYSROOT")
    assert arm64.sysroot_dir() == Path.home() / ".cache" / "qgnn-deploy" / "a64"


def test_missing_sysroot_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("QGNN_A64_SYSROOT", str(tmp_path / "none"))
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/" + name)
    assert not arm64.a64_python_available()
    with pytest.raises(QgnnError) as err:
        arm64.run_a64_python(["-c", "pass"])
    msg = str(err.value)
    assert "\n" not in msg and "make_a64_sysroot.sh" in msg and str(tmp_path / "none") in msg


def test_missing_qemu_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert not arm64.a64_python_available()
    with pytest.raises(QgnnError, match="apt-get install qemu-user-static"):
        arm64.require_a64_python()


def test_script_usage_and_missing_tools(tmp_path: Path) -> None:
    bash = shutil.which("bash")
    proc = subprocess.run([bash, str(SCRIPT)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "usage" in proc.stderr
    # A PATH with the basic tools but without qemu or dpkg: the error names the package to install.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("mkdir", "sha256sum", "cut", "cat", "dirname"):
        os.symlink(shutil.which(tool), bindir / tool)
    proc = subprocess.run([bash, str(SCRIPT), str(tmp_path / "dest")], capture_output=True, text=True, timeout=30,
                          env={"PATH": str(bindir), "HOME": str(tmp_path)})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "[a64-sysroot] error: qemu-aarch64-static not found: apt-get install qemu-user-static")
    os.symlink(shutil.which("qemu-aarch64-static") or "/bin/true", bindir / "qemu-aarch64-static")
    proc = subprocess.run([bash, str(SCRIPT), str(tmp_path / "dest")], capture_output=True, text=True, timeout=30,
                          env={"PATH": str(bindir), "HOME": str(tmp_path)})
    assert proc.returncode == 2 and "apt-get install dpkg" in proc.stderr


GUEST_RUN = """
import sys, numpy as np, tvm
from tvm import relax
lib, inp, out = sys.argv[1:4]
vm = relax.VirtualMachine(tvm.runtime.load_module(lib), tvm.cpu())
with np.load(inp) as d:
    cases = sorted({k.split("__")[0] for k in d.files})
    res = {c: vm["main"](tvm.runtime.tensor(d[c + "__x"]), tvm.runtime.tensor(d[c + "__edge_index"])).numpy()
           for c in cases}
np.savez(out, **res)
"""


@pytest.mark.slow  # default-run budget (CI ~20 min on 2 cores): `bash export/run.sh test-all` runs it
@pytest.mark.arm64
def test_aarch64_library_bit_exact_vs_x86_tvm_ort_and_interpreter(a64_sysroot: Path,  # noqa: F811
                                                                   tmp_path: Path) -> None:
    """The cross-compiled library, run by aarch64 Python under qemu, on every awkward graph."""
    import numpy as np
    import onnxruntime as ort

    from qgnn_deploy.backends.onnx.exporter import export_onnx
    from qgnn_deploy.backends.tvm.compile import compile_to_dir, run_library
    from qgnn_deploy.ir.interpreter import run
    from qgnn_deploy.ir.testing import awkward_graphs, op_zoo_graph

    g = op_zoo_graph(features=12)
    cases = awkward_graphs(12, seed=3)
    sample = {"x": cases["random"][0], "edge_index": cases["random"][1]}
    arm = compile_to_dir(g, "arm64", tmp_path / "arm", sample_feeds=sample)
    x86 = compile_to_dir(g, "x86_64", tmp_path / "x86", sample_feeds=sample)
    np.savez(tmp_path / "in.npz", **{f"{c}__{k}": v for c, (x, ei) in cases.items()
                                     for k, v in (("x", x), ("edge_index", ei))})
    proc = arm64.run_a64_python(["-c", GUEST_RUN, tmp_path / "arm" / arm["library"], tmp_path / "in.npz",
                                 tmp_path / "out.npz"], env={"TVM_NUM_THREADS": "2"}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sess = ort.InferenceSession(export_onnx(g).SerializeToString(), providers=["CPUExecutionProvider"])
    with np.load(tmp_path / "out.npz") as got:
        assert sorted(got.files) == sorted(cases)
        for name, (x, ei) in cases.items():
            ref = run(g, {"x": x, "edge_index": ei})["y"]
            a64 = got[name]
            assert a64.dtype == ref.dtype and np.array_equal(a64, ref), f"aarch64 vs interpreter on {name}"
            assert np.array_equal(a64, sess.run(None, {"x": x, "edge_index": ei})[0]), f"aarch64 vs ORT on {name}"
            x86_out = run_library(tmp_path / "x86" / x86["library"], {"x": x, "edge_index": ei})
            assert np.array_equal(a64, x86_out), f"aarch64 vs x86-64 TVM on {name}"
