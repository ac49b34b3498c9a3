"""The one int8 GEMM skeleton every ISA's kernel is built from: ``C[M,N] (int32) = A[M,K] (u8/s8) x B[K,N] (s8)``.

Contract (all kernels): zero points excluded, M (the node count) symbolic, N padded to a multiple of 16 by the
caller, B a constant packed by constant-folded Relax ops, exact for any u8/s8 input.  Why hand-written: the
stock CPU pipeline emits a serial scalar triple loop for ``matmul`` (~30 ms for Cora's 2708x1433x16) and
meta-schedule needs static shapes.

The schedule is the same on every ISA; what differs is described by a :class:`Scheme` and a step function.

* **Register block**: ``rows`` rows of A x 16 output columns (:data:`LANES` int32 accumulators per row, in a
  constant-size buffer that LLVM promotes to registers), for each 16-column block ``j`` of C.  Row blocks run in
  parallel (deterministic: every output element has one owner).
* **K loop**: for each K step ``q`` (``kstep`` columns of A), for each row (or row group) of the block and each
  ``width``-lane vector ``v`` of its accumulators, one call of the ISA's step function:
  ``step(acc, a, off, Bp, j, q, v) -> acc'``, where ``acc`` is the ``width``-lane accumulator vector, ``a`` the
  row's A (a 1-D panel buffer, or a row view of A: either is read as ``a.vload([off], dtype)`` / ``a[off]``) and
  ``off`` the index of K step ``q`` in it.  Steps that cover ``group`` > 1 rows at once (I8MM's 2x2 blocks) get a
  tuple of ``group`` row views.  The step function holds the ISA's instructions and the packed-B layout it reads.
* **A source**: read in place, one parallel task per row block (``panel=False``); or copied (widened, or
  quantized from FP32 with the ``quantize`` handler's float32 ops) into a per-task panel of ``panel_blocks``
  row blocks that stays in L1 (``panel=True``, or any kernel with a fused ``quantize``).
* **Tail rows** (M % rows): ``"split"``: full blocks take the unrolled loop above, the last block runs its rows
  one after another; ``"clamp"``: the last block reads a clamped (valid) row for the missing rows and never
  stores them, so there is one loop.
* **K tail** (K % kstep): ``"pad"``: the caller pads B with zero rows (and the panel with zero columns) to a
  multiple of kstep, so there is none; ``"int32"``: the last K % kstep columns are multiplied exactly in int32
  with the unpacked rows ``Bt`` (an extra kernel argument); ``"shifted"`` (K >= kstep): one more step reads A's
  last kstep columns (in bounds: they end at the row's end) against an extra packed step of B whose rows the
  main steps already covered are zero (:func:`split_b` ``shifted``), so the tail costs one instruction per row
  vector instead of K % kstep int32 multiply-adds; ``Bt`` stays in the signature, unread.
* **Epilogue**: the accumulators are stored as int32, or requantized in registers (:class:`Epilogue`), optionally
  after adding ``addend * D[i, c]`` from an 8-bit ``[M, columns]`` tensor ``D`` (LoRAP's prompt tail), and
  optionally dequantized to float32 (a model's final ``dequantize``: the codes are never stored).  Its per-column
  constants are read and converted once per register block into stack buffers, which LLVM keeps in registers.

B's packing is Relax ops on the constant weight, folded at compile time: :func:`pad_columns` (N to a
multiple of 16), :func:`split_b` (``[nb, K/depth, 16, depth]`` plus the int32 K tail rows) and, for kernels
that flip A's sign bit to fit their instruction's operand type, :func:`add_colsum` (the exact correction).

A new ISA is a step function and a :class:`Scheme` entry in its family module (:mod:`.gemm` for AVX-512 VNNI
and the portable kernel, :mod:`.gemm_x86` for x86 below VNNI, :mod:`.gemm_arm` for AArch64).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from tvm import relax, tirx
from tvm.script import tirx as T

from .relax_ops import op, scalar

_SCHEDULED = {"tir.noalias": True, "tirx.is_scheduled": True}
ROWS = 4  # rows per register block (NEON / generic kernels)
LANES = 16  # int32 outputs per block (one zmm, or four NEON q registers)
PANEL_BLOCKS = 16  # row blocks per parallel task of a panel kernel (one panel workspace per task)
# Accumulator scope: a "global" decl_buffer of constant size inside the parallel body lowers to a stack
# alloca that LLVM promotes to registers; "local" became a TVMBackendAllocWorkspace call per row block
# (a heap round trip per 4 rows) whose stores LLVM could not drop: one 64-byte store per vpdpbusd.
ACC_SCOPE = "global"
FLIP = -2139062144  # 0x80808080 as int32: xor flips the sign bit of 4 packed bytes (a +/- 128)

Step = Callable[..., Any]  # step(acc, a, off, Bp, j, q, v) -> acc (see the module docstring)


@dataclass(frozen=True)
class Scheme:
    """One kernel variant: its vector width (int32 lanes a step updates), rows per register block, K step,
    and how it reads A and handles the tails (see the module docstring)."""

    kind: str
    width: int
    rows: int
    kstep: int
    planes: int = 1  # packed copies of B (ubsw: low and high halves)
    panel: bool = True  # A always goes through a per-task panel (else only when a quantize is fused)
    k_tail: str = "pad"  # "pad", "int32" or "shifted"
    row_tail: str = "split"  # "split" or "clamp"
    group: int = 1  # rows one step covers (its accumulator vector holds group x width/group outputs)

    @property
    def panel_dtype(self) -> str:
        return "int16" if self.kstep == 2 else ""  # dpbusd/ubsw panels keep A's own dtype


@dataclass(frozen=True)
class Epilogue:
    """A ``requantize`` applied to the int32 accumulators before they leave registers (per-column constants in
    an int64 ``[3, nb*16]`` tensor: multiplier, rounding half ``2**(n-1)`` (0 for n = 0), shift n), then
    ``+ zero_point``, clip to ``[lo, hi]`` and cast to ``dtype``: the handler's int64 ops, so bit-exact, and
    the int32 ``[M, N]`` product never goes to memory."""

    zero_point: int
    lo: int
    hi: int
    dtype: str
    columns: int  # real output columns (<= nb*16): padding columns are never written
    # ``acc + addend * D[i, c]`` (int32, D an ``addend_dtype`` [M, columns] tensor) is requantized instead of
    # ``acc``; 0: no D.  The caller guarantees the sum never wraps int32 (``gemm.prompt_epilogue_constants``).
    addend: int = 0
    addend_dtype: str = "int8"
    # ``(zero_point, scale)`` of a ``dequantize`` reading the codes: C holds ``float32(code - zero_point) * scale``
    # (the interpreter's float32 ops; ``scale`` a float32 value, ``|zero_point|`` below
    # ``fusion.DEQUANTIZE_MAX_ZERO_POINT`` so the int32 difference cannot wrap); None: codes.
    dequantize: tuple[int, float] | None = None
    # a multiplier outside int32: the kernel multiplies in full int64.  Otherwise it multiplies sign-extended int32
    # values, which LLVM lowers to one ``vpmuldq`` on AVX2 instead of a 64 x 64-bit multiply sequence (fused GEMMs of
    # the 10^6-node series model, AMD Zen 2, 1 thread: 7-12% less time each)
    wide_multipliers: bool = False
    # a shift below 32 (or a zero point beyond 2^30): the kernel shifts, adds the zero point and clips in int64.
    # Otherwise (every shift s in [32, 63], |sum| < 2^63) it takes the sum's high half ``t >> 32`` (a constant shift:
    # a shuffle) and shifts that by ``s - 32`` in int32 (``vpsravd``; AVX2 has no 64-bit arithmetic shift, min or
    # max, which LLVM emulates per element): ``floor(floor(t / 2^32) / 2^(s - 32)) = floor(t / 2^s)``, so exact, and
    # the result fits int32 with room for the zero point and the clip.  The int32 shift amount is written
    # ``max(s - 32, 0)``: with plain ``s - 32`` the built kernels wrapped codes that should clip (every large sum
    # wrong; the clip was evidently dropped as if the shifted value were known to be small), with TVM 0.27 here.
    # 10^6-node series model, 1 thread, AMD Zen 2: the whole graph 2-3% faster than the int64 shift.
    low_shifts: bool = False

    @property
    def out_dtype(self) -> str:
        """C's dtype: the codes', or float32 with a ``dequantize``."""
        return self.dtype if self.dequantize is None else "float32"

    def key(self) -> tuple[Any, ...]:
        extra = ("add", str(self.addend).replace("-", "m"), self.addend_dtype) if self.addend else ()
        if self.dequantize is not None:
            zp, scale = self.dequantize
            extra += ("dq", str(zp).replace("-", "m"), f"{int(np.float32(scale).view(np.uint32)):08x}")
        if self.wide_multipliers:
            extra += ("m64",)
        if self.low_shifts:
            extra += ("s64",)
        return ("rq", str(self.zero_point).replace("-", "m"), str(self.lo).replace("-", "m"), self.hi, self.dtype,
                self.columns, *extra)


@dataclass(frozen=True)
class Residual:
    """``count`` extra K steps per register block, run after the main K loop while the rows are in L1
    (``avx2-pair``: the sparse excess of its clamped weights).  ``k_step(Bp, j, e)`` reads which K step of A
    residual ``e`` of column block ``j`` multiplies; ``step`` has the main step's signature (``q`` is ``e``)."""

    count: int
    step: Step
    k_step: Callable[[Any, Any, Any], Any]


