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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qgnn_deploy.ir.graph import Graph, Node
from qgnn_deploy.ir.passes import GraphPass, Sequential

BuildOptions = Any  # relax_builder.BuildOptions (not imported: relax_builder imports this module)


@dataclass
class FusionPlan:
    """Values computed inside another kernel (filled by the passes of :func:`fusion_pipeline`)."""

    gather_into_scatter: set[str] = field(default_factory=set)  # gather_rows outputs
    quantize_into_gemm: set[str] = field(default_factory=set)  # quantize outputs
    requantize_into_gemm: dict[str, str] = field(default_factory=dict)  # requantize output -> its matmul's output
    add_into_lut_steps: dict[str, tuple[str, int]] = field(default_factory=dict)  # add output -> (x, c)

    def skipped(self) -> set[str]:
        """Values whose own kernel is not emitted (their consumer's kernel computes them)."""
        return self.gather_into_scatter | self.quantize_into_gemm | set(self.requantize_into_gemm.values()) | \
            set(self.add_into_lut_steps)


def _weight_shape(graph: Graph, name: str) -> tuple[int, ...] | None:
    """Shape of a constant int8 weight (an initializer, or an ``unpack_int4`` of one), else None."""
    if name in graph.initializers:
        arr = graph.initializers[name]
        return tuple(arr.shape) if arr.dtype == np.int8 else None
    node = graph.producers().get(name)
    if node is not None and node.op == "unpack_int4":
        return tuple(int(s) for s in node.attrs["shape"])
    return None


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


def requant_epilogue_constants(graph: Graph, node: Node, n: int) -> np.ndarray | None:
    """``[3, n]`` int64 (multiplier, rounding half, shift) per output column of requantize ``node``, or None
    when its constants do not broadcast per column, its clip bounds are tensors, or a shift is outside
    [0, 63] (the fused kernel's ``>>`` is then not the handler's)."""
    if any(i < len(node.inputs) and node.inputs[i] for i in (3, 4)):
        return None
    mult, shift = _requant_constant(graph, node, 1, "multiplier"), _requant_constant(graph, node, 2, "shift")
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
    """requantize nodes whose int32 input is a matmul (zero points 0, constant int8 weight with K >= 4) read by
    nothing else, with per-column constants: on x86 GEMM kernels below VNNI (:data:`.gemm_x86.KINDS`)."""
    from .gemm_x86 import KINDS

    if not options.fast_matmul or options.gemm_kind not in KINDS:
        return []
    outputs = {o.name for o in graph.outputs}
    producers = graph.producers()
    for node in graph.nodes:
        if node.op != "requantize" or not node.inputs or node.inputs[0] in outputs:
            continue
        mm = producers.get(node.inputs[0])
        if mm is None or mm.op != "matmul" or len(mm.inputs) < 2 or \
                [u.name for u in graph.consumers(mm.outputs[0])] != [node.name]:
            continue
        if int(mm.attrs.get("a_zero_point", 0)) or int(mm.attrs.get("b_zero_point", 0)):
            continue
        shape = _weight_shape(graph, mm.inputs[1])
        if shape is None or len(shape) != 2 or shape[0] < 4 or \
                requant_epilogue_constants(graph, node, shape[1]) is None:
            continue
        plan.requantize_into_gemm[node.outputs[0]] = mm.outputs[0]
    return sorted(plan.requantize_into_gemm)


def add_into_lut_steps(graph: Graph, options: BuildOptions, plan: FusionPlan) -> list[str]:
    """add nodes ``x + c`` (``c`` a constant integer of one element, ``x`` not constant) whose every reader is a
    ``lut_steps`` reading it as the index only (with constant thresholds): the lookups shift their thresholds."""
    outputs = {o.name for o in graph.outputs}
    for node in graph.nodes:
        name = node.outputs[0]
        if node.op != "add" or name in outputs or len(node.inputs) != 2:
            continue
        consts = [i for i, v in enumerate(node.inputs) if v in graph.initializers]
        if len(consts) != 1:
            continue
        c = np.asarray(graph.initializers[node.inputs[consts[0]]])
        if c.size != 1 or c.ndim > 1 or not np.issubdtype(c.dtype, np.integer):
            continue
        users = graph.consumers(name)
        if users and all(u.op == "lut_steps" and u.inputs[0] == name and name not in u.inputs[1:] and
                         all(v in graph.initializers for v in u.inputs[1:3]) for u in users):
            plan.add_into_lut_steps[name] = (node.inputs[1 - consts[0]], int(c.reshape(())))
    return sorted(plan.add_into_lut_steps)


PASSES = (gather_into_scatter, quantize_into_gemm, requantize_into_gemm, add_into_lut_steps)


def fusion_pipeline(options: BuildOptions, plan: FusionPlan, skip: tuple[str, ...] = ()) -> Sequential:
    """The fusion passes in order (``skip``: pass names left out), recording into ``plan``."""
    return Sequential([GraphPass(fn.__name__, fn, {"options": options, "plan": plan})
                       for fn in PASSES if fn.__name__ not in skip], validate=False)


def plan_fusion(graph: Graph, options: BuildOptions) -> tuple[FusionPlan, dict[str, Any]]:
    """Run every fusion pass: (the plan, {pass name: fused values})."""
    plan = FusionPlan()
    return plan, fusion_pipeline(options, plan)(graph)
