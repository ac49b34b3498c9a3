"""runtimes/qgnn_bench.py on real artifacts: x86-64 natively, aarch64 under qemu-user, and bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from bench_artifacts import a64_sysroot, build_artifact  # noqa: F401  (a64_sysroot is a fixture)

from qgnn_deploy import arm64
from qgnn_deploy.artifact import load_manifest, write_manifest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "runtimes" / "qgnn_bench.py"
EMULATED = "EMULATED (qemu-user) \u2014 not device timings"

# Runs the bench with torch and qgnn_deploy made unimportable, as on a board that has neither.
NO_TORCH = """
import runpy, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'qgnn_deploy'):
            raise ImportError('blocked on the device: ' + name)
sys.meta_path.insert(0, Block())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
"""


def bench(*args: object, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-c", NO_TORCH, str(BENCH), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)


@pytest.fixture(scope="module")
def x86_art(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_artifact(tmp_path_factory.mktemp("bench") / "art_x86", "x86_64")


@pytest.fixture(scope="module")
def arm_art(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_artifact(tmp_path_factory.mktemp("bench") / "art_arm64", "arm64")


def copy_art(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qgnn_bench: error: "), proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    assert proc.stdout == ""


@pytest.mark.parametrize("backend", ["tvm", "onnx"])
def test_bench_x86_reports_and_matches_reference(x86_art: Path, tmp_path: Path, backend: str) -> None:
    js, md = tmp_path / "out" / "r.json", tmp_path / "out" / "r.md"
    proc = bench(x86_art, "--backend", backend, "--threads", 2, "--warmup", 2, "--repeats", 15,
                 "--json", js, "--md", md)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(js.read_text())
    assert r["backend"] == backend and r["threads"] == 2 and r["repeats"] == 15
    assert r["emulated"] is False and r["timing_label"] == "device timings"
    assert r["reference"]["checked"] and r["reference"]["match"] is True
    assert r["reference"]["max_abs_diff"] == 0.0
    lat = r["latency_ms"]
    assert 0 < lat["min"] <= lat["median"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert r["memory"]["peak_rss_bytes"] > 1 << 20
    manifest = json.loads((x86_art / "manifest.json").read_text())
    key = f"{backend}_buffer_bytes" if manifest.get(f"{backend}_buffer_bytes") else "buffer_bytes"
    assert r["buffer_bytes_key"] == key and r["buffer_bytes"] == manifest[key] > 0
    assert r["model"]["model_bytes"] == manifest["model_bytes"]
    model_file = "model_x86_64.so" if backend == "tvm" else "model.onnx"
    assert r["model_file"] == model_file
    assert r["model"]["file_bytes"] == (x86_art / model_file).stat().st_size
    assert r["input"] == {"file": "sample_input.npz", "is_bundled_sample": True, "num_nodes": 60,
                          "num_edges": 300, "max_in_degree": r["input"]["max_in_degree"]}
    text = md.read_text()
    assert "bit-exact" in text and "latency median" in text and "EMULATED" not in text
    assert text == proc.stdout


def test_bench_auto_picks_host_library_or_onnx(x86_art: Path, arm_art: Path) -> None:
    r = bench(x86_art, "--warmup", 0, "--repeats", 2)
    assert r.returncode == 0 and "(tvm, x86_64)" in r.stdout, r.stderr
    r = bench(arm_art, "--warmup", 0, "--repeats", 2)  # aarch64 library cannot run here: ONNX Runtime
    assert r.returncode == 0 and "(onnx, arm64)" in r.stdout, r.stderr
    assert_one_line_error(bench(arm_art, "--backend", "tvm"), "built for another CPU", "aarch64")


def test_tampered_file_is_one_line_exit_2(x86_art: Path, tmp_path: Path) -> None:
    art = copy_art(x86_art, tmp_path / "art")
    with open(art / "model.onnx", "r+b") as fh:
        fh.seek(100)
        b = fh.read(1)
        fh.seek(100)
        fh.write(bytes([b[0] ^ 1]))
    js = tmp_path / "r.json"
    assert_one_line_error(bench(art, "--json", js), "checksum mismatch", "model.onnx")
    assert not js.exists()
    art2 = copy_art(x86_art, tmp_path / "art2")
    (art2 / "model_x86_64.so").unlink()
    assert_one_line_error(bench(art2), "model_x86_64.so", "missing")


def test_wrong_format_version_and_not_an_artifact(x86_art: Path, tmp_path: Path) -> None:
    art = copy_art(x86_art, tmp_path / "art")
    doc = json.loads((art / "manifest.json").read_text())
    doc["format_version"] = 99
    (art / "manifest.json").write_text(json.dumps(doc))
    assert_one_line_error(bench(art), "format version 99")
    assert_one_line_error(bench(tmp_path), "no manifest.json")


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def test_bad_inputs_are_clear_errors(x86_art: Path, tmp_path: Path) -> None:
    with np.load(x86_art / "sample_input.npz") as z:
        x, ei = z["x"], z["edge_index"]
    js, md = tmp_path / "r.json", tmp_path / "r.md"
    cases = {
        "dtype": (_npz(tmp_path / "a.npz", x=x.astype(np.float64), edge_index=ei), "dtype float64"),
        "rank": (_npz(tmp_path / "b.npz", x=x[None], edge_index=ei), "rank 3"),
        "fixed dim": (_npz(tmp_path / "c.npz", x=x[:, :5], edge_index=ei), "dimension 1"),
        "missing": (_npz(tmp_path / "d.npz", x=x), "missing input(s) edge_index"),
        "extra": (_npz(tmp_path / "e.npz", x=x, edge_index=ei, batch=np.zeros(60, np.int64)), "unexpected"),
        "range": (_npz(tmp_path / "f.npz", x=x, edge_index=np.concatenate([ei, [[0], [60]]], 1)),
                  "node id 60, outside [0, 60)"),
        "negative": (_npz(tmp_path / "g.npz", x=x, edge_index=np.concatenate([ei, [[-1], [0]]], 1)), "node id -1"),
        "index dtype": (_npz(tmp_path / "h.npz", x=x, edge_index=ei.astype(np.int32)), "dtype int32"),
    }
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file")
    cases["garbage"] = (garbage, "not a readable .npz")
    cases["absent"] = (tmp_path / "nope.npz", "not found")
    for what, (path, needle) in cases.items():
        proc = bench(x86_art, "--backend", "onnx", "--input", path, "--json", js, "--md", md)
        assert proc.returncode == 2, what
        assert_one_line_error(proc, needle)
        assert not js.exists() and not md.exists(), what


def test_in_degree_and_num_nodes_limits(x86_art: Path, tmp_path: Path) -> None:
    art = copy_art(x86_art, tmp_path / "art")
    doc = json.loads((art / "manifest.json").read_text())
    roles = {k: v["role"] for k, v in doc["files"].items()}
    keep = {k: v for k, v in doc.items() if k not in ("files", "format", "format_version", "toolkit_version")}
    write_manifest(art, {**keep, "max_in_degree": 3}, roles)
    assert_one_line_error(bench(art, "--backend", "onnx"), "in-degree", "max_in_degree 3")
    write_manifest(art, {**keep, "num_nodes": 61}, roles)
    assert_one_line_error(bench(art, "--backend", "onnx"), "60 nodes", "exactly 61")
    write_manifest(art, {**keep, "static_shapes": {"N": 60, "E": 301}}, roles)
    assert_one_line_error(bench(art, "--backend", "tvm"), "E = 300", "static shapes E = 301")


def test_other_inputs_run_without_reference_check(x86_art: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    path = _npz(tmp_path / "in.npz", x=rng.normal(size=(30, 12)).astype(np.float32),
                edge_index=rng.integers(0, 30, (2, 90)).astype(np.int64))
    js = tmp_path / "r.json"
    proc = bench(x86_art, "--input", path, "--repeats", 3, "--json", js)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(js.read_text())
    assert r["reference"]["checked"] is False and r["input"]["num_nodes"] == 30
    # The sample itself, passed explicitly from elsewhere, is still compared.
    same = shutil.copy(x86_art / "sample_input.npz", tmp_path / "same.npz")
    proc = bench(x86_art, "--input", same, "--repeats", 3, "--json", js)
    assert proc.returncode == 0 and json.loads(js.read_text())["reference"]["match"] is True


def test_integer_input_artifact_quantizes_float_features_once(tmp_path: Path) -> None:
    """--integer-input artifact: float x in the input file is quantized once, outside the timed loop."""
    art = build_artifact(tmp_path / "art", "x86_64", integer_input=True)
    with np.load(art / "sample_input.npz") as z:
        assert sorted(z.files) == ["edge_index", "x_q"]
    from bench_artifacts import FEATURES

    from qgnn_deploy.ir.testing import awkward_graphs

    x, ei = awkward_graphs(FEATURES)["random"]
    floats = _npz(tmp_path / "float.npz", x=x, edge_index=ei)
    for backend in ("tvm", "onnx"):
        js = tmp_path / f"{backend}.json"
        proc = bench(art, "--backend", backend, "--input", floats, "--repeats", 3, "--json", js)
        assert proc.returncode == 0, proc.stderr
        r = json.loads(js.read_text())
        assert r["input"]["quantized_once"]["to"] == "x_q" and r["input"]["num_nodes"] == 60
        assert r["reference"]["match"] is True  # quantized here == the bundled x_q, so the reference applies
        assert "quantized to x_q once" in proc.stdout
    ints = _npz(tmp_path / "ints.npz", x=np.zeros((60, FEATURES), np.int32), edge_index=ei)
    assert_one_line_error(bench(art, "--input", ints), "give float features or x_q")


@pytest.mark.parametrize("backend", ["tvm", "onnx"])
def test_sort_edges_keeps_outputs_bit_exact(x86_art: Path, tmp_path: Path, backend: str) -> None:
    """--sort-edges reorders edge_index once; every aggregation (sum, max, degree) gives the same bits."""
    js = tmp_path / "r.json"
    proc = bench(x86_art, "--backend", backend, "--sort-edges", "--repeats", 3, "--json", js)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(js.read_text())
    assert r["input"]["edges_sorted_once"]["by"] == "destination"
    assert r["reference"]["checked"] and r["reference"]["match"] is True
    assert "edges sorted by destination once" in proc.stdout


def test_reference_mismatch_exits_1_and_reports(x86_art: Path, tmp_path: Path) -> None:
    art = copy_art(x86_art, tmp_path / "art")
    with np.load(art / "reference_output.npz") as z:
        ref = {k: z[k].copy() for k in z.files}
    name = next(iter(ref))
    ref[name].flat[0] += 1
    np.savez(art / "reference_output.npz", **ref)
    doc = json.loads((art / "manifest.json").read_text())
    roles = {k: v["role"] for k, v in doc["files"].items()}
    write_manifest(art, {k: v for k, v in doc.items() if k not in ("files", "format", "format_version")}, roles)
    js = tmp_path / "r.json"
    proc = bench(art, "--backend", "onnx", "--repeats", 2, "--json", js)
    assert proc.returncode == 1
    r = json.loads(js.read_text())
    assert r["reference"]["match"] is False and r["reference"]["outputs"][name]["mismatched_elements"] == 1
    assert "MISMATCH" in proc.stdout


@pytest.mark.slow  # default-run budget (CI ~20 min on 2 cores): `bash export/run.sh test-all` runs it
def test_remote_rpc_on_localhost(x86_art: Path, tmp_path: Path) -> None:
    """--remote through a TVM RPC server on 127.0.0.1 (the same code path drives a board)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "rpc.log"
    with open(log, "w") as fh:
        server = subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_server", "--host", "127.0.0.1",
                                   "--port", str(port), "--port-end", str(port + 1)], stdout=fh, stderr=fh)
    try:
        deadline = time.time() + 60
        while "bind to" not in log.read_text() and time.time() < deadline and server.poll() is None:
            time.sleep(0.3)
        assert "bind to" in log.read_text(), log.read_text()
        js = tmp_path / "r.json"
        proc = bench(x86_art, "--remote", f"127.0.0.1:{port}", "--repeats", 5, "--json", js)
        assert proc.returncode == 0, proc.stderr
        r = json.loads(js.read_text())
        # /proc/cpuinfo has st_size 0 on a real kernel, which TVM's RPC file download cannot read: unknown.
        assert r["reference"]["match"] is True and r["emulated"] is None
        assert r["timing_method"].startswith("TVM time_evaluator")
        assert "TVM RPC server" in r["device"]["cpu"]
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert_one_line_error(bench(x86_art, "--remote", "nonsense"), "host:port")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # ~30-60 s: the aarch64 RPC server imports TVM under qemu before it binds
@pytest.mark.arm64
@pytest.mark.usefixtures("a64_sysroot")
def test_remote_rpc_to_emulated_aarch64_server(arm_art: Path, tmp_path: Path) -> None:
    """An aarch64 TVM RPC server under qemu (the notes' recipe): results are labelled EMULATED."""
    port = _free_port()
    launcher = str(arm64.require_a64_python())
    code = (f"import sys, runpy; sys.executable = {launcher!r}; sys.argv = ['rpc_server', '--host', '127.0.0.1', "
            f"'--port', '{port}', '--port-end', '{port + 1}']; runpy.run_module('tvm.exec.rpc_server', "
            "run_name='__main__')")
    log = tmp_path / "rpc.log"
    with open(log, "w") as fh:
        server = subprocess.Popen([launcher, "-c", code], stdout=fh, stderr=fh, start_new_session=True)
    try:
        deadline = time.time() + 120
        while "bind to" not in log.read_text() and time.time() < deadline and server.poll() is None:
            time.sleep(0.5)
        assert "bind to" in log.read_text(), log.read_text()
        js = tmp_path / "r.json"
        proc = bench(arm_art, "--remote", f"127.0.0.1:{port}", "--warmup", 1, "--repeats", 3, "--json", js,
                     timeout=300)
        assert proc.returncode == 0, proc.stderr
        r = json.loads(js.read_text())
        assert r["device"]["machine"] == "aarch64" and r["model_file"] == "model_arm64.so"
        assert r["reference"]["match"] is True
        assert r["emulated"] is True and r["timing_label"] == EMULATED
    finally:
        import os
        import signal

        os.killpg(server.pid, signal.SIGTERM)  # the server forks a worker per session
        server.wait(timeout=30)


