"""Measurement helpers shared by the workers: latency percentiles, peak memory, thread settings."""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable
from typing import Any

from qgnn_deploy.validation import latency_stats, percentile, status_bytes

__all__ = ["THREAD_VARS", "SAMPLES", "pin_threads", "status_bytes", "peak_rss_bytes", "percentile", "latency_stats",
           "timing", "time_calls", "load_average"]

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TVM_NUM_THREADS")
SAMPLES = "latency_samples_ms"  # per-call times in a result (ms, timed calls only; qgnn_bench.py uses the same key)


def pin_threads(threads: int) -> None:
    """Fix every runtime's thread pool size (call before importing torch / ORT / TVM)."""
    for var in THREAD_VARS:
        os.environ[var] = str(threads)


def peak_rss_bytes() -> int:
    """Peak resident set of this process: VmHWM, else ``ru_maxrss``."""
    hwm = status_bytes("VmHWM")
    if hwm is not None:
        return hwm
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def time_calls(fn: Callable[[], Any], warmup: int, repeats: int) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def timing(seconds: list[float]) -> dict[str, Any]:
    """A result's latency fields: the statistics and the per-call samples (so processes can be pooled)."""
    return {"latency_ms": latency_stats(seconds), SAMPLES: [1e3 * t for t in seconds]}


def load_average() -> list[float]:
    """The 1/5/15-minute load averages."""
    return [round(v, 2) for v in os.getloadavg()]
