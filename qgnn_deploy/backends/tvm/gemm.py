"""Hand-scheduled int8 GEMM kernels: ``C[M,N] (int32) = A[M,K] (u8) x B[K,N] (s8)``, zero points excluded.

Why hand-written: the stock CPU pipeline emits a serial scalar triple loop for
``matmul`` (~30 ms for Cora's 2708x1433x16), and meta-schedule needs static
shapes.  These kernels keep M (the node count) symbolic and use the CPU's
dot-product instruction directly:

* x86 with AVX-512 VNNI: ``vpdpbusd`` (u8 x s8, 4-term dot products into 16 int32 lanes);
* AArch64 with ``+dotprod``: ``sdot`` (s8 x s8); u8 activations are flipped to s8 with
  ``a ^ 0x80`` (= a - 128) in-register and ``128 * colsum(B)`` is added back (exact);
* otherwise: a 4-row register-blocked loop vectorised over 16 output columns.

B (a constant in every folded model) is repacked once at compile time (the
Relax ops that pack it are constant-folded) into ``[N/16, K/4, 16, 4]`` so one
64-byte load feeds one instruction.  Rows are processed 4 at a time (4
independent accumulator chains hide the instruction latency) and row blocks run
in parallel: deterministic, since every output element has one owner.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tvm import relax, tirx
from tvm.script import tirx as T

_SCHEDULED = {"tir.noalias": True, "tirx.is_scheduled": True}
ROWS = 4  # rows per register block
LANES = 16  # int32 outputs per block (one zmm, or four NEON q registers)


def _dot_kernel(k: int, nb: int, kind: str) -> tirx.PrimFunc:
    """``kind``: "vnni" (x86) or "sdot" (AArch64).  C is [M, nb*16]; A's K tail uses the padded ``Bt``."""
    k4 = k // 4
    kt = max(k - 4 * k4, 1)
    kbase = 4 * k4
    if kind == "vnni":
        intrin = "llvm.x86.avx512.vpdpbusd.512"
    else:
        intrin = "llvm.aarch64.neon.sdot.v4i32.v16i8"
    flip = kind == "sdot"  # u8 -> s8 via xor 0x80 (a - 128)

    @T.prim_func(private=True, s_tir=True)
    def kernel(a_h: T.handle, bp_h: T.handle, bt_h: T.handle, c_h: T.handle):
        T.func_attr(_SCHEDULED)
        m = T.int64()
        A = T.match_buffer(a_h, (m, k), "uint8")
        Bp = T.match_buffer(bp_h, (nb, k4, LANES, 4), "int8")
        Bt = T.match_buffer(bt_h, (kt, nb * LANES), "int8")
        C = T.match_buffer(c_h, (m, nb * LANES), "int32")
        with T.sblock("root"):
            for mb in T.parallel((m + ROWS - 1) // ROWS):
                for j in range(nb):
                    acc = T.decl_buffer((ROWS * LANES,), "int32", scope="local")
                    for r in T.unroll(ROWS):
                        acc[T.ramp(T.int64(r * LANES), 1, LANES)] = T.broadcast(T.int32(0), LANES)
                    if mb * ROWS + ROWS <= m:
                        for q in range(k4):
                            for r in T.unroll(ROWS):
                                _dot_step(A, Bp, acc, mb * ROWS + r, j, q, r)
                    else:
                        for r in range(m - mb * ROWS):
                            for q in range(k4):
                                _dot_step(A, Bp, acc, mb * ROWS + r, j, q, r)
                    for r in range(T.min(m - mb * ROWS, ROWS)):
                        for t in range(k - kbase):
                            for c in T.vectorized(LANES):
                                acc[r * LANES + c] = acc[r * LANES + c] + T.Cast(
                                    "int32", _a_val(A[mb * ROWS + r, kbase + t])) * T.Cast(
                                    "int32", Bt[t, j * LANES + c])
                        for c in T.vectorized(LANES):
                            C[mb * ROWS + r, j * LANES + c] = acc[r * LANES + c]

    del intrin, flip
    return kernel


# TVMScript macros: spliced into the kernel above at parse time.
@T.macro(hygienic=False)
def _dot_step(A, Bp, acc, row, j, q, r):  # noqa: ANN001 - TVMScript macro
    acc[T.ramp(T.int64(r * LANES), 1, LANES)] = _DOT(  # noqa: F821
        acc[T.ramp(T.int64(r * LANES), 1, LANES)],
        T.reinterpret("int32", A.vload([row, q * 4], "uint8x4")),
        Bp.vload([j, q, 0, 0], "int8x64"))


def _a_val(v: Any) -> Any:
    return v
