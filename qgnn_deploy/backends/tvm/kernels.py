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

Small work runs on the calling thread: every kernel holds a serial copy of its loop nest (one part) and takes it
when its work (rows x width + edges) is below ``serial_work`` (default :data:`SERIAL_WORK`, checked once per
call).  A parallel loop costs a thread-pool wake-up and barrier of a few microseconds; most of a Cora-sized
graph's [N, 1] kernels do less work than that saves (an [N, 1] cast at N = 2708: 6.1 us parallel vs 1.6 us
serial, min of 200, under load on 2 AVX2 cores).  The threshold was measured idle on the whole Cora graph (AMD
EPYC, AVX2, 2 threads, 6 alternating processes per setting): 2^15 was ~15% slower than always-parallel, because
the width-7 edge kernel (work ~3.2e4) costs ~2 ns per unit serially (63 us vs 19 us parallel); 2048-8192 were
within noise of always-parallel.  4096 keeps the [N, 1] kernels (and anything under ~8 us serial) on the caller.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tvm import tirx
from tvm.script import tirx as T

from .gemm_skeleton import ACC_SCOPE

_SCHEDULED = {"tir.noalias": True, "tirx.is_scheduled": True}
CHUNK = 1024  # edges per ownership block (the owned-edge list lives on each thread's stack)
# rows per bucket of edge_plan's two-pass scatter: 2^16 (a bucket's col window ~3 MB at degree 11) took 24% less
# CPU time than one random store per edge (2 threads; 6-10% at 1 thread); 2^10 and 2^14 took more (many streams);
# with the per-bucket row histogram (2026-12-03) 2^15 was no faster than 2^16
BUCKET_BITS = 16
# edge_plan's 4-byte sort records ``row << 20 | source`` in buckets of 2^11 rows (graphs up to 2^20 nodes; larger
# ones take the 8-byte pairs): half the staging traffic of the pairs; 2^11 rows beat 2^10 and 2^12 (Zen 2, 1 thread)
PACKED_BITS = (11, 20)
CHECK_LANES = 8  # edges per vector step of edge_plan's sorted check (8 int64: one zmm, two ymm)
PLAN_PREFETCH = 16  # records between edge_plan's col prefetch (for write) and its store (16 beat 8 and 32)
# buckets of at most 2^12 rows prefetch their whole col window (~90 KB at degree 11: it stays in L2) line by line
# after the bucket's histogram instead of each store's line PLAN_PREFETCH records ahead: the per-record prefetch
# cost more than it hid (unsorted 10^6 plan, Zen 4, 2 threads: 25.0 -> 22.7 ms; 1 thread 46.2 -> 41.8 ms); the
# 2^16-row buckets of the pair records keep it (31.5 ms vs 31.6 with the window prefetch, 32.4 with none)
WINDOW_PREFETCH_BITS = 12
PREFETCH = 48  # edges between a row's prefetch and its use (48 measured better than 16 at 10^6 nodes: DRAM latency)
SERIAL_WORK = 4096  # work (rows x width + edges) below which a kernel runs serially (module docstring)
LINE = 64  # cache line bytes: rows that do not tile a line get a second prefetch for their last element
PACK_BITS = 24  # pack_coef: sources below 2^24 leave col's top byte for an 8-bit per-node coefficient
PACK_LIMIT = 1 << PACK_BITS  # rows of x up to which pack_coef packs (edge_reduce's pack_limit: smaller in tests)
PACK_MASK = PACK_LIMIT - 1
PACKABLE_COEF = ("int8", "uint8")


def _straddles(h: int, itemsize: int) -> bool:
    return LINE % (h * itemsize) != 0


def _prefetch(ptr):  # noqa: ANN001, ANN202 - TVMScript expression helper
    return T.call_intrin("", "tirx.prefetch", ptr, 0, 3, 1)


def _prefetch_w(ptr):  # noqa: ANN001, ANN202
    return T.call_intrin("", "tirx.prefetch", ptr, 1, 3, 1)


def _requantized(Rq: Any, v: Any, mult: Any, q: Any, params: tuple[int, int, int, str]) -> Any:
    """The requantize handler's arithmetic in int64 on an int32 sum ``v``: ``(v * mult + Rq[1, q]) >> Rq[2, q]``
    (rounding half, shift of column ``q``, :func:`.fusion.requant_epilogue_constants`), ``+ zero_point``, clipped
    to ``[qmin, qmax]`` and cast (``params = (zero_point, qmin, qmax, dtype)``): an edge kernel's epilogue."""
    zp, lo, hi, dtype = params
    y = T.shift_right(T.Cast("int64", v) * mult + Rq[1, q], Rq[2, q]) + T.int64(zp)
    return T.Cast(dtype, T.max(T.min(y, T.int64(hi)), T.int64(lo)))


