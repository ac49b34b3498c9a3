"""In-process interleaved A/B of TVM thread-pool configurations on one GEMM library.

usage: TVM_NUM_THREADS=2 python ab.py LIB OPERANDS ROUNDS VARIANT[,VARIANT...]
variants: t1 (1 thread), pin (2 threads, worker pinned to core 1: TVM's default kBig),
          free (2 threads, all threads may run on all cores: kSpecifyThreadShareAllCore)
"""
import os
import sys
import time

import numpy as np
import tvm
from tvm import relax

lib, ops, rounds, variants = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].split(",")
with np.load(ops) as z:
    a, b = z["a"], z["b"]
vm = relax.VirtualMachine(tvm.runtime.load_module(lib), tvm.cpu())
at = tvm.runtime.tensor(a)
cfg = tvm.get_global_func("runtime.config_threadpool")
cpus = [str(c) for c in sorted(os.sched_getaffinity(0))]
exact = a.astype(np.int64) @ b.astype(np.int64)
assert np.array_equal(vm["main"](at).numpy(), exact)


ALL = set(os.sched_getaffinity(0))


def setup(v):
    os.sched_setaffinity(0, ALL)
    if v == "t1":
        cfg(1, 1)
    elif v == "pin":
        cfg(1, 2)
    elif v in ("pin0", "pin1"):  # worker pinned to core 1, main thread pinned to core 0 / core 1
        cfg(1, 2)
        os.sched_setaffinity(0, {int(v[-1])})
    elif v == "free":
        cfg(-3, 2, cpus)
    else:
        raise SystemExit(v)


def cpu_of(tid):
    with open(f"/proc/self/task/{tid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[36])


times = {v: [] for v in variants}
cpu = {v: [] for v in variants}
load0 = os.getloadavg()
main_tid = os.getpid()
for _ in range(rounds):
    for v in variants:
        setup(v)
        vm["main"](at)
        for _i in range(5):
            t0 = time.perf_counter()
            vm["main"](at)
            times[v].append(time.perf_counter() - t0)
            cpu[v].append(cpu_of(main_tid))
print("load before", load0, "after", os.getloadavg())
for v in variants:
    t = np.array(times[v]) * 1e3
    c = np.array(cpu[v])
    print(f"{v:5s} n={t.size} min {t.min():.3f} p10 {np.percentile(t,10):.3f} med {np.median(t):.3f} "
          f"p90 {np.percentile(t,90):.3f} max {t.max():.3f} | main on cpu1: {np.mean(c==1):.2f}, "
          f"med when cpu0 {np.median(t[c==0]) if (c==0).any() else float('nan'):.3f} "
          f"cpu1 {np.median(t[c==1]) if (c==1).any() else float('nan'):.3f}")
    print("   hist(ms):", np.histogram(t, bins=[0, .15, .2, .25, .3, .35, .4, .5, .7, 1, 100])[0].tolist())
