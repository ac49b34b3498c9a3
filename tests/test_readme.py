"""The README's Python API example runs as written, and the README stays a README (size, links)."""

from __future__ import annotations

import re
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_python_example_runs() -> None:
    """Executes every ```python block of README.md (the bit-exact assert is part of the example)."""
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert blocks, "README.md has no python example"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for code in blocks:
            namespace: dict = {}
            exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - our own README
            assert (namespace["ort"] == namespace["reference"]).all()
    finally:
        torch.set_num_threads(before)


def test_readme_is_short_and_its_relative_links_exist() -> None:
    assert len(README.encode()) < 12_288, "README.md grew past 12 KiB: move details to docs/"
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for doc in docs:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
            if "://" in target or target == "docs/python-api.md" or target == "python-api.md":
                continue  # external, or written by the Python API docs (docs/python-api.md)
            assert (doc.parent / target).exists(), f"{doc.name}: broken link {target}"
