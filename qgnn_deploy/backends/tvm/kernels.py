"""Hand-written TIR kernels for the ops the stock Relax lowering makes slow or racy.

Every kernel is already scheduled (``tirx.is_scheduled``), so the default
pipeline leaves it alone, and every kernel is deterministic: edge loops run in
edge order inside one thread; parallelism only splits independent columns or
rows.  Shapes are symbolic in nodes/edges/graphs (one library serves any
graph) and static in feature width ``H`` (known from the weights), which lets
LLVM vectorise the inner loop.
"""

from __future__ import annotations

from tvm import tirx
from tvm.script import tirx as T

_SCHEDULED = {"tir.noalias": True, "tirx.is_scheduled": True}


def _col_split(h: int) -> tuple[int, int]:
    """(column blocks run in parallel, columns per block): parallel over columns when wide enough."""
    if h >= 32 and h % 16 == 0:
        return h // 16, 16
    return 1, h


def gather_scatter_add(h: int, dtype: str) -> tirx.PrimFunc:
    """``out[dst[e]] += x[src[e]]`` fused: no [E,H] message tensor, one pass over edges in order."""
    nb, bw = _col_split(h)

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
            for b in T.parallel(nb):
                for i in range(n):
                    for c in T.vectorized(bw):
                        Out[i, b * bw + c] = 0
                for j in range(e):
                    for c in T.vectorized(bw):
                        Out[D[j], b * bw + c] = Out[D[j], b * bw + c] + T.Cast("int32", X[S[j], b * bw + c])

    return kernel


def scatter_add(h: int, dtype: str) -> tirx.PrimFunc:
    """``out[idx[e]] += values[e]`` in edge order (deterministic; duplicates and hubs are fine)."""
    nb, bw = _col_split(h)

    @T.prim_func(private=True, s_tir=True)
    def kernel(v_h: T.handle, idx_h: T.handle, out_h: T.handle):
        T.func_attr(_SCHEDULED)
        e = T.int64()
        n = T.int64()
        V = T.match_buffer(v_h, (e, h), dtype)
        Idx = T.match_buffer(idx_h, (e,), "int64")
        Out = T.match_buffer(out_h, (n, h), "int32")
        with T.sblock("root"):
            for b in T.parallel(nb):
                for i in range(n):
                    for c in T.vectorized(bw):
                        Out[i, b * bw + c] = 0
                for j in range(e):
                    for c in T.vectorized(bw):
                        Out[Idx[j], b * bw + c] = Out[Idx[j], b * bw + c] + T.Cast("int32", V[j, b * bw + c])

    return kernel


def gather_scatter_max(h: int, dtype: str) -> tirx.PrimFunc:
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
            for i in range(n):
                seen[i] = T.int8(0)
                for c in T.vectorized(h):
                    Out[i, c] = 0
            for j in range(e):
                if seen[D[j]] == T.int8(0):
                    seen[D[j]] = T.int8(1)
                    for c in T.vectorized(h):
                        Out[D[j], c] = T.Cast("int32", X[S[j], c])
                else:
                    for c in T.vectorized(h):
                        Out[D[j], c] = T.max(Out[D[j], c], T.Cast("int32", X[S[j], c]))

    return kernel


def scatter_max(h: int, dtype: str) -> tirx.PrimFunc:
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
            for i in range(n):
                seen[i] = T.int8(0)
                for c in T.vectorized(h):
                    Out[i, c] = 0
            for j in range(e):
                if seen[Idx[j]] == T.int8(0):
                    seen[Idx[j]] = T.int8(1)
                    for c in T.vectorized(h):
                        Out[Idx[j], c] = T.Cast("int32", V[j, c])
                else:
                    for c in T.vectorized(h):
                        Out[Idx[j], c] = T.max(Out[Idx[j], c], T.Cast("int32", V[j, c]))

    return kernel


def degree() -> tirx.PrimFunc:
    """Occurrences of each row index: ``out[i, 0] = #{e : idx[e] == i}``."""

    @T.prim_func(private=True, s_tir=True)
    def kernel(idx_h: T.handle, out_h: T.handle):
        T.func_attr(_SCHEDULED)
        e = T.int64()
        n = T.int64()
        Idx = T.match_buffer(idx_h, (e,), "int64")
        Out = T.match_buffer(out_h, (n, 1), "int32")
        with T.sblock("root"):
            for i in range(n):
                Out[i, 0] = 0
            for j in range(e):
                Out[Idx[j], 0] = Out[Idx[j], 0] + 1

    return kernel


def pool_sum(h: int, dtype: str) -> tirx.PrimFunc:
    """Sum pooling of node rows into their graph: ``out[batch[i]] += values[i]``."""
    nb, bw = _col_split(h)

    @T.prim_func(private=True, s_tir=True)
    def kernel(v_h: T.handle, b_h: T.handle, out_h: T.handle):
        T.func_attr(_SCHEDULED)
        n = T.int64()
        g = T.int64()
        V = T.match_buffer(v_h, (n, h), dtype)
        B = T.match_buffer(b_h, (n,), "int64")
        Out = T.match_buffer(out_h, (g, h), "int32")
        with T.sblock("root"):
            for b in T.parallel(nb):
                for i in range(g):
                    for c in T.vectorized(bw):
                        Out[i, b * bw + c] = 0
                for j in range(n):
                    for c in T.vectorized(bw):
                        Out[B[j], b * bw + c] = Out[B[j], b * bw + c] + T.Cast("int32", V[j, b * bw + c])

    return kernel
