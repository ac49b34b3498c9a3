"""Nothing wrong gets through: one input contract for every runner, bad-input corpus, parity fuzz.

Every entry point that runs a model (IR interpreter, ONNX Runtime runner, ``run_library``,
``runtimes/qgnn_bench.py``; the C++ runner in ``test_cpp_hardening.py``) applies
``qgnn_deploy/validation.py`` and must give the same answer for the same bad input.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from bench_artifacts import x86_zoo_artifact  # noqa: F401  (a session fixture)

from qgnn_deploy.artifact import load_manifest, write_manifest
from qgnn_deploy.errors import QgnnError
from qgnn_deploy.ir import run
from qgnn_deploy.ir.testing import op_zoo_graph
from qgnn_deploy.validation import ValidationError, validate_feeds, vendored_block

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "runtimes" / "qgnn_bench.py"
N, F, LIMIT = 60, 12, 1023


def _x(n: int = N, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, F)).astype(np.float32)


def _edges(n: int = N, e: int = 200, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, (2, e)).astype(np.int64)


def bad_inputs() -> dict[str, tuple[dict[str, np.ndarray], str]]:
    """name -> (feeds, the one message every runner must give)."""
    x, ei = _x(), _edges()
    nan_x, inf_x = x.copy(), x.copy()
    nan_x[3, 4], inf_x[0, 0] = np.nan, -np.inf
    hub = np.concatenate([ei, np.stack([np.arange(LIMIT + 1) % N, np.zeros(LIMIT + 1, np.int64)])], axis=1)

    def with_id(v: int) -> np.ndarray:
        out = ei.copy()
        out[1, 7] = v
        return out

    return {
        "id_2^62": (
            {"x": x, "edge_index": with_id(2**62)},
            f"edge_index holds node id {2**62}, outside [0, {N}) for a graph of {N} nodes",
        ),
        "id_-1": (
            {"x": x, "edge_index": with_id(-1)},
            f"edge_index holds node id -1, outside [0, {N}) for a graph of {N} nodes",
        ),
        "id_N": (
            {"x": x, "edge_index": with_id(N)},
            f"edge_index holds node id {N}, outside [0, {N}) for a graph of {N} nodes",
        ),
        "nan_x": ({"x": nan_x, "edge_index": ei}, "input x contains NaN or infinite values"),
        "inf_x": ({"x": inf_x, "edge_index": ei}, "input x contains NaN or infinite values"),
        "int32_edges": (
            {"x": x, "edge_index": ei.astype(np.int32)},
            "input edge_index has dtype int32, the model expects int64",
        ),
        "float64_x": (
            {"x": x.astype(np.float64), "edge_index": ei},
            "input x has dtype float64, the model expects float32",
        ),
        "in_degree": (
            {"x": x, "edge_index": hub},
            f"a node has in-degree {LIMIT + 5}, above the model's max_in_degree "
            f"{LIMIT} (its int32 accumulators are only proven safe up to that)",
        ),
        "rank": (
            {"x": x[None], "edge_index": ei},
            f"input x has rank 3 (shape [1, {N}, {F}]), the model expects rank 2 ['N', {F}]",
        ),
        "features": ({"x": x[:, :5], "edge_index": ei}, f"input x has 5 in dimension 1, the model expects {F}"),
        "missing": ({"x": x}, "missing input(s) edge_index (the model takes x, edge_index)"),
        "extra": (
            {"x": x, "edge_index": ei, "batch": np.zeros(N, np.int64)},
            "unexpected input(s) batch (the model takes x, edge_index)",
        ),
    }


@pytest.fixture(scope="module")
def art(x86_zoo_artifact: Path) -> Path:  # noqa: F811
    return x86_zoo_artifact


def _fix_in_degree(feeds: dict[str, np.ndarray], message: str) -> str:
    """The hub case's exact in-degree depends on the random part: compute it."""
    if "in-degree" in message:
        deg = int(np.bincount(feeds["edge_index"][1], minlength=N).max())
        return message.replace(f"in-degree {LIMIT + 5}", f"in-degree {deg}")
    return message


