"""Compile an integer graph with TVM into a shared library (host or aarch64 cross).

The untuned build keeps N/E symbolic (one library for any graph) and applies
our own kernels and schedule rules instead of the stock pipeline's naive loops.
A tuned build (``tune_trials > 0``) specialises N/E to the sample graph and runs
meta-schedule on the heavy tasks; its database is kept in ``out_dir/tuning``
so a second export with the same graph shape reuses it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qgnn_deploy.errors import QgnnError
from qgnn_deploy.ir.graph import Graph

from .targets import TargetPreset, resolve_target

TUNING_DIRNAME = "tuning"


def _symbolic_sizes(graph: Graph, feeds: Mapping[str, np.ndarray]) -> dict[str, int]:
    """Values of the symbolic dims ("N", "E", ...) on ``feeds``."""
    sizes: dict[str, int] = {}
    for vi in graph.inputs:
        if vi.name not in feeds:
            raise QgnnError(f"sample feeds lack graph input {vi.name!r}")
        arr = np.asarray(feeds[vi.name])
        if arr.ndim != len(vi.shape):
            raise QgnnError(f"sample input {vi.name!r} has rank {arr.ndim}, the graph expects {len(vi.shape)}")
        for d, s in zip(vi.shape, arr.shape):
            if isinstance(d, str):
                if sizes.setdefault(d, int(s)) != int(s):
                    raise QgnnError(f"dimension {d} is {sizes[d]} in one input and {s} in {vi.name!r}")
    return sizes


def pipeline(preset: TargetPreset, database: Any = None, serial_work: int | None = None) -> Any:
    """Relax pipeline: the CPU default plus default schedules for everything we did not hand-write."""
    import tvm
    from tvm import relax
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    from .schedules import default_schedule_pass

    target = preset.tvm()

    @tvm.transform.module_pass(opt_level=0, name="QgnnPipeline")
    def _pipeline(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        with target:
            mod = tvm.transform.Sequential(legalize_passes(target))(mod)
        if database is not None:
            from .tuning import tuning_target

            with tuning_target(preset), database:
                mod = relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(mod)
        with target:
            passes = [default_schedule_pass(preset, serial_work)]
            passes += cpu.dataflow_lower_passes(target) + cpu.finalize_passes(target)
            return tvm.transform.Sequential(passes)(mod)

    return _pipeline


def legalize_passes(target: Any) -> list[Any]:
    """CSE + library dispatch + legalize/fuse (the build and the tuner must fuse identically)."""
    from tvm import relax
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    legalize = []
    for p in cpu.legalize_passes(target):
        legalize.append(p)
        if p.info.name == "AnnotateTIROpPattern":
            legalize.append(lut_take_is_injective())
    # Folded graphs repeat small subgraphs (each layer recomputes deg + 1 and its LUT lookup): CSE first.
    # ... and then cheap casts shared by several readers are copied to each reader (rematerialize_casts)
    # (CanonicalizeBindings: CSE leaves `a = b` aliases, which would count as readers)
    return [relax.transform.EliminateCommonSubexpr(), relax.transform.CanonicalizeBindings(), rematerialize_casts()] \
        + cpu.library_dispatch_passes(target) + legalize


def legalized_module(graph: Graph, preset: TargetPreset, static_dims: dict[str, int]) -> Any:
    """The Relax module after :func:`legalize_passes`: what the tuner extracts its tasks from."""
    import tvm

    from .relax_builder import build_module

    mod = build_module(graph, build_options(preset, static_dims))
    target = preset.tvm()
    with target:
        return tvm.transform.Sequential(legalize_passes(target))(mod)


def lut_take_is_injective() -> Any:
    """Let FuseOps fuse ``take`` (table lookups, row gathers) with the elementwise ops around it.

    LegalizeOps' ``take`` reads its table at a data-dependent index, so AnnotateTIROpPattern calls it
    opaque and every lookup became its own kernel plus a separate index clip and result cast.  It is
    injective (each output element reads one input element, nothing else), which is all FuseOps needs.
    """
    import tvm

    @tvm.transform.module_pass(opt_level=0, name="QgnnTakeIsInjective")
    def _pass(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        out = tvm.IRModule(dict(mod.functions), attrs=mod.attrs)
        for gv, func in mod.functions.items():
            if isinstance(func, tvm.tirx.PrimFunc) and gv.name_hint.startswith("take") and func.attrs is not None \
                    and int(func.attrs.get("op_pattern", -1)) == 8:  # kOpaque -> kInjective
                out[gv] = func.with_attr("op_pattern", 2)
        return out

    return _pass


def build(graph: Graph, preset: TargetPreset, *, static_dims: dict[str, int] | None = None,
          database: Any = None, fast: bool = True, serial_work: int | None = None,
          kernels_used: list[str] | None = None) -> Any:
    """Relax module -> ``relax.Executable`` for ``preset`` (not yet linked).  ``serial_work``: kernels with
    less work than this run on the calling thread (default ``kernels.SERIAL_WORK``; 0: every kernel parallel).
    ``kernels_used``, when given, receives the names of the TIR kernels the module calls."""
    import tvm

    from .relax_builder import build_module

    opts = build_options(preset, static_dims, fast)
    if serial_work is not None:
        opts.serial_work = int(serial_work)
    mod = build_module(graph, opts)
    if kernels_used is not None:
        kernels_used.extend(sorted(gv.name_hint for gv in mod.get_global_vars() if gv.name_hint.startswith("qgnn_")))
    if not fast:
        return tvm.compile(mod, target=preset.tvm())
    return tvm.compile(mod, target=preset.tvm(), relax_pipeline=pipeline(preset, database, opts.serial_work))


def gemm_kinds_used(kernel_names: list[str]) -> list[str]:
    """The GEMM kernel families a build emitted (``avx2-pair`` falls back to ``avx2`` per weight), from the
    names of its ``qgnn_gemm_<kind>_...`` kernels."""
    from .gemm_arm import ARM_KINDS
    from .gemm_x86 import KINDS as X86_KINDS

    kinds = sorted({*X86_KINDS, *ARM_KINDS, "vnni", "generic"}, key=len, reverse=True)  # longest prefix wins
    used: set[str] = set()
    for name in kernel_names:
        for kind in kinds:
            if name.startswith(f"qgnn_gemm_{kind.replace('-', '_')}"):
                used.add(kind)
                break
    return sorted(used)


def build_options(preset: TargetPreset, static_dims: dict[str, int] | None = None, fast: bool = True) -> Any:
    """The one place that maps a target preset to kernel choices."""
    from .relax_builder import BuildOptions

    return BuildOptions(fast_matmul=fast, fuse_gather_scatter=fast, gemm_kind=gemm_kind(preset),
                        vbmi=not preset.is_aarch64 and "avx512vbmi" in preset.features,
                        parts=graph_parts(preset), static_dims=dict(static_dims or {}))


def graph_parts(preset: TargetPreset) -> int:
    """Row ranges for the aggregation kernels: one per core of the target (its ``num-cores``)."""
    return max(1, min(int(preset.tvm_target.get("num-cores", 1)), 16))  # each part rescans the edge list


def gemm_kind(preset: TargetPreset) -> str:
    """Which GEMM kernel family the target's ISA allows."""
    if not preset.is_aarch64:
        from .gemm_x86 import x86_gemm_kind

        return x86_gemm_kind(preset.features)
    if preset.is_aarch64:
        from .gemm_arm import arm_gemm_kind

        return arm_gemm_kind(preset)
    return "generic"


