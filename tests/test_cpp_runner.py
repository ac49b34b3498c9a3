"""runtimes/cpp: the Python-free runner, cross-compiled for aarch64 and run under qemu-user."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from bench_artifacts import a64_sysroot, build_artifact  # noqa: F401  (a64_sysroot is a fixture)

REPO = Path(__file__).resolve().parents[1]
EMULATED = "EMULATED (qemu-user) \u2014 not device timings"


@pytest.fixture(scope="module")
def runner(a64_sysroot: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    if shutil.which("aarch64-linux-gnu-g++") is None:
        pytest.skip("aarch64-linux-gnu-g++ is not installed (apt-get install g++-aarch64-linux-gnu)")
    out = tmp_path_factory.mktemp("cpp") / "qgnn_run_arm64"
    env = {**os.environ, "ZLIB_INC": str(a64_sysroot / "root/usr/include"),
           "ZLIB_LIB": str(a64_sysroot / "root/usr/lib/aarch64-linux-gnu/libz.a")}
    proc = subprocess.run(["bash", str(REPO / "runtimes/cpp/build.sh"), str(a64_sysroot / "site"), str(out),
                           "aarch64-linux-gnu-g++"], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out / "qgnn_run"


def qemu(a64_sysroot: Path, *args: object) -> subprocess.CompletedProcess[str]:  # noqa: F811
    cmd = ["qemu-aarch64-static", "-L", str(a64_sysroot / "root"), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


@pytest.mark.arm64
def test_cpp_runner_bit_exact_under_qemu(runner: Path, a64_sysroot: Path, tmp_path: Path) -> None:  # noqa: F811
    art = build_artifact(tmp_path / "art", "arm64")
    proc = qemu(a64_sysroot, runner, art, "--threads", 2, "--warmup", 1, "--repeats", 3)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["reference_match"] is True and r["max_abs_diff"] == 0
    assert r["emulated"] is True and r["timing_label"] == EMULATED
    assert r["num_nodes"] == 60 and r["repeats"] == 3 and r["latency_ms"]["min"] > 0
    assert 0 < r["peak_rss_bytes"] < 300 << 20  # no Python, no TVM compiler library
    # A tampered library: one clear line, exit 2.
    with open(art / "model_arm64.so", "ab") as fh:
        fh.write(b"x")
    proc = qemu(a64_sysroot, runner, art)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == f"qgnn_run: error: {art}: checksum mismatch for model_arm64.so (file modified " \
                                  "after export)"


@pytest.mark.arm64
def test_cpp_runner_integer_input_artifact(runner: Path, a64_sysroot: Path, tmp_path: Path) -> None:  # noqa: F811
    """An --integer-input artifact (uint8 x_q first): node count and reference check still right."""
    art = build_artifact(tmp_path / "art", "arm64", integer_input=True)
    proc = qemu(a64_sysroot, runner, art, "--threads", 1, "--warmup", 0, "--repeats", 2)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["reference_match"] is True and r["num_nodes"] == 60