def test_vendored_copy_in_bench_cannot_drift() -> None:
    """runtimes/qgnn_bench.py carries qgnn_deploy/validation.py verbatim (``--vendor`` writes it)."""
    assert vendored_block() in BENCH.read_text(), (
        "re-run: python3 -m qgnn_deploy.validation --vendor runtimes/qgnn_bench.py"
    )
    for dup in ("def percentile(", "def sha256_file(", "def fmt_bytes(", "def latency_stats("):
        assert BENCH.read_text().count(dup) == 1, dup  # only the vendored one
        for path in (
            "qgnn_deploy/perf/measure.py",
            "qgnn_deploy/backends/onnx/runner.py",
            "qgnn_deploy/artifact.py",
            "qgnn_deploy/exporting.py",
        ):
            assert dup not in (REPO / path).read_text(), (path, dup)


def test_same_answer_from_every_python_runner(art: Path, tmp_path: Path) -> None:
    """Interpreter, ORT runner, run_library and the device script: one message per bad input, no crash."""
    from qgnn_deploy.backends.onnx import OnnxRunner
    from qgnn_deploy.backends.tvm import run_library

    graph = op_zoo_graph()
    ort = OnnxRunner(art / "model.onnx", graph)
    ort_meta_only = OnnxRunner(art / "model.onnx")  # limits from the ONNX metadata, as a user would open it
    lib = art / load_manifest(art)["library"]
    for case, (feeds, message) in bad_inputs().items():
        message = _fix_in_degree(feeds, message)
        with pytest.raises(ValidationError) as e:
            run(graph, feeds)
        assert str(e.value) == message, case
        for runner in (ort, ort_meta_only):
            with pytest.raises(QgnnError) as e:
                runner.run(feeds)
            assert str(e.value) == message, case
        with pytest.raises(QgnnError) as e:  # edge id 2^62 segfaulted here before the shared checks
            run_library(lib, feeds)
        assert str(e.value) == message, case
        np.savez(tmp_path / f"{case}.npz", **feeds)
        for backend in ("onnx", "tvm"):
            proc = _bench(art, "--backend", backend, "--input", tmp_path / f"{case}.npz")
            assert proc.returncode == 2 and proc.stdout == "", (case, proc.stderr)
            assert proc.stderr == f"qgnn_bench: error: {case}.npz: {message}\n", case


def test_raw_session_is_the_only_way_around_the_in_degree_limit(art: Path) -> None:
    """Standard ONNX ops cannot raise, so the limit is the runners' job: a raw ORT session runs the graph."""
    import onnxruntime as ort

    from qgnn_deploy.backends.onnx import OnnxRunner

    feeds, _ = bad_inputs()["in_degree"]
    raw = ort.InferenceSession(str(art / "model.onnx"), providers=["CPUExecutionProvider"])
    assert raw.run(None, feeds)[0].shape == (N, 16)  # no error: nothing in the graph checks the limit
    with pytest.raises(QgnnError, match="above the model's max_in_degree 1023"):
        OnnxRunner(art / "model.onnx").run(feeds)


def _bench(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(BENCH), *map(str, args)], capture_output=True, text=True, timeout=120)


def _rewrite_manifest(art: Path, **changes: object) -> None:
    doc = json.loads((art / "manifest.json").read_text())
    roles = {k: v["role"] for k, v in doc["files"].items()}
    keep = {k: v for k, v in doc.items() if k not in ("files", "format", "format_version", "toolkit_version")}
    write_manifest(art, {**keep, **changes}, roles)


def test_recorded_limits_must_be_integers(art: Path, tmp_path: Path) -> None:
    """A string max_in_degree used to switch the in-degree check off in the bench script."""
    from qgnn_deploy.backends.tvm import run_library

    bad = shutil.copytree(art, tmp_path / "art")
    _rewrite_manifest(bad, max_in_degree="7")
    message = (
        "the model records max_in_degree = '7', which is not a non-negative integer (corrupt manifest or "
        "graph metadata)"
    )
    proc = _bench(bad)
    assert proc.returncode == 2 and proc.stderr == f"qgnn_bench: error: sample_input.npz: {message}\n"
    with np.load(bad / "sample_input.npz") as z:
        feeds = {k: z[k] for k in z.files}
    with pytest.raises(QgnnError, match="max_in_degree = '7'"):
        run_library(bad / load_manifest(bad)["library"], feeds)
    with pytest.raises(ValidationError, match="max_in_degree = 1.5"):
        validate_feeds([{"name": "x", "dtype": "float32", "shape": ["N", F]}], {"max_in_degree": 1.5}, {"x": _x()})


