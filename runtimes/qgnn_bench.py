#!/usr/bin/env python3
"""On-device benchmark for a qgnn-deploy artifact directory.

Copy the artifact directory and this one file to the board, then::

    python3 qgnn_bench.py ARTIFACT_DIR [--backend tvm|onnx|auto] [--threads N] [--warmup N]
                          [--repeats N] [--input inputs.npz] [--json out.json] [--md out.md]
                          [--remote host:port]

It needs only Python 3.9+, NumPy and one runtime: the TVM Python package (``apache-tvm``) for the
``model_<target>.so`` library, or ONNX Runtime for ``model.onnx``.  It deliberately imports neither
torch nor ``qgnn_deploy``: the manifest schema (``qgnn_deploy/artifact.py``, format
``qgnn-artifact`` version 1) is re-read here, so keep the two in step.

Exit status: 0 ran and outputs match the reference (or there was no reference to compare);
1 ran but outputs differ from ``reference_output.npz``; 2 bad artifact / input / environment
(one ``qgnn_bench: error: ...`` line on stderr, no report files written).
"""

# ruff: noqa: I001  (the vendored block below brings its own imports)
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import tempfile
import time
# BEGIN VENDORED qgnn_deploy/validation.py (python3 -m qgnn_deploy.validation --vendor FILE)
import hashlib
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

try:
    import numpy as np
except ImportError:  # the device script reports a missing NumPy itself, as one line
    np = None  # type: ignore[assignment]

MANIFEST_CHECKSUM = "manifest.sha256"  # one ``sha256sum`` line over manifest.json, next to it


class ValidationError(ValueError):
    """An input (or an artifact's recorded limit) that no runner may run: one line, exit status 2."""


# ----------------------------------------------------------------------------------------- inputs
def _spec_fields(spec: Any) -> tuple[str, str | None, list[Any] | None]:
    """(name, dtype, shape) of an input spec: a manifest dict or an object with those attributes."""
    if isinstance(spec, Mapping):
        name, dtype, shape = spec.get("name"), spec.get("dtype"), spec.get("shape")
    else:
        name, dtype, shape = getattr(spec, "name", None), getattr(spec, "dtype", None), getattr(spec, "shape", None)
    if (
        not isinstance(name, str)
        or (dtype is not None and not isinstance(dtype, str))
        or (shape is not None and not isinstance(shape, (list, tuple)))
    ):
        raise ValidationError(f"malformed input spec {spec!r} (want name, dtype, shape)")
    return name, dtype, None if shape is None else list(shape)


def recorded_int(meta: Mapping[str, Any], key: str) -> int | None:
    """``meta[key]`` as a non-negative int, None when absent or null; anything else is an error."""
    value = meta.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 0:
        raise ValidationError(
            f"the model records {key} = {value!r}, which is not a non-negative integer "
            "(corrupt manifest or graph metadata)"
        )
    return int(value)


def check_edge_index(ei: np.ndarray, n: int | None) -> tuple[int, int]:
    """(E, max in-degree) of an integer ``[2, E]`` edge list whose ids all lie in ``[0, n)``.

    ``n`` None (no node-feature input tells N): ids must be non-negative and below 2**31.
    """
    if not isinstance(ei, np.ndarray) or ei.dtype.kind not in "iu" or ei.ndim != 2 or ei.shape[0] != 2:
        got = f"{ei.dtype} {list(ei.shape)}" if isinstance(ei, np.ndarray) else type(ei).__name__
        raise ValidationError(f"edge_index must be an integer array of shape [2, E], got {got}")
    e = int(ei.shape[1])
    if e == 0:
        return 0, 0
    lo, hi = int(ei.min()), int(ei.max())
    if n is None:
        if lo < 0 or hi >= 2**31:
            raise ValidationError(f"edge_index holds node id {lo if lo < 0 else hi}, outside [0, 2^31)")
        return e, int(np.unique(ei[1], return_counts=True)[1].max())
    if lo < 0 or hi >= n:
        bad = lo if lo < 0 else hi
        raise ValidationError(f"edge_index holds node id {bad}, outside [0, {n}) for a graph of {n} nodes")
    return e, int(np.bincount(ei[1], minlength=n).max())


