"""Default (untuned) CPU schedules for the fused elementwise/reduction kernels.

The stock CPU pipeline leaves every fused kernel as a serial, unvectorised loop
nest with a temporary buffer per op.  This rule inlines the chain into one
loop nest, parallelises the fused spatial loops and leaves the innermost
static loop to LLVM's vectoriser.  It works on symbolic shapes, so untuned
dynamic-shape libraries get it too.  Kernels we wrote by hand (and tuned ones)
carry ``tirx.is_scheduled`` and are skipped.
"""

from __future__ import annotations

from typing import Any

from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import normalize_prim_func
from tvm.s_tir.dlight.base import ScheduleRule, try_inline
from tvm.s_tir.dlight.base.transform import ApplyDefaultSchedule
from tvm.target import Target

MAX_VECTOR_LANES = 64  # widest row vectorised as one TIR vector (64 x int64 = 8 zmm)


def _static(extent: Any) -> int | None:
    return int(extent.value) if isinstance(extent, tirx.IntImm) else None


class CPUParallelFallback(ScheduleRule):
    """Inline the injective chain; parallel outer spatial loops, keep the inner static loop for LLVM."""

    def apply(self, func: tirx.PrimFunc, target: Target, _tunable: bool) -> s_tir.Schedule | None:
        if not isinstance(func, tirx.PrimFunc):
            return None
        try:
            sch = s_tir.Schedule(func)
            infos = normalize_prim_func(sch)
            if infos is None:
                return None
            infos = try_inline(sch, infos)
            for info in infos:
                block = info.block_rv
                loops = sch.get_loops(block)
                kinds = info.dom_kind()
                if len(loops) != len(kinds) or "O" in kinds:
                    continue
                s_loops = [lp for lp, k in zip(loops, kinds) if k == "S"]
                r_loops = [lp for lp, k in zip(loops, kinds) if k == "R"]
                if not s_loops:
                    continue
                sch.reorder(*s_loops, *r_loops)
                inner_static = _static(sch.get(s_loops[-1]).extent)
                if not r_loops and len(s_loops) > 1 and inner_static is not None and inner_static >= 2:
                    outer = sch.fuse(*s_loops[:-1]) if len(s_loops) > 2 else s_loops[0]
                    sch.parallel(outer)
                    if inner_static <= MAX_VECTOR_LANES:
                        # Narrow rows ([N, 16] accumulators): vectorise along the row explicitly.  Left
                        # to itself LLVM vectorises across rows instead (stride-H gathers, ~4x slower).
                        sch.vectorize(s_loops[-1])
                else:
                    fused = sch.fuse(*s_loops) if len(s_loops) > 1 else s_loops[0]
                    if not r_loops and _static(sch.get(fused).extent) != 1:
                        outer, _inner = sch.split(fused, factors=[None, 64])
                        sch.parallel(outer)
                    else:
                        sch.parallel(fused)
            return sch
        except Exception:  # noqa: BLE001 - fall back to the unscheduled kernel, never fail the build
            return None


def default_schedule_pass(preset: Any) -> Any:
    """``ApplyDefaultSchedule`` with our CPU rule (runs under the target context)."""
    return ApplyDefaultSchedule(CPUParallelFallback())