def test_manifest_itself_is_checksummed(art: Path, tmp_path: Path) -> None:
    bad = shutil.copytree(art, tmp_path / "art")
    text = (bad / "manifest.json").read_text()
    (bad / "manifest.json").write_text(text.replace('"max_in_degree": 1023', '"max_in_degree": 999999'))
    proc = _bench(bad)
    assert proc.returncode == 2 and proc.stderr.strip().endswith(
        "checksum mismatch for manifest.json (file modified after export)"
    )
    with pytest.raises(QgnnError, match="checksum mismatch for manifest.json"):
        load_manifest(bad)
    (bad / "manifest.sha256").unlink()
    assert "no manifest.sha256" in _bench(bad).stderr
    ok = subprocess.run(["sha256sum", "-c", "manifest.sha256"], cwd=art, capture_output=True, text=True)
    assert ok.returncode == 0 and "manifest.json: OK" in ok.stdout  # the standard tool verifies it too


@pytest.mark.parametrize("entry", [None, "x", {"role": "onnx"}, {"sha256": 5, "role": "onnx"}])
def test_malformed_files_entry_is_one_line(art: Path, tmp_path: Path, entry: object) -> None:
    bad = shutil.copytree(art, tmp_path / "art")
    doc = json.loads((bad / "manifest.json").read_text())
    doc["files"]["model.onnx"] = entry
    raw = json.dumps(doc).encode()
    (bad / "manifest.json").write_bytes(raw)
    from qgnn_deploy.validation import manifest_checksum_line

    (bad / "manifest.sha256").write_text(manifest_checksum_line(raw))
    proc = _bench(bad)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "malformed entry for 'model.onnx'" in proc.stderr
    with pytest.raises(QgnnError, match="malformed entry"):
        load_manifest(bad)


def test_symlink_escape_is_refused(art: Path, tmp_path: Path) -> None:
    """A manifest entry that resolves outside the artifact (a symlink), even with a matching sha256."""
    bad = shutil.copytree(art, tmp_path / "art")
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(bad / "model.onnx", outside / "evil.onnx")
    (bad / "model.onnx").unlink()
    (bad / "model.onnx").symlink_to(outside / "evil.onnx")
    proc = _bench(bad, "--backend", "onnx")
    assert proc.returncode == 2 and "'model.onnx' escapes the artifact directory" in proc.stderr
    with pytest.raises(QgnnError, match="escapes the artifact directory"):
        load_manifest(bad)