class RowView:
    """Row ``row`` of a 2-D buffer, read like a 1-D panel (``vload([i], dtype)``, ``[i]``): step functions
    take either."""

    def __init__(self, buf: Any, row: Any) -> None:
        self.buf, self.row = buf, row

    def vload(self, idx: list[Any], dtype: str) -> Any:
        return self.buf.vload([self.row, idx[0]], dtype)

    def __getitem__(self, i: Any) -> Any:
        return self.buf[self.row, i]


def gemm_kernel(
    s: Scheme, step: Step, k: int, nb: int, a_dtype: str, b_shape: tuple[int, ...], b_dtype: str = "int8", *,
    fill: tuple[Any, Any] | None = None, in_dtype: str | None = None, epilogue: Epilogue | None = None,
    panel_blocks: int = PANEL_BLOCKS, residual: Residual | None = None,
) -> tirx.PrimFunc:
    """The ``s`` GEMM over ``k`` columns of A (``a_dtype`` codes) and ``nb`` 16-column blocks of packed B
    (``b_shape`` of ``b_dtype``, read only by ``step``).

    ``fill`` = (16-lane, scalar) panel fill expressions ``f16(X, row, col, Bp, chunk)`` (it may read packed B:
    ``avx2-pair``'s byte shuffle of 16-column chunk ``chunk``), ``f1(X, row, col)``, and ``in_dtype`` the input's dtype
    (default ``a_dtype``): a panel kernel widens or quantizes A with them.  Signature: ``(A, Bp, C)``, with
    ``Bt`` (``k_tail == "int32"``) and then the requantize constants (``epilogue``) after ``Bp``, then ``D``
    (an epilogue with an ``addend``: ``(A, Bp, Bt, Rq, D, C)``, or ``(A, Bp, Rq, D, C)`` with the padded K
    tail).  With an ``epilogue`` C holds ``epilogue.out_dtype`` values, only the ``epilogue.columns`` real columns.
    """
    rows, w, kq = s.rows, s.width, s.kstep
    nv = LANES * s.group // w  # accumulator vectors per row group
    glanes = s.group * LANES  # accumulators per row group
    in_dtype = in_dtype or a_dtype
    use_panel = s.panel or in_dtype != a_dtype
    int32_tail = s.k_tail in ("int32", "shifted")  # K // kstep main steps, Bt in the signature
    exact_tail = s.k_tail == "int32"  # the K % kstep columns in int32 from Bt
    kbase = k // kq * kq if int32_tail else k
    kpanel = k if int32_tail else -(-k // kq) * kq  # the panel's row stride (K padded to the step)
    nq = kbase // kq if int32_tail else kpanel // kq
    pdt = s.panel_dtype or a_dtype
    fill16, fill1 = fill if fill is not None else (None, None)
    k16 = k // 16 * 16
    per_task = rows * panel_blocks
    fused = epilogue is not None
    ncols = epilogue.columns if fused else nb * LANES
    odt = epilogue.out_dtype if fused else "int32"
    ezp, elo, ehi = (epilogue.zero_point, epilogue.lo, epilogue.hi) if fused else (0, 0, 0)
    addend = epilogue.addend if fused else 0
    has_shift = s.k_tail == "shifted" and k > kbase  # one step over A's last kstep columns (Bp's step nq)
    if s.k_tail == "shifted" and k < kq:
        raise ValueError(f"the shifted K tail needs K >= {kq}, got {k}")
    rcount = residual.count if residual is not None else 0
    has_residual = rcount > 0  # a Python bool: TVMScript drops the branch when False
    if rcount and (s.row_tail != "split" or s.group > 1):
        raise ValueError("residual K steps need the split row tail and one row per step")
    if s.group > 1 and (use_panel or s.row_tail != "clamp"):
        raise ValueError("steps over row groups read A in place with the clamp row tail")
    tail_shape = (max(k - kbase, 1), nb * LANES)  # Bt: the int32 K tail's unpacked rows of B
    cloop = T.vectorized if s.group == 1 else T.unroll  # over the 16 columns of one row's accumulators

    def idx(r, c):  # noqa: ANN001, ANN202 - accumulator element of (row r, column c) of the block
        if s.group == 1:
            return r * LANES + c
        cw = w // s.group
        return (r // s.group) * glanes + (c // cw) * w + (r % s.group) * cw + c % cw

    def operand(src, row0, g, m):  # noqa: ANN001, ANN202 - the step's A for row group g (row views or the panel)
        if use_panel:
            return src
        if s.row_tail != "clamp":
            return RowView(src, row0 + g)
        if s.group == 1:
            return RowView(src, T.min(row0 + g, m - 1))
        return tuple(RowView(src, T.min(row0 + s.group * g + i if i else row0 + s.group * g, m - 1))
                     for i in range(s.group))  # the same expressions as written out by hand: identical TIR

    def offset(g, q):  # noqa: ANN001, ANN202 - index of K step q in the step's A
        return g * kpanel + q * kq if use_panel else q * kq

    def shifted_offset(g, q):  # noqa: ANN001, ANN202 - index of A's last kstep columns (the shifted tail step)
        return g * kpanel + k - kq if use_panel else k - kq

    def a_at(src, row0, r, col):  # noqa: ANN001, ANN202 - one A code for the int32 K tail
        return src[r * kpanel + col] if use_panel else src[row0 + r, col]

    shift_dtype = "int64" if fused and epilogue.low_shifts else "int32"
    mult_dtype = "int64" if fused and epilogue.wide_multipliers else "int32"

    def out_value(QM, QH, QS, D, acc, row, col, i, c):  # noqa: ANN001, ANN202 - TVMScript expression helper
        if not fused:
            return acc[i]
        v = acc[i] + T.Cast("int32", D[row, col]) * T.int32(addend) if addend else acc[i]
        t = T.Cast("int64", v) * T.Cast("int64", QM[c]) + QH[c]  # int32 x int32 (vpmuldq) unless wide
        if epilogue.low_shifts:
            y = T.shift_right(t, QS[c]) + T.int64(ezp)
            code = T.Cast(epilogue.dtype, T.min(T.max(y, T.int64(elo)), T.int64(ehi)))
        else:  # s in [32, 63]: floor(t / 2^s) = floor(floor(t / 2^32) / 2^(s - 32)), both in int32 (see Epilogue)
            hi = T.Cast("int32", T.shift_right(t, T.int64(32)))
            code = T.Cast(epilogue.dtype, T.min(T.max(T.shift_right(hi, QS[c]) + T.int32(ezp), T.int32(elo)),
                                                T.int32(ehi)))
        if epilogue.dequantize is None:
            return code
        dzp, dscale = epilogue.dequantize
        return T.Cast("float32", T.Cast("int32", code) - T.int32(dzp)) * T.float32(dscale)

    def multiplier(RQ, col):  # noqa: ANN001, ANN202 - as out_value multiplies: int32 unless wide
        return RQ[0, col] if epilogue.wide_multipliers else T.Cast("int32", RQ[0, col])

    def shift_amount(RQ, col):  # noqa: ANN001, ANN202 - the int64 shift, or the int32 one after taking t >> 32
        return RQ[2, col] if epilogue.low_shifts else T.max(T.Cast("int32", RQ[2, col]) - T.int32(32), T.int32(0))

    @T.macro
    def load_constants(RQ, j, QM, QH, QS):  # noqa: ANN001, ANN202 - column block j's epilogue constants
        if fused:
            for c in T.vectorized(LANES):
                QM[c] = multiplier(RQ, j * LANES + c)
                QH[c] = RQ[1, j * LANES + c]
                QS[c] = shift_amount(RQ, j * LANES + c)

    @T.macro
    def finish(src, row0, r, j, acc, X, QM, QH, QS, D, C):  # noqa: ANN001, ANN202 - K tail (X: Bt) and store of row r
        if exact_tail:
            for t in range(k - kbase):
                for c in cloop(LANES):
                    acc[idx(r, c)] = acc[idx(r, c)] + T.Cast("int32", a_at(src, row0, r, kbase + t)) * T.Cast(
                        "int32", X[t, j * LANES + c])
        if ncols % LANES == 0:
            for c in cloop(LANES):
                C[row0 + r, j * LANES + c] = out_value(QM, QH, QS, D, acc, row0 + r, j * LANES + c, idx(r, c), c)
        elif j < nb - 1:
            for c in cloop(LANES):
                C[row0 + r, j * LANES + c] = out_value(QM, QH, QS, D, acc, row0 + r, j * LANES + c, idx(r, c), c)
        else:  # the epilogue writes only the real columns: no slice kernel after it
            for c in cloop(ncols % LANES):
                C[row0 + r, j * LANES + c] = out_value(QM, QH, QS, D, acc, row0 + r, j * LANES + c, idx(r, c), c)

    def row_steps(fn: Step, at: Callable[[Any, Any], Any] = offset) -> Any:
        """One row's accumulator vectors through ``fn`` at K step ``kidx`` (A's index ``at(r, kidx)``; B's ``q``)."""
        @T.macro
        def steps(src, row0, r, j, acc, Bp, m, kidx, q):  # noqa: ANN001, ANN202
            for v in T.unroll(nv):
                acc[T.ramp(r * LANES + v * w, 1, w)] = fn(
                    acc[T.ramp(r * LANES + v * w, 1, w)], operand(src, row0, r, m), at(r, kidx), Bp, j, q, v)

        return steps

    main_steps = row_steps(step)
    residual_steps = row_steps(residual.step if residual is not None else step)
    shifted_steps = row_steps(step, shifted_offset)

    @T.macro
    def block(src, row0, j, acc, Bp, X, RQ, D, C, m):  # noqa: ANN001, ANN202 - one register block: rows x 16 columns
        # the epilogue's per-column constants, converted once per block: read from RQ by every row, LLVM reloaded and
        # reconverted them per row (RQ and C may alias as far as the parallel body knows; a stack buffer cannot)
        QM = T.decl_buffer((LANES,), mult_dtype, scope=ACC_SCOPE)
        QH = T.decl_buffer((LANES,), "int64", scope=ACC_SCOPE)
        QS = T.decl_buffer((LANES,), shift_dtype, scope=ACC_SCOPE)
        for r in T.unroll(rows):
            acc[T.ramp(r * LANES, 1, LANES)] = T.broadcast(T.int32(0), LANES)
        if s.row_tail == "clamp":
            for q in range(nq):
                for g in T.unroll(rows // s.group):
                    for v in T.unroll(nv):
                        acc[T.ramp(g * glanes + v * w, 1, w)] = step(
                            acc[T.ramp(g * glanes + v * w, 1, w)], operand(src, row0, g, m), offset(g, q),
                            Bp, j, q, v)
            if has_shift:
                for g in T.unroll(rows // s.group):
                    for v in T.unroll(nv):
                        acc[T.ramp(g * glanes + v * w, 1, w)] = step(
                            acc[T.ramp(g * glanes + v * w, 1, w)], operand(src, row0, g, m), shifted_offset(g, 0),
                            Bp, j, nq, v)
            load_constants(RQ, j, QM, QH, QS)  # after the K loop: not live across it (AVX2 has 16 registers)
            for r in T.unroll(rows):
                if row0 + r < m:
                    finish(src, row0, r, j, acc, X, QM, QH, QS, D, C)
        else:
            if row0 + rows <= m:
                for q in range(nq):
                    for r in T.unroll(rows):
                        main_steps(src, row0, r, j, acc, Bp, m, q, q)
                if has_shift:
                    for r in T.unroll(rows):
                        shifted_steps(src, row0, r, j, acc, Bp, m, 0, nq)
                if has_residual:
                    for e in range(rcount):
                        qi = residual.k_step(Bp, j, e)
                        for r in T.unroll(rows):
                            residual_steps(src, row0, r, j, acc, Bp, m, qi, e)
            else:
                for r in range(m - row0):
                    for q in range(nq):
                        main_steps(src, row0, r, j, acc, Bp, m, q, q)
                    if has_shift:
                        shifted_steps(src, row0, r, j, acc, Bp, m, 0, nq)
                    if has_residual:
                        for e in range(rcount):
                            qi = residual.k_step(Bp, j, e)
                            residual_steps(src, row0, r, j, acc, Bp, m, qi, e)
            load_constants(RQ, j, QM, QH, QS)
            for r in range(T.min(m - row0, rows)):
                finish(src, row0, r, j, acc, X, QM, QH, QS, D, C)

    @T.macro
    def body(A, Bp, X, RQ, D, C, m):  # noqa: ANN001, ANN202 - shared by every signature (X: Bt, RQ: epilogue)
        if use_panel:
            for p in T.parallel((m + per_task - 1) // per_task):
                panel = T.decl_buffer((rows * kpanel,), pdt, scope="global")
                acc = T.decl_buffer((rows * LANES,), "int32", scope=ACC_SCOPE)
                for b in range(panel_blocks):
                    if (p * panel_blocks + b) * rows < m:
                        row0 = (p * panel_blocks + b) * rows
                        for r in range(T.min(m - row0, rows)):
                            for c16 in range(k // 16):
                                panel[T.ramp(r * kpanel + c16 * 16, 1, 16)] = fill16(A, row0 + r, c16 * 16, Bp, c16)
                            for c in range(k - k16):
                                panel[r * kpanel + k16 + c] = fill1(A, row0 + r, k16 + c)
                            for c in range(kpanel - k):
                                panel[r * kpanel + k + c] = T.Cast(pdt, 0)
                        for j in range(nb):
                            block(panel, row0, j, acc, Bp, X, RQ, D, C, m)
        else:
            for mb in T.parallel((m + rows - 1) // rows):
                for j in range(nb):
                    acc = T.decl_buffer((rows * LANES,), "int32", scope=ACC_SCOPE)
                    block(A, mb * rows, j, acc, Bp, X, RQ, D, C, m)

    if addend and int32_tail:

        @T.prim_func(private=True, s_tir=True)
        def kernel_xrd(a_h: T.handle, bp_h: T.handle, x_h: T.handle, rq_h: T.handle, d_h: T.handle, c_h: T.handle):
            T.func_attr(_SCHEDULED)
            m = T.int64()
            A = T.match_buffer(a_h, (m, k), in_dtype)
            Bp = T.match_buffer(bp_h, b_shape, b_dtype)
            X = T.match_buffer(x_h, tail_shape, "int8")
            RQ = T.match_buffer(rq_h, (3, nb * LANES), "int64")
            D = T.match_buffer(d_h, (m, ncols), epilogue.addend_dtype)
            C = T.match_buffer(c_h, (m, ncols), odt)
            with T.sblock("root"):
                body(A, Bp, X, RQ, D, C, m)

        return kernel_xrd
    if addend or (int32_tail and fused):  # (A, Bp, Rq, D, C) with the padded K tail, else (A, Bp, Bt, Rq, C)
        rq_first = bool(addend)
        u_shape, u_dtype = ((3, nb * LANES), "int64") if rq_first else (tail_shape, "int8")

        def v_shape(m):  # noqa: ANN001, ANN202 - D's shape, or Rq's
            return (m, ncols) if rq_first else (3, nb * LANES)

        v_dtype = epilogue.addend_dtype if rq_first else "int64"

        @T.prim_func(private=True, s_tir=True)
        def kernel_uv(a_h: T.handle, bp_h: T.handle, u_h: T.handle, v_h: T.handle, c_h: T.handle):
            T.func_attr(_SCHEDULED)
            m = T.int64()
            A = T.match_buffer(a_h, (m, k), in_dtype)
            Bp = T.match_buffer(bp_h, b_shape, b_dtype)
            U = T.match_buffer(u_h, u_shape, u_dtype)
            V = T.match_buffer(v_h, v_shape(m), v_dtype)
            C = T.match_buffer(c_h, (m, ncols), odt)
            with T.sblock("root"):
                if rq_first:
                    body(A, Bp, U, U, V, C, m)
                else:
                    body(A, Bp, U, V, None, C, m)

        return kernel_uv
    if int32_tail or fused:
        extra = (*tail_shape, "int8") if int32_tail else (3, nb * LANES, "int64")

        @T.prim_func(private=True, s_tir=True)
        def kernel_x(a_h: T.handle, bp_h: T.handle, x_h: T.handle, c_h: T.handle):
            T.func_attr(_SCHEDULED)
            m = T.int64()
            A = T.match_buffer(a_h, (m, k), in_dtype)
            Bp = T.match_buffer(bp_h, b_shape, b_dtype)
            X = T.match_buffer(x_h, extra[:2], extra[2])
            C = T.match_buffer(c_h, (m, ncols), odt)
            with T.sblock("root"):
                body(A, Bp, X, X, None, C, m)

        return kernel_x

    @T.prim_func(private=True, s_tir=True)
    def kernel(a_h: T.handle, bp_h: T.handle, c_h: T.handle):
        T.func_attr(_SCHEDULED)
        m = T.int64()
        A = T.match_buffer(a_h, (m, k), in_dtype)
        Bp = T.match_buffer(bp_h, b_shape, b_dtype)
        C = T.match_buffer(c_h, (m, nb * LANES), "int32")
        with T.sblock("root"):
            body(A, Bp, None, None, None, C, m)

    return kernel


def pad_columns(b: relax.Expr, k: int, n: int) -> tuple[relax.Expr, int]:
    """B [K, N] int8 with zero columns up to a multiple of 16, and the number of 16-column blocks."""
    nb = -(-n // LANES)
    npad = nb * LANES
    return (b if npad == n else op.concat([b, relax.const(np.zeros((k, npad - n), np.int8), "int8")], axis=1)), nb


def drop_padding(out: relax.Expr, n: int) -> relax.Expr:
    """C [M, nb*16] -> its first ``n`` columns."""
    npad = -(-n // LANES) * LANES
    return out if npad == n else op.strided_slice(out, axes=[1], begin=[0], end=[n])


def split_b(bpad: relax.Expr, k: int, nb: int, kstep: int, depth: int,
            shifted: bool = False) -> tuple[relax.Expr, relax.Expr, relax.Expr]:
    """(Bmain, Bp, Bt) of an ``"int32"`` K-tail kernel: Bmain = B's first ``K // kstep * kstep`` rows, Bp = Bmain
    packed ``[nb, rows/depth, 16, depth]`` (``depth`` consecutive k of one column are adjacent), Bt = the K tail
    rows (one zero row when there is no tail).  ``shifted`` (a ``"shifted"`` K-tail kernel, K >= kstep): Bp also
    packs, after Bmain, B's last ``kstep`` rows with those Bmain holds zeroed (the step over A's last ``kstep``
    columns)."""
    kbase = k // kstep * kstep
    bmain = op.strided_slice(bpad, axes=[0], begin=[0], end=[kbase])
    packed, rows = bmain, kbase
    if shifted and kbase < k:
        if k < kstep:
            raise ValueError(f"split_b: a shifted K tail needs K >= {kstep}, got {k}")
        npad = nb * LANES
        zeros = relax.const(np.zeros((kstep - (k - kbase), npad), np.int8), "int8")
        packed = op.concat([bmain, zeros, op.strided_slice(bpad, axes=[0], begin=[kbase], end=[k])], axis=0)
        rows = kbase + kstep
    bp = op.permute_dims(op.reshape(packed, [rows // depth, depth, nb, LANES]), [2, 0, 3, 1])
    if kbase < k:
        bt = op.strided_slice(bpad, axes=[0], begin=[kbase], end=[k])
    else:
        bt = relax.const(np.zeros((1, nb * LANES), np.int8), "int8")
    return bmain, bp, bt


def add_colsum(out: relax.Expr, bmain: relax.Expr, factor: int) -> relax.Expr:
    """``out + factor * colsum(Bmain)``: a kernel that multiplied ``a ^ 0x80`` (= a + 128 for s8, a - 128 for u8)
    over Bmain's rows computed ``A @ Bmain + 128 * colsum`` or ``- 128 * colsum``; factor -128 or 128 undoes it."""
    colsum = op.sum(op.astype(bmain, "int32"), axis=[0], keepdims=True)  # constant-folded
    return op.add(out, op.multiply(colsum, scalar(factor, "int32")))
