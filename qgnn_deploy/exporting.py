"""Write a deployable artifact directory from an integer graph, all or nothing.

:func:`export_graph` always writes the ONNX model, the IR itself, a sample input
with the reference interpreter's output, a deploy report (JSON + markdown) and a
checksummed manifest; compiled targets add a TVM library.  Everything is
written into a temporary sibling directory that replaces ``out_dir`` only when
every step (including the ORT-vs-interpreter parity check) has succeeded.
"""

from __future__ import annotations

import json
import platform
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from qgnn_deploy import __version__
from qgnn_deploy.artifact import atomic_directory, write_manifest
from qgnn_deploy.errors import QgnnError
from qgnn_deploy.ir.analysis import buffer_report, model_bytes
from qgnn_deploy.ir.graph import Graph, jsonable
from qgnn_deploy.ir.interpreter import IROverflowError
from qgnn_deploy.ir.interpreter import run as interpret
from qgnn_deploy.ir.passes import quantize_input_feeds
from qgnn_deploy.validation import fmt_bytes, latency_stats

ONNX_TARGET = "onnx"
PARITY_THREADS = (1, 2)
PARITY_REPEATS = 3

ROLES = {
    "model.onnx": "onnx",
    "ir.json": "ir",
    "ir.npz": "ir",
    "sample_input.npz": "sample_input",
    "reference_output.npz": "reference_output",
    "report.json": "report",
    "report.md": "report",
}


# ------------------------------------------------------------------------------------------ targets
def valid_targets() -> list[str]:
    """``onnx`` plus the TVM presets (when the TVM backend is importable)."""
    try:
        from qgnn_deploy.backends.tvm import TARGETS
    except ImportError:
        return [ONNX_TARGET]
    return [ONNX_TARGET, *TARGETS.names()]


def check_target(target: str) -> Any:
    """Resolve ``target`` before anything is written: ``None`` for onnx, else the TVM preset."""
    if not isinstance(target, str) or not target.strip():
        raise QgnnError(f"unknown target {target!r}; valid targets: {', '.join(valid_targets())}")
    if target.strip() == ONNX_TARGET:
        return None
    try:
        from qgnn_deploy.backends.tvm import TARGETS, resolve_target
    except ImportError as exc:
        raise QgnnError(f"target {target!r} needs the TVM backend, which cannot be imported here ({exc}); "
                        f"valid targets: {ONNX_TARGET}") from None
    if not target.strip().startswith("{") and target.strip() not in TARGETS.names():
        raise QgnnError(f"unknown target {target!r}; valid targets: {', '.join(valid_targets())} "
                        "(or a TVM target JSON such as '{\"kind\": \"llvm\", \"mtriple\": \"aarch64-linux-gnu\"}')")
    return resolve_target(target)


# ------------------------------------------------------------------------------------------ helpers
def _tool_versions(with_tvm: bool) -> dict[str, str]:
    import onnx
    import onnxruntime

    versions = {"python": platform.python_version(), "numpy": np.__version__, "onnx": onnx.__version__,
                "onnxruntime": onnxruntime.__version__, "qgnn_deploy": __version__}
    if with_tvm:
        try:
            import tvm

            versions["tvm"] = str(tvm.__version__)
        except ImportError:
            pass
    return versions


def _value_spec(vi: Any) -> dict[str, Any]:
    return {"name": vi.name, "dtype": vi.dtype, "shape": [d if isinstance(d, int) else str(d) for d in vi.shape]}


def _bits(lo: int, hi: int) -> int:
    """Bit-width of an integer range, e.g. [-8, 7] -> 4, [0, 255] -> 8."""
    if lo >= 0:
        return max(int(hi).bit_length(), 1)
    return max(int(-lo - 1).bit_length(), int(hi).bit_length()) + 1


