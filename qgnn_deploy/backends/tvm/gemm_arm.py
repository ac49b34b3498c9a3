"""AArch64 int8 GEMM kernels: NEON widening (no ``+dotprod``), ``sdot`` (``+dotprod``), ``smmla`` (``+i8mm``).

Instances of :mod:`.gemm_skeleton` (contract and schedule there): A read in place, 4 rows x 16 columns a
register block, rows past M in the last block read a clamped (valid) row and are never stored (``"clamp"``:
no separate tail path), the K tail (K % kstep) multiplied exactly in int32.  The instructions are in the step
functions (:func:`_neon_step`, :func:`_sdot_step`, :func:`_i8mm_step`).  Which kernel a preset gets is decided
by :func:`arm_gemm_kind` (the ``llvm-mca`` estimates in ``examples/results/arm_gemm_llvm_mca.md`` back the
choice): ``i8mm`` > ``sdot`` > ``neon``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tvm
from tvm import relax, tirx
from tvm.script import tirx as T

from .gemm_skeleton import FLIP, LANES, ROWS, Scheme, Step, add_colsum, drop_padding, gemm_kernel, pad_columns, split_b
from .relax_ops import dtype_of

FLIP16 = -32640  # 0x8080 as int16: xor flips the sign bit of 2 packed bytes (a - 128 for u8 a)
ARM_KINDS = ("neon", "sdot", "i8mm")  # kernel kinds this module emits (sdot_kernel, the 1-row SDOT before, is not)
ARM_KERNEL_NAMES = {"neon": "NEON smull/smlal+sadalp", "sdot": "SDOT", "i8mm": "I8MM smmla/usmmla"}

_SMULL = "llvm.aarch64.neon.smull.v8i16"
_SADDLP = "llvm.aarch64.neon.saddlp.v4i32.v8i16"


SCHEMES: dict[str, Scheme] = {  # 4 rows x 16 columns; rows past M read a clamped row; K tail in int32
    "neon1": Scheme("neon1", 4, ROWS, 2, panel=False, k_tail="int32", row_tail="clamp"),  # smull, sadalp
    "neon2": Scheme("neon2", 4, ROWS, 4, panel=False, k_tail="int32", row_tail="clamp"),  # smull, smlal, sadalp
    "sdot": Scheme("sdot", 4, ROWS, 4, panel=False, k_tail="int32", row_tail="clamp"),
    "i8mm": Scheme("i8mm", 4, ROWS, 8, panel=False, k_tail="int32", row_tail="clamp", group=2),
    "sdot1": Scheme("sdot1", 4, 1, 4, panel=False, k_tail="int32"),  # the SDOT kernel before: one row a task
}


def _neon_step(products: int, a_dtype: str) -> Step:
    """NEON widening (any ARMv8-A, e.g. Cortex-A53/A72), the gemmlowp/ruy scheme: ``smull`` multiplies 8 s8 pairs
    into int16, ``smlal`` adds a second product into the same int16 lane, ``sadalp`` adds adjacent int16 lanes
    into the int32 accumulator (columns 4v..4v+3).  Lane pairs hold (column c, k) and (column c, k+1), so one
    ``sadalp`` finishes 2 k per product; Bp is ``[nb, K2, 16, 2]`` (k-pairs of 16 columns) and A's k-pair is
    repeated over 8 bytes (4 columns x 2 k).  Two products per int16 lane (``products`` = 2, K step 4) are exact
    only when no product is (-128)*(-128): that form is used when the constant B has no -128
    (:func:`smlal_safe`; the project's symmetric weights are in [-127, 127]); otherwise each product goes
    straight to ``sadalp`` (K step 2, still exact).  u8 A is flipped to s8 with ``a ^ 0x80`` (= a - 128) and the
    caller adds ``128 * colsum(B)``."""
    mask = FLIP16 if a_dtype == "uint8" else 0

    def a_pair(a: Any, kp: Any) -> Any:
        """A[row, 2kp:2kp+2] as s8, repeated over 8 bytes (4 columns x 2 k)."""
        return T.reinterpret(
            T.broadcast(T.bitwise_xor(T.reinterpret(a.vload([kp * 2], a_dtype + "x2"), dtype="int16"), T.int16(mask)),
                        4),
            dtype="int8x8",
        )

    def prod(a: Any, bp: Any, kp: Any, j: Any, v: Any) -> Any:
        return T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id(_SMULL), a_pair(a, kp), bp.vload([j, kp, v * 4, 0], "int8x8"), dtype="int16x8"
        )

    def step(acc: Any, a: Any, off: Any, bp: Any, j: Any, q: Any, v: int) -> Any:
        total = prod(a, bp, q * products, j, v)  # int16x8 sum of the k-pairs: smull, then smlal
        for p in range(1, products):
            total = total + prod(a, bp, q * products + p, j, v)
        return acc + T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id(_SADDLP), total, dtype="int32x4")

    return step


def _sdot_step(a_dtype: str) -> Step:
    """``sdot`` (``+dotprod``: Cortex-A55/A76/A78, Neoverse N1): 4-term s8 dot products into 4 int32 lanes
    (columns 4v..4v+3); A's 4 bytes of the K step repeated over 16 (u8 A flipped to s8 with ``a ^ 0x80``, the
    caller adds ``128 * colsum(B)``); Bp is ``[nb, K/4, 16, 4]``.  With 4 rows a block each 64-byte B block is
    loaded once for 4 rows and the 16 accumulators are independent chains (:func:`sdot_kernel`, one row a
    block, had half the estimated throughput on N1/V1)."""
    mask = FLIP if a_dtype == "uint8" else 0

    def step(acc: Any, a: Any, off: Any, bp: Any, j: Any, q: Any, v: int) -> Any:
        a4 = T.reinterpret(
            T.broadcast(T.bitwise_xor(T.reinterpret(a.vload([off], a_dtype + "x4"), dtype="int32"), T.int32(mask)), 4),
            dtype="int8x16",
        )
        return T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.sdot.v4i32.v16i8"),
            acc,
            a4,
            bp.vload([j, q, v * 4, 0], "int8x16"),
            dtype="int32x4",
        )

    return step


def _i8mm_step(a_dtype: str) -> Step:
    """Armv8.6-A I8MM (Cortex-A710/X2, Neoverse N2/V1, Graviton 3): ``smmla`` (s8 A) / ``usmmla`` (u8 A, no flip)
    multiply a 2x8 block of A (rows of the pair, interleaved in-register)
    times an 8x2 block of B into a 2x2 int32 block [C[2p,2v], C[2p,2v+1], C[2p+1,2v], C[2p+1,2v+1]]: 32 MACs an
    instruction.  ``a`` is the pair's two row views; Bp is ``[nb, K/8, 16, 8]`` (two columns per q register)."""
    intrin = "llvm.aarch64.neon.usmmla.v4i32.v16i8" if a_dtype == "uint8" else "llvm.aarch64.neon.smmla.v4i32.v16i8"

    def step(acc: Any, a: Any, off: Any, bp: Any, j: Any, q: Any, v: int) -> Any:
        rows = tirx.Shuffle([T.reinterpret(a[0].vload([off], a_dtype + "x8"), dtype="int64"),
                             T.reinterpret(a[1].vload([off], a_dtype + "x8"), dtype="int64")], [0, 1])
        return T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id(intrin),
            acc,
            T.reinterpret(rows, dtype="int8x16"),
            bp.vload([j, q, v * 2, 0], "int8x16"),
            dtype="int32x4",
        )

    return step


