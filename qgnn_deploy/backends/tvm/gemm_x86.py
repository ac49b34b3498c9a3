"""x86 int8 GEMM kernels below AVX-512 VNNI: ``C[M,N] (int32) = A[M,K] (u8/s8) x B[K,N] (s8)``, exact.

Instances of the GEMM skeleton (:mod:`.gemm_skeleton`: contract and schedule), one :class:`Scheme` per ISA
tier, the instructions in :func:`_step`:

* ``avx2`` / ``sse2`` / ``avx512bw`` ("madd16"): A and B widened to int16 and multiplied with ``vpmaddwd``
  (two int16 products summed into an int32 lane: exact for any u8/s8 input).  One kernel, three vector widths
  (ymm / xmm / zmm).  A is widened once per row block into an int16 panel (``vpmovzxbw``), so the inner loop is
  one ``vpbroadcastd`` from the panel, 16/W ``vpmaddwd`` and ``vpaddd`` per row and K pair;
* ``avx2-ubsw``: the other exact AVX2 scheme, kept for the measurement in ``examples/results/isa_x86_avx2.md``:
  ``vpmaddubsw`` saturates int16 (255*127*2 > 32767), so B is split at compile time into 6-bit low halves
  ``b & 63`` (255*63*2 = 32130 fits) and high parts ``b >> 6`` in [-2, 1]; each half goes through
  ``vpmaddubsw`` and ``vpmaddwd`` by 1 / 64 into int32: twice the multiply-port work of madd16, so slower;
* ``avxvnni``: AVX-VNNI ``vpdpbusd`` on ymm (VEX encoded, Alder Lake and later client CPUs, Zen 5): as the
  AVX-512 VNNI kernel with 8 int32 lanes per register (s8 A is flipped to a + 128, ``128 * colsum(B)`` is
  subtracted by the caller).

K is padded (zero rows of B, zero columns of the panel) to a multiple of the kernel's K step, so there is no
tail loop.  Every kernel reads A through a per-task panel; that also lets the ``quantize`` feeding a GEMM
run inside the panel fill (FP32 input, the same float32 ops as the ``quantize`` handler), so the uint8 copy of
the activations never goes to memory (:func:`emit_quant_matmul`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tvm import relax, tirx
from tvm.script import tirx as T

from .gemm_skeleton import FLIP, LANES, Epilogue, Scheme, gemm_kernel
from .relax_ops import dtype_of, op, scalar, shape_of

PANEL_BLOCKS = 16  # row blocks per parallel task: one panel workspace (a heap allocation) per task


# Register budget (16 ymm/xmm, 32 zmm): rows * 16/width accumulators + 16/width B vectors + one broadcast.
SCHEMES: dict[str, Scheme] = {
    "avx2": Scheme("avx2", 8, 6, 2),  # 12 accumulators + 2 B + 1 (4 rows measured slower, see the results file)
    "sse2": Scheme("sse2", 4, 2, 2),  # 8 accumulators + 4 B + 1
    "avx512bw": Scheme("avx512bw", 16, 8, 2),  # 8 accumulators + 1 B + 1 (of 32 zmm)
    "avx2-ubsw": Scheme("avx2-ubsw", 8, 4, 4, planes=2),
    "avxvnni": Scheme("avxvnni", 8, 6, 4),  # 12 independent vpdpbusd chains hide its 4-5 cycle latency
}
KINDS = tuple(SCHEMES)
QUANT_KINDS = ("avx2", "sse2", "avx512bw", "avxvnni")  # fused quantize supported (N <= 16)
_MADD = {4: "llvm.x86.sse2.pmadd.wd", 8: "llvm.x86.avx2.pmadd.wd", 16: "llvm.x86.avx512.pmaddw.d.512"}
_UBSW = "llvm.x86.avx2.pmadd.ub.sw"
_DPBUSD256 = "llvm.x86.avx512.vpdpbusd.256"  # LLVM emits the VEX form ({vex} vpdpbusd) under +avxvnni


def _padded_k(k: int, kstep: int) -> int:
    return -(-k // kstep) * kstep


def _step(s: Scheme, a_dtype: str) -> Any:
    """``step(acc, panel, off, Bp, j, q, v)``: acc (int32 x width) after K step ``q`` for column vector ``v``;
    ``off`` is the panel offset of this row's K step."""
    w = s.width
    mask = FLIP if a_dtype == "int8" else 0
    if s.kind == "avxvnni":

        def step(acc: Any, panel: Any, off: Any, bp: Any, j: Any, q: Any, v: int) -> Any:
            a4 = T.reinterpret(
                T.broadcast(
                    T.bitwise_xor(T.reinterpret(panel.vload([off], a_dtype + "x4"), dtype="int32"), T.int32(mask)), w
                ),
                dtype=f"int8x{4 * w}",
            )
            return T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(_DPBUSD256),
                acc,
                a4,
                bp.vload([0, j, q, v * w, 0], f"int8x{4 * w}"),
                dtype=f"int32x{w}",
            )

        return step
    if s.kind == "avx2-ubsw":
        ones, sixty_four = T.broadcast(T.int16(1), 2 * w), T.broadcast(T.int16(64), 2 * w)

        def step(acc: Any, panel: Any, off: Any, bp: Any, j: Any, q: Any, v: int) -> Any:
            a4 = T.reinterpret(
                T.broadcast(
                    T.bitwise_xor(T.reinterpret(panel.vload([off], a_dtype + "x4"), dtype="int32"), T.int32(mask)), w
                ),
                dtype=f"int8x{4 * w}",
            )
            lo = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(_UBSW),
                a4,
                bp.vload([0, j, q, v * w, 0], f"int8x{4 * w}"),
                dtype=f"int16x{2 * w}",
            )
            hi = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(_UBSW),
                a4,
                bp.vload([1, j, q, v * w, 0], f"int8x{4 * w}"),
                dtype=f"int16x{2 * w}",
            )
            return (
                acc
                + T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id(_MADD[w]), lo, ones, dtype=f"int32x{w}")
                + T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id(_MADD[w]), hi, sixty_four, dtype=f"int32x{w}")
            )

        return step

    def step(acc: Any, panel: Any, off: Any, bp: Any, j: Any, q: Any, v: int) -> Any:
        a2 = T.reinterpret(
            T.broadcast(T.reinterpret(panel.vload([off], "int16x2"), dtype="int32"), w), dtype=f"int16x{2 * w}"
        )
        return acc + T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id(_MADD[w]),
            a2,
            bp.vload([0, j, q, v * w, 0], f"int16x{2 * w}"),
            dtype=f"int32x{w}",
        )

    return step


