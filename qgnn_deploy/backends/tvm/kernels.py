"""Hand-written TIR kernels for the ops the stock Relax lowering makes slow or racy.

Every kernel is already scheduled (``tirx.is_scheduled``), so the default
pipeline leaves it alone, and every kernel is deterministic: the output rows
are split into ``parts`` contiguous ranges run in parallel; each part scans all
edges in edge order and applies only those whose destination it owns, so every
output row is written by one thread in a fixed order (no atomics, no races, the
same result at any thread count).  Scanning the index vector once per part is
cheap next to the random row reads it saves.  Shapes are symbolic in nodes/edges/graphs (one library serves any
graph) and static in feature width ``H`` (known from the weights), which lets
LLVM vectorise the inner loop.

The add and degree kernels scan the edges in blocks of ``CHUNK``: a branch-free pass
(one unsigned compare per edge, no data-dependent branch to mispredict) lists the
block's edges this part owns in a small stack buffer, then a second loop applies
exactly those edges, in edge order, with software prefetches ``PREFETCH`` listed
edges ahead for the random source row and the destination row it will touch.
"""

from __future__ import annotations

import numpy as np
from tvm import tirx
from tvm.script import tirx as T

_SCHEDULED = {"tir.noalias": True, "tirx.is_scheduled": True}
CHUNK = 1024  # edges per ownership block (the owned-edge list lives on each thread's stack)
PREFETCH = 16  # listed edges between a row's prefetch and its use
LINE = 64  # cache line bytes: rows that do not tile a line get a second prefetch for their last element


def _straddles(h: int, itemsize: int) -> bool:
    return LINE % (h * itemsize) != 0


def _prefetch(ptr):  # noqa: ANN001, ANN202 - TVMScript expression helper
    return T.call_intrin("", "tirx.prefetch", ptr, 0, 3, 1)


def _prefetch_w(ptr):  # noqa: ANN001, ANN202
    return T.call_intrin("", "tirx.prefetch", ptr, 1, 3, 1)