def validate_feeds(inputs: Sequence[Any], meta: Mapping[str, Any], feeds: Mapping[str, Any]) -> dict[str, Any]:
    """Check ``feeds`` against the input spec and recorded limits; returns facts (N, E, max in-degree, G).

    ``inputs``: the model's inputs in order (manifest dicts or IR ``ValueInfo``); ``meta``: the recorded
    limits (``max_in_degree``, ``num_nodes``, ``num_edges``, ``static_shapes``; a manifest or graph meta).
    Policy: names, dtypes, ranks and fixed/symbolic dims must match; float inputs must be finite; edge
    and batch ids must lie in ``[0, N)``; a node's in-degree must not exceed ``max_in_degree``.
    """
    specs = [_spec_fields(s) for s in inputs]
    names = [s[0] for s in specs]
    missing = [n for n in names if n not in feeds]
    if missing:
        raise ValidationError(f"missing input(s) {', '.join(missing)} (the model takes {', '.join(names)})")
    extra = sorted(set(feeds) - set(names))
    if extra:
        raise ValidationError(f"unexpected input(s) {', '.join(extra)} (the model takes {', '.join(names)})")
    dims: dict[str, int] = {}
    for name, dtype, shape in specs:
        a = feeds[name]
        if not isinstance(a, np.ndarray):
            raise ValidationError(f"input {name} must be a numpy array, got {type(a).__name__}")
        if dtype is not None and str(a.dtype) != dtype:
            raise ValidationError(f"input {name} has dtype {a.dtype}, the model expects {dtype}")
        if shape is not None:
            if a.ndim != len(shape):
                raise ValidationError(
                    f"input {name} has rank {a.ndim} (shape {list(a.shape)}), the model expects rank {len(shape)} "
                    f"{shape}"
                )
            for axis, (want, got) in enumerate(zip(shape, a.shape)):
                if isinstance(want, (int, np.integer)) and not isinstance(want, bool) and want >= 0 and want != got:
                    raise ValidationError(f"input {name} has {got} in dimension {axis}, the model expects {want}")
                if isinstance(want, str) and want:
                    if dims.setdefault(want, int(got)) != got:
                        raise ValidationError(
                            f"input {name} has {got} in dimension {axis}, but {want} = "
                            f"{dims[want]} from an earlier input"
                        )
        if a.dtype.kind == "f" and a.size and not np.isfinite(a).all():
            raise ValidationError(f"input {name} contains NaN or infinite values")
        if a.dtype.kind not in "fiub":
            raise ValidationError(f"input {name} has dtype {a.dtype}, which no model takes")
    n = dims.get("N")
    if n is None:  # no symbolic N: the first per-node input (not edge_index / batch) tells it
        first = next((feeds[k] for k in names if k not in ("edge_index", "batch") and feeds[k].ndim), None)
        n = int(first.shape[0]) if first is not None else None
    facts: dict[str, Any] = {"num_nodes": n}
    fixed_n = recorded_int(meta, "num_nodes")
    if fixed_n is not None and n is not None and fixed_n != n:
        raise ValidationError(
            f"graph has {n} nodes, but this model has per-node parameters for exactly {fixed_n} nodes"
        )
    limit = recorded_int(meta, "max_in_degree")
    ei = feeds.get("edge_index")
    if ei is not None:
        e, max_in = check_edge_index(ei, n)
        facts["num_edges"], facts["max_in_degree"] = e, max_in
        if limit is not None and max_in > limit:
            raise ValidationError(
                f"a node has in-degree {max_in}, above the model's max_in_degree {limit} "
                "(its int32 accumulators are only proven safe up to that)"
            )
    batch = feeds.get("batch")
    if batch is not None:
        if batch.dtype.kind not in "iu" or batch.ndim != 1:
            raise ValidationError(f"batch must be a 1-D integer array, got {batch.dtype} {list(batch.shape)}")
        if batch.size:
            lo, hi = int(batch.min()), int(batch.max())
            if lo < 0 or (n is not None and hi >= max(n, 1)):
                raise ValidationError(f"batch holds graph id {lo if lo < 0 else hi}, outside [0, {n}) for {n} nodes")
            facts["num_graphs"] = hi + 1
    fixed_e = recorded_int(meta, "num_edges")
    if fixed_e is not None and facts.get("num_edges", fixed_e) != fixed_e:
        raise ValidationError(f"graph has {facts['num_edges']} edges, this model was compiled for exactly {fixed_e}")
    static = meta.get("static_shapes")
    if static is not None and not isinstance(static, Mapping):
        raise ValidationError(f"the model records static_shapes = {static!r}, which is not a mapping")
    for sym in static or {}:
        want = recorded_int(static, sym)
        got = n if sym == "N" else facts.get("num_edges") if sym == "E" else dims.get(sym)
        if want is not None and got is not None and got != want:
            raise ValidationError(
                f"{sym} = {got}, but the library was compiled for static shapes {sym} = {want} "
                "only (re-export without tuning for other graphs)"
            )
    return facts


