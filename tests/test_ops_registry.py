"""One op registry: every IR op is declared once (``ir/ops.py``) and every backend handles every op; the package's
modules import each other in one direction only (no import cycle, function-level imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from qgnn_deploy.ir.ops import OPS, WIDTH, HandlerTable, wider

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "qgnn_deploy"


def _tables() -> dict[str, HandlerTable]:
    from qgnn_deploy.backends.onnx import HANDLERS as onnx_handlers
    from qgnn_deploy.ir.interpreter import KERNELS

    tables = {"interpreter": KERNELS, "onnx": onnx_handlers}
    try:
        from qgnn_deploy.backends.tvm.relax_builder import HANDLERS as tvm_handlers
    except ImportError as exc:  # TVM is a hard dependency; say so instead of skipping silently
        raise AssertionError(f"the TVM backend does not import: {exc}") from None
    tables["tvm"] = tvm_handlers
    return tables


@pytest.mark.parametrize("backend", ["interpreter", "onnx", "tvm"])
def test_every_backend_handles_every_declared_op(backend: str) -> None:
    table = _tables()[backend]
    assert isinstance(table, HandlerTable)
    assert table.missing() == [], f"{backend} lacks handlers for {table.missing()}"
    assert set(table) == set(OPS)


def test_registering_an_undeclared_op_fails() -> None:
    table: HandlerTable = HandlerTable("test")
    with pytest.raises(ValueError, match="unknown IR op 'conv2d'"):
        table.register("conv2d")(lambda *a: None)
    table["add"] = len
    assert "add" not in table.missing()
    assert len(table.missing()) == len(OPS) - 1


def test_dtype_rules_match_the_interpreter_on_the_op_zoo() -> None:
    """The specs' dtype/shape rules (what the ONNX exporter reads) agree with what the interpreter computes."""
    from qgnn_deploy.ir.infer import infer_dtypes, infer_ranks, infer_shapes
    from qgnn_deploy.ir.interpreter import run
    from qgnn_deploy.ir.testing import awkward_graphs, op_zoo_graph

    graph = op_zoo_graph(features=12)
    assert {n.op for n in graph.nodes} >= set(OPS) - {"quantize_rows", "pool_sum"}  # per-node / graph-task ops
    x, ei = awkward_graphs(12)["random"]
    values = run(graph, {"x": x, "edge_index": ei}, keep_all=True)
    dtypes, ranks, shapes = infer_dtypes(graph), infer_ranks(graph), infer_shapes(graph)
    sizes = {"N": x.shape[0], "E": ei.shape[1]}
    for node in graph.nodes:
        out = node.outputs[0]
        arr = np.asarray(values[out])
        assert dtypes[out] == str(arr.dtype), (node.op, dtypes[out], arr.dtype)
        assert ranks[out] == arr.ndim, (node.op, ranks[out], arr.shape)
        for d, n in zip(shapes[out], arr.shape):
            if isinstance(d, int):
                assert d == n, (node.op, shapes[out], arr.shape)
            elif isinstance(d, str) and d in sizes:
                assert sizes[d] == n, (node.op, shapes[out], arr.shape)


@pytest.mark.parametrize("case", ["random", "isolated_nodes", "hub", "single_node"])
def test_shape_only_buffer_count_equals_the_interpreter_run(case: str) -> None:
    """``shape_buffer_report`` (value sizes from the spec rules, nothing run; what the NAS cost uses) equals
    ``buffer_report`` (the interpreter's arrays) value by value on the op zoo."""
    from qgnn_deploy.ir.analysis import buffer_report, shape_buffer_report
    from qgnn_deploy.ir.testing import awkward_graphs, op_zoo_graph

    graph = op_zoo_graph(features=12)
    x, ei = awkward_graphs(12)[case]
    ran = buffer_report(graph, {"x": x, "edge_index": ei})
    counted = shape_buffer_report(graph, {"N": x.shape[0], "E": ei.shape[1]})
    assert counted.per_value == ran.per_value
    assert (counted.peak_bytes, counted.peak_at, counted.input_bytes) == (ran.peak_bytes, ran.peak_at,
                                                                           ran.input_bytes)