@pytest.mark.arm64
@pytest.mark.usefixtures("a64_sysroot")
@pytest.mark.parametrize("backend", [pytest.param("tvm", marks=pytest.mark.slow), "onnx"])
def test_bench_under_qemu_is_labelled_emulated(arm_art: Path, tmp_path: Path, backend: str) -> None:
    js, md = tmp_path / "r.json", tmp_path / "r.md"
    proc = arm64.run_a64_python([BENCH, arm_art, "--backend", backend, "--threads", 2, "--warmup", 1,
                                 "--repeats", 3, "--json", js, "--md", md], timeout=300)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(js.read_text())
    assert r["device"]["machine"] == "aarch64"
    assert r["emulated"] is True and r["timing_label"] == EMULATED
    assert r["reference"]["match"] is True and r["reference"]["max_abs_diff"] == 0.0
    assert r["model_file"] == ("model_arm64.so" if backend == "tvm" else "model.onnx")
    assert EMULATED in md.read_text() and EMULATED in proc.stdout



def test_run_bench_helper(x86_art: Path, tmp_path: Path) -> None:
    """qgnn_deploy.arm64.run_bench: the same script in a subprocess, report back as a dict."""
    from qgnn_deploy.errors import QgnnError

    r = arm64.run_bench(x86_art, backend="onnx", threads=1, warmup=1, repeats=3)
    assert r["backend"] == "onnx" and r["threads"] == 1 and r["reference"]["match"] is True
    art = copy_art(x86_art, tmp_path / "art")
    (art / "sample_input.npz").write_bytes(b"tampered")
    with pytest.raises(QgnnError, match="benchmark: .*(size|checksum) mismatch for sample_input.npz"):
        arm64.run_bench(art)


