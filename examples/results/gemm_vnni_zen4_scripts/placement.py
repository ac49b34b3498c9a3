"""Where TVM's calling thread starts vs 2-thread latency, one fresh process per run (docs/results.md, Zen 4).

    TVM_NUM_THREADS=2 python placement.py LIB_OR_ARTIFACT none|bad|nudge CALLS

``none``: the thread where Linux put it; ``bad`` / ``nudge``: moved to core 1 (the core TVM pins its worker to) /
core 0, then given back the full mask.  LIB_OR_ARTIFACT: a GEMM-only ``.so`` with ``operands.npz`` beside it
(``build.py``), or an artifact directory (``model_x86_64.so``, ``sample_input.npz``, ``manifest.json``).  Prints
median / min / p90 ms and the fraction of calls after which the thread was on core 1.
"""

import json
import os
import sys
import time

import numpy as np
import tvm
from tvm import relax


def _library_and_args(path: str) -> tuple[str, list[np.ndarray]]:
    if path.endswith(".so"):
        with np.load(os.path.join(os.path.dirname(path), "operands.npz")) as z:
            return path, [z["a"]]
    with open(os.path.join(path, "manifest.json")) as f:
        names = [i["name"] for i in json.load(f)["inputs"]]
    with np.load(os.path.join(path, "sample_input.npz")) as z:
        return os.path.join(path, "model_x86_64.so"), [z[n] for n in names]


def _cpu() -> int:
    with open(f"/proc/self/task/{os.getpid()}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[36])


def main() -> None:
    path, mode, calls = sys.argv[1], sys.argv[2], int(sys.argv[3])
    lib, args = _library_and_args(path)
    vm = relax.VirtualMachine(tvm.runtime.load_module(lib), tvm.cpu())
    targs = [tvm.runtime.tensor(np.ascontiguousarray(a)) for a in args]
    tvm.get_global_func("runtime.NumThreads")()  # creates the pool and pins its worker
    full = set(os.sched_getaffinity(0))
    if mode != "none":
        os.sched_setaffinity(0, {1 if mode == "bad" else 0})
        os.sched_setaffinity(0, full)
    for _ in range(5):
        vm["main"](*targs)
    times, cores = [], []
    for _ in range(calls):
        t0 = time.perf_counter()
        vm["main"](*targs)
        times.append(time.perf_counter() - t0)
        cores.append(_cpu())
    t = np.array(times) * 1e3
    print(f"{mode:5s} med {np.median(t):.3f} min {t.min():.3f} p90 {np.percentile(t, 90):.3f} "
          f"on1 {np.mean(np.array(cores) == 1):.2f}")


if __name__ == "__main__":
    main()