def test_width_table_covers_every_integer_dtype() -> None:
    """One width table (it used to lack uint16 in the ONNX exporter)."""
    from qgnn_deploy.backends.onnx.exporter import ONNX_DTYPE

    for dtype, width in WIDTH.items():
        assert np.dtype(dtype).itemsize == width
        assert dtype in ONNX_DTYPE
    assert wider("uint8", "int8") == "int16" and wider("uint16", "int32") == "int32"
    assert OPS["reduce_sum"].dtype(["uint16"], {}) == "int32"


# ------------------------------------------------------------------------------------------- import graph
def _modules() -> dict[str, Path]:
    mods = {}
    for f in PACKAGE.rglob("*.py"):
        parts = list(f.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = f
    return mods


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports anywhere (module level or inside functions)."""
    mods = _modules()

    def owner(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    edges: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    parts = parts[:len(parts) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                # `from pkg import sub` imports the submodule; `from pkg import name` reads pkg/__init__
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for t in targets:
                o = owner(t) if t.startswith("qgnn_deploy") else None
                if o and o != mod:
                    edges[mod].add(o)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


def test_cycle_check_sees_function_level_imports() -> None:
    edges = import_graph()
    edges["qgnn_deploy.ir.ops"] = edges["qgnn_deploy.ir.ops"] | {"qgnn_deploy.ir.graph"}
    assert cycles(edges) == [["qgnn_deploy.ir.graph", "qgnn_deploy.ir.ops"]]
    assert "qgnn_deploy.fold.a2q" in import_graph()["qgnn_deploy.fold"]  # registers the per-node handlers


# Layers: a package on the left never imports (directly or through another module) the packages on the right.
LAYERING = {
    "qgnn_deploy.quant": ("qgnn_deploy.models", "qgnn_deploy.fold", "qgnn_deploy.backends", "qgnn_deploy.nas"),
    "qgnn_deploy.ir": ("qgnn_deploy.fold", "qgnn_deploy.models", "qgnn_deploy.backends", "qgnn_deploy.nas"),
}


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def layering_violations(edges: dict[str, set[str]]) -> list[str]:
    """``module -> ... -> forbidden module`` import paths that break :data:`LAYERING`."""
    found = []
    for package, forbidden in LAYERING.items():
        for start in sorted(m for m in edges if _inside(m, package)):
            parent = {start: ""}
            todo = [start]
            while todo:
                v = todo.pop()
                for w in sorted(edges[v]):
                    if w in parent:
                        continue
                    parent[w] = v
                    if any(_inside(w, f) for f in forbidden):
                        path, u = [w], v
                        while u:
                            path.append(u)
                            u = parent[u]
                        found.append(" -> ".join(reversed(path)))
                    else:
                        todo.append(w)
    return found


def test_lower_layers_never_import_higher_ones() -> None:
    """quant/ never reaches models/ (nor fold, backends, nas); ir/ never reaches fold/, models/, backends/."""
    assert layering_violations(import_graph()) == []


def test_layering_check_sees_indirect_imports() -> None:
    edges = import_graph()
    edges["qgnn_deploy.quant.spec"] = edges["qgnn_deploy.quant.spec"] | {"qgnn_deploy.errors"}
    edges["qgnn_deploy.errors"] = edges["qgnn_deploy.errors"] | {"qgnn_deploy.models.net"}
    assert "qgnn_deploy.quant.spec -> qgnn_deploy.errors -> qgnn_deploy.models.net" in layering_violations(edges)


def test_generic_fold_code_names_no_framework() -> None:
    """Framework specifics are hooks (``Framework.parity_tolerance``, the per-node requantizer registries that
    ``fold/a2q.py`` fills), not string comparisons against a framework's name in generic fold modules."""
    from qgnn_deploy.fold.parity import parity_tolerance
    from qgnn_deploy.quant.frameworks import FRAMEWORK_NAMES

    named = []
    for path in sorted((PACKAGE / "fold").glob("*.py")):
        if path.name == "a2q.py":  # the A2Q fold module itself
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in FRAMEWORK_NAMES:
                named.append(f"{path.name}:{node.lineno} {node.value!r}")
    assert named == []
    assert parity_tolerance("a2q")["max_code_diff"] == 2 and parity_tolerance("qat")["max_code_diff"] == 1
    assert parity_tolerance(None) == parity_tolerance("dq") == parity_tolerance("qat")