def derived_bit_widths(graph: Graph) -> dict[str, int]:
    """Per-tensor bit-widths read off the graph: quantize/requantize ranges and int4/int8 weights."""
    out: dict[str, int] = {}
    for node in graph.nodes:
        a, name = node.attrs, node.outputs[0]
        if node.op in ("quantize", "requantize") and a.get("dtype") in ("int8", "uint8", "int16", "int32"):
            info = np.iinfo(a["dtype"])
            lo, hi = int(a.get("qmin", info.min)), int(a.get("qmax", info.max))
            if len(node.inputs) > 3 and any(node.inputs[3:]):  # per-row bounds: report the widest row
                vals = [graph.initializers.get(i) for i in node.inputs[3:5]]
                lo = int(vals[0].min()) if len(vals) > 0 and vals[0] is not None else int(info.min)
                hi = int(vals[1].max()) if len(vals) > 1 and vals[1] is not None else int(info.max)
            zp = int(a.get("zero_point", 0))
            out[name] = _bits(lo - zp, hi - zp)  # width of the represented values q - zp
        elif node.op == "quantize_rows":
            lo_v = graph.initializers.get(node.inputs[2])
            hi_v = graph.initializers.get(node.inputs[3])
            if lo_v is not None and hi_v is not None:
                out[name] = _bits(int(lo_v.min()), int(hi_v.max()))
        elif node.op == "unpack_int4":
            out[name] = 4
    for k, v in graph.initializers.items():
        if v.dtype in (np.int8, np.uint8) and not any(n.op == "unpack_int4" and k in n.inputs for n in graph.nodes):
            out.setdefault(k, 8)
    return out


def boundary_quantization(graph: Graph) -> dict[str, Any]:
    """Scales and zero points of the float boundary (what a caller needs to feed and read the model)."""
    inputs = {v.name for v in graph.inputs}
    outputs = {v.name for v in graph.outputs}
    q: dict[str, Any] = {"inputs": {}, "outputs": {}}
    for node in graph.nodes:
        a = node.attrs
        if node.op == "quantize" and node.inputs[0] in inputs:
            q["inputs"][node.inputs[0]] = {"node": node.name, "scale": float(a["scale"]),
                                           "zero_point": int(a["zero_point"]), "dtype": a["dtype"],
                                           "qmin": int(a["qmin"]), "qmax": int(a["qmax"])}
        elif node.op == "quantize_rows" and node.inputs[0] in inputs:
            q["inputs"][node.inputs[0]] = {"node": node.name, "per_row": True, "dtype": a["dtype"]}
        elif node.op == "dequantize" and node.outputs[0] in outputs:
            q["outputs"][node.outputs[0]] = {"node": node.name, "scale": float(a["scale"]),
                                             "zero_point": int(a["zero_point"])}
    pre = graph.meta.get("input_quant")
    if pre and pre["quantized_input"] in inputs:  # prequantize_input: the caller quantizes, once per dataset
        q["inputs"][pre["quantized_input"]] = {**{k: pre[k] for k in ("scale", "zero_point", "dtype", "qmin", "qmax")},
                                               "prequantized_from": pre["float_input"]}
    return q


def float_op_report(graph: Graph) -> dict[str, Any]:
    """Float ops by name and whether they sit only at the boundary (input quantize, output dequantize)."""
    from qgnn_deploy.ir.ops import OPS

    inputs = {v.name for v in graph.inputs} | set(graph.initializers)
    outputs = {v.name for v in graph.outputs}
    names = graph.float_ops()
    entries, interior = [], []
    for node in graph.nodes:
        if not OPS[node.op].is_float:
            continue
        at_boundary = (node.op in ("quantize", "quantize_rows") and node.inputs[0] in inputs) or \
                      (node.op == "dequantize" and node.outputs[0] in outputs)
        entries.append({"name": node.name or node.outputs[0], "op": node.op, "at_boundary": at_boundary})
        if not at_boundary:
            interior.append(node.name or node.outputs[0])
    return {"names": names, "ops": entries, "only_at_boundary": not interior, "interior": interior}


def _compare(outs: Mapping[str, np.ndarray], ref: Mapping[str, np.ndarray]) -> tuple[bool, dict[str, Any]]:
    detail: dict[str, Any] = {}
    ok = True
    for name, r in ref.items():
        o = outs.get(name)
        same = o is not None and o.dtype == r.dtype and o.shape == r.shape and np.array_equal(o, r)
        entry: dict[str, Any] = {"bit_exact": bool(same)}
        if not same and o is not None and o.shape == r.shape:
            diff = np.abs(o.astype(np.float64) - r.astype(np.float64))
            entry.update(mismatches=int((diff != 0).sum()), max_abs_diff=float(diff.max()) if diff.size else 0.0)
        detail[name] = entry
        ok &= same
    return ok, detail


