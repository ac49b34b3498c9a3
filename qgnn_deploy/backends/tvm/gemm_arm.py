"""AArch64 int8 GEMM kernels: NEON widening (no ``+dotprod``), ``sdot`` (``+dotprod``), ``smmla`` (``+i8mm``).

Same contract as :mod:`.gemm`: ``C[M,N] (int32) = A[M,K] (u8 or s8) x B[K,N] (s8)``, zero points excluded,
M symbolic, B a constant repacked by constant-folded Relax ops.  Which kernel a preset gets is decided by
:func:`arm_gemm_kind` (the ``llvm-mca`` estimates in ``examples/results/arm_gemm_llvm_mca.md`` back the choice).

* ``neon`` (any ARMv8-A, e.g. Cortex-A53/A72): the gemmlowp/ruy scheme.  ``smull`` multiplies 8 s8 pairs into
  int16, ``smlal`` adds a second product into the same int16 lane, ``sadalp`` adds adjacent int16 lanes into the
  int32 accumulator.  Lane pairs hold (column c, k) and (column c, k+1), so one ``sadalp`` finishes 2 k per
  product.  Two products per int16 lane are exact only when no product is (-128)*(-128): the smlal form is used
  when the constant B has no -128 (the project's symmetric weights are in [-127, 127]); otherwise each product
  goes straight to ``sadalp`` (``smull``-only form, still exact).  u8 A is flipped to s8 with ``a ^ 0x80``
  (= a - 128) and ``128 * colsum(B)`` is added back, as for SDOT.
* ``sdot`` (``+dotprod``: Cortex-A55/A76/A78, Neoverse N1): 4 rows x 16 columns per k step, so each 64-byte
  B block is loaded once for 4 rows and the 16 accumulators are independent chains (the earlier
  :func:`.gemm.sdot_kernel` ran the rows one after another: half the estimated throughput on N1/V1).
* ``i8mm`` (Armv8.6-A I8MM: Cortex-A710/X2, Neoverse N2/V1, Graviton 3): ``smmla`` (s8 A) / ``usmmla`` (u8 A,
  no flip needed) multiply a 2x8 block of A by an 8x2 block of B into a 2x2 int32 block: 32 MACs an instruction.
  Two rows of A are interleaved in-register; B is packed ``[N/16, K/8, 16, 8]`` (two columns per q register).

Rows outside M in the last row block read a clamped (valid) row and are never stored, so there is no
separate tail path; the K tails (K % 4 or K % 2 for neon, K % 4 for sdot, K % 8 for i8mm) are multiplied
exactly in int32.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tvm
from tvm import relax, tirx
from tvm.script import tirx as T

from .gemm_common import _SCHEDULED, ACC_SCOPE, FLIP, LANES, ROWS
from .relax_ops import dtype_of, op, scalar

FLIP16 = -32640  # 0x8080 as int16: xor flips the sign bit of 2 packed bytes (a - 128 for u8 a)
ARM_KINDS = ("neon", "sdot", "i8mm")  # kernels this module emits (gemm.sdot_kernel: the 1-row SDOT before)
ARM_KERNEL_NAMES = {"neon": "NEON smull/smlal+sadalp", "sdot": "SDOT", "i8mm": "I8MM smmla/usmmla"}

_SMULL = "llvm.aarch64.neon.smull.v8i16"
_SADDLP = "llvm.aarch64.neon.saddlp.v4i32.v8i16"


def neon_kernel(k: int, nb: int, a_dtype: str, products: int) -> tirx.PrimFunc:
    """NEON widening GEMM: ``products`` (1 or 2) ``smull``/``smlal`` k-pairs per int16 lane, then ``sadalp``.

    Bp is ``[nb, K2, 16, 2]`` (k-pairs of 16 columns), K2 = ``products * (K // (2 * products))``; the rest of K
    is in ``Bt`` and multiplied in int32.
    """
    step = 2 * products
    kq, kbase = k // step, step * (k // step)
    k2 = kbase // 2
    kt = max(k - kbase, 1)
    mask = FLIP16 if a_dtype == "uint8" else 0

    def a_pair(A: Any, row: Any, kp: Any) -> Any:
        """A[row, 2kp:2kp+2] as s8, repeated over 8 bytes (4 columns x 2 k)."""
        return T.reinterpret(
            T.broadcast(
                T.bitwise_xor(T.reinterpret(A.vload([row, kp * 2], a_dtype + "x2"), dtype="int16"), T.int16(mask)), 4
            ),
            dtype="int8x8",
        )

    def prod(A: Any, Bp: Any, row: Any, kp: Any, j: Any, s: Any) -> Any:
        return T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id(_SMULL),
            a_pair(A, row, kp),
            Bp.vload([j, kp, s * 4, 0], "int8x8"),
            dtype="int16x8",
        )

    def lane_sum(A: Any, Bp: Any, row: Any, q: Any, j: Any, s: Any) -> Any:
        """int16x8 sum of ``products`` k-pairs (smull, then smlal)."""
        total = prod(A, Bp, row, q * products, j, s)
        for p in range(1, products):
            total = total + prod(A, Bp, row, q * products + p, j, s)
        return total

    @T.prim_func(private=True, s_tir=True)
    def kernel(a_h: T.handle, bp_h: T.handle, bt_h: T.handle, c_h: T.handle):
        T.func_attr(_SCHEDULED)
        m = T.int64()
        A = T.match_buffer(a_h, (m, k), a_dtype)
        Bp = T.match_buffer(bp_h, (nb, k2, LANES, 2), "int8")
        Bt = T.match_buffer(bt_h, (kt, nb * LANES), "int8")
        C = T.match_buffer(c_h, (m, nb * LANES), "int32")
        with T.sblock("root"):
            for mb in T.parallel((m + ROWS - 1) // ROWS):
                for j in range(nb):
                    acc = T.decl_buffer((ROWS * LANES,), "int32", scope=ACC_SCOPE)
                    for r in T.unroll(ROWS):
                        acc[T.ramp(r * LANES, 1, LANES)] = T.broadcast(T.int32(0), LANES)
                    for q in range(kq):
                        for r in T.unroll(ROWS):
                            for s in T.unroll(4):
                                acc[T.ramp(r * LANES + s * 4, 1, 4)] = acc[
                                    T.ramp(r * LANES + s * 4, 1, 4)
                                ] + T.call_llvm_pure_intrin(
                                    T.llvm_lookup_intrinsic_id(_SADDLP),
                                    lane_sum(A, Bp, T.min(mb * ROWS + r, m - 1), q, j, s),
                                    dtype="int32x4",
                                )
                    for r in T.unroll(ROWS):
                        if mb * ROWS + r < m:
                            for t in range(k - kbase):
                                for c in T.vectorized(LANES):
                                    acc[r * LANES + c] = acc[r * LANES + c] + T.Cast(
                                        "int32", A[mb * ROWS + r, kbase + t]
                                    ) * T.Cast("int32", Bt[t, j * LANES + c])
                            for c in T.vectorized(LANES):
                                C[mb * ROWS + r, j * LANES + c] = acc[r * LANES + c]

    return kernel


def sdot_rows_kernel(k: int, nb: int, a_dtype: str) -> tirx.PrimFunc:
    """``sdot`` GEMM with the k loop outside the 4 rows: each 64-byte B block is loaded once for 4 rows and the
    16 accumulators form 16 independent chains (gemm.sdot_kernel runs the rows one after another).

    Bp is ``[nb, K/4, 16, 4]``; u8 A is flipped to s8 (``a ^ 0x80``), the caller adds ``128 * colsum(B)``.
    """
    k4, kbase = k // 4, 4 * (k // 4)
    kt = max(k - kbase, 1)
    mask = FLIP if a_dtype == "uint8" else 0

    def a_quad(A: Any, row: Any, q: Any) -> Any:
        """A[row, 4q:4q+4] as s8, repeated over 16 bytes."""
        return T.reinterpret(
            T.broadcast(
                T.bitwise_xor(T.reinterpret(A.vload([row, q * 4], a_dtype + "x4"), dtype="int32"), T.int32(mask)), 4
            ),
            dtype="int8x16",
        )

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
                    acc = T.decl_buffer((ROWS * LANES,), "int32", scope=ACC_SCOPE)
                    for r in T.unroll(ROWS):
                        acc[T.ramp(r * LANES, 1, LANES)] = T.broadcast(T.int32(0), LANES)
                    for q in range(k4):
                        for r in T.unroll(ROWS):
                            for s in T.unroll(4):
                                acc[T.ramp(r * LANES + s * 4, 1, 4)] = T.call_llvm_pure_intrin(
                                    T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.sdot.v4i32.v16i8"),
                                    acc[T.ramp(r * LANES + s * 4, 1, 4)],
                                    a_quad(A, T.min(mb * ROWS + r, m - 1), q),
                                    Bp.vload([j, q, s * 4, 0], "int8x16"),
                                    dtype="int32x4",
                                )
                    for r in T.unroll(ROWS):
                        if mb * ROWS + r < m:
                            for t in range(k - kbase):
                                for c in T.vectorized(LANES):
                                    acc[r * LANES + c] = acc[r * LANES + c] + T.Cast(
                                        "int32", A[mb * ROWS + r, kbase + t]
                                    ) * T.Cast("int32", Bt[t, j * LANES + c])
                            for c in T.vectorized(LANES):
                                C[mb * ROWS + r, j * LANES + c] = acc[r * LANES + c]

    return kernel


def i8mm_kernel(k: int, nb: int, a_dtype: str) -> tirx.PrimFunc:
    """``smmla``/``usmmla`` GEMM: 4 rows (2 row pairs) x 16 columns (8 column pairs) of 2x2 int32 blocks.

    The accumulator holds block (pair p, column pair c) at ``p*32 + c*4``: [C[2p,2c], C[2p,2c+1], C[2p+1,2c],
    C[2p+1,2c+1]].
    """
    k8, kbase = k // 8, 8 * (k // 8)
    kt = max(k - kbase, 1)
    intrin = "llvm.aarch64.neon.usmmla.v4i32.v16i8" if a_dtype == "uint8" else "llvm.aarch64.neon.smmla.v4i32.v16i8"

    def a_rows(A: Any, row0: Any, row1: Any, t: Any) -> Any:
        """A[row0, 8t:8t+8] then A[row1, 8t:8t+8] in one 16-byte vector (the 2x8 operand)."""
        return T.reinterpret(
            tirx.Shuffle(
                [
                    T.reinterpret(A.vload([row0, t * 8], a_dtype + "x8"), dtype="int64"),
                    T.reinterpret(A.vload([row1, t * 8], a_dtype + "x8"), dtype="int64"),
                ],
                [0, 1],
            ),
            dtype="int8x16",
        )

    @T.prim_func(private=True, s_tir=True)
    def kernel(a_h: T.handle, bp_h: T.handle, bt_h: T.handle, c_h: T.handle):
        T.func_attr(_SCHEDULED)
        m = T.int64()
        A = T.match_buffer(a_h, (m, k), a_dtype)
        Bp = T.match_buffer(bp_h, (nb, k8, LANES, 8), "int8")
        Bt = T.match_buffer(bt_h, (kt, nb * LANES), "int8")
        C = T.match_buffer(c_h, (m, nb * LANES), "int32")
        with T.sblock("root"):
            for mb in T.parallel((m + ROWS - 1) // ROWS):
                for j in range(nb):
                    acc = T.decl_buffer((ROWS * LANES,), "int32", scope=ACC_SCOPE)
                    for r in T.unroll(ROWS):
                        acc[T.ramp(r * LANES, 1, LANES)] = T.broadcast(T.int32(0), LANES)
                    for t in range(k8):
                        for p in T.unroll(ROWS // 2):
                            for c in T.unroll(LANES // 2):
                                acc[T.ramp(p * 32 + c * 4, 1, 4)] = T.call_llvm_pure_intrin(
                                    T.llvm_lookup_intrinsic_id(intrin),
                                    acc[T.ramp(p * 32 + c * 4, 1, 4)],
                                    a_rows(A, T.min(mb * ROWS + 2 * p, m - 1), T.min(mb * ROWS + 2 * p + 1, m - 1), t),
                                    Bp.vload([j, t, c * 2, 0], "int8x16"),
                                    dtype="int32x4",
                                )
                    for r in T.unroll(ROWS):
                        if mb * ROWS + r < m:
                            for t2 in range(k - kbase):
                                for c in T.unroll(LANES):
                                    acc[(r // 2) * 32 + (c // 2) * 4 + (r % 2) * 2 + c % 2] = acc[
                                        (r // 2) * 32 + (c // 2) * 4 + (r % 2) * 2 + c % 2
                                    ] + T.Cast("int32", A[mb * ROWS + r, kbase + t2]) * T.Cast(
                                        "int32", Bt[t2, j * LANES + c]
                                    )
                            for c in T.unroll(LANES):
                                C[mb * ROWS + r, j * LANES + c] = acc[
                                    (r // 2) * 32 + (c // 2) * 4 + (r % 2) * 2 + c % 2
                                ]

    return kernel


def smlal_safe(b: relax.Expr) -> bool:
    """Whether two int8 products of B's entries always fit an int16 lane: B is a constant without -128."""
    value = getattr(b, "value", None) if isinstance(b, tvm.ir.expr.Constant) else None
    return hasattr(value, "numpy") and int(value.numpy().min(initial=0)) > -128


def emit_arm_matmul(ctx: Any, kind: str, a: relax.Expr, b: relax.Expr, k: int, n: int) -> relax.Expr:
    """``a @ b`` in int32 with the ``neon``, ``sdot`` or ``i8mm`` kernel (``k >= 4`` and ``n`` static; a u8/s8)."""

    m = a.ty.shape.values[0]
    at = dtype_of(a)
    nb = -(-n // LANES)
    npad = nb * LANES
    bpad = b if npad == n else op.concat([b, relax.const(np.zeros((k, npad - n), np.int8), "int8")], axis=1)
    if kind == "i8mm" and k < 8:  # too short for one 8-deep smmla step
        kind = "neon"
    products = 2 if kind == "neon" and smlal_safe(b) else 1
    step = {"i8mm": 8, "sdot": 4}.get(kind, 2 * products)
    kbase = step * (k // step)
    bmain = op.strided_slice(bpad, axes=[0], begin=[0], end=[kbase])
    bt = (
        op.strided_slice(bpad, axes=[0], begin=[kbase], end=[k])
        if kbase < k
        else relax.const(np.zeros((1, npad), np.int8), "int8")
    )
    depth = 2 if kind == "neon" else step  # k per packed group: B is [nb, kbase / depth, 16, depth]
    bp = op.permute_dims(op.reshape(bmain, [kbase // depth, depth, nb, LANES]), [2, 0, 3, 1])
    if kind == "i8mm":
        key, make = ("gemm_i8mm", k, nb, at), lambda: i8mm_kernel(k, nb, at)
    elif kind == "sdot":
        key, make = ("gemm_sdot4", k, nb, at), lambda: sdot_rows_kernel(k, nb, at)
    else:
        key, make = (f"gemm_neon{products}", k, nb, at), lambda: neon_kernel(k, nb, at, products)
    out = ctx.call_tir(key, make, [a, bp, bt], [m, npad], "int32")
    if at == "uint8" and kind != "i8mm":  # the kernel computed sum (a - 128) b on [0, kbase): add 128 * colsum
        colsum = op.sum(op.astype(bmain, "int32"), axis=[0], keepdims=True)  # constant-folded
        out = op.add(out, op.multiply(colsum, scalar(128, "int32")))
    if npad != n:
        out = op.strided_slice(out, axes=[1], begin=[0], end=[n])
    return out


def arm_gemm_kind(preset: Any) -> str:
    """The GEMM kernel for an aarch64 preset: ``i8mm`` > ``sdot`` > ``neon`` (see the llvm-mca table)."""
    feats = set(preset.features) | {str(f).lstrip("+") for f in preset.tvm_target.get("mattr", ())}
    if "i8mm" in feats:
        return "i8mm"
    if "dotprod" in feats:
        return "sdot"
    return "neon"
