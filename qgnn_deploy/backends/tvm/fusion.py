"""Which IR nodes the TVM build computes inside another node's kernel: named, individually tested passes.

Each pass reads the graph (never rewrites it) and records in a :class:`FusionPlan` which values are folded
into a neighbour's hand-written kernel; the Relax builder (:mod:`.relax_builder`) then skips their own
kernels.  The passes compose with :class:`qgnn_deploy.ir.passes.Sequential` like the IR pipelines do
(:func:`fusion_pipeline`), so each one can be switched off, reported and tested alone:

* ``gather_into_scatter``: ``gather_rows`` read only as the values of ``scatter_add``/``scatter_max``: one
  fused edge loop, no ``[E, H]`` message tensor;
* ``quantize_into_gemm``: a boundary ``quantize`` read only as the A operand of GEMMs with a constant int8
  weight: each GEMM quantizes its A panel itself, the uint8 copy never exists;
* ``requantize_into_gemm``: a ``requantize`` whose int32 input is a GEMM read by nothing else: the GEMM
  requantizes its accumulators in registers (:class:`.gemm_skeleton.Epilogue`), no int32 ``[N, H]`` round trip
  and one kernel launch fewer.  The builder falls back to the two kernels when the operand dtypes turn out
  not to allow it (see :func:`requant_epilogue_constants`);
* ``add_into_lut_steps``: ``x + c`` (``c`` a constant integer scalar) read only as the index of ``lut_steps``
  lookups (GCN's ``degree + 1``): the lookups take ``x`` and thresholds ``t - c`` (``x + c >= t`` iff
  ``x >= t - c``: the IR's ``add`` never wraps), one elementwise kernel fewer.
* ``attention_into_scatter``: GAT's ``scatter_add(gather(x, src) * repeat_cols(alpha, C), dst)``: one edge kernel
  reading ``alpha[e, head]`` per edge, no ``[E, H*C]`` tensor.
* ``requantize_into_scatter``: GCN's ``requantize(scatter_add(gather(m, src), dst) [+ m], multiplier)``, the
  multiplier per column or an ``[N, 1]`` tensor (degree factors): the edge kernel starts each row from its self
  term and requantizes on the way out, so the int32 ``[N, H]`` sums are never written and read back.
* ``prompt_into_gemm``: LoRAP's tail ``requantize((a - za) * den + alpha @ P [+ bias])`` (``fold.prompts.emit_lorap``)
  on x86 (AVX-512 VNNI; below it for u8 alpha): the prompt GEMM adds ``den * a`` in its requantize epilogue
  (:func:`.gemm.emit_prompt_requant`), so its int32 ``[N, H]`` product and the elementwise add/requantize kernel
  reading it back are gone.
* ``widen_gathered_rows``: a GEMM-requantized 8-bit ``[N, h]`` value read only through ``cast`` and a per-node
  product as the gathered messages of fused scatters (and their self terms), ``h`` not a power of two: the GEMM
  writes ``w`` = the next power of two (<= 16) columns and the edge kernels read rows of ``w`` bytes, which never
  straddle a cache line (``kernels.edge_reduce(x_width=w)``).
* ``softmax_into_vbmi``: LoRAP's softmax weights (``fold.prompts.emit_softmax_alpha``: the row max, the exp
  lookup, the row sum, the division; four stock kernels over ``[N, K]`` tensors) as one AVX-512 VBMI kernel that
  reads the scores once and writes the uint8 weights once (:mod:`.softmax`).
* ``dequantize_into_gemm``: a ``dequantize`` (the model's float logits) read from a requantize that a GEMM epilogue
  computes (``prompt_into_gemm`` or ``requantize_into_gemm``) and nothing else reads: the epilogue writes the float32
  values itself, so the 8-bit codes are never stored and read back by an elementwise kernel.

A "constant int8" weight or basis is an int8 initializer or a 4-bit one stored packed (``unpack_int4`` of a
constant): :func:`.gemm.int8_constant` gives both passes and emitters its values, so 4-bit models fuse like 8-bit ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from qgnn_deploy.ir.graph import Graph, Node
from qgnn_deploy.ir.passes import GraphPass, Sequential

BuildOptions = Any  # relax_builder.BuildOptions (not imported: relax_builder imports this module)


@dataclass(frozen=True)
class Attend:
    """One GAT aggregation computed by :func:`.kernels.edge_attend` (see :func:`attention_into_scatter`)."""

    scatter: str  # the scatter_add node's output
    gather: str  # gather_rows(x, src) output
    alpha: str  # per-edge coefficient [E, heads]
    c: int  # columns per head
    self_alpha: str | None = None  # per-node coefficient [N, heads] of the self term x * repeat_cols(self_alpha)
    requantize: str | None = None  # the requantize node (sole reader of the sum) the kernel applies on the way out


@dataclass(frozen=True)
class ScatterRequant:
    """A gathered scatter_add requantized inside its edge kernel (see :func:`requantize_into_scatter`)."""

    scatter: str  # the scatter_add node's output
    self_add: str | None = None  # add(scatter, m) output when each row also adds its own message m
    row_multiplier: bool = False  # the requantize's multiplier is an [N, 1] tensor (else per-column constants)


@dataclass(frozen=True)
class PromptTail:
    """LoRAP's ``requantize((a - agg_zero_point) * den + alpha @ basis [+ bias])`` (see :func:`prompt_into_gemm`)."""

    alpha: str  # alpha [N, k], 8-bit codes (the prompt GEMM's A)
    alpha_zero_point: int  # the GEMM's a_zero_point
    basis: str  # P [k, H], a constant int8 matrix (:func:`.gemm.int8_constant`: 8-bit, or 4-bit unpacked)
    agg: str  # a [N, H], 8-bit codes
    agg_zero_point: int  # subtracted from a's int32 cast (0: no sub node)
    den: int  # a's constant integer factor
    bias: str | None  # a constant int32 [H] or [1, H] added last
    inner: tuple[str, ...]  # the GEMM, a's cast (and sub), the product, the add(s): computed by the GEMM kernel
    # the kernel's [3, nb*16] int64 constants (gemm.prompt_epilogue_constants), computed once when planning and
    # read by gemm.emit_prompt_requant; not part of the tail's identity
    epilogue: np.ndarray | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class SoftmaxAlpha:
    """LoRAP's uint8 softmax weights computed by :func:`.softmax.alpha_kernel` (see :func:`softmax_into_vbmi`)."""

    scores: str  # z [N, k], int8
    k: int
    c1: int  # alpha = floor((c1 * e + tot) / (c2 * tot))
    c2: int
    inner: tuple[str, ...]  # the max, casts, difference, lookup, sum, numerator, denominator, quotient
    # the exp table reversed for the kernel (softmax.reversed_table): 256 int8 bit patterns
    table: np.ndarray = field(compare=False, repr=False, default_factory=lambda: np.zeros(256, np.int8))


