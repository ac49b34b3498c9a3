"""A2Q (Zhu et al., 2023): learnable step sizes and learnable per-node bit-widths for node features.

Step size (LSQ-style straight-through gradient)::

    y = clamp(round(x / s), qmin, qmax) * s
    dy/dx = 1 inside the range, 0 when clipped
    dy/ds = round(x / s) - x / s inside, qmin or qmax when clipped

Bit-width ``b`` (continuous, rounded with a straight-through estimator) enters
through ``qmax = 2^(b-1) - 1`` (signed) or ``2^b - 1`` (unsigned):
``dy/dqmax = s`` on the entries clipped at the top (``-s`` at the bottom for
signed, where ``qmin = -qmax``), ``dqmax/db = 2^(b-1) ln 2`` (signed).  More
bits only help where values clip, and the memory penalty
``lambda * max(0, M / M_target - 1)`` with ``M = sum_i F b_(node i)`` (bits of
the stored features) pushes them down, so the average lands at the target.

Deployable (inductive) form: instead of one (step, bits) per training node, a
**degree-bucketed table** of ``B`` entries, bucket ``= min(floor(log2(deg + 1)), B - 1)``
by in-degree (self loop excluded), picked at run time; the IR does
``bucket = lut(degree)`` then ``scale/qmin/qmax = lut(bucket)``.  Per-node
scales are only integer-exact where the tensor's only consumer is a matmul
(``matmul_input``: GCN layer inputs), since ``(s_i q_i) W = s_i (q_i W)`` is a
per-row rescale of the int32 accumulator; every other tensor gets a per-tensor
learnable step.

Parametrisation: ``s = s_range * exp(r)`` and ``b = b_spec + delta`` with
``s_range`` the EMA-observed range on the current grid (per bucket:
``amax_b / qmax_b``) and ``r, delta`` initialised at 0, so the trainer's L2
weight decay pulls towards the range-fitted step and the requested bits rather
than towards zero, and the step follows activations that grow during training
instead of clipping them (which would block their gradients).  ``b`` then acts
through both the grid resolution (``s`` shrinks as ``qmax`` grows) and the
clipping bound.  Adam makes the LSQ gradient scale ``1/sqrt(n qmax)``
irrelevant, so it is not applied.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from qgnn_deploy.quant import sync
from qgnn_deploy.quant.fake import (
    EPS,
    QuantContext,
    Quantizer,
    RangeFakeQuant,
    WeightFakeQuant,
    int_round,
    round_ste,
    scale_from_range,
)
from qgnn_deploy.quant.frameworks.base import Framework
from qgnn_deploy.quant.spec import QParams, QuantSpec

DEFAULT_BUCKETS = 8
BUCKET_RULE = "min(floor(log2(in_degree + 1)), num_buckets - 1)"


class _LSQ(torch.autograd.Function):
    """``clamp(round(x / s), lo, hi) * s`` with LSQ gradients for ``s`` and clipping gradients for ``lo``/``hi``.

    ``s``, ``lo`` and ``hi`` broadcast against ``x`` (scalars or ``[N, 1]`` rows);
    ``lo``/``hi`` are float tensors holding integers (the zero point already subtracted).
    """

    @staticmethod
    def forward(ctx, x: Tensor, s: Tensor, lo: Tensor, hi: Tensor, rounding: str) -> Tensor:  # type: ignore[override]
        v = x / s
        q = int_round(v, rounding)
        below, above = q < lo, q > hi
        qc = torch.maximum(torch.minimum(q, hi), lo)
        ctx.save_for_backward(v, qc, below, above, s, lo, hi)
        return qc * s

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        v, qc, below, above, s, lo, hi = ctx.saved_tensors
        clipped = below | above
        gx = torch.where(clipped, torch.zeros_like(g), g)
        gs = (g * torch.where(clipped, qc, qc - v)).sum_to_size(s.shape)
        glo = (g * s * below).sum_to_size(lo.shape) if ctx.needs_input_grad[2] else None
        ghi = (g * s * above).sum_to_size(hi.shape) if ctx.needs_input_grad[3] else None
        return gx, gs, glo, ghi, None


def lsq_fake_quant(x: Tensor, s: Tensor, lo: Tensor, hi: Tensor, rounding: str) -> Tensor:
    return _LSQ.apply(x, s, lo, hi, rounding)


def bucket_of(degree: Tensor, num_buckets: int) -> Tensor:
    """``min(floor(log2(deg + 1)), B - 1)`` computed exactly on integers (bit length of ``deg + 1`` minus one)."""
    d = degree.to(torch.int64).clamp_min(0) + 1
    b = torch.zeros_like(d)
    for k in range(1, num_buckets):
        b += (d >= (1 << k)).to(torch.int64)
    return b


def bucket_table(num_buckets: int) -> list[int]:
    """``bucket_of_degree[d]`` for ``d = 0 .. 2^(B-1) - 1``; larger degrees clip to the last entry (B - 1)."""
    degs = torch.arange(1 << (num_buckets - 1))
    return [int(v) for v in bucket_of(degs, num_buckets)]


class LSQFakeQuant(RangeFakeQuant):
    """Per-tensor learnable step (A2Q for tensors that cannot take per-node scales).

    ``s = s_range * exp(r)``: ``s_range`` follows the EMA min/max range (as plain
    QAT), ``r`` is learned with the LSQ gradient.  A step learned from scratch
    would be fitted to the first batch (random weights, small activations) and
    then clip the growing activations of early training, blocking their
    gradients; tracking the range keeps the learned correction relative.
    """

    def __init__(self, spec: QuantSpec, momentum: float = 0.1) -> None:
        super().__init__(spec, momentum)
        self.log_ratio = nn.Parameter(torch.zeros(()))

    def step_zp(self) -> tuple[Tensor, int]:
        base, zp = scale_from_range(self.lo, self.hi, self.spec)
        return (base * torch.exp(self.log_ratio)).clamp_min(EPS), zp

    def forward(self, x: Tensor, ctx: QuantContext | None = None) -> Tensor:
        if not self.spec.enabled:
            return x
        if self.training:
            self.observe(x.detach())
        s, zp = self.step_zp()
        lo = torch.tensor(self.spec.qmin - zp, dtype=x.dtype, device=x.device)
        hi = torch.tensor(self.spec.qmax - zp, dtype=x.dtype, device=x.device)
        return lsq_fake_quant(x, s.to(x.dtype), lo, hi, self.spec.rounding)

    def scale_zp(self, x: Tensor | None) -> tuple[Tensor, int]:
        s, zp = self.step_zp()
        return s.detach().to(torch.float32), zp


class A2QNodeQuant(Quantizer):
    """Per-node step and bit-width from a degree-bucketed table (see module docstring).

    ``forward(x [N, F], ctx)`` needs ``ctx.degree`` (in-degree per node).  The
    ``affine`` kind (the model's float boundary) has no zero point here: the
    range is signed or unsigned, decided from the first training batch.
    """

    def __init__(self, spec: QuantSpec, num_buckets: int = DEFAULT_BUCKETS, min_bits: int = 2,
                 max_bits: int = 8, momentum: float = 0.1) -> None:
        super().__init__(spec)
        self.num_buckets = int(num_buckets)
        self.min_bits, self.max_bits = int(min_bits), int(max_bits)
        self.momentum = momentum
        self.log_ratio = nn.Parameter(torch.zeros(self.num_buckets))
        self.bit_delta = nn.Parameter(torch.zeros(self.num_buckets))
        self.register_buffer("amax", torch.ones(self.num_buckets))  # EMA of each bucket's max |x|
        self.register_buffer("signed_range", torch.tensor(spec.kind == "signed"))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self.register_buffer("node_count", torch.zeros(self.num_buckets))  # nodes per bucket, last forward
        self.feature_dim = 0

    # -- tables --------------------------------------------------------------------
    def bits_continuous(self) -> Tensor:
        return (self.spec.bits + self.bit_delta).clamp(self.min_bits, self.max_bits)

    def bits_table(self) -> Tensor:
        """Integer bit-widths (float tensor, straight-through rounding)."""
        return round_ste(self.bits_continuous(), "half_up")

    def range_table(self) -> tuple[Tensor, Tensor]:
        b = self.bits_table()
        if bool(self.signed_range):
            hi = torch.pow(2.0, b - 1) - 1
            return -hi, hi
        return torch.zeros_like(b), torch.pow(2.0, b) - 1

    def step_table(self) -> Tensor:
        """``s_b = amax_b / qmax_b * exp(r_b)``: the bucket's range on its grid, times the learned correction."""
        _, hi = self.range_table()
        return (self.amax / hi * torch.exp(self.log_ratio)).clamp_min(EPS)

    def buckets(self, ctx: QuantContext | None, n: int) -> Tensor:
        if ctx is None or ctx.degree is None or ctx.degree.shape[0] != n:
            raise ValueError("A2Q per-node quantizer needs the in-degree of every node (QuantContext.degree)")
        return bucket_of(ctx.degree, self.num_buckets)

    @torch.no_grad()
    def observe_rows(self, x: Tensor, bucket: Tensor) -> None:
        """EMA of each bucket's max |x| (buckets absent from the batch keep theirs; the first batch fills all)."""
        if x.numel() == 0 and not sync.active():
            return
        amax_rows = x.abs().amax(dim=1).to(torch.float32)
        amax = torch.zeros(self.num_buckets, device=x.device).scatter_reduce_(0, bucket, amax_rows, "amax",
                                                                               include_self=True)
        present = torch.bincount(bucket, minlength=self.num_buckets) > 0
        # data-parallel: the all-rank batch statistics, so every rank keeps identical tables
        amax = sync.reduce_max(amax)
        present = sync.reduce_max(present.to(torch.int32)) > 0
        row_max = sync.reduce_max(amax_rows.max() if amax_rows.numel() else amax.new_zeros(()))
        if not bool(present.any()):
            return
        if not bool(self.initialized):
            if self.spec.kind == "affine":
                x_min = sync.reduce_min(x.min() if x.numel() else x.new_zeros(()))
                self.signed_range.fill_(bool(x_min < 0))
            self.amax.copy_(torch.where(present & (amax > 0), amax, row_max.clamp_min(EPS)))
            self.initialized.fill_(True)
        else:
            self.amax.copy_(torch.where(present, self.amax.lerp(amax.clamp_min(EPS), self.momentum), self.amax))

    # -- Quantizer interface -------------------------------------------------------
    def forward(self, x: Tensor, ctx: QuantContext | None = None) -> Tensor:
        if not self.spec.enabled:
            return x
        bucket = self.buckets(ctx, x.shape[0])
        if self.training:
            self.observe_rows(x.detach(), bucket)
        self.feature_dim = int(x.shape[1])
        with torch.no_grad():
            self.node_count.copy_(torch.bincount(bucket, minlength=self.num_buckets).to(self.node_count.dtype))
        lo_t, hi_t = self.range_table()
        s = self.step_table().to(x.dtype)[bucket][:, None]
        return lsq_fake_quant(x, s, lo_t.to(x.dtype)[bucket][:, None], hi_t.to(x.dtype)[bucket][:, None],
                              self.spec.rounding)

    def to_int(self, x: Tensor, ctx: QuantContext | None = None) -> Tensor:  # type: ignore[override]
        """Stored integers, row ``i`` on its bucket's grid (same float32 arithmetic as ``forward``)."""
        bucket = self.buckets(ctx, x.shape[0])
        lo_t, hi_t = self.range_table()
        s = self.step_table().detach().to(torch.float32)[bucket][:, None]
        q = int_round(x.to(torch.float32) / s, self.spec.rounding)
        return torch.maximum(torch.minimum(q, hi_t.detach()[bucket][:, None]), lo_t.detach()[bucket][:, None]).to(
            torch.int64)

    def scale_zp(self, x: Tensor | None) -> tuple[Tensor, int]:
        """The step table ``[B]`` (per-bucket scales; zero point 0)."""
        return self.step_table().detach().to(torch.float32), 0

    def qparams(self) -> QParams:
        lo_t, hi_t = self.range_table()
        signed = bool(self.signed_range)
        return QParams(
            scale=self.step_table().detach().to(torch.float32).cpu().numpy().astype(np.float32),
            zero_point=0,
            qmin=lo_t.detach().cpu().numpy().astype(np.int64),
            qmax=hi_t.detach().cpu().numpy().astype(np.int64),
            bits=self.bits_table().detach().cpu().numpy().astype(np.int64),
            dtype="int8" if signed else "uint8",
            axis=None,
            per_node={"mode": "degree_bucket", "num_buckets": self.num_buckets, "rule": BUCKET_RULE,
                      "degree": "in_degree_without_self_loop", "bucket_of_degree": bucket_table(self.num_buckets)},
        )

    # -- memory --------------------------------------------------------------------
    def memory_bits(self) -> Tensor:
        """Feature memory of the last forward, ``sum_i F b_(node i)`` (differentiable in the bit-widths)."""
        return (self.node_count * self.bits_continuous()).sum() * self.feature_dim

    def mean_bits(self) -> float:
        n = float(self.node_count.sum())
        if n == 0:
            return float(self.spec.bits)
        return float((self.node_count * self.bits_table().detach()).sum() / n)

    def extra_repr(self) -> str:
        return f"bits={self.spec.bits}, kind={self.spec.kind}, buckets={self.num_buckets}"


class A2Q(Framework):
    """Learnable steps everywhere; per-node (degree-bucketed) step and bits on matmul-only node features.

    Options: ``num_buckets`` (8), ``penalty`` (lambda, 1.0), ``target_bits``
    (average bits budget; default the component's requested bits), ``min_bits``
    (2), ``max_bits`` (8), ``per_node`` (True), ``components`` (("input",)).
    """

    name = "a2q"
    # the per-node input factor keeps ROW_BITS of precision (float32 has 24), so it may move codes by two
    parity_tolerance: ClassVar[dict[str, float]] = {"max_code_diff": 2, "mismatched_fraction": 1e-2,
                                                    "mismatched_min": 2}

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.num_buckets = int(options.get("num_buckets", DEFAULT_BUCKETS))
        self.lam = float(options.get("penalty", 1.0))
        self.target_bits = options.get("target_bits")
        self.per_node = bool(options.get("per_node", True))
        self.components = tuple(options.get("components", ("input",)))

    def activation(self, spec: QuantSpec, component: str, node_wise: bool, matmul_input: bool) -> Quantizer:
        if not spec.enabled:
            return RangeFakeQuant(spec)
        if self.per_node and node_wise and matmul_input and component in self.components:
            return A2QNodeQuant(spec, self.num_buckets, int(self.options.get("min_bits", 2)),
                                int(self.options.get("max_bits", 8)), float(self.options.get("momentum", 0.1)))
        return LSQFakeQuant(spec, momentum=float(self.options.get("momentum", 0.1)))

    def weight(self, spec: QuantSpec) -> Quantizer:
        return WeightFakeQuant(spec)

    def node_quantizers(self, model: nn.Module) -> list[A2QNodeQuant]:
        return [m for m in model.modules() if isinstance(m, A2QNodeQuant) and m.spec.enabled]

    def penalty(self, model: nn.Module) -> Tensor | float:
        """``lambda * max(0, M / M_target - 1)``, ``M_target = sum_q N_q F_q target_bits``."""
        qs = [q for q in self.node_quantizers(model) if q.feature_dim and float(q.node_count.sum()) > 0]
        if not qs or self.lam == 0:
            return 0.0
        mem = sum(q.memory_bits() for q in qs)
        target = sum(float(q.node_count.sum()) * q.feature_dim *
                     float(self.target_bits if self.target_bits is not None else q.spec.bits) for q in qs)
        return self.lam * torch.relu(mem / target - 1.0)

    def average_bits(self, model: nn.Module) -> float:
        """Node-weighted average bit-width of the per-node quantizers (for reports)."""
        qs = self.node_quantizers(model)
        if not qs:
            return math.nan
        return float(np.mean([q.mean_bits() for q in qs]))
