"""The LPGNAS search space, its discretisation and its mapping onto deployable ``ModelConfig`` s.

A *choice* is one categorical decision with named candidates.  Per layer ``l``:
``agg`` (sum / mean / max), ``weighting`` (gcn / const / attn), ``act`` and ``width``
(hidden layers only) and one bit-width per quantized component
(``bits.input``, ``bits.weight``, ``bits.message``, ``bits.aggregate``).

``deployable`` spaces restrict the candidates to what :class:`~qgnn_deploy.models.net.QGNN`
builds: one global ``arch`` ((sum, gcn) -> ``gcn``, (mean, const) -> ``sage``, (sum, const) -> ``gin``),
ReLU, and one global ``width`` (``hidden``); per-layer bits.  Discretising a full space projects onto that family (see
:func:`to_model_config`) and records what was projected.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from qgnn_deploy.models.net import ModelConfig, default_bits

AGGREGATIONS = ("sum", "mean", "max")
WEIGHTINGS = ("gcn", "const", "attn")
ACTIVATIONS = ("relu", "relu6", "identity")
SEARCHED_COMPONENTS = ("input", "weight", "message", "aggregate")
DEPLOYABLE_PAIRS = {("sum", "gcn"): "gcn", ("mean", "const"): "sage", ("sum", "const"): "gin", ("sum", "attn"): "gat"}
DEFAULT_ARCHS = ("gcn", "sage", "gin")  # the deployable space's default candidates; add "gat" for attention
ARCH_PAIRS = {v: k for k, v in DEPLOYABLE_PAIRS.items()}


@dataclass
class SearchSpace:
    """Candidate lists; ``space='deployable'`` keeps only what ``QGNN`` can express."""

    num_layers: int = 2
    widths: tuple[int, ...] = (16, 32, 64)
    bits: tuple[int, ...] = (2, 4, 8)
    allow_fp32: bool = False
    space: str = "deployable"  # "deployable" | "full"
    aggregations: tuple[str, ...] = field(default=AGGREGATIONS)
    weightings: tuple[str, ...] = field(default=WEIGHTINGS)
    activations: tuple[str, ...] = field(default=ACTIVATIONS)
    # deployable space: the ``arch`` candidates (any of DEPLOYABLE_PAIRS' values; "gat" = single-head attention)
    archs: tuple[str, ...] = field(default=DEFAULT_ARCHS)

    def __post_init__(self) -> None:
        if self.space not in ("deployable", "full"):
            raise ValueError(f"space must be 'deployable' or 'full', got {self.space!r}")
        if self.num_layers < 1:
            raise ValueError("num_layers must be >= 1")
        for b in self.bits:
            if b not in (2, 3, 4, 5, 6, 7, 8):
                raise ValueError(f"searched bit-widths must be 2..8 (FP32 via allow_fp32), got {b}")
        unknown = [a for a in self.archs if a not in DEPLOYABLE_PAIRS.values()]
        if unknown or not self.archs:
            raise ValueError(f"deployable archs must be among {', '.join(DEPLOYABLE_PAIRS.values())}, got "
                             f"{', '.join(self.archs) or 'none'}")
        self.archs = tuple(self.archs)
        if self.space == "deployable":
            self.activations = ("relu",)

    @property
    def bit_candidates(self) -> tuple[int, ...]:
        return tuple(self.bits) + ((32,) if self.allow_fp32 else ())

    @property
    def arch_candidates(self) -> tuple[str, ...]:
        """Deployable space: one joint (aggregation, weighting) choice per layer named by its ``QGNN`` arch."""
        return tuple(self.archs)

    def choices(self) -> dict[str, tuple[Any, ...]]:
        """Ordered ``name -> candidates``; per-layer names are ``l{i}.{what}``.

        The deployable space has one global ``arch`` and one global ``width`` (``ModelConfig`` has one
        ``arch`` and one ``hidden``), so what is searched is exactly what is deployed.
        """
        out: dict[str, tuple[Any, ...]] = {}
        if self.space == "deployable":
            out["arch"] = self.arch_candidates
            if self.num_layers > 1:
                out["width"] = tuple(self.widths)
        for i in range(self.num_layers):
            hidden_layer = i < self.num_layers - 1
            if self.space == "full":
                out[f"l{i}.agg"] = tuple(self.aggregations)
                out[f"l{i}.weighting"] = tuple(self.weightings)
                if hidden_layer and len(self.activations) > 1:
                    out[f"l{i}.act"] = tuple(self.activations)
                if hidden_layer:
                    out[f"l{i}.width"] = tuple(self.widths)
            for c in SEARCHED_COMPONENTS:
                out[f"l{i}.bits.{c}"] = self.bit_candidates
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def layer_arch(choice: dict[str, Any], i: int) -> tuple[str, str]:
    """(aggregation, weighting) of layer ``i`` in either space."""
    if "arch" in choice:
        return ARCH_PAIRS[choice["arch"]]
    return choice[f"l{i}.agg"], choice[f"l{i}.weighting"]


@dataclass
class Discretised:
    """Arg-max choice, the deployable config it maps to, and what had to be projected."""

    choice: dict[str, Any]
    config: ModelConfig
    projected: list[str]

    def table(self) -> str:
        """Human-readable two-column table of the chosen architecture."""
        rows = [(k, str(v)) for k, v in self.choice.items()]
        rows += [("-> arch", self.config.arch), ("-> hidden", str(self.config.hidden))]
        rows += [(f"-> layer_bits[{i}]", ", ".join(f"{k}={v}" for k, v in lb.items()))
                 for i, lb in enumerate(self.config.layer_bits or [])]
        rows += [("projected", p) for p in self.projected]
        w = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{w}}  {v}" for k, v in rows)


def to_model_config(choice: dict[str, Any], space: SearchSpace, in_dim: int, out_dim: int, *,
                    log_probs: dict[str, list[float]] | None = None, dropout: float = 0.5,
                    framework: str = "qat", lorap: dict[str, Any] | None = None) -> Discretised:
    """Map a discrete choice onto ``ModelConfig`` (one arch and one hidden width for all layers).

    Deployable space: the global ``arch`` / ``width`` choices, nothing projected.  Full space: the
    deployable arch maximising ``sum_l log p_l(agg) + log p_l(weighting)`` (the per-layer arg-max
    whenever the layers agree), the first hidden layer's width, ReLU everywhere; anything that differs
    from the per-layer choice is listed in ``projected``.
    """
    projected: list[str] = []
    n = space.num_layers
    archs = space.arch_candidates if space.space == "deployable" else tuple(DEPLOYABLE_PAIRS.values())
    if log_probs is not None:
        score = {a: 0.0 for a in archs}
        for i in range(n):
            for a in archs:
                if "arch" in log_probs:
                    score[a] += log_probs["arch"][space.arch_candidates.index(a)]
                else:
                    agg, wt = ARCH_PAIRS[a]
                    score[a] += (log_probs[f"l{i}.agg"][space.aggregations.index(agg)]
                                 + log_probs[f"l{i}.weighting"][space.weightings.index(wt)])
        arch = max(archs, key=lambda a: (score[a], -archs.index(a)))
    else:
        arch = DEPLOYABLE_PAIRS.get(layer_arch(choice, 0), "gcn")
    for i in range(n):
        pair = layer_arch(choice, i)
        if DEPLOYABLE_PAIRS.get(pair) != arch:
            projected.append(f"layer {i}: {pair[0]}/{pair[1]} -> {arch}")
        act = choice.get(f"l{i}.act", "relu")
        if act != "relu" and i < n - 1:
            projected.append(f"layer {i}: activation {act} -> relu")
    widths = [choice["width"]] * (n - 1) if "width" in choice else [choice[f"l{i}.width"] for i in range(n - 1)]
    hidden = widths[0] if widths else space.widths[-1]
    for i, w in enumerate(widths[1:], start=1):
        if w != hidden:
            projected.append(f"layer {i}: width {w} -> {hidden}")
    layer_bits = []
    for i in range(n):
        lb = {c: int(choice[f"l{i}.bits.{c}"]) for c in SEARCHED_COMPONENTS}
        if arch == "gin":
            lb["hidden"] = lb["message"]  # GIN has no message tensor; its MLP inner tensor takes that bit-width
        layer_bits.append(lb)
    config = ModelConfig(arch=arch, in_dim=in_dim, hidden=int(hidden), out_dim=out_dim, num_layers=n,
                         dropout=dropout, framework=framework, bits=default_bits(8), layer_bits=layer_bits,
                         lorap=lorap)
    return Discretised(dict(choice), config, projected)
