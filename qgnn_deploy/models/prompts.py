"""Prompts that correct quantization error: LoRAP (after aggregation) and GPF / GPF-plus (on inputs).

LoRAP, for aggregated node features ``s_i`` (shape [N, d])::

    alpha_i = softmax(s_i W_a)        W_a: d x k        (k prompts)
    P       = U V                     U: k x r, V: r x d (rank r)
    s_i*    = s_i + alpha_i P

The LoRA-style variant uses ``s_i* = s_i + (s_i A) B`` (A: d x r, B: r x d).

Everything is built so the integer graph can reproduce it exactly: the scores
are quantized to int8, the softmax is the integer one deployed (an exp lookup
table over the int8 score range, normalised to ``alpha in [0, 255] / 255``;
float softmax gradients via a straight-through estimator), and ``P`` sits on the
aggregate's grid so ``255 * s + alpha_q P_q`` is one int32 accumulator.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qgnn_deploy.quant.fake import Quantizer, TiedFakeQuant, round_ste
from qgnn_deploy.quant.spec import QuantSpec

ALPHA_DEN = 255  # alpha is stored as uint8 on the 1/255 grid
EXP_FRAC_BITS = 15  # exp table entries are round(2^15 * exp(d * s_z))

ActFactory = Callable[[QuantSpec, str], Quantizer]
WeightFactory = Callable[[QuantSpec], Quantizer]


def _bind(q: Quantizer, weight: nn.Parameter) -> None:
    """Give a weight quantizer its parameter so ``qparams()`` works without a forward."""
    if hasattr(q, "bind"):
        q.bind(weight)


def exp_table(score_scale: float, qmax: int) -> Tensor:
    """int64 table T[d + 2 qmax] = round(2^15 exp(d * s_z)) for d in [-2 qmax, 0]."""
    d = torch.arange(-2 * qmax, 1, dtype=torch.float64)
    return torch.floor(2.0**EXP_FRAC_BITS * torch.exp(d * float(score_scale)) + 0.5).to(torch.int64)


def integer_softmax(z_int: Tensor, score_scale: float, qmax: int) -> Tensor:
    """The deployed softmax: int8 scores -> alpha in [0, 255] (int64), exactly as the IR computes it."""
    d = z_int - z_int.max(dim=-1, keepdim=True).values
    e = exp_table(score_scale, qmax).to(z_int.device)[d + 2 * qmax]
    tot = e.sum(dim=-1, keepdim=True)
    return torch.div(2 * ALPHA_DEN * e + tot, 2 * tot, rounding_mode="floor")


class PromptMixer(nn.Module):
    """``alpha = softmax(quant(s) W_a)`` over k prompts, integer-exact in forward."""

    def __init__(self, dim: int, k: int, act: ActFactory, weight: WeightFactory, bits: int = 8) -> None:
        super().__init__()
        self.score = nn.Linear(dim, k, bias=False)
        self.q_weight = weight(QuantSpec(bits=bits, kind="signed"))
        _bind(self.q_weight, self.score.weight)
        self.q_score = act(QuantSpec(bits=bits, kind="signed"), "score")

    def forward(self, s: Tensor) -> Tensor:
        w = self.q_weight(self.score.weight)
        z = self.q_score(s @ w.t())
        soft = F.softmax(z, dim=-1)
        if not self.q_score.spec.enabled:
            return soft
        scale = float(self.q_score.scale_zp(None)[0])
        z_int = torch.floor(z.detach() / scale + 0.5).to(torch.int64)
        alpha = integer_softmax(z_int, scale, self.q_score.spec.qmax).to(s.dtype) / ALPHA_DEN
        return soft + (alpha - soft).detach()


class LoRAP(nn.Module):
    """Input-dependent low-rank prompt added to each aggregated feature (see module docstring)."""

    def __init__(self, dim: int, k: int, rank: int, act: ActFactory, weight: WeightFactory,
                 variant: str = "softmax", bits: int = 8, zero_init: bool = False) -> None:
        super().__init__()
        if variant not in ("softmax", "lora"):
            raise ValueError(f"unknown LoRAP variant {variant!r}")
        self.variant, self.k, self.rank = variant, k, rank
        if variant == "softmax":
            self.mixer = PromptMixer(dim, k, act, weight, bits)
            self.U = nn.Parameter(torch.randn(k, rank) * 0.1)
            self.V = nn.Parameter(torch.zeros(rank, dim) if zero_init else torch.randn(rank, dim) * 0.01)
        else:
            self.A = nn.Parameter(torch.randn(dim, rank) * (1.0 / dim**0.5))
            self.B = nn.Parameter(torch.zeros(rank, dim) if zero_init else torch.randn(rank, dim) * 0.01)
            self.q_a = weight(QuantSpec(bits=bits, kind="signed"))
            self.q_b = weight(QuantSpec(bits=bits, kind="signed"))
            _bind(self.q_a, self.A)
            _bind(self.q_b, self.B)
            self.q_mid = act(QuantSpec(bits=bits, kind="signed"), "prompt_mid")
        self._agg_q: list[Quantizer | None] = [None]
        self.q_basis: Quantizer | None = None

    def bind(self, aggregate_quantizer: Quantizer) -> None:
        """Tie the prompt basis to the aggregate's scale (called once by the layer)."""
        self._agg_q = [aggregate_quantizer]
        spec = aggregate_quantizer.spec
        self.q_basis = TiedFakeQuant(QuantSpec(bits=spec.bits if spec.enabled else 32, kind="signed"),
                                     aggregate_quantizer)

    def basis(self) -> Tensor:
        return self.U @ self.V

    def forward(self, s: Tensor) -> Tensor:
        agg_q = self._agg_q[0]
        quantized = agg_q is not None and agg_q.spec.enabled
        if self.variant == "softmax":
            alpha = self.mixer(s)
            p_basis = self.q_basis(self.basis()) if quantized else self.basis()
            return s + alpha @ p_basis
        t = self.q_mid(s @ self.q_a(self.A))
        p = t @ self.q_b(self.B)
        if quantized:
            grid = agg_q.scale_zp(None)[0] / ALPHA_DEN
            p = round_ste(p / grid, "half_up") * grid
        return s + p


