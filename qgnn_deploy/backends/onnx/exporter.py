"""IR -> ONNX: the emission context, the handler registry and the model assembly.

Each IR op has exactly one handler (see :mod:`qgnn_deploy.backends.onnx.handlers`)
that appends standard ONNX nodes computing the op *exactly* as the reference
interpreter does.  Dtypes of every IR value are inferred statically with the
interpreter's rules, so handlers know when a cast is needed; ORT's CPU kernels
cover fewer integer types than NumPy (e.g. no int16 Add), so arithmetic runs in
int32/int64 and narrows at the end, which is exact for every valid input.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from qgnn_deploy.errors import QgnnError
from qgnn_deploy.ir.graph import Graph, Node
from qgnn_deploy.ir.infer import infer_dtypes, infer_ranks, infer_shapes
from qgnn_deploy.ir.ops import HandlerTable
from qgnn_deploy.ir.passes import merge_common_subexpressions

DEFAULT_OPSET = 21
PRODUCER = "qgnn-deploy"

ONNX_DTYPE: dict[str, int] = {
    "uint8": TensorProto.UINT8,
    "int8": TensorProto.INT8,
    "uint16": TensorProto.UINT16,
    "int16": TensorProto.INT16,
    "int32": TensorProto.INT32,
    "int64": TensorProto.INT64,
    "float32": TensorProto.FLOAT,
    "float64": TensorProto.DOUBLE,
    "uint64": TensorProto.UINT64,
    "bool": TensorProto.BOOL,
}

Handler = Callable[["EmitContext", Node], None]
HANDLERS: HandlerTable[Handler] = HandlerTable("onnx")
"""The ONNX emitter of each IR op; filled by :mod:`qgnn_deploy.backends.onnx.handlers` (which the package imports)."""


def handler(op: str) -> Callable[[Handler], Handler]:
    """Register the ONNX emitter of IR op ``op`` (one per op)."""
    return HANDLERS.register(op)


def compute_dtype(dtype: str) -> str:
    """The ORT-supported integer type arithmetic on ``dtype`` runs in."""
    return "int64" if dtype == "int64" else "int32"


class EmitContext:
    """State shared by the handlers while one IR graph becomes one ONNX graph."""

    def __init__(self, graph: Graph, opset: int = DEFAULT_OPSET, saturation_safe: bool = True,
                 aggregation: str = "csr", requantize: str = "auto", int8_gemm: str = "u8u8") -> None:
        self.graph = graph
        self.opset = opset
        self.saturation_safe = saturation_safe
        self.int8_gemm = int8_gemm  # "u8u8" or "split": the exact form of a saturating int8 GEMM (see matmul)
        self.aggregation = aggregation  # "csr" or "scatter" (see segment.py / docs/aggregation.md)
        self.requantize = requantize  # "auto" (float64 where a bound proves it exact), "int64": handlers/requantize.py
        self.dtypes = infer_dtypes(graph)
        self.ranks = infer_ranks(graph)
        self.shapes = infer_shapes(graph)
        self.memo: dict[Any, str] = {}
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: dict[str, onnx.TensorProto] = {}
        self._names: set[str] = set(self.dtypes)
        self._counter = 0
        self._emitted_inits: set[str] = set()
        self._cast_cache: dict[tuple[str, str], str] = {}
        self._const_cache: dict[tuple[str, bytes, tuple[int, ...]], str] = {}
        # value -> callable emitting a uint8 copy shifted by +128 (int8 activations feeding MatMulInteger)
        self.u8_makers: dict[str, Callable[[], str]] = {}
        self._u8_cache: dict[str, str] = {}
        # value -> (ONNX value, its dtype) holding exactly the same integers in a wider dtype (a float64 requantize's
        # int32 result before its final Cast): casts of the value to another dtype read it instead of going
        # through the narrow dtype
        self.exact_sources: dict[str, tuple[str, str]] = {}
        # IR outputs another handler already emitted (a fused epilogue): their own handler emits nothing
        self.fused_outputs: set[str] = set()
        self.allow_fusion = True  # False when every IR value must stay observable (expose_all)
        self.current: Node | None = None

    # ----------------------------------------------------------------- naming
    def fresh(self, hint: str) -> str:
        base = f"{self.current.outputs[0]}__{hint}" if self.current is not None else hint
        name = base
        while name in self._names:
            self._counter += 1
            name = f"{base}_{self._counter}"
        self._names.add(name)
        return name

    # ------------------------------------------------------------- emission
    def emit(self, op_type: str, inputs: list[str], output: str | None = None, hint: str | None = None,
             domain: str = "", n_outputs: int = 1, **attrs: Any) -> str:
        """Append one ONNX node; returns its first output's name (extra outputs get unused fresh names)."""
        out = output or self.fresh(hint or op_type.lower())
        name = self.fresh(f"n_{op_type}") if output is None else f"{out}__{op_type}"
        self._names.add(name)
        outs = [out] + [self.fresh(f"{hint or op_type.lower()}_out{k}") for k in range(1, n_outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=name, domain=domain, **attrs))
        return out

    def const(self, array: np.ndarray | int | float, dtype: str, hint: str = "c") -> str:
        """A (deduplicated) initializer holding ``array`` as ``dtype``."""
        arr = np.asarray(array).astype(dtype)
        key = (dtype, arr.tobytes(), arr.shape)
        if key not in self._const_cache:
            name = self.fresh(hint)
            self.initializers[name] = numpy_helper.from_array(arr, name)
            self._const_cache[key] = name
        return self._const_cache[key]

    def is_const(self, value: str) -> bool:
        return value in self.graph.initializers

    def const_array(self, value: str) -> np.ndarray:
        return self.graph.initializers[value]

    def value(self, name: str) -> str:
        """Make IR value ``name`` available as an ONNX value (materialising constants lazily)."""
        if name in self.graph.initializers and name not in self._emitted_inits:
            self.initializers[name] = numpy_helper.from_array(np.ascontiguousarray(self.graph.initializers[name]), name)
            self._emitted_inits.add(name)
        return name

    def value_as(self, name: str, dtype: str) -> str:
        """IR value ``name`` converted to ``dtype`` (a converted constant, or one cached Cast)."""
        if self.dtypes[name] == dtype:
            return self.value(name)
        key = (name, dtype)
        if key not in self._cast_cache:
            if name in self.exact_sources and self.exact_sources[name][1] == dtype:
                self._cast_cache[key] = self.exact_sources[name][0]
            elif name in self.exact_sources:
                saved, self.current = self.current, None
                self._cast_cache[key] = self.emit("Cast", [self.exact_sources[name][0]], hint=f"{name}_as_{dtype}",
                                                  to=ONNX_DTYPE[dtype])
                self.current = saved
            elif self.is_const(name):
                self._cast_cache[key] = self.const(self.const_array(name), dtype, hint=f"{name}_{dtype}")
            else:
                saved, self.current = self.current, None
                self._cast_cache[key] = self.emit("Cast", [self.value(name)], hint=f"{name}_as_{dtype}",
                                                  to=ONNX_DTYPE[dtype])
                self.current = saved
        return self._cast_cache[key]

    def as_u8(self, name: str) -> str:
        """``name`` (int8) + 128 as uint8: lets MatMulInteger use its fast u8 x s8 kernel."""
        if name not in self._u8_cache:
            maker = self.u8_makers.get(name)
            if maker is not None:
                self._u8_cache[name] = maker()
            else:
                saved, self.current = self.current, None
                wide = self.emit("Add", [self.value_as(name, "int32"), self.const(128, "int32")], hint=f"{name}_p128")
                self._u8_cache[name] = self.emit("Cast", [wide], hint=f"{name}_u8", to=TensorProto.UINT8)
                self.current = saved
        return self._u8_cache[name]

    def narrow_to(self, value: str, have: str, want: str, output: str) -> str:
        """Finish a handler: cast computed ``value`` (dtype ``have``) into IR output ``output``."""
        if have == want:
            return self.emit("Identity", [value], output=output)
        return self.emit("Cast", [value], output=output, to=ONNX_DTYPE[want])

    # ---------------------------------------------------------- shape helpers
    def shape(self, value: str, start: int | None = None, end: int | None = None) -> str:
        attrs: dict[str, Any] = {}
        if start is not None:
            attrs["start"] = start
        if end is not None:
            attrs["end"] = end
        return self.emit("Shape", [self.value(value)], hint="shape", **attrs)

    def rows_key(self, ref: str) -> Any:
        """A memo key for ``ref``'s first dimension: the dimension itself when it is a number or a graph input's
        named dimension (equal names are equal sizes by the input contract), else ``ref`` (unknown size)."""
        first = self.shapes[ref][0]
        named = {d for v in self.graph.inputs for d in v.shape if isinstance(d, str)}
        return first if isinstance(first, int) or first in named else ref

    def rows(self, ref: str) -> str:
        """1-D int64 tensor ``[N]`` with N = first dimension of ``ref``."""
        return self.shape(ref, 0, 1)