# ------------------------------------------------------------------------------------------ export
def export_graph(graph: Graph, target: str, out_dir: str | Path, **kwargs: Any) -> dict:
    """Write the artifact for ``graph`` and ``target`` into ``out_dir`` atomically; returns the manifest.

    Holds ``out_dir``'s exclusive lock for the whole export (a concurrent export to the same directory
    fails with one line) and turns every ``OSError`` (read-only, unwritable or full file system) into a
    one-line :class:`QgnnError`; nothing is left behind on failure.  Arguments: :func:`_export_graph`.
    """
    from qgnn_deploy.artifact import os_error_text, output_lock

    check_target(target)
    with output_lock(Path(out_dir)):
        try:
            return _export_graph(graph, target, out_dir, **kwargs)
        except OSError as exc:
            raise QgnnError(f"cannot write {out_dir}: {os_error_text(exc)}") from None


def _export_graph(graph: Graph, target: str, out_dir: str | Path, *, sample_feeds: dict, source: dict | None = None,
                  report_extra: dict | None = None, tune_trials: int = 0, force: bool = True,
                  saturation_safe: bool = True, manifest_extra: dict | None = None,
                  check_emulated: bool = False) -> dict:
    """Write the artifact for ``graph`` and ``target`` into ``out_dir`` atomically; returns the manifest.

    ``sample_feeds`` is a representative input (it becomes ``sample_input.npz``,
    its interpreter output ``reference_output.npz``, and it is what buffer size,
    kernels and ORT parity are measured on).  ``source`` describes the
    checkpoint (``sha256``/``checkpoint_sha256``, ``path``); ``report_extra`` is
    merged into the report (e.g. ``{"accuracy": {...}}`` by stage).  With
    ``force=False`` an existing ``out_dir`` is an error.  ``saturation_safe=False``
    trades exactness on non-VNNI x86 CPUs for one MatMulInteger per int8 weight
    (see :func:`qgnn_deploy.backends.onnx.export_onnx`).  ``manifest_extra`` entries are recorded in
    the manifest (e.g. ``allow_mismatch`` when the user exported a graph that fails fold parity).
    ``check_emulated``: run a cross-compiled aarch64 library once under qemu-user on the sample (through the
    on-device benchmark script, as on a board) and write the artifact only when it is bit-exact.
    """
    from qgnn_deploy.backends.onnx import OnnxRunner, export_onnx, kernel_report
    from qgnn_deploy.backends.onnx.runner import validate_feeds

    out_dir = Path(out_dir)
    preset = check_target(target)
    if check_emulated:
        require_emulation(preset)
    if out_dir.exists() and not force:
        raise QgnnError(f"{out_dir} already exists (pass --force to replace it)")
    try:
        graph.validate()
    except ValueError as exc:
        raise QgnnError(f"invalid integer graph: {exc}") from None
    sample_feeds = quantize_input_feeds(graph, {k: np.asarray(v) for k, v in sample_feeds.items()})
    facts = validate_feeds(graph.inputs, graph.meta, sample_feeds)
    feeds = {vi.name: np.asarray(sample_feeds[vi.name]) for vi in graph.inputs}
    try:
        reference = interpret(graph, feeds)
        buffers = buffer_report(graph, feeds)
    except (IROverflowError, IndexError, ValueError, TypeError, ZeroDivisionError) as exc:
        raise QgnnError(f"the reference interpreter rejects the sample input: {exc}") from None

    model = export_onnx(graph, saturation_safe=saturation_safe, int8_gemm=onnx_int8_gemm(preset))
    onnx_bytes = model.SerializeToString()
    parity: dict[str, Any] = {"threads": {}, "repeats": PARITY_REPEATS}
    all_exact = True
    latency: dict[str, float] = {}
    for threads in PARITY_THREADS:
        runner = OnnxRunner(onnx_bytes, graph, threads=threads)
        per_thread = True
        for _ in range(PARITY_REPEATS):
            ok, detail = _compare(runner.run(feeds), reference)
            per_thread &= ok
            if not ok:
                parity.setdefault("mismatch", {})[str(threads)] = detail
        parity["threads"][str(threads)] = per_thread
        all_exact &= per_thread
        times = runner.time(feeds, repeats=10, warmup=2)
        latency[f"ort_threads_{threads}_median_ms"] = round(latency_stats(times)["median"], 3)
    parity["bit_exact"] = all_exact
    if not all_exact:
        raise QgnnError("ONNX Runtime output differs from the reference interpreter on the sample input "
                        f"({json.dumps(parity.get('mismatch'))}); no artifact written")
    kernels = kernel_report(onnx_bytes, feeds, graph, threads=1)
    if kernels["inexact_kernels"]:
        raise QgnnError(f"ORT rewrote the model into inexact kernels {kernels['inexact_kernels']}; no artifact written")

    source = dict(source or {})
    checkpoint_sha = source.get("sha256") or source.get("checkpoint_sha256")
    meta = graph.meta
    manifest: dict[str, Any] = {
        "target": target.strip() if preset is None else preset.name,
        "inputs": [_value_spec(v) for v in graph.inputs],
        "outputs": [_value_spec(v) for v in graph.outputs],
        "task": meta.get("task"),
        "num_classes": meta.get("num_classes"),
        "max_in_degree": meta.get("max_in_degree"),
        "num_nodes": meta.get("num_nodes"),
        "model_bytes": model_bytes(graph),
        "onnx_bytes": len(onnx_bytes),
        "buffer_bytes": buffers.peak_bytes,
        "buffer_bytes_measured_on": {"num_nodes": facts.get("num_nodes"), "num_edges": facts.get("num_edges")},
        "quantization": boundary_quantization(graph),
        "input_quant": meta.get("input_quant"),
        "source_checkpoint_sha256": checkpoint_sha,
        "source": source or None,
        "onnx_int8_saturation_safe": saturation_safe,
        "onnx_int8_gemm": next((p.value for p in model.metadata_props if p.key == "qgnn.onnx_int8_gemm"), None),
        "onnx_opset": next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None),
        "tool_versions": _tool_versions(with_tvm=preset is not None),
        **{k: v for k, v in (manifest_extra or {}).items()},
    }
    report: dict[str, Any] = {
        "target": manifest["target"],
        "source": source or None,
        "task": meta.get("task"),
        "bit_widths": meta.get("bitwidths") or meta.get("bit_widths") or meta.get("bits"),
        "bit_widths_derived": derived_bit_widths(graph),
        "float_ops": float_op_report(graph),
        "model_size": {"onnx_file_bytes": len(onnx_bytes), "parameter_bytes": model_bytes(graph),
                       "parameters": {k: {"dtype": str(v.dtype), "shape": list(v.shape), "bytes": int(v.nbytes)}
                                      for k, v in graph.initializers.items()}},
        "buffers": {"peak_bytes": buffers.peak_bytes, "input_bytes": buffers.input_bytes,
                    "peak_at": buffers.peak_at, "measured_on": manifest["buffer_bytes_measured_on"]},
        "op_counts": {"ir": graph.op_counts(), "onnx": dict(sorted(_onnx_op_counts(model).items()))},
        "kernels": kernels,
        "parity": parity,
        "latency_sample": latency,
        "max_in_degree": {"limit": meta.get("max_in_degree"), "sample": facts.get("max_in_degree")},
    }
    for key, value in (report_extra or {}).items():
        if key in ("bitwidths", "bit_widths"):  # the folder's per-tensor widths are the ones to show
            report["bit_widths"] = value
        elif key in report:  # never let the caller's entries replace what export measured (e.g. ORT parity)
            report[f"source_{key}"] = value
        else:
            report[key] = value

    roles = dict(ROLES)
    old_tuning = out_dir / "tuning"
    with atomic_directory(out_dir, overwrite=force) as tmp:
        (tmp / "model.onnx").write_bytes(onnx_bytes)
        graph.save(tmp / "ir")
        with open(tmp / "sample_input.npz", "wb") as fh:
            np.savez_compressed(fh, **feeds)
        with open(tmp / "reference_output.npz", "wb") as fh:
            np.savez_compressed(fh, **reference)
        if preset is not None:
            manifest.update(_compile(graph, target, tmp, feeds, tune_trials, old_tuning, reference, report))
            for path in tmp.rglob("*"):
                rel = path.relative_to(tmp).as_posix()
                if path.is_file() and rel not in roles:
                    roles[rel] = "tvm_library" if path.suffix == ".so" else \
                        ("tuning" if rel.startswith("tuning/") else "other")
        if check_emulated:  # the complete staged artifact, exactly as it would be copied to a board
            write_manifest(tmp, jsonable(manifest), roles)
            _require_bit_exact_under_qemu(tmp)
            report["compiled"]["tvm_bit_exact_on_sample"] = True
            report["compiled"]["bit_exact_checked_on"] = "qemu-user (aarch64 emulated, runtimes/qgnn_bench.py)"
        (tmp / "report.json").write_text(json.dumps(jsonable(report), indent=2, sort_keys=False))
        (tmp / "report.md").write_text(render_markdown(report, manifest))
        doc = write_manifest(tmp, jsonable(manifest), roles)
    return doc


