"""Build a Relax ``IRModule`` straight from the integer IR (no ONNX importer).

One handler per IR op (``HANDLERS[op_name]``), each reproducing the NumPy
interpreter bit for bit.  Writing Relax directly keeps control of dtypes (a
``u8 x s8 -> i32`` matmul without an int32 copy of the activations), lets int4
weights stay packed in the IR, and lets the graph-structure ops use
deterministic hand-written TIR kernels (:mod:`.kernels`).

Shapes: every symbolic IR dimension (``"N"``, ``"E"``, ...) becomes one int64
TIR variable shared by all inputs that use it, so one compiled library runs on
any graph size and the VM checks that the inputs agree.  ``pool_sum``'s output
size ``G = max(batch) + 1`` depends on data: it is computed in-graph and turned
into a shape with ``tensor_to_shape`` + ``match_cast``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tvm
from tvm import relax, tirx
from tvm.sym import Analyzer

from qgnn_deploy.errors import QgnnError
from qgnn_deploy.ir.bounds import value_ranges
from qgnn_deploy.ir.graph import Graph, Node
from qgnn_deploy.ir.interpreter import wider
from qgnn_deploy.ir.ops import OPS, HandlerTable, steps_search_plan

from . import kernels, softmax
from .fusion import plan_fusion, requant_epilogue_constants
from .relax_ops import dtype_of, op, scalar, shape_of

Handler = Callable[["BuildContext", Node], relax.Expr]
HANDLERS: HandlerTable[Handler] = HandlerTable("tvm")


def handler(name: str) -> Callable[[Handler], Handler]:
    """Register the Relax builder of IR op ``name`` (one per op, checked against ``ir/ops.py``)."""
    return HANDLERS.register(name)


@dataclass
class BuildOptions:
    """Knobs that change speed, never results."""

    fuse_gather_scatter: bool = True  # gather_rows feeding only a scatter -> one fused edge loop
    fast_matmul: bool = True  # hand-scheduled GEMM kernels (VNNI on x86 when available)
    parts: int = 1  # row ranges the graph kernels split their output into (= target cores)
    gemm_kind: str = "generic"  # "vnni" (AVX-512 VNNI), gemm_x86.KINDS, "sdot" (AArch64 dotprod) or "generic"
    vbmi: bool = False  # x86 with AVX-512 VBMI: LoRAP's softmax weights as one kernel (fusion.softmax_into_vbmi)
    static_dims: dict[str, int] = field(default_factory=dict)  # e.g. {"N": 2708, "E": 13264} for tuned builds
    serial_work: int = kernels.SERIAL_WORK  # kernels with less work than this run on the calling thread (0: never)


class BuildContext:
    """State while translating one graph: the block builder and IR value -> Relax var."""

    def __init__(self, graph: Graph, bb: relax.BlockBuilder, options: BuildOptions) -> None:
        self.graph = graph
        self.bb = bb
        self.options = options
        self.env: dict[str, relax.Expr] = {}
        self.fused_away: set[str] = set()  # gather_rows outputs folded into a fused scatter kernel
        self.quant_fused: set[str] = set()  # quantize outputs computed inside their matmuls' GEMM kernel
        self.requant_fused: dict[str, str] = {}  # requantize output -> matmul output it requantizes in-kernel
        self.lut_offsets: dict[str, tuple[str, int]] = {}  # add output x + c -> (x, c), read by lut_steps only
        self.shifted_tables: dict[tuple[Any, ...], relax.Expr] = {}  # (thresholds, -c[, cmp]) -> (probe of) t - c
        self.attend_fused: dict[str, Any] = {}  # value -> fusion.Attend: computed by one edge_attend kernel
        self.scatter_requant: dict[str, Any] = {}  # requantize output -> fusion.ScatterRequant (edge_reduce epilogue)
        self.prompt_fused: dict[str, Any] = {}  # requantize output -> fusion.PromptTail (gemm.emit_prompt_requant)
        self.dequant_fused: dict[str, str] = {}  # dequantize output -> requantize output its GEMM epilogue computes
        # GEMM-requantized value -> (its columns, the columns its GEMM writes): fusion.widen_gathered_rows
        self.widened: dict[str, tuple[int, int]] = {}
        self.softmax_fused: dict[str, Any] = {}  # uint8 alpha output -> fusion.SoftmaxAlpha (softmax.alpha_kernel)
        self.index_rows: dict[str, tuple[relax.Expr, int]] = {}  # take_row outputs: (2-D int64 source, row)
        # (index vector, rows) -> ([index tensor, flag, rowptr], row)
        self.edge_plans: dict[tuple[str, str], tuple[list[relax.Expr], int]] = {}
        # (index vector, rows) -> (col, source row): the plan's int32 sources in CSR order (kernels.edge_plan)
        self.edge_cols: dict[tuple[str, str], tuple[relax.Expr, int]] = {}
        # [(col, coef, packed col)]: kernels.pack_coef's col with the 8-bit coefficients in its top byte
        self.packed_cols: list[tuple[relax.Expr, relax.Expr, relax.Expr]] = []
        # edge_plan kernels whose col some kernel reads as it is (not through pack_coef, which reads sorted sources
        # from the index tensor itself): they write col for sorted edges too (finish_edge_plans)
        self.plan_col_read: set[relax.GlobalVar] = set()
        # (index vector, rows) -> (its plan kernel, a maker of the kernel without sorted col)
        self.plan_kernels: dict[tuple[str, str], tuple[relax.GlobalVar, Callable[[], tirx.PrimFunc]]] = {}
        self.deferred: dict[str, Callable[[], relax.Expr]] = {}  # emitted on first use (a row copy few need)
        self._kernels: dict[tuple[Any, ...], relax.GlobalVar] = {}
        self._counter = 0
        self._ranges: dict[str, tuple[int, int]] | None = None

    @property
    def ranges(self) -> dict[str, tuple[int, int]]:
        """Static integer ranges of the graph's values (:func:`qgnn_deploy.ir.bounds.value_ranges`), computed once."""
        if self._ranges is None:
            self._ranges = value_ranges(self.graph)
        return self._ranges

    # ------------------------------------------------------------------ helpers
    def arg(self, node: Node, i: int) -> relax.Expr | None:
        if i >= len(node.inputs) or not node.inputs[i]:
            return None
        return self.value(node.inputs[i], node)

    def value(self, name: str, user: Node | None = None) -> relax.Expr:
        """The Relax expression of IR value ``name`` (emitting a deferred one, or a constant, on first use)."""
        if name not in self.env and name in self.deferred:
            self.env[name] = self.bb.emit(self.deferred.pop(name)())
        if name not in self.env:
            if name not in self.graph.initializers:
                where = f" used by {user.op} node {user.name!r}" if user is not None else ""
                raise QgnnError(f"value {name!r}{where} is not defined")
            arr = np.ascontiguousarray(self.graph.initializers[name])
            # relax.const silently narrows int64 arrays to int32 unless the dtype is given.
            self.env[name] = relax.const(arr, str(arr.dtype))
        return self.env[name]

    def const_value(self, node: Node, i: int) -> np.ndarray | None:
        """The NumPy value of input ``i`` when it is a graph constant."""
        if i < len(node.inputs) and node.inputs[i] in self.graph.initializers:
            return self.graph.initializers[node.inputs[i]]
        return None

    def emit(self, expr: relax.Expr) -> relax.Expr:
        return self.bb.emit(expr)

    def kernel(self, key: tuple[Any, ...], make: Callable[[], tirx.PrimFunc]) -> relax.GlobalVar:
        """Add a TIR kernel once per specialisation ``key`` (the default ``serial_work`` is left out of the name)."""
        if key not in self._kernels:
            name = "qgnn_" + "_".join(str(k) for k in key if not isinstance(k, _SerialWork) or k != kernels.SERIAL_WORK)
            self._kernels[key] = self.bb.add_func(make(), name)
        return self._kernels[key]

    def call_tir(self, key: tuple[Any, ...], make: Callable[[], tirx.PrimFunc], args: list[relax.Expr],
                 shape: list[Any], dtype: str) -> relax.Expr:
        gv = self.kernel(key, make)
        return self.emit(relax.call_tir(gv, args, out_ty=relax.TensorType(shape, dtype)))


