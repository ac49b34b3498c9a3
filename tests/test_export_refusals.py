"""Export and train refuse what is wrong: poisoned checkpoints, fold-parity failures, unwritable --out, races.

Each bad case asserts exit status 2, one ``qgnn: error:`` line, no traceback and nothing left behind.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from qgnn_deploy import cli
from qgnn_deploy.artifact import load_manifest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (tiny) LoRAP + QAT checkpoint on the embedded synthetic graph."""
    path = tmp_path_factory.mktemp("ck") / "lorap.pt"
    assert (
        cli.main(
            [
                "train",
                "--dataset",
                "synthetic",
                "--lorap",
                "--hidden",
                "16",
                "--epochs",
                "2",
                "--no-progress",
                "--out",
                str(path),
            ]
        )
        == 0
    )
    return path


def _poison(src: Path, dst: Path, key: str, value: float | None = None, fill: float | None = None, at: int = 0) -> Path:
    payload = torch.load(src, weights_only=True)
    t = payload["state_dict"][key].clone()
    if fill is not None:
        t.fill_(fill)
    else:
        t.view(-1)[at] = value
    payload["state_dict"][key] = t
    torch.save(payload, dst)
    return dst


def _one_line_error(capsys: pytest.CaptureFixture, rc: int, *needles: str) -> str:
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.count("\n") == 1 and err.startswith("qgnn: error: ") and "Traceback" not in err, err
    for n in needles:
        assert n in err, err
    return err


def _nothing_left(parent: Path, name: str = "out") -> None:
    assert not (parent / name).exists()
    assert [p.name for p in parent.iterdir() if p.name.startswith(f".{name}.")] == []


POISON = {
    "nan_bias": ("layers.0.bias", float("nan"), None, "layers.0.bias holds nan"),
    "inf_weight": ("layers.0.lin.weight", float("inf"), None, "layers.0.lin.weight holds inf"),
    "huge_weight": ("layers.1.lin.weight", 1e30, None, "magnitude 1e+30"),
    "nan_range": ("q_output.hi", float("nan"), None, "q_output.hi holds nan"),
    "huge_range": ("q_inputs.0.hi", 1e38, None, "q_inputs.0.hi holds a value of magnitude 1e+38"),
    "bias_overflows_int32": ("layers.1.bias", None, 1.6e7, "does not fit the int32 accumulator"),
    "corrupt_exp_one": ("layers.0.prompt.mixer.exp_one", 100000, None, "output codes differ"),
}


@pytest.mark.parametrize("case", sorted(POISON))
def test_poisoned_checkpoint_export_refused(
    ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture, case: str
) -> None:
    key, value, fill, needle = POISON[case]
    bad = _poison(ckpt, tmp_path / "bad.pt", key, value, fill)
    _one_line_error(capsys, cli.main(["export", str(bad), "--out", str(tmp_path / "out")]), needle)
    _nothing_left(tmp_path)


def test_allow_mismatch_is_explicit_and_recorded(ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = _poison(ckpt, tmp_path / "bad.pt", "layers.0.prompt.mixer.exp_one", 100000)
    assert cli.main(["export", str(bad), "--out", str(tmp_path / "out"), "--allow-mismatch"]) == 0
    doc = load_manifest(tmp_path / "out")
    assert doc["allow_mismatch"] is True and doc["fold_parity"]["within_tolerance"] is False
    assert doc["fold_parity"]["mismatched_codes"] > 0
    assert "allow-mismatch" in capsys.readouterr().out
    # the untouched checkpoint exports without the flag, and says so
    assert cli.main(["export", str(ckpt), "--out", str(tmp_path / "good")]) == 0
    good = load_manifest(tmp_path / "good")
    assert "allow_mismatch" not in good and good["fold_parity"]["within_tolerance"] is True


@pytest.mark.parametrize("case", ["nan", "huge", "lorap_without_flag"])
def test_train_init_refuses(ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture, case: str) -> None:
    init = {
        "nan": lambda: _poison(ckpt, tmp_path / "i.pt", "layers.0.lin.weight", float("nan")),
        "huge": lambda: _poison(ckpt, tmp_path / "i.pt", "layers.0.lin.weight", 3e9),
        "lorap_without_flag": lambda: ckpt,
    }[case]()
    needle = {"nan": "holds nan", "huge": "magnitude 3e+09", "lorap_without_flag": "pass --lorap"}[case]
    rc = cli.main(
        [
            "train",
            "--dataset",
            "synthetic",
            "--hidden",
            "16",
            "--epochs",
            "1",
            "--no-progress",
            "--init",
            str(init),
            "--out",
            str(tmp_path / "t.pt"),
        ]
    )
    _one_line_error(capsys, rc, needle)
    assert not (tmp_path / "t.pt").exists()


# ------------------------------------------------------------------------------------------ the --out path
_EXPORT = """
import sys, time
from qgnn_deploy.errors import QgnnError
from qgnn_deploy.exporting import export_graph
from qgnn_deploy.ir.testing import awkward_graphs, op_zoo_graph
x, ei = awkward_graphs(12)["random"]
try:
    export_graph(op_zoo_graph(), "onnx", sys.argv[1], sample_feeds={"x": x, "edge_index": ei}, force=False)
except QgnnError as exc:
    print(f"qgnn: error: {exc}", file=sys.stderr)
    sys.exit(2)
"""


# The same export, stalled inside the staging directory (the report renderer never returns), so a test can kill
# it there deterministically: an ONNX-only export stages its files within milliseconds, too short to catch.
_EXPORT_STALLED = _EXPORT.replace(
    "from qgnn_deploy.exporting import export_graph",
    "from qgnn_deploy import exporting\nfrom qgnn_deploy.exporting import export_graph\n"
    "exporting.render_markdown = lambda *a, **k: time.sleep(600)",
)


def _spawn(out: Path, *prefix: str, script: str = _EXPORT) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*prefix, sys.executable, "-c", script, str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )


