"""The Relax helpers every TVM handler and kernel emitter shares: typed emission into the active block builder
(``op.add(...)``), dtype / shape of an expression, scalar constants.

The bottom of the TVM backend's builder layer: ``relax_builder`` and the GEMM emitters (``gemm.py``) both
import it, and it imports neither (tests/test_ops_registry.py checks there is no import cycle).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from tvm import relax

from qgnn_deploy.errors import QgnnError


class _EmittingOps:
    """``op.add(...)`` etc. bound immediately in the active BlockBuilder, so every operand is typed."""

    bb: relax.BlockBuilder | None = None

    def __getattr__(self, name: str) -> Callable[..., relax.Expr]:
        fn = getattr(relax.op, name)

        def call(*args: Any, **kwargs: Any) -> relax.Expr:
            assert self.bb is not None
            return self.bb.emit(fn(*args, **kwargs))

        return call


op = _EmittingOps()


def dtype_of(e: relax.Expr) -> str:
    """The element type of a typed Relax expression (``"int8"``, ...)."""
    return str(e.ty.dtype)


def shape_of(e: relax.Expr) -> list[Any]:
    """The (possibly symbolic) dims of a typed Relax tensor expression."""
    sinfo = e.ty
    if sinfo.shape is None:
        raise QgnnError("internal: a tensor of unknown shape reached the TVM builder")
    return list(sinfo.shape.values)


def scalar(value: Any, dtype: str) -> relax.Expr:
    """A rank-0 constant of ``dtype``."""
    return relax.const(np.array(value, dtype=dtype), dtype)