# --------------------------------------------------------------------------------------------- parity fuzz
def fuzz_graphs(count: int, seed: int = 0) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Random graphs: hubs at the in-degree limit, isolated nodes, self-loops, duplicates, (un)sorted, N 1..5000."""
    rng = np.random.default_rng(seed)
    sizes = [1, 2, 3, 17, 5000] + [int(v) for v in rng.integers(1, 5001, count)]
    out = []
    for i, n in enumerate(sizes[:count]):
        x = rng.normal(0, 2, (n, F)).astype(np.float32)
        e = int(rng.integers(0, 4 * n + 2))
        parts = [rng.integers(0, n, (2, e))]
        if i % 3 == 0 and n > 1:  # a hub at exactly the limit (with its other edges below it)
            hub = int(rng.integers(0, n))
            parts = [parts[0][:, parts[0][1] != hub], np.stack([rng.integers(0, n, LIMIT), np.full(LIMIT, hub)])]
        if i % 4 == 1:
            loops = rng.integers(0, n, max(1, n // 5))
            parts.append(np.stack([loops, loops]))
        if i % 4 == 2 and e:
            parts.append(parts[0][:, : max(1, e // 3)])  # duplicates
        if i % 5 == 3 and n > 4:  # isolated: the upper half of the nodes gets no edge at all
            parts = [p[:, (p[0] < n // 2) & (p[1] < n // 2)] for p in parts]
        ei = np.concatenate(parts, axis=1).astype(np.int64)
        if i % 2:
            ei = ei[:, np.argsort(ei[1], kind="stable")]  # sorted by destination (CSR fast path)
        deg = np.bincount(ei[1], minlength=n).max(initial=0)
        assert deg <= LIMIT
        out.append((f"g{i}_n{n}_e{ei.shape[1]}_d{deg}", x, ei))
    return out


def test_parity_fuzz_interpreter_ort_tvm(art: Path) -> None:
    """40 random graphs through one ORT session and one TVM library (symbolic N/E): zero mismatches."""
    from qgnn_deploy.backends.onnx import OnnxRunner
    from qgnn_deploy.backends.tvm import run_library

    graph = op_zoo_graph()
    ort = OnnxRunner(art / "model.onnx", graph, threads=2)
    lib = art / load_manifest(art)["library"]
    mismatches = []
    for name, x, ei in fuzz_graphs(40):
        feeds = {"x": x, "edge_index": ei}
        ref = run(graph, feeds)["y"]
        if not np.array_equal(ort.run(feeds)["y"], ref):
            mismatches.append(("ort", name))
        if not np.array_equal(run_library(lib, feeds, spec=graph), ref):
            mismatches.append(("tvm", name))
    assert mismatches == []


@pytest.mark.slow  # default-run budget (CI ~20 min on 2 cores): `bash export/run.sh test-all` runs it
@pytest.mark.arm64
def test_parity_fuzz_arm64_under_qemu(tmp_path: Path) -> None:
    """A few fuzz graphs through the aarch64 library under qemu-user, via the device script (reference compared)."""
    from qgnn_deploy import arm64

    if shutil.which("aarch64-linux-gnu-g++") is None or not arm64.a64_python_available():
        pytest.skip("aarch64 toolchain / sysroot not available")
    from qgnn_deploy.exporting import export_graph

    graph = op_zoo_graph()
    picks = fuzz_graphs(8, seed=1)[:4]
    _, x0, e0 = picks[0]
    out = tmp_path / "a64"
    export_graph(graph, "arm64", out, sample_feeds={"x": x0, "edge_index": e0})
    np.savez(
        tmp_path / "feeds.npz",
        **{f"{i}__{k}": v for i, (_, x, ei) in enumerate(picks) for k, v in (("x", x), ("edge_index", ei))},
    )
    script = tmp_path / "run.py"
    script.write_text(_A64_FUZZ)
    lib = out / load_manifest(out)["library"]
    arm64.run_a64_python([str(script), str(lib), str(tmp_path / "feeds.npz"), str(tmp_path / "out.npz")], check=True)
    with np.load(tmp_path / "out.npz") as got:
        for i, (name, x, ei) in enumerate(picks):
            np.testing.assert_array_equal(got[str(i)], run(graph, {"x": x, "edge_index": ei})["y"], err_msg=name)


_A64_FUZZ = """
import sys
import numpy as np
import tvm
from tvm import relax
lib, feeds_path, out_path = sys.argv[1:]
feeds = np.load(feeds_path)
vm = relax.VirtualMachine(tvm.runtime.load_module(lib), tvm.cpu())
outs = {}
for i in sorted({k.split("__")[0] for k in feeds.files}):
    outs[i] = vm["main"](tvm.runtime.tensor(feeds[i + "__x"]), tvm.runtime.tensor(feeds[i + "__edge_index"])).numpy()
np.savez(out_path, **outs)
"""


def test_fuzz_covers_the_promised_shapes() -> None:
    names = [n for n, _, _ in fuzz_graphs(40)]
    ns = [int(n.split("_n")[1].split("_")[0]) for n in names]
    degs = [int(n.split("_d")[1]) for n in names]
    assert min(ns) == 1 and max(ns) == 5000 and LIMIT in degs


@pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")  # check=False on NaN
def test_interpreter_check_flag() -> None:
    """On by default at the public entry; off only when the caller validated already."""
    graph = op_zoo_graph()
    feeds, _ = bad_inputs()["nan_x"]
    with pytest.raises(ValidationError):
        run(graph, feeds)
    assert run(graph, feeds, check=False)["y"].shape == (N, 16)
