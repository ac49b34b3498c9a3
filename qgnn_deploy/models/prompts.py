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
aggregate's grid divided by a power of two ``2^k`` (:class:`PromptBasisQuant`), so
``255 * 2^k * s + alpha_q P_q`` is one int32 accumulator on the grid ``s_a / (255 * 2^k)``.

Two per-prompt settings live in the state dict, so a checkpoint says which
integer program it was trained as: ``q_basis.max_shift`` (the largest ``k``;
``0`` = the basis on the aggregate grid itself) and ``mixer.exp_one`` (the exp
table's value at 0: ``255`` = a uint8 table, ``2^15`` = uint16).  Checkpoints
written before these existed load as ``k = 0`` and ``2^15``, the program they
were trained as.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qgnn_deploy.quant.fake import Quantizer, TiedFakeQuant, round_ste
from qgnn_deploy.quant.spec import QuantSpec

ALPHA_DEN = 255  # alpha is stored as uint8 on the 1/255 grid
EXP_FRAC_BITS = 15  # legacy exp tables: entries round(2^15 * exp(d * s_z)), stored as uint16
EXP_ONE_LEGACY = 2**EXP_FRAC_BITS
# LoRAP's exp table maps exp(0) to 255, so it is stored as uint8 (half the bytes; at INT4 the two tables are most
# of the prompt's size).  alpha keeps its 1/255 resolution: an entry's rounding error (<= 0.5 of 255 at the row
# maximum) moves alpha_i = 255 e_i / sum(e) by at most ~0.5 code, and entries that round to 0 (exp < 1/510) would
# give alpha_i < 0.5 anyway.
EXP_ONE = 255
# Largest k of the basis grid s_a / 2^k.  Measured on the Cora INT4 checkpoints of the evaluation (QAT, A2Q, MixQ):
# the learned |P| stays below 0.32 aggregate steps (median 0.02-0.2), so on the aggregate grid (k = 0) every entry
# rounds to 0; k = 4 (steps of 1/16) keeps them (2-5 codes for the typical entry).  k is chosen per layer from the
# current basis, max-abs style, so a basis that needs a wider range (Degree-Quant's reach ~1.8 steps) gets a smaller
# k instead of being clipped; 2^4 keeps 255 * 2^k * |a| tiny next to int32 even at INT8 (255 * 16 * 127 ~ 5e5).
BASIS_MAX_SHIFT = 4

ActFactory = Callable[[QuantSpec, str], Quantizer]
WeightFactory = Callable[[QuantSpec], Quantizer]


def _bind(q: Quantizer, weight: nn.Parameter) -> None:
    """Give a weight quantizer its parameter so ``qparams()`` works without a forward."""
    if hasattr(q, "bind"):
        q.bind(weight)


def exp_table(score_scale: float, qmax: int, one: int = EXP_ONE_LEGACY) -> Tensor:
    """int64 table T[d + 2 qmax] = round(one * exp(d * s_z)) for d in [-2 qmax, 0]."""
    d = torch.arange(-2 * qmax, 1, dtype=torch.float64)
    return torch.floor(float(one) * torch.exp(d * float(score_scale)) + 0.5).to(torch.int64)


def integer_softmax(z_int: Tensor, score_scale: float, qmax: int, one: int = EXP_ONE_LEGACY) -> Tensor:
    """The deployed softmax: int8 scores -> alpha in [0, 255] (int64), exactly as the IR computes it."""
    d = z_int - z_int.max(dim=-1, keepdim=True).values
    e = exp_table(score_scale, qmax, one).to(z_int.device)[d + 2 * qmax]
    tot = e.sum(dim=-1, keepdim=True)
    return torch.div(2 * ALPHA_DEN * e + tot, 2 * tot, rounding_mode="floor")


def _default_missing(state_dict: dict, present: str, key: str, value: int) -> None:
    """Fill in a setting that checkpoints older than it lack (``present`` marks one written by such a module)."""
    if present in state_dict and key not in state_dict:
        state_dict[key] = torch.tensor(value, dtype=torch.int64)


class PromptMixer(nn.Module):
    """``alpha = softmax(quant(s) W_a)`` over k prompts, integer-exact in forward.

    ``exp_one`` (a buffer, so the checkpoint records it) is the exp table's value at 0.
    """

    def __init__(self, dim: int, k: int, act: ActFactory, weight: WeightFactory, bits: int = 8,
                 exp_one: int = EXP_ONE_LEGACY) -> None:
        super().__init__()
        self.score = nn.Linear(dim, k, bias=False)
        self.q_weight = weight(QuantSpec(bits=bits, kind="signed"))
        _bind(self.q_weight, self.score.weight)
        self.q_score = act(QuantSpec(bits=bits, kind="signed"), "score")
        self.register_buffer("exp_one", torch.tensor(int(exp_one), dtype=torch.int64))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # type: ignore[override]
        _default_missing(state_dict, f"{prefix}score.weight", f"{prefix}exp_one", EXP_ONE_LEGACY)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, s: Tensor) -> Tensor:
        w = self.q_weight(self.score.weight)
        z = self.q_score(s @ w.t())
        soft = F.softmax(z, dim=-1)
        if not self.q_score.spec.enabled:
            return soft
        scale = float(self.q_score.scale_zp(None)[0])
        z_int = torch.floor(z.detach() / scale + 0.5).to(torch.int64)
        alpha = integer_softmax(z_int, scale, self.q_score.spec.qmax, int(self.exp_one)).to(s.dtype) / ALPHA_DEN
        return soft + (alpha - soft).detach()