def _fill(in_dtype: str, pdt: str, quant: tuple[float, int, int, int] | None) -> tuple[Any, Any]:
    """(16-wide, scalar) panel fill expressions: widen/copy A, or quantize X with the handler's float32 ops."""
    if quant is None:
        return (
            lambda x, i, c: T.Cast(pdt + "x16", x.vload([i, c], in_dtype + "x16")),
            lambda x, i, c: T.Cast(pdt, x[i, c]),
        )
    scale, zp, lo, hi = float(np.float32(quant[0])), float(quant[1]), float(quant[2]), float(quant[3])

    def vec(x: Any, i: Any, c: Any) -> Any:  # explicit 16-lane vectors (TIR scalarizes nearbyint)
        return T.Cast(
            pdt + "x16",
            T.min(
                T.max(
                    T.nearbyint(x.vload([i, c], "float32x16") / T.broadcast(T.float32(scale), 16))
                    + T.broadcast(T.float32(zp), 16),
                    T.broadcast(T.float32(lo), 16),
                ),
                T.broadcast(T.float32(hi), 16),
            ),
        )

    def one(x: Any, i: Any, c: Any) -> Any:
        return T.Cast(
            pdt, T.min(T.max(T.nearbyint(x[i, c] / T.float32(scale)) + T.float32(zp), T.float32(lo)), T.float32(hi))
        )

    return vec, one