def gather_scatter_add(h: int, dtype: str, parts: int) -> tirx.PrimFunc:
    """``out[dst[e]] += x[src[e]]`` fused: no [E,H] message tensor is materialised."""
    chunk, pf = CHUNK, PREFETCH
    two_x = _straddles(h, np.dtype(dtype).itemsize)
    two_o = _straddles(h, 4)

    @T.prim_func(private=True, s_tir=True)
    def kernel(x_h: T.handle, src_h: T.handle, dst_h: T.handle, out_h: T.handle):
        T.func_attr(_SCHEDULED)
        n_in = T.int64()
        e = T.int64()
        n = T.int64()
        X = T.match_buffer(x_h, (n_in, h), dtype)
        S = T.match_buffer(src_h, (e,), "int64")
        D = T.match_buffer(dst_h, (e,), "int64")
        Out = T.match_buffer(out_h, (n, h), "int32")
        with T.sblock("root"):
            for p in T.parallel(parts):
                for i in T.serial(p * n // parts, (p + 1) * n // parts):
                    for c in T.vectorized(h):
                        Out[i, c] = 0
                if (p + 1) * n // parts > p * n // parts:
                    sel = T.decl_buffer((chunk,), "int32", scope="global")  # owned edges of the block
                    cnt = T.decl_buffer((1,), "int32", scope="global")
                    for b in range((e + chunk - 1) // chunk):
                        cnt[0] = 0
                        for k in range(T.min(T.int64(chunk), e - b * chunk)):
                            sel[cnt[0]] = T.Cast("int32", k)
                            cnt[0] = cnt[0] + T.Cast("int32", T.Cast("uint64", D[b * chunk + k] - p * n // parts)
                                                     < T.Cast("uint64", (p + 1) * n // parts - p * n // parts))
                        for q in range(cnt[0]):
                            T.evaluate(_prefetch(T.address_of(
                                X[S[b * chunk + T.Cast("int64", sel[T.min(q + pf, cnt[0] - 1)])], 0])))
                            T.evaluate(_prefetch_w(T.address_of(
                                Out[D[b * chunk + T.Cast("int64", sel[T.min(q + pf, cnt[0] - 1)])], 0])))
                            if two_x:
                                T.evaluate(_prefetch(T.address_of(
                                    X[S[b * chunk + T.Cast("int64", sel[T.min(q + pf, cnt[0] - 1)])], h - 1])))
                            if two_o:
                                T.evaluate(_prefetch_w(T.address_of(
                                    Out[D[b * chunk + T.Cast("int64", sel[T.min(q + pf, cnt[0] - 1)])], h - 1])))
                            for c in T.vectorized(h):
                                Out[D[b * chunk + T.Cast("int64", sel[q])], c] = (
                                    Out[D[b * chunk + T.Cast("int64", sel[q])], c]
                                    + T.Cast("int32", X[S[b * chunk + T.Cast("int64", sel[q])], c]))

    return kernel


def scatter_add(h: int, dtype: str, parts: int) -> tirx.PrimFunc:
    """``out[idx[e]] += values[e]`` (duplicates and hubs are fine)."""

    @T.prim_func(private=True, s_tir=True)
    def kernel(v_h: T.handle, idx_h: T.handle, out_h: T.handle):
        T.func_attr(_SCHEDULED)
        e = T.int64()
        n = T.int64()
        V = T.match_buffer(v_h, (e, h), dtype)
        Idx = T.match_buffer(idx_h, (e,), "int64")
        Out = T.match_buffer(out_h, (n, h), "int32")
        with T.sblock("root"):
            for p in T.parallel(parts):
                for i in T.serial(p * n // parts, (p + 1) * n // parts):
                    for c in T.vectorized(h):
                        Out[i, c] = 0
                for j in range(e):
                    if Idx[j] >= p * n // parts and Idx[j] < (p + 1) * n // parts:
                        for c in T.vectorized(h):
                            Out[Idx[j], c] = Out[Idx[j], c] + T.Cast("int32", V[j, c])

    return kernel


def gather_scatter_max(h: int, dtype: str, parts: int) -> tirx.PrimFunc:
    """Row-wise max of ``x[src[e]]`` over edges into ``dst[e]``; rows with no edge are 0."""

    @T.prim_func(private=True, s_tir=True)
    def kernel(x_h: T.handle, src_h: T.handle, dst_h: T.handle, out_h: T.handle):
        T.func_attr(_SCHEDULED)
        n_in = T.int64()
        e = T.int64()
        n = T.int64()
        X = T.match_buffer(x_h, (n_in, h), dtype)
        S = T.match_buffer(src_h, (e,), "int64")
        D = T.match_buffer(dst_h, (e,), "int64")
        Out = T.match_buffer(out_h, (n, h), "int32")
        with T.sblock("root"):
            seen = T.alloc_buffer((n,), "int8")
            for p in T.parallel(parts):
                for i in T.serial(p * n // parts, (p + 1) * n // parts):
                    seen[i] = T.int8(0)
                    for c in T.vectorized(h):
                        Out[i, c] = 0
                for j in range(e):
                    if D[j] >= p * n // parts and D[j] < (p + 1) * n // parts:
                        if seen[D[j]] == T.int8(0):
                            seen[D[j]] = T.int8(1)
                            for c in T.vectorized(h):
                                Out[D[j], c] = T.Cast("int32", X[S[j], c])
                        else:
                            for c in T.vectorized(h):
                                Out[D[j], c] = T.max(Out[D[j], c], T.Cast("int32", X[S[j], c]))

    return kernel


def scatter_max(h: int, dtype: str, parts: int) -> tirx.PrimFunc:
    """Row-wise max of ``values[e]`` into ``idx[e]``; rows with no entry are 0."""

    @T.prim_func(private=True, s_tir=True)
    def kernel(v_h: T.handle, idx_h: T.handle, out_h: T.handle):
        T.func_attr(_SCHEDULED)
        e = T.int64()
        n = T.int64()
        V = T.match_buffer(v_h, (e, h), dtype)
        Idx = T.match_buffer(idx_h, (e,), "int64")
        Out = T.match_buffer(out_h, (n, h), "int32")
        with T.sblock("root"):
            seen = T.alloc_buffer((n,), "int8")
            for p in T.parallel(parts):
                for i in T.serial(p * n // parts, (p + 1) * n // parts):
                    seen[i] = T.int8(0)
                    for c in T.vectorized(h):
                        Out[i, c] = 0
                for j in range(e):
                    if Idx[j] >= p * n // parts and Idx[j] < (p + 1) * n // parts:
                        if seen[Idx[j]] == T.int8(0):
                            seen[Idx[j]] = T.int8(1)
                            for c in T.vectorized(h):
                                Out[Idx[j], c] = T.Cast("int32", V[j, c])
                        else:
                            for c in T.vectorized(h):
                                Out[Idx[j], c] = T.max(Out[Idx[j], c], T.Cast("int32", V[j, c]))

    return kernel


def degree(parts: int) -> tirx.PrimFunc:
    """Occurrences of each row index: ``out[i, 0] = #{e : idx[e] == i}``."""
    chunk = CHUNK

    @T.prim_func(private=True, s_tir=True)
    def kernel(idx_h: T.handle, out_h: T.handle):
        T.func_attr(_SCHEDULED)
        e = T.int64()
        n = T.int64()
        Idx = T.match_buffer(idx_h, (e,), "int64")
        Out = T.match_buffer(out_h, (n, 1), "int32")
        with T.sblock("root"):
            for p in T.parallel(parts):
                for i in T.serial(p * n // parts, (p + 1) * n // parts):
                    Out[i, 0] = 0
                if (p + 1) * n // parts > p * n // parts:
                    sel = T.decl_buffer((chunk,), "int64", scope="global")  # owned indices of the block
                    cnt = T.decl_buffer((1,), "int32", scope="global")
                    for b in range((e + chunk - 1) // chunk):
                        cnt[0] = 0
                        for k in range(T.min(T.int64(chunk), e - b * chunk)):
                            sel[cnt[0]] = Idx[b * chunk + k]
                            cnt[0] = cnt[0] + T.Cast("int32", T.Cast("uint64", Idx[b * chunk + k] - p * n // parts)
                                                     < T.Cast("uint64", (p + 1) * n // parts - p * n // parts))
                        for q in range(cnt[0]):
                            Out[sel[q], 0] = Out[sel[q], 0] + 1

    return kernel
