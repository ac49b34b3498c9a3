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

Index vectors arrive as one row of a [R, E] int64 tensor (``edge_index`` itself, with the row baked into
the kernel), so ``src``/``dst`` are never copied out of it.  The edges are scanned in blocks of ``CHUNK``:
a branch-free pass (one unsigned compare per edge, no data-dependent branch to mispredict) lists the
block's edges this part owns in a small stack buffer, then a second loop applies exactly those edges, in
edge order, with software prefetches ``PREFETCH`` listed edges ahead for the row it reads and the
destination row it will touch.
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


def _lower_bound(r: int):  # noqa: ANN202 - a TVMScript macro
    @T.macro
    def lower_bound(D, value, e, out):  # noqa: ANN001, ANN202
        """out[0] = first k with D[r, k] >= value (D[r, :] ascending); 64 halvings cover any int64 length."""
        a = T.decl_buffer((1,), "int64", scope="global")
        b = T.decl_buffer((1,), "int64", scope="global")
        a[0] = T.int64(0)
        b[0] = e
        for _it in range(64):
            if a[0] < b[0]:
                if D[r, (a[0] + b[0]) // 2] < value:
                    a[0] = (a[0] + b[0]) // 2 + 1
                else:
                    b[0] = (a[0] + b[0]) // 2
        out[0] = a[0]

    return lower_bound


def sorted_flag(parts: int, row: int = 0) -> tirx.PrimFunc:
    """``out[0] = 1`` when row ``row`` of a [R, E] index tensor is ascending, else 0 (one parallel pass).

    The edge kernels take it as an input: on ascending destinations (``qgnn_bench.py --sort-edges``,
    or any CSR-ordered edge list) each part finds its contiguous run of edges by binary search instead
    of scanning every destination.
    """
    r = int(row)

    @T.prim_func(private=True, s_tir=True)
    def kernel(idx_h: T.handle, out_h: T.handle):
        T.func_attr(_SCHEDULED)
        e, rows = T.int64(), T.int64()
        Idx = T.match_buffer(idx_h, (rows, e), "int64")
        Out = T.match_buffer(out_h, (1,), "int32")
        with T.sblock("root"):
            ok = T.alloc_buffer((parts,), "int32")
            for p in T.parallel(parts):
                ok[p] = 1
                for k in T.serial(T.max(p * e // parts, T.int64(1)), (p + 1) * e // parts):
                    ok[p] = ok[p] & T.Cast("int32", Idx[r, k - 1] <= Idx[r, k])
            Out[0] = 1
            for p in range(parts):
                Out[0] = Out[0] & ok[p]

    return kernel


def edge_reduce(h: int, dtype: str | None, parts: int, reduce: str = "add", dst_row: int = 0,
                src_row: int | None = None, zero_point: int = 0, coef_dtype: str | None = None) -> tirx.PrimFunc:
    """``out[i] = reduce_{e : dst[e] = i} m(e)`` over rows of width ``h``; ``reduce`` is "add" or "max"
    (rows with no edge are 0).

    The message ``m(e)`` is row ``e`` of a per-edge value tensor ``V[E, h]`` (``src_row`` None:
    ``kernel(V, Idx, Out)``), or the gathered row ``x[src[e]]`` (``kernel(X, S, D, Out)``: no [E, h]
    message tensor is materialised), or ``(x[src[e]] - zero_point) * coef[src[e]]`` with a per-node
    coefficient ``coef[N, 1]`` (``kernel(X, C, S, D, Out)``).  The last form serves int32 messages that
    are a narrow tensor times a per-node factor (a GCN's ``int8 h * Q(deg^-1/2)``): the random reads hit
    the narrow rows, a quarter of the bytes, and the product is formed in registers, bit for bit the
    same int32 value.  ``dtype`` None counts edges (``m(e) = 1``, ``kernel(Idx, Out)``: see :func:`degree`).
    Every form also takes the int32 [1] ascending-destination flag of :func:`sorted_flag` before ``Out``.
    """
    chunk, pf = CHUNK, PREFETCH
    counting = dtype is None
    gathered = src_row is not None
    scaled = coef_dtype is not None
    is_max = reduce == "max"
    if reduce not in ("add", "max") or (scaled and not gathered) or (counting and (gathered or h != 1)):
        raise ValueError(f"edge_reduce: unsupported combination reduce={reduce!r}, dtype={dtype}, "
                         f"gathered={gathered}, scaled={scaled}, h={h}")
    zp = int(zero_point)
    sr, dr = int(src_row or 0), int(dst_row)
    two_x = not counting and _straddles(h, np.dtype(dtype).itemsize)
    two_o = _straddles(h, 4)

    def row(S, k):  # noqa: ANN001, ANN202 - TVMScript expression helpers
        return S[sr, k] if gathered else k

    def message(X, C, S, k, c):  # noqa: ANN001, ANN202
        if counting:
            return T.int32(1)
        v = T.Cast("int32", X[row(S, k), c])
        if zp:
            v = v - T.int32(zp)
        return v * T.Cast("int32", C[row(S, k), 0]) if scaled else v

    lower_bound = _lower_bound(dr)

    @T.macro
    def owned_range(D, first, last, e, lo, hi):  # noqa: ANN001, ANN202
        """[lo, hi): the edges whose destination is in [first, last), by two binary searches over sorted D."""
        lower_bound(D, first, e, lo)
        lower_bound(D, last, e, hi)

    @T.macro
    def apply(X, C, S, D, Out, seen, k, ahead):  # noqa: ANN001, ANN202 - edge k, prefetching for edge `ahead`
        if not counting:
            T.evaluate(_prefetch(T.address_of(X[row(S, ahead), 0])))
        T.evaluate(_prefetch_w(T.address_of(Out[D[dr, ahead], 0])))
        if two_x:
            T.evaluate(_prefetch(T.address_of(X[row(S, ahead), h - 1])))
        if two_o:
            T.evaluate(_prefetch_w(T.address_of(Out[D[dr, ahead], h - 1])))
        if scaled:
            T.evaluate(_prefetch(T.address_of(C[row(S, ahead), 0])))
        if is_max:
            if seen[D[dr, k]] == T.int8(0):
                seen[D[dr, k]] = T.int8(1)
                for c in T.vectorized(h):
                    Out[D[dr, k], c] = message(X, C, S, k, c)
            else:
                for c in T.vectorized(h):
                    Out[D[dr, k], c] = T.max(Out[D[dr, k], c], message(X, C, S, k, c))
        else:
            for c in T.vectorized(h):
                Out[D[dr, k], c] = Out[D[dr, k], c] + message(X, C, S, k, c)

    @T.macro
    def edge_loop(X, C, S, D, Out, Sorted, n, e):  # noqa: ANN001, ANN202 - the loop every signature shares
        if is_max:
            seen = T.alloc_buffer((n,), "int8")
        for p in T.parallel(parts):
            for i in T.serial(p * n // parts, (p + 1) * n // parts):
                if is_max:
                    seen[i] = T.int8(0)
                for c in T.vectorized(h):
                    Out[i, c] = 0
            if (p + 1) * n // parts > p * n // parts:
                if Sorted[0] != 0:
                    # destinations ascending: this part owns one contiguous run of edges
                    lo = T.decl_buffer((1,), "int64", scope="global")
                    hi = T.decl_buffer((1,), "int64", scope="global")
                    owned_range(D, p * n // parts, (p + 1) * n // parts, e, lo, hi)
                    for k in T.serial(lo[0], hi[0]):
                        apply(X, C, S, D, Out, seen if is_max else None, k, T.min(k + pf, hi[0] - 1))
                else:
                    sel = T.decl_buffer((chunk,), "int32", scope="global")  # owned edges of the block
                    cnt = T.decl_buffer((1,), "int32", scope="global")
                    for b in range((e + chunk - 1) // chunk):
                        cnt[0] = 0
                        for k in range(T.min(T.int64(chunk), e - b * chunk)):
                            sel[cnt[0]] = T.Cast("int32", k)
                            cnt[0] = cnt[0] + T.Cast("int32", T.Cast("uint64", D[dr, b * chunk + k] - p * n // parts)
                                                     < T.Cast("uint64", (p + 1) * n // parts - p * n // parts))
                        for q in range(cnt[0]):
                            apply(X, C, S, D, Out, seen if is_max else None, b * chunk + T.Cast("int64", sel[q]),
                                  b * chunk + T.Cast("int64", sel[T.min(q + pf, cnt[0] - 1)]))

    if scaled:
        @T.prim_func(private=True, s_tir=True)
        def kernel(x_h: T.handle, c_h: T.handle, src_h: T.handle, dst_h: T.handle, sorted_h: T.handle,
                   out_h: T.handle):
            T.func_attr(_SCHEDULED)
            n_in, e, n, rs, rd = T.int64(), T.int64(), T.int64(), T.int64(), T.int64()
            X = T.match_buffer(x_h, (n_in, h), dtype)
            C = T.match_buffer(c_h, (n_in, 1), coef_dtype)
            S = T.match_buffer(src_h, (rs, e), "int64")
            D = T.match_buffer(dst_h, (rd, e), "int64")
            Sorted = T.match_buffer(sorted_h, (1,), "int32")
            Out = T.match_buffer(out_h, (n, h), "int32")
            with T.sblock("root"):
                edge_loop(X, C, S, D, Out, Sorted, n, e)
    elif gathered:
        @T.prim_func(private=True, s_tir=True)
        def kernel(x_h: T.handle, src_h: T.handle, dst_h: T.handle, sorted_h: T.handle, out_h: T.handle):
            T.func_attr(_SCHEDULED)
            n_in, e, n, rs, rd = T.int64(), T.int64(), T.int64(), T.int64(), T.int64()
            X = T.match_buffer(x_h, (n_in, h), dtype)
            S = T.match_buffer(src_h, (rs, e), "int64")
            D = T.match_buffer(dst_h, (rd, e), "int64")
            Sorted = T.match_buffer(sorted_h, (1,), "int32")
            Out = T.match_buffer(out_h, (n, h), "int32")
            with T.sblock("root"):
                edge_loop(X, None, S, D, Out, Sorted, n, e)
    elif not counting:
        @T.prim_func(private=True, s_tir=True)
        def kernel(v_h: T.handle, idx_h: T.handle, sorted_h: T.handle, out_h: T.handle):
            T.func_attr(_SCHEDULED)
            e, n, rd = T.int64(), T.int64(), T.int64()
            V = T.match_buffer(v_h, (e, h), dtype)
            D = T.match_buffer(idx_h, (rd, e), "int64")
            Sorted = T.match_buffer(sorted_h, (1,), "int32")
            Out = T.match_buffer(out_h, (n, h), "int32")
            with T.sblock("root"):
                edge_loop(V, None, None, D, Out, Sorted, n, e)
    else:
        @T.prim_func(private=True, s_tir=True)
        def kernel(idx_h: T.handle, sorted_h: T.handle, out_h: T.handle):
            T.func_attr(_SCHEDULED)
            e, n, rd = T.int64(), T.int64(), T.int64()
            D = T.match_buffer(idx_h, (rd, e), "int64")
            Sorted = T.match_buffer(sorted_h, (1,), "int32")
            Out = T.match_buffer(out_h, (n, 1), "int32")
            with T.sblock("root"):
                edge_loop(None, None, None, D, Out, Sorted, n, e)

    return kernel


def degree(parts: int, row: int = 0) -> tirx.PrimFunc:
    """Occurrences of each index in row ``row`` of a [R, E] tensor: ``out[i, 0] = #{e : idx[row, e] == i}``."""
    return edge_reduce(1, None, parts, "add", dst_row=row)