@dataclass
class FusionPlan:
    """Values computed inside another kernel (filled by the passes of :func:`fusion_pipeline`)."""

    gather_into_scatter: set[str] = field(default_factory=set)  # gather_rows outputs
    quantize_into_gemm: set[str] = field(default_factory=set)  # quantize outputs
    requantize_into_gemm: dict[str, str] = field(default_factory=dict)  # requantize output -> its matmul's output
    add_into_lut_steps: dict[str, tuple[str, int]] = field(default_factory=dict)  # add output -> (x, c)
    # value the edge kernel computes (the scatter_add, or the add of it and the self term) -> its parts
    attention_into_scatter: dict[str, Attend] = field(default_factory=dict)
    attention_skipped: set[str] = field(default_factory=set)  # the mul / gather_rows / repeat_cols it absorbs
    requantize_into_scatter: dict[str, ScatterRequant] = field(default_factory=dict)  # requantize output -> parts
    prompt_into_gemm: dict[str, PromptTail] = field(default_factory=dict)  # requantize output -> LoRAP's tail
    dequantize_into_gemm: dict[str, str] = field(default_factory=dict)  # dequantize output -> its requantize output
    # GEMM-requantized value -> (its columns, the columns its GEMM writes)
    widen_gathered_rows: dict[str, tuple[int, int]] = field(default_factory=dict)
    softmax_into_vbmi: dict[str, SoftmaxAlpha] = field(default_factory=dict)  # uint8 alpha output -> its chain

    def skipped(self) -> set[str]:
        """Values whose own kernel is not emitted (their consumer's kernel computes them)."""
        return self.gather_into_scatter | self.quantize_into_gemm | set(self.requantize_into_gemm.values()) | \
            set(self.add_into_lut_steps) | self.attention_skipped | \
            {v for f in self.requantize_into_scatter.values() for v in (f.scatter, f.self_add) if v} | \
            {v for t in self.prompt_into_gemm.values() for v in t.inner} | set(self.dequantize_into_gemm.values()) | \
            {v for a in self.softmax_into_vbmi.values() for v in a.inner}


def _weight_shape(graph: Graph, name: str) -> tuple[int, ...] | None:
    """Shape of a constant int8 weight (:func:`.gemm.int8_constant`), else None."""
    from .gemm import int8_constant

    w = int8_constant(graph, name)
    return None if w is None else tuple(w.shape)


def gather_into_scatter(graph: Graph, options: BuildOptions, plan: FusionPlan) -> list[str]:
    """gather_rows outputs read only as values of scatter_add/scatter_max: fold them into the scatter."""
    if not options.fuse_gather_scatter:
        return []
    outputs = {o.name for o in graph.outputs}
    for name, node in graph.producers().items():
        if node.op != "gather_rows" or name in outputs:
            continue
        users = graph.consumers(name)
        if users and all(u.op in ("scatter_add", "scatter_max") and u.inputs[0] == name and
                         name not in u.inputs[1:] for u in users):
            plan.gather_into_scatter.add(name)
    return sorted(plan.gather_into_scatter)


