"""x86 int8 GEMM kernels below AVX-512 VNNI: ``C[M,N] (int32) = A[M,K] (u8/s8) x B[K,N] (s8)``, exact.

Instances of the GEMM skeleton (:mod:`.gemm_skeleton`: contract and schedule), one :class:`Scheme` per ISA
tier, the instructions in :func:`_step`:

* ``avx2`` / ``sse2`` / ``avx512bw`` ("madd16"): A and B widened to int16 and multiplied with ``vpmaddwd``
  (two int16 products summed into an int32 lane: exact for any u8/s8 input).  One kernel, three vector widths
  (ymm / xmm / zmm).  A is widened once per row block into an int16 panel (``vpmovzxbw``), so the inner loop is
  one ``vpbroadcastd`` from the panel, 16/W ``vpmaddwd`` and ``vpaddd`` per row and K pair;
* ``avx2-pair`` (the AVX2 default): ``vpmaddubsw`` (u8 A x s8 B pairs into int16) then ``vpmaddwd`` by ones,
  exact because the weights are repacked at compile time so that every K pair and column keeps the sums of
  its positive and of its negative parts <= 128 (255 * 128 fits int16): K permuted inside 16-row chunks (the
  panel fill applies the same ``vpshufb`` to A) and the excess clamped into a sparse residual plane run per
  row block after the main loop (:func:`pair_pack`).  No A widening, int8 B; falls back to ``avx2`` for a
  weight whose residual is too large (:func:`pair_plan`);
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

import functools
from typing import Any

import numpy as np
import tvm
from tvm import relax, tirx
from tvm.script import tirx as T

from .gemm_skeleton import FLIP, LANES, Epilogue, Residual, Scheme, gemm_kernel
from .relax_ops import dtype_of, op, scalar, shape_of

PANEL_BLOCKS = 16  # row blocks per parallel task: one panel workspace (a heap allocation) per task


# Register budget (16 ymm/xmm, 32 zmm): rows * 16/width accumulators + 16/width B vectors + one broadcast.
SCHEMES: dict[str, Scheme] = {
    "avx2": Scheme("avx2", 8, 6, 2),  # 12 accumulators + 2 B + 1 (4 rows measured slower, see the results file)
    "sse2": Scheme("sse2", 4, 2, 2),  # 8 accumulators + 4 B + 1
    "avx512bw": Scheme("avx512bw", 16, 8, 2),  # 8 accumulators + 1 B + 1 (of 32 zmm)
    "avx2-ubsw": Scheme("avx2-ubsw", 8, 4, 4, planes=2),
    "avxvnni": Scheme("avxvnni", 8, 6, 4),  # 12 independent vpdpbusd chains hide its 4-5 cycle latency
    # planes: pair-bounded main weights, the fill's byte shuffles, residual weights, residual quad indices.
    # 10 accumulators + 2 B + broadcast + product + ones = 15 ymm (6 rows spill one accumulator: ~4% slower)
    "avx2-pair": Scheme("avx2-pair", 8, 5, 4, planes=4),
}
KINDS = tuple(SCHEMES)
QUANT_KINDS = ("avx2", "sse2", "avx512bw", "avxvnni", "avx2-pair")  # fused quantize supported (N <= 16)
_MADD = {4: "llvm.x86.sse2.pmadd.wd", 8: "llvm.x86.avx2.pmadd.wd", 16: "llvm.x86.avx512.pmaddw.d.512"}
_UBSW = "llvm.x86.avx2.pmadd.ub.sw"
_DPBUSD256 = "llvm.x86.avx512.vpdpbusd.256"  # LLVM emits the VEX form ({vex} vpdpbusd) under +avxvnni
_PSHUFB = "llvm.x86.ssse3.pshuf.b.128"


def _padded_k(k: int, kstep: int) -> int:
    return -(-k // kstep) * kstep


def _a_quad(panel: Any, off: Any, a_dtype: str, mask: int, w: int) -> Any:
    """4 A codes at panel offset ``off`` (s8 flipped to u8 by ``mask``) broadcast to ``w`` int32 lanes, as bytes."""
    return T.reinterpret(
        T.broadcast(T.bitwise_xor(T.reinterpret(panel.vload([off], a_dtype + "x4"), dtype="int32"), T.int32(mask)), w),
        dtype=f"int8x{4 * w}",
    )


def _ubsw_madd(a4: Any, bp: Any, plane: int, j: Any, q: Any, v: int, w: int, mult: Any) -> Any:
    """``vpmaddubsw`` of the A quad with B plane ``plane`` (int16 pair sums), then ``vpmaddwd`` by ``mult``."""
    pairs = T.call_llvm_pure_intrin(
        T.llvm_lookup_intrinsic_id(_UBSW), a4, bp.vload([plane, j, q, v * w, 0], f"int8x{4 * w}"),
        dtype=f"int16x{2 * w}",
    )
    return T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id(_MADD[w]), pairs, mult, dtype=f"int32x{w}")


def _step(s: Scheme, a_dtype: str) -> Any:
    """``step(acc, panel, off, Bp, j, q, v)``: acc (int32 x width) after K step ``q`` for column vector ``v``;
    ``off`` is the panel offset of this row's K step."""
    w = s.width
    mask = FLIP if a_dtype == "int8" else 0
    if s.kind == "avxvnni":

        def step(acc: Any, panel: Any, off: Any, bp: Any, j: Any, q: Any, v: int) -> Any:
            return T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(_DPBUSD256),
                acc,
                _a_quad(panel, off, a_dtype, mask, w),
                bp.vload([0, j, q, v * w, 0], f"int8x{4 * w}"),
                dtype=f"int32x{w}",
            )

        return step
    if s.kind == "avx2-pair":
        return _ubsw_step(w, a_dtype, mask, 0)
    if s.kind == "avx2-ubsw":
        ones, sixty_four = T.broadcast(T.int16(1), 2 * w), T.broadcast(T.int16(64), 2 * w)

        def step(acc: Any, panel: Any, off: Any, bp: Any, j: Any, q: Any, v: int) -> Any:
            a4 = _a_quad(panel, off, a_dtype, mask, w)
            return acc + _ubsw_madd(a4, bp, 0, j, q, v, w, ones) + _ubsw_madd(a4, bp, 1, j, q, v, w, sixty_four)

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