class GPFPrompt(nn.Module):
    """Pre-aggregation prompts on the (quantized) input features.

    ``gpf``: one learnable vector ``p`` added to every node, on the input grid;
    it folds into the first layer's bias.  ``gpf-plus``: ``x_i + alpha_i P``
    with ``alpha_i = softmax(x_i a)`` over k basis vectors, re-quantized.
    """

    def __init__(self, dim: int, mode: str, k: int, act: ActFactory, weight: WeightFactory, bits: int = 8,
                 zero_init: bool = False) -> None:
        super().__init__()
        if mode not in ("gpf", "gpf-plus"):
            raise ValueError(f"unknown GPF mode {mode!r}")
        self.mode, self.k = mode, k
        init = torch.zeros if zero_init else (lambda *s: torch.randn(*s) * 0.01)
        if mode == "gpf":
            self.p = nn.Parameter(init(1, dim))
        else:
            self.mixer = PromptMixer(dim, k, act, weight, bits)
            self.P = nn.Parameter(init(k, dim))
        self._in_q: list[Quantizer | None] = [None]
        self.q_basis: Quantizer | None = None
        self.q_out: Quantizer | None = None
        self._act = act
        self._bits = bits

    def bind(self, input_quantizer: Quantizer) -> None:
        self._in_q = [input_quantizer]
        spec = input_quantizer.spec
        self.q_basis = TiedFakeQuant(QuantSpec(bits=8 if spec.enabled else 32, kind="signed"), input_quantizer)
        if self.mode == "gpf-plus":
            self.q_out = self._act(QuantSpec(bits=spec.bits, kind="affine") if spec.enabled else QuantSpec(bits=32),
                                   "prompted_input")

    def forward(self, x: Tensor) -> Tensor:
        if self.mode == "gpf":
            return x + self.q_basis(self.p)
        alpha = self.mixer(x)
        return self.q_out(x + alpha @ self.q_basis(self.P))