# ------------------------------------------------------------------------------------ statistics
def percentile(sorted_ms: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (NumPy's default method) of an ascending list."""
    if len(sorted_ms) == 1:
        return sorted_ms[0]
    pos = (len(sorted_ms) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(sorted_ms) - 1)
    return sorted_ms[lo] + (sorted_ms[hi] - sorted_ms[lo]) * (pos - lo)


def latency_stats(seconds: Sequence[float]) -> dict[str, float]:
    """median / p90 / p99 / min / max / mean in milliseconds, and the number of calls ``n``."""
    ms = sorted(s * 1e3 for s in seconds)
    return {
        "median": percentile(ms, 50),
        "p90": percentile(ms, 90),
        "p99": percentile(ms, 99),
        "min": ms[0],
        "max": ms[-1],
        "mean": sum(ms) / len(ms),
        "n": len(ms),
    }


# ------------------------------------------------------------------------------ checksums, bytes
def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def manifest_checksum_line(manifest_bytes: bytes) -> str:
    """The ``manifest.sha256`` text: one ``sha256sum``-compatible line (``sha256sum -c`` verifies it)."""
    return f"{sha256_bytes(manifest_bytes)}  manifest.json\n"


def verify_manifest_checksum(root: str | Path, manifest_bytes: bytes) -> None:
    """Raise unless ``root/manifest.sha256`` holds the sha256 of ``manifest_bytes``."""
    path = Path(root) / MANIFEST_CHECKSUM
    try:
        line = path.read_text(encoding="ascii", errors="replace").strip()
    except FileNotFoundError:
        raise ValidationError(f"{root}: no {MANIFEST_CHECKSUM} (re-export the artifact)") from None
    except OSError as exc:
        raise ValidationError(f"{root}: cannot read {MANIFEST_CHECKSUM} ({exc.strerror or exc})") from None
    want = line.split()[0] if line.split() else ""
    if want != sha256_bytes(manifest_bytes):
        raise ValidationError(f"{root}: checksum mismatch for manifest.json (file modified after export)")


def fmt_bytes(n: float | None) -> str:
    """``1536 -> '1.5 KiB'``; ``None -> 'n/a'``."""
    if n is None:
        return "n/a"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def status_bytes(key: str) -> int | None:
    """A ``/proc/self/status`` entry (``VmHWM``, ``VmRSS``) in bytes, or None (not Linux, or no such key)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
# END VENDORED qgnn_deploy/validation.py

FORMAT = "qgnn-artifact"
FORMAT_VERSION = 1
BENCH_VERSION = 1
EMULATED_LABEL = "EMULATED (qemu-user) \u2014 not device timings"
ELF_MACHINES = {0x3E: "x86_64", 0xB7: "aarch64", 0x28: "arm", 0xF3: "riscv64", 0x03: "x86"}
HOST_ALIASES = {"amd64": "x86_64", "arm64": "aarch64", "i686": "x86", "i386": "x86"}
# Planned activation bytes: the backend's own plan first (e.g. TVM's static memory plan), then the
# toolkit's IR-level liveness figure.
BUFFER_KEYS = ("{backend}_buffer_bytes", "buffer_bytes", "planned_activation_bytes", "activation_bytes")


T_START = time.perf_counter()
IMPORT_SECONDS: dict[str, float] = {}  # first-import time of each runtime module




class BenchError(Exception):
    """Bad artifact, bad input or missing runtime: reported as one line, exit status 2."""


# ----------------------------------------------------------------------------- manifest


def load_manifest(root: Path) -> dict[str, Any]:
    """Read ``manifest.json``; verify format, version, its own checksum line and every file's size and sha256."""
    if not root.is_dir():
        raise BenchError(f"{root}: not a directory")
    path = root / "manifest.json"
    if not path.is_file():
        raise BenchError(f"{root} is not a qgnn artifact (no manifest.json)")
    try:
        raw = path.read_bytes()
        doc = json.loads(raw)
    except (OSError, ValueError) as exc:
        raise BenchError(f"{path}: unreadable manifest ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BenchError(f"{path}: not a qgnn artifact manifest")
    if doc.get("format_version") != FORMAT_VERSION:
        raise BenchError(f"{path}: artifact format version {doc.get('format_version')} is not supported by this "
                         f"qgnn_bench.py (reads version {FORMAT_VERSION}); use the script from the same toolkit "
                         f"version ({doc.get('toolkit_version', '?')}) or re-export")
    verify_manifest_checksum(root, raw)
    files = doc.get("files")
    if not isinstance(files, dict) or not files:
        raise BenchError(f"{path}: manifest lists no files")
    real_root = root.resolve()
    for rel, entry in files.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str) or \
                not isinstance(entry.get("role", ""), str) or not isinstance(entry.get("bytes", 0), int):
            raise BenchError(f"{path}: malformed entry for {rel!r} in 'files' (want sha256, bytes, role)")
        f = root / rel
        if not rel or Path(rel).is_absolute() or ".." in Path(rel).parts or \
                not f.resolve().is_relative_to(real_root):
            raise BenchError(f"{path}: file name {rel!r} escapes the artifact directory")
        if not f.is_file():
            raise BenchError(f"{root}: file {rel} listed in the manifest is missing")
        if "bytes" in entry and f.stat().st_size != entry["bytes"]:
            raise BenchError(f"{root}: size mismatch for {rel} (file modified after export)")
        if sha256_file(f) != entry["sha256"]:
            raise BenchError(f"{root}: checksum mismatch for {rel} (file modified after export)")
    return doc


def files_with_role(manifest: dict[str, Any], role: str) -> list[str]:
    return sorted(rel for rel, e in manifest["files"].items() if e.get("role") == role)


def elf_machine(path: Path) -> str | None:
    """Architecture of an ELF file from its header (None when not ELF)."""
    with open(path, "rb") as fh:
        head = fh.read(20)
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    order = "little" if head[5] == 1 else "big"
    code = int.from_bytes(head[18:20], order)
    return ELF_MACHINES.get(code, f"elf-machine-{code:#x}")


def host_machine() -> str:
    m = platform.machine().lower()
    return HOST_ALIASES.get(m, m)


# ----------------------------------------------------------------------------- emulation


def detect_emulation() -> tuple[bool, list[str]]:
    """Is this process an emulated guest (qemu-user)?  Returns (flag, evidence lines).

    qemu-user keeps the host kernel's view of several /proc files: the process name stays
    ``qemu-<arch>``, /proc/cpuinfo may describe the x86 host CPU, and /proc/self/maps or
    /proc/self/exe may mention qemu.  Any one of these is enough.
    """
    evidence: list[str] = []
    machine = host_machine()

    def read(p: str) -> str:
        try:
            with open(p, errors="replace") as fh:
                return fh.read()
        except OSError:
            return ""

    comm = read("/proc/self/comm").strip()
    if comm.startswith("qemu"):
        evidence.append(f"/proc/self/comm is {comm!r}")
    status_name = re.search(r"^Name:\s*(\S+)", read("/proc/self/status"), re.M)
    if status_name and status_name.group(1).startswith("qemu") and not evidence:
        evidence.append(f"/proc/self/status Name is {status_name.group(1)!r}")
    evidence += cpuinfo_emulation(read("/proc/cpuinfo"), machine)
    if re.search(r"qemu-\w+", read("/proc/self/maps")):
        evidence.append("/proc/self/maps maps a qemu binary")
    try:
        exe = os.path.basename(os.readlink("/proc/self/exe"))
        if exe.startswith("qemu"):
            evidence.append(f"/proc/self/exe is {exe}")
    except OSError:
        pass
    return bool(evidence), evidence


def cpuinfo_emulation(cpuinfo: str, machine: str) -> list[str]:
    """Evidence of emulation in a /proc/cpuinfo text seen by a ``machine`` process."""
    evidence = []
    if machine != "x86_64" and re.search(r"^vendor_id\s*:\s*(GenuineIntel|AuthenticAMD)", cpuinfo, re.M):
        evidence.append(f"{machine} code but /proc/cpuinfo describes an x86 CPU")
    if re.search(r"^Hardware\s*:.*qemu", cpuinfo, re.M | re.I):
        evidence.append("/proc/cpuinfo Hardware line names qemu")
    return evidence


# ----------------------------------------------------------------------------- inputs


def load_npz(path: Path, what: str) -> dict[str, Any]:
    import numpy as np

    if not path.is_file():
        raise BenchError(f"{what} {path} not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as exc:  # zipfile.BadZipFile, ValueError (pickled object arrays), OSError
        raise BenchError(f"{what} {path} is not a readable .npz file ({type(exc).__name__}: {exc})") from None


def manifest_inputs(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """``manifest["inputs"]`` as a list of {name, dtype, shape}; a name->spec mapping is accepted too."""
    spec = manifest.get("inputs")
    if isinstance(spec, dict):
        spec = [{"name": k, **v} for k, v in spec.items()]
    if not isinstance(spec, list) or not spec or not all(isinstance(s, dict) and "name" in s for s in spec):
        raise BenchError("manifest has no usable 'inputs' list (name, dtype, shape)")
    return spec


def validate_inputs(arrays: dict[str, Any], manifest: dict[str, Any], source: str) -> dict[str, Any]:
    """Check the arrays against the manifest (the shared contract); return facts (N, E, max in-degree)."""
    try:
        return validate_feeds(manifest_inputs(manifest), manifest, arrays)
    except ValidationError as exc:
        raise BenchError(f"{source}: {exc}") from None


def prequantize_features(arrays: dict[str, Any], manifest: dict[str, Any],
                         source: str = "input") -> dict[str, Any] | None:
    """Quantize float features for an artifact exported with ``--integer-input``, in place; None if not needed.

    The artifact takes ``x_q`` (its ``input_quant`` contract: scale, zero point, range); a
    float ``x`` in the input file is quantized here once, outside the timed loop, with the
    same arithmetic as the toolkit's ``quantize`` op: clip(rint(x / scale) + zero_point).
    """
    import numpy as np

    c = manifest.get("input_quant")
    if not isinstance(c, dict) or c.get("float_input") not in arrays or c.get("quantized_input") in arrays:
        return None
    x = arrays.pop(c["float_input"])
    if x.dtype.kind != "f":
        raise BenchError(f"input {c['float_input']} is {x.dtype}; give float features or {c['quantized_input']} "
                         f"({c['dtype']}) already quantized")
    try:  # finite before it is quantized (a NaN would silently clip to a code)
        validate_feeds([{"name": c["float_input"], "dtype": None, "shape": None}], {}, {c["float_input"]: x})
    except ValidationError as exc:
        raise BenchError(f"{source}: {exc}") from None
    t0 = time.perf_counter()
    out = np.empty(x.shape, dtype=c["dtype"])
    rows = max(1, (1 << 22) // max(1, int(np.prod(x.shape[1:]))))  # ~4M elements per chunk: bounded temporaries
    for i in range(0, x.shape[0], rows):
        v = np.rint(x[i:i + rows].astype(np.float32) / np.float32(c["scale"]))
        q = np.clip(v, -(2.0**62), 2.0**62).astype(np.int64) + int(c["zero_point"])
        out[i:i + rows] = np.clip(q, c["qmin"], c["qmax"])
    arrays[c["quantized_input"]] = out
    return {"from": c["float_input"], "to": c["quantized_input"], "ms": round(1e3 * (time.perf_counter() - t0), 3),
            "note": "once per input graph, not timed per call"}


def sort_edges_by_destination(arrays: dict[str, Any]) -> dict[str, Any] | None:
    """Reorder ``edge_index`` columns by destination once, in place (``--sort-edges``); None without edges.

    Every aggregation in the integer graph is an exact integer sum (or max) per destination, so the
    edge order cannot change an output bit; sorted edges make the per-destination updates sequential
    in memory, which pays on graphs larger than the last-level cache (the same once-per-graph step as
    building a CSR/SparseTensor for PyG).
    """
    import numpy as np

    ei = arrays.get("edge_index")
    if ei is None or ei.ndim != 2 or ei.shape[1] == 0:
        return None
    t0 = time.perf_counter()
    arrays["edge_index"] = np.ascontiguousarray(ei[:, np.argsort(ei[1], kind="stable")])
    return {"by": "destination", "ms": round(1e3 * (time.perf_counter() - t0), 3),
            "note": "once per input graph, not timed per call; outputs unchanged"}


# ----------------------------------------------------------------------------- runners


def output_names(manifest: dict[str, Any], reference: dict[str, Any] | None) -> list[str] | None:
    spec = manifest.get("outputs")
    if isinstance(spec, list) and spec:
        return [s["name"] if isinstance(s, dict) else str(s) for s in spec]
    if isinstance(spec, dict) and spec:
        return list(spec)
    return list(reference) if reference else None


class OrtRunner:
    """ONNX Runtime CPU session with a fixed intra-op thread count and one inter-op thread."""

    def __init__(self, model: Path, threads: int, names: list[str], outs: list[str] | None) -> None:
        t0 = time.perf_counter()
        try:
            import onnxruntime as ort

            IMPORT_SECONDS.setdefault("onnxruntime", time.perf_counter() - t0)
        except ImportError as exc:
            raise BenchError(f"onnxruntime is not importable ({exc}): pip install onnxruntime") from None
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        try:
            self.sess = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise BenchError(f"ONNX Runtime cannot load {model.name}: {str(exc).splitlines()[0]}") from None
        self.version = f"onnxruntime {ort.__version__}"
        self.names = names
        got = [o.name for o in self.sess.get_outputs()]
        self.outs = outs if outs and len(outs) == len(got) else got

    def prepare(self, arrays: dict[str, Any]) -> Any:
        return {n: arrays[n] for n in self.names}

    def __call__(self, prepared: Any) -> list[Any]:
        return self.sess.run(None, prepared)


def import_tvm() -> Any:
    t0 = time.perf_counter()
    try:
        import tvm
        from tvm import relax  # noqa: F401  (registers the VM)
        IMPORT_SECONDS.setdefault("tvm", time.perf_counter() - t0)
    except Exception as exc:
        raise BenchError(f"the TVM runtime is not importable ({type(exc).__name__}: {exc}): "
                         "pip install apache-tvm==0.27.0.post1 apache-tvm-ffi==0.1.14.post1") from None
    return tvm


def _as_numpy(t: Any, local: bool) -> Any:
    """A local runtime tensor as a zero-copy NumPy view (DLPack; the view keeps the tensor, and so the VM's
    output storage, alive: the next call gets new storage), else a copy (a remote tensor, or NumPy < 1.22)."""
    if local and np is not None and hasattr(np, "from_dlpack"):
        try:
            return np.from_dlpack(t)
        except (TypeError, RuntimeError, BufferError):
            pass
    return t.numpy()


def _tvm_outputs(out: Any, local: bool = True) -> list[Any]:
    if hasattr(out, "numpy"):
        return [_as_numpy(out, local)]
    return [_as_numpy(o, local) for o in out]


class TvmRunner:
    """Relax VirtualMachine over the exported library, locally or on a TVM RPC server."""

    def __init__(self, lib: Path, threads: int, names: list[str], outs: list[str] | None,
                 remote: str | None = None) -> None:
        tvm = import_tvm()
        self.tvm, self.names, self.outs, self.remote = tvm, names, outs, None
        self.version = f"tvm {tvm.__version__}"
        try:
            if remote:
                host, _, port = remote.rpartition(":")
                if not host or not port.isdigit():
                    raise BenchError(f"--remote wants host:port, got {remote!r}")
                from tvm import rpc

                try:
                    self.remote = rpc.connect(host, int(port))
                except Exception as exc:
                    raise BenchError(f"cannot connect to the TVM RPC server at {remote}: "
                                     f"{str(exc).splitlines()[0]}") from None
                self.dev = self.remote.cpu()
                try:  # fix the server's thread pool size when the runtime offers the hook
                    self.remote.get_function("runtime.config_threadpool")(1, threads)
                except Exception:
                    pass
                self.remote.upload(str(lib))
                mod = self.remote.load_module(lib.name)
            else:
                self.dev = tvm.cpu()
                mod = tvm.runtime.load_module(str(lib))
            self.vm = tvm.relax.VirtualMachine(mod, self.dev)
        except BenchError:
            raise
        except Exception as exc:
            raise BenchError(f"TVM cannot load {lib.name}: {str(exc).strip().splitlines()[-1]}") from None

    def prepare(self, arrays: dict[str, Any]) -> Any:
        return [self.tvm.runtime.tensor(arrays[n], self.dev) for n in self.names]

    def __call__(self, prepared: Any) -> list[Any]:
        return _tvm_outputs(self.vm["main"](*prepared), local=self.remote is None)

    def remote_cpuinfo(self) -> str | None:
        """The device's /proc/cpuinfo through the RPC server's file download, when it allows that.

        That works against a qemu-user server whose sysroot carries a cpuinfo file; a real kernel's
        /proc/cpuinfo reports size 0 and the download fails, so a real board stays "unknown".
        """
        try:
            return bytes(self.remote.download("/proc/cpuinfo")).decode("utf-8", "replace")
        except Exception:
            return None

    def remote_times(self, prepared: Any, repeats: int) -> list[float]:
        """Per-call seconds measured on the device (no RPC round trip in the number)."""
        timer = self.vm.time_evaluator("main", self.dev, number=1, repeat=repeats)
        return [float(t) for t in timer(*prepared).results]


# ----------------------------------------------------------------------------- measuring


def peak_rss_bytes() -> tuple[int | None, str]:
    hwm = status_bytes("VmHWM")
    if hwm is not None:
        return hwm, "VmHWM (/proc/self/status)"
    try:
        import resource

        r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return (r if sys.platform == "darwin" else r * 1024), "ru_maxrss"
    except Exception:
        return None, "unavailable"


def compare(outputs: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    """Bit-for-bit comparison (the program is integer, so equality is the only correct result)."""
    import numpy as np

    per: dict[str, Any] = {}
    for name, ref in reference.items():
        got = outputs.get(name)
        if got is None:
            per[name] = {"match": False, "reason": "output missing"}
            continue
        entry: dict[str, Any] = {"shape": list(got.shape), "dtype": str(got.dtype)}
        if got.shape != ref.shape:
            entry.update(match=False, reason=f"shape {list(got.shape)} != reference {list(ref.shape)}")
        else:
            same_dtype = got.dtype == ref.dtype
            equal = bool(np.array_equal(got, ref))
            if got.size:
                wide = np.float64 if (got.dtype.kind == "f" or ref.dtype.kind == "f") else np.int64
                diff = np.abs(got.astype(wide) - ref.astype(wide))
                entry["max_abs_diff"] = float(diff.max())
                entry["mismatched_elements"] = int(np.count_nonzero(diff))
            else:
                entry["max_abs_diff"], entry["mismatched_elements"] = 0.0, 0
            entry["match"] = equal and same_dtype
            if not same_dtype:
                entry["reason"] = f"dtype {got.dtype} != reference {ref.dtype}"
        per[name] = entry
    match = all(e["match"] for e in per.values()) and bool(per)
    diffs = [e["max_abs_diff"] for e in per.values() if "max_abs_diff" in e]
    return {"checked": True, "match": match, "max_abs_diff": max(diffs) if diffs else None, "outputs": per}


# ----------------------------------------------------------------------------- reports


def select_buffer_bytes(manifest: dict[str, Any], backend: str) -> tuple[int | None, str | None]:
    for pattern in BUFFER_KEYS:
        key = pattern.format(backend=backend)
        v = manifest.get(key)
        if isinstance(v, dict):  # per-backend numbers
            v = v.get(backend, v.get("planned", v.get("total")))
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return int(v), key
    return None, None


def target_text(target: Any) -> str:
    """``arm64 (aarch64-linux-gnu, mcpu generic, +neon)`` from the manifest's target entry."""
    if not isinstance(target, dict):
        return str(target)
    tvm_target = target.get("tvm_target") if isinstance(target.get("tvm_target"), dict) else {}
    bits = [str(target.get("triple") or tvm_target.get("mtriple") or "")]
    if tvm_target.get("mcpu"):
        bits.append(f"mcpu {tvm_target['mcpu']}")
    if tvm_target.get("mattr"):
        bits.append(",".join(map(str, tvm_target["mattr"])))
    return f"{target.get('name', '?')} ({', '.join(b for b in bits if b)})"


def markdown(r: dict[str, Any]) -> str:
    lat = r["latency_ms"]
    lines = [f"# qgnn_bench: {r['artifact']['name']} ({r['backend']}, {r['artifact']['target_name'] or '?'})", ""]
    if r["emulated"]:
        lines += [f"> **{EMULATED_LABEL}.** " + "; ".join(r["emulation_evidence"]), ""]
    elif r["emulated"] is None:
        lines += ["> Emulation status of the remote device is unknown.", ""]
    ref = r["reference"]
    ref_txt = ("not checked (" + ref.get("reason", "") + ")") if not ref["checked"] else (
        f"**{'bit-exact' if ref['match'] else 'MISMATCH'}** (max abs diff {ref['max_abs_diff']})")
    inp = r["input"]
    mem = r["memory"]
    lines += [
        "| what | value |", "|---|---|",
        f"| timings | {r['timing_label']} |",
        f"| device | {r['device']['machine']} / {r['device']['cpu']} |",
        f"| artifact target | {target_text(r['artifact']['target'])} |",
        f"| runtime | {r['runtime_version']} ({r['model_file']}), {r['threads']} thread(s) |",
        f"| input | {inp['file']}: N={inp.get('num_nodes')}, E={inp.get('num_edges')}, "
        f"max in-degree={inp.get('max_in_degree')}" + (
            f"; {inp['quantized_once']['from']} quantized to {inp['quantized_once']['to']} once, "
            f"{inp['quantized_once']['ms']} ms (not in the latency)" if inp.get("quantized_once") else "") + (
            f"; edges sorted by destination once, {inp['edges_sorted_once']['ms']} ms (not in the latency)"
            if inp.get("edges_sorted_once") else "") + " |",
        f"| runs | {r['warmup']} warm-up + {r['repeats']} timed ({r['timing_method']}) |",
        f"| start-up | runtime import {r['startup_s']['runtime_import']:.2f} s, "
        f"model load {r['startup_s']['model_load']:.2f} s, {r['startup_s']['script_start_to_ready']:.2f} s "
        "from start (incl. checksums) |",
        f"| latency median | {lat['median']:.3f} ms |",
        f"| latency p90 / p99 | {lat['p90']:.3f} / {lat['p99']:.3f} ms |",
        f"| latency min / max | {lat['min']:.3f} / {lat['max']:.3f} ms |",
        f"| peak resident memory | {fmt_bytes(mem['peak_rss_bytes'])} ({mem['source']}; "
        f"{fmt_bytes(mem['rss_before_load_bytes'])} before loading the model) |",
        f"| buffer size (planned activations) | {fmt_bytes(r['buffer_bytes'])} (manifest {r['buffer_bytes_key']}) |",
        f"| model size (manifest model_bytes) | {fmt_bytes(r['model']['model_bytes'])} |",
        f"| model file(s) on disk | {fmt_bytes(r['model']['file_bytes'])} ({r['model_file']}) |",
        f"| outputs vs reference | {ref_txt} |",
    ]
    return "\n".join(lines) + "\n"


def write_all_or_nothing(files: dict[Path, str]) -> None:
    """Write every report file or none: all go to temporary siblings first, then are renamed."""
    staged: list[tuple[str, Path]] = []
    try:
        for path, text in files.items():
            path = path.resolve()
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
            staged.append((tmp, path))
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
        for tmp, path in staged:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in staged:
            Path(tmp).unlink(missing_ok=True)
        raise


# ----------------------------------------------------------------------------- main


def choose_backend(root: Path, manifest: dict[str, Any], want: str, remote: str | None) -> tuple[str, Path]:
    libs = files_with_role(manifest, "tvm_library")
    onnx = files_with_role(manifest, "onnx")
    here = host_machine()

    def pick_lib(strict: bool) -> Path | None:
        if not libs:
            if strict:
                raise BenchError(f"{root}: the artifact has no TVM library (files with role tvm_library)")
            return None
        archs = {rel: elf_machine(root / rel) for rel in libs}
        if remote:  # the remote device decides; prefer a non-host library when there are several
            return root / sorted(libs, key=lambda rel: archs[rel] == here)[0]
        for rel in libs:
            if archs[rel] in (here, None):
                return root / rel
        if strict:
            built = ", ".join(f"{rel} ({archs[rel]})" for rel in libs)
            raise BenchError(f"the TVM library is built for another CPU: {built}; this machine is {here} "
                             "(copy the artifact to the device, use --remote, or --backend onnx)")
        return None

    if remote and want == "onnx":
        raise BenchError("--remote drives a TVM RPC server; it works with --backend tvm only")
    if want == "tvm" or remote:
        return "tvm", pick_lib(strict=True)  # type: ignore[return-value]
    if want == "onnx":
        if not onnx:
            raise BenchError(f"{root}: the artifact has no ONNX model (file with role onnx)")
        return "onnx", root / onnx[0]
    lib = pick_lib(strict=False)
    if lib is not None:
        try:
            import_tvm()
            return "tvm", lib
        except BenchError:
            if not onnx:
                raise
    if onnx:
        return "onnx", root / onnx[0]
    raise BenchError(f"{root}: nothing this machine can run (no ONNX model, no {here} TVM library)")


def cpu_description(text: str | None = None) -> str:
    if text is None:
        try:
            with open("/proc/cpuinfo", errors="replace") as fh:
                text = fh.read()
        except OSError:
            return platform.processor() or "unknown"
    m = re.search(r"^model name\s*:\s*(.+)$", text, re.M)  # x86
    if m:
        return m.group(1).strip()
    # ARM: the core type from "CPU part" (every distinct one, big.LITTLE boards have two), plus the board.
    parts = {"0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57",
             "0xd08": "Cortex-A72", "0xd09": "Cortex-A73", "0xd0a": "Cortex-A75", "0xd0b": "Cortex-A76",
             "0xd0c": "Neoverse-N1", "0xd0d": "Cortex-A77", "0xd41": "Cortex-A78", "0xd40": "Neoverse-V1",
             "0xd49": "Neoverse-N2", "0xd4f": "Neoverse-V2"}
    cores = []
    for part in re.findall(r"^CPU part\s*:\s*(\S+)", text, re.M):
        name = parts.get(part.lower(), f"ARM part {part}")
        if name not in cores:
            cores.append(name)
    board = re.search(r"^Model\s*:\s*(.+)$", text, re.M) or re.search(r"^Hardware\s*:\s*(.+)$", text, re.M)
    desc = " + ".join(cores)
    if board:
        desc = f"{board.group(1).strip()} ({desc})" if desc else board.group(1).strip()
    return desc or platform.processor() or "unknown"


def default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class OneLineParser(argparse.ArgumentParser):
    """Usage errors as one ``qgnn_bench: error: ...`` line (exit 2), like every other error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"qgnn_bench: error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = OneLineParser(prog="qgnn_bench.py", description=__doc__.split("\n\n")[0])
    p.add_argument("artifact", type=Path, help="artifact directory (holds manifest.json)")
    p.add_argument("--backend", choices=("auto", "tvm", "onnx"), default="auto",
                   help="auto: the TVM library if it is built for this CPU and TVM imports, else ONNX Runtime")
    p.add_argument("--threads", type=int, default=None, help="worker threads (default: CPUs available)")
    p.add_argument("--warmup", type=int, default=10, help="untimed runs first (default 10)")
    p.add_argument("--repeats", type=int, default=50, help="timed runs (default 50)")
    p.add_argument("--input", type=Path, default=None, help=".npz of inputs (default: bundled sample_input.npz)")
    p.add_argument("--sort-edges", action="store_true",
                   help="reorder edge_index by destination once before timing (exact: outputs are unchanged; "
                        "faster on graphs larger than the CPU cache)")
    p.add_argument("--json", type=Path, default=None, help="write the report as JSON here")
    p.add_argument("--md", type=Path, default=None, help="write the markdown summary here")
    p.add_argument("--remote", default=None, metavar="HOST:PORT", help="run on a TVM RPC server instead")
    args = p.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be >= 1")
    if args.warmup < 0 or args.repeats < 1:
        p.error("--warmup must be >= 0 and --repeats >= 1")
    return args


def run(args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    root = args.artifact.resolve()
    manifest = load_manifest(root)
    threads = args.threads or default_threads()
    # Thread pools are sized when the runtime is imported: set this before anything imports tvm.
    os.environ["TVM_NUM_THREADS"] = str(threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    if np is None:
        raise BenchError("NumPy is not importable: pip install numpy")

    sample = files_with_role(manifest, "sample_input")
    ref_files = files_with_role(manifest, "reference_output")
    if args.input is not None:
        in_path = args.input.resolve()
    elif sample:
        in_path = root / sample[0]
    else:
        raise BenchError(f"{root}: no sample_input in the artifact; pass --input inputs.npz")
    arrays = load_npz(in_path, "input file")
    prequantized = prequantize_features(arrays, manifest, in_path.name)
    facts = validate_inputs(arrays, manifest, in_path.name)
    names = [s["name"] for s in manifest_inputs(manifest)]
    order = manifest.get("input_order")  # the TVM library's argument order, when the exporter records it
    if isinstance(order, list) and sorted(order) == sorted(names):
        names = [str(n) for n in order]

    reference = load_npz(root / ref_files[0], "reference output") if ref_files else None
    is_sample = bool(sample) and in_path == (root / sample[0]).resolve()
    if reference is not None and not is_sample and sample:
        bundled = load_npz(root / sample[0], "sample input")
        is_sample = bundled.keys() == arrays.keys() and all(
            bundled[k].dtype == arrays[k].dtype and np.array_equal(bundled[k], arrays[k]) for k in arrays)
    outs = output_names(manifest, reference)
    edges_sorted = sort_edges_by_destination(arrays) if args.sort_edges else None

    backend, model = choose_backend(root, manifest, args.backend, args.remote)
    emulated, evidence = detect_emulation()
    rss_before_import = status_bytes("VmRSS")
    if backend == "tvm":
        import_tvm()
    rss_before_load = status_bytes("VmRSS")
    t_load = time.perf_counter()
    runner: Any = (TvmRunner(model, threads, names, outs, args.remote) if backend == "tvm"
                   else OrtRunner(model, threads, names, outs))
    prepared = runner.prepare(arrays)
    t_ready = time.perf_counter()
    try:
        first = runner(prepared)
        for _ in range(args.warmup):
            runner(prepared)
        if args.remote:
            seconds = runner.remote_times(prepared, args.repeats)
            method = "TVM time_evaluator on the RPC device"
        else:
            seconds = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                runner(prepared)
                seconds.append(time.perf_counter() - t0)
            method = ("wall clock per call (perf_counter), outputs as NumPy arrays"
                      + (" (zero-copy DLPack views of the TVM outputs)" if backend == "tvm" else ""))
    except BenchError:
        raise
    except Exception as exc:
        raise BenchError(f"inference failed ({type(exc).__name__}): {str(exc).strip().splitlines()[-1]}") from None
    if outs is None or len(outs) != len(first):
        outs = [f"output_{i}" for i in range(len(first))]
    outputs = dict(zip(outs, first))
    peak, source = peak_rss_bytes()

    if reference is None:
        ref_report: dict[str, Any] = {"checked": False, "match": None, "max_abs_diff": None,
                                      "reason": "the artifact has no reference_output"}
    elif not is_sample:
        ref_report = {"checked": False, "match": None, "max_abs_diff": None,
                      "reason": "inputs differ from the bundled sample_input"}
    else:
        ref_report = compare(outputs, reference)

    if args.remote:
        peak, source, rss_before_load = None, "unavailable over RPC", None
        machine = elf_machine(model) or "?"
        remote_cpuinfo = runner.remote_cpuinfo()
        if remote_cpuinfo is None:
            emulated, evidence = None, [f"remote device {args.remote}: /proc/cpuinfo not readable over RPC"]
            cpu = f"TVM RPC server {args.remote}"
        else:
            evidence = [f"remote {e}" for e in cpuinfo_emulation(remote_cpuinfo, machine)]
            emulated = bool(evidence)
            cpu = f"{cpu_description(remote_cpuinfo)} (TVM RPC server {args.remote})"
    else:
        machine, cpu = host_machine(), cpu_description()
    if emulated:
        source += ", includes the emulator's own memory"
    model_files = {rel: int(e.get("bytes", (root / rel).stat().st_size)) for rel, e in manifest["files"].items()
                   if e.get("role") in ("onnx", "onnx_data", "tvm_library")}
    buffer_bytes, buffer_key = select_buffer_bytes(manifest, backend)
    target = manifest.get("target")
    target_name = target.get("name") if isinstance(target, dict) else target
    report: dict[str, Any] = {
        "tool": "qgnn_bench", "bench_version": BENCH_VERSION,
        "artifact": {"path": str(root), "name": root.name, "format_version": manifest["format_version"],
                     "toolkit_version": manifest.get("toolkit_version"), "target": target,
                     "target_name": target_name},
        "backend": backend, "runtime_version": runner.version, "model_file": model.name,
        "emulated": emulated, "emulation_evidence": evidence,
        "timing_label": (EMULATED_LABEL if emulated else "unknown (remote)" if emulated is None
                         else "device timings"),
        "device": {"machine": machine, "cpu": cpu, "system": platform.platform(),
                   "python": platform.python_version(), "cpus_available": default_threads()},
        "threads": threads, "warmup": args.warmup, "repeats": args.repeats, "timing_method": method,
        "input": {"file": in_path.name, "is_bundled_sample": is_sample, **facts,
                  **({"quantized_once": prequantized} if prequantized else {}),
                  **({"edges_sorted_once": edges_sorted} if edges_sorted else {})},
        "latency_ms": latency_stats(seconds),
        "latency_samples_ms": [1e3 * t for t in seconds],  # per timed call, in order (pooled by bench-suite)
        "startup_s": {"runtime_import": round(IMPORT_SECONDS.get("tvm" if backend == "tvm" else "onnxruntime", 0), 3),
                      "model_load": round(t_ready - t_load, 3), "script_start_to_ready": round(t_ready - T_START, 3)},
        "memory": {"peak_rss_bytes": peak, "source": source, "rss_before_runtime_import_bytes": rss_before_import,
                   "rss_before_load_bytes": rss_before_load},
        "buffer_bytes": buffer_bytes, "buffer_bytes_key": buffer_key,
        "model": {"model_bytes": manifest.get("model_bytes"), "files": model_files,
                  "file_bytes": model_files.get(model.relative_to(root).as_posix())},
        "reference": ref_report,
    }
    code = 1 if ref_report["checked"] and not ref_report["match"] else 0
    return report, code


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report, code = run(args)
        md = markdown(report)
        text = json.dumps(report, indent=2, sort_keys=True, default=str)
        outputs = {args.json: text + "\n", args.md: md}
        write_all_or_nothing({path: body for path, body in outputs.items() if path is not None})
    except (BenchError, ValidationError) as exc:
        print(f"qgnn_bench: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"qgnn_bench: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    sys.stdout.write(md)
    if report["emulated"]:
        print(f"\n{EMULATED_LABEL}", file=sys.stderr)
    if code:
        print("qgnn_bench: outputs differ from reference_output.npz", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