def planned_buffer_bytes(graph: Graph, preset: TargetPreset, sizes: dict[str, int]) -> int | None:
    """Activation bytes TVM's static memory planner allocates for the sample shapes (None if unknown)."""
    import tvm
    from tvm import relax

    from .relax_builder import build_module

    if any(vi for vi in graph.outputs if any(isinstance(d, str) and d not in sizes for d in vi.shape)):
        return None  # data-dependent output size (pool_sum's G): the planner cannot size it statically
    try:
        mod = build_module(graph, build_options(preset, sizes))
        target = preset.tvm()
        with target:
            seq = tvm.transform.Sequential([
                relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
                relax.transform.FoldConstant(), relax.transform.FuseOps(), relax.transform.FuseTIR(),
                relax.transform.ToNonDataflow(), relax.transform.RemovePurityChecking(),
                relax.transform.CallTIRRewrite(), relax.transform.StaticPlanBlockMemory()])
            planned = seq(mod)
        usage = relax.analysis.estimate_memory_usage(planned)
    except Exception:  # noqa: BLE001 - the estimate is informative only
        return None
    return _parse_planned_bytes(str(usage))


def _parse_planned_bytes(report: str) -> int | None:
    """Bytes after planning from ``estimate_memory_usage``'s text report."""
    import re

    num = r"([0-9.]+(?:[eE][-+]?[0-9]+)?) GB"
    m = re.search(r"With memory planning.*?total size " + num, report) or re.search(r"total size " + num, report)
    return int(round(float(m.group(1)) * 1e9)) if m else None