def quantize_into_gemm(graph: Graph, options: BuildOptions, plan: FusionPlan) -> list[str]:
    """quantize outputs read only as the A operand of matmuls with a constant int8 weight (b_zero_point 0) on a
    target whose GEMM quantizes its panel (:func:`.gemm.fusable_quant`)."""
    from .gemm import fusable_quant

    if not options.fast_matmul:
        return []
    outputs = {o.name for o in graph.outputs}
    for node in graph.nodes:
        name = node.outputs[0]
        if node.op != "quantize" or name in outputs:
            continue
        users = graph.consumers(name)
        ok = bool(users)
        for u in users:
            w = u.inputs[1] if u.op == "matmul" and len(u.inputs) > 1 else None
            shape = _weight_shape(graph, w) if w is not None else None
            attrs = {"dtype": node.attrs["dtype"], "b_zero_point": u.attrs.get("b_zero_point", 0)}
            if u.op != "matmul" or u.inputs[0] != name or name in u.inputs[1:] or \
                    not fusable_quant(shape, attrs, options.gemm_kind):
                ok = False
        if ok:
            plan.quantize_into_gemm.add(name)
    return sorted(plan.quantize_into_gemm)


def _requant_constant(graph: Graph, node: Node, i: int, attr: str) -> np.ndarray | None:
    """Input ``i`` of a requantize as a constant array (its attribute when the input is absent), else None."""
    if i < len(node.inputs) and node.inputs[i]:
        return graph.initializers.get(node.inputs[i])
    return np.asarray(node.attrs[attr]) if attr in node.attrs else None


def requant_epilogue_constants(graph: Graph, node: Node, n: int, row_multiplier: bool = False) -> np.ndarray | None:
    """``[3, n]`` int64 (multiplier, rounding half, shift) per output column of requantize ``node``, or None
    when its constants do not broadcast per column, its clip bounds are tensors, or a shift is outside
    [0, 63] (the fused kernel's ``>>`` is then not the handler's).  ``row_multiplier``: the multiplier is a
    tensor the kernel reads per row (its row here is 1, unread)."""
    if any(i < len(node.inputs) and node.inputs[i] for i in (3, 4)):
        return None
    mult = np.ones(1, np.int64) if row_multiplier else _requant_constant(graph, node, 1, "multiplier")
    shift = _requant_constant(graph, node, 2, "shift")
    if mult is None or shift is None:
        return None
    cols = []
    for arr in (mult, shift):
        a = np.asarray(arr)
        if a.ndim > 2 or (a.ndim == 2 and a.shape[0] != 1) or a.size not in (1, n) or \
                not np.issubdtype(a.dtype, np.integer):
            return None
        cols.append(np.broadcast_to(a.astype(np.int64).reshape(-1), (n,)))
    m64, s64 = cols
    if s64.min() < 0 or s64.max() > 63:
        return None
    half = np.where(s64 > 0, np.left_shift(np.int64(1), np.maximum(s64 - 1, 0)), 0).astype(np.int64)
    return np.stack([m64, half, s64])


def requantize_into_gemm(graph: Graph, options: BuildOptions, plan: FusionPlan) -> list[str]:
    """requantize nodes whose int32 input is a matmul (B zero point 0, constant int8 weight with K >= 4, 8-bit or
    4-bit: :func:`.gemm.int8_constant`) read by nothing else, with per-column constants: on x86 GEMM kernels below VNNI
    (:data:`.gemm_x86.KINDS`), and on AVX-512 VNNI for an A read in place (:func:`.gemm.vnni_fuses_requant`; a
    K % 4 tail is multiplied in int32 first).  An A zero point (the uint8-input model's first GEMM) folds into the
    rounding constants on both (:func:`.gemm._fold_column_offset`; 10^6-node series model on AVX2: the separate
    subtract-and-requantize kernel over the int32 ``[N, 16]`` product, 14.5 ms at 1 thread, is gone)."""
    from qgnn_deploy.ir.infer import infer_dtypes

    from .gemm import VNNI_EPILOGUE_MAX_K, int8_constant, vnni_fuses_requant
    from .gemm_x86 import KINDS

    vnni = options.gemm_kind == "vnni"
    if not options.fast_matmul or (options.gemm_kind not in KINDS and not vnni):
        return []
    outputs = {o.name for o in graph.outputs}
    producers = graph.producers()
    dtypes = infer_dtypes(graph) if vnni else {}
    for node in graph.nodes:
        if node.op != "requantize" or not node.inputs or node.inputs[0] in outputs:
            continue
        mm = producers.get(node.inputs[0])
        if mm is None or mm.op != "matmul" or len(mm.inputs) < 2 or \
                [u.name for u in graph.consumers(mm.outputs[0])] != [node.name]:
            continue
        if int(mm.attrs.get("b_zero_point", 0)):
            continue
        shape = _weight_shape(graph, mm.inputs[1])
        if shape is None or len(shape) != 2 or shape[0] < 4 or \
                requant_epilogue_constants(graph, node, shape[1]) is None:
            continue
        if int(mm.attrs.get("a_zero_point", 0)) and not vnni and \
                (shape[0] > VNNI_EPILOGUE_MAX_K or int8_constant(graph, mm.inputs[1]) is None):
            continue  # the zero point folds into the rounding constants: needs the weight's values
        if vnni and (mm.inputs[0] in plan.quantize_into_gemm or not vnni_fuses_requant(dtypes[mm.inputs[0]], shape[0])):
            continue
        plan.requantize_into_gemm[node.outputs[0]] = mm.outputs[0]
    return sorted(plan.requantize_into_gemm)