# kernel -> (its step function for A's dtype, k per packed group of B: Bp is [nb, kbase / depth, 16, depth])
STEPS: dict[str, tuple[Callable[[str], Step], int]] = {
    "neon1": (lambda a_dtype: _neon_step(1, a_dtype), 2),
    "neon2": (lambda a_dtype: _neon_step(2, a_dtype), 2),
    "sdot": (_sdot_step, 4),
    "i8mm": (_i8mm_step, 8),
    "sdot1": (_sdot_step, 4),
}


def arm_kernel(name: str, k: int, nb: int, a_dtype: str) -> tirx.PrimFunc:
    """The ``name`` (a :data:`SCHEMES` key) GEMM for A of ``a_dtype``: C [M, nb*16] int32; signature (A, Bp, Bt, C)
    with Bp, Bt from :func:`.gemm_skeleton.split_b` (depth from :data:`STEPS`)."""
    s = SCHEMES[name]
    make, depth = STEPS[name]
    return gemm_kernel(s, make(a_dtype), k, nb, a_dtype, (nb, k // s.kstep * s.kstep // depth, LANES, depth))


def neon_kernel(k: int, nb: int, a_dtype: str, products: int) -> tirx.PrimFunc:
    """NEON widening GEMM (:func:`_neon_step`) with ``products`` k-pairs per int16 lane."""
    return arm_kernel(f"neon{products}", k, nb, a_dtype)


def sdot_rows_kernel(k: int, nb: int, a_dtype: str) -> tirx.PrimFunc:
    """``sdot`` GEMM with the k loop outside the 4 rows (:func:`_sdot_step`)."""
    return arm_kernel("sdot", k, nb, a_dtype)


def sdot_kernel(k: int, nb: int, a_dtype: str = "uint8") -> tirx.PrimFunc:
    """The SDOT kernel the dotprod presets had before :func:`sdot_rows_kernel`: one row per register block, so one
    accumulator chain per 4 columns (kept for the llvm-mca comparison, not emitted)."""
    return arm_kernel("sdot1", k, nb, a_dtype)


def i8mm_kernel(k: int, nb: int, a_dtype: str) -> tirx.PrimFunc:
    """``smmla``/``usmmla`` GEMM (:func:`_i8mm_step`): 4 rows (2 row pairs) x 16 columns (8 column pairs) of 2x2
    int32 blocks; the accumulator holds block (pair p, column pair c) at ``p*32 + c*4``."""
    return arm_kernel("i8mm", k, nb, a_dtype)


def smlal_safe(b: relax.Expr) -> bool:
    """Whether two int8 products of B's entries always fit an int16 lane: B is a constant without -128."""
    value = getattr(b, "value", None) if isinstance(b, tvm.ir.expr.Constant) else None
    return hasattr(value, "numpy") and int(value.numpy().min(initial=0)) > -128


def emit_arm_matmul(ctx: Any, kind: str, a: relax.Expr, b: relax.Expr, k: int, n: int) -> relax.Expr:
    """``a @ b`` in int32 with the ``neon``, ``sdot`` or ``i8mm`` kernel (``k >= 4`` and ``n`` static; a u8/s8)."""

    m = a.ty.shape.values[0]
    at = dtype_of(a)
    bpad, nb = pad_columns(b, k, n)
    if kind == "i8mm" and k < 8:  # too short for one 8-deep smmla step
        kind = "neon"
    name = {"neon": f"neon{2 if smlal_safe(b) else 1}", "sdot": "sdot", "i8mm": "i8mm"}[kind]
    bmain, bp, bt = split_b(bpad, k, nb, SCHEMES[name].kstep, STEPS[name][1])
    key = (f"gemm_{'sdot4' if name == 'sdot' else name}", k, nb, at)
    out = ctx.call_tir(key, lambda: arm_kernel(name, k, nb, at), [a, bp, bt], [m, nb * LANES], "int32")
    if at == "uint8" and kind != "i8mm":  # the kernel computed sum (a - 128) b on [0, kbase)
        out = add_colsum(out, bmain, 128)
    return drop_padding(out, n)


def arm_gemm_kind(preset: Any) -> str:
    """The GEMM kernel for an aarch64 preset: ``i8mm`` > ``sdot`` > ``neon`` (see the llvm-mca table)."""
    feats = set(preset.features) | {str(f).lstrip("+") for f in preset.tvm_target.get("mattr", ())}
    if "i8mm" in feats:
        return "i8mm"
    if "dotprod" in feats:
        return "sdot"
    return "neon"