def _owned_edges(chunk: int, pf: int, visit: Any) -> Any:
    """The owned-edge fallback for unsorted edges: a macro ``owned(D, dr, e, lo, hi, *args)`` that walks the edge
    list in blocks of ``chunk``, lists (branch-free: one unsigned compare per edge) the edges whose destination
    ``D[dr, k]`` lies in rows ``[lo, hi)``, then calls ``visit(*args, k, ahead)`` for each of them in edge order,
    ``ahead`` being the listed edge ``pf`` places later (to prefetch for)."""

    @T.macro
    def owned(D, dr, e, row_lo, row_hi, *args):  # noqa: ANN001, ANN002, ANN202
        if row_hi > row_lo:
            sel = T.decl_buffer((chunk,), "int32", scope="global")  # owned edges of the block
            cnt = T.decl_buffer((1,), "int32", scope="global")
            for b in range((e + chunk - 1) // chunk):
                cnt[0] = 0
                for k in range(T.min(T.int64(chunk), e - b * chunk)):
                    sel[cnt[0]] = T.Cast("int32", k)
                    lo, hi = row_lo, row_hi
                    cnt[0] = cnt[0] + T.Cast("int32", T.Cast("uint64", D[dr, b * chunk + k] - lo)
                                             < T.Cast("uint64", hi - lo))
                for q in range(cnt[0]):
                    visit(*args, b * chunk + T.Cast("int64", sel[q]),
                          b * chunk + T.Cast("int64", sel[T.min(q + pf, cnt[0] - 1)]))

    return owned


def edge_plan(parts: int, row: int = 0, src_row: int | None = None, *, serial_work: int = SERIAL_WORK,
              bucket_bits: int | None = None, packed_bits: tuple[int, int] = PACKED_BITS,
              sorted_col: bool = True) -> tirx.PrimFunc:
    """One parallel pass over row ``row`` of a [R, E] index tensor: ``flag[0] = 1`` when it is ascending with
    every index in ``[0, n)``, and in every case ``rowptr[i]`` = first edge (in CSR order) whose index is ``>= i``
    (``rowptr[n]`` = edges kept): the CSR row pointers.  With the flag set the edge kernels walk each output row's
    own run of edges and never read the destination vector (``qgnn_bench.py --sort-edges``, or any CSR-ordered
    list); every edge is then kept, and with ``src_row`` the pass writing the row pointers also writes ``col`` =
    the sources narrowed to int32, so the gathered kernels stream 4-byte sources rather than the int64 row
    (layer 0 of the 10^6-node series model at 2 threads: wall 46 -> 32 ms in the lead's idle micro-benchmark;
    the narrowing: ~5 ms more CPU at 1 thread, ~9 ms at 2, under load).

    Otherwise (``flag[0] = 0``) the edges are put in CSR order by a two-pass (MSD radix) counting sort, once per
    call and shared by every kernel of the plan; edges whose index lies outside ``[0, n)`` are left out, as
    every kernel skips them.  (1) Each part counts its edge range's edges per bucket of rows (a few counters),
    (2) appends one record per edge to its slice of the bucket (slices in part order, so edge order is kept; a
    few sequential write streams), then (3) each part takes whole buckets: a row histogram of the bucket's
    records (the row table stays in L2, the records in L3), its exclusive prefix sum (``rowptr`` and the row
    cursors), and the sources placed through the cursors into int32 ``col`` (the random stores stay inside one
    bucket's window, prefetched for write: line by line after the histogram for small buckets, else each store's
    line ``PLAN_PREFETCH`` records ahead; :data:`WINDOW_PREFETCH_BITS`).  No [N]-sized
    per-part histogram is built or scanned (the previous plan's histogram pass over the destinations did random
    increments into it).  ``col`` holds each row's sources in edge order: a stable sort's, the same array at
    any part count.  Records: with ``src_row`` and at most ``2^packed_bits[1]`` rows, one uint32 ``row within
    the bucket << packed_bits[1] | source`` in buckets of ``2^packed_bits[0]`` rows (the source masked to its
    bits, so an invalid source cannot move a record out of its row); above that (or ``packed_bits`` (1, 1)),
    (row, source) int32 pairs in buckets of ``2^bucket_bits`` rows; without ``src_row`` the row alone, one int32.
    Half the staging bytes of the pairs: the plan alone at 10^6 nodes, AMD Zen 2 AVX2, 1 thread, 122.4 -> 95.5 ms
    (``examples/results/tvm_1e6_scripts/plan_layouts.py``).  Without ``src_row`` only ``rowptr`` is built.
    Kernels that can read ``col`` take the CSR path for any edge order; the others scan the destinations.
    (Staging the row as uint16 beside an int32 source array, 6 bytes a record, was measured slower than the
    pairs; the staging buffer comes from TVM's workspace pool, reused across calls: no page faults after the
    first.)

    The sorted check and row pointers take one pass over the destinations, branch-free (a data-dependent branch
    per edge costs more than the memory traffic here): per block of ``CHUNK`` edges the check ANDs, in
    ``CHECK_LANES`` vector lanes, the pairs (k, k + 1) (ascending; the second in range by one unsigned compare;
    edge 0 checked alone), and a part stops at its first failed block (unsorted input: ~12 ms less CPU at 10^6
    nodes); a passing block, still in L1, then stores ``rowptr[dst[k]] = k`` for each edge that starts a row
    (``dst[k - 1] < dst[k]``; the others store to a scratch slot, ``rowptr[n]``, reset after), so every row
    keeps its first edge whichever part holds it, and a reverse min-scan over rowptr (set to ``e`` first) gives
    rows without edges the next row's start.  A failed check leaves rowptr to the sort, which rewrites all of
    it.  Sorted 10^6 series graph, AMD Zen 4, 2 threads (1 thread): 9.0 ms for the scalar check (5.3 ms) and a
    second, reverse pass, 6.8 ms with the check's pairs (scalar ``cmov`` chains), 4.3 (7.6) ms in one pass with
    the vector lanes.  (Earlier tries at one pass, measured slower: block by block from the last, sorted
    18 -> 40 ms; forward with each edge storing its run's first edge and a gap-fill loop, 20 -> 62 ms at 1
    thread.)  Loops are
    zero-based with the offset added in the body: TVM 0.27 drops a loop's start from the bounds of loops
    nested in it when it normalises them.  Scalars are bound with ``x: T.let = ...``: in TVM 0.27 a plain
    ``x = ...`` is a one-element local buffer, which here lowered to a ``TVMBackendAllocWorkspace`` call and a
    store and reload per use in the hot loops (unsorted 10^6, 1 thread: ~140 -> ~89 ms CPU); the one-element
    accumulators are ``global`` decl_buffers for the same reason (``gemm_skeleton.ACC_SCOPE``).

    ``sorted_col=False``: with the flag set ``col`` is left unwritten, for a caller whose every reader of ``col``
    takes the sources from the index tensor itself when the flag is set (:func:`pack_coef`): the
    sorted pass then reads the destinations alone.  Sorted 10^6-node series graph, AMD Zen 4, 2 threads, this plan
    and the pack: 19.3 -> 15.8 ms (``/tmp/s32/plan_pack.py``, scratch: plan 12.9 -> 9.2, pack 6.9 -> 6.2).
    """
    r = int(row)
    chunk = CHUNK
    with_col = src_row is not None
    sr = int(src_row or 0)
    bits = BUCKET_BITS if bucket_bits is None else int(bucket_bits)
    row_bits, src_bits = (int(b) for b in packed_bits)
    if row_bits + src_bits > 32 or min(row_bits, src_bits) < 1:
        raise ValueError(f"edge_plan: packed_bits {packed_bits} must be two positive counts summing to <= 32")

    def plan(pp: int, loop: Any) -> Any:  # the body split into ``pp`` parts, run by ``loop`` (parallel or serial)
        def counting_sort(bits: int, src_bits: int | None) -> Any:  # unsorted: rowptr (and col) by counts
            """The sort with buckets of 2^bits rows; records are 4-byte ``row << src_bits | src`` (``src_bits``
            0: the row alone, no col) or, with ``src_bits`` None, (row, source) int32 pairs."""
            packed = src_bits is not None
            sb = int(src_bits or 0)
            with_src = sb > 0
            window_prefetch = bits <= WINDOW_PREFETCH_BITS

            def buckets(n):  # noqa: ANN001, ANN202 - buckets of 2^bits rows covering rows [0, n)
                return (n + (1 << bits) - 1) >> bits

            def record_row(tmp, j):  # noqa: ANN001, ANN202 - the row within its bucket of record j
                return T.Cast("int32", T.shift_right(tmp[j, 0], T.uint32(sb))) if packed else tmp[j, 0]

            @T.macro
            def sort(Idx, RowPtr, Col, e, n):  # noqa: ANN001, ANN202
                off = T.alloc_buffer((pp, buckets(n) + 1), "int32")  # per part: edges per bucket (last: out of range)
                start = T.alloc_buffer((buckets(n) + 1,), "int32")  # first record of each bucket
                for p in loop(pp):
                    for b in T.serial(buckets(n) + 1):
                        off[p, b] = 0
                    for kk in T.serial((p + 1) * e // pp - p * e // pp):
                        d: T.let = Idx[r, p * e // pp + kk]
                        b: T.let = T.if_then_else(T.Cast("uint64", d) < T.Cast("uint64", n), d >> bits, buckets(n))
                        off[p, b] = off[p, b] + 1
                acc = T.decl_buffer((1,), "int32", scope="global")
                acc[0] = 0
                for b in T.serial(buckets(n)):  # exclusive prefix over (bucket, part): each part's slice of each bucket
                    start[b] = acc[0]
                    for p in range(pp):
                        c: T.let = off[p, b]
                        off[p, b] = acc[0]
                        acc[0] = acc[0] + c
                start[buckets(n)] = acc[0]
                tmp = T.alloc_buffer((e, 1 if packed else 2), "uint32" if packed else "int32")
                for p in loop(pp):  # (2) stage the records in bucket order, edge order within
                    for kk in T.serial((p + 1) * e // pp - p * e // pp):
                        k: T.let = p * e // pp + kk
                        d: T.let = Idx[r, k]
                        if T.Cast("uint64", d) < T.Cast("uint64", n):
                            at: T.let = off[p, d >> bits]
                            if with_src:  # the source masked to its bits: a bad source cannot move a record's row
                                tmp[at, 0] = T.shift_left(T.Cast("uint32", d & ((1 << bits) - 1)), T.uint32(sb)) \
                                    | T.Cast("uint32", Idx[sr, k] & ((1 << sb) - 1))
                            elif packed:
                                tmp[at, 0] = T.Cast("uint32", d & ((1 << bits) - 1))
                            else:
                                tmp[at, 1] = T.Cast("int32", Idx[sr, k])
                                tmp[at, 0] = T.Cast("int32", d & ((1 << bits) - 1))
                            off[p, d >> bits] = at + 1
                cur = T.alloc_buffer((pp, 1 << bits), "int32")  # per part: one bucket's row counts, then cursors
                for q in loop(pp):  # (3) whole buckets per part: histogram, prefix sum (rowptr), place
                    for bb in T.serial((q + 1) * buckets(n) // pp - q * buckets(n) // pp):
                        b: T.let = q * buckets(n) // pp + bb
                        rows: T.let = T.min(n - (b << bits), 1 << bits)
                        lo: T.let = start[b]
                        cnt: T.let = start[b + 1] - lo
                        for ii in T.serial(rows):
                            cur[q, ii] = 0
                        for jj in T.serial(cnt):
                            rr: T.let = record_row(tmp, lo + jj)
                            cur[q, rr] = cur[q, rr] + 1
                        if with_col and window_prefetch:  # the bucket's col window, line by line
                            for jj in T.serial((cnt + LINE // 4 - 1) // (LINE // 4)):
                                T.evaluate(_prefetch_w(T.address_of(Col[lo + jj * (LINE // 4)])))
                        run = T.decl_buffer((1,), "int32", scope="global")
                        run[0] = lo
                        for ii in T.serial(rows):
                            RowPtr[(b << bits) + ii] = T.Cast("int64", run[0])
                            c: T.let = cur[q, ii]
                            cur[q, ii] = run[0]
                            run[0] = run[0] + c
                        if with_col:
                            for jj in T.serial(cnt):
                                rr: T.let = record_row(tmp, lo + jj)
                                at: T.let = cur[q, rr]
                                Col[at] = T.Cast("int32", tmp[lo + jj, 0] & T.uint32((1 << sb) - 1)) if packed \
                                    else tmp[lo + jj, 1]
                                cur[q, rr] = at + 1
                                if not window_prefetch:  # a later record's store
                                    ahead: T.let = record_row(tmp, lo + T.min(jj + PLAN_PREFETCH, cnt - 1))
                                    T.evaluate(_prefetch_w(T.address_of(Col[cur[q, ahead]])))
                RowPtr[n] = T.Cast("int64", start[buckets(n)])

            return sort

        wide_sort, packed_sort = counting_sort(bits, None), counting_sort(row_bits, src_bits)
        rows_only_sort = counting_sort(bits, 0)

        def in_range(Idx, k, n1):  # noqa: ANN001, ANN202 - index k in [0, n): one unsigned compare, as int32
            return T.Cast("int32", T.Cast("uint64", Idx[r, k]) < T.Cast("uint64", n1 - 1))

        def pair_ok(Idx, k, n1):  # noqa: ANN001, ANN202 - the pair (k, k + 1) ascending, k + 1 in range
            return T.Cast("int32", Idx[r, k] <= Idx[r, k + 1]) & in_range(Idx, k + 1, n1)

        @T.macro
        def body(Idx, Flag, RowPtr, Col, e, n1):  # noqa: ANN001, ANN202
            ok = T.alloc_buffer((pp,), "int32")
            for p in loop(pp):  # rows without edges keep e through the min-scan below
                for ii in T.serial((p + 1) * n1 // pp - p * n1 // pp):
                    RowPtr[p * n1 // pp + ii] = e
            for p in loop(pp):  # pairs (k, k + 1), k in [lo, hi), by blocks of CHUNK; a part stops at its first
                # failed block.  Each passing block, still in L1, then writes the row pointers of its edges that
                # start a row (the others write a scratch slot, rowptr[n], reset below, instead of branching)
                lo: T.let = p * e // pp
                hi: T.let = T.min((p + 1) * e // pp, e - 1)
                ok[p] = 1
                if e > 0:  # edge 0 alone: every other edge is the second of a pair
                    ok[p] = in_range(Idx, 0, n1)
                    if p == 0 and ok[p] != 0:
                        RowPtr[Idx[r, 0]] = T.int64(0)
                        if with_col and sorted_col:
                            Col[0] = T.Cast("int32", Idx[sr, 0])
                for bb in T.serial((T.max(hi - lo, T.int64(0)) + chunk - 1) // chunk):
                    if ok[p] != 0:
                        first: T.let = lo + bb * chunk
                        m: T.let = T.min(T.int64(chunk), hi - first)
                        lanes = T.decl_buffer((CHECK_LANES,), "int32", scope="global")  # per-lane ANDs: a vector
                        for v in T.vectorized(CHECK_LANES):
                            lanes[v] = 1
                        for kv in T.serial(m // CHECK_LANES):
                            for v in T.vectorized(CHECK_LANES):
                                lanes[v] = lanes[v] & pair_ok(Idx, first + kv * CHECK_LANES + v, n1)
                        blk = T.decl_buffer((1,), "int32", scope="global")  # the block's AND
                        blk[0] = 1
                        for v in range(CHECK_LANES):
                            blk[0] = blk[0] & lanes[v]
                        for kk in T.serial(m % CHECK_LANES):
                            blk[0] = blk[0] & pair_ok(Idx, first + m // CHECK_LANES * CHECK_LANES + kk, n1)
                        ok[p] = blk[0]
                        if blk[0] != 0:  # every index of the block in range: the stores stay in bounds
                            if with_col and sorted_col:  # every edge is kept: col is the narrowed source row
                                for kk in T.serial(m):
                                    Col[first + kk + 1] = T.Cast("int32", Idx[sr, first + kk + 1])
                            for kk in T.serial(m):
                                k: T.let = first + kk + 1
                                RowPtr[T.if_then_else(Idx[r, k - 1] < Idx[r, k], Idx[r, k], n1 - 1)] = k
            Flag[0] = 1
            for p in range(pp):
                Flag[0] = Flag[0] & ok[p]
            if Flag[0] != 0:
                RowPtr[n1 - 1] = e
                for ii in T.serial(n1 - 1):
                    RowPtr[n1 - 2 - ii] = T.min(RowPtr[n1 - 2 - ii], RowPtr[n1 - 1 - ii])
            elif with_col:
                if n1 - 1 <= (1 << src_bits):  # every valid source fits a record's low bits
                    packed_sort(Idx, RowPtr, Col, e, n1 - 1)
                else:
                    wide_sort(Idx, RowPtr, Col, e, n1 - 1)
            else:
                rows_only_sort(Idx, RowPtr, Col, e, n1 - 1)

        return body

    serial, parallel = plan(1, T.serial), plan(parts, T.parallel)

    @T.macro
    def dispatch(Idx, Flag, RowPtr, Col, e, n1):  # noqa: ANN001, ANN202 - serial when the work is small
        if e + n1 < serial_work:
            serial(Idx, Flag, RowPtr, Col, e, n1)
        else:
            parallel(Idx, Flag, RowPtr, Col, e, n1)

    run = serial if parts == 1 else dispatch

    if with_col:
        @T.prim_func(private=True, s_tir=True)
        def kernel(idx_h: T.handle, flag_h: T.handle, rowptr_h: T.handle, col_h: T.handle):
            T.func_attr(_SCHEDULED)
            e, rows, n1 = T.int64(), T.int64(), T.int64()
            Idx = T.match_buffer(idx_h, (rows, e), "int64")
            Flag = T.match_buffer(flag_h, (1,), "int32")
            RowPtr = T.match_buffer(rowptr_h, (n1,), "int64")
            Col = T.match_buffer(col_h, (e,), "int32")
            with T.sblock("root"):
                run(Idx, Flag, RowPtr, Col, e, n1)
    else:
        @T.prim_func(private=True, s_tir=True)
        def kernel(idx_h: T.handle, flag_h: T.handle, rowptr_h: T.handle):
            T.func_attr(_SCHEDULED)
            e, rows, n1 = T.int64(), T.int64(), T.int64()
            Idx = T.match_buffer(idx_h, (rows, e), "int64")
            Flag = T.match_buffer(flag_h, (1,), "int32")
            RowPtr = T.match_buffer(rowptr_h, (n1,), "int64")
            with T.sblock("root"):
                run(Idx, Flag, RowPtr, None, e, n1)

    return kernel


def edge_reduce(h: int, dtype: str | None, parts: int, reduce: str = "add", dst_row: int = 0,
                src_row: int | None = None, zero_point: int = 0, coef_dtype: str | None = None,
                csr_col: bool = False, *, serial_work: int = SERIAL_WORK, self_term: bool = False,
                requant: tuple[int, int, int, str] | None = None, row_mult: str | None = None,
                packed_col: bool = False, pack_limit: int = PACK_LIMIT, x_width: int | None = None,
                ) -> tirx.PrimFunc:
    """``out[i] = reduce_{e : dst[e] = i} m(e)`` over rows of width ``h``; ``reduce`` is "add" or "max"
    (rows with no edge are 0).

    The message ``m(e)`` is row ``e`` of a per-edge value tensor ``V[E, h]`` (``src_row`` None:
    ``kernel(V, Idx, Out)``), or the gathered row ``x[src[e]]`` (``kernel(X, S, D, Out)``: no [E, h]
    message tensor is materialised), or ``(x[src[e]] - zero_point) * coef[src[e]]`` with a per-node
    coefficient ``coef[N, 1]`` (``kernel(X, C, S, D, Out)``).  The last form serves int32 messages that
    are a narrow tensor times a per-node factor (a GCN's ``int8 h * Q(deg^-1/2)``): the random reads hit
    the narrow rows, a quarter of the bytes, and the product is formed in registers, bit for bit the
    same int32 value.  ``dtype`` None counts edges (``m(e) = 1``, ``kernel(Idx, Out)``: see :func:`degree`).
    Every form also takes the flag and row pointers of :func:`edge_plan` (after the index inputs); with
    ``csr_col`` a gathered form also takes the plan's ``col`` (built for this ``src_row``) after them and walks
    the CSR runs for any edge order, reading each run's sources from ``col`` (int32: half the streamed bytes of
    the int64 source row); the other forms scan the destinations when the edges are not sorted (counting reads
    only the row pointers, valid in both cases).

    Epilogue (gathered ``add`` only; GCN's ``requantize(scatter_add(m[src], dst) + m, row multiplier)``): with
    ``self_term`` each row starts from its own message ``m(i)`` (row ``i`` of ``x``, so ``x`` has the output's
    rows); with ``requant = (zero_point, qmin, qmax, dtype)`` the int32 sums are requantized on the way out by
    ``Rq[3, h]`` int64 (multiplier, rounding half, shift per column, :func:`.fusion.requant_epilogue_constants`),
    the multiplier taken per row from ``RowM[n, 1]`` (of dtype ``row_mult``) when given.  The gathered forms
    take ``Rq`` and ``RowM`` before ``Out`` (unread when unused), so the int32 ``[N, h]`` sums never go to memory
    on the CSR paths (the owned-edge fallback accumulates into a scratch buffer first).

    With ``packed_col`` (``csr_col``, an 8-bit ``coef``) the ``col`` argument is :func:`pack_coef`'s: when ``x``
    has at most ``pack_limit`` rows each edge's coefficient is read from its source's top byte, so an edge
    touches one random cache line (its row of ``x``) instead of two (the row and ``coef[src]``); otherwise
    ``col`` holds the plain sources and the coefficient is gathered as above.

    ``x_width`` (gathered forms, ``>= h``): the row stride of ``x``, whose columns past ``h`` are padding
    (:func:`.fusion.widen_gathered_rows`: a GEMM wrote 8 columns for 7).  The CSR paths sum all ``x_width`` lanes
    and store the first ``h``: a row of 8 bytes never straddles a cache line, one of 7 does for 7 rows in 64.
    """
    chunk, pf = CHUNK, PREFETCH
    hx = h if x_width is None else int(x_width)
    if hx < h or (hx != h and src_row is None):
        raise ValueError(f"edge_reduce: x_width {x_width} needs a gathered form and at least h = {h} columns")
    counting = dtype is None
    gathered = src_row is not None
    scaled = coef_dtype is not None
    is_max = reduce == "max"
    fused = requant is not None
    if reduce not in ("add", "max") or (scaled and not gathered) or (counting and (gathered or h != 1)) \
            or (csr_col and not gathered) or ((self_term or fused) and (is_max or not gathered)) \
            or (row_mult is not None and not fused) \
            or (packed_col and not (csr_col and coef_dtype in PACKABLE_COEF)):
        raise ValueError(f"edge_reduce: unsupported combination reduce={reduce!r}, dtype={dtype}, "
                         f"gathered={gathered}, scaled={scaled}, h={h}")
    zp = int(zero_point)
    out_dtype = requant[3] if fused else "int32"
    sr, dr = int(src_row or 0), int(dst_row)
    two_x = not counting and _straddles(hx, np.dtype(dtype).itemsize)
    two_o = _straddles(h, 4)

    # TVMScript expression helpers.  S: the [R, E] tensor or ``col``; ``pk``: ``col`` packed by pack_coef (the
    # source in its low bits, the coefficient in its top byte)
    def row(S, k, pk=False):  # noqa: ANN001, ANN202
        if not gathered:
            return k
        if pk:
            return T.bitwise_and(S[k], T.int32(PACK_MASK))
        return S[k] if len(S.shape) == 1 else S[sr, k]

    def centered(X, r, c):  # noqa: ANN001, ANN202 - x's row r, column c, as int32 minus the zero point
        v = T.Cast("int32", X[r, c])
        return v - T.int32(zp) if zp else v

    def node_message(X, C, r, c):  # noqa: ANN001, ANN202 - the message of node r (x's row r)
        return centered(X, r, c) * T.Cast("int32", C[r, 0]) if scaled else centered(X, r, c)

    def message(X, C, S, k, c, pk=False):  # noqa: ANN001, ANN202
        if pk:  # the coefficient from the source's top byte (sign-extended for int8, masked for uint8)
            top = T.shift_right(S[k], T.int32(PACK_BITS))
            return centered(X, row(S, k, pk), c) * (top if coef_dtype == "int8" else T.bitwise_and(top, T.int32(255)))
        return T.int32(1) if counting else node_message(X, C, row(S, k), c)

    def start(X, C, i, c):  # noqa: ANN001, ANN202 - a row's initial sum
        return node_message(X, C, i, c) if self_term else T.int32(-2147483648) if is_max else T.int32(0)

    def finish(Rq, RowM, v, i, c):  # noqa: ANN001, ANN202 - the sum of row i, column c as written
        if not fused:
            return v
        return _requantized(Rq, v, T.Cast("int64", RowM[i, 0]) if row_mult is not None else Rq[0, c], c, requant)

    @T.macro
    def prefetch_source(X, C, S, ahead, pk=False):  # noqa: ANN001, ANN202 - the message row edge `ahead` will read
        if not counting:
            T.evaluate(_prefetch(T.address_of(X[row(S, ahead, pk), 0])))
        if two_x:
            T.evaluate(_prefetch(T.address_of(X[row(S, ahead, pk), hx - 1])))
        if scaled and not pk:
            T.evaluate(_prefetch(T.address_of(C[row(S, ahead), 0])))

    @T.macro
    def csr_row(X, C, S, Out, Rq, RowM, RowPtr, acc, i, e, pk=False):  # noqa: ANN001, ANN202 - row i's run of edges
        if counting:  # a row's edge count is its run length
            Out[i, 0] = T.Cast("int32", RowPtr[i + 1] - RowPtr[i])
        else:
            for c in T.vectorized(hx):
                acc[c] = start(X, C, i, c)
            for k in T.serial(RowPtr[i], RowPtr[i + 1]):
                prefetch_source(X, C, S, T.min(k + pf, e - 1), pk)
                for c in T.vectorized(hx):
                    acc[c] = T.max(acc[c], message(X, C, S, k, c, pk)) if is_max else \
                        acc[c] + message(X, C, S, k, c, pk)
            for c in T.vectorized(h):
                Out[i, c] = T.if_then_else(RowPtr[i + 1] > RowPtr[i], acc[c], 0) if is_max else \
                    finish(Rq, RowM, acc[c], i, c)

    @T.macro
    def apply(X, C, S, D, Out, seen, k, ahead):  # noqa: ANN001, ANN202 - edge k, prefetching for edge `ahead`
        prefetch_source(X, C, S, ahead)
        T.evaluate(_prefetch_w(T.address_of(Out[D[dr, ahead], 0])))
        if two_o:
            T.evaluate(_prefetch_w(T.address_of(Out[D[dr, ahead], h - 1])))
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

    owned = _owned_edges(chunk, pf, apply)

    def make_edge_loop(parts: int, loop: Any) -> Any:  # the row split into ``parts``, run by ``loop``
        @T.macro
        def edge_loop(X, C, S, D, Out, Sums, Rq, RowM, Flag, RowPtr, Col, n, e):  # noqa: ANN001, ANN202
            # Sums: where the owned-edge fallback accumulates (Out itself unless requantized on the way out)
            if is_max and not csr_col:
                seen = T.alloc_buffer((n,), "int8")
            for p in loop(parts):
                # CSR order: each output row sums its own run of edges in registers and is written once
                acc = T.decl_buffer((hx,), "int32", scope=ACC_SCOPE)  # registers
                if counting:
                    for ii in T.serial((p + 1) * n // parts - p * n // parts):  # zero-based: see edge_plan
                        csr_row(X, C, S, Out, Rq, RowM, RowPtr, acc, p * n // parts + ii, e)
                elif packed_col:  # col from pack_coef: coefficients in its top byte while x has few rows
                    if X.shape[0] <= pack_limit:
                        for ii in T.serial((p + 1) * n // parts - p * n // parts):
                            csr_row(X, C, Col, Out, Rq, RowM, RowPtr, acc, p * n // parts + ii, e, True)
                    else:
                        for ii in T.serial((p + 1) * n // parts - p * n // parts):
                            csr_row(X, C, Col, Out, Rq, RowM, RowPtr, acc, p * n // parts + ii, e)
                elif csr_col:  # sorted or not, the plan's CSR runs with their int32 sources from col
                    for ii in T.serial((p + 1) * n // parts - p * n // parts):
                        csr_row(X, C, Col, Out, Rq, RowM, RowPtr, acc, p * n // parts + ii, e)
                elif Flag[0] != 0:
                    for ii in T.serial((p + 1) * n // parts - p * n // parts):
                        csr_row(X, C, S, Out, Rq, RowM, RowPtr, acc, p * n // parts + ii, e)
                else:
                    for i in T.serial(p * n // parts, (p + 1) * n // parts):
                        if is_max:
                            seen[i] = T.int8(0)
                        for c in T.vectorized(h):
                            Sums[i, c] = start(X, C, i, c) if self_term else 0
                    owned(D, dr, e, p * n // parts, (p + 1) * n // parts, X, C, S, D, Sums,
                          seen if is_max else None)
                    if fused:
                        for i in T.serial(p * n // parts, (p + 1) * n // parts):
                            for c in T.vectorized(h):
                                Out[i, c] = finish(Rq, RowM, Sums[i, c], i, c)

        return edge_loop

    serial_loop, parallel_loop = make_edge_loop(1, T.serial), make_edge_loop(parts, T.parallel)

    @T.macro
    def dispatch(X, C, S, D, Out, Sums, Rq, RowM, Flag, RowPtr, Col, n, e):  # noqa: ANN001, ANN202 - serial if small
        if n * h + e < serial_work:
            serial_loop(X, C, S, D, Out, Sums, Rq, RowM, Flag, RowPtr, Col, n, e)
        else:
            parallel_loop(X, C, S, D, Out, Sums, Rq, RowM, Flag, RowPtr, Col, n, e)

    run = serial_loop if parts == 1 else dispatch

    @T.macro
    def gathered_loop(X, C, S, D, Out, Rq, RowM, Flag, RowPtr, Col, n, e):  # noqa: ANN001, ANN202
        if fused:  # the owned-edge fallback's int32 sums (the CSR paths keep them in registers)
            sums = T.alloc_buffer((n, h), "int32")
            run(X, C, S, D, Out, sums, Rq, RowM, Flag, RowPtr, Col, n, e)
        else:
            run(X, C, S, D, Out, Out, Rq, RowM, Flag, RowPtr, Col, n, e)

    if scaled:
        @T.prim_func(private=True, s_tir=True)
        def kernel(x_h: T.handle, c_h: T.handle, src_h: T.handle, dst_h: T.handle, flag_h: T.handle,
                   rowptr_h: T.handle, col_h: T.handle, rq_h: T.handle, rm_h: T.handle, out_h: T.handle):
            T.func_attr(_SCHEDULED)
            n_in, e, n, rs, rd, ncol = T.int64(), T.int64(), T.int64(), T.int64(), T.int64(), T.int64()
            n_m = T.int64()
            X = T.match_buffer(x_h, (n_in, hx), dtype)
            C = T.match_buffer(c_h, (n_in, 1), coef_dtype)
            S = T.match_buffer(src_h, (rs, e), "int64")
            D = T.match_buffer(dst_h, (rd, e), "int64")
            Out = T.match_buffer(out_h, (n, h), out_dtype)
            Flag = T.match_buffer(flag_h, (1,), "int32")
            RowPtr = T.match_buffer(rowptr_h, (n + 1,), "int64")
            Col = T.match_buffer(col_h, (ncol,), "int32")  # ncol = E with csr_col, else unread
            Rq = T.match_buffer(rq_h, (3, h), "int64")
            RowM = T.match_buffer(rm_h, (n_m, 1), row_mult or "int64")  # n_m = n with row_mult, else unread
            with T.sblock("root"):
                gathered_loop(X, C, S, D, Out, Rq, RowM, Flag, RowPtr, Col, n, e)
    elif gathered:
        @T.prim_func(private=True, s_tir=True)
        def kernel(x_h: T.handle, src_h: T.handle, dst_h: T.handle, flag_h: T.handle, rowptr_h: T.handle,
                   col_h: T.handle, rq_h: T.handle, rm_h: T.handle, out_h: T.handle):
            T.func_attr(_SCHEDULED)
            n_in, e, n, rs, rd, ncol = T.int64(), T.int64(), T.int64(), T.int64(), T.int64(), T.int64()
            n_m = T.int64()
            X = T.match_buffer(x_h, (n_in, hx), dtype)
            S = T.match_buffer(src_h, (rs, e), "int64")
            D = T.match_buffer(dst_h, (rd, e), "int64")
            Out = T.match_buffer(out_h, (n, h), out_dtype)
            Flag = T.match_buffer(flag_h, (1,), "int32")
            RowPtr = T.match_buffer(rowptr_h, (n + 1,), "int64")
            Col = T.match_buffer(col_h, (ncol,), "int32")
            Rq = T.match_buffer(rq_h, (3, h), "int64")
            RowM = T.match_buffer(rm_h, (n_m, 1), row_mult or "int64")
            with T.sblock("root"):
                gathered_loop(X, None, S, D, Out, Rq, RowM, Flag, RowPtr, Col, n, e)
    elif not counting:
        @T.prim_func(private=True, s_tir=True)
        def kernel(v_h: T.handle, idx_h: T.handle, flag_h: T.handle, rowptr_h: T.handle, out_h: T.handle):
            T.func_attr(_SCHEDULED)
            e, n, rd = T.int64(), T.int64(), T.int64()
            V = T.match_buffer(v_h, (e, h), dtype)
            D = T.match_buffer(idx_h, (rd, e), "int64")
            Out = T.match_buffer(out_h, (n, h), "int32")
            Flag = T.match_buffer(flag_h, (1,), "int32")
            RowPtr = T.match_buffer(rowptr_h, (n + 1,), "int64")
            with T.sblock("root"):
                run(V, None, None, D, Out, Out, None, None, Flag, RowPtr, None, n, e)
    else:
        @T.prim_func(private=True, s_tir=True)
        def kernel(idx_h: T.handle, flag_h: T.handle, rowptr_h: T.handle, out_h: T.handle):
            T.func_attr(_SCHEDULED)
            e, n, rd = T.int64(), T.int64(), T.int64()
            D = T.match_buffer(idx_h, (rd, e), "int64")
            Out = T.match_buffer(out_h, (n, 1), "int32")
            Flag = T.match_buffer(flag_h, (1,), "int32")
            RowPtr = T.match_buffer(rowptr_h, (n + 1,), "int64")
            with T.sblock("root"):
                run(None, None, None, D, Out, Out, None, None, Flag, RowPtr, None, n, e)

    return kernel


def degree(parts: int, row: int = 0, *, serial_work: int = SERIAL_WORK) -> tirx.PrimFunc:
    """Occurrences of each index in row ``row`` of a [R, E] tensor: ``out[i, 0] = #{e : idx[row, e] == i}``."""
    return edge_reduce(1, None, parts, "add", dst_row=row, serial_work=serial_work)


def pack_coef(coef_dtype: str, parts: int, src_row: int = 0, *, pack_limit: int = PACK_LIMIT,
              serial_work: int = SERIAL_WORK) -> tirx.PrimFunc:
    """``out[k] = src(k) | coef[src(k)] << 24`` (the 8-bit coefficient's bits in the top byte) for the plan's kept
    edges ``k < rowptr[n]`` when ``coef`` has at most ``pack_limit`` rows (every source then fits the low 24 bits),
    else ``out[k] = src(k)``.  ``kernel(Idx, Flag, RowPtr, Col, C, Out)`` with :func:`edge_plan`'s index tensor,
    flag, row pointers and col: ``src(k)`` is ``Idx[src_row, k]`` narrowed to int32 when the flag is set (edges
    already in CSR order, so the plan need not write col: ``edge_plan(sorted_col=False)``), else ``col[k]``.

    Why: a GCN's aggregation reads ``x[src] * coef[src]`` per edge, two random cache lines (a row of the
    ``[N, H]`` table and a byte of the ``[N, 1]`` coefficients); with the coefficient streamed in ``col`` it reads
    one.  One pass per plan, shared by both layers' kernels (``edge_reduce(..., packed_col=True)``).  Edges past
    ``rowptr[n]`` (dropped by the plan: out-of-range destinations) are neither read nor written."""
    if coef_dtype not in PACKABLE_COEF:
        raise ValueError(f"pack_coef: coefficients of dtype {coef_dtype} do not fit a byte")
    sr = int(src_row)

    def packed(s: Any, C: Any) -> Any:  # noqa: ANN401 - source s (int32) with its coefficient in the top byte
        top = T.shift_left(T.Cast("uint32", T.Cast("uint8", C[s, 0])), T.uint32(PACK_BITS))
        return T.reinterpret("int32", T.bitwise_or(T.Cast("uint32", s), top))

    @T.macro
    def rows(Idx, Flag, Col, C, Out, lo, hi):  # noqa: ANN001, ANN202 - edges [lo, hi)
        if C.shape[0] <= pack_limit:
            if Flag[0] != 0:
                for k in T.serial(lo, hi):
                    Out[k] = packed(T.Cast("int32", Idx[sr, k]), C)
            else:
                for k in T.serial(lo, hi):
                    Out[k] = packed(Col[k], C)
        elif Flag[0] != 0:
            for k in T.serial(lo, hi):
                Out[k] = T.Cast("int32", Idx[sr, k])
        else:
            for k in T.serial(lo, hi):
                Out[k] = Col[k]

    run = _over_rows(rows, parts, lambda e: e < serial_work)

    @T.prim_func(private=True, s_tir=True)
    def kernel(idx_h: T.handle, flag_h: T.handle, rowptr_h: T.handle, col_h: T.handle, c_h: T.handle,
               out_h: T.handle):
        T.func_attr(_SCHEDULED)
        e, n_c, r, n1 = T.int64(), T.int64(), T.int64(), T.int64()
        Idx = T.match_buffer(idx_h, (r, e), "int64")
        Flag = T.match_buffer(flag_h, (1,), "int32")
        RowPtr = T.match_buffer(rowptr_h, (n1,), "int64")
        Col = T.match_buffer(col_h, (e,), "int32")
        C = T.match_buffer(c_h, (n_c, 1), coef_dtype)
        Out = T.match_buffer(out_h, (e,), "int32")
        with T.sblock("root"):
            kept: T.let = RowPtr[n1 - 1]  # bound once: loaded in the loop bounds, the pass took ~30% longer
            run(kept, Idx, Flag, Col, C, Out)

    return kernel


def _over_rows(rows: Any, parts: int, small: Any) -> Any:
    """A macro ``run(n, *bufs)`` calling ``rows(*bufs, lo, hi)`` over rows ``[0, n)``: on the calling thread when
    ``parts == 1`` or ``small(n)`` holds at run time, else as ``parts`` parallel row ranges."""

    @T.macro
    def serial(n, *bufs):  # noqa: ANN001, ANN002, ANN202
        rows(*bufs, 0, n)

    @T.macro
    def dispatch(n, *bufs):  # noqa: ANN001, ANN002, ANN202 - serial when the work is small
        if small(n):
            rows(*bufs, 0, n)
        else:
            for p in T.parallel(parts):
                rows(*bufs, p * n // parts, (p + 1) * n // parts)

    return serial if parts == 1 else dispatch


def lut_steps(k: int, first: int, top: int, idx_dtype: str, cmp: str, value_dtype: str, parts: int,
              w: int = 1, *, serial_work: int = SERIAL_WORK) -> tirx.PrimFunc:
    """``out[i] = values[#{j : idx[i] >= t[j]}]`` for ``k >= 1`` sorted thresholds, as the branchless binary search
    of :func:`qgnn_deploy.ir.ops.steps_search_plan` (``first``, then strides ``top/2 .. 1``) over
    ``probe[c] = t[c - 1]``: O(log K) compares per element, no ``[N, K]`` intermediate.  A loop, not elementwise
    Relax ops: fused, each round's ``pos`` would be inlined three times into the next (3^rounds terms).
    The index is an ``[n, w]`` view (``w`` static), as fold's ``[N, 1]`` degrees come, so no reshape is needed."""
    rounds = max(int(top).bit_length() - 1, 0)

    @T.macro
    def rows(Idx, Probe, Values, Out, lo, hi):  # noqa: ANN001, ANN202 - rows [lo, hi)
        pos = T.decl_buffer((1,), "int64", scope="local")
        for i in T.serial(lo, hi):
            for c0 in range(w):
                pos[0] = T.Select(T.Cast(cmp, Idx[i, c0]) >= Probe[first], T.int64(first), T.int64(0))
                for r in range(rounds):
                    c = pos[0] + T.shift_right(T.int64(top), T.Cast("int64", r) + T.int64(1))
                    pos[0] = T.Select(T.Cast(cmp, Idx[i, c0]) >= Probe[c], c, pos[0])
                Out[i, c0] = Values[pos[0]]

    run = _over_rows(rows, parts, lambda n: n * w * (rounds + 1) < serial_work)

    @T.prim_func(private=True, s_tir=True)
    def kernel(idx_h: T.handle, probe_h: T.handle, values_h: T.handle, out_h: T.handle):
        T.func_attr(_SCHEDULED)
        n = T.int64()
        Idx = T.match_buffer(idx_h, (n, w), idx_dtype)
        Probe = T.match_buffer(probe_h, (k + 1,), cmp)
        Values = T.match_buffer(values_h, (k + 1,), value_dtype)
        Out = T.match_buffer(out_h, (n, w), value_dtype)
        with T.sblock("root"):
            run(n, Idx, Probe, Values, Out)

    return kernel


def lut_steps_dense(k: int, base: int, span: int, idx_dtype: str, thr_dtype: str, value_dtype: str,
                    parts: int, w: int = 1, *, serial_work: int = SERIAL_WORK) -> tirx.PrimFunc:
    """``lut_steps`` for thresholds spanning ``span - 1`` indices from ``base + 1``: each call first counts, for
    every ``r < span``, the thresholds ``<= base + r`` (marks + prefix sum over ``span`` int32s, serial and a few
    microseconds for a degree table), then each element reads ``values[count[clip(idx, base, base + span - 1)
    - base]]``: the per-element cost of ``lut`` while the library stores only the steps."""

    @T.macro
    def rows(Idx, Values, Out, count, lo, hi):  # noqa: ANN001, ANN202 - rows [lo, hi)
        for i in T.serial(lo, hi):
            for c in range(w):
                Out[i, c] = Values[count[T.max(T.min(T.Cast("int64", Idx[i, c]), T.int64(base + span - 1)),
                                               T.int64(base)) - T.int64(base)]]

    run = _over_rows(rows, parts, lambda n: n * w < serial_work)

    @T.prim_func(private=True, s_tir=True)
    def kernel(idx_h: T.handle, thr_h: T.handle, values_h: T.handle, out_h: T.handle):
        T.func_attr(_SCHEDULED)
        n = T.int64()
        Idx = T.match_buffer(idx_h, (n, w), idx_dtype)
        Thr = T.match_buffer(thr_h, (k,), thr_dtype)
        Values = T.match_buffer(values_h, (k + 1,), value_dtype)
        Out = T.match_buffer(out_h, (n, w), value_dtype)
        with T.sblock("root"):
            count = T.decl_buffer((span,), "int32", scope="global")
            for r in range(span):
                count[r] = 0
            for j in range(k):
                count[T.Cast("int64", Thr[j]) - T.int64(base)] = count[T.Cast("int64", Thr[j]) - T.int64(base)] + 1
            for r in range(1, span):
                count[r] = count[r] + count[r - 1]
            run(n, Idx, Values, Out, count)

    return kernel


def edge_attend(heads: int, c: int, dtype: str, parts: int, dst_row: int, src_row: int, zero_point: int,
                coef_dtype: str, self_dtype: str | None = None,
                requant: tuple[int, int, int, str] | None = None) -> tirx.PrimFunc:
    """Attention-weighted neighbour sum: ``out[i, k*c + j] = sum_{e : dst[e] = i} (x[src[e], k*c + j] - zp)
    * a[e, k]`` for ``heads`` heads of ``c`` columns (``kernel(X, A, S, D, Flag, RowPtr, Out)``); with
    ``self_dtype`` each row starts from its self term ``(x[i, k*c + j] - zp) * a_self[i, k]``; with
    ``requant = (zero_point, qmin, qmax, dtype)`` the int32 sums are requantized on the way out by
    ``Rq[3, heads*c]`` int64 (multiplier, rounding half, shift per column, as
    :func:`.fusion.requant_epilogue_constants` gives them).  One signature,
    ``kernel(X, A, A_self, S, D, Flag, RowPtr, Rq, Out)``: ``A_self`` and ``Rq`` are not read when unused.

    GAT's ``scatter_add(gather(h, src) * repeat_cols(alpha, c), dst) [+ h * repeat_cols(alpha_self, c)]`` in
    one edge loop: the random reads hit the narrow message rows, the per-edge, per-head coefficient
    ``a[E, heads]`` is read once per edge and broadcast over its head's columns in registers, so neither the
    ``[E, heads*c]`` coefficients nor the messages are materialised.  Same ownership scheme as
    :func:`edge_reduce` (CSR runs when :func:`edge_plan` flags the destinations ascending, else owned-edge
    blocks), so it is deterministic, and the int32 sums are the interpreter's (integer addition in any order;
    fold bounds them).
    """
    chunk, pf = CHUNK, PREFETCH
    h = heads * c
    zp = int(zero_point)
    sr, dr = int(src_row), int(dst_row)
    with_self = self_dtype is not None
    two_x = _straddles(h, np.dtype(dtype).itemsize)
    two_o = _straddles(h, 4)
    out_dtype = requant[3] if requant is not None else "int32"

    def centered(X, row, hd, j):  # noqa: ANN001, ANN202 - TVMScript expression helpers
        v = T.Cast("int32", X[row, hd * c + j])
        return v - T.int32(zp) if zp else v

    def message(X, A, S, k, hd, j):  # noqa: ANN001, ANN202
        return centered(X, S[sr, k], hd, j) * T.Cast("int32", A[k, hd])

    def start(X, A_self, i, hd, j):  # noqa: ANN001, ANN202 - a row's initial value
        return centered(X, i, hd, j) * T.Cast("int32", A_self[i, hd]) if with_self else T.int32(0)

    def finish(Rq, v, q):  # noqa: ANN001, ANN202 - the requantize handler's arithmetic, in int64
        return v if requant is None else _requantized(Rq, v, Rq[0, q], q, requant)

    @T.macro
    def prefetch_source(X, S, ahead):  # noqa: ANN001, ANN202
        T.evaluate(_prefetch(T.address_of(X[S[sr, ahead], 0])))
        if two_x:
            T.evaluate(_prefetch(T.address_of(X[S[sr, ahead], h - 1])))

    @T.macro
    def apply(X, A, S, D, Sums, k, ahead):  # noqa: ANN001, ANN202 - edge k, prefetching for edge `ahead`
        prefetch_source(X, S, ahead)
        T.evaluate(_prefetch_w(T.address_of(Sums[D[dr, ahead], 0])))
        if two_o:
            T.evaluate(_prefetch_w(T.address_of(Sums[D[dr, ahead], h - 1])))
        for hd in T.unroll(heads):
            for j in T.vectorized(c):
                Sums[D[dr, k], hd * c + j] = Sums[D[dr, k], hd * c + j] + message(X, A, S, k, hd, j)

    owned = _owned_edges(chunk, pf, apply)

    @T.macro
    def body(X, A, A_self, S, D, Out, Sums, Rq, Flag, RowPtr, n, e):  # noqa: ANN001, ANN202
        # Sums: where the owned-edge fallback accumulates (Out itself unless requantized on the way out)
        for p in T.parallel(parts):
            if Flag[0] != 0:
                acc = T.decl_buffer((h,), "int32", scope=ACC_SCOPE)  # registers
                for ii in T.serial((p + 1) * n // parts - p * n // parts):  # zero-based: see edge_plan
                    i = p * n // parts + ii
                    for hd in T.unroll(heads):
                        for j in T.vectorized(c):
                            acc[hd * c + j] = start(X, A_self, i, hd, j)
                    for k in T.serial(RowPtr[i], RowPtr[i + 1]):
                        prefetch_source(X, S, T.min(k + pf, e - 1))
                        for hd in T.unroll(heads):
                            for j in T.vectorized(c):
                                acc[hd * c + j] = acc[hd * c + j] + message(X, A, S, k, hd, j)
                    for q in T.vectorized(h):
                        Out[i, q] = finish(Rq, acc[q], q)
            else:
                for i in T.serial(p * n // parts, (p + 1) * n // parts):
                    for hd in T.unroll(heads):
                        for j in T.vectorized(c):
                            Sums[i, hd * c + j] = start(X, A_self, i, hd, j)
                owned(D, dr, e, p * n // parts, (p + 1) * n // parts, X, A, S, D, Sums)
                if requant is not None:
                    for i in T.serial(p * n // parts, (p + 1) * n // parts):
                        for q in T.vectorized(h):
                            Out[i, q] = finish(Rq, Sums[i, q], q)

    @T.prim_func(private=True, s_tir=True)
    def kernel(x_h: T.handle, a_h: T.handle, as_h: T.handle, src_h: T.handle, dst_h: T.handle,
               flag_h: T.handle, rowptr_h: T.handle, rq_h: T.handle, out_h: T.handle):
        T.func_attr(_SCHEDULED)
        n_in, e, n, rs, rd, n_s = T.int64(), T.int64(), T.int64(), T.int64(), T.int64(), T.int64()
        X = T.match_buffer(x_h, (n_in, h), dtype)
        A = T.match_buffer(a_h, (e, heads), coef_dtype)
        A_self = T.match_buffer(as_h, (n_s, heads), self_dtype or "int32")  # n_s = n (unread without self_dtype)
        S = T.match_buffer(src_h, (rs, e), "int64")
        D = T.match_buffer(dst_h, (rd, e), "int64")
        Out = T.match_buffer(out_h, (n, h), out_dtype)
        Flag = T.match_buffer(flag_h, (1,), "int32")
        RowPtr = T.match_buffer(rowptr_h, (n + 1,), "int64")
        Rq = T.match_buffer(rq_h, (3, h), "int64")
        with T.sblock("root"):
            if requant is not None:
                sums = T.alloc_buffer((n, h), "int32")
                body(X, A, A_self, S, D, Out, sums, Rq, Flag, RowPtr, n, e)
            else:
                body(X, A, A_self, S, D, Out, Out, Rq, Flag, RowPtr, n, e)

    return kernel
