"""runtimes/cpp/qgnn_run hardened: confined paths, overflow-checked .npy/.npz parsing, the shared input contract.

The runner is built natively for x86-64 with AddressSanitizer + UndefinedBehaviorSanitizer (g++), then fed
a corpus of crafted artifacts: every case must end in a clean exit (one ``qgnn_run: error:`` line for
bad ones) with no sanitizer report.  Building takes a minute or two on a loaded machine: ``slow``.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
from bench_artifacts import x86_zoo_artifact  # noqa: F401  (a session fixture)
from test_validation import _fix_in_degree, bad_inputs

from qgnn_deploy.artifact import write_manifest
from qgnn_deploy.validation import sha256_file

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
SAN_ENV = {
    "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0:exitcode=99",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1:exitcode=98",
}


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sanitizer build ($QGNN_ASAN_RUNNER: reuse one built by the same build.sh command)."""
    prebuilt = os.environ.get("QGNN_ASAN_RUNNER")
    if prebuilt:
        return Path(prebuilt)
    import tvm

    site = Path(tvm.__file__).resolve().parents[1]
    out = tmp_path_factory.mktemp("cpp_asan")
    env = {**os.environ, "EXTRA_CXXFLAGS": "-g -O1 -fsanitize=address,undefined -fno-sanitize-recover=undefined"}
    proc = subprocess.run(
        ["bash", str(REPO / "runtimes/cpp/build.sh"), str(site), str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    if proc.returncode != 0 and "fsanitize" in proc.stderr:
        pytest.skip(f"the compiler cannot build with sanitizers here: {proc.stderr[-500:]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out / "qgnn_run"


@pytest.fixture(scope="module")
def art(x86_zoo_artifact: Path) -> Path:  # noqa: F811
    return x86_zoo_artifact


def run_cpp(runner: Path, art: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **SAN_ENV, "TVM_NUM_THREADS": "1"}
    return subprocess.run(
        [str(runner), str(art), "--warmup", "0", "--repeats", "1"], capture_output=True, text=True, timeout=300, env=env
    )


def assert_clean(proc: subprocess.CompletedProcess[str], what: str) -> None:
    assert "AddressSanitizer" not in proc.stderr and "runtime error:" not in proc.stderr, (what, proc.stderr[-3000:])
    assert proc.returncode in (0, 1, 2), (what, proc.returncode, proc.stderr[-3000:])
    if proc.returncode == 2:
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("qgnn_run: error: "), (what, proc.stderr)


def _remanifest(art: Path) -> None:
    doc = json.loads((art / "manifest.json").read_text())
    roles = {k: v["role"] for k, v in doc["files"].items()}
    write_manifest(
        art, {k: v for k, v in doc.items() if k not in ("files", "format", "format_version", "toolkit_version")}, roles
    )


def test_valid_artifact_runs_clean_under_sanitizers(runner: Path, art: Path) -> None:
    proc = run_cpp(runner, art)
    assert_clean(proc, "valid")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["reference_match"] is True and r["num_nodes"] == 60


def test_same_answers_as_the_python_runners(runner: Path, art: Path, tmp_path: Path) -> None:
    for case, (feeds, message) in bad_inputs().items():
        bad = shutil.copytree(art, tmp_path / case)
        np.savez(bad / "sample_input.npz", **feeds)
        _remanifest(bad)
        proc = run_cpp(runner, bad)
        assert_clean(proc, case)
        assert proc.stderr == f"qgnn_run: error: sample_input.npz: {_fix_in_degree(feeds, message)}\n", case


def test_string_max_in_degree_is_refused(runner: Path, art: Path, tmp_path: Path) -> None:
    bad = shutil.copytree(art, tmp_path / "bad")
    doc = json.loads((bad / "manifest.json").read_text())
    roles = {k: v["role"] for k, v in doc["files"].items()}
    keep = {k: v for k, v in doc.items() if k not in ("files", "format", "format_version", "toolkit_version")}
    write_manifest(bad, {**keep, "max_in_degree": "7"}, roles)
    proc = run_cpp(runner, bad)
    assert (
        proc.stderr == "qgnn_run: error: the model records max_in_degree = '7', which is not a non-negative "
        "integer (corrupt manifest or graph metadata)\n"
    )


def test_path_outside_the_artifact_is_refused_even_with_matching_sha(runner: Path, art: Path, tmp_path: Path) -> None:
    """``../outside/evil.so`` with the right sha256 used to be dlopen()ed and run."""
    root = tmp_path / "case"
    bad = shutil.copytree(art, root / "art")
    (root / "outside").mkdir()
    lib = json.loads((bad / "manifest.json").read_text())["library"]
    shutil.copy(bad / lib, root / "outside" / "evil.so")
    doc = json.loads((bad / "manifest.json").read_text())
    entry = doc["files"].pop(lib)
    doc["files"]["../outside/evil.so"] = {**entry, "sha256": sha256_file(root / "outside" / "evil.so")}
    from qgnn_deploy.validation import manifest_checksum_line

    raw = json.dumps(doc).encode()
    (bad / "manifest.json").write_bytes(raw)
    (bad / "manifest.sha256").write_text(manifest_checksum_line(raw))
    proc = run_cpp(runner, bad)
    assert_clean(proc, "escape")
    assert proc.returncode == 2 and "'../outside/evil.so' escapes the artifact directory" in proc.stderr
    # the same through a symlink inside the directory
    doc["files"].pop("../outside/evil.so")
    (bad / "link.so").symlink_to(root / "outside" / "evil.so")
    doc["files"]["link.so"] = entry
    raw = json.dumps(doc).encode()
    (bad / "manifest.json").write_bytes(raw)
    (bad / "manifest.sha256").write_text(manifest_checksum_line(raw))
    proc = run_cpp(runner, bad)
    assert proc.returncode == 2 and "'link.so' escapes the artifact directory" in proc.stderr


def _npy(header: str, data: bytes, version: int = 1) -> bytes:
    h = header.encode("latin1")
    if version == 1:
        return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h + data
    return b"\x93NUMPY\x02\x00" + struct.pack("<I", len(h)) + h + data


def _npz(entries: dict[str, bytes], compress: bool = False) -> bytes:
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as z:
        for name, raw in entries.items():
            z.writestr(name + ".npy", raw)
    return buf.getvalue()


def corpus(sample: bytes, x: np.ndarray, ei: np.ndarray) -> dict[str, bytes]:
    """Crafted sample_input.npz files: header/shape/zip overflows and seeded byte flips of the real one."""
    ok_x = _npy("{'descr': '<f4', 'fortran_order': False, 'shape': (60, 12), }", x.tobytes())
    ok_e = _npy(f"{{'descr': '<i8', 'fortran_order': False, 'shape': (2, {ei.shape[1]}), }}", ei.tobytes())
    cases: dict[str, bytes] = {}
    for name, hdr in {
        "shape_overflow": "{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 4), }",
        "shape_wraps_to_small": "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 12), }",
        "shape_int64_max": "{'descr': '<f4', 'fortran_order': False, 'shape': (9223372036854775807, 12), }",
        "shape_negative": "{'descr': '<f4', 'fortran_order': False, 'shape': (-1, 12), }",
        "shape_garbage": "{'descr': '<f4', 'fortran_order': False, 'shape': (1e3, 12), }",
        "shape_unclosed": "{'descr': '<f4', 'fortran_order': False, 'shape': (60, 12, }",
        "descr_unquoted": "{'descr': <f4, 'fortran_order': False, 'shape': (60, 12), }",
        "no_descr": "{'fortran_order': False, 'shape': (60, 12), }",
        "dtype_object": "{'descr': '|O', 'fortran_order': False, 'shape': (60, 12), }",
        "many_dims": "{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1,60,12), }",
    }.items():
        cases[name] = _npz({"x": _npy(hdr, x.tobytes()), "edge_index": ok_e})
    big = _npy("{'descr': '<f4', 'fortran_order': False, 'shape': (60, 12), }", x.tobytes())
    cases["header_len_past_end_v1"] = _npz({"x": big[:8] + b"\xff\xff" + big[10:], "edge_index": ok_e})
    v2 = _npy("{'descr': '<f4', 'fortran_order': False, 'shape': (60, 12), }", x.tobytes(), version=2)
    cases["header_len_past_end_v2"] = _npz({"x": v2[:8] + b"\xff\xff\xff\xff" + v2[12:], "edge_index": ok_e})
    cases["truncated_data"] = _npz({"x": ok_x[:-7], "edge_index": ok_e})
    cases["not_npy"] = _npz({"x": b"hello", "edge_index": ok_e})
    cases["bad_version"] = _npz({"x": ok_x[:6] + b"\x09" + ok_x[7:], "edge_index": ok_e})
    good = _npz({"x": ok_x, "edge_index": ok_e})
    eocd = good.rfind(b"PK\x05\x06")
    cases["cd_offset_past_end"] = good[: eocd + 16] + struct.pack("<I", 0x7FFFFFF0) + good[eocd + 20 :]
    cases["entry_count_huge"] = good[: eocd + 10] + struct.pack("<H", 0xFFFE) + good[eocd + 12 :]
    cd = struct.unpack("<I", good[eocd + 16 : eocd + 20])[0]
    cases["local_offset_wraps"] = good[: cd + 42] + struct.pack("<I", 0xFFFFFFF0) + good[cd + 46 :]
    cases["name_len_past_end"] = good[: cd + 28] + struct.pack("<H", 0xFFFF) + good[cd + 30 :]
    comp = _npz({"x": ok_x, "edge_index": ok_e}, compress=True)
    ceocd = comp.rfind(b"PK\x05\x06")
    ccd = struct.unpack("<I", comp[ceocd + 16 : ceocd + 20])[0]
    cases["inflate_size_lie"] = comp[: ccd + 24] + struct.pack("<I", 0xFFFFFFF0) + comp[ccd + 28 :]
    cases["inflate_size_small"] = comp[: ccd + 24] + struct.pack("<I", 16) + comp[ccd + 28 :]
    cases["empty"] = b""
    cases["eocd_only"] = b"PK\x05\x06" + b"\x00" * 18
    rng = np.random.default_rng(0)
    for i in range(40):  # byte flips / truncations of the real file
        raw = bytearray(sample)
        for _ in range(int(rng.integers(1, 6))):
            raw[int(rng.integers(0, len(raw)))] = int(rng.integers(0, 256))
        if i % 5 == 4:
            raw = raw[: int(rng.integers(0, len(raw)))]
        cases[f"flip_{i}"] = bytes(raw)
    return cases


def test_crafted_npz_corpus_is_clean_under_asan_ubsan(runner: Path, art: Path, tmp_path: Path) -> None:
    with np.load(art / "sample_input.npz") as z:
        x, ei = z["x"], z["edge_index"]
    sample = (art / "sample_input.npz").read_bytes()
    outcomes: dict[str, int] = {}
    work = shutil.copytree(art, tmp_path / "work")
    for name, raw in corpus(sample, x, ei).items():
        (work / "sample_input.npz").write_bytes(raw)
        _remanifest(work)
        proc = run_cpp(runner, work)
        assert_clean(proc, name)
        outcomes[name] = proc.returncode
    crafted = [n for n in outcomes if not n.startswith("flip_")]
    assert all(outcomes[n] == 2 for n in crafted), {n: outcomes[n] for n in crafted}
