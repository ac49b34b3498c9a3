"""The Dockerfile stays a thin shell over export/setup.sh (which CI runs directly; no engine here)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_dockerfile_delegates_to_setup_script() -> None:
    text = (REPO / "Dockerfile").read_text()
    instructions = [ln for ln in text.splitlines() if ln and not ln.startswith("#") and not ln.startswith(" ")]
    assert instructions[0].startswith("FROM python:3.11-slim-bookworm")
    assert "bash export/setup.sh" in text
    assert (REPO / "export" / "setup.sh").is_file()
    assert "docker build -t qgnn-deploy ." in text and "qgnn-export /work/model.pt --target arm64" in text
    # No web hosts baked in: an extra index for the torch CPU wheel is an optional build argument.
    assert not re.search(r"https?://", text)
    assert "ARG TORCH_INDEX_URL\n" in text


def test_setup_script_builds_the_sysroot_with_the_project_script() -> None:
    setup = (REPO / "export" / "setup.sh").read_text()
    assert "make_a64_sysroot.sh" in setup
    script = REPO / "export" / "make_a64_sysroot.sh"
    assert script.stat().st_mode & 0o111, "make_a64_sysroot.sh must be executable (setup.sh checks -x)"