class _SerialWork(int):
    """``serial_work`` inside a kernel key (named only when it is not the default)."""

    def __str__(self) -> str:
        return f"sw{int(self)}"


def static_int(v: Any) -> int | None:
    if isinstance(v, int):
        return v
    if isinstance(v, tirx.IntImm):
        return int(v.value)
    return None


def cast(e: relax.Expr, dtype: str) -> relax.Expr:
    return e if dtype_of(e) == dtype else op.astype(e, dtype)


# ---------------------------------------------------------------------- float boundary
@handler("quantize")
def _quantize(ctx: BuildContext, node: Node) -> relax.Expr:
    a = node.attrs
    x = cast(ctx.arg(node, 0), "float32")
    # np.rint is round-half-even; so is TIR round (llvm nearbyint).  Clip in float: exact below 2**24.
    r = op.round(op.divide(x, scalar(a["scale"], "float32")))
    r = op.add(r, scalar(int(a["zero_point"]), "float32"))
    r = op.minimum(op.maximum(r, scalar(a["qmin"], "float32")), scalar(a["qmax"], "float32"))
    return op.astype(r, a["dtype"])


@handler("quantize_rows")
def _quantize_rows(ctx: BuildContext, node: Node) -> relax.Expr:
    x, scale, qmin, qmax = (ctx.arg(node, i) for i in range(4))
    r = op.round(op.divide(cast(x, "float32"), cast(scale, "float32")))
    r = op.minimum(op.maximum(r, cast(qmin, "float32")), cast(qmax, "float32"))
    return op.astype(r, node.attrs["dtype"])


def _gemm_dequantize(ctx: BuildContext, node: Node) -> relax.Expr | None:
    """``dequantize(requantize(...))`` as the requantize's GEMM kernel writing float32 (``fusion.dequantize_into_gemm``
    planned it); None when that GEMM's operands do not allow the epilogue (``gemm.emit_matmul_requant``)."""
    from . import gemm

    rq = ctx.graph.producers()[node.inputs[0]]
    if rq.outputs[0] in ctx.prompt_fused:
        return gemm.emit_prompt_requant(ctx, ctx.prompt_fused[rq.outputs[0]], rq, node)
    return gemm.emit_matmul_requant(ctx, ctx.graph.producers()[rq.inputs[0]], rq,
                                    lambda n: requant_epilogue_constants(ctx.graph, rq, n), node)


@handler("dequantize")
def _dequantize(ctx: BuildContext, node: Node) -> relax.Expr:
    if node.outputs[0] in ctx.dequant_fused:  # the requantize's GEMM epilogue dequantizes (dequantize_into_gemm)
        fused = _gemm_dequantize(ctx, node)
        if fused is not None:
            return fused
        rq = ctx.graph.producers()[node.inputs[0]]  # the codes after all (the GEMM kernels fall back themselves)
        expr = HANDLERS["requantize"](ctx, rq)
        ctx.env[rq.outputs[0]] = expr if isinstance(expr, relax.Var) else ctx.emit(expr)
    q = cast(ctx.arg(node, 0), "int64")
    zp = int(node.attrs["zero_point"])
    if zp:
        q = op.subtract(q, scalar(zp, "int64"))
    return op.multiply(op.astype(q, "float32"), scalar(node.attrs["scale"], "float32"))


# ---------------------------------------------------------------------- integer ops
@handler("unpack_int4")
def _unpack_int4(ctx: BuildContext, node: Node) -> relax.Expr:
    """A packed constant (4-bit weights, LoRAP bases) is unpacked at build time (:func:`.gemm.int8_constant`, the
    values the fused GEMM epilogues fold), so every GEMM gets an int8 constant as for an 8-bit model."""
    from .gemm import int8_constant

    values = int8_constant(ctx.graph, node.outputs[0])
    if values is not None:
        return relax.const(np.ascontiguousarray(values), "int8")
    packed = cast(ctx.arg(node, 0), "uint8")
    shape = [int(s) for s in node.attrs["shape"]]
    count = int(np.prod(shape))
    (p,) = shape_of(packed) if len(shape_of(packed)) == 1 else [None]
    if p is None:
        packed = op.reshape(packed, [-1])
    lo = op.bitwise_and(packed, scalar(15, "uint8"))
    hi = op.right_shift(packed, scalar(4, "uint8"))
    nib = op.astype(op.reshape(op.stack([lo, hi], axis=1), [-1]), "int16")
    nib = op.where(op.greater_equal(nib, scalar(8, "int16")), op.subtract(nib, scalar(16, "int16")), nib)
    nib = op.strided_slice(nib, axes=[0], begin=[0], end=[count])
    return op.reshape(op.astype(nib, "int8"), shape)