def _value_info(name: str, dtype: str, shape: tuple[Any, ...]) -> onnx.ValueInfoProto:
    dims = [d if isinstance(d, int) else str(d) for d in shape]
    return helper.make_tensor_value_info(name, ONNX_DTYPE[dtype], dims)


def subgraph_inputs(node: onnx.NodeProto) -> set[str]:
    """Names an ``If``/``Loop``/``Scan`` node reads from the outer scope through its subgraphs (recursively)."""
    names: set[str] = set()
    for attr in node.attribute:
        graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for g in graphs:
            produced = {o for n in g.node for o in n.output} | {i.name for i in g.input}
            produced |= {t.name for t in g.initializer}
            for n in g.node:
                names.update(i for i in n.input if i and i not in produced)
                names.update(x for x in subgraph_inputs(n) if x not in produced)
    return names


def _prune(nodes: list[onnx.NodeProto], inits: dict[str, onnx.TensorProto],
           outputs: list[str]) -> tuple[list[onnx.NodeProto], dict[str, onnx.TensorProto]]:
    """Drop nodes and initializers nothing reaches the outputs through."""
    needed = set(outputs)
    keep: list[onnx.NodeProto] = []
    for n in reversed(nodes):
        if any(o in needed for o in n.output):
            keep.append(n)
            needed.update(i for i in n.input if i)
            needed.update(subgraph_inputs(n))  # outer-scope values an If branch reads
    keep.reverse()
    return keep, {k: v for k, v in inits.items() if k in needed}