def _graph_fingerprint(graph: Graph, sizes: dict[str, int], preset: TargetPreset) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([n.to_json() for n in graph.nodes], sort_keys=True).encode())
    h.update(json.dumps(sizes, sort_keys=True).encode())
    h.update(json.dumps(preset.tvm_target, sort_keys=True).encode())
    return h.hexdigest()[:16]


def compile_to_dir(graph: Graph, target_spec: str, out_dir: Path, *, sample_feeds: dict,
                   tune_trials: int = 0, tuning_db: Path | None = None) -> dict:
    """Build ``graph`` for ``target_spec`` into ``out_dir/model_<preset>.so``; returns manifest fields.

    ``tune_trials == 0``: dynamic N/E library (any graph size), hand-written kernels + default schedules;
    ``tuning_db`` is not used.  ``tune_trials > 0``: N/E fixed to the sample graph (``static_shapes``),
    meta-schedule on the heavy remaining tasks; the database lives in ``out_dir/tuning`` (seeded from
    ``tuning_db`` when given) and tasks already tuned there are skipped.

    Returned fields: ``library``, ``target`` {name, triple, tvm_target, cross_compiled}, ``tvm_version``,
    ``input_order``, ``tvm_buffer_bytes`` (planned activation bytes on the sample shapes, None when the
    output size is data-dependent), ``tuned``, ``static_shapes`` (None or {"N", "E"}), ``build_seconds``,
    ``kernels`` and, for tuned builds, ``tuning``.  Errors (unknown target, missing cross compiler,
    inconsistent sample feeds) are QgnnError before anything is written; the library appears atomically.
    """
    preset = resolve_target(target_spec)
    fcompile = preset.cross_compiler()  # raises a QgnnError naming the package when missing
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sizes = _symbolic_sizes(graph, sample_feeds)
    t0 = time.perf_counter()
    database = None
    static_dims: dict[str, int] | None = None
    tuning_info: dict[str, Any] = {}
    if tune_trials < 0:
        raise QgnnError(f"tune_trials must be >= 0, got {tune_trials}")
    if tune_trials > 0:  # a tuned build is opt-in; a given tuning_db alone never makes the library static
        from .tuning import tune

        static_dims = {d: s for d, s in sizes.items() if d in ("N", "E")}
        db_dir = Path(tuning_db) if tuning_db is not None else out_dir / TUNING_DIRNAME
        database, tuning_info = tune(legalized_module(graph, preset, static_dims), preset, db_dir, tune_trials)
        if tuning_db is not None:
            copy_tuning_db(db_dir, out_dir / TUNING_DIRNAME)
        tuning_info["database"] = TUNING_DIRNAME
    kernel_names: list[str] = []
    ex = build(graph, preset, static_dims=static_dims, database=database, kernels_used=kernel_names)
    lib_name = f"model_{preset.name}.so"
    tmp = out_dir / (lib_name + ".tmp.so")
    # -s: no debug info / static symbol table (halves the file; TVM only needs the dynamic symbols).
    if fcompile is None:
        ex.export_library(str(tmp), options=["-s"])
    else:
        ex.export_library(str(tmp), fcompile=fcompile, options=["-s"])
    tmp.replace(out_dir / lib_name)
    build_s = time.perf_counter() - t0
    fields: dict[str, Any] = {
        "library": lib_name,
        "target": preset.manifest(),
        "tvm_version": _tvm_version(),
        "input_order": [vi.name for vi in graph.inputs],
        "tvm_buffer_bytes": planned_buffer_bytes(graph, preset, sizes),
        "tuned": database is not None,
        "static_shapes": static_dims,
        "build_seconds": round(build_s, 2),
        "kernels": {"gemm": gemm_kind(preset), "gemm_used": gemm_kinds_used(kernel_names),
                    "aggregation": "fused gather+scatter, edge order (deterministic)"},
    }
    if any(name.startswith("qgnn_softmax_vbmi") for name in kernel_names):
        fields["kernels"]["softmax"] = "LoRAP's softmax weights in one AVX-512 VBMI kernel per layer"
    if tuning_info:
        fields["tuning"] = tuning_info
    return fields