def onnx_int8_gemm(preset: Any) -> str:
    """How the artifact's ONNX model runs full-range int8 GEMMs (both forms exact everywhere): for a compiled
    target, the form that is faster on that target's CPU (``split`` u8 x s8 halves where MLAS has VNNI,
    ``u8u8`` on AVX2-only x86 and on arm64); for ``onnx`` alone, the exporting host's (``"auto"``)."""
    if preset is None:
        return "auto"
    if preset.is_aarch64:
        return "u8u8"
    from qgnn_deploy.backends.tvm.gemm_x86 import x86_gemm_kind

    return "split" if x86_gemm_kind(preset.features) in ("vnni", "avxvnni") else "u8u8"


def require_emulation(preset: Any) -> None:
    """``check_emulated`` needs an aarch64 library and the qemu sysroot: refuse before any work."""
    from qgnn_deploy import arm64

    if preset is None or not preset.is_aarch64:
        raise QgnnError("--check-emulated applies to aarch64 targets only (x86-64 libraries are checked natively)")
    arm64.require_a64_python()


def _require_bit_exact_under_qemu(artifact: Path) -> None:
    """Run the staged artifact's library once under qemu-user; a one-line error when its output differs."""
    from qgnn_deploy import arm64

    rep = arm64.run_bench(artifact, emulate_a64=True, backend="tvm", threads=2, warmup=0, repeats=1)
    if not (rep.get("reference") or {}).get("match"):
        raise QgnnError("the aarch64 library's output under qemu-user differs from the reference interpreter on the "
                        "sample input; no artifact written")