def _zero_point_terms(ctx: BuildContext, a: relax.Expr, b: relax.Expr, acc: relax.Expr, za: int, zb: int,
                      k: Any) -> relax.Expr:
    """sum_k (a - za)(b - zb) = a.b - za*colsum(b) - zb*rowsum(a) + K*za*zb (exact in wrapping int32)."""
    if za:
        colsum = op.sum(op.astype(b, "int32"), axis=[0], keepdims=True)
        acc = op.subtract(acc, op.multiply(colsum, scalar(za, "int32")))
    if zb:
        rowsum = op.sum(op.astype(a, "int32"), axis=[1], keepdims=True)
        acc = op.subtract(acc, op.multiply(rowsum, scalar(zb, "int32")))
    if za and zb:
        if not isinstance(k, int):
            raise QgnnError("matmul with both zero points needs a static inner dimension")
        acc = op.add(acc, scalar(k * za * zb, "int32"))
    return acc


@handler("matmul")
def _matmul(ctx: BuildContext, node: Node) -> relax.Expr:
    za, zb = int(node.attrs.get("a_zero_point", 0)), int(node.attrs.get("b_zero_point", 0))
    if node.inputs[0] in ctx.quant_fused:  # quantize -> matmul: the quantize runs inside the GEMM kernel
        from . import gemm

        b = ctx.arg(node, 1)
        q = ctx.graph.producers()[node.inputs[0]]
        acc = gemm.emit_quant_matmul(ctx, ctx.arg(q, 0), b, q.attrs)
        return _zero_point_terms(ctx, None, b, acc, za, zb, static_int(shape_of(b)[0]))
    a, b = ctx.arg(node, 0), ctx.arg(node, 1)
    k = static_int(shape_of(b)[0])
    acc = None
    if ctx.options.fast_matmul:
        from . import gemm

        acc = gemm.emit_matmul(ctx, a, b)
    if acc is None:
        acc = ctx.emit(op.matmul(a, b, out_dtype="int32"))
    return _zero_point_terms(ctx, a, b, acc, za, zb, k)


def _binary(fn: Callable[[relax.Expr, relax.Expr], relax.Expr]) -> Handler:
    def h(ctx: BuildContext, node: Node) -> relax.Expr:
        a, b = ctx.arg(node, 0), ctx.arg(node, 1)
        res = wider(np.dtype(dtype_of(a)), np.dtype(dtype_of(b)))
        return fn(cast(a, res), cast(b, res))

    return h


HANDLERS["add"] = _binary(op.add)
HANDLERS["sub"] = _binary(op.subtract)
HANDLERS["mul"] = _binary(op.multiply)


F32_EXACT_DIVISION = 1 << 24  # div_floor in float32 is exact while |a| + b stays below this (see _div_floor)


@handler("div_floor")
def _div_floor(ctx: BuildContext, node: Node) -> relax.Expr:
    """floor(a / b) for b > 0.  Operands of at most 32 bits go through float64: exact, since the quotient's
    rounding error (|a / b| * 2**-53) is below its distance to the next integer (1 / |b|) whenever
    |a| < 2**53; it vectorises (vdivpd), where an integer division is one scalar idiv per element.

    When the static ranges (``ctx.ranges``) bound ``|a| + b`` below 2**24 the division runs in float32 (twice the
    lanes, and a cheaper divide): ``a`` and ``b`` are then exact float32 values, and a non-integer quotient ``a / b``
    lies at least ``1 / b`` from the integers around it, more than half an ulp of a number below ``(|a| + b) / b``,
    so rounding cannot carry it across one (LoRAP's softmax weights: ``|a| + b`` about 2**17)."""
    a, b = ctx.arg(node, 0), ctx.arg(node, 1)
    res = wider(np.dtype(dtype_of(a)), np.dtype(dtype_of(b)))
    if np.dtype(res).itemsize > 4:
        return op.floor_divide(cast(a, res), cast(b, res))
    ra, rb = ctx.ranges.get(node.inputs[0]), ctx.ranges.get(node.inputs[1])
    small = ra is not None and rb is not None and max(-ra[0], ra[1]) + max(rb[1], 1) < F32_EXACT_DIVISION
    ft = "float32" if small else "float64"
    q = op.floor(op.divide(cast(a, ft), cast(b, ft)))
    return op.astype(q, str(res))


@handler("cast")
def _cast(ctx: BuildContext, node: Node) -> relax.Expr:
    if node.outputs[0] in ctx.softmax_fused:  # the cast of LoRAP's softmax weights: the whole chain, one kernel
        return _softmax_alpha(ctx, ctx.softmax_fused[node.outputs[0]])
    return cast(ctx.arg(node, 0), node.attrs["dtype"])


def _softmax_alpha(ctx: BuildContext, chain: Any) -> relax.Expr:
    """:func:`.softmax.alpha_kernel` over the ``[N, K]`` scores."""
    z = ctx.value(chain.scores)
    k, pp, sw = chain.k, ctx.options.parts, _SerialWork(ctx.options.serial_work)
    return ctx.call_tir(("softmax_vbmi", k, chain.c1, chain.c2, pp, sw),
                        lambda: softmax.alpha_kernel(k, chain.c1, chain.c2, pp, serial_work=int(sw)),
                        [z, relax.const(chain.table, "int8"), relax.const(softmax.patterns(k), "int8")],
                        [shape_of(z)[0], k], "uint8")