def _bench_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("qgnn_bench", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_local_tvm_outputs_are_views_that_outlive_the_next_call() -> None:
    """The timed TVM calls hand back zero-copy views (no per-call output copy in the latency); each view keeps
    its tensor alive, so a later call cannot overwrite the output checked against the reference."""
    import tvm

    q = _bench_module()
    values = np.arange(12, dtype=np.float32).reshape(3, 4)
    t = tvm.runtime.tensor(values)
    (view,) = q._tvm_outputs(t)
    assert not view.flags["OWNDATA"] and np.array_equal(view, values)
    del t
    assert np.array_equal(view, values)
    (copy,) = q._tvm_outputs(tvm.runtime.tensor(values), local=False)  # a remote tensor is copied
    assert copy.flags["OWNDATA"] and np.array_equal(copy, values)


def test_cpu_and_emulation_parsing() -> None:
    q = _bench_module()
    pi = "processor\t: 0\nCPU part\t: 0xd08\n\nprocessor\t: 1\nCPU part\t: 0xd03\nHardware\t: BCM2835\n" \
         "Model\t: Raspberry Pi 4 Model B Rev 1.4\n"
    assert q.cpu_description(pi) == "Raspberry Pi 4 Model B Rev 1.4 (Cortex-A72 + Cortex-A53)"
    assert q.cpu_description("model name\t: Intel(R) Xeon(R)\n") == "Intel(R) Xeon(R)"
    assert q.cpuinfo_emulation(pi, "aarch64") == []
    assert q.cpuinfo_emulation("vendor_id\t: GenuineIntel\n", "aarch64")
    assert q.cpuinfo_emulation("vendor_id\t: GenuineIntel\n", "x86_64") == []
    emulated, evidence = q.detect_emulation()  # this x86-64 test process runs natively
    assert emulated is False and evidence == []


def test_usage_errors_are_one_line() -> None:
    for args in ((), ("x", "--threads", "0"), ("x", "--backend", "gpu")):
        proc = bench(*args)
        assert proc.returncode == 2
        assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("qgnn_bench: error: ")


def test_device_copies_agree_with_the_package() -> None:
    """The device script re-implements (it imports nothing of qgnn_deploy) latency stats and the input quantize:
    both must give the package's numbers, the quantize bit for bit on ties, huge values and chunk boundaries."""
    from qgnn_deploy.ir.passes import prequantized_copy, quantize_input_feeds
    from qgnn_deploy.ir.testing import op_zoo_graph
    from qgnn_deploy.perf.measure import latency_stats

    q = _bench_module()
    seconds = list(np.random.default_rng(0).uniform(1e-4, 1e-2, 37))
    ours = latency_stats(seconds)
    assert {k: ours[k] for k in q.latency_stats(seconds)} == q.latency_stats(seconds)
    graph = prequantized_copy(op_zoo_graph(features=12))
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(400_000, 12)) * 8).astype(np.float32)  # > one 4M-element chunk of the device script
    x[:50] = np.float32(0.025) * np.arange(-25, 25, dtype=np.float32)[:, None]  # exact .5 ties at scale 0.05
    x[50:54] = [[1e30], [-1e30], [np.float32(6.375)], [-0.0]]
    ei = np.zeros((2, 0), np.int64)
    want = quantize_input_feeds(graph, {"x": x, "edge_index": ei})["x_q"]
    arrays = {"x": x.copy(), "edge_index": ei}
    info = q.prequantize_features(arrays, {"input_quant": graph.meta["input_quant"]})
    assert info["to"] == "x_q" and "x" not in arrays
    assert arrays["x_q"].dtype == want.dtype and np.array_equal(arrays["x_q"], want)


@pytest.mark.arm64
def test_export_checks_the_aarch64_library_under_qemu(a64_sysroot: Path, tmp_path: Path) -> None:  # noqa: F811
    """``export_graph(check_emulated=True)`` (``qgnn-export --check-emulated``) runs the staged artifact's aarch64
    library under qemu-user through the benchmark script and records the check in the (still verifying) report."""
    art = build_artifact(tmp_path / "art", "arm64", check_emulated=True)
    manifest = load_manifest(art)  # the report was rewritten after the check: checksums still hold
    compiled = json.loads((art / "report.json").read_text())["compiled"]
    assert compiled["tvm_bit_exact_on_sample"] is True and "qemu-user" in compiled["bit_exact_checked_on"]
    assert "**True** (run under qemu-user" in (art / "report.md").read_text()
    assert manifest["target"]["name"] == "arm64" and manifest["target"]["cross_compiled"] is True