def _int_scalar(graph: Graph, node: Node, x: str) -> int | None:
    """The constant integer scalar that binary ``node`` combines with ``x``, else None."""
    other = [v for v in node.inputs if v != x]
    if len(node.inputs) != 2 or len(other) != 1 or other[0] not in graph.initializers:
        return None
    c = np.asarray(graph.initializers[other[0]])
    return int(c.reshape(())) if c.size == 1 and c.ndim <= 1 and np.issubdtype(c.dtype, np.integer) else None


def add_into_lut_steps(graph: Graph, options: BuildOptions, plan: FusionPlan) -> list[str]:
    """add nodes ``x + c`` (``c`` a constant integer of one element, ``x`` not constant) whose every reader is a
    ``lut_steps`` reading it as the index only (with constant thresholds): the lookups shift their thresholds."""
    outputs = {o.name for o in graph.outputs}
    for node in graph.nodes:
        name = node.outputs[0]
        if node.op != "add" or name in outputs or len(node.inputs) != 2:
            continue
        consts = [i for i, v in enumerate(node.inputs) if v in graph.initializers]
        c = _int_scalar(graph, node, node.inputs[1 - consts[0]]) if len(consts) == 1 else None
        if c is None:
            continue
        users = graph.consumers(name)
        if users and all(u.op == "lut_steps" and u.inputs[0] == name and name not in u.inputs[1:] and
                         all(v in graph.initializers for v in u.inputs[1:3]) for u in users):
            plan.add_into_lut_steps[name] = (node.inputs[1 - consts[0]], c)
    return sorted(plan.add_into_lut_steps)


def _sole_user(graph: Graph, name: str, user: Node, outputs: set[str]) -> bool:
    return name not in outputs and [u.name for u in graph.consumers(name)] == [user.name]


def _head_coefficient(graph: Graph, coef: str, rows: Any, width: Any, user: Node, outputs: set[str],
                      shapes: dict, skip: set[str]) -> tuple[str, int] | None:
    """``(alpha, C)`` when ``coef`` (a mul operand against ``x [., width]``) is ``repeat_cols(alpha [rows, H], C)``
    with ``H * C = width`` or an ``[rows, 1]`` column (one head, ``C = width``); adds a sole-use repeat to ``skip``."""
    rep = graph.producers().get(coef)
    if rep is not None and rep.op == "repeat_cols":
        alpha, c = rep.inputs[0], int(rep.attrs["repeats"])
        if _sole_user(graph, coef, user, outputs):
            skip.add(coef)
    else:
        alpha, c = coef, width
        cs = shapes[coef]
        if len(cs) != 2 or cs[1] != 1:
            return None
    a_shape = shapes[alpha]
    if not isinstance(width, int) or not isinstance(c, int) or c < 1 or len(a_shape) != 2 or \
            not isinstance(a_shape[1], int) or a_shape[1] * c != width or a_shape[0] is None or a_shape[0] != rows:
        return None
    return alpha, c


def _self_term(graph: Graph, scatter: Node, x: str, width: Any, outputs: set[str], shapes: dict,
               skip: set[str]) -> tuple[str, str] | None:
    """``(add output, self alpha)`` when the scatter's only user is ``add(scatter, x * repeat_cols(a_self, C))``."""
    users = graph.consumers(scatter.outputs[0])
    if len(users) != 1 or users[0].op != "add" or scatter.outputs[0] in outputs:
        return None
    add = users[0]
    other = [i for i in add.inputs if i != scatter.outputs[0]]
    mul = graph.producers().get(other[0]) if len(other) == 1 else None
    if mul is None or mul.op != "mul" or x not in mul.inputs or len(set(mul.inputs)) != 2 or \
            not _sole_user(graph, mul.outputs[0], add, outputs):
        return None
    n_dim = shapes[scatter.inputs[2]][0]
    if shapes[x][0] != n_dim or n_dim is None:
        return None
    mine: set[str] = set()
    found = _head_coefficient(graph, [i for i in mul.inputs if i != x][0], n_dim, width, mul, outputs, shapes, mine)
    if found is None:
        return None
    skip |= mine | {mul.outputs[0], scatter.outputs[0]}
    return add.outputs[0], found[0]


def _requant_reader(graph: Graph, value: str, width: int, outputs: set[str]) -> str | None:
    """The requantize node that is the only reader of ``value``, when its constants fit an epilogue."""
    users = graph.consumers(value)
    if value in outputs or len(users) != 1 or users[0].op != "requantize" or users[0].inputs[0] != value or \
            value in users[0].inputs[1:] or requant_epilogue_constants(graph, users[0], width) is None:
        return None
    return users[0].outputs[0]


