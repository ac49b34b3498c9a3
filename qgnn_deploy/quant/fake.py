"""Fake-quantization modules: observer + straight-through estimator, composed.

Every quantizer answers three questions the rest of the toolkit asks:
``forward`` (training/eval fake-quant), ``to_int`` (the exact integers the
deployed graph holds, computed with the same float32 arithmetic) and
``qparams`` (what fold needs).  Frameworks (QAT, Degree-Quant, A2Q, MixQ)
subclass these or swap the observer; layers never care which one they got.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from qgnn_deploy.quant import sync
from qgnn_deploy.quant.spec import QParams, QuantSpec

EPS = 1e-8


@dataclass
class QuantContext:
    """Per-forward facts node-wise quantizers may use.

    ``keep_float``: bool [N], nodes that bypass quantization (Degree-Quant's
    protective mask; training only).  ``degree``: in-degree [N] (A2Q buckets).
    """

    keep_float: Tensor | None = None
    degree: Tensor | None = None
    # True for a sampled sub-graph (NeighborLoader mini-batch): ``degree`` then holds the FULL-graph in-degree of
    # each batch node (indexed by global id), which GCN/GIN normalisation and A2Q buckets use instead of the
    # sub-graph's (train/minibatch.py)
    sampled: bool = False


def round_ste(x: Tensor, rounding: str) -> Tensor:
    """Round with a straight-through gradient."""
    r = torch.round(x) if rounding == "half_even" else torch.floor(x + 0.5)
    return x + (r - x).detach()


class _FakeQuantSTE(torch.autograd.Function):
    """Fused forward; straight-through backward that zeroes the gradient where clipped."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: Tensor, zero_point, qmin, qmax, rounding: str) -> Tensor:  # type: ignore[override]
        q = int_round(x / scale, rounding).add_(zero_point)
        inside = (q >= qmin) & (q <= qmax)
        q = torch.clamp(q, qmin, qmax) if not isinstance(qmin, Tensor) else torch.maximum(torch.minimum(q, qmax), qmin)
        ctx.save_for_backward(inside)
        return q.sub_(zero_point).mul_(scale)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (inside,) = ctx.saved_tensors
        return grad * inside, None, None, None, None, None


def fake_quant(x: Tensor, scale: Tensor, zero_point: Tensor | int, qmin: Tensor | int, qmax: Tensor | int,
               rounding: str) -> Tensor:
    """``(clamp(round(x / s) + zp, qmin, qmax) - zp) * s`` with STE (zero gradient when clipped).

    ``scale`` receives no gradient here; learnable-step quantizers (A2Q) use their own estimator.
    """
    if isinstance(scale, Tensor):
        scale = scale.detach()
    return _FakeQuantSTE.apply(x, scale, zero_point, qmin, qmax, rounding)


def int_round(x: Tensor, rounding: str) -> Tensor:
    return torch.round(x) if rounding == "half_even" else torch.floor(x + 0.5)


class Quantizer(nn.Module):
    """Base: identity when the spec is off; subclasses define ``scale_zp``."""

    def __init__(self, spec: QuantSpec) -> None:
        super().__init__()
        self.spec = spec

    # -- the three things every quantizer provides --------------------------------
    def forward(self, x: Tensor, ctx: QuantContext | None = None) -> Tensor:
        if not self.spec.enabled:
            return x
        if self.training:
            self.observe(x.detach())
        scale, zp = self.scale_zp(x)
        y = fake_quant(x, scale, zp, self.qmin_t(x), self.qmax_t(x), self.spec.rounding)
        if self.training and ctx is not None and ctx.keep_float is not None and x.dim() == 2 \
                and ctx.keep_float.shape[0] == x.shape[0]:
            y = torch.where(ctx.keep_float[:, None], x, y)
        return y

    def to_int(self, x: Tensor) -> Tensor:
        """The stored integers for ``x`` (same float32 arithmetic as ``forward``)."""
        scale, zp = self.scale_zp(x)
        q = int_round(x / scale, self.spec.rounding) + zp
        return torch.clamp(q, self.qmin_t(x), self.qmax_t(x)).to(torch.int64)

    def qparams(self) -> QParams:
        scale, zp = self.scale_zp(None)
        scale_np = scale.detach().to(torch.float32).cpu().numpy().astype(np.float32)
        return QParams(scale=scale_np, zero_point=int(zp), qmin=np.array(self.spec.qmin), qmax=np.array(self.spec.qmax),
                       bits=np.array(self.spec.bits), dtype=self.spec.dtype, axis=self.spec.axis)

    # -- hooks ------------------------------------------------------------------
    def observe(self, x: Tensor) -> None:
        """Update range statistics (training only)."""

    def scale_zp(self, x: Tensor | None) -> tuple[Tensor, int]:
        raise NotImplementedError

    def qmin_t(self, x: Tensor) -> int | Tensor:
        return self.spec.qmin

    def qmax_t(self, x: Tensor) -> int | Tensor:
        return self.spec.qmax

    def extra_repr(self) -> str:
        return f"bits={self.spec.bits}, kind={self.spec.kind}"