def _compile(graph: Graph, target: str, tmp: Path, feeds: dict, tune_trials: int, old_tuning: Path,
             reference: Mapping[str, np.ndarray], report: dict[str, Any]) -> dict[str, Any]:
    """Build the TVM library into the staging directory; reuse a previous export's tuning database."""
    from qgnn_deploy.backends.tvm import compile_to_dir

    tuning_db = None
    if old_tuning.is_dir():
        shutil.copytree(old_tuning, tmp / "tuning", dirs_exist_ok=True)
        tuning_db = tmp / "tuning"
    fields = dict(compile_to_dir(graph, target, tmp, sample_feeds=feeds, tune_trials=tune_trials,
                                 tuning_db=tuning_db))
    fields.pop("roles", None)  # roles are assigned by file suffix in export_graph
    target_info = fields.get("target") or {}
    lib = tmp / str(fields.get("library", ""))
    if fields.get("library") and lib.is_file():
        fields["library_bytes"] = lib.stat().st_size
    if fields.get("library") and lib.is_file() and not target_info.get("cross_compiled", True):
        from qgnn_deploy.backends.tvm import run_library

        out = run_library(lib, feeds, [n for n in feeds], spec=graph)
        ref = next(iter(reference.values()))
        exact = bool(out.dtype == ref.dtype and out.shape == ref.shape and np.array_equal(out, ref))
        fields["tvm_bit_exact_on_sample"] = exact
        if not exact:
            raise QgnnError("the compiled TVM library's output differs from the reference interpreter on the sample "
                            "input; no artifact written")
    report["compiled"] = {k: v for k, v in fields.items() if k != "target"} | {"target": fields.get("target")}
    return fields


