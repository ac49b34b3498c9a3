"""LoRAP's integer softmax weights as one AVX-512 VBMI kernel (planned by :func:`.fusion.softmax_into_vbmi`).

fold (:func:`qgnn_deploy.fold.prompts.emit_softmax_alpha`) emits, for each row of the 8-bit scores ``z [N, K]``::

    e     = int32(lut(int32(z) - int32(max_j z), table, offset))    # the exp table: uint8 entries
    tot   = sum_j e
    alpha = uint8(floor((c1 * e + tot) / (c2 * tot)))

The stock lowering runs that as four kernels that write and read ``[N, K]`` tensors (the max, the lookup, the sum,
the division); at 10^6 rows, K = 8 they took ~2.3 ms per layer (AMD Zen 4, 2 threads), the lookup alone 1.4.
This kernel reads ``z`` once and writes ``alpha`` once, 64 codes (``64 / K`` rows) per step:

* the row maximum: ``log2(K)`` rounds of ``vpermb`` (a rotation inside each K-byte group) and ``vpmaxsb``;
* ``t = max - z`` lies in [0, 255], so the byte subtraction (which wraps) gives it exactly, and ``e = rtab[t]``
  with ``rtab[t] = table[clip(offset - t, 0, len - 1)]`` (the lut's clamp folded in when building,
  :func:`reversed_table`): two ``vpermi2b`` over the 256-byte table's halves, picked by ``t``'s top bit;
* ``tot``: ``vpmaddubsw`` / ``vpmaddwd`` by ones (the sum of 4 codes per dword), ``log2(K / 4)`` rounds of
  ``vpermd`` + add inside each row's dwords, converted to float once and spread to each code's lane (``vpermps``);
* the division in float32, exact while ``num + den < 2^24`` (the argument of ``relax_builder._div_floor``; the
  planner checks the bound from the constants); the quotient is non-negative, so truncation is the floor.

Rows after the last whole step run the same arithmetic in scalar code with an integer division.  Same model, 10^6
rows, K = 8, Zen 4: 0.89 ms at 2 threads, 1.79 at 1 (compute-bound: each zmm op is two 256-bit halves there).
"""

from __future__ import annotations

import numpy as np
from tvm import tirx
from tvm.script import tirx as T

from .gemm_skeleton import ACC_SCOPE
from .kernels import _SCHEDULED, _over_rows

KS = (4, 8, 16, 32, 64)  # row widths the kernel takes: K divides the 64-byte step and holds whole dwords
F32_EXACT = 1 << 24  # num + den below this: float32 division then truncation is floor division
_PERMB = "llvm.x86.avx512.permvar.qi.512"
_PERMI2B = "llvm.x86.avx512.vpermi2var.qi.512"
_UBSW = "llvm.x86.avx512.pmaddubs.w.512"
_MADDWD = "llvm.x86.avx512.pmaddw.d.512"
_PERMD = "llvm.x86.avx512.permvar.si.512"
_PERMPS = "llvm.x86.avx512.permvar.sf.512"


def reversed_table(table: np.ndarray, offset: int) -> np.ndarray:
    """``rtab[t] = table[clip(offset - t, 0, len - 1)]`` for ``t`` in [0, 255], as int8 bit patterns: the lookup
    of ``z - max = -t`` with the IR lut's clamp applied, indexed by what the kernel has in a byte."""
    pos = np.clip(int(offset) - np.arange(256), 0, table.shape[0] - 1)
    return np.asarray(table)[pos].astype(np.uint8).view(np.int8)