def test_concurrent_exports_one_wins(tmp_path: Path) -> None:
    """Two exports to one --out at once: exactly one succeeds, the other gets one line."""
    out = tmp_path / "out"
    procs = [_spawn(out), _spawn(out)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(rc for rc, _ in results)
    assert codes == [0, 2], results
    err = next(e for rc, e in results if rc == 2)
    assert err.count("\n") == 1 and ("being written by another export" in err or "already exists" in err), err
    load_manifest(out)
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no lock file, no partial directory


def test_lock_held_by_another_process(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from qgnn_deploy.errors import QgnnError
    from qgnn_deploy.exporting import export_graph
    from qgnn_deploy.ir.testing import awkward_graphs, op_zoo_graph

    out = tmp_path / "out"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; "
            "from qgnn_deploy.artifact import output_lock\n"
            "with output_lock(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(60)",
            str(out),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        x, ei = awkward_graphs(12)["random"]
        with pytest.raises(QgnnError, match="being written by another export right now"):
            export_graph(op_zoo_graph(), "onnx", out, sample_feeds={"x": x, "edge_index": ei})
    finally:
        holder.kill()  # like kill -9: its lock file stays behind ...
        holder.wait()
    assert [p.name for p in tmp_path.iterdir()] == [".out.lock"]
    export_graph(op_zoo_graph(), "onnx", out, sample_feeds={"x": x, "edge_index": ei})  # ... and is no obstacle
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_killed_export_leftovers_cleaned_by_next_export(tmp_path: Path) -> None:
    """kill -9 while the staging directory exists; the next export removes it (and the stale lock file)."""
    out = tmp_path / "out"
    proc = _spawn(out, script=_EXPORT_STALLED)
    deadline = time.time() + 120
    while time.time() < deadline and not any(".out.partial-" in p.name for p in tmp_path.iterdir()):
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    stale = [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")]
    assert any(".partial-" in n for n in stale), stale
    proc = _spawn(out)
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def _unshare_ok() -> bool:
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.parametrize("fs", ["full", "read-only"])
def test_full_or_read_only_out_parent(tmp_path: Path, fs: str) -> None:
    """ENOSPC on a 64 KiB tmpfs and EROFS on a read-only one: one line, exit 2, nothing left (private mounts)."""
    if sys.platform != "linux" or not _unshare_ok():
        pytest.skip("needs unshare -m (mount namespaces)")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    opts = "size=64k" if fs == "full" else "size=64k,ro"
    script = f'mount -t tmpfs -o {opts} tmpfs {mnt} && exec "$@"'
    proc = subprocess.run(
        [
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
            sys.executable,
            "-c",
            _EXPORT,
            str(mnt / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    want = "No space left on device" if fs == "full" else "Read-only file system"
    assert proc.stderr.startswith(f"qgnn: error: cannot write {mnt / 'out'}: ") and want in proc.stderr, proc.stderr
    assert list(mnt.iterdir()) == []  # the private mount is gone; nothing was written to the real directory


def test_file_size_limit_is_one_line(tmp_path: Path) -> None:
    """EFBIG (RLIMIT_FSIZE) while writing the artifact: the same one-line error."""
    code = "import resource; resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))\n" + _EXPORT
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "out")], capture_output=True, text=True, timeout=300, cwd=REPO
    )
    # whichever write hits the limit first (the artifact, or ORT's optimized-model dump): one line, exit 2
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("qgnn: error: ") and "Traceback" not in proc.stderr
    _nothing_left(tmp_path)


def test_sample_graph_poison_is_refused(tmp_path: Path) -> None:
    from qgnn_deploy.errors import QgnnError
    from qgnn_deploy.exporting import export_graph
    from qgnn_deploy.ir.testing import awkward_graphs, op_zoo_graph

    x, ei = awkward_graphs(12)["random"]
    x = x.copy()
    x[0, 0] = np.nan
    with pytest.raises(QgnnError, match="input x contains NaN"):
        export_graph(op_zoo_graph(), "onnx", tmp_path / "out", sample_feeds={"x": x, "edge_index": ei})
    _nothing_left(tmp_path)
