"""Latency rows measured in several processes, round-robin across rows, and pooled into one row each.

Why: on a shared VM the same library's median moves ~30% from one process to the next (thread placement,
cache neighbours; ``docs/results.md``), so one process per row makes the suite's ratios swing between runs.
:func:`measure_rows` runs process 1 of every row, then process 2 of every row, ... (slow drift of the
machine hits all rows alike, as the GEMM probe's alternating sessions do) and :func:`pool` turns each row's
processes into one row: latency statistics over the pooled per-call samples, every process's median and
their spread, peak RSS the maximum over processes, the reference match only if every process matched.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from qgnn_deploy.perf.measure import SAMPLES, latency_stats

MIN_CALLS_PER_PROCESS = 5  # a median of fewer calls is one or two samples
Job = Callable[[int], dict[str, Any]]  # process index (0-based) -> that process's result dict


def calls_per_process(repeats: int, processes: int) -> int:
    """Timed calls of each of ``processes`` processes: ``repeats`` split evenly, at least a few each."""
    if processes <= 1:
        return repeats
    return max(-(-repeats // processes), MIN_CALLS_PER_PROCESS)


def process_name(key: str, index: int) -> str:
    """File stem of process ``index`` of row ``key`` (process 0 keeps the row's own name, as a single run)."""
    return key if index == 0 else f"{key}.p{index + 1}"


def round_robin(jobs: Mapping[str, Job], processes: int, log: Callable[[str], None] | None = None,
                stop_on_error: bool = False,
                counts: Mapping[str, int] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Process 1 of every row, then process 2 of every row, ...; each row's results in process order.

    ``counts`` gives a row fewer processes than ``processes`` (the size series runs a 10^6-node row that no
    target compares once).  A row whose process failed (``error`` in its result) runs no further processes;
    with ``stop_on_error`` no row does (the caller reports the first error and discards the rest).
    """
    want = {key: min(processes, (counts or {}).get(key, processes)) for key in jobs}
    out: dict[str, list[dict[str, Any]]] = {key: [] for key in jobs}
    for i in range(processes):
        for key, job in jobs.items():
            if i >= want[key] or (out[key] and "error" in out[key][-1]):
                continue
            if log is not None:
                log(f"measuring {key}" + (f" (process {i + 1}/{want[key]})" if want[key] > 1 else ""))
            out[key].append(job(i))
            if stop_on_error and "error" in out[key][-1]:
                return out
    return out


def _all_true(values: list[Any]) -> bool | None:
    """False if any process says False, True if all say True, else None (not checked somewhere)."""
    return False if any(v is False for v in values) else True if all(v is True for v in values) else None


def pool(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from its processes' results (process order; each with ``latency_ms`` and :data:`SAMPLES`).

    The row keeps the first process's other fields (runtime, threads, preparation times, ...); ``latency_ms``
    is over every process's samples; ``processes`` lists each process's median, calls, peak RSS and load;
    ``process_median_spread_ms`` is [min, max] of those medians; ``peak_rss_bytes`` is the maximum (with that
    process's ``rss_before_load_bytes``); ``reference_match`` is True only if every process matched.  With an
    ``output`` path per process (saved outputs), ``max_abs_diff_across_processes`` compares them with the
    first.  A failed process makes the row that error (prefixed with which process, when there were several).
    """
    k = len(results)
    for i, r in enumerate(results):
        if "error" in r:
            return {**r, "error": r["error"] if k == 1 else f"process {i + 1} of {k}: {r['error']}"}
    row = {key: v for key, v in results[0].items() if key not in (SAMPLES, "output")}
    samples = [s for r in results for s in r[SAMPLES]]
    row["latency_ms"] = latency_stats([s / 1e3 for s in samples])
    row["processes"] = [{"median_ms": r["latency_ms"]["median"], "n": r["latency_ms"]["n"],
                         "peak_rss_bytes": r.get("peak_rss_bytes"), "load_average_before": r.get("load_average_before"),
                         **({"reference_match": r["reference_match"]} if "reference_match" in r else {})}
                        for r in results]
    medians = [p["median_ms"] for p in row["processes"]]
    row["process_median_spread_ms"] = [min(medians), max(medians)]
    rss = [r for r in results if r.get("peak_rss_bytes")]
    if rss:
        top = max(rss, key=lambda r: r["peak_rss_bytes"])
        row["peak_rss_bytes"] = top["peak_rss_bytes"]
        if "rss_before_load_bytes" in top:
            row["rss_before_load_bytes"] = top["rss_before_load_bytes"]
    if "reference_match" in row:
        row["reference_match"] = _all_true([r.get("reference_match") for r in results])
    outs = [r.get("output") for r in results]
    if k > 1 and all(o and Path(o).is_file() for o in outs):
        first = np.load(outs[0])
        row["max_abs_diff_across_processes"] = max(float(np.abs(np.load(o) - first).max()) if first.size else 0.0
                                                   for o in outs[1:])
    return row


def measure_rows(jobs: Mapping[str, Job | dict[str, Any]], processes: int,
                 log: Callable[[str], None] | None = None) -> dict[str, dict[str, Any]]:
    """Every row of ``jobs`` in ``processes`` processes (:func:`round_robin`), pooled (:func:`pool`).

    A dict value is a row that is not measured (e.g. skipped): it is passed through in its place.
    """
    runs = round_robin({k: j for k, j in jobs.items() if callable(j)}, processes, log)
    return {k: pool(runs[k]) if callable(j) else j for k, j in jobs.items()}


def median_text(row: dict[str, Any]) -> str:
    """A row's median (ms) for a report table, with the min-max of its per-process medians when pooled."""
    spread = row.get("process_median_spread_ms")
    median = f"{row['latency_ms']['median']:.3f}"
    if not spread or len(row.get("processes") or ()) < 2:
        return median
    return f"{median} ({spread[0]:.3f}–{spread[1]:.3f})"


def load_text(row: dict[str, Any]) -> str:
    """A row's 1-minute load average before its run, for a report table: the min–max over its processes when
    pooled (the first process alone would hide a busy window in a later one), else the one value ("—": none)."""
    loads = [p["load_average_before"][0] for p in row.get("processes") or () if p.get("load_average_before")]
    if len(loads) < 2:
        first = row.get("load_average_before")
        return f"{first[0]}" if first else "—"
    lo, hi = min(loads), max(loads)
    return f"{lo}" if lo == hi else f"{lo}–{hi}"


def process_checks(rows: Mapping[str, dict[str, Any]], ours: Collection[str], labels: Mapping[str, str]) -> list[str]:
    """Report note for pooled rows: our rows' bit-exact reference match and the FP32 rows' outputs, per process."""
    pooled = {k: r for k, r in rows.items() if len(r.get("processes") or ()) > 1}
    if not pooled:
        return []
    matches = [p.get("reference_match") for k, r in pooled.items() if k in ours for p in r["processes"]]
    parts = [f"our rows {'all' if all(v is True for v in matches) else 'NOT all'} equal to the reference "
             "interpreter bit for bit"] if matches else []
    diffs = {k: r["max_abs_diff_across_processes"] for k, r in pooled.items() if "max_abs_diff_across_processes" in r}
    if diffs:
        k = max(diffs, key=diffs.get)  # type: ignore[arg-type]
        parts.append("FP32 outputs identical across processes" if diffs[k] == 0 else
                     f"FP32 outputs differ between processes by at most {diffs[k]:.3g} ({labels.get(k, k)})")
    return ["", "Checked in every process: " + "; ".join(parts) + "."] if parts else []


def method_text(processes: int, warmup: int, repeats: int) -> str:
    """How the latency rows were measured, for the report header."""
    if processes <= 1:
        return f"{warmup} warm-up + {repeats} timed runs, each backend in its own process."
    per = calls_per_process(repeats, processes)
    return (f"Each GCN / GAT latency row pooled over {processes} processes, round-robin (process 1 of every row, "
            f"then process 2 of every row, ...): each process {warmup} warm-up + {per} timed runs, statistics over "
            f"the {processes * per} pooled runs; in parentheses the min–max of the per-process medians. "
            "Peak RSS: the largest process; load before: the min–max of the processes' 1-minute load averages.")