def attention_into_scatter(graph: Graph, options: BuildOptions, plan: FusionPlan) -> list[str]:
    """``scatter_add(mul(gather_rows(x, src), a), dst)`` with a per-edge, per-head coefficient ``a``: either
    ``repeat_cols(alpha [E, H], C)`` against ``x [N, H*C]`` or an ``[E, 1]`` column (one head): one edge kernel
    (:func:`.kernels.edge_attend`) reads ``x``'s rows and ``alpha`` per edge, so the ``[E, H*C]`` message,
    coefficient and product tensors are never built (GAT's attention-weighted aggregation).  When the sum's only
    user adds the self term ``x * repeat_cols(alpha_self [N, H], C)``, the kernel starts each row from it; when
    the result's only reader is a requantize with per-column constants, the kernel writes its narrow output."""
    if not options.fuse_gather_scatter:
        return []
    from qgnn_deploy.ir.infer import infer_ranks, infer_shapes

    outputs = {o.name for o in graph.outputs}
    producers = graph.producers()
    shapes, ranks = infer_shapes(graph), infer_ranks(graph)
    for node in graph.nodes:
        if node.op != "scatter_add" or node.inputs[0] in outputs or ranks[node.inputs[1]] != 1:
            continue
        mul = producers.get(node.inputs[0])
        if mul is None or mul.op != "mul" or len(set(mul.inputs)) != 2 or \
                not _sole_user(graph, mul.outputs[0], node, outputs):
            continue
        for gi in (0, 1):
            gather = producers.get(mul.inputs[gi])
            if gather is None or gather.op != "gather_rows" or ranks[gather.inputs[1]] != 1 or \
                    not _sole_user(graph, gather.outputs[0], mul, outputs):
                continue
            x = gather.inputs[0]
            xs = shapes[x]
            width = xs[1] if len(xs) == 2 else None
            skip = {mul.outputs[0], gather.outputs[0]}
            found = _head_coefficient(graph, mul.inputs[1 - gi], shapes[gather.inputs[1]][0], width, mul, outputs,
                                      shapes, skip)
            if found is None:
                continue
            alpha, c = found
            self_term = _self_term(graph, node, x, width, outputs, shapes, skip)
            key, self_alpha = self_term if self_term is not None else (node.outputs[0], None)
            rq = _requant_reader(graph, key, width, outputs)
            if rq is not None:
                skip.add(key)
                key = rq
            plan.attention_into_scatter[key] = Attend(node.outputs[0], gather.outputs[0], alpha, c, self_alpha, rq)
            plan.attention_skipped |= skip
            break
    return sorted(plan.attention_into_scatter)


def _row_multiplier(graph: Graph, node: Node, rows: Any, shapes: dict, dtypes: dict) -> bool:
    """Whether requantize ``node``'s multiplier is a non-constant integer ``[rows, 1]`` tensor."""
    if len(node.inputs) < 2 or not node.inputs[1] or node.inputs[1] in graph.initializers:
        return False
    return shapes[node.inputs[1]] == (rows, 1) and rows is not None and \
        np.issubdtype(np.dtype(dtypes[node.inputs[1]]), np.integer)


def requantize_into_scatter(graph: Graph, options: BuildOptions, plan: FusionPlan) -> list[str]:
    """``requantize(scatter_add(gather_rows(m, src), dst) [+ m])`` where the gather is folded into the scatter
    (run :func:`gather_into_scatter` first), each value read by the next alone, ``m`` at most 32 bits wide with
    the output's rows, and the requantize's multiplier per column (constant) or an ``[N, 1]`` tensor, its shift
    constant per column and its bounds attributes: the edge kernel (:func:`.kernels.edge_reduce`) starts each
    row from ``m``'s own row and writes the requantized codes."""
    if not options.fuse_gather_scatter:
        return []
    from qgnn_deploy.ir.infer import infer_dtypes, infer_shapes

    outputs = {o.name for o in graph.outputs}
    producers = graph.producers()
    shapes, dtypes = infer_shapes(graph), infer_dtypes(graph)
    for node in graph.nodes:
        if node.op != "scatter_add" or node.inputs[0] not in plan.gather_into_scatter:
            continue
        m = producers[node.inputs[0]].inputs[0]
        rows = shapes[node.outputs[0]][0]
        if np.dtype(dtypes[m]).itemsize > 4:
            continue
        key, self_add = node.outputs[0], None
        users = graph.consumers(key)
        if len(users) == 1 and users[0].op == "add" and sorted(users[0].inputs) == sorted([key, m]) and \
                key not in outputs and shapes[m] == shapes[key]:
            key = self_add = users[0].outputs[0]
        users = graph.consumers(key)
        if key in outputs or len(users) != 1 or users[0].op != "requantize" or users[0].inputs[0] != key or \
                key in users[0].inputs[1:]:
            continue
        rq, shape = users[0], shapes[key]
        row_mult = _row_multiplier(graph, rq, rows, shapes, dtypes)
        if len(shape) != 2 or not isinstance(shape[1], int) or \
                requant_epilogue_constants(graph, rq, shape[1], row_mult) is None:
            continue
        plan.requantize_into_scatter[rq.outputs[0]] = ScatterRequant(node.outputs[0], self_add, row_mult)
    return sorted(plan.requantize_into_scatter)


