"""MixQ: a learnable bit-width per component among {2, 4, 8}, searched by softmax relaxation, then fixed.

Search phase (first ``search_fraction`` of the epochs): every searchable
quantizer holds logits ``theta`` over the candidate bit-widths ``b_k`` (those
``<=`` the requested bits) and outputs the relaxed mix::

    y = sum_k pi_k FQ_{b_k}(x),      pi = softmax(theta)

(all candidates share one observed range, so they differ only in grid
resolution).  The loss adds a bit-memory penalty, the expected bits times the
tensor size, normalised by the memory at the requested bits::

    penalty = lambda * sum_q n_q E_pi_q[b] / sum_q n_q b_req_q

At the end of the search the arg-max bits of each (layer, component) are
written into ``model.config.layer_bits``, the model's quantizers are rebuilt as
plain per-tensor ones (range statistics and weights carried over) and the
trainer gets a fresh optimizer (``reset_optimizer``); the rest of training
fine-tunes at the fixed bits.  Model selection is disabled during the search
(``selectable``), so a checkpoint always describes the fixed, plain model.
"""

from __future__ import annotations

import copy
import math
import re
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qgnn_deploy.quant.fake import (
    QuantContext,
    Quantizer,
    RangeFakeQuant,
    WeightFakeQuant,
    fake_quant,
    scale_from_range,
)
from qgnn_deploy.quant.frameworks.base import Framework
from qgnn_deploy.quant.spec import QuantSpec

CANDIDATES = (2, 4, 8)
SEARCHED = ("input", "weight", "message", "aggregate", "hidden")
_LAYER_PATHS = {"q_weight": "weight", "q_w1": "weight", "q_w2": "weight", "q_message": "message",
                "q_aggregate": "aggregate", "q_prompted": "aggregate", "q_hidden": "hidden"}


def _candidates(spec: QuantSpec, candidates: tuple[int, ...]) -> tuple[int, ...]:
    c = tuple(sorted(b for b in candidates if b <= spec.bits))
    return c or (spec.bits,)


class _Relaxed:
    """Shared logits / probability / expected-bits logic of the two searchable quantizers."""

    candidates: tuple[int, ...]
    logits: nn.Parameter
    numel: int

    def _init_logits(self, init_bias: float) -> None:
        init = torch.zeros(len(self.candidates))
        init[-1] = init_bias  # start near the requested (highest) bit-width
        self.logits = nn.Parameter(init)
        self.numel = 0

    def probs(self) -> Tensor:
        return F.softmax(self.logits, dim=0)

    def expected_bits(self) -> Tensor:
        return (self.probs() * torch.tensor(self.candidates, dtype=self.logits.dtype, device=self.logits.device)).sum()

    def chosen_bits(self) -> int:
        """Arg-max candidate (ties go to the higher bit-width)."""
        p = self.probs().detach()
        best = max(range(len(self.candidates)), key=lambda k: (float(p[k]), self.candidates[k]))
        return self.candidates[best]

    def cand_spec(self, bits: int) -> QuantSpec:
        spec: QuantSpec = self.spec  # type: ignore[attr-defined]
        return QuantSpec(bits=bits, kind=spec.kind, axis=spec.axis, rounding=spec.rounding)