def _ubsw_step(w: int, a_dtype: str, mask: int, plane: int) -> Any:
    """One ``vpmaddubsw`` of the broadcast A quad with B plane ``plane``, then ``vpmaddwd`` by ones into int32:
    exact when every (pair, column) of that plane keeps 255 * (sum of its positive / negative parts) in int16."""
    ones = T.broadcast(T.int16(1), 2 * w)

    def step(acc: Any, panel: Any, off: Any, bp: Any, j: Any, q: Any, v: int) -> Any:
        return acc + _ubsw_madd(_a_quad(panel, off, a_dtype, mask, w), bp, plane, j, q, v, w, ones)

    return step


# ---------------------------------------------------------------- avx2-pair: pair-bounded vpmaddubsw + residual
PAIR_BOUND = 128  # |sum of the positive (negative) parts| of a K pair: 255 * 128 = 32640 fits int16
PAIR_RESIDUAL_MAX = 0.25  # residual quads / K quads above which avx2-pair falls back to avx2 (madd16)


def _pair_excess(p: np.ndarray) -> np.ndarray:
    """p [..., 2, N] (int): how far each (pair, column) exceeds the bound on either sign (0 when exact)."""
    pos, neg = np.maximum(p, 0).sum(-2), np.maximum(-p, 0).sum(-2)
    return np.maximum(pos - PAIR_BOUND, 0) + np.maximum(neg - PAIR_BOUND, 0)