def _prompt_tail(graph: Graph, mm: Node, dtypes: dict, shapes: dict) -> tuple[Node, PromptTail] | None:
    """``(requantize node, tail)`` when matmul ``mm`` is LoRAP's prompt GEMM ``alpha @ P`` followed by
    ``requantize(cast(a) [- za]) * den + mm [+ bias])``, every value int32 and read by the next alone."""
    prod = graph.producers()
    outputs = {o.name for o in graph.outputs}

    def sole(name: str, op: str) -> Node | None:  # the only reader of ``name``, when it is an ``op`` node
        users = graph.consumers(name)
        ok = name not in outputs and len(users) == 1 and users[0].op == op and dtypes[name] == "int32"
        return users[0] if ok else None

    from .gemm import int8_constant

    p = int8_constant(graph, mm.inputs[1]) if len(mm.inputs) == 2 else None
    if p is None or p.ndim != 2 or p.shape[0] < 4 or int(mm.attrs.get("b_zero_point", 0)):
        return None
    add = sole(mm.outputs[0], "add")
    other = [v for v in add.inputs if v != mm.outputs[0]] if add is not None else []
    mul = prod.get(other[0]) if len(other) == 1 and len(add.inputs) == 2 else None  # type: ignore[union-attr]
    if mul is None or mul.op != "mul" or sole(mul.outputs[0], "add") is not add:
        return None
    centered = next((prod[v] for v in mul.inputs if v in prod and prod[v].op in ("cast", "sub")), None)
    den = _int_scalar(graph, mul, centered.outputs[0]) if centered is not None else None
    if den is None or sole(centered.outputs[0], "mul") is not mul:
        return None
    inner, zp, cast = [mm.outputs[0], centered.outputs[0], mul.outputs[0], add.outputs[0]], 0, centered
    if centered.op == "sub":
        cast = prod.get(centered.inputs[0])
        zp = _int_scalar(graph, centered, centered.inputs[0])  # type: ignore[assignment]
        if cast is None or cast.op != "cast" or zp is None or sole(cast.outputs[0], "sub") is not centered:
            return None
        inner.append(cast.outputs[0])
    agg = cast.inputs[0]
    if dtypes[agg] not in ("int8", "uint8") or shapes[agg] != shapes[mm.outputs[0]]:
        return None
    last, bias = add, None
    nxt = sole(add.outputs[0], "add")
    if nxt is not None and len(nxt.inputs) == 2 and len(set(nxt.inputs)) == 2:
        bias = [v for v in nxt.inputs if v != add.outputs[0]][0]
        b = graph.initializers.get(bias)
        if b is None or b.dtype != np.int32 or b.size != p.shape[1] or b.ndim > 2 or (b.ndim == 2 and b.shape[0] != 1):
            return None
        last = nxt
        inner.append(nxt.outputs[0])
    rq = sole(last.outputs[0], "requantize")
    if rq is None or rq.inputs[0] != last.outputs[0] or last.outputs[0] in rq.inputs[1:]:
        return None
    return rq, PromptTail(mm.inputs[0], int(mm.attrs.get("a_zero_point", 0)), mm.inputs[1], agg, zp, den, bias,
                          tuple(inner))


def prompt_into_gemm(graph: Graph, options: BuildOptions, plan: FusionPlan) -> list[str]:
    """LoRAP's ``requantize((a - za) * den + alpha @ P [+ bias])`` (``alpha [N, k]``, ``a [N, H]`` 8-bit codes,
    ``P`` a constant int8 ``[k, H]`` (8-bit or 4-bit: :func:`.gemm.int8_constant`) with ``k >= 4``, ``den`` and ``za``
    constant integers, ``bias`` a constant int32 row, every intermediate int32 and read by the next alone) on
    x86 (AVX-512 VNNI; below it for u8 alpha), when its constants fold exactly
    (:func:`.gemm.prompt_epilogue_constants`, kept in :attr:`PromptTail.epilogue`): one GEMM kernel with an
    ``addend`` epilogue."""
    from .gemm_x86 import KINDS

    vnni = options.gemm_kind == "vnni"
    if not options.fast_matmul or (options.gemm_kind not in KINDS and not vnni):
        return []
    from qgnn_deploy.ir.infer import infer_dtypes, infer_shapes

    from .gemm import prompt_epilogue_constants

    dtypes, shapes = infer_dtypes(graph), infer_shapes(graph)
    for node in graph.nodes:
        if node.op != "matmul" or node.inputs[0] in plan.quantize_into_gemm:
            continue
        found = _prompt_tail(graph, node, dtypes, shapes)
        if found is None:
            continue
        rq, tail = found
        if not vnni and dtypes[tail.alpha] != "uint8":
            continue  # below VNNI the GEMMs that take s8 A as it is are not every kind's: u8 alpha (LoRAP's) only
        consts = prompt_epilogue_constants(graph, tail, lambda n, rq=rq: requant_epilogue_constants(graph, rq, n),
                                           dtypes[tail.alpha], dtypes[tail.agg], flip=vnni)
        if consts is not None:
            plan.prompt_into_gemm[rq.outputs[0]] = replace(tail, epilogue=consts)
    return sorted(plan.prompt_into_gemm)