@handler("clamp")
def _clamp(ctx: BuildContext, node: Node) -> relax.Expr:
    x = ctx.arg(node, 0)
    dt = dtype_of(x)
    info = np.iinfo(dt)
    lo = min(max(int(node.attrs["lo"]), int(info.min)), int(info.max))
    hi = min(max(int(node.attrs["hi"]), int(info.min)), int(info.max))
    if int(node.attrs["lo"]) > int(node.attrs["hi"]):  # np.clip with lo > hi yields hi everywhere
        lo = hi
    return op.minimum(op.maximum(x, scalar(lo, dt)), scalar(hi, dt))


@handler("requantize")
def _requantize(ctx: BuildContext, node: Node) -> relax.Expr:
    if node.outputs[0] in ctx.requant_fused:  # matmul -> requantize: the GEMM requantizes in its epilogue
        from . import gemm

        mm = ctx.graph.producers()[node.inputs[0]]
        fused = gemm.emit_matmul_requant(ctx, mm, node, lambda n: requant_epilogue_constants(ctx.graph, node, n),
                                         columns=ctx.widened.get(node.outputs[0], (0, None))[1])
        if fused is not None:
            return fused
        expr = HANDLERS["matmul"](ctx, mm)  # operands the epilogue cannot take: both kernels after all
        ctx.env[mm.outputs[0]] = expr if isinstance(expr, relax.Var) else ctx.emit(expr)
    a = node.attrs
    acc = cast(ctx.arg(node, 0), "int64")
    mult, shift, qmin, qmax = (ctx.arg(node, i) for i in range(1, 5))
    info = np.iinfo(a["dtype"])
    m = cast(mult, "int64") if mult is not None else scalar(int(a["multiplier"]), "int64")
    y = op.multiply(acc, m)
    if shift is not None:
        n = cast(shift, "int64")
        one = scalar(1, "int64")
        half = op.where(op.greater(n, scalar(0, "int64")),
                        op.left_shift(one, op.maximum(op.subtract(n, one), scalar(0, "int64"))),
                        scalar(0, "int64"))
        y = op.right_shift(op.add(y, half), n)  # arithmetic shift on int64 = floor division by 2**n
    else:
        s = int(a["shift"])
        if s > 0:
            y = op.add(y, scalar(1 << (s - 1), "int64"))
        if s:
            y = op.right_shift(y, scalar(s, "int64"))
    zp = int(a["zero_point"])
    if zp:
        y = op.add(y, scalar(zp, "int64"))
    lo = cast(qmin, "int64") if qmin is not None else scalar(int(a.get("qmin", info.min)), "int64")
    hi = cast(qmax, "int64") if qmax is not None else scalar(int(a.get("qmax", info.max)), "int64")
    return op.astype(op.minimum(op.maximum(y, lo), hi), a["dtype"])


# ---------------------------------------------------------------------- graph structure
@handler("take_row")
def _take_row(ctx: BuildContext, node: Node) -> relax.Expr:
    x = ctx.arg(node, 0)
    i = int(node.attrs["index"])

    def copy() -> relax.Expr:
        return op.squeeze(ctx.emit(op.strided_slice(x, axes=[0], begin=[i], end=[i + 1])), axis=[0])

    if len(shape_of(x)) == 2 and dtype_of(x) == "int64":
        # graph kernels read the row in place (``_index_row``); the copy is made only if another op needs it
        ctx.index_rows[node.outputs[0]] = (x, i)
        ctx.deferred[node.outputs[0]] = copy
        return None
    return copy()


@handler("gather_rows")
def _gather_rows(ctx: BuildContext, node: Node) -> relax.Expr:
    # "clip", not TOPI's default "fast": an index the runners' input checks missed cannot read out of bounds
    # (and the build prints no "Fast mode segfaults" warning per gather)
    return op.take(ctx.arg(node, 0), ctx.arg(node, 1), axis=0, mode="clip")


def _rows_2d(e: relax.Expr) -> tuple[relax.Expr, list[Any], int]:
    """View values as [rows, H] with static H; returns (tensor, original trailing dims, H)."""
    shp = shape_of(e)
    tail = shp[1:]
    h = 1
    for d in tail:
        v = static_int(d)
        if v is None:
            raise QgnnError("the TVM backend needs static feature widths (trailing dims) for scatter ops")
        h *= v
    if len(shp) != 2:
        e = op.reshape(e, [shp[0], h])
    return e, tail, h


def _restore(ctx: BuildContext, out: relax.Expr, n: Any, tail: list[Any]) -> relax.Expr:
    return out if len(tail) == 1 else ctx.emit(op.reshape(out, [n, *tail]))


def _fused_gather(ctx: BuildContext, node: Node) -> Node | None:
    """The gather_rows node ``x[src]`` when input 0 of a scatter is one folded into this scatter."""
    name = node.inputs[0]
    return ctx.graph.producers()[name] if name in ctx.fused_away else None


_NARROW = ("int8", "uint8", "int16", "uint16")


def _narrow_source(ctx: BuildContext, name: str) -> relax.Expr | None:
    """``x`` when the IR value ``name`` is ``cast(x)`` of a narrow integer tensor."""
    node = ctx.graph.producers().get(name)
    if node is None or node.op != "cast":
        return None
    x = ctx.arg(node, 0)
    return x if dtype_of(x) in _NARROW else None


def _centered_source(ctx: BuildContext, name: str) -> tuple[relax.Expr, int] | None:
    """``(x, zp)`` when ``name`` is ``cast(x)`` or ``cast(x) - zp`` with x narrow and zp a constant scalar."""
    x = _narrow_source(ctx, name)
    if x is not None:
        return x, 0
    node = ctx.graph.producers().get(name)
    if node is None or node.op != "sub" or name not in ctx.env or dtype_of(ctx.env[name]) != "int32":
        return None
    zp = ctx.const_value(node, 1)
    x = _narrow_source(ctx, node.inputs[0])
    if x is None or zp is None or zp.size != 1:
        return None
    return x, int(zp.reshape(()))


def _same_dim(a: Any, b: Any) -> bool:
    return bool(Analyzer().can_prove_equal(a, b))


