"""CLI conventions: lazy imports, help on every flag, --version, one list style, one-line errors, quiet pipes."""

from __future__ import annotations

import argparse
import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from qgnn_deploy import __version__, cli
from qgnn_deploy.commands import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "QGNN_DEBUG": ""}


def _console_scripts() -> dict[str, str]:
    """``[project.scripts]`` of pyproject.toml (``name = "module:function"`` lines; no tomllib on 3.10)."""
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    return dict(re.findall(r'^([\w-]+)\s*=\s*"([\w.]+:\w+)"', section, re.M))


def _exit_code(fn, *args) -> int:
    try:
        return int(fn(*args) or 0)
    except SystemExit as exc:
        return int(exc.code or 0)


def test_top_level_help_imports_no_command_module() -> None:
    """`qgnn --help` and `qgnn --version` import neither torch, TVM nor any command module (< 1 s)."""
    code = ("import sys\nfrom qgnn_deploy.cli import main\n"
            "for argv in (['--help'], ['--version']):\n"
            "    try:\n        main(argv)\n    except SystemExit as e:\n        assert e.code == 0, e.code\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'tvm', 'onnxruntime', 'onnx') "
            "or m.startswith('qgnn_deploy.commands.'))\n"
            "print('HEAVY', heavy)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout, proc.stdout
    assert f"qgnn {__version__}" in proc.stdout
    for name in COMMANDS:
        assert name in proc.stdout  # every command listed with its summary


@pytest.mark.parametrize("script", sorted(_console_scripts()))
def test_every_console_script_help_exits_0(script: str, monkeypatch, capsys) -> None:
    """Each [project.scripts] entry resolves to a function whose --help exits 0 (qgnn-bench used not to)."""
    module, func = _console_scripts()[script].split(":")
    entry = getattr(importlib.import_module(module), func)
    monkeypatch.setattr(sys, "argv", [script, "--help"])
    assert _exit_code(entry) == 0
    assert "usage:" in capsys.readouterr().out


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_help_exits_0_and_every_flag_is_documented(command: str, capsys) -> None:
    assert _exit_code(cli.main, [command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: qgnn {command}")
    parser = cli.build_parser(command)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    undocumented = [a.option_strings or a.dest for a in sub._actions if not a.help]
    assert undocumented == [], f"qgnn {command}: flags without help: {undocumented}"
    assert sub.description, f"qgnn {command} has no description"


def test_defaults_are_shown_and_version_after_the_command(capsys) -> None:
    assert _exit_code(cli.main, ["train", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: 200)" in out and "(default: model.pt)" in out
    assert _exit_code(cli.main, ["export", "--version"]) == 0
    assert capsys.readouterr().out.strip() == f"qgnn {__version__}"


def test_one_list_style_comma_or_space() -> None:
    """`--bits 8,4 2` == `--bits 8 4 2`; a bad item is an argparse error (exit 2), not a traceback."""
    p = cli.build_parser("evaluate")
    a = p.parse_args(["evaluate", "--bits", "8,4", "2", "--frameworks", "qat,dq", "--seeds", "0"])
    assert (a.bits, a.frameworks, a.seeds) == ([8, 4, 2], ["qat", "dq"], [0])
    b = p.parse_args(["evaluate"])
    assert (b.bits, b.prompts) == ([8, 4], ["none", "lorap"])
    with pytest.raises(SystemExit) as exc:
        p.parse_args(["evaluate", "--frameworks", "qat,nope"])
    assert exc.value.code == 2
    s = cli.build_parser("search").parse_args(["search", "--tau", "1.0,0.3", "--penalty", "0", "2"])
    assert (s.tau, s.penalty) == ([1.0, 0.3], [0.0, 2.0])
    bs = cli.build_parser("bench-suite").parse_args(["bench-suite", "--sizes", ""])
    assert bs.sizes == []


def test_os_errors_are_one_line_exit_2(tmp_path: Path, capsys) -> None:
    """A non-QgnnError user error (here NotADirectoryError) prints one line, exit 2, no traceback."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert cli.main(["evaluate", "--dataset", "synthetic", "--out-dir", str(blocker / "sub")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("qgnn: error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_check_emulated_refuses_an_x86_target_before_any_work(tmp_path: Path, capsys) -> None:
    """``--check-emulated`` is for aarch64 libraries: one line, exit 2, nothing written, before the fold."""
    model = tmp_path / "model.pt"
    model.write_bytes(b"not read: the target is refused first")
    code = cli.main(["export", str(model), "--target", "x86_64", "--check-emulated", "--out", str(tmp_path / "art")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "aarch64 targets only" in err and not (tmp_path / "art").exists()


def test_verbose_shows_the_traceback_and_bugs_keep_theirs(tmp_path: Path, monkeypatch) -> None:
    from qgnn_deploy.errors import QgnnError

    missing = str(tmp_path / "missing.pt")
    with pytest.raises(QgnnError, match="not found"):
        cli.main(["-v", "export", missing, "--out", str(tmp_path / "o")])
    with pytest.raises(QgnnError, match="not found"):
        cli.main(["export", missing, "--out", str(tmp_path / "o"), "-v"])

    import qgnn_deploy.commands.export as export_command

    def bug(args: argparse.Namespace) -> int:
        raise KeyError("a bug, not a user error")

    monkeypatch.setattr(export_command, "run", bug)
    with pytest.raises(KeyError):
        cli.main(["export", missing, "--out", str(tmp_path / "o")])


def test_training_log_has_no_carriage_returns_unless_stderr_is_a_terminal(tmp_path: Path, capsys,
                                                                          monkeypatch) -> None:
    """stderr is not a terminal under capsys, so tqdm stays off without --no-progress; forcing the bars on
    (QGNN_PROGRESS=1, what a terminal gets) shows the carriage returns this avoids."""
    argv = ["train", "--dataset", "synthetic", "--epochs", "3", "--hidden", "8", "--threads", "1"]
    assert cli.main([*argv, "--out", str(tmp_path / "a.pt")]) == 0
    captured = capsys.readouterr()
    assert "\r" not in captured.out + captured.err and "-> " in captured.out
    monkeypatch.setenv("QGNN_PROGRESS", "1")
    assert cli.main([*argv, "--out", str(tmp_path / "b.pt")]) == 0
    assert "\r" in capsys.readouterr().err


@pytest.mark.slow
def test_piped_training_output_has_no_carriage_returns(tmp_path: Path) -> None:
    """The same through a real pipe, in a fresh process (slow: imports torch)."""
    out = tmp_path / "m.pt"
    proc = subprocess.run([sys.executable, "-m", "qgnn_deploy.cli", "train", "--dataset", "synthetic",
                           "--epochs", "3", "--hidden", "8", "--threads", "1", "--out", str(out)],
                          capture_output=True, env=ENV, timeout=600)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert b"\r" not in proc.stdout + proc.stderr
    assert out.is_file() and b"-> " + str(out).encode() in proc.stdout


def test_quiet_turns_progress_bars_off(monkeypatch) -> None:
    from qgnn_deploy import progress

    monkeypatch.setenv("QGNN_PROGRESS", "1")
    try:
        cli.configure_logging(verbose=0, quiet=False)
        assert progress.disabled(True) is False and progress.disabled(False) is True
        cli.configure_logging(verbose=0, quiet=True)
        assert progress.disabled(True) is True
    finally:
        cli.configure_logging(verbose=0, quiet=False)