def _onnx_op_counts(model: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for n in model.graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return counts


def render_markdown(report: dict[str, Any], manifest: dict[str, Any]) -> str:
    """The human-readable deploy report."""
    lines = [f"# Deploy report: target `{report['target']}`", ""]
    src = report.get("source") or {}
    if src:
        sha = manifest.get("source_checkpoint_sha256")
        lines += [f"- Source checkpoint: `{src.get('path', '?')}` (sha256 `{sha}`)"]
    lines += [f"- Task: {report.get('task')}, classes: {manifest.get('num_classes')}, "
              f"max in-degree limit: {manifest.get('max_in_degree')}",
              "- Inputs: " + ", ".join(f"`{i['name']}` {i['dtype']}{i['shape']}" for i in manifest["inputs"]),
              "- Outputs: " + ", ".join(f"`{o['name']}` {o['dtype']}{o['shape']}" for o in manifest["outputs"]),
              ""]
    size = report["model_size"]
    buf = report["buffers"]
    lines += ["## Size", "",
              "| quantity | bytes |", "|---|---|",
              f"| parameters (int4 packed) | {size['parameter_bytes']} ({fmt_bytes(size['parameter_bytes'])}) |",
              f"| ONNX file | {size['onnx_file_bytes']} ({fmt_bytes(size['onnx_file_bytes'])}) |",
              f"| peak activation buffers (sample: N={buf['measured_on'].get('num_nodes')}, "
              f"E={buf['measured_on'].get('num_edges')}) | {buf['peak_bytes']} ({fmt_bytes(buf['peak_bytes'])}), "
              f"peak at `{buf['peak_at']}` |", ""]
    if "compiled" in report:
        comp = report["compiled"]
        lib = comp.get("library")
        exact = comp.get("tvm_bit_exact_on_sample")
        lines += ["## Compiled library", "", f"- Library: `{lib}` ({fmt_bytes(comp.get('library_bytes'))})",
                  f"- Target: `{json.dumps(comp.get('target'))}`",
                  f"- TVM planned buffers: {comp.get('tvm_buffer_bytes')}",
                  "- Bit-exact vs the interpreter on the sample: " +
                  ("not run here (cross-compiled; check on the device with qgnn_bench, or export with "
                   "--check-emulated)" if exact is None else
                   f"**{exact}**" + (f" (run under {comp['bit_exact_checked_on']})"
                                     if comp.get("bit_exact_checked_on") else "")), ""]
    fo = report["float_ops"]
    lines += ["## Float operations", "",
              "Only at the boundary." if fo["only_at_boundary"] else
              f"**Float ops inside the graph:** {', '.join(fo['interior'])}", ""]
    lines += [f"- `{e['name']}` ({e['op']}){'' if e['at_boundary'] else ' **interior**'}" for e in fo["ops"]]
    lines += ["", "## Bit-widths", ""]
    bw = report.get("bit_widths") or report.get("bit_widths_derived") or {}
    if report.get("bit_widths"):
        lines += ["From the folder:", ""]
    else:
        lines += ["Derived from the graph's quantize/requantize ranges and weight dtypes:", ""]
    lines += ["| tensor | bits |", "|---|---|"] + [f"| `{k}` | {v} |" for k, v in bw.items()] + [""]
    par = report["parity"]
    lines += ["## ONNX Runtime parity", "",
              f"Bit-exact against the reference interpreter on the sample input: **{par['bit_exact']}** "
              f"(threads {', '.join(par['threads'])}; {par['repeats']} runs each).",
              "int8 weights " + (("that could saturate u8 x s8 run as two 7-bit halves in one u8 x s8 GEMM "
                                  "(faster where MLAS has VNNI)" if manifest.get("onnx_int8_gemm") == "split" else
                                  "that could saturate u8 x s8 run as u8 x u8 (weights + 128)")
                                 + ", so MatMulInteger is exact on every x86 CPU (VNNI or not)."
                                 if manifest.get("onnx_int8_saturation_safe") else
                                 "kept whole (--assume-vnni): exact on x86 with VNNI and on arm64 only."), ""]
    lat = report.get("latency_sample") or {}
    if lat:
        lines += ["Latency on the sample input: " + ", ".join(f"{k.replace('_median_ms', '')} {v} ms"
                                                             for k, v in lat.items()), ""]
    k = report["kernels"]
    lines += ["## Kernels ORT ran", "", f"Providers: {', '.join(k['providers'])}.", "",
              "| op type | calls | time per run (us) |", "|---|---|---|"]
    lines += [f"| {op} | {e['calls']} | {e['total_us']} |" for op, e in k["profiled"].items()]
    lines += ["", "Optimized graph op counts: " + ", ".join(f"{op} x{c}" for op, c in k["optimized_ops"].items()), ""]
    counts = report["op_counts"]["ir"]
    lines += ["## IR op counts", "", ", ".join(f"{op} x{c}" for op, c in sorted(counts.items())), ""]
    known = {"target", "source", "task", "bit_widths", "bit_widths_derived", "float_ops", "model_size", "buffers",
             "op_counts", "kernels", "parity", "latency_sample", "max_in_degree", "compiled", "source_float_ops"}
    for key, value in report.items():
        if key in known:
            continue
        lines += [f"## {key.replace('_', ' ').capitalize()}", ""]
        if isinstance(value, dict):
            lines += ["| entry | value |", "|---|---|"] + [f"| {k2} | {_cell(v2)} |" for k2, v2 in value.items()]
        else:
            lines += [_cell(value)]
        lines += [""]
    return "\n".join(lines)


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    if isinstance(v, (dict, list)):
        return "`" + json.dumps(jsonable(v)) + "`"
    return str(v)
