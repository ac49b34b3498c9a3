"""Fixed-point representation of real rescaling factors: ``r ~= M * 2**-n``.

Used by the folder to turn ``s_in * s_w / s_out`` into integer-only
requantization parameters, with the multiplier width chosen so that
``|acc| * M`` stays below ``2**62`` for the accumulator bound at hand.
"""

from __future__ import annotations

import math

import numpy as np


def quantize_multiplier(real: float, acc_bound: float = 2.0**31, max_bits: int = 31) -> tuple[int, int]:
    """Return ``(M, n)`` with ``M * 2**-n`` closest to ``real`` and ``M < 2**bits``.

    ``bits`` is the largest width <= ``max_bits`` such that ``acc_bound * M < 2**62``.
    ``real`` must be positive.
    """
    if not real > 0 or not math.isfinite(real):
        raise ValueError(f"rescale factor must be positive and finite, got {real}")
    bits = min(max_bits, int(math.floor(62 - math.log2(max(acc_bound, 1.0)))) - 1)
    if bits < 8:
        raise OverflowError(f"accumulator bound {acc_bound:g} leaves no room for an 8-bit multiplier")
    mant, exp = math.frexp(real)  # real = mant * 2**exp, mant in [0.5, 1)
    m = round(mant * 2**bits)
    n = bits - exp
    if m == 2**bits:  # rounding carried into the next power of two
        m //= 2
        n -= 1
    while n < 0:  # very large factors: keep the shift non-negative
        m *= 2
        n += 1
    while n > 62:  # very small factors: drop precision instead of shifting past int64
        m = (m + 1) // 2
        n -= 1
    return int(m), int(n)


def quantize_multipliers(reals: np.ndarray, acc_bound: float = 2.0**31) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised :func:`quantize_multiplier` returning int64 arrays of the same shape."""
    flat = np.asarray(reals, dtype=np.float64).reshape(-1)
    pairs = [quantize_multiplier(float(r), acc_bound) for r in flat]
    m = np.array([p[0] for p in pairs], dtype=np.int64).reshape(np.shape(reals))
    n = np.array([p[1] for p in pairs], dtype=np.int64).reshape(np.shape(reals))
    return m, n