def _factored_message(ctx: BuildContext, name: str) -> tuple[relax.Expr, int, relax.Expr | None] | None:
    """``(x, zp, coef)`` when the int32 message ``name`` is ``(x - zp) [* coef]``: x narrow [N,H], coef [N,1].

    Then the fused kernel gathers the narrow rows (and the per-node coefficient, itself read through its
    cast when narrow) instead of int32 messages; the int32 product is recomputed per edge, exactly.
    """
    if name not in ctx.env or dtype_of(ctx.env[name]) != "int32":
        return None
    centered = _centered_source(ctx, name)
    if centered is not None:
        return (*centered, None) if len(shape_of(centered[0])) == 2 else None
    node = ctx.graph.producers().get(name)
    if node is None or node.op != "mul":
        return None
    for rows, col in ((0, 1), (1, 0)):
        centered = _centered_source(ctx, node.inputs[rows])
        coef = ctx.arg(node, col)
        if centered is None or len(shape_of(centered[0])) != 2 or len(shape_of(coef)) != 2:
            continue
        x, zp = centered
        (n_x, _), (n_c, w) = shape_of(x), shape_of(coef)
        if static_int(w) != 1 or static_int(n_c) == 1 or not _same_dim(n_x, n_c):
            continue
        narrow = _narrow_source(ctx, node.inputs[col])
        return x, zp, narrow if narrow is not None else coef
    return None


def _real_width(ctx: BuildContext, x: relax.Expr, width: int | None) -> int | None:
    """The IR width of ``x``'s rows: ``width`` unless ``x`` is a value its GEMM writes wider
    (``fusion.widen_gathered_rows``)."""
    for name, (h, _w) in ctx.widened.items():
        if name in ctx.env and ctx.env[name].same_as(x):
            return h
    return width


def _index_row(ctx: BuildContext, node: Node, i: int) -> tuple[relax.Expr, int]:
    """Input ``i`` (an int64 index vector) as (a [R, E] tensor, row): ``edge_index`` itself for its rows."""
    name = node.inputs[i]
    if name in ctx.index_rows:
        return ctx.index_rows[name]
    idx = ctx.arg(node, i)
    return ctx.emit(op.reshape(idx, [1, shape_of(idx)[0]])), 0


def _plan_source_row(ctx: BuildContext, dst: str) -> int | None:
    """The row of the index tensor ``dst`` is a row of that a gathered scatter into ``dst`` reads its sources
    from (``x[src]`` with ``src``, ``dst`` rows of one ``edge_index``), if any: the plan then writes those sources
    in CSR order as int32 ``col`` (counting-sorted for unsorted edges, narrowed for sorted: ``kernels.edge_plan``)."""
    producers = ctx.graph.producers()
    take = producers.get(dst)
    if take is None or take.op != "take_row" or dst not in ctx.index_rows:
        return None
    attended = {f.scatter for f in ctx.attend_fused.values()}  # edge_attend keeps its own unsorted path
    for node in ctx.graph.nodes:
        if node.op not in ("scatter_add", "scatter_max") or node.inputs[1] != dst or node.outputs[0] in attended:
            continue
        gather = _fused_gather(ctx, node)
        src = producers.get(gather.inputs[1]) if gather is not None else None
        if src is not None and src.op == "take_row" and src.inputs[0] == take.inputs[0]:
            return int(src.attrs["index"])
    return None


def _edge_plan(ctx: BuildContext, node: Node, i: int, n: Any) -> tuple[list[relax.Expr], int]:
    """([index tensor, ascending flag, CSR row pointers], row) for index input ``i`` scattering into ``n`` rows
    (``kernels.edge_plan``: one pass per index vector and row count per call, shared by every kernel; it writes
    the gathered sources in CSR order as int32 ``col`` too, kept in ``ctx.edge_cols``; for sorted edges only when
    a kernel reads ``col`` other than through ``pack_coef``: :func:`finish_edge_plans`)."""
    key = (node.inputs[i], str(n))
    if key not in ctx.edge_plans:
        tensor, row = _index_row(ctx, node, i)
        sw = _SerialWork(ctx.options.serial_work)
        sr = _plan_source_row(ctx, node.inputs[i])
        gv = ctx.kernel(("edge_plan", ctx.options.parts, row, sw) + (() if sr is None else (f"col{sr}",)),
                        lambda: kernels.edge_plan(ctx.options.parts, row, sr, serial_work=int(sw)))
        e = shape_of(tensor)[1]
        plan = ctx.emit(relax.call_tir(gv, [tensor], out_ty=[relax.TensorType([1], "int32"),
                                                                relax.TensorType([n + 1], "int64")]
                                       + ([] if sr is None else [relax.TensorType([e], "int32")])))
        ctx.edge_plans[key] = ([tensor, ctx.emit(relax.TupleGetItem(plan, 0)),
                                ctx.emit(relax.TupleGetItem(plan, 1))], row)
        if sr is not None:
            ctx.edge_cols[key] = (ctx.emit(relax.TupleGetItem(plan, 2)), sr)
            ctx.plan_kernels[key] = (gv, lambda: kernels.edge_plan(ctx.options.parts, row, sr, serial_work=int(sw),
                                                                     sorted_col=False))
    return ctx.edge_plans[key]


def finish_edge_plans(ctx: BuildContext) -> None:
    """Rebuild as ``kernels.edge_plan(sorted_col=False)`` every plan whose ``col`` only ``pack_coef`` reads: it
    takes sorted sources from the index tensor itself, so the sorted pass need not write them.  Called once every
    kernel is emitted, when all readers of each plan are known."""
    for gv, make in ctx.plan_kernels.values():
        if gv not in ctx.plan_col_read:
            ctx.bb.update_func(gv, make())


def _packed_col(ctx: BuildContext, col: relax.Expr, coef: relax.Expr, plan: list[relax.Expr], sr: int,
                ) -> relax.Expr:
    """``col`` with ``coef``'s 8-bit values in its top byte (``kernels.pack_coef``), one pass per (col, coef)
    pair: both layers of a GCN scale by the same degree coefficients, so they share it.  The pack reads sorted
    sources from row ``sr`` of the plan's index tensor (``plan`` = [index tensor, flag, row pointers])."""
    for c, k, packed in ctx.packed_cols:
        if c.same_as(col) and k.same_as(coef):
            return packed
    pp, sw, cdt = ctx.options.parts, _SerialWork(ctx.options.serial_work), dtype_of(coef)
    packed = ctx.call_tir(("pack_coef", cdt, pp, sw, f"src{sr}"),
                          lambda: kernels.pack_coef(cdt, pp, sr, serial_work=int(sw)),
                          [*plan, col, coef], shape_of(col), "int32")
    ctx.packed_cols.append((col, coef, packed))
    return packed


