"""Aggregation kernel micro-benchmark at 10^6 nodes: interleaved variants, CPU ms median/min.

Layer 0's (H = 16) or layer 1's (H = 7) GCN edge kernel of the series model, standalone, on random int8 rows and
uint8 coefficients over ``random_graph``-like 10^6-node edges (plus self loops), as given or sorted by destination.
Usage: TVM_NUM_THREADS=1 PYTHONPATH=$PWD python agg_micro.py ROUNDS H ORDER VARIANT...
VARIANT: name[:key=val,...]  keys: pf (PREFETCH), m (restrict sources to [0, m)), fresh (new output per call),
         kmod (path of an edited kernels.py to import instead), packed=1 (coefficients packed into col by
         kernels.pack_coef), x16=1 (the message pre-multiplied into an int16 table), viacol=1, thp=1,
         noref=1 (skip the output check: for kernels edited to time something inexact)
"""
import ctypes
import importlib.util
import mmap
import os
import statistics
import sys
import time

import numpy as np
import tvm

from qgnn_deploy.backends.tvm import kernels as K0
from qgnn_deploy.backends.tvm.targets import resolve_target

rounds, h, order = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
specs = []
for a in sys.argv[4:]:
    name, _, kv = a.partition(":")
    specs.append((name, dict(x.split("=") for x in kv.split(",") if x)))
n = 10**6
rng = np.random.default_rng(1)
e0 = 10 * n
src = rng.integers(0, n, e0, dtype=np.int64)
dst = rng.integers(0, n, e0, dtype=np.int64)
loops = np.arange(n, dtype=np.int64)
src, dst = np.concatenate([src, loops]), np.concatenate([dst, loops])
if order == "sorted":
    o = np.argsort(dst, kind="stable")
    src, dst = src[o], dst[o]
tgt = resolve_target("x86_64").tvm()
parts = int(os.environ.get("TVM_NUM_THREADS", "1"))


def build(func):
    return tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target=tgt)["main"]


HUGE = 1 << 21
_maps = []


def thp(a):
    """A copy of NumPy array ``a`` in 2 MiB-aligned anonymous memory advised MADV_HUGEPAGE, as a TVM tensor."""
    a = np.ascontiguousarray(a)
    mm = mmap.mmap(-1, a.nbytes + 2 * HUGE)
    base = ctypes.addressof(ctypes.c_char.from_buffer(mm))
    off = (-base) % HUGE
    mm.madvise(mmap.MADV_HUGEPAGE, off, (a.nbytes + HUGE - 1) // HUGE * HUGE)
    arr = np.frombuffer(mm, a.dtype, a.size, off).reshape(a.shape)
    arr[...] = a
    _maps.append(mm)
    return tvm.runtime.from_dlpack(arr)


def kmod(path):
    if not path:
        return K0
    spec = importlib.util.spec_from_file_location(f"k_{abs(hash(path))}", path)
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m


x = tvm.runtime.tensor(rng.integers(-127, 128, size=(n, h)).astype(np.int8))
coef = tvm.runtime.tensor(rng.integers(0, 128, size=(n, 1)).astype(np.uint8))
rm = tvm.runtime.tensor(rng.integers(1 << 10, 1 << 14, size=(n, 1)).astype(np.int64))
rq = tvm.runtime.tensor(np.stack([np.ones(h), np.full(h, 1 << 23), np.full(h, 24)]).astype(np.int64))
runs = {}
ref = None
for name, kv in specs:
    K = kmod(kv.get("kmod"))
    pf0 = K.PREFETCH
    if "pf" in kv:
        K.PREFETCH = int(kv["pf"])
    m = int(kv.get("m", n))
    s = src % m
    mk = thp if kv.get("thp") == "1" else tvm.runtime.tensor
    ei = mk(np.ascontiguousarray(np.stack([s, dst])))
    plan = build(K.edge_plan(parts, 1, 0))
    flag = tvm.runtime.tensor(np.zeros(1, np.int32))
    rowptr = mk(np.zeros(n + 1, np.int64))
    col = mk(np.zeros(len(dst), np.int32))
    plan(ei, flag, rowptr, col)
    if kv.get("viacol") == "1":  # sorted input walked through int32 col (flag cleared): the "int32 sources" path
        assert flag.numpy()[0] == 1
        col = mk(s.astype(np.int32))
        flag = tvm.runtime.tensor(np.zeros(1, np.int32))
    out = mk(np.zeros((n, h), np.int8))
    packed = kv.get("packed") == "1"  # coefficients in col's top byte (kernels.pack_coef, as the GCN build does)
    if packed:
        col2 = mk(np.zeros(len(dst), np.int32))
        build(K.pack_coef("uint8", parts))(col, coef, col2)
        col = col2
    if kv.get("x16") == "1":  # the message pre-multiplied into an int16 table: one random line per edge
        f = build(K.edge_reduce(h, "int16", parts, "add", 1, 0, 0, None, True, self_term=True,
                                requant=(0, -127, 127, "int8"), row_mult="int64"))
        x16 = (x.numpy().astype(np.int32) * coef.numpy().astype(np.int32)).astype(np.int16)
        args = [mk(x16), ei, ei, flag, rowptr, col, rq, mk(rm.numpy())]
    else:
        extra = {"packed_col": True} if packed else {}  # (kmod copies older than pack_coef lack the keyword)
        f = build(K.edge_reduce(h, "int8", parts, "add", 1, 0, 0, "uint8", True, self_term=True,
                                requant=(0, -127, 127, "int8"), row_mult="int64", **extra))
        args = [mk(x.numpy()), mk(coef.numpy()), ei, ei, flag, rowptr, col, rq, mk(rm.numpy())]
    f(*args, out)
    if m == n:
        if ref is None:
            ref = out.numpy()
        assert kv.get("noref") == "1" or np.array_equal(ref, out.numpy()), name
    runs[name] = (f, args, out, kv.get("fresh") == "1")
    K.PREFETCH = pf0
cpu = {k: [] for k in runs}
wall = {k: [] for k in runs}
for _ in range(rounds):
    for k, (f, args, out, fresh) in runs.items():
        o = tvm.runtime.empty((n, h), "int8") if fresh else out
        c, t = time.process_time(), time.perf_counter()
        f(*args, o)
        cpu[k].append(time.process_time() - c)
        wall[k].append(time.perf_counter() - t)
print(f"H={h} {order} parts={parts} rounds={rounds} load {os.getloadavg()[0]:.2f}")
for k in runs:
    v = sorted(1e3 * t for t in cpu[k])
    print(f"  {k:14s} CPU med {statistics.median(v):7.1f} min {v[0]:7.1f} max {v[-1]:7.1f}; wall med "
          f"{1e3 * statistics.median(wall[k]):7.1f}  all: {' '.join(f'{t:.0f}' for t in (1e3 * np.array(cpu[k])))}")
