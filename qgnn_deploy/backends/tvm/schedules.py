"""Default (untuned) CPU schedules for the fused elementwise/reduction kernels.

The stock CPU pipeline leaves every fused kernel as a serial, unvectorised loop
nest with a temporary buffer per op.  This rule inlines the chain into one
loop nest, parallelises the fused spatial loops and leaves the innermost
static loop to LLVM's vectoriser.  It works on symbolic shapes, so untuned
dynamic-shape libraries get it too.  Kernels we wrote by hand (and tuned ones)
carry ``tirx.is_scheduled`` and are skipped.  Each scheduled kernel also keeps a serial copy of its nest
for calls whose work is below ``kernels.SERIAL_WORK`` (:func:`serial_when_small`).
"""

from __future__ import annotations

from typing import Any

import tvm
from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import normalize_prim_func
from tvm.s_tir.dlight.base import ScheduleRule, try_inline
from tvm.s_tir.dlight.base.transform import ApplyDefaultSchedule
from tvm.target import Target

from .kernels import SERIAL_WORK

MAX_VECTOR_LANES = 64  # widest row vectorised as one TIR vector (64 x int64 = 8 zmm)


def _static(extent: Any) -> int | None:
    return int(extent.value) if isinstance(extent, tirx.IntImm) else None


class CPUParallelFallback(ScheduleRule):
    """Inline the injective chain; parallel outer spatial loops, keep the inner static loop for LLVM.

    A kernel whose total work (loop iterations, a symbolic expression of the shapes) is below
    ``serial_work`` runs a serial copy of the same loop nest instead: see :func:`serial_when_small`.
    """

    def __init__(self, serial_work: int | None = None) -> None:
        super().__init__()
        self.serial_work = SERIAL_WORK if serial_work is None else serial_work

    def apply(self, func: tirx.PrimFunc, target: Target, _tunable: bool) -> s_tir.Schedule | None:
        if not isinstance(func, tirx.PrimFunc):
            return None
        par = _schedule(func, parallel=True)
        if par is None or self.serial_work <= 0:
            return par
        ser = _schedule(func, parallel=False)
        combined = serial_when_small(par.mod["main"], ser.mod["main"], self.serial_work) if ser else None
        return par if combined is None else s_tir.Schedule(combined)


def _schedule(func: tirx.PrimFunc, parallel: bool) -> s_tir.Schedule | None:
    """The fallback schedule; ``parallel`` False leaves every loop serial (same nest, same vectorisation)."""
    try:
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)
        if infos is None:
            return None
        infos = try_inline(sch, infos)
        mark = sch.parallel if parallel else (lambda _loop: None)
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
                mark(outer)
                if inner_static <= MAX_VECTOR_LANES:
                    # Narrow rows ([N, 16] accumulators): vectorise along the row explicitly.  Left
                    # to itself LLVM vectorises across rows instead (stride-H gathers, ~4x slower).
                    sch.vectorize(s_loops[-1])
            else:
                fused = sch.fuse(*s_loops) if len(s_loops) > 1 else s_loops[0]
                if not r_loops and _static(sch.get(fused).extent) != 1:
                    outer, _inner = sch.split(fused, factors=[None, 64])
                    mark(outer)
                else:
                    mark(fused)
        return sch
    except Exception:  # noqa: BLE001 - fall back to the unscheduled kernel, never fail the build
        return None


def loop_work(stmt: Any, bound: frozenset = frozenset()) -> Any:
    """Iterations of the innermost statements of a loop nest (a PrimExpr of the shapes), or None when a
    loop's extent depends on an enclosing loop's variable (``bound``): then it is no product of extents."""
    if isinstance(stmt, tirx.For):
        if any(v in bound for v in tirx.analysis.undefined_vars(stmt.extent)):
            return None
        inner = loop_work(stmt.body, bound | {stmt.loop_var})
        return None if inner is None else tirx.Cast("int64", stmt.extent) * inner
    if isinstance(stmt, tirx.SeqStmt):
        parts = [loop_work(s, bound) for s in stmt.seq]
        if any(p is None for p in parts):
            return None
        total = parts[0]
        for p in parts[1:]:
            total = total + p
        return total
    if isinstance(stmt, s_tir.SBlockRealize):
        return loop_work(stmt.block.body, bound | {iv.var for iv in stmt.block.iter_vars})
    return tirx.IntImm("int64", 1)


def _has_parallel(stmt: Any) -> bool:
    if isinstance(stmt, tirx.For):
        return stmt.kind == tirx.ForKind.PARALLEL or _has_parallel(stmt.body)
    if isinstance(stmt, tirx.SeqStmt):
        return any(_has_parallel(s) for s in stmt.seq)
    if isinstance(stmt, s_tir.SBlockRealize):
        return _has_parallel(stmt.block.body)
    return False


def serial_when_small(par: tirx.PrimFunc, ser: tirx.PrimFunc, threshold: int) -> tirx.PrimFunc | None:
    """``par`` whose root block runs ``if work < threshold: <ser's loop nest> else: <par's>``.

    Both are schedules of one function (same parameters and buffers).  A parallel loop costs a thread-pool
    launch and barrier of several microseconds even when each thread has a few hundred elements to do;
    below the threshold the serial copy is faster, above it the parallel one.  ``work`` is the loop-nest
    iteration count (a product of the symbolic shapes), evaluated once per call.  None when the nest is not
    a plain product of extents or has nothing parallel.
    """
    root_p, root_s = par.body, ser.body
    if not (isinstance(root_p, s_tir.SBlockRealize) and isinstance(root_s, s_tir.SBlockRealize)):
        return None
    bp, bs = root_p.block, root_s.block
    if not _has_parallel(bp.body) or _has_parallel(bs.body) or bs.alloc_buffers or bp.alloc_buffers:
        return None
    work = loop_work(bp.body)
    if work is None:
        return None
    body = tirx.IfThenElse(work < tirx.IntImm("int64", int(threshold)), bs.body, bp.body)
    block = s_tir.SBlock(bp.iter_vars, bp.reads, bp.writes, bp.name_hint, body, bp.init, bp.alloc_buffers,
                         bp.match_buffers, bp.annotations)
    realize = s_tir.SBlockRealize(root_p.iter_values, root_p.predicate, block)
    # both branches define the same block variables: ConvertSSA gives the serial copy fresh ones
    return tirx.transform.ConvertSSA()(tvm.IRModule({"main": par.with_body(realize)}))["main"]


def default_schedule_pass(preset: Any, serial_work: int | None = None) -> Any:
    """``ApplyDefaultSchedule`` with our CPU rule (runs under the target context)."""
    return ApplyDefaultSchedule(CPUParallelFallback(serial_work))