def _requant_epilogue(ctx: BuildContext, rq: Node, width: int, row_multiplier: bool = False,
                      ) -> tuple[tuple[int, int, int, str], relax.Expr]:
    """A fused requantize's ``(zero_point, qmin, qmax, dtype)`` and its ``[3, width]`` int64 constants
    (:func:`.fusion.requant_epilogue_constants`) for an edge kernel's epilogue."""
    info = np.iinfo(rq.attrs["dtype"])
    params = (int(rq.attrs["zero_point"]), int(rq.attrs.get("qmin", info.min)), int(rq.attrs.get("qmax", info.max)),
              str(rq.attrs["dtype"]))
    return params, relax.const(requant_epilogue_constants(ctx.graph, rq, width, row_multiplier), "int64")


def _scatter(kind: str) -> Handler:
    def h(ctx: BuildContext, node: Node, rq: Node | None = None) -> relax.Expr:
        """The scatter ``node``; ``rq``: the requantize its kernel applies (``fusion.requantize_into_scatter``)."""
        ref = ctx.arg(node, 2)
        n = shape_of(ref)[0]
        dst_plan, dr = _edge_plan(ctx, node, 1, n)
        pp, sw = ctx.options.parts, _SerialWork(ctx.options.serial_work)
        gather = _fused_gather(ctx, node)
        factored = _factored_message(ctx, gather.inputs[0]) if gather is not None else None
        if gather is None:
            v, tail, hh = _rows_2d(ctx.arg(node, 0))
            dt = dtype_of(v)
            out = ctx.call_tir((f"scatter_{kind}", hh, dt, pp, dr, sw),
                               lambda: kernels.edge_reduce(hh, dt, pp, kind, dr, serial_work=int(sw)), [v, *dst_plan],
                               [n, hh], "int32")
            return _restore(ctx, out, n, tail)
        src, sr = _index_row(ctx, gather, 1)
        col, col_row = ctx.edge_cols.get((node.inputs[1], str(n)), (None, None))
        csr = col is not None and col_row == sr and src.same_as(dst_plan[0])
        if not csr:  # the kernel's col argument, unread
            col = relax.const(np.zeros(1, np.int32), "int32")
        if factored is None:
            x, tail, hh = _rows_2d(ctx.arg(gather, 0))
            zp, coef = 0, None
        else:
            (x, zp, coef), hh = factored, static_int(shape_of(factored[0])[1])
            hh = _real_width(ctx, x, hh)
            tail = [hh]
        dt, cdt = dtype_of(x), None if coef is None else dtype_of(coef)
        hx = static_int(shape_of(x)[1])
        if hx != hh and not csr:
            raise QgnnError(f"scatter {node.name!r}: rows widened to {hx} columns need the CSR edge kernel")
        packed = csr and cdt in kernels.PACKABLE_COEF
        if packed:
            col = _packed_col(ctx, col, coef, dst_plan, sr)
        elif csr:  # this kernel reads col itself: the plan must write it for sorted edges too
            ctx.plan_col_read.add(ctx.plan_kernels[(node.inputs[1], str(n))][0])
        key = (f"gather_scatter_{kind}", hh, dt, pp, sr, dr, sw) + (() if factored is None else (zp, cdt or "none")) \
            + (("csr",) if csr else ()) + (("packed",) if packed else ()) + ((f"x{hx}",) if hx != hh else ())
        fused = ctx.scatter_requant[rq.outputs[0]] if rq is not None else None
        self_term = fused is not None and fused.self_add is not None
        requant, rq_consts = None, relax.const(np.zeros((3, hh), np.int64), "int64")
        rm, rmdt = relax.const(np.zeros((1, 1), np.int64), "int64"), None  # the per-row multiplier (unread: none)
        if fused is not None:
            requant, rq_consts = _requant_epilogue(ctx, rq, hh, fused.row_multiplier)
            if fused.row_multiplier:
                rm = ctx.arg(rq, 1)
                rmdt = dtype_of(rm)
            key += ("self",) * self_term + ("rq", *(str(v).replace("-", "m") for v in requant), rmdt or "col")
        args = [x] + ([] if coef is None else [coef]) + [src, *dst_plan, col, rq_consts, rm]
        out = ctx.call_tir(key, lambda: kernels.edge_reduce(hh, dt, pp, kind, dr, sr, zp, cdt, csr,
                                                            serial_work=int(sw), self_term=self_term, requant=requant,
                                                            row_mult=rmdt, packed_col=packed,
                                                            x_width=hx), args, [n, hh],
                           requant[3] if requant else "int32")
        return _restore(ctx, out, n, tail)

    return h


def _attend(ctx: BuildContext, node: Node) -> relax.Expr:
    """GAT's attention-weighted sum (``fusion.attention_into_scatter``) as one edge kernel; ``node`` is the
    scatter_add, or the add of it and the self term."""
    fused = ctx.attend_fused[node.outputs[0]]
    producers = ctx.graph.producers()
    scatter, gather = producers[fused.scatter], producers[fused.gather]
    n = shape_of(ctx.arg(scatter, 2))[0]
    dst_plan, dr = _edge_plan(ctx, scatter, 1, n)
    src, sr = _index_row(ctx, gather, 1)
    centered = _centered_source(ctx, gather.inputs[0])
    x, zp = centered if centered is not None and len(shape_of(centered[0])) == 2 else (ctx.arg(gather, 0), 0)

    def coefficient(name: str) -> relax.Expr:
        narrow = _narrow_source(ctx, name)
        return narrow if narrow is not None and len(shape_of(narrow)) == 2 else ctx.value(name, node)

    alpha = coefficient(fused.alpha)
    heads, c = static_int(shape_of(alpha)[1]), fused.c
    width = heads * c
    a_self = None if fused.self_alpha is None else coefficient(fused.self_alpha)
    dt, adt, pp = dtype_of(x), dtype_of(alpha), ctx.options.parts
    sdt = None if a_self is None else dtype_of(a_self)
    requant, rq_consts = None, relax.const(np.zeros((3, width), np.int64), "int64")
    if fused.requantize is not None:
        requant, rq_consts = _requant_epilogue(ctx, producers[fused.requantize], width)
    unused = relax.const(np.zeros((1, heads), np.int32), "int32")
    key = ("attend", heads, c, dt, adt, sdt or "noself", zp, pp, sr, dr,
           "x".join(str(v).replace("-", "m") for v in requant) if requant else "i32")
    return ctx.call_tir(key, lambda: kernels.edge_attend(heads, c, dt, pp, dr, sr, zp, adt, sdt, requant),
                        [x, alpha, unused if a_self is None else a_self, src, *dst_plan,
                         rq_consts], [n, width], requant[3] if requant else "int32")