def _chunk_perm(w16: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A permutation of 16 K rows (w16 [16, N]) that makes few adjacent pairs violate the bound, and puts the
    violating pairs together in as few quads as possible (local search over pair swaps; deterministic)."""
    perm = np.arange(16)

    def cost(pm: np.ndarray) -> int:
        return int((_pair_excess(w16[pm].reshape(8, 2, -1)) > 0).any(-1).sum())

    best, stall = cost(perm), 0
    for _ in range(200):
        if best == 0 or stall >= 100:  # done, or no gain in 100 tries: stop (compile time of large weights)
            break
        i, j = rng.choice(16, 2, replace=False)
        if i // 2 == j // 2:
            continue
        cand = perm.copy()
        cand[i], cand[j] = cand[j], cand[i]
        c = cost(cand)
        stall = 0 if c < best else stall + 1
        if c <= best:
            perm, best = cand, c
    bad = (_pair_excess(w16[perm].reshape(8, 2, -1)) > 0).any(-1)
    order = np.concatenate([np.flatnonzero(bad), np.flatnonzero(~bad)])  # violating pairs first: shared quads
    return perm.reshape(8, 2)[order].reshape(16)


def pair_pack(b: np.ndarray, max_resid: float | None = None) -> tuple[np.ndarray | None, int]:
    """B [K, nb*16] int8 -> (``[4, nb, Kp/4, 16, 4]`` int8, R) for the ``avx2-pair`` kernel, R residual quads.

    Plane 0: B with K permuted inside each 16-row chunk (the panel fill applies the same byte shuffle to A,
    whose masks are plane 1 [0, c, 0:4, 0:4]) and every (pair, column) clamped to the pair bound, so one
    ``vpmaddubsw`` on u8 A is exact.  The excess (itself within the bound: at most 2 * 127 - 128) goes to
    plane 2, one quad per entry r < R, whose quad index is plane 3 [j, r, 0, 0:4] (int32); unused entries
    are zero weights at quad 0.  b == main + residual exactly.  With ``max_resid`` (a fraction of the K quads)
    the search stops as soon as a column block needs more residual quads: (None, R so far)."""
    k, n = b.shape
    nb, kp = n // LANES, _padded_k(k, 4)
    nq, chunks = kp // 4, k // 16
    rng = np.random.default_rng(0)
    perm = np.arange(kp)
    wide = np.zeros((kp, n), np.int64)
    wide[:k] = b
    limit = None if max_resid is None else max_resid * nq
    quads = np.zeros(nb, np.int64)  # residual quads so far per column block
    for c in range(chunks):
        perm[16 * c:16 * c + 16] = 16 * c + _chunk_perm(wide[16 * c:16 * c + 16], rng)
        if limit is not None:
            bad = _pair_excess(wide[perm[16 * c:16 * c + 16]].reshape(4, 2, 2, n)) > 0  # [quad, pair, column]
            quads += bad.reshape(4, 2, nb, LANES).any(axis=(1, 3)).sum(0)
            if quads.max() > limit:
                return None, int(quads.max())
    bp = wide[perm].reshape(nq, 2, 2, n)  # quad, pair, member, column
    pos, neg = np.maximum(bp, 0), np.maximum(-bp, 0)
    main = bp.copy()
    for part, sign in ((pos, 1), (neg, -1)):
        excess = np.maximum(part.sum(2) - PAIR_BOUND, 0)  # [nq, 2, n]
        take0 = np.minimum(part[:, :, 0], excess)  # excess taken from the first member, the rest from the second
        main[:, :, 0] -= sign * take0
        main[:, :, 1] -= sign * (excess - take0)
    resid = bp - main
    assert not _pair_excess(main.reshape(-1, 2, n)).any()
    assert not _pair_excess(resid.reshape(-1, 2, n)).any()
    out = np.zeros((4, nb, nq, LANES, 4), np.int8)
    out[0] = main.reshape(nq, 4, nb, LANES).transpose(2, 0, 3, 1)
    for c in range(chunks):
        out[1, 0, c, :4] = (perm[16 * c:16 * c + 16] - 16 * c).reshape(4, 4)
    rq = resid.reshape(nq, 4, nb, LANES).transpose(2, 0, 3, 1)  # [nb, nq, 16, 4]
    used = [np.flatnonzero(rq[j].any(axis=(1, 2))) for j in range(nb)]
    r = max((len(u) for u in used), default=0)
    for j, u in enumerate(used):
        out[2, j, :len(u)] = rq[j, u]
        out[3, j, :len(u), 0] = np.asarray(u, "<i4").view(np.int8).reshape(-1, 4)
    return out, r


def _const_value(e: relax.Expr) -> np.ndarray | None:
    """The value of a constant weight expression (a constant, or a concat of constants), else None.

    Operands built with :data:`.relax_ops.op` are variables bound in the active BlockBuilder (e.g. the weight
    with zero columns appended by ``pad_columns``): their bindings are looked through."""
    if isinstance(e, relax.Var):
        bb = relax.BlockBuilder.current()
        bound = bb.lookup_binding(e) if bb is not None else None
        return None if bound is None else _const_value(bound)
    if isinstance(e, tvm.ir.expr.Constant):
        return e.value.numpy()
    if isinstance(e, relax.Call) and getattr(e.op, "name", "") == "relax.concat" and isinstance(e.args[0], relax.Tuple):
        parts = [_const_value(x) for x in e.args[0].fields]
        if all(p is not None for p in parts):
            return np.concatenate(parts, axis=int(e.attrs.axis))
    return None


def panel_fill(s: Scheme, in_dtype: str, pdt: str, quant: tuple[float, int, int, int] | None) -> tuple[Any, Any]:
    """The skeleton's (16-wide, scalar) panel fill for ``s`` (:func:`_fill`); ``avx2-pair``'s 16-wide fill also
    applies chunk ``c16``'s byte shuffle (plane 1 of packed B), so A pairs up as B was permuted."""
    fill16, fill1 = _fill(in_dtype, pdt, quant)
    if s.kind != "avx2-pair":
        return (lambda x, i, c, bp, c16: fill16(x, i, c)), fill1

    def fill(x: Any, i: Any, c: Any, bp: Any, c16: Any) -> Any:
        v = fill16(x, i, c)
        return T.reinterpret(
            T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(_PSHUFB), T.reinterpret(v, dtype="int8x16"),
                bp.vload([1, 0, c16, 0, 0], "int8x16"), dtype="int8x16"),
            dtype=pdt + "x16")

    return fill, fill1


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
    epilogue: Epilogue | None = None, resid: int = 0,
) -> tirx.PrimFunc:
    """The ``kind`` GEMM for A of ``a_dtype`` (or FP32 X quantized to ``a_dtype`` codes when ``quant`` =
    (scale, zero_point, qmin, qmax)); B is pre-packed as ``[planes, nb, Kp/kstep, 16, kstep]``.  With an
    ``epilogue`` the kernel takes the requantize constants after B and writes ``epilogue.out_dtype``, only the
    ``epilogue.columns`` real columns.  ``resid``: residual quads per column block (``avx2-pair``, see
    :func:`pair_pack`), applied per row block after the main K loop while the panel is in L1."""
    s = SCHEMES[kind]
    kq = s.kstep
    pdt = s.panel_dtype or a_dtype
    in_dtype = "float32" if quant is not None else a_dtype
    b_shape = (s.planes, nb, _padded_k(k, kq) // kq, LANES, kq)
    residual = None
    if resid:  # plane 2: the residual weights, plane 3 [j, e, 0, 0:4]: the int32 index of residual quad e
        residual = Residual(resid, _ubsw_step(s.width, a_dtype, FLIP if a_dtype == "int8" else 0, 2),
                            lambda bp, j, e: T.Cast("int64", T.reinterpret(bp.vload([3, j, e, 0, 0], "int8x4"),
                                                                           dtype="int32")))
    return gemm_kernel(s, _step(s, a_dtype), k, nb, a_dtype, b_shape, "int16" if kq == 2 else "int8",
                       fill=panel_fill(s, in_dtype, pdt, quant), in_dtype=in_dtype, epilogue=epilogue,
                       panel_blocks=PANEL_BLOCKS, residual=residual)


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


def pair_plan(value: np.ndarray | None) -> tuple[np.ndarray, int] | None:
    """:func:`pair_pack` of a constant weight [K, nb*16] when ``avx2-pair`` should run it, else None: not a
    constant, or residual quads over ``PAIR_RESIDUAL_MAX`` of the K quads (then the residual pass costs more
    than ``vpmaddubsw`` saves over ``vpmaddwd``; see ``examples/results/isa_x86_avx2.md``).  The K-permutation
    search is costly (~3 s for a 4096x256 weight) and asked twice per GEMM (fallback choice, then packing):
    cached by the weight's bytes."""
    if value is None:
        return None
    w = np.ascontiguousarray(value, dtype=np.int8)
    return _pair_plan_of(w.shape, w.tobytes(), PAIR_RESIDUAL_MAX)


@functools.lru_cache(maxsize=8)
def _pair_plan_of(shape: tuple[int, ...], data: bytes, limit: float) -> tuple[np.ndarray, int] | None:
    packed, r = pair_pack(np.frombuffer(data, np.int8).reshape(shape), limit)
    if packed is None or r > limit * packed.shape[2]:
        return None
    packed.setflags(write=False)  # shared by every caller of the cache
    return packed, r


def _packed(kind: str, bpad: relax.Expr, k: int, nb: int) -> tuple[str, relax.Expr, int]:
    """(kind, packed B, residual quads): ``avx2-pair`` falls back to ``avx2`` (madd16) per :func:`pair_plan`."""
    if kind != "avx2-pair":
        return kind, pack_b(kind, bpad, k, nb), 0
    plan = pair_plan(_const_value(bpad))
    if plan is None:
        return "avx2", pack_b("avx2", bpad, k, nb), 0
    return kind, relax.const(plan[0], "int8"), plan[1]


def _flip_correction(kind: str, a_dtype: str, bpad: relax.Expr, out: relax.Expr) -> relax.Expr:
    """u8-operand kernels computed sum (a + 128) b for s8 A: subtract 128 * colsum(B) (a constant)."""

    if a_dtype != "int8" or SCHEMES[kind].kstep == 2:
        return out
    colsum = op.sum(op.astype(bpad, "int32"), axis=[0], keepdims=True)
    return op.add(out, op.multiply(colsum, scalar(-128, "int32")))


def emit_matmul(ctx: Any, kind: str, a: relax.Expr, bpad: relax.Expr, k: int, nb: int) -> relax.Expr:
    """``a @ bpad`` (N already padded to nb*16) in int32 with the ``kind`` kernel; [M, nb*16]."""

    at = dtype_of(a)
    kind, bp, r = _packed(kind, bpad, k, nb)
    out = ctx.call_tir(
        (f"gemm_{kind.replace('-', '_')}", k, nb, at, *((f"r{r}",) if r else ())),
        lambda: x86_kernel(kind, k, nb, at, resid=r),
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
    kind, bp, r = _packed(kind, bpad, k, 1)
    key = (f"gemm_{kind.replace('-', '_')}_quant", k, at, *params, *((f"r{r}",) if r else ()))
    out = ctx.call_tir(
        key, lambda: x86_kernel(kind, k, 1, at, params, resid=r), [x, bp], [shape_of(x)[0], LANES], "int32"
    )
    return _flip_correction(kind, at, bpad, out)


def emit_matmul_requant(
    ctx: Any, kind: str, a: relax.Expr, bpad: relax.Expr, k: int, nb: int, rq: np.ndarray, epi: Epilogue,
    qattrs: dict[str, Any] | None = None, addend: relax.Expr | None = None,
) -> relax.Expr | None:
    """``requantize(a @ bpad)`` (or of ``quantize(a) @ bpad`` with ``qattrs``) in one kernel: [M, epi.columns] of
    ``epi.out_dtype``; ``rq`` is :func:`.fusion.requant_epilogue_constants` padded to nb*16 columns; ``addend``: the
    ``D`` tensor of an epilogue with an addend (LoRAP's prompt tail).  None when the kernel would need the s8 flip
    correction (u8-operand kinds on s8 A), which must precede the requantize."""
    at = str(qattrs["dtype"]) if qattrs is not None else dtype_of(a)
    if kind == "avx2-pair" and at == "int8":
        # the pair kernel needs s8 A's flip correction before a requantize; madd16 takes s8 A as it is, so the
        # epilogue stays fused (measured: Cora's fused 16 -> 8 madd16 GEMM beats pair GEMM + requantize kernel)
        kind = "avx2"
    if at not in ("uint8", "int8") or (at == "int8" and SCHEMES[kind].kstep != 2):
        return None
    params = None
    if qattrs is not None:
        if kind not in QUANT_KINDS or nb != 1:
            return None
        if dtype_of(a) != "float32":
            a = op.astype(a, "float32")
        params = (float(qattrs["scale"]), int(qattrs["zero_point"]), int(qattrs["qmin"]), int(qattrs["qmax"]))
    kind, bp, r = _packed(kind, bpad, k, nb)
    key = (f"gemm_{kind.replace('-', '_')}{'_quant' if params else ''}", k, nb, at, *(params or ()), *epi.key(),
           *((f"r{r}",) if r else ()))
    return ctx.call_tir(
        key,
        lambda: x86_kernel(kind, k, nb, at, params, epi, resid=r),
        [a, bp, relax.const(np.ascontiguousarray(rq, np.int64), "int64"), *([] if addend is None else [addend])],
        [shape_of(a)[0], epi.columns],
        epi.out_dtype,
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
        return "avx2-pair"  # falls back to "avx2" per GEMM when the weight's residual is too large (_packed)
    return "sse2"  # SSE2 is part of the x86-64 baseline