# elementwise ops whose inputs broadcast numpy-style (ONNX opset >= 7)
_BROADCASTING = frozenset({"Add", "Sub", "Mul", "Div", "Mod", "Pow", "Max", "Min", "Equal", "Less", "LessOrEqual",
                           "Greater", "GreaterOrEqual", "And", "Or", "Xor", "BitShift", "BitwiseAnd", "BitwiseOr",
                           "BitwiseXor", "Where"})


def _inferred_dims(model: onnx.ModelProto) -> dict[str, tuple[int, list[int | str | None]]]:
    """ONNX shape inference: value name -> (element type, dims as ints, symbols or None)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    out: dict[str, tuple[int, list[int | str | None]]] = {}
    for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        t = v.type.tensor_type
        if t.HasField("shape"):
            out[v.name] = (t.elem_type, [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                                         for d in t.shape.dim])
    return out


def _drop_unused_initializers(graph: onnx.GraphProto) -> None:
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    used |= {i for n in graph.node for i in subgraph_inputs(n)}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def match_constant_ranks(model: onnx.ModelProto) -> int:
    """Reshape each constant operand of a broadcasting node to the node's output rank (``[] -> [1, 1]``).

    Why: ORT 1.31's CPU broadcaster merges dimensions only when the inputs have the same rank; ``[N, 1] + []``
    runs one inner call per row (~19 us for N = 2708), ``[N, 1] + [1, 1]`` one call (~1 us)
    (``examples/results/ort_aggregation.md``, section 7).  Values are unchanged (a reshape of a constant that
    broadcasts to the same result), so the model stays exact.  Returns the number of operands reshaped.
    """
    graph = model.graph
    dims = _inferred_dims(model)
    inits = {t.name: t for t in graph.initializer}
    made: dict[tuple[str, int], str] = {}
    changed = 0
    for node in graph.node:
        if node.op_type not in _BROADCASTING or node.output[0] not in dims:
            continue
        want = len(dims[node.output[0]][1])
        for k, name in enumerate(node.input):
            if name not in inits or len(inits[name].dims) >= want:
                continue
            if (name, want) not in made:
                arr = numpy_helper.to_array(inits[name])
                new = f"{name}__rank{want}"
                graph.initializer.append(numpy_helper.from_array(arr.reshape((1,) * (want - arr.ndim) + arr.shape),
                                                                 new))
                made[(name, want)] = new
            node.input[k] = made[(name, want)]
            changed += 1
    _drop_unused_initializers(graph)
    return changed


AGGREGATIONS = ("scatter", "csr")
REQUANTIZE_MODES = ("auto", "int64")
INT8_GEMMS = ("auto", "u8u8", "split")


def host_int8_gemm(cpuinfo: str = "/proc/cpuinfo") -> str:
    """``"split"`` on an x86 host whose CPU has AVX-512 VNNI or AVX-VNNI (MLAS runs u8 x s8 there with
    ``vpdpbusd``, twice as fast as its u8 x u8 kernel), else ``"u8u8"`` (AVX2-only x86, arm64, unknown)."""
    from qgnn_deploy.perf.machine import isa_flags

    try:
        flags = isa_flags(Path(cpuinfo).read_text())
    except OSError:
        return "u8u8"
    return "split" if flags["avx512vnni"] or flags["avxvnni"] else "u8u8"


def export_onnx(graph: Graph, opset: int = DEFAULT_OPSET, check: bool = True, expose_all: bool = False,
                saturation_safe: bool = True, aggregation: str = "csr",
                requantize: str = "auto", int8_gemm: str = "auto") -> onnx.ModelProto:
    """Translate an integer graph into an ONNX model with dynamic N/E/G dimensions.

    ``expose_all`` also makes every intermediate IR value a graph output (shape
    left open), so parity tests can compare each op, not just the final result.
    ``saturation_safe=False`` keeps full-range int8 weights in one u8 x s8
    MatMulInteger: faster, but exact only on CPUs whose int8 dot product does
    not saturate (x86 with VNNI, arm64); see the matmul handler.
    ``aggregation="csr"`` (the default) adds, for every sum of gathered rows, a run-time branch that uses prefix
    sums when the destinations ascend (over the whole graph while ``E * H`` is at most
    ``segment.CSR_MAX_ELEMENTS``, piece by piece above it; ``segment.py``), else the per-column ScatterElements;
    ``"scatter"`` keeps the ScatterElements everywhere.  CSR measured
    1.3-1.5x faster on sorted input from Cora to 10^5 nodes (``examples/results/ort_aggregation.md``, section 7).
    ``requantize="auto"`` runs each requantize whose static bounds prove float64 exact (see the handler) in
    float64, the rest in the exact int64/uint64 shift chain; ``"int64"`` keeps the chain everywhere (A/B).
    ``int8_gemm`` picks how a saturation-safe GEMM with full-range constant int8 weights runs, both exact on every
    CPU: ``"u8u8"`` (weights + 128, MLAS's widening u8 x u8 kernel) or ``"split"`` (two 7-bit halves in one
    u8 x s8 GEMM, faster where that kernel is VNNI); ``"auto"`` asks :func:`host_int8_gemm` (the exporting
    host's CPU, which the model is usually deployed or benchmarked on).  Exactness never depends on the choice.
    """
    if aggregation not in AGGREGATIONS:
        raise QgnnError(f"ONNX export: aggregation must be one of {', '.join(AGGREGATIONS)}, got {aggregation!r}")
    if requantize not in REQUANTIZE_MODES:
        raise QgnnError(f"ONNX export: requantize must be one of {', '.join(REQUANTIZE_MODES)}, "
                        f"got {requantize!r}")
    if int8_gemm not in INT8_GEMMS:
        raise QgnnError(f"ONNX export: int8_gemm must be one of {', '.join(INT8_GEMMS)}, got {int8_gemm!r}")
    if int8_gemm == "auto":
        int8_gemm = host_int8_gemm()
    if opset < 18:
        raise QgnnError(f"ONNX export needs opset >= 18 (ScatterElements max/axes-as-input), got {opset}")
    try:
        graph.validate()
    except ValueError as exc:
        raise QgnnError(f"invalid integer graph: {exc}") from None
    missing = sorted({n.op for n in graph.nodes} - set(HANDLERS))
    if missing:
        raise QgnnError(f"ONNX export: no handler for IR op(s) {', '.join(missing)}")
    if not expose_all:  # every IR value stays observable with expose_all, so only then are repeats kept
        graph = copy.deepcopy(graph)
        merge_common_subexpressions(graph)
    ctx = EmitContext(graph, opset, saturation_safe, aggregation, requantize, int8_gemm)
    ctx.allow_fusion = not expose_all
    for node in graph.nodes:
        if node.outputs[0] in ctx.fused_outputs:
            continue
        ctx.current = node
        HANDLERS[node.op](ctx, node)
    ctx.current = None
    outputs: list[str] = []
    for out in graph.outputs:
        if not any(out.name in n.output for n in ctx.nodes):  # an input or constant returned as is
            raise QgnnError(f"ONNX export: graph output {out.name!r} must be computed by a node")
        outputs.append(out.name)
    out_infos = [_value_info(v.name, v.dtype, v.shape) for v in graph.outputs]
    if expose_all:
        for node in graph.nodes:
            name = node.outputs[0]
            if name not in outputs:
                outputs.append(name)
                out_infos.append(helper.make_tensor_value_info(name, ONNX_DTYPE[ctx.dtypes[name]],
                                                                [None] * ctx.ranks[name]))
    nodes, inits = _prune(ctx.nodes, ctx.initializers, outputs)
    g = helper.make_graph(
        nodes,
        "qgnn_integer_graph",
        [_value_info(v.name, v.dtype, v.shape) for v in graph.inputs],
        out_infos,
        initializer=list(inits.values()),
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], producer_name=PRODUCER)
    from qgnn_deploy import __version__

    model.producer_version = __version__
    model.ir_version = min(model.ir_version, 10)
    match_constant_ranks(model)
    meta = {k: v for k, v in graph.meta.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}
    meta["onnx_int8_gemm"] = int8_gemm
    helper.set_model_props(model, {f"qgnn.{k}": str(v) for k, v in meta.items()})
    if check:
        try:
            onnx.checker.check_model(model, full_check=True)
        except onnx.checker.ValidationError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise QgnnError(f"exported ONNX model fails onnx.checker: {first}") from None
    return model


def save_onnx(model: onnx.ModelProto, path: str) -> int:
    """Write ``model`` as one self-contained file; returns its size in bytes."""
    data = model.SerializeToString()
    with open(path, "wb") as fh:
        fh.write(data)
    return len(data)