def _softmax_chain(graph: Graph, div: Node, dtypes: dict, shapes: dict) -> tuple[str, SoftmaxAlpha] | None:
    """``(alpha output, chain)`` when ``div`` is the ``div_floor`` of ``emit_softmax_alpha``'s chain over int8
    scores of a static width in :data:`.softmax.KS`, its values read by the next ones alone, the table uint8 with a
    positive entry at the row maximum (so ``tot > 0``), and the float32 division exact for its constants."""
    from . import softmax

    prod, outputs = graph.producers(), {o.name for o in graph.outputs}

    def node_of(name: str, op: str, readers: int = 1) -> Node | None:  # producer of ``name``, read ``readers`` times
        n = prod.get(name)
        ok = n is not None and n.op == op and name not in outputs and len(graph.consumers(name)) == readers
        return n if ok else None

    def one_input(node: Node | None, exclude: str) -> str | None:  # the input of binary ``node`` other than exclude
        other = [v for v in node.inputs if v != exclude] if node is not None and len(node.inputs) == 2 else []
        return other[0] if len(other) == 1 else None

    users = graph.consumers(div.outputs[0])
    if len(users) != 1 or users[0].op != "cast" or users[0].attrs.get("dtype") != "uint8" or \
            div.outputs[0] in outputs:
        return None
    num, den = (node_of(v, op) for v, op in zip(div.inputs, ("add", "mul")))
    if num is None or den is None or len(div.inputs) != 2:
        return None
    tot_name = next((v for v in den.inputs if v not in graph.initializers), None)
    c2 = _int_scalar(graph, den, tot_name) if tot_name is not None else None
    tot = node_of(tot_name, "reduce_sum", 2) if tot_name is not None else None
    es = node_of(one_input(num, tot_name) or "", "mul")
    if tot is None or c2 is None or es is None or tot_name not in num.inputs:
        return None
    e_name = tot.inputs[0]
    c1 = _int_scalar(graph, es, e_name)
    e = node_of(e_name, "cast", 2)
    lut = node_of(e.inputs[0], "lut") if e is not None else None
    d = node_of(lut.inputs[0], "sub") if lut is not None else None
    z32, m32 = (node_of(v, "cast") for v in d.inputs) if d is not None and len(d.inputs) == 2 else (None, None)
    zmax = node_of(m32.inputs[0], "reduce_max") if m32 is not None else None
    if c1 is None or es.inputs.count(e_name) != 1 or zmax is None or z32 is None or \
            {u.name for u in graph.consumers(e_name)} != {tot.name, es.name}:
        return None
    z = z32.inputs[0]
    table = graph.initializers.get(lut.inputs[1]) if len(lut.inputs) == 2 else None
    shape = shapes.get(z, ())
    k = shape[1] if len(shape) == 2 and isinstance(shape[1], int) else None
    axes_ok = all(int(n.attrs.get("axis", -1)) in (1, -1) and bool(n.attrs.get("keepdims", True)) for n in (tot, zmax))
    if zmax.inputs[0] != z or dtypes[z] != "int8" or k not in softmax.KS or not axes_ok or table is None or \
            table.dtype != np.uint8 or table.ndim != 1 or dtypes[e_name] != "int32" or dtypes[d.outputs[0]] != "int32":
        return None
    rtab = softmax.reversed_table(table, int(lut.attrs.get("offset", 0)))
    if rtab.view(np.uint8)[0] == 0 or not softmax.exact_in_float32(k, c1, c2, int(table.max())):
        return None
    inner = tuple(n.outputs[0] for n in (zmax, z32, m32, d, lut, e, tot, es, num, den, div))
    return users[0].outputs[0], SoftmaxAlpha(z, k, c1, c2, inner, rtab)


def softmax_into_vbmi(graph: Graph, options: BuildOptions, plan: FusionPlan) -> list[str]:
    """LoRAP's softmax weights ``uint8(floor((c1 * e + tot) / (c2 * tot)))`` (``e`` the exp lookup of each score
    minus its row maximum, ``tot`` the row sum of ``e``: :func:`qgnn_deploy.fold.prompts.emit_softmax_alpha`) as one
    :func:`.softmax.alpha_kernel` on x86 with AVX-512 VBMI (:func:`_softmax_chain` gives the conditions)."""
    if not (options.fast_matmul and options.vbmi):
        return []
    from qgnn_deploy.ir.infer import infer_dtypes, infer_shapes

    dtypes, shapes = infer_dtypes(graph), infer_shapes(graph)
    for node in graph.nodes:
        found = _softmax_chain(graph, node, dtypes, shapes) if node.op == "div_floor" else None
        if found is not None:
            plan.softmax_into_vbmi[found[0]] = found[1]
    return sorted(plan.softmax_into_vbmi)


