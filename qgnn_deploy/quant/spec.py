"""Frozen descriptions of how a tensor is quantized (training) and what fold reads back.

``QuantSpec`` is the request (bits, signedness, granularity); ``QParams`` is the
result after training: the numbers the folder turns into integer constants.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Kind = Literal["signed", "unsigned", "affine"]
Rounding = Literal["half_even", "half_up"]
FP32_BITS = 32


@dataclass(frozen=True)
class QuantSpec:
    """How one tensor is quantized.

    * ``signed``   symmetric, zero point 0, range ``[-(2^(b-1)-1), 2^(b-1)-1]`` (weights, messages)
    * ``unsigned`` zero point 0, range ``[0, 2^b-1]`` (edge coefficients in [0, 1])
    * ``affine``   zero point from the observed range, range ``[0, 2^b-1]`` stored as uint8
    ``bits == 32`` switches the quantizer off (identity).  ``axis`` selects
    per-channel scales (weights: output channel 0).  ``rounding`` is half-even at
    the float boundary (matches ONNX QuantizeLinear) and half-up inside the
    integer graph (matches fixed-point requantization).
    """

    bits: int = 8
    kind: Kind = "signed"
    axis: int | None = None
    rounding: Rounding = "half_up"

    def __post_init__(self) -> None:
        if self.bits != FP32_BITS and not 2 <= self.bits <= 8:
            raise ValueError(f"bit-width must be 2..8 or 32 (off), got {self.bits}")

    @property
    def enabled(self) -> bool:
        return self.bits != FP32_BITS

    @property
    def qmin(self) -> int:
        return -(2 ** (self.bits - 1) - 1) if self.kind == "signed" else 0

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1 if self.kind == "signed" else 2**self.bits - 1

    @property
    def dtype(self) -> str:
        return "int8" if self.kind == "signed" else "uint8"


@dataclass(frozen=True)
class QParams:
    """Trained quantization parameters of one tensor, as fold consumes them.

    ``scale`` is float32: a scalar, a per-channel vector (``axis`` set), or a
    per-node table (``per_node`` set: ``{"mode": "degree_bucket", "edges": [...]}``
    for A2Q).  ``qmin``/``qmax`` may likewise be per-node tables.
    """

    scale: np.ndarray
    zero_point: int
    qmin: np.ndarray
    qmax: np.ndarray
    bits: np.ndarray
    dtype: str
    axis: int | None = None
    per_node: dict | None = field(default=None)

    @property
    def is_per_tensor(self) -> bool:
        return self.axis is None and self.per_node is None

    def scalar_scale(self) -> float:
        if self.scale.size != 1:
            raise ValueError("quantizer has more than one scale")
        return float(self.scale.reshape(-1)[0])