class MixQActQuant(_Relaxed, RangeFakeQuant):
    """Activation quantizer mixing candidate bit-widths over one EMA min/max range."""

    def __init__(self, spec: QuantSpec, candidates: tuple[int, ...], momentum: float = 0.1,
                 init_bias: float = 1.0) -> None:
        RangeFakeQuant.__init__(self, spec, momentum)
        self.candidates = _candidates(spec, candidates)
        self._init_logits(init_bias)

    def forward(self, x: Tensor, ctx: QuantContext | None = None) -> Tensor:
        if not self.spec.enabled:
            return x
        if self.training:
            self.observe(x.detach())
        self.numel = x.numel()
        pi = self.probs().to(x.dtype)
        y = None
        for k, b in enumerate(self.candidates):
            cs = self.cand_spec(b)
            scale, zp = scale_from_range(self.lo, self.hi, cs)
            yk = fake_quant(x, scale, zp, cs.qmin, cs.qmax, cs.rounding) * pi[k]
            y = yk if y is None else y + yk
        if self.training and ctx is not None and ctx.keep_float is not None and x.dim() == 2 \
                and ctx.keep_float.shape[0] == x.shape[0]:
            y = torch.where(ctx.keep_float[:, None], x, y)
        return y

    def scale_zp(self, x: Tensor | None) -> tuple[Tensor, int]:
        """The current arg-max candidate's grid (what tied quantizers and bias grids see during search)."""
        return scale_from_range(self.lo, self.hi, self.cand_spec(self.chosen_bits()))


class MixQWeightQuant(_Relaxed, WeightFakeQuant):
    """Per-channel weight quantizer mixing candidate bit-widths (max-abs scale per candidate)."""

    def __init__(self, spec: QuantSpec, candidates: tuple[int, ...], init_bias: float = 1.0) -> None:
        WeightFakeQuant.__init__(self, spec)
        self.candidates = _candidates(spec, candidates)
        self._init_logits(init_bias)

    def _amax(self, w: Tensor) -> Tensor:
        w = w.detach()
        if self.spec.axis == 0:
            return w.abs().amax(dim=tuple(range(1, w.dim())), keepdim=True).to(torch.float32)
        return w.abs().max().to(torch.float32)

    def forward(self, x: Tensor, ctx: QuantContext | None = None) -> Tensor:
        if not self.spec.enabled:
            return x
        self.numel = x.numel()
        pi = self.probs().to(x.dtype)
        amax = self._amax(x)
        y = None
        for k, b in enumerate(self.candidates):
            cs = self.cand_spec(b)
            scale = (amax / cs.qmax).clamp_min(1e-8)
            yk = fake_quant(x, scale, 0, cs.qmin, cs.qmax, cs.rounding) * pi[k]
            y = yk if y is None else y + yk
        return y

    def scale_zp(self, x: Tensor | None) -> tuple[Tensor, int]:
        w = x if x is not None else self._weight_ref[0]
        return (self._amax(w) / self.cand_spec(self.chosen_bits()).qmax).clamp_min(1e-8), 0


def component_key(path: str, num_layers: int) -> tuple[int, str] | None:
    """Map a quantizer's module path to the (layer, component) its bits are configured by."""
    m = re.fullmatch(r"q_inputs\.(\d+)", path)
    if m:
        return int(m.group(1)), "input"
    m = re.fullmatch(r"layers\.(\d+)\.(q_\w+)", path)
    if m and m.group(2) in _LAYER_PATHS:
        return int(m.group(1)), _LAYER_PATHS[m.group(2)]
    if path == "q_head_in":
        return num_layers - 1, "input"
    if path == "q_head_w":
        return num_layers - 1, "weight"
    return None