DEQUANTIZE_MAX_ZERO_POINT = 1 << 30  # the epilogue subtracts the zero point from the codes in int32: no wrap


def dequantize_into_gemm(graph: Graph, options: BuildOptions, plan: FusionPlan) -> list[str]:
    """``dequantize`` nodes whose input is a requantize computed in a GEMM epilogue (planned by
    :func:`requantize_into_gemm` or :func:`prompt_into_gemm`, so run them first), read by the dequantize alone
    and not a graph output: the epilogue converts its codes to float32 (:class:`.gemm_skeleton.Epilogue`
    ``dequantize``) and writes those."""
    outputs = {o.name for o in graph.outputs}
    for node in graph.nodes:
        if node.op != "dequantize" or len(node.inputs) != 1:
            continue
        src = node.inputs[0]
        if (src in plan.prompt_into_gemm or src in plan.requantize_into_gemm) and \
                _sole_user(graph, src, node, outputs) and \
                abs(int(node.attrs.get("zero_point", 0))) < DEQUANTIZE_MAX_ZERO_POINT:
            plan.dequantize_into_gemm[node.outputs[0]] = src
    return sorted(plan.dequantize_into_gemm)


WIDEN_MAX = 16  # widest padded row (one GEMM column block; an edge kernel's row in one vector)


def widen_gathered_rows(graph: Graph, options: BuildOptions, plan: FusionPlan) -> list[str]:
    """8-bit ``[N, h]`` values a GEMM epilogue requantizes (:func:`requantize_into_gemm`, run first), ``h`` not a
    power of two and below :data:`WIDEN_MAX`, read only by int32 ``cast`` nodes that only ``mul`` nodes read, each
    by a ``[N, 1]`` coefficient and read only as the gathered rows of fused scatters (:func:`gather_into_scatter`)
    or as the self term of a requantized one (:func:`requantize_into_scatter`): the GEMM writes the next power of
    two columns (the padding columns' codes are never used) and the edge kernels read aligned rows.

    Why: a GCN's 7-class layer gathers a 7-byte row per edge; 7 rows in 64 straddle two cache lines.  The 10^6-node
    series model's layer-1 aggregation (AMD Zen 4, 2 threads): 13.7 -> 10.8 ms in isolation (stop 31)."""
    from qgnn_deploy.ir.infer import infer_dtypes, infer_shapes

    outputs = {o.name for o in graph.outputs}
    shapes, dtypes = infer_shapes(graph), infer_dtypes(graph)
    self_adds = {f.self_add for f in plan.requantize_into_scatter.values() if f.self_add}
    for value in plan.requantize_into_gemm:
        shape = shapes.get(value)
        if value in outputs or dtypes.get(value) not in ("int8", "uint8") or shape is None or len(shape) != 2 or \
                not isinstance(shape[1], int):
            continue
        h = int(shape[1])
        w = 1 << max(h - 1, 0).bit_length()
        if w == h or w > WIDEN_MAX:
            continue

        def gathered_product(mul: Node, v: str, rows: Any) -> bool:  # v * coef[rows, 1], read as messages alone
            other = [i for i in mul.inputs if i != v]
            users = graph.consumers(mul.outputs[0])
            return mul.op == "mul" and len(other) == 1 and shapes.get(other[0]) == (rows, 1) and \
                mul.outputs[0] not in outputs and bool(users) and \
                all(u.outputs[0] in plan.gather_into_scatter or u.outputs[0] in self_adds for u in users)

        casts = graph.consumers(value)
        if casts and all(c.op == "cast" and c.attrs.get("dtype") == "int32" and c.outputs[0] not in outputs and
                         graph.consumers(c.outputs[0]) and
                         all(gathered_product(m, c.outputs[0], shape[0]) for m in graph.consumers(c.outputs[0]))
                         for c in casts):
            plan.widen_gathered_rows[value] = (h, w)
    return sorted(plan.widen_gathered_rows)


PASSES = (gather_into_scatter, quantize_into_gemm, requantize_into_gemm, add_into_lut_steps, attention_into_scatter,
          requantize_into_scatter, prompt_into_gemm, dequantize_into_gemm, widen_gathered_rows, softmax_into_vbmi)


def fusion_pipeline(options: BuildOptions, plan: FusionPlan, skip: tuple[str, ...] = ()) -> Sequential:
    """The fusion passes in order (``skip``: pass names left out), recording into ``plan``."""
    return Sequential([GraphPass(fn.__name__, fn, {"options": options, "plan": plan})
                       for fn in PASSES if fn.__name__ not in skip], validate=False)


def plan_fusion(graph: Graph, options: BuildOptions) -> tuple[FusionPlan, dict[str, Any]]:
    """Run every fusion pass: (the plan, {pass name: fused values})."""
    plan = FusionPlan()
    return plan, fusion_pipeline(options, plan)(graph)
