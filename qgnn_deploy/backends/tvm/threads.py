"""Keep the calling thread off the cores TVM's thread pool pins its workers to.

TVM's pool runs task 0 of every parallel loop on the calling thread and tasks 1..T-1 on workers, each
pinned to one core (``TVM_BIND_THREADS`` default; cores in ``cpuinfo_max_freq`` order, core ids as
tie-break), and splits each loop statically.  The calling thread keeps the full CPU mask, so Linux may
run it on a worker's core: then the two halves of every call run one after the other on that core
(measured on a 2-vCPU Zen 4, 2708x1433x16 VNNI GEMM: caller on the worker's core 0.29-0.33 ms per call,
the 1-thread time; caller on the other core 0.14-0.20 ms; ``examples/results/gemm_vnni_zen4.md``).
TVM's own comment intends the caller for the first core of that order; this puts it there.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


def _core_order() -> list[int]:
    """TVM's ``InitSortedOrder``: hardware core ids by descending ``cpuinfo_max_freq`` (stable)."""
    def freq(i: int) -> int:
        try:
            with open(f"/sys/devices/system/cpu/cpu{i}/cpufreq/cpuinfo_max_freq") as f:
                return int(f.read().strip() or 0)
        except (OSError, ValueError):
            return 0

    n = os.cpu_count() or 1
    return sorted(range(n), key=lambda i: -freq(i))


def caller_core(threads: int) -> int | None:
    """The core TVM leaves to the calling thread when it pins ``threads`` - 1 workers, or None when it pins
    nothing (1 thread, ``TVM_BIND_THREADS`` != 1, more threads than cores) or that core is not ours."""
    bind = os.environ.get("TVM_BIND_THREADS")
    if threads < 2 or (bind is not None and bind.strip() != "1") or not hasattr(os, "sched_setaffinity"):
        return None
    order = _core_order()
    if threads > len(order) or order[0] not in os.sched_getaffinity(0):
        return None
    return order[0]


@contextmanager
def caller_on_own_core() -> Iterator[int | None]:
    """Run the body with this thread pinned to :func:`caller_core` of TVM's pool (created here if needed);
    the thread's CPU mask is restored afterwards."""
    import tvm

    threads = int(tvm.get_global_func("runtime.NumThreads")())  # sizes and pins the pool
    core = caller_core(threads)
    if core is None:
        yield None
        return
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})
    try:
        yield core
    finally:
        os.sched_setaffinity(0, saved)
