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
* x86 without AVX-512 VNNI: AVX-VNNI, AVX2, AVX-512BW and SSE2 kernels in :mod:`.gemm_x86`;
* otherwise: a 4-row register-blocked loop vectorised over 16 output columns.

B (a constant in every folded model) is repacked by Relax ops that are
constant-folded at compile time into ``[N/16, K/4, 16, 4]``, so one 64-byte
load feeds one instruction.  Rows are processed 4 at a time (8 with VNNI:
independent accumulator chains hide the instruction latency) and row blocks run in
parallel: deterministic, since every output element has one owner.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tvm import relax, tirx
from tvm.script import tirx as T

from . import gemm_x86
from .gemm_common import _SCHEDULED, ACC_SCOPE, FLIP, LANES, ROWS  # noqa: F401  (re-exported)
from .relax_ops import dtype_of, op, scalar, shape_of

VNNI_ROWS = 8  # x86: 8 independent vpdpbusd chains hide its latency (4 left the 2708x1433 GEMM ~15% slower)
PANEL_BLOCKS = 16  # row blocks per parallel task of the fused quantize GEMM (one panel workspace per task)


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
            for mb in T.parallel((m + VNNI_ROWS - 1) // VNNI_ROWS):
                for j in range(nb):
                    acc = T.decl_buffer((VNNI_ROWS * LANES,), "int32", scope=ACC_SCOPE)
                    for r in T.unroll(VNNI_ROWS):
                        acc[T.ramp(r * LANES, 1, LANES)] = T.broadcast(T.int32(0), LANES)
                    if mb * VNNI_ROWS + VNNI_ROWS <= m:
                        for q in range(k4):
                            for r in T.unroll(VNNI_ROWS):
                                acc[T.ramp(r * LANES, 1, LANES)] = T.call_llvm_pure_intrin(
                                    T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
                                    acc[T.ramp(r * LANES, 1, LANES)],
                                    T.reinterpret(T.broadcast(T.bitwise_xor(T.reinterpret(
                                        A.vload([mb * VNNI_ROWS + r, q * 4], a_dtype + "x4"), dtype="int32"),
                                        T.int32(mask)), LANES), dtype="int8x64"),
                                    Bp.vload([j, q, 0, 0], "int8x64"),
                                    dtype="int32x16")
                    else:
                        for r in range(m - mb * VNNI_ROWS):
                            for q in range(k4):
                                acc[T.ramp(r * LANES, 1, LANES)] = T.call_llvm_pure_intrin(
                                    T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
                                    acc[T.ramp(r * LANES, 1, LANES)],
                                    T.reinterpret(T.broadcast(T.bitwise_xor(T.reinterpret(
                                        A.vload([mb * VNNI_ROWS + r, q * 4], a_dtype + "x4"), dtype="int32"),
                                        T.int32(mask)), LANES), dtype="int8x64"),
                                    Bp.vload([j, q, 0, 0], "int8x64"),
                                    dtype="int32x16")
                    for r in range(T.min(m - mb * VNNI_ROWS, VNNI_ROWS)):
                        for t in range(k - kbase):
                            for c in T.vectorized(LANES):
                                acc[r * LANES + c] = acc[r * LANES + c] + T.Cast(
                                    "int32", A[mb * VNNI_ROWS + r, kbase + t]) * T.Cast("int32", Bt[t, j * LANES + c])
                        for c in T.vectorized(LANES):
                            C[mb * VNNI_ROWS + r, j * LANES + c] = acc[r * LANES + c]

    return kernel


def vnni_quant_kernel(k: int, a_dtype: str, scale: float, zero_point: int, qmin: int, qmax: int) -> tirx.PrimFunc:
    """``quantize`` fused into the A-panel packing of the VNNI GEMM, for N <= 16 (one zmm of outputs per row).

    A is the FP32 input [M, K].  Each 8-row block is first quantized into an [8, K] panel in a per-task
    workspace (the same float32 ops as the ``quantize`` handler: divide, round-half-even, + zero point,
    clip, cast, so the codes are identical; 16-lane vectors), then multiplied from
    there while it sits in L1: the uint8 copy of A never goes to memory.  (Quantizing 4 columns right
    before each ``vpdpbusd`` instead makes LLVM split the divide into 4-lane pieces: 10x slower.)
    """
    k4, kbase = k // 4, 4 * (k // 4)
    kt = max(k - kbase, 1)
    mask = FLIP if a_dtype == "int8" else 0
    scale32 = float(np.float32(scale))  # the float32 constant the quantize handler divides by
    zp, lo, hi = float(zero_point), float(qmin), float(qmax)

    @T.prim_func(private=True, s_tir=True)
    def kernel(x_h: T.handle, bp_h: T.handle, bt_h: T.handle, c_h: T.handle):
        T.func_attr(_SCHEDULED)
        m = T.int64()
        X = T.match_buffer(x_h, (m, k), "float32")
        Bp = T.match_buffer(bp_h, (1, k4, LANES, 4), "int8")
        Bt = T.match_buffer(bt_h, (kt, LANES), "int8")
        C = T.match_buffer(c_h, (m, LANES), "int32")
        with T.sblock("root"):
            for p in T.parallel((m + VNNI_ROWS * PANEL_BLOCKS - 1) // (VNNI_ROWS * PANEL_BLOCKS)):
                panel = T.decl_buffer((VNNI_ROWS * k,), a_dtype, scope="global")
                acc = T.decl_buffer((VNNI_ROWS * LANES,), "int32", scope=ACC_SCOPE)
                for b in range(PANEL_BLOCKS):
                    if (p * PANEL_BLOCKS + b) * VNNI_ROWS < m:
                        row0 = (p * PANEL_BLOCKS + b) * VNNI_ROWS
                        for r in range(T.min(m - row0, VNNI_ROWS)):
                            for c16 in range(k // 16):  # explicit 16-lane vectors (TIR scalarizes nearbyint)
                                panel[T.ramp(r * k + c16 * 16, 1, 16)] = T.Cast(a_dtype + "x16", T.min(T.max(
                                    T.nearbyint(X.vload([row0 + r, c16 * 16], "float32x16")
                                                / T.broadcast(T.float32(scale32), 16))
                                    + T.broadcast(T.float32(zp), 16), T.broadcast(T.float32(lo), 16)),
                                    T.broadcast(T.float32(hi), 16)))
                            for c in range(k - k // 16 * 16):
                                panel[r * k + k // 16 * 16 + c] = T.Cast(a_dtype, T.min(T.max(
                                    T.nearbyint(X[row0 + r, k // 16 * 16 + c] / T.float32(scale32))
                                    + T.float32(zp), T.float32(lo)), T.float32(hi)))
                        for r in T.unroll(VNNI_ROWS):
                            acc[T.ramp(r * LANES, 1, LANES)] = T.broadcast(T.int32(0), LANES)
                        if row0 + VNNI_ROWS <= m:
                            for q in range(k4):
                                for r in T.unroll(VNNI_ROWS):
                                    acc[T.ramp(r * LANES, 1, LANES)] = T.call_llvm_pure_intrin(
                                        T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
                                        acc[T.ramp(r * LANES, 1, LANES)],
                                        T.reinterpret(T.broadcast(T.bitwise_xor(T.reinterpret(
                                            panel.vload([r * k + q * 4], a_dtype + "x4"), dtype="int32"),
                                            T.int32(mask)), LANES), dtype="int8x64"),
                                        Bp.vload([0, q, 0, 0], "int8x64"),
                                        dtype="int32x16")
                        else:
                            for r in range(m - row0):
                                for q in range(k4):
                                    acc[T.ramp(r * LANES, 1, LANES)] = T.call_llvm_pure_intrin(
                                        T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
                                        acc[T.ramp(r * LANES, 1, LANES)],
                                        T.reinterpret(T.broadcast(T.bitwise_xor(T.reinterpret(
                                            panel.vload([r * k + q * 4], a_dtype + "x4"), dtype="int32"),
                                            T.int32(mask)), LANES), dtype="int8x64"),
                                        Bp.vload([0, q, 0, 0], "int8x64"),
                                        dtype="int32x16")
                        for r in range(T.min(m - row0, VNNI_ROWS)):
                            for t in range(k - kbase):
                                for c in T.vectorized(LANES):
                                    acc[r * LANES + c] = acc[r * LANES + c] + T.Cast(
                                        "int32", panel[r * k + kbase + t]) * T.Cast("int32", Bt[t, c])
                            for c in T.vectorized(LANES):
                                C[row0 + r, c] = acc[r * LANES + c]

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
                    acc = T.decl_buffer((ROWS * LANES,), "int32", scope=ACC_SCOPE)
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
                    acc = T.decl_buffer((ROWS * LANES,), "int32", scope=ACC_SCOPE)
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
    sa, sb = shape_of(a), shape_of(b)
    if len(sa) != 2 or len(sb) != 2 or dtype_of(b) != "int8" or dtype_of(a) not in ("uint8", "int8"):
        return None
    k, n = _static(sb[0]), _static(sb[1])
    if k is None or n is None or k == 0 or n == 0:
        return None
    if ctx.options.gemm_kind in ("neon", "sdot", "i8mm") and k >= 4:  # AArch64 kernels: gemm_arm.py
        from .gemm_arm import emit_arm_matmul

        return emit_arm_matmul(ctx, ctx.options.gemm_kind, a, b, k, n)
    m = sa[0]
    nb = -(-n // LANES)
    npad = nb * LANES
    bpad = b if npad == n else op.concat([b, relax.const(np.zeros((k, npad - n), np.int8), "int8")], axis=1)
    k4, kbase = k // 4, 4 * (k // 4)
    at = dtype_of(a)
    kind = ctx.options.gemm_kind if k4 > 0 else "generic"
    if kind in gemm_x86.KINDS:  # x86 below AVX-512 VNNI (K padded inside, no K // 4 restriction)
        out = gemm_x86.emit_matmul(ctx, kind, a, bpad, k, nb)
    elif kind in ("vnni", "sdot"):
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


def emit_quant_matmul(ctx: Any, x: relax.Expr, b: relax.Expr, qattrs: dict[str, Any]) -> relax.Expr:
    """``quantize(x) @ b`` in int32 with the quantize fused into the VNNI kernel (see :func:`fusable_quant`)."""
    k, n = (int(d) for d in (_static(v) for v in shape_of(b)))
    at = str(qattrs["dtype"])
    if ctx.options.gemm_kind in gemm_x86.QUANT_KINDS:
        bpad = b if n == LANES else op.concat([b, relax.const(np.zeros((k, LANES - n), np.int8), "int8")], axis=1)
        out = gemm_x86.emit_quant_matmul(ctx, ctx.options.gemm_kind, x, bpad, k, qattrs)
        return out if n == LANES else op.strided_slice(out, axes=[1], begin=[0], end=[n])
    k4, kbase = k // 4, 4 * (k // 4)
    bpad = b if n == LANES else op.concat([b, relax.const(np.zeros((k, LANES - n), np.int8), "int8")], axis=1)
    bmain = op.strided_slice(bpad, axes=[0], begin=[0], end=[kbase])
    bp = op.permute_dims(op.reshape(bmain, [k4, 4, 1, LANES]), [2, 0, 3, 1])  # [1, k4, 16, 4]
    if kbase < k:
        bt = op.strided_slice(bpad, axes=[0], begin=[kbase], end=[k])
    else:
        bt = relax.const(np.zeros((1, LANES), np.int8), "int8")
    if dtype_of(x) != "float32":
        x = op.astype(x, "float32")
    params = (float(qattrs["scale"]), int(qattrs["zero_point"]), int(qattrs["qmin"]), int(qattrs["qmax"]))
    key = ("gemm_vnni_quant", k, at, *params)
    out = ctx.call_tir(key, lambda: vnni_quant_kernel(k, at, *params), [x, bp, bt], [shape_of(x)[0], LANES],
                       "int32")
    if at == "int8":  # the kernel computed sum (a + 128) b on [0, kbase)
        colsum = op.sum(op.astype(bmain, "int32"), axis=[0], keepdims=True)
        out = op.add(out, op.multiply(colsum, scalar(-128, "int32")))
    if n != LANES:
        out = op.strided_slice(out, axes=[1], begin=[0], end=[n])
    return out


def emit_matmul_requant(ctx: Any, mm: Any, rq_node: Any, constants: Any) -> relax.Expr | None:
    """``requantize(matmul)`` as one x86 GEMM kernel with a requantize epilogue (``fusion.requantize_into_gemm``
    planned it; ``constants(n)`` is its ``requant_epilogue_constants`` for n columns); None when the operands
    do not allow it (the caller then emits both nodes)."""
    q = ctx.graph.producers().get(mm.inputs[0]) if mm.inputs[0] in ctx.quant_fused else None
    a = ctx.arg(q, 0) if q is not None else ctx.arg(mm, 0)
    b = ctx.arg(mm, 1)
    sb = shape_of(b)
    if len(sb) != 2 or dtype_of(b) != "int8" or (q is None and len(shape_of(a)) != 2):
        return None
    k, n = _static(sb[0]), _static(sb[1])
    if k is None or n is None or k < 4 or n == 0:
        return None
    rq = constants(n)
    if rq is None:
        return None
    nb = -(-n // LANES)
    npad = nb * LANES
    info = np.iinfo(rq_node.attrs["dtype"])
    epi = gemm_x86.Epilogue(int(rq_node.attrs["zero_point"]), int(rq_node.attrs.get("qmin", info.min)),
                            int(rq_node.attrs.get("qmax", info.max)), str(rq_node.attrs["dtype"]), n)
    bpad = b if npad == n else op.concat([b, relax.const(np.zeros((k, npad - n), np.int8), "int8")], axis=1)
    rq = np.concatenate([rq, np.zeros((3, npad - n), np.int64)], axis=1)
    return gemm_x86.emit_matmul_requant(ctx, ctx.options.gemm_kind, a, bpad, k, nb, rq, epi,
                                        None if q is None else q.attrs)


def fusable_quant(weight_shape: tuple[int, ...] | None, attrs: dict[str, Any], gemm_kind: str) -> bool:
    """Whether a ``quantize`` feeding a matmul with this constant weight can run inside the GEMM kernel."""
    if gemm_kind not in ("vnni", *gemm_x86.QUANT_KINDS) or weight_shape is None or len(weight_shape) != 2:
        return False
    k, n = weight_shape
    return k >= 16 and 1 <= n <= LANES and str(attrs.get("dtype")) in ("uint8", "int8") and \
        int(attrs.get("b_zero_point", 0)) == 0