class MixQ(Framework):
    """Options: ``candidates`` ([2, 4, 8]), ``penalty`` (lambda, 0.1), ``search_fraction`` (0.4),
    ``init_bias`` (initial logit of the requested bit-width, 1.0), ``momentum`` (0.1);
    ``fixed`` is set when the bits have been chosen (plain quantizers from then on)."""

    name = "mixq"

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.candidates = tuple(int(b) for b in options.get("candidates", CANDIDATES))
        self.lam = float(options.get("penalty", 0.1))
        self.search_fraction = float(options.get("search_fraction", 0.4))
        self.init_bias = float(options.get("init_bias", 1.0))
        self.fixed = bool(options.get("fixed", False))
        self.reset_optimizer = False

    # -- quantizers ------------------------------------------------------------------
    def activation(self, spec: QuantSpec, component: str, node_wise: bool, matmul_input: bool) -> Quantizer:
        momentum = float(self.options.get("momentum", 0.1))
        if self.fixed or not spec.enabled or component not in SEARCHED:
            return RangeFakeQuant(spec, momentum=momentum)
        return MixQActQuant(spec, self.candidates, momentum, self.init_bias)

    def weight(self, spec: QuantSpec) -> Quantizer:
        # layer weights are per-channel (axis 0); prompt weights (axis None) keep their bits
        if self.fixed or not spec.enabled or spec.axis != 0:
            return WeightFakeQuant(spec)
        return MixQWeightQuant(spec, self.candidates, self.init_bias)

    @staticmethod
    def searchable(model: nn.Module) -> dict[str, _Relaxed]:
        return {n: m for n, m in model.named_modules() if isinstance(m, _Relaxed) and m.spec.enabled}

    # -- loss / schedule ---------------------------------------------------------------
    def penalty(self, model: nn.Module) -> Tensor | float:
        qs = [q for q in self.searchable(model).values() if q.numel]
        if self.fixed or not qs or self.lam == 0:
            return 0.0
        num = sum(q.numel * q.expected_bits() for q in qs)
        den = float(sum(q.numel * q.spec.bits for q in qs))  # type: ignore[attr-defined]
        return self.lam * num / den

    def search_epochs(self, epochs: int) -> int:
        return max(1, math.ceil(self.search_fraction * epochs))

    def selectable(self, epoch: int, epochs: int) -> bool:
        return self.fixed

    def on_epoch_end(self, model: nn.Module, epoch: int, epochs: int) -> None:
        if not self.fixed and epoch + 1 >= self.search_epochs(epochs):
            self.fix(model)

    def choose(self, model: nn.Module) -> list[dict[str, int]]:
        """Arg-max bits per (layer, component); quantizers sharing a component average their probabilities."""
        cfg = model.config  # type: ignore[attr-defined]
        probs: dict[tuple[int, str], list[Tensor]] = {}
        cands: dict[tuple[int, str], tuple[int, ...]] = {}
        for path, q in self.searchable(model).items():
            key = component_key(path, cfg.num_layers)
            if key is None:
                continue
            probs.setdefault(key, []).append(q.probs().detach())
            cands[key] = q.candidates
        layer_bits: list[dict[str, int]] = [dict(cfg.layer_bits[i]) if cfg.layer_bits and i < len(cfg.layer_bits)
                                            else {} for i in range(cfg.num_layers)]
        for key in sorted(probs):
            p = torch.stack(probs[key]).mean(0)
            c = cands[key]
            best = max(range(len(c)), key=lambda k: (float(p[k]), c[k]))
            layer_bits[key[0]][key[1]] = int(c[best])
        return layer_bits

    @torch.no_grad()
    def fix(self, model: nn.Module) -> None:
        """Write the arg-max bits into the config and rebuild the model in place with plain quantizers.

        The model is rebuilt by its own class from its own config class (``type(model)(config)``), so the quant
        layer needs nothing from the model layer (``tests/test_ops_registry.py`` checks the direction).
        """
        cfg = model.config  # type: ignore[attr-defined]
        new_cfg = type(cfg).from_dict(copy.deepcopy(cfg.to_dict()))
        new_cfg.layer_bits = self.choose(model)
        self.fixed = True
        self.options["fixed"] = True
        new_cfg.framework_options = dict(self.options)
        with torch.random.fork_rng():
            fresh = type(model)(new_cfg)
        fresh.to(next(model.parameters()).device)  # the rebuilt quantizers live where the model does
        old_state = model.state_dict()
        new_state = fresh.state_dict()
        carried = {k: v for k, v in old_state.items() if k in new_state and new_state[k].shape == v.shape}
        fresh.load_state_dict(carried, strict=False)
        fresh.train(model.training)
        model._modules.clear()
        model._modules.update(fresh._modules)
        model.config = new_cfg
        self.reset_optimizer = True