def _tvm_version() -> str:
    import tvm

    return str(tvm.__version__)


def library_spec(path: Path | str, spec: Graph | Mapping[str, Any] | None = None) -> tuple[list[Any], dict[str, Any]]:
    """(input specs, recorded limits) for a library: ``spec`` (a Graph or a manifest), else the
    ``manifest.json`` beside the library (checksums verified), else nothing recorded ([], {})."""
    if isinstance(spec, Graph):
        return list(spec.inputs), dict(spec.meta)
    if spec is None:
        manifest = Path(path).parent / "manifest.json"
        if not manifest.is_file():
            return [], {}
        from qgnn_deploy.artifact import load_manifest

        spec = load_manifest(manifest.parent)
    spec = dict(spec)
    inputs = spec.get("inputs") or []
    order = spec.get("input_order")
    if isinstance(order, list) and isinstance(inputs, list) and sorted(order) == sorted(
            s.get("name") for s in inputs if isinstance(s, Mapping)):
        inputs = sorted(inputs, key=lambda s: order.index(s["name"]))
    return list(inputs), spec


def run_library(path: Path | str, feeds: Mapping[str, np.ndarray] | Sequence[np.ndarray],
                input_names: Sequence[str] | None = None, num_threads: int | None = None, *,
                spec: Graph | Mapping[str, Any] | None = None, check: bool = True) -> np.ndarray:
    """Run an exported host library on ``feeds`` (dict in graph-input order, or a list) -> output array.

    ``check`` (default) applies the input contract every runner shares (:mod:`qgnn_deploy.validation`)
    before TVM sees the arrays, against ``spec`` (the IR graph or a manifest) or the ``manifest.json``
    next to the library; with neither, the structural checks still run (integer ``[2, E]`` edge ids in
    ``[0, N)``, finite floats).  The compiled kernels index memory with the edge ids unchecked, so an
    out-of-range id is a crash or garbage, never an error, without this.
    """
    import tvm
    from tvm import relax

    from qgnn_deploy.validation import ValidationError, validate_feeds

    if num_threads is not None:
        import os

        os.environ["TVM_NUM_THREADS"] = str(num_threads)
    if isinstance(feeds, Mapping):
        names = list(input_names) if input_names is not None else list(feeds)
        arrays = {n: np.ascontiguousarray(feeds[n]) for n in names}
    else:
        specs, _ = library_spec(path, spec)
        names = [s["name"] if isinstance(s, Mapping) else s.name for s in specs] if specs else \
            [f"input{i}" for i in range(len(feeds))]
        if len(names) != len(feeds):
            raise QgnnError(f"the library takes {len(names)} inputs ({', '.join(names)}), got {len(feeds)}")
        arrays = {n: np.ascontiguousarray(a) for n, a in zip(names, feeds)}
    if check:
        specs, meta = library_spec(path, spec)
        if not specs:  # nothing recorded: the structural rules only
            specs = [{"name": n, "dtype": str(a.dtype), "shape": None} for n, a in arrays.items()]
        try:
            validate_feeds(specs, meta, arrays)
        except ValidationError as exc:
            raise QgnnError(str(exc)) from None
        order = [s["name"] if isinstance(s, Mapping) else s.name for s in specs]
        if sorted(order) == sorted(arrays):
            names = order
    lib = tvm.runtime.load_module(str(path))
    vm = relax.VirtualMachine(lib, tvm.cpu())
    out = vm["main"](*[tvm.runtime.tensor(arrays[n]) for n in names])
    return out.numpy()