_scatter_add = _scatter("add")
_add = HANDLERS["add"]


@handler("scatter_add")
def _scatter_add_or_attend(ctx: BuildContext, node: Node) -> relax.Expr:
    return _attend(ctx, node) if node.outputs[0] in ctx.attend_fused else _scatter_add(ctx, node)


@handler("add")
def _add_or_attend(ctx: BuildContext, node: Node) -> relax.Expr:
    return _attend(ctx, node) if node.outputs[0] in ctx.attend_fused else _add(ctx, node)


_requantize_plain = HANDLERS["requantize"]


@handler("requantize")
def _requantize_or_attend(ctx: BuildContext, node: Node) -> relax.Expr:
    if node.outputs[0] in ctx.prompt_fused:  # LoRAP's prompt GEMM adds den * a in its epilogue (prompt_into_gemm)
        from . import gemm

        return gemm.emit_prompt_requant(ctx, ctx.prompt_fused[node.outputs[0]], node)
    if node.outputs[0] in ctx.scatter_requant:  # the edge kernel requantizes its sums (requantize_into_scatter)
        return _scatter_add(ctx, ctx.graph.producers()[ctx.scatter_requant[node.outputs[0]].scatter], node)
    return _attend(ctx, node) if node.outputs[0] in ctx.attend_fused else _requantize_plain(ctx, node)


HANDLERS["scatter_max"] = _scatter("max")


@handler("degree")
def _degree(ctx: BuildContext, node: Node) -> relax.Expr:
    n = shape_of(ctx.arg(node, 1))[0]
    plan, row = _edge_plan(ctx, node, 0, n)
    pp, sw = ctx.options.parts, _SerialWork(ctx.options.serial_work)
    return ctx.call_tir(("degree", pp, row, sw), lambda: kernels.degree(pp, row, serial_work=int(sw)), plan, [n, 1],
                        "int32")


@handler("lut")
def _lut(ctx: BuildContext, node: Node) -> relax.Expr:
    idx, table = ctx.arg(node, 0), ctx.arg(node, 1)
    pos = op.add(cast(idx, "int64"), scalar(int(node.attrs["offset"]), "int64"))
    return op.take(table, pos, axis=0, mode="clip")  # the IR's lut clamps the position into the table


DENSE_STEPS_SPAN = 1 << 16  # thresholds spanning at most this many indices: a count table built per call


@handler("lut_steps")
def _lut_steps(ctx: BuildContext, node: Node) -> relax.Expr:
    """One TIR kernel over the flattened index, like the ONNX handler: thresholds spanning at most
    ``DENSE_STEPS_SPAN`` indices build a count table per call and then cost one clipped gather per element
    (``kernels.lut_steps_dense``); wider ones run the branchless binary search of ``ir.ops.steps_search_plan``
    (``kernels.lut_steps``).  K = 0 is a constant."""
    thresholds, values = ctx.const_value(node, 1), ctx.const_value(node, 2)
    if thresholds is None or values is None:
        raise QgnnError(f"TVM backend: lut_steps {node.name!r} needs constant thresholds and values")
    table, thr = ctx.arg(node, 2), ctx.arg(node, 1)
    t = np.asarray(thresholds).astype(np.int64)
    if node.inputs[0] in ctx.lut_offsets:  # lut(x + c) = lut over x with thresholds t - c (fusion.add_into_lut_steps)
        src, c = ctx.lut_offsets[node.inputs[0]]
        idx, t = ctx.value(src, node), t - c
        tdt = next(d for d in ("int16", "int32", "int64") if t.size == 0 or
                   np.iinfo(d).min <= t.min() and t.max() <= np.iinfo(d).max)
        thresholds = t.astype(tdt)
        key = (node.inputs[1], -c)  # one constant per table and offset, so CSE still merges equal lookups
        thr = ctx.shifted_tables.setdefault(key, relax.const(thresholds, tdt))
    else:
        idx = ctx.arg(node, 0)
    if t.size == 0:
        return op.take(table, op.zeros_like(idx, dtype="int64"), axis=0, mode="clip")
    k = int(t.size)
    shape = shape_of(idx)
    w = static_int(shape[1]) if len(shape) == 2 else None
    flat = idx if w is not None else op.reshape(idx, [-1, 1])  # fold's [N, 1] degrees go in as they are
    w = w or 1
    rows = shape_of(flat)[0]
    idt, vdt, pp, sw = dtype_of(idx), dtype_of(table), ctx.options.parts, _SerialWork(ctx.options.serial_work)
    if t[-1] - t[0] + 2 <= DENSE_STEPS_SPAN:  # every table fold emits: the lookup's own cost, see the kernel
        base, span, tdt = int(t[0]) - 1, int(t[-1] - t[0] + 2), str(thresholds.dtype)
        out = ctx.call_tir(("lut_steps_dense", k, str(base).replace("-", "m"), span, idt, tdt, vdt, pp, w, sw),
                           lambda: kernels.lut_steps_dense(k, base, span, idt, tdt, vdt, pp, w, serial_work=int(sw)),
                           [flat, thr, table], [rows, w], vdt)
        return out if len(shape) == 2 else op.reshape(out, shape)
    narrow = ("int8", "uint8", "int16", "uint16", "int32")
    cmp = "int32" if dtype_of(idx) in narrow and str(thresholds.dtype) in narrow else "int64"
    first, strides = steps_search_plan(k)
    top = 2 * strides[0] if strides else 1
    probe = ctx.shifted_tables.setdefault(  # probe[c] = t[c - 1]; probe[0] unread.  One per table: CSE merges
        (node.inputs[1], int(t[0] - np.asarray(ctx.const_value(node, 1)).astype(np.int64)[0]), cmp),
        relax.const(np.concatenate([t[:1], t]).astype(cmp), cmp))
    out = ctx.call_tir(("lut_steps", k, first, top, idt, cmp, vdt, pp, w, sw),
                       lambda: kernels.lut_steps(k, first, top, idt, cmp, vdt, pp, w, serial_work=int(sw)),
                       [flat, probe, table], [rows, w], vdt)
    return out if len(shape) == 2 else op.reshape(out, shape)


