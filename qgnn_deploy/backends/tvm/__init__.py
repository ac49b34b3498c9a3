"""TVM backend: integer IR -> Relax -> shared library for x86-64 or aarch64.

Import cost matters (TVM takes seconds to import), so the heavy names are
loaded lazily; ``from qgnn_deploy.backends.tvm import compile_to_dir`` works.
"""

from __future__ import annotations

from typing import Any

from .targets import TARGETS, TargetPreset, resolve_target

__all__ = ["TARGETS", "TargetPreset", "compile_to_dir", "resolve_target", "run_library", "build_module"]


def __getattr__(name: str) -> Any:
    if name in ("compile_to_dir", "run_library"):
        from . import compile as _compile

        return getattr(_compile, name)
    if name == "build_module":
        from .relax_builder import build_module

        return build_module
    raise AttributeError(name)