def copy_tuning_db(src: Path, dst: Path) -> None:
    """Keep a reused database next to the artifact so the artifact stays self-contained."""
    if src.resolve() != dst.resolve():
        shutil.copytree(src, dst, dirs_exist_ok=True)


def rematerialize_casts() -> Any:
    """Give every reader of a shared ``astype`` its own copy, so FuseOps folds each copy into its reader.

    Folded graphs share cheap casts between layers (GCN's per-node edge factor ``cast(lut(deg))`` feeds both
    layers' requantize multipliers, once as int32 and once more widened to int64).  FuseOps never fuses a
    producer with several readers, so each such cast was a kernel launch of its own writing an [N, 1] tensor
    its readers then load.  Copies are made only when every reader is a high-level Relax op (legalized into a
    fusable kernel later), never a hand-written ``call_tir``, and only inside dataflow blocks: the result is
    the same cast, computed where it is read.
    """
    import tvm
    from tvm import relax

    from .relax_ops import dtype_of

    @relax.expr_functor.mutator
    class _Remat(relax.PyExprMutator):
        def __init__(self, mod: tvm.IRModule) -> None:
            super().__init__(mod)
            self.shared: dict[Any, Any] = {}  # cast var -> its (already visited) value, emitted at each use

        def visit_dataflow_block_(self, block: relax.DataflowBlock) -> Any:
            users = relax.analysis.udchain(block)
            values = {b.var: b.value for b in block.bindings if isinstance(b, relax.VarBinding)}
            for b in block.bindings:
                if isinstance(b, relax.VarBinding) and _is_cast(b.value) and isinstance(b.var, relax.DataflowVar) \
                        and len(users.get(b.var, [])) > 1 and all(
                            u in values and isinstance(values[u], relax.Call) and not _is_call_tir(values[u])
                            for u in users[b.var]):
                    self.shared[b.var] = None
            return super().visit_dataflow_block_(block)

        def visit_var_binding_(self, binding: relax.VarBinding) -> None:
            if binding.var in self.shared:
                self.shared[binding.var] = binding.value  # emitted at each use instead (visit_dataflow_var_)
                return
            super().visit_var_binding_(binding)

        def visit_dataflow_var_(self, var: relax.DataflowVar) -> Any:
            if var in self.shared and self.shared[var] is not None:
                value = self.shared[var]
                return self.builder_.emit(relax.Call(value.op, [self.visit_expr(a) for a in value.args], value.attrs,
                                                     value.ty_args))
            return super().visit_dataflow_var_(var)

    def _is_cast(e: Any) -> bool:
        """A widening (or same-width) ``astype``: a narrowing one stays with its producer, so the narrow tensor
        is what is written (LoRAP's int8 scores feed a max and a subtract: copied, each reader loaded the
        int64 requantize intermediate instead, 8x the bytes)."""
        if not (isinstance(e, relax.Call) and isinstance(e.op, tvm.ir.Op) and e.op.name == "relax.astype"
                and len(e.args) == 1):
            return False
        try:
            return np.dtype(dtype_of(e)).itemsize >= np.dtype(dtype_of(e.args[0])).itemsize
        except (AttributeError, TypeError):  # an operand without a tensor type: leave it alone
            return False

    def _is_call_tir(e: Any) -> bool:
        return isinstance(e.op, tvm.ir.Op) and e.op.name.startswith("relax.call_tir")

    @tvm.transform.module_pass(opt_level=0, name="QgnnRematerializeCasts")
    def _pass(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        out = tvm.IRModule(dict(mod.functions), attrs=mod.attrs)
        for gv, func in mod.functions.items():
            if isinstance(func, relax.Function):
                out[gv] = _Remat(mod).visit_expr(func)
        return out

    return _pass
