"""Hand-scheduled int8 GEMM kernels: ``C[M,N] (int32) = A[M,K] (u8) x B[K,N] (s8)``, zero points excluded.

Why hand-written: the stock CPU pipeline emits a serial scalar triple loop for
``matmul`` (~30 ms for Cora's 2708x1433x16), and meta-schedule needs static
shapes.  These kernels keep M (the node count) symbolic and use the CPU's
dot-product instruction directly:

* x86 with AVX-512 VNNI: ``vpdpbusd`` (u8 x s8; s8 activations are flipped with ``a ^ 0x80`` = a + 128 and
  ``128 * colsum(B)`` subtracted, 4-term dot products into 16 int32 lanes; LLVM >= 21
  types its operands as <64 x i8>, so TVM's bundled ``dot_16x4_vnni`` intrinsic no longer verifies);
* AArch64 with ``+dotprod``: ``sdot`` (s8 x s8); u8 activations are flipped to s8 with
  ``a ^ 0x80`` (= a - 128) in-register and ``128 * colsum(B)`` is added back (exact);
* otherwise: a 4-row register-blocked loop vectorised over 16 output columns.

B (a constant in every folded model) is repacked by Relax ops that are
constant-folded at compile time into ``[N/16, K/4, 16, 4]``, so one 64-byte
load feeds one instruction.  Rows are processed 4 at a time (4 independent
accumulator chains hide the instruction latency) and row blocks run in
parallel: deterministic, since every output element has one owner.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tvm import relax, tirx
from tvm.script import tirx as T

_SCHEDULED = {"tir.noalias": True, "tirx.is_scheduled": True}
ROWS = 4  # rows per register block
LANES = 16  # int32 outputs per block (one zmm, or four NEON q registers)


FLIP = -2139062144  # 0x80808080 as int32: xor flips the sign bit of 4 packed bytes (a +/- 128)


def vnni_kernel(k: int, nb: int, a_dtype: str = "uint8") -> tirx.PrimFunc:
    """x86 ``vpdpbusd`` (needs u8 A: s8 A is flipped to a + 128); C is [M, nb*16].

    A's K % 4 tail is multiplied exactly with the padded rows ``Bt``.
    """
    k4, kbase = k // 4, 4 * (k // 4)
    kt = max(k - kbase, 1)
    mask = FLIP if a_dtype == "int8" else 0

    @T.prim_func(private=True, s_tir=True)
    def kernel(a_h: T.handle, bp_h: T.handle, bt_h: T.handle, c_h: T.handle):
        T.func_attr(_SCHEDULED)
        m = T.int64()
        A = T.match_buffer(a_h, (m, k), a_dtype)
        Bp = T.match_buffer(bp_h, (nb, k4, LANES, 4), "int8")
        Bt = T.match_buffer(bt_h, (kt, nb * LANES), "int8")
        C = T.match_buffer(c_h, (m, nb * LANES), "int32")
        with T.sblock("root"):
            for mb in T.parallel((m + ROWS - 1) // ROWS):
                for j in range(nb):
                    acc = T.decl_buffer((ROWS * LANES,), "int32", scope="local")
                    for r in T.unroll(ROWS):
                        acc[T.ramp(r * LANES, 1, LANES)] = T.broadcast(T.int32(0), LANES)
                    if mb * ROWS + ROWS <= m:
                        for q in range(k4):
                            for r in T.unroll(ROWS):
                                acc[T.ramp(r * LANES, 1, LANES)] = T.call_llvm_pure_intrin(
                                    T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
                                    acc[T.ramp(r * LANES, 1, LANES)],
                                    T.reinterpret(T.broadcast(T.bitwise_xor(T.reinterpret(
                                        A.vload([mb * ROWS + r, q * 4], a_dtype + "x4"), dtype="int32"),
                                        T.int32(mask)), LANES), dtype="int8x64"),
                                    Bp.vload([j, q, 0, 0], "int8x64"),
                                    dtype="int32x16")
                    else:
                        for r in range(m - mb * ROWS):
                            for q in range(k4):
                                acc[T.ramp(r * LANES, 1, LANES)] = T.call_llvm_pure_intrin(
                                    T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
                                    acc[T.ramp(r * LANES, 1, LANES)],
                                    T.reinterpret(T.broadcast(T.bitwise_xor(T.reinterpret(
                                        A.vload([mb * ROWS + r, q * 4], a_dtype + "x4"), dtype="int32"),
                                        T.int32(mask)), LANES), dtype="int8x64"),
                                    Bp.vload([j, q, 0, 0], "int8x64"),
                                    dtype="int32x16")
                    for r in range(T.min(m - mb * ROWS, ROWS)):
                        for t in range(k - kbase):
                            for c in T.vectorized(LANES):
                                acc[r * LANES + c] = acc[r * LANES + c] + T.Cast(
                                    "int32", A[mb * ROWS + r, kbase + t]) * T.Cast("int32", Bt[t, j * LANES + c])
                        for c in T.vectorized(LANES):
                            C[mb * ROWS + r, j * LANES + c] = acc[r * LANES + c]

    return kernel


def sdot_kernel(k: int, nb: int, a_dtype: str = "uint8") -> tirx.PrimFunc:
    """AArch64 ``sdot`` (needs s8 A: u8 A is flipped to a - 128) over 4*(K//4) columns; the K % 4 tail is exact."""
    k4, kbase = k // 4, 4 * (k // 4)
    kt = max(k - kbase, 1)
    mask = FLIP if a_dtype == "uint8" else 0

    @T.prim_func(private=True, s_tir=True)
    def kernel(a_h: T.handle, bp_h: T.handle, bt_h: T.handle, c_h: T.handle):
        T.func_attr(_SCHEDULED)
        m = T.int64()
        A = T.match_buffer(a_h, (m, k), a_dtype)
        Bp = T.match_buffer(bp_h, (nb, k4, LANES, 4), "int8")
        Bt = T.match_buffer(bt_h, (kt, nb * LANES), "int8")
        C = T.match_buffer(c_h, (m, nb * LANES), "int32")
        with T.sblock("root"):
            for mb in T.parallel((m + ROWS - 1) // ROWS):
                for j in range(nb):
                    acc = T.decl_buffer((ROWS * LANES,), "int32", scope="local")
                    for r in T.unroll(ROWS):
                        acc[T.ramp(r * LANES, 1, LANES)] = T.broadcast(T.int32(0), LANES)
                    for r in range(T.min(m - mb * ROWS, ROWS)):
                        for q in range(k4):
                            for s in T.unroll(4):
                                acc[T.ramp(r * LANES + s * 4, 1, 4)] = T.call_llvm_pure_intrin(
                                    T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.sdot.v4i32.v16i8"),
                                    acc[T.ramp(r * LANES + s * 4, 1, 4)],
                                    T.reinterpret(T.broadcast(
                                        T.bitwise_xor(T.reinterpret(A.vload([mb * ROWS + r, q * 4], a_dtype + "x4"),
                                                                    dtype="int32"), T.int32(mask)), 4),
                                        dtype="int8x16"),
                                    Bp.vload([j, q, s * 4, 0], "int8x16"),
                                    dtype="int32x4")
                        for t in range(k - kbase):
                            for c in T.vectorized(LANES):
                                acc[r * LANES + c] = acc[r * LANES + c] + T.Cast(
                                    "int32", A[mb * ROWS + r, kbase + t]) * T.Cast("int32", Bt[t, j * LANES + c])
                        for c in T.vectorized(LANES):
                            C[mb * ROWS + r, j * LANES + c] = acc[r * LANES + c]

    return kernel


def generic_kernel(k: int, nb: int, a_dtype: str) -> tirx.PrimFunc:
    """Portable: 4-row blocks, 16 int32 accumulators per row vectorised by LLVM (any ISA, u8 or s8 A)."""

    @T.prim_func(private=True, s_tir=True)
    def kernel(a_h: T.handle, b_h: T.handle, c_h: T.handle):
        T.func_attr(_SCHEDULED)
        m = T.int64()
        A = T.match_buffer(a_h, (m, k), a_dtype)
        B = T.match_buffer(b_h, (k, nb * LANES), "int8")
        C = T.match_buffer(c_h, (m, nb * LANES), "int32")
        with T.sblock("root"):
            for mb in T.parallel((m + ROWS - 1) // ROWS):
                for j in range(nb):
                    acc = T.decl_buffer((ROWS * LANES,), "int32", scope="local")
                    for r in T.unroll(ROWS):
                        for c in T.vectorized(LANES):
                            acc[r * LANES + c] = 0
                    if mb * ROWS + ROWS <= m:
                        for q in range(k):
                            for r in T.unroll(ROWS):
                                for c in T.vectorized(LANES):
                                    acc[r * LANES + c] = acc[r * LANES + c] + T.Cast(
                                        "int32", A[mb * ROWS + r, q]) * T.Cast("int32", B[q, j * LANES + c])
                    else:
                        for r in range(m - mb * ROWS):
                            for q in range(k):
                                for c in T.vectorized(LANES):
                                    acc[r * LANES + c] = acc[r * LANES + c] + T.Cast(
                                        "int32", A[mb * ROWS + r, q]) * T.Cast("int32", B[q, j * LANES + c])
                    for r in range(T.min(m - mb * ROWS, ROWS)):
                        for c in T.vectorized(LANES):
                            C[mb * ROWS + r, j * LANES + c] = acc[r * LANES + c]

    return kernel


def _static(v: Any) -> int | None:
    return int(v.value) if isinstance(v, tirx.IntImm) else (v if isinstance(v, int) else None)


def emit_matmul(ctx: Any, a: relax.Expr, b: relax.Expr) -> relax.Expr | None:
    """``a @ b`` in int32 through a hand-written kernel, or None to use Relax's matmul."""
    from .relax_builder import dtype_of, op, scalar, shape_of

    sa, sb = shape_of(a), shape_of(b)
    if len(sa) != 2 or len(sb) != 2 or dtype_of(b) != "int8" or dtype_of(a) not in ("uint8", "int8"):
        return None
    k, n = _static(sb[0]), _static(sb[1])
    if k is None or n is None or k == 0 or n == 0:
        return None
    m = sa[0]
    nb = -(-n // LANES)
    npad = nb * LANES
    bpad = b if npad == n else op.concat([b, relax.const(np.zeros((k, npad - n), np.int8), "int8")], axis=1)
    k4, kbase = k // 4, 4 * (k // 4)
    at = dtype_of(a)
    kind = ctx.options.gemm_kind if k4 > 0 else "generic"
    if kind in ("vnni", "sdot"):
        bmain = op.strided_slice(bpad, axes=[0], begin=[0], end=[kbase])
        bp = op.permute_dims(op.reshape(bmain, [k4, 4, nb, LANES]), [2, 0, 3, 1])  # [nb, k4, 16, 4]
        if kbase < k:
            bt = op.strided_slice(bpad, axes=[0], begin=[kbase], end=[k])
        else:
            bt = relax.const(np.zeros((1, npad), np.int8), "int8")
        make = vnni_kernel if kind == "vnni" else sdot_kernel
        out = ctx.call_tir((f"gemm_{kind}", k, nb, at), lambda: make(k, nb, at), [a, bp, bt], [m, npad], "int32")
        flipped = (kind == "vnni") == (at == "int8")  # the kernel computed sum (a -/+ 128) b on [0, kbase)
        if flipped:
            colsum = op.sum(op.astype(bmain, "int32"), axis=[0], keepdims=True)  # constant-folded
            # vnni on s8 computed (a + 128): subtract; sdot on u8 computed (a - 128): add back.
            corr = scalar(-128 if kind == "vnni" else 128, "int32")
            out = op.add(out, op.multiply(colsum, corr))
    else:
        out = ctx.call_tir(("gemm_generic", k, nb, at), lambda: generic_kernel(k, nb, at), [a, bpad], [m, npad],
                           "int32")
    if npad != n:
        out = op.strided_slice(out, axes=[1], begin=[0], end=[n])
    return out
