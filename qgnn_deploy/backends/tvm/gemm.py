"""int8 matmuls of the TVM backend: which GEMM kernel a ``matmul`` gets, B's packing, and two kernel families.

The kernels are instances of the one register-blocked skeleton (:mod:`.gemm_skeleton`, which states their
contract and schedule); each family is a :class:`.gemm_skeleton.Scheme` and a step function:

* x86 with AVX-512 VNNI: ``vpdpbusd`` (:func:`_vnni_step`), 8-row blocks, A read in place
  (:func:`vnni_kernel`), or quantized from FP32 into a per-task panel when a ``quantize`` is fused
  (:func:`vnni_quant_kernel`); with a requantize epilogue (:func:`vnni_requant_kernel`), which also takes
  LoRAP's prompt tail (:func:`emit_prompt_requant`) and a final ``dequantize`` (float32 output);
* x86 below AVX-512 VNNI: :mod:`.gemm_x86`; AArch64: :mod:`.gemm_arm`;
* otherwise, and for K < 4: the portable kernel (:func:`_generic_step`), 4-row blocks vectorised by LLVM.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
from tvm import relax, tirx
from tvm.script import tirx as T

from qgnn_deploy.ir.graph import Graph
from qgnn_deploy.ir.interpreter import KERNELS

from . import gemm_x86
from .gemm_arm import ARM_KINDS, emit_arm_matmul
from .gemm_skeleton import (
    FLIP,
    LANES,
    ROWS,
    Epilogue,
    Scheme,
    Step,
    add_colsum,
    drop_padding,
    gemm_kernel,
    pad_columns,
    split_b,
)
from .relax_ops import dtype_of, op, shape_of

VNNI_ROWS = 8  # x86: 8 independent vpdpbusd chains hide its latency (4 left the 2708x1433 GEMM ~15% slower)
PANEL_BLOCKS = 16  # row blocks per parallel task of the fused quantize GEMM (one panel workspace per task)
# 16 lanes: one zmm per row.  The K tail (K % 4) as one more vpdpbusd over A's last 4 columns: the series model's
# K = 7 LoRAP score GEMM at 10^6 nodes, 2 threads, Zen 4: see examples/results/tvm_1e6_breakdown.md (stop 33)
VNNI = Scheme("vnni", LANES, VNNI_ROWS, 4, panel=False, k_tail="shifted")
VNNI_NO_TAIL = Scheme("vnni", LANES, VNNI_ROWS, 4, panel=False)  # K % 4 == 0: no Bt argument
GENERIC = Scheme("generic", LANES, ROWS, 1, panel=False)


def _vnni_step(a_dtype: str) -> Step:
    """AVX-512 VNNI ``vpdpbusd`` (u8 x s8 4-term dot products into 16 int32 lanes): A's 4 bytes of the K step are
    broadcast to the 64-byte operand (s8 A flipped to a + 128 with ``a ^ 0x80``; the caller subtracts
    ``128 * colsum(B)`` over all K rows: the shifted K-tail step flips the tail too), B is packed
    ``[nb, ceil(K/4), 16, 4]`` (:func:`.gemm_skeleton.split_b` ``shifted``).  LLVM >= 21 types the operands as
    <64 x i8>, so TVM's bundled ``dot_16x4_vnni`` intrinsic no longer verifies: the LLVM intrinsic is called
    directly."""
    mask = FLIP if a_dtype == "int8" else 0

    def step(acc: Any, a: Any, off: Any, bp: Any, j: Any, q: Any, v: int) -> Any:
        return T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
            acc,
            T.reinterpret(T.broadcast(T.bitwise_xor(T.reinterpret(
                a.vload([off], a_dtype + "x4"), dtype="int32"), T.int32(mask)), LANES), dtype="int8x64"),
            bp.vload([j, q, 0, 0], "int8x64"),
            dtype="int32x16")

    return step


def _generic_step(a_dtype: str) -> Step:
    """Portable: one A code broadcast times 16 s8 of B (unpacked ``[K, nb*16]``), widened to int32 lanes; LLVM
    picks the instructions (any ISA, u8 or s8 A)."""

    def step(acc: Any, a: Any, off: Any, b: Any, j: Any, q: Any, v: int) -> Any:
        return acc + T.broadcast(T.Cast("int32", a[off]), LANES) * T.Cast(
            "int32x16", b.vload([q, j * LANES], "int8x16"))

    return step


def vnni_kernel(k: int, nb: int, a_dtype: str = "uint8") -> tirx.PrimFunc:
    """x86 ``vpdpbusd`` GEMM, 8-row blocks read from A in place; C is [M, nb*16]; the K % 4 tail is exact."""
    return gemm_kernel(VNNI, _vnni_step(a_dtype), k, nb, a_dtype, (nb, -(-k // 4), LANES, 4))


def vnni_quant_kernel(k: int, a_dtype: str, scale: float, zero_point: int, qmin: int, qmax: int) -> tirx.PrimFunc:
    """``quantize`` fused into the A-panel packing of the VNNI GEMM, for N <= 16 (one zmm of outputs per row).

    A is the FP32 input [M, K].  Each 8-row block is first quantized into an [8, K] panel in a per-task
    workspace (the same float32 ops as the ``quantize`` handler: divide, round-half-even, + zero point,
    clip, cast, so the codes are identical; 16-lane vectors), then multiplied from
    there while it sits in L1: the uint8 copy of A never goes to memory.  (Quantizing 4 columns right
    before each ``vpdpbusd`` instead makes LLVM split the divide into 4-lane pieces: 10x slower.)
    """
    fill = gemm_x86.panel_fill(VNNI, "float32", a_dtype, (scale, zero_point, qmin, qmax))
    return gemm_kernel(VNNI, _vnni_step(a_dtype), k, 1, a_dtype, (1, -(-k // 4), LANES, 4), fill=fill,
                       in_dtype="float32", panel_blocks=PANEL_BLOCKS)


def vnni_requant_kernel(k: int, nb: int, epilogue: Epilogue, a_dtype: str = "uint8") -> tirx.PrimFunc:
    """``requantize(A @ B)``: the VNNI kernel storing int8/uint8 codes from registers
    (:class:`.gemm_skeleton.Epilogue`), so the int32 ``[M, N]`` product never goes to memory.  For s8 A (and
    an A zero point) the constants carry the column offset (:func:`_fold_column_offset`).  A K tail (K % 4,
    e.g. LoRAP's K = 7 score GEMM) is one more step over A's last 4 columns before the epilogue (``Bt`` unread):
    ``(A, Bp, Bt, Rq, C)``, else ``(A, Bp, Rq, C)``; with an addend always ``(A, Bp, Bt, Rq, D, C)`` (Bt one zero
    row when K % 4 == 0)."""
    return gemm_kernel(VNNI if k % 4 or epilogue.addend else VNNI_NO_TAIL, _vnni_step(a_dtype), k, nb, a_dtype,
                       (nb, -(-k // 4), LANES, 4), epilogue=epilogue)


def generic_kernel(k: int, nb: int, a_dtype: str) -> tirx.PrimFunc:
    """Portable: 4-row blocks, 16 int32 accumulators per row vectorised by LLVM (any ISA, u8 or s8 A)."""
    return gemm_kernel(GENERIC, _generic_step(a_dtype), k, nb, a_dtype, (k, nb * LANES))


def _static(v: Any) -> int | None:
    return int(v.value) if isinstance(v, tirx.IntImm) else (v if isinstance(v, int) else None)


def int8_constant(graph: Graph, name: str) -> np.ndarray | None:
    """The values of ``name`` when it is a constant int8 matrix, else None: an int8 initializer, or the
    ``unpack_int4`` of a constant (4-bit weights and LoRAP bases are stored packed), unpacked here by the
    interpreter's own kernel, so every matcher and emitter treats a 4-bit constant like an 8-bit one and reads
    exactly the values the graph computes."""
    if name in graph.initializers:
        arr = graph.initializers[name]
        return arr if arr.dtype == np.int8 else None
    node = graph.producers().get(name)
    if node is None or node.op != "unpack_int4" or node.inputs[0] not in graph.initializers:
        return None
    return KERNELS["unpack_int4"]([graph.initializers[node.inputs[0]]], node.attrs)


def emit_matmul(ctx: Any, a: relax.Expr, b: relax.Expr) -> relax.Expr | None:
    """``a @ b`` in int32 through a hand-written kernel, or None to use Relax's matmul."""
    sa, sb = shape_of(a), shape_of(b)
    if len(sa) != 2 or len(sb) != 2 or dtype_of(b) != "int8" or dtype_of(a) not in ("uint8", "int8"):
        return None
    k, n = _static(sb[0]), _static(sb[1])
    if k is None or n is None or k == 0 or n == 0:
        return None
    if ctx.options.gemm_kind in ARM_KINDS and k >= 4:  # AArch64 kernels: gemm_arm.py
        return emit_arm_matmul(ctx, ctx.options.gemm_kind, a, b, k, n)
    m = sa[0]
    bpad, nb = pad_columns(b, k, n)
    at = dtype_of(a)
    kind = ctx.options.gemm_kind if k >= 4 else "generic"
    if kind in gemm_x86.KINDS:  # x86 below AVX-512 VNNI (K padded inside, no K // 4 restriction)
        out = gemm_x86.emit_matmul(ctx, kind, a, bpad, k, nb)
    elif kind == "vnni":
        _, bp, bt = split_b(bpad, k, nb, 4, 4, shifted=True)
        out = ctx.call_tir(("gemm_vnni", k, nb, at), lambda: vnni_kernel(k, nb, at), [a, bp, bt], [m, nb * LANES],
                           "int32")
        if at == "int8":  # the kernel computed sum (a + 128) b over all K rows
            out = add_colsum(out, bpad, -128)
    else:
        out = ctx.call_tir(("gemm_generic", k, nb, at), lambda: generic_kernel(k, nb, at), [a, bpad],
                           [m, nb * LANES], "int32")
    return drop_padding(out, n)


def emit_quant_matmul(ctx: Any, x: relax.Expr, b: relax.Expr, qattrs: dict[str, Any]) -> relax.Expr:
    """``quantize(x) @ b`` in int32 with the quantize fused into the GEMM kernel (see :func:`fusable_quant`)."""
    k, n = (int(d) for d in (_static(v) for v in shape_of(b)))
    at = str(qattrs["dtype"])
    bpad, _ = pad_columns(b, k, n)
    if ctx.options.gemm_kind in gemm_x86.QUANT_KINDS:
        return drop_padding(gemm_x86.emit_quant_matmul(ctx, ctx.options.gemm_kind, x, bpad, k, qattrs), n)
    _, bp, bt = split_b(bpad, k, 1, 4, 4, shifted=True)
    if dtype_of(x) != "float32":
        x = op.astype(x, "float32")
    params = (float(qattrs["scale"]), int(qattrs["zero_point"]), int(qattrs["qmin"]), int(qattrs["qmax"]))
    key = ("gemm_vnni_quant", k, at, *params)
    out = ctx.call_tir(key, lambda: vnni_quant_kernel(k, at, *params), [x, bp, bt], [shape_of(x)[0], LANES],
                       "int32")
    if at == "int8":  # the kernel computed sum (a + 128) b over all K rows
        out = add_colsum(out, bpad, -128)
    return drop_padding(out, n)


def emit_matmul_requant(ctx: Any, mm: Any, rq_node: Any, constants: Any, dq_node: Any = None,
                        columns: int | None = None) -> relax.Expr | None:
    """``requantize(matmul)`` as one x86 GEMM kernel with a requantize epilogue (``fusion.requantize_into_gemm``
    planned it; ``constants(n)`` is its ``requant_epilogue_constants`` for n columns), writing float32 when
    ``dq_node`` (a ``dequantize`` of it, ``fusion.dequantize_into_gemm``) is given; None when the operands do not
    allow it (the caller then emits both nodes).  ``columns`` (> n, at most one block of 16): the kernel writes
    that many columns, the padding ones from B's zero columns (``fusion.widen_gathered_rows``)."""
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
    epi = _node_epilogue(rq_node, n, rq, dq_node=dq_node)
    bpad, nb = pad_columns(b, k, n)
    if columns is not None:
        if not n < columns <= nb * LANES:
            raise ValueError(f"emit_matmul_requant: {columns} columns for a {n}-column product in {nb} blocks")
        epi = replace(epi, columns=columns)  # the padding columns' constants stay 0: their codes are never read
    rq = np.concatenate([rq, np.zeros((3, nb * LANES - n), np.int64)], axis=1)
    if ctx.options.gemm_kind == "vnni":  # A read in place (vnni_fuses_requant)
        at = dtype_of(a)
        if q is not None or not vnni_fuses_requant(at, k) or int(mm.attrs.get("b_zero_point", 0)):
            return None
        rq = _fold_column_offset(rq, int8_constant(ctx.graph, mm.inputs[1]),
                                 _row_offsets(k, int(mm.attrs.get("a_zero_point", 0)), at == "int8"))
        if rq is None:
            return None
        _, bp, bt = split_b(bpad, k, nb, 4, 4, shifted=True)
        return ctx.call_tir(("gemm_vnni", k, nb, at, *epi.key()), lambda: vnni_requant_kernel(k, nb, epi, at),
                            [a, bp] + ([bt] if k % 4 else []) + [relax.const(np.ascontiguousarray(rq, np.int64),
                                                                             "int64")], [shape_of(a)[0], epi.columns],
                            epi.out_dtype)
    za = int(mm.attrs.get("a_zero_point", 0))
    if za:  # the x86 kernels sum a * b exactly (or decline below): fold -za * colsum(B) into the rounding half
        rq = _fold_column_offset(rq, int8_constant(ctx.graph, mm.inputs[1]), _row_offsets(k, za, False))
        if rq is None or k > VNNI_EPILOGUE_MAX_K or int(mm.attrs.get("b_zero_point", 0)):
            return None
    return gemm_x86.emit_matmul_requant(ctx, ctx.options.gemm_kind, a, bpad, k, nb, rq, epi,
                                        None if q is None else q.attrs)


def _node_epilogue(rq_node: Any, n: int, rq: np.ndarray, addend: int = 0, addend_dtype: str = "int8",
                   dq_node: Any = None) -> Epilogue:
    """The :class:`.gemm_skeleton.Epilogue` of requantize node ``rq_node`` over ``n`` output columns (then
    dequantize node ``dq_node``'s, when given); ``rq``: its ``[3, *]`` constants (the multipliers' range)."""
    info = np.iinfo(rq_node.attrs["dtype"])
    dq = None if dq_node is None else (int(dq_node.attrs["zero_point"]), float(np.float32(dq_node.attrs["scale"])))
    i32 = np.iinfo(np.int32)
    wide = not bool(np.all((rq[0] >= i32.min) & (rq[0] <= i32.max)))
    low = bool(np.any(rq[2, :n] < 32)) or abs(int(rq_node.attrs["zero_point"])) >= 1 << 30  # int32 path's bounds
    return Epilogue(int(rq_node.attrs["zero_point"]), int(rq_node.attrs.get("qmin", info.min)),
                    int(rq_node.attrs.get("qmax", info.max)), str(rq_node.attrs["dtype"]), n, addend, addend_dtype,
                    dq, wide, low)


def emit_prompt_requant(ctx: Any, tail: Any, rq_node: Any, dq_node: Any = None) -> relax.Expr:
    """LoRAP's ``requantize((a - za) * den + alpha @ P [+ bias])`` (``fusion.prompt_into_gemm`` planned it and
    kept its :func:`prompt_epilogue_constants` in ``tail.epilogue``): the VNNI GEMM ``alpha @ P`` adding ``den * a``
    in its epilogue (:class:`.gemm_skeleton.Epilogue` ``addend``), the bias and ``za`` folded into the rounding
    constants, so the int32 ``[N, H]`` product and the elementwise requantize kernel (with its column slice) are
    gone.  With ``dq_node`` (the model's final ``dequantize`` of it, ``fusion.dequantize_into_gemm``) the kernel
    writes its float32 values instead of the codes."""
    alpha, agg = ctx.value(tail.alpha, rq_node), ctx.value(tail.agg, rq_node)
    k, n = (int(d) for d in shape_of(ctx.value(tail.basis, rq_node)))
    at, dt = dtype_of(alpha), dtype_of(agg)
    rq = tail.epilogue
    if rq is None:
        raise ValueError(f"prompt tail {rq_node.outputs[0]!r} has no epilogue constants (not planned by "
                         "fusion.prompt_into_gemm)")
    epi = _node_epilogue(rq_node, n, rq, tail.den, dt, dq_node)
    bpad, nb = pad_columns(ctx.value(tail.basis, rq_node), k, n)
    if ctx.options.gemm_kind != "vnni":  # x86 below VNNI: u8 alpha, exact sums (prompt_into_gemm's conditions)
        out = gemm_x86.emit_matmul_requant(ctx, ctx.options.gemm_kind, alpha, bpad, k, nb, rq, epi, addend=agg)
        if out is None:
            raise ValueError(f"prompt tail {rq_node.outputs[0]!r}: the {ctx.options.gemm_kind} GEMM cannot take "
                             f"{at} alpha (fusion.prompt_into_gemm plans u8 alpha only)")
        return out
    _, bp, bt = split_b(bpad, k, nb, 4, 4, shifted=True)
    return ctx.call_tir(("gemm_vnni", k, nb, at, *epi.key()), lambda: vnni_requant_kernel(k, nb, epi, at),
                        [alpha, bp, bt, relax.const(np.ascontiguousarray(rq, np.int64), "int64"), agg],
                        [shape_of(alpha)[0], n], epi.out_dtype)


def prompt_epilogue_constants(graph: Any, tail: Any, constants: Any, alpha_dtype: str, agg_dtype: str,
                              flip: bool = True) -> np.ndarray | None:
    """``[3, nb*16]`` int64 epilogue constants of a LoRAP prompt tail (``fusion.PromptTail``), or None;
    ``constants(n)``: the tail's requantize's ``requant_epilogue_constants`` for n columns (None if it has none).

    The kernel requantizes ``v = acc + den * a`` (``acc`` the VNNI accumulators, over-weighted as
    :func:`_fold_column_offset` says) where the IR requantizes ``acc_true + den * (a - za) + bias``: the
    difference is a per-column constant, folded into the rounding half like the GEMM's own offset
    (``(v + o) * M + half = v * M + (half + o * M)``).  Exact when neither int32 sum can wrap (the IR's then do
    not either) and the int64 terms stay below 2**62; None otherwise (the tail stays two kernels)."""
    basis = int8_constant(graph, tail.basis)
    if basis is None or basis.ndim != 2:
        return None
    p = basis.astype(np.int64)
    k, n = p.shape
    base = constants(n)
    if base is None or alpha_dtype not in ("uint8", "int8") or agg_dtype not in ("uint8", "int8") or \
            not vnni_fuses_requant(alpha_dtype, k) or k < 4:
        return None
    nb = -(-n // LANES)
    rq = _fold_column_offset(np.concatenate([base, np.zeros((3, nb * LANES - n), np.int64)], axis=1), p,
                             _row_offsets(k, tail.alpha_zero_point, flip and alpha_dtype == "int8"))
    if rq is None:
        return None
    ai, di = np.iinfo(alpha_dtype), np.iinfo(agg_dtype)
    bias = np.zeros(n, np.int64) if tail.bias is None else graph.initializers[tail.bias].astype(np.int64).reshape(n)
    colsum = float(np.abs(p).sum(axis=0).max(initial=0))
    amax = max(abs(int(ai.min) - tail.alpha_zero_point), abs(int(ai.max) - tail.alpha_zero_point))
    dmax = max(abs(int(di.min) - tail.agg_zero_point), abs(int(di.max) - tail.agg_zero_point))
    kernel_sum = 255.0 * colsum + abs(tail.den) * max(abs(int(di.min)), abs(int(di.max)))
    true_sum = amax * colsum + abs(tail.den) * dmax + float(np.abs(bias).max(initial=0))
    col = bias - tail.den * tail.agg_zero_point  # |col| < 2**31 + 2**20: its product with M fits int64
    mmax = float(np.abs(rq[0]).max())
    if max(kernel_sum, true_sum) >= 2.0**31 or \
            (kernel_sum + float(np.abs(col).max(initial=0))) * mmax + float(np.abs(rq[1]).max()) >= 2.0**62:
        return None
    rq[1, :n] += col * rq[0, :n]
    return rq


VNNI_EPILOGUE_MAX_K = 16384  # |sum (a - za) b| < K * 255 * 128 * 2 stays below 2^31: no int32 wrap to reproduce


def vnni_fuses_requant(a_dtype: str, k: int) -> bool:
    """Whether the VNNI GEMM can requantize in its epilogue: u8 or s8 A and K small enough that the column
    offsets fold exactly (:func:`_fold_column_offset`); a K tail (K % 4) is one more step before it."""
    return a_dtype in ("uint8", "int8") and k <= VNNI_EPILOGUE_MAX_K


def _row_offsets(k: int, a_zero_point: int, flip: bool) -> np.ndarray:
    """How much each of the K rows of B is over-weighted in the VNNI accumulators: the A zero point on every row,
    plus 128 on every row with ``flip`` (``vpdpbusd`` multiplies s8 A flipped, ``a ^ 0x80 = a + 128``, the shifted
    K-tail step included)."""
    off = np.full(k, a_zero_point, np.int64)
    if flip:
        off += 128
    return off


def _fold_column_offset(rq: np.ndarray, w: np.ndarray | None, row_offset: np.ndarray) -> np.ndarray | None:
    """Epilogue constants for accumulators that exceed the true ``A @ B`` by ``o = sum_k row_offset[k] * B[k]``
    per column (the s8 flip's ``+128`` and the A zero point, :func:`_row_offsets`):
    ``(acc - o) * M + half = acc * M + (half - o*M)`` exactly in int64, so the rounding half absorbs the offset;
    the true sums never wrap int32 (:data:`VNNI_EPILOGUE_MAX_K`), as the unfused int32 ops would not either.
    None when an offset is not 0 and the weight is not a constant, or the int64 terms could overflow."""
    if not row_offset.any():
        return rq
    if w is None:
        return None
    out = rq.copy()
    k, n = w.shape
    off = (row_offset[:, None] * w.astype(np.int64)).sum(axis=0) * rq[0, :n]
    bound = float(k * 255 * 128) * float(np.abs(rq[0]).max()) + float(np.abs(off).max()) + float(rq[1].max())
    if bound >= 2.0**62:
        return None
    out[1, :n] -= off
    return out


def fusable_quant(weight_shape: tuple[int, ...] | None, attrs: dict[str, Any], gemm_kind: str) -> bool:
    """Whether a ``quantize`` feeding a matmul with this constant weight can run inside the GEMM kernel."""
    if gemm_kind not in ("vnni", *gemm_x86.QUANT_KINDS) or weight_shape is None or len(weight_shape) != 2:
        return False
    k, n = weight_shape
    return k >= 16 and 1 <= n <= LANES and str(attrs.get("dtype")) in ("uint8", "int8") and \
        int(attrs.get("b_zero_point", 0)) == 0