def patterns(k: int) -> np.ndarray:
    """The kernel's shuffle indices, one 64-byte row each: ``log2(k)`` byte rotations by 1, 2, 4, ... inside each
    k-byte group, ``log2(k / 4)`` dword rotations inside each row's ``k / 4`` dwords, then for each of the 4
    output vectors the dword (row total) each of its 16 codes reads."""
    g = k // 4
    rows = [[(b & ~(k - 1)) | ((b + s) & (k - 1)) for b in range(64)] for s in _powers(k)]
    words = [[(d & ~(g - 1)) | ((d + s) & (g - 1)) for d in range(16)] for s in _powers(g)]
    words += [[4 * j + lane // 4 for lane in range(16)] for j in range(4)]
    out = [np.array(r, np.uint8).view(np.int8) for r in rows]
    out += [np.array(w, np.int32).view(np.int8) for w in words]
    return np.stack(out)


def _powers(n: int) -> list[int]:
    return [1 << i for i in range(int(n).bit_length() - 1)]


def exact_in_float32(k: int, c1: int, c2: int, table_max: int) -> bool:
    """Whether every ``c1 * e + tot`` and ``c2 * tot`` (``e <= table_max``, ``tot <= k * table_max``) stays where
    the float32 quotient truncates to the floor (and both are non-negative)."""
    return c1 >= 0 and c2 > 0 and c1 * table_max + k * table_max + c2 * k * table_max < F32_EXACT


def alpha_kernel(k: int, c1: int, c2: int, parts: int, *, serial_work: int) -> tirx.PrimFunc:
    """``out = alpha(z)`` over ``[n, k]`` int8 scores (see the module docstring); signature
    ``(z, rtab, pattern, out)`` with ``rtab`` from :func:`reversed_table`, ``pattern`` from :func:`patterns`."""
    if k not in KS:
        raise ValueError(f"softmax kernel: K = {k} is not one of {KS}")
    rounds_b, rounds_d = len(_powers(k)), len(_powers(k // 4))
    npat = rounds_b + rounds_d + 4

    def intrin(name: str, dtype: str, *args):  # noqa: ANN002, ANN202
        return T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id(name), *args, dtype=dtype)

    def words(pat, r):  # noqa: ANN001, ANN202 - pattern row r as 16 dword indices
        return T.reinterpret(pat.vload([r, 0], "int8x64"), dtype="int32x16")

    def row_max(v, pat):  # noqa: ANN001, ANN202
        for r in range(rounds_b):
            v = T.max(v, intrin(_PERMB, "int8x64", v, pat.vload([r, 0], "int8x64")))
        return v

    def row_total(e, pat):  # noqa: ANN001, ANN202 - each dword: its row's sum of e
        ones = T.broadcast(T.int8(1), 64)
        s = intrin(_MADDWD, "int32x16", intrin(_UBSW, "int16x32", T.reinterpret(e, dtype="uint8x64"), ones),
                   T.broadcast(T.int16(1), 32))
        for r in range(rounds_d):
            s = s + intrin(_PERMD, "int32x16", s, words(pat, rounds_b + r))
        return s

    def lookup(t, tab):  # noqa: ANN001, ANN202 - rtab[t] for 64 byte indices
        lo = intrin(_PERMI2B, "int8x64", tab.vload([0], "int8x64"), t, tab.vload([64], "int8x64"))
        hi = intrin(_PERMI2B, "int8x64", tab.vload([128], "int8x64"), t, tab.vload([192], "int8x64"))
        return T.Select(t < T.broadcast(T.int8(0), 64), hi, lo)

    def quotient(e, totf, denf, pat, j):  # noqa: ANN001, ANN202 - the 16 codes 16j .. 16j + 15 as int32
        idx = words(pat, rounds_b + rounds_d + j)
        ej = T.Cast("float32x16", T.Cast("int32x16", T.reinterpret(
            T.Shuffle([e], [16 * j + lane for lane in range(16)]), dtype="uint8x16")))
        num = ej * T.broadcast(T.float32(c1), 16) + intrin(_PERMPS, "float32x16", totf, idx)
        return T.Cast("int32x16", num / intrin(_PERMPS, "float32x16", denf, idx))

    @T.macro
    def steps(Z, Tab, Pat, Out, lo, hi):  # noqa: ANN001, ANN202 - 64-code steps [lo, hi)
        for s in T.serial(hi - lo):
            base: T.let = (lo + s) * 64
            v: T.let = Z.vload([base], "int8x64")
            t: T.let = row_max(v, Pat) - v
            e: T.let = lookup(t, Tab)
            totf: T.let = T.Cast("float32x16", row_total(e, Pat))
            denf: T.let = totf * T.broadcast(T.float32(c2), 16)
            q0: T.let = quotient(e, totf, denf, Pat, 0)
            q1: T.let = quotient(e, totf, denf, Pat, 1)
            q2: T.let = quotient(e, totf, denf, Pat, 2)
            q3: T.let = quotient(e, totf, denf, Pat, 3)
            Out[T.ramp(base, 1, 64)] = T.Cast("uint8x64", T.Shuffle([q0, q1, q2, q3], list(range(64))))

    def code(Tab, mx, z):  # noqa: ANN001, ANN202 - e of one score in scalar code
        return T.Cast("int32", T.Cast("uint8", Tab[T.Cast("int32", mx) - T.Cast("int32", z)]))

    @T.macro
    def tail_rows(Z, Tab, Out, first, rows):  # noqa: ANN001, ANN202 - rows after the last whole step
        mx = T.decl_buffer((1,), "int8", scope=ACC_SCOPE)
        tot = T.decl_buffer((1,), "int32", scope=ACC_SCOPE)
        for r in T.serial(rows):
            base: T.let = first + r * k
            mx[0] = Z[base]
            for j in range(1, k):
                mx[0] = T.max(mx[0], Z[base + j])
            tot[0] = 0
            for j in range(k):
                tot[0] = tot[0] + code(Tab, mx[0], Z[base + j])
            for j in range(k):
                Out[base + j] = T.Cast("uint8", T.floordiv(code(Tab, mx[0], Z[base + j]) * c1 + tot[0], tot[0] * c2))

    run = _over_rows(steps, parts, lambda blocks: blocks * 64 < serial_work)

    @T.prim_func(private=True, s_tir=True)
    def kernel(z_h: T.handle, t_h: T.handle, p_h: T.handle, o_h: T.handle):
        T.func_attr(_SCHEDULED)
        n = T.int64()
        Z2 = T.match_buffer(z_h, (n, k), "int8")
        Tab = T.match_buffer(t_h, (256,), "int8")
        Pat = T.match_buffer(p_h, (npat, 64), "int8")
        Out2 = T.match_buffer(o_h, (n, k), "uint8")
        with T.sblock("root"):
            m: T.let = n * k
            Z = T.decl_buffer((m,), "int8", data=Z2.data)  # flat views: a step spans 64 / k rows
            Out = T.decl_buffer((m,), "uint8", data=Out2.data)
            blocks: T.let = m // 64
            run(blocks, Z, Tab, Pat, Out)
            tail_rows(Z, Tab, Out, blocks * 64, (m - blocks * 64) // k)

    return kernel