def scale_from_range(lo: Tensor, hi: Tensor, spec: QuantSpec) -> tuple[Tensor, int]:
    """Scale and zero point covering [lo, hi] for ``spec`` (float32 arithmetic)."""
    lo = lo.to(torch.float32)
    hi = hi.to(torch.float32)
    if spec.kind == "signed":
        scale = torch.maximum(lo.abs(), hi.abs()) / spec.qmax
        return scale.clamp_min(EPS), 0
    if spec.kind == "unsigned":
        return (hi.clamp_min(0) / spec.qmax).clamp_min(EPS), 0
    lo0, hi0 = torch.minimum(lo, torch.zeros_like(lo)), torch.maximum(hi, torch.zeros_like(hi))
    scale = ((hi0 - lo0) / (spec.qmax - spec.qmin)).clamp_min(EPS)
    zp = int(torch.clamp(torch.round(-lo0 / scale), spec.qmin, spec.qmax).item())
    return scale, zp


class RangeFakeQuant(Quantizer):
    """Activation quantizer with a momentum (EMA) min/max observer: plain QAT."""

    def __init__(self, spec: QuantSpec, momentum: float = 0.1) -> None:
        super().__init__(spec)
        self.momentum = momentum
        self.register_buffer("lo", torch.zeros(()))
        self.register_buffer("hi", torch.zeros(()))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    def batch_range(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x.min(), x.max()

    def observe(self, x: Tensor) -> None:
        if sync.active():  # every rank takes part in the reduction, even with an empty batch
            inf = torch.tensor(float("inf"), dtype=torch.float32, device=x.device)
            lo, hi = self.batch_range(x) if x.numel() else (inf, -inf)
            lo, hi = sync.reduce_range(lo.to(torch.float32), hi.to(torch.float32))
            if not bool(torch.isfinite(lo)):
                return
        elif x.numel() == 0:
            return
        else:
            lo, hi = self.batch_range(x)
        if not bool(self.initialized):
            self.lo.copy_(lo)
            self.hi.copy_(hi)
            self.initialized.fill_(True)
        else:
            self.lo.lerp_(lo, self.momentum)
            self.hi.lerp_(hi, self.momentum)

    def scale_zp(self, x: Tensor | None) -> tuple[Tensor, int]:
        return scale_from_range(self.lo, self.hi, self.spec)


class WeightFakeQuant(Quantizer):
    """Symmetric weight quantizer; per-output-channel when ``spec.axis == 0``.

    The scale follows the current weights (max-abs), so fold recomputes exactly
    what the last training step used.
    """

    def __init__(self, spec: QuantSpec, weight: nn.Parameter | None = None) -> None:
        super().__init__(spec)
        self._weight_ref = [weight]  # not a submodule/parameter of this quantizer

    def bind(self, weight: nn.Parameter) -> None:
        self._weight_ref = [weight]

    def scale_zp(self, x: Tensor | None) -> tuple[Tensor, int]:
        w = x if x is not None else self._weight_ref[0]
        w = w.detach()
        if self.spec.axis == 0:
            amax = w.abs().amax(dim=tuple(range(1, w.dim())), keepdim=True)
        else:
            amax = w.abs().max()
        return (amax.to(torch.float32) / self.spec.qmax).clamp_min(EPS), 0


class FixedFakeQuant(Quantizer):
    """Fixed scale: edge coefficients in [0, 1] use ``scale = 1 / qmax``."""

    def __init__(self, spec: QuantSpec, scale: float | None = None) -> None:
        super().__init__(spec)
        self.register_buffer("fixed_scale", torch.tensor(scale if scale is not None else 1.0 / spec.qmax,
                                                         dtype=torch.float32))

    def scale_zp(self, x: Tensor | None) -> tuple[Tensor, int]:
        return self.fixed_scale, 0


class TiedFakeQuant(Quantizer):
    """Shares another quantizer's scale and zero point (e.g. SAGE's mean with its input).

    A tied quantizer of another kind (e.g. a signed prompt basis on an affine
    aggregate's grid) keeps its own zero point of 0.  ``divisor`` divides the
    scale (a prompt on the ``s/255`` grid of an aggregate).
    """

    def __init__(self, spec: QuantSpec, other: Quantizer, divisor: float = 1.0) -> None:
        super().__init__(spec)
        self._other = [other]
        self.divisor = divisor

    def scale_zp(self, x: Tensor | None) -> tuple[Tensor, int]:
        scale, zp = self._other[0].scale_zp(None)
        return scale / self.divisor, (zp if self.spec.kind == "affine" else 0)


def make_off() -> Quantizer:
    """An identity quantizer (FP32 component)."""
    return RangeFakeQuant(QuantSpec(bits=32))
