"""Input validation, latency statistics, checksums and byte formatting shared by every runner.

This one module is the contract every entry point that runs a model applies before the runtime sees
an input (the IR interpreter, the ONNX Runtime runner, ``run_library``, ``runtimes/qgnn_bench.py``;
``runtimes/cpp/qgnn_run.cc`` mirrors it in C++ with the same messages).  It imports only the standard
library and NumPy, and nothing from ``qgnn_deploy``: ``runtimes/qgnn_bench.py`` carries a verbatim copy
between ``# BEGIN VENDORED qgnn_deploy/validation.py`` / ``# END VENDORED`` markers, written by
``python3 -m qgnn_deploy.validation --vendor runtimes/qgnn_bench.py``; a test fails when the two drift.
See ``docs/security.md`` for the contract itself.
"""

from __future__ import annotations

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


# ---------------------------------------------------------------------------------- not vendored
BEGIN_MARK = "# BEGIN VENDORED qgnn_deploy/validation.py (python3 -m qgnn_deploy.validation --vendor FILE)"
END_MARK = "# END VENDORED qgnn_deploy/validation.py"


def vendored_block() -> str:
    """This module's source as the block pasted into ``runtimes/qgnn_bench.py``."""
    source = Path(__file__).read_text()
    body = source.split('"""', 2)[2].replace("from __future__ import annotations\n", "").strip("\n")
    body = body.split("\n# " + "-" * 82 + " not vendored")[0].rstrip()
    return f"{BEGIN_MARK}\n{body}\n{END_MARK}\n"


def vendor_into(path: str | Path) -> bool:
    """Replace the vendored block in ``path`` with this module's source; True when the file changed."""
    path = Path(path)
    text = path.read_text()
    start, end = text.find(BEGIN_MARK), text.find(END_MARK)
    if start < 0 or end < start:
        raise ValidationError(f"{path}: no vendored-block markers")
    new = text[:start] + vendored_block() + text[end + len(END_MARK) + 1 :]
    if new != text:
        path.write_text(new)
    return new != text


if __name__ == "__main__":  # python3 -m qgnn_deploy.validation --vendor runtimes/qgnn_bench.py
    if len(sys.argv) != 3 or sys.argv[1] != "--vendor":
        sys.exit("usage: python3 -m qgnn_deploy.validation --vendor FILE")
    print(("updated " if vendor_into(sys.argv[2]) else "up to date: ") + sys.argv[2])