class PromptBasisQuant(TiedFakeQuant):
    """The softmax LoRAP basis on the aggregate's grid divided by ``2^k``, ``0 <= k <= max_shift``.

    Why a power of two: ``alpha_q P_q`` then lands on ``s_a / (255 * 2^k)`` and the aggregate joins it with one
    integer multiply by ``255 * 2^k`` (no rescaling, exact).  Why finer at all: on the aggregate grid (``k = 0``) a
    4-bit basis can only hold corrections of at least half an aggregate step, and the ones LoRAP learns are smaller,
    so they all rounded to 0.  ``k`` is the largest shift whose range still holds the current basis (max-abs, as
    weight scales), recomputed from the weights so fold sees exactly what the last forward used.
    """

    def __init__(self, spec: QuantSpec, aggregate_quantizer: Quantizer, basis: Callable[[], Tensor],
                 max_shift: int) -> None:
        super().__init__(spec, aggregate_quantizer)
        self._basis = [basis]
        self.register_buffer("max_shift", torch.tensor(int(max_shift), dtype=torch.int64))

    def shift(self, basis: Tensor | None = None) -> int:
        """The ``k`` in use: largest ``k <= max_shift`` with ``max|P| <= (qmax + 1/2) * s_a / 2^k``."""
        k = int(self.max_shift)
        if k == 0 or not self.spec.enabled:
            return 0
        p = (basis if basis is not None else self._basis[0]()).detach()
        amax = p.abs().max().to(torch.float32)
        step = self._other[0].scale_zp(None)[0].detach().to(torch.float32)
        while k > 0 and bool(amax > (self.spec.qmax + 0.5) * step / 2**k):
            k -= 1
        return k

    def scale_zp(self, x: Tensor | None) -> tuple[Tensor, int]:
        scale, _ = self._other[0].scale_zp(None)
        return scale / 2 ** self.shift(x), 0


class LoRAP(nn.Module):
    """Input-dependent low-rank prompt added to each aggregated feature (see module docstring)."""

    def __init__(self, dim: int, k: int, rank: int, act: ActFactory, weight: WeightFactory,
                 variant: str = "softmax", bits: int = 8, zero_init: bool = False,
                 basis_max_shift: int = BASIS_MAX_SHIFT, exp_one: int = EXP_ONE) -> None:
        super().__init__()
        if variant not in ("softmax", "lora"):
            raise ValueError(f"unknown LoRAP variant {variant!r}")
        if not 0 <= basis_max_shift <= 8:
            raise ValueError(f"LoRAP basis_max_shift must be in [0, 8], got {basis_max_shift}")
        self.variant, self.k, self.rank = variant, k, rank
        self.basis_max_shift = int(basis_max_shift)
        if variant == "softmax":
            self.mixer = PromptMixer(dim, k, act, weight, bits, exp_one=exp_one)
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
        basis_spec = QuantSpec(bits=spec.bits if spec.enabled else 32, kind="signed")
        if self.variant == "softmax":
            self.q_basis = PromptBasisQuant(basis_spec, aggregate_quantizer, self.basis, self.basis_max_shift)
        else:
            self.q_basis = TiedFakeQuant(basis_spec, aggregate_quantizer)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # type: ignore[override]
        # a softmax LoRAP saved before the finer basis grid existed was trained on the aggregate grid (k = 0)
        _default_missing(state_dict, f"{prefix}U", f"{prefix}q_basis.max_shift", 0)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def basis_shift(self) -> int:
        """The ``k`` of the basis grid ``s_a / 2^k`` in use (0 when unquantized or the LoRA variant)."""
        if isinstance(self.q_basis, PromptBasisQuant):
            return self.q_basis.shift()
        return 0

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