@handler("reduce_max")
def _reduce_max(ctx: BuildContext, node: Node) -> relax.Expr:
    a = node.attrs
    return op.max(ctx.arg(node, 0), axis=[int(a.get("axis", -1))], keepdims=bool(a.get("keepdims", True)))


@handler("reduce_sum")
def _reduce_sum(ctx: BuildContext, node: Node) -> relax.Expr:
    a = node.attrs
    x = ctx.arg(node, 0)
    acc = "int32" if np.dtype(dtype_of(x)).itemsize <= 4 else "int64"
    return op.sum(cast(x, acc), axis=[int(a.get("axis", -1))], keepdims=bool(a.get("keepdims", True)))


@handler("concat")
def _concat(ctx: BuildContext, node: Node) -> relax.Expr:
    xs = [ctx.arg(node, i) for i in range(len(node.inputs))]
    return op.concat(xs, axis=int(node.attrs.get("axis", -1)))


@handler("repeat_cols")
def _repeat_cols(ctx: BuildContext, node: Node) -> relax.Expr:
    """``x[:, k]`` repeated ``C`` times in place: an injective op Relax fuses into its consumer (the per-head
    coefficient times the messages); the GAT aggregation reads it inside the edge kernel instead (fusion.py)."""
    return op.repeat(ctx.arg(node, 0), int(node.attrs["repeats"]), axis=1)


@handler("pool_sum")
def _pool_sum(ctx: BuildContext, node: Node) -> relax.Expr:
    values, batch = ctx.arg(node, 0), ctx.arg(node, 1)
    v, tail, hh = _rows_2d(values)
    # G = max(batch) + 1 is data-dependent: compute it, turn the 1-element tensor into a shape, bind a var.
    gmax = ctx.emit(op.add(op.max(batch, axis=[0], keepdims=True), scalar(1, "int64")))
    shp = ctx.emit(op.tensor_to_shape(gmax))
    g = ctx.graph_dim("G")
    ctx.bb.match_cast(shp, relax.ShapeType([g]))
    dt = dtype_of(v)
    pp, sw = ctx.options.parts, _SerialWork(ctx.options.serial_work)
    # sum pooling is a scatter-add of node rows into graph rows: the same kernel, G output rows
    plan, row = _edge_plan(ctx, node, 1, g)
    out = ctx.call_tir(("scatter_add", hh, dt, pp, row, sw),
                       lambda: kernels.edge_reduce(hh, dt, pp, "add", row, serial_work=int(sw)), [v, *plan], [g, hh],
                       "int32")
    return _restore(ctx, out, g, tail)


# ---------------------------------------------------------------------- driver
def _graph_dim(self: BuildContext, name: str) -> tirx.Var:
    """A fresh int64 var for a data-dependent dim (several pool_sum nodes each get their own)."""
    self._counter += 1
    return tirx.Var(name if self._counter == 1 else f"{name}{self._counter}", "int64")


BuildContext.graph_dim = _graph_dim  # type: ignore[attr-defined]


def check_supported(graph: Graph) -> None:
    missing = sorted({n.op for n in graph.nodes} - set(HANDLERS))
    if missing:
        raise QgnnError(f"the TVM backend has no handler for IR op(s) {', '.join(missing)}")
    if len(graph.outputs) != 1:
        raise QgnnError(f"the TVM backend expects exactly one graph output, got {len(graph.outputs)}")


def build_module(graph: Graph, options: BuildOptions | None = None) -> tvm.IRModule:
    """Relax module whose ``main(*graph.inputs)`` returns the graph's single output."""
    options = options or BuildOptions()
    check_supported(graph)
    assert set(OPS) <= set(HANDLERS), f"TVM backend lacks handlers for {set(OPS) - set(HANDLERS)}"
    dims: dict[str, Any] = {}

    def dim(d: Any) -> Any:
        if isinstance(d, int):
            return d
        if d in options.static_dims:
            return int(options.static_dims[d])
        if d not in dims:
            dims[d] = tirx.Var(str(d), "int64")
        return dims[d]

    params = [relax.Var(vi.name, relax.TensorType([dim(d) for d in vi.shape], vi.dtype)) for vi in graph.inputs]
    bb = relax.BlockBuilder()
    ctx = BuildContext(graph, bb, options)
    plan, _ = plan_fusion(graph, options)
    ctx.fused_away, ctx.quant_fused, ctx.requant_fused = (plan.gather_into_scatter, plan.quantize_into_gemm,
                                                          plan.requantize_into_gemm)
    ctx.lut_offsets = plan.add_into_lut_steps
    ctx.attend_fused = plan.attention_into_scatter
    ctx.scatter_requant = plan.requantize_into_scatter
    ctx.prompt_fused = plan.prompt_into_gemm
    ctx.dequant_fused = plan.dequantize_into_gemm
    ctx.widened = plan.widen_gathered_rows
    ctx.softmax_fused = plan.softmax_into_vbmi
    skipped = plan.skipped()
    op.bb = bb
    with bb.function("main", params):
        with bb.dataflow():
            for p, vi in zip(params, graph.inputs):
                ctx.env[vi.name] = p
            for node in graph.nodes:
                if node.outputs[0] in skipped:  # computed inside a consumer's kernel (fusion.py)
                    continue
                expr = HANDLERS[node.op](ctx, node)
                if expr is not None:  # None: deferred until first use (see BuildContext.value)
                    ctx.env[node.outputs[0]] = expr if isinstance(expr, relax.Var) else bb.emit(expr)
            out = bb.emit_output(ctx.value(graph.outputs[0].name))
        bb.emit_func_output(out)
    finish_edge_plans(ctx)
    return bb.get()