def x86_kernel(
    kind: str, k: int, nb: int, a_dtype: str, quant: tuple[float, int, int, int] | None = None,
    epilogue: Epilogue | None = None,
) -> tirx.PrimFunc:
    """The ``kind`` GEMM for A of ``a_dtype`` (or FP32 X quantized to ``a_dtype`` codes when ``quant`` =
    (scale, zero_point, qmin, qmax)); B is pre-packed as ``[planes, nb, Kp/kstep, 16, kstep]``.  With an
    ``epilogue`` the kernel takes the requantize constants after B and writes ``epilogue.dtype`` codes, only the
    ``epilogue.columns`` real columns."""
    s = SCHEMES[kind]
    kq = s.kstep
    pdt = s.panel_dtype or a_dtype
    in_dtype = "float32" if quant is not None else a_dtype
    b_shape = (s.planes, nb, _padded_k(k, kq) // kq, LANES, kq)
    return gemm_kernel(s, _step(s, a_dtype), k, nb, a_dtype, b_shape, "int16" if kq == 2 else "int8",
                       fill=_fill(in_dtype, pdt, quant), in_dtype=in_dtype, epilogue=epilogue,
                       panel_blocks=PANEL_BLOCKS)


def pack_b(kind: str, bpad: relax.Expr, k: int, nb: int) -> relax.Expr:
    """B [K, nb*16] int8 -> ``[planes, nb, Kp/kstep, 16, kstep]`` (constant-folded at compile time)."""

    s = SCHEMES[kind]
    kp = _padded_k(k, s.kstep)
    if kp != k:
        bpad = op.concat([bpad, relax.const(np.zeros((kp - k, nb * LANES), np.int8), "int8")], axis=0)

    def packed(e: relax.Expr) -> relax.Expr:
        t = op.permute_dims(op.reshape(e, [kp // s.kstep, s.kstep, nb, LANES]), [2, 0, 3, 1])
        return op.expand_dims(t, axis=0)

    if s.kind == "avx2-ubsw":
        lo = op.bitwise_and(bpad, scalar(63, "int8"))  # [0, 63]: vpmaddubsw cannot saturate
        hi = op.right_shift(bpad, scalar(6, "int8"))  # [-2, 1]; b = 64 * hi + lo
        return op.concat([packed(lo), packed(hi)], axis=0)
    return packed(op.astype(bpad, "int16") if s.kstep == 2 else bpad)


def _flip_correction(kind: str, a_dtype: str, bpad: relax.Expr, out: relax.Expr) -> relax.Expr:
    """u8-operand kernels computed sum (a + 128) b for s8 A: subtract 128 * colsum(B) (a constant)."""

    if a_dtype != "int8" or SCHEMES[kind].kstep == 2:
        return out
    colsum = op.sum(op.astype(bpad, "int32"), axis=[0], keepdims=True)
    return op.add(out, op.multiply(colsum, scalar(-128, "int32")))


def emit_matmul(ctx: Any, kind: str, a: relax.Expr, bpad: relax.Expr, k: int, nb: int) -> relax.Expr:
    """``a @ bpad`` (N already padded to nb*16) in int32 with the ``kind`` kernel; [M, nb*16]."""

    at = dtype_of(a)
    bp = pack_b(kind, bpad, k, nb)
    out = ctx.call_tir(
        (f"gemm_{kind.replace('-', '_')}", k, nb, at),
        lambda: x86_kernel(kind, k, nb, at),
        [a, bp],
        [shape_of(a)[0], nb * LANES],
        "int32",
    )
    return _flip_correction(kind, at, bpad, out)


def emit_quant_matmul(
    ctx: Any, kind: str, x: relax.Expr, bpad: relax.Expr, k: int, qattrs: dict[str, Any]
) -> relax.Expr:
    """``quantize(x) @ bpad`` (N padded to 16) with the quantize in the panel fill; [M, 16] int32."""

    at = str(qattrs["dtype"])
    if dtype_of(x) != "float32":
        x = op.astype(x, "float32")
    params = (float(qattrs["scale"]), int(qattrs["zero_point"]), int(qattrs["qmin"]), int(qattrs["qmax"]))
    key = (f"gemm_{kind}_quant", k, at, *params)
    out = ctx.call_tir(
        key, lambda: x86_kernel(kind, k, 1, at, params), [x, pack_b(kind, bpad, k, 1)], [shape_of(x)[0], LANES], "int32"
    )
    return _flip_correction(kind, at, bpad, out)


def emit_matmul_requant(
    ctx: Any, kind: str, a: relax.Expr, bpad: relax.Expr, k: int, nb: int, rq: np.ndarray, epi: Epilogue,
    qattrs: dict[str, Any] | None = None,
) -> relax.Expr | None:
    """``requantize(a @ bpad)`` (or of ``quantize(a) @ bpad`` with ``qattrs``) in one kernel: [M, epi.columns] of
    ``epi.dtype``; ``rq`` is :func:`.fusion.requant_epilogue_constants` padded to nb*16 columns.  None when
    the kernel would need the s8 flip correction (u8-operand kinds on s8 A), which must precede the requantize."""
    at = str(qattrs["dtype"]) if qattrs is not None else dtype_of(a)
    if at not in ("uint8", "int8") or (at == "int8" and SCHEMES[kind].kstep != 2):
        return None
    params = None
    if qattrs is not None:
        if kind not in QUANT_KINDS or nb != 1:
            return None
        if dtype_of(a) != "float32":
            a = op.astype(a, "float32")
        params = (float(qattrs["scale"]), int(qattrs["zero_point"]), int(qattrs["qmin"]), int(qattrs["qmax"]))
    key = (f"gemm_{kind.replace('-', '_')}{'_quant' if params else ''}", k, nb, at, *(params or ()), *epi.key())
    return ctx.call_tir(
        key,
        lambda: x86_kernel(kind, k, nb, at, params, epi),
        [a, pack_b(kind, bpad, k, nb), relax.const(np.ascontiguousarray(rq, np.int64), "int64")],
        [shape_of(a)[0], epi.columns],
        epi.dtype,
    )


def x86_gemm_kind(features: tuple[str, ...] | set[str]) -> str:
    """The fastest exact int8 GEMM an x86-64 CPU with these LLVM features runs."""
    f = set(features)
    if "avx512vnni" in f:
        return "vnni"
    if "avxvnni" in f:
        return "avxvnni"
    if "avx512bw" in f:
        return "avx512bw"
    if "avx2" in f:
        return "avx2"
    return "sse2"  # SSE2 is part of the x86-64 baseline
