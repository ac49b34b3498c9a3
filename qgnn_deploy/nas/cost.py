"""Model size and buffer size of a candidate, taken from the fold itself.

The definitions are those of :mod:`qgnn_deploy.ir.analysis`: **model size** = bytes of every stored constant
(:func:`~qgnn_deploy.ir.analysis.model_bytes`), **buffer size** = peak bytes of values live at once in node
order (:func:`~qgnn_deploy.ir.analysis.shape_buffer_report`, the same walk as ``buffer_report``).

Nothing here re-lists what fold emits.  A candidate is costed by a *shape-only fold*: the real
:func:`~qgnn_deploy.fold.fold_model` of a placeholder model of the config (seeded parameters, quantizers
calibrated on a 16-node placeholder graph), whose value sizes come from the op specs' shape rules with the
dataset's ``N`` and ``E`` (no array the size of the dataset is computed).  So a change to fold changes the
cost, and ``tests/test_nas.py`` checks ``config_cost`` == ``model_bytes`` / ``buffer_report`` of folded models.

What the placeholder cannot know is what training learns: stored sizes that depend on learned *values*
(GAT's exp table is trimmed where ``round(EXP_ONE exp(d s))`` stops changing, ``s`` the learned logit scale;
constants that happen to be equal are stored once) are those of the placeholder.  Every shape, dtype, packing
and table that depends only on the config is exact.

Not integer deployments, so estimates on top of the fold: FP32 components (``allow_fp32``, the FP32 baseline)
are folded at a probe bit-width and every value or constant fold records at that width (``meta["bitwidths"]``)
is counted at 4 bytes per element; ``storage="ideal"`` (the LPGNAS paper's ``b / 8`` bytes) counts each
recorded value and weight at ``b / 8`` bytes per element (weights without their unpacked int4 copy).

For the differentiable search, :class:`CostTable` folds, per (arch, width) of a :class:`SearchSpace`, the
all-8-bit candidate and every single-component bit deviation from it; each stored constant and runtime value is
owned by the one (layer, component) whose bit-width changes its bytes.  Its expected bytes are the
probability-weighted sum over that component's candidates (a torch expression), model size their sum and the
buffer the peak of the fold's liveness walk over them.  At a one-hot choice both are exactly the folded
config's cost; model size is linear, so its expectation is exact too.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from qgnn_deploy.ir.analysis import live_sets, model_bytes, shape_buffer_report
from qgnn_deploy.ir.graph import Graph
from qgnn_deploy.ir.infer import ITEMSIZE, infer_dtypes, value_nbytes
from qgnn_deploy.models.net import QGNN, ModelConfig

PLACEHOLDER_NODES = 16
PROBE_BITS = (7, 6, 5)  # stand-ins for FP32 components: 1-byte values, unpacked weights, like 8 bits


@dataclass(frozen=True)
class Cost:
    """Model size and buffer size in bytes (:mod:`qgnn_deploy.ir.analysis` definitions)."""

    model_bytes: float
    buffer_bytes: float

    def to_dict(self) -> dict[str, float]:
        return {"model_bytes": self.model_bytes, "buffer_bytes": self.buffer_bytes}


# ------------------------------------------------------------------------------------------ shape-only fold
def placeholder_model(config: ModelConfig, centered_input: bool = False) -> QGNN:
    """A model of ``config`` fold can lower: seeded parameters (perturbed, so that e.g. GIN's ``1 + eps`` scalar
    is not the ``1`` another op stores, as after training) and quantizer ranges from one forward pass on a small
    placeholder graph.

    ``centered_input``: placeholder features with negative values, so the boundary quantizer gets a non-zero
    zero point as on such a dataset.
    """
    gen = torch.Generator().manual_seed(0)
    torch_state = torch.random.get_rng_state()
    torch.manual_seed(0)
    try:
        model = QGNN(config)
        with torch.no_grad():  # biases stay 0: a bias on a degenerate placeholder grid could overflow int32
            for name, p in model.named_parameters():
                if not name.endswith("bias"):
                    p.add_(0.01 * torch.randn(p.shape, generator=gen))
        n = PLACEHOLDER_NODES
        x = torch.rand(n, config.in_dim, generator=gen) - (0.5 if centered_input else 0.0)
        ring = torch.arange(n)
        ei = torch.stack([torch.cat([ring, ring]), torch.cat([(ring + 1) % n, (ring + 3) % n])])
        model.train()
        with torch.no_grad():
            model(x, ei)
        model.eval()
    finally:
        torch.random.set_rng_state(torch_state)
    return model


def _probe(config: ModelConfig) -> tuple[ModelConfig, int | None]:
    """``config`` with FP32 components at a probe bit-width not used elsewhere (and that probe), or unchanged."""
    d = config.to_dict()
    tables = [dict(d.get("bits") or {})] + [dict(lb) for lb in (d.get("layer_bits") or [])]
    fp32 = d.get("framework") == "fp32" or any(v == 32 for t in tables for v in t.values())
    if not fp32:
        return config, None
    used = {v for t in tables for v in t.values()}
    probe = next((b for b in PROBE_BITS if b not in used), None)
    if probe is None:
        raise ValueError(f"cost: no probe bit-width among {PROBE_BITS} is free to stand in for FP32 components")
    if d.get("framework") == "fp32":
        d["framework"] = "qat"
        tables = [{k: 32 for k in t} for t in tables]
    d["bits"] = {k: (probe if v == 32 else v) for k, v in tables[0].items()}
    if d.get("layer_bits"):
        d["layer_bits"] = [{k: (probe if v == 32 else v) for k, v in t.items()} for t in tables[1:]]
    return ModelConfig.from_dict(d), probe


@functools.lru_cache(maxsize=512)
def _fold_cached(config_json: str, max_in_degree: int, centered_input: bool) -> tuple[Graph, int | None]:
    from qgnn_deploy.fold import fold_model

    config, probe = _probe(ModelConfig.from_dict(json.loads(config_json)))
    return fold_model(placeholder_model(config, centered_input), max_in_degree), probe


def shape_fold(config: ModelConfig, max_in_degree: int = 1023, centered_input: bool = False) -> tuple[Graph,
                                                                                                      int | None]:
    """The integer graph ``fold_model`` makes of ``config`` (placeholder model, cached) and the probe bit-width
    standing in for FP32 components (None without any).  Do not modify the returned graph."""
    return _fold_cached(json.dumps(config.to_dict(), sort_keys=True), int(max_in_degree), bool(centered_input))


def _recorded(graph: Graph) -> dict[str, int]:
    """Value or constant name -> the bit-width fold recorded for it (``meta["bitwidths"]``, keyed by name)."""
    return {k: int(v) for k, v in graph.meta.get("bitwidths", {}).items()}


def graph_sizes(graph: Graph, n: int, e: int, storage: str = "deployed",
                probe: int | None = None) -> tuple[dict[str, float], dict[str, float]]:
    """(constant bytes, runtime value bytes) of a folded graph on a graph of ``n`` nodes and ``e`` edges.

    ``storage="deployed"``: what the integer graph holds (``model_bytes`` / ``shape_buffer_report``); values and
    weights recorded at the ``probe`` width count 4 bytes per element (FP32).  ``"ideal"``: recorded ones count
    ``b / 8`` bytes per element.
    """
    if storage not in ("deployed", "ideal"):
        raise ValueError(f"storage must be 'deployed' or 'ideal', got {storage!r}")
    consts = {k: float(a.nbytes) for k, a in graph.initializers.items()}
    values = {k: float(v) for k, v in value_nbytes(graph, {"N": int(n), "E": int(e)}).items()}
    if storage == "deployed" and probe is None:
        return consts, values
    dtypes = infer_dtypes(graph)
    producers = graph.producers()
    for name, bits in _recorded(graph).items():
        per = 4.0 if bits == probe else (bits / 8.0 if storage == "ideal" else None)
        if per is None:
            continue
        if name in consts:
            consts[name] = per * graph.initializers[name].size
        elif name in values:
            elems = values[name] / ITEMSIZE[dtypes[name]]
            node = producers.get(name)
            if node is not None and node.op == "unpack_int4":  # the packed weight: its logical elements
                consts[node.inputs[0]] = per * elems
                values[name] = 0.0  # an ideal store has no unpacked copy
            else:
                values[name] = per * elems
    return consts, values


def config_cost(config: ModelConfig, num_nodes: int, num_edges: int, storage: str = "deployed",
                max_in_degree: int = 1023, centered_input: bool = False) -> Cost:
    """Model size and buffer size of ``config`` on a graph of ``num_nodes`` nodes and ``num_edges`` edges, from
    its shape-only fold (:func:`shape_fold`): ``model_bytes`` and ``buffer_report`` of the folded graph.

    ``centered_input``: the dataset's features have negative values (the boundary quantizer's zero point is not
    0, which adds centring steps).  ``max_in_degree`` sizes the edge tables as ``fold_checkpoint`` would.
    """
    if config.task != "node" or config.gpf:
        raise ValueError("config_cost covers node-classification models without GPF prompts")
    graph, probe = shape_fold(config, max_in_degree, centered_input)
    if storage == "deployed" and probe is None:
        return Cost(float(model_bytes(graph)),
                    float(shape_buffer_report(graph, {"N": num_nodes, "E": num_edges}).peak_bytes))
    consts, values = graph_sizes(graph, num_nodes, num_edges, storage, probe)
    return Cost(sum(consts.values()), max(sum(values[v] for v in live) for _, live in live_sets(graph)))


def fold_max_in_degree(edge_index: Any, num_nodes: int) -> int:
    """The ``max_in_degree`` ``fold_checkpoint`` picks for a sample graph (sizes the edge tables)."""
    from qgnn_deploy.fold.degree import max_in_degree_for

    return max_in_degree_for(edge_index, num_nodes)


# ------------------------------------------------------------------------------------------ search expectation
Key = tuple[str, str]  # ("c", constant name) or ("v", runtime value name)
Owner = tuple[int, str]  # (layer, searched component)


@dataclass
class _Combo:
    """One (arch, width): per key its base bytes and, per owning (layer, component), the change in bytes at each
    bit candidate; ``live`` is the liveness walk (0/1 rows over ``value_keys``)."""

    base: dict[Key, float]
    deltas: dict[Key, dict[Owner, list[float]]]
    value_keys: list[Key]
    live: np.ndarray
    shared: list[str]  # keys whose bytes change with more than one choice (added up: see CostTable)


class CostTable:
    """Exact per-candidate sizes of every (arch, width) of a search space, folded once; torch expectations.

    ``make_config(arch, width, bits)`` returns the :class:`ModelConfig` a choice deploys as
    (:func:`qgnn_deploy.nas.space.to_model_config` of it), ``bits`` mapping ``(layer, component)`` to a
    bit-width.  Folds per (arch, width): the all-base-bits config, one per (layer, component, other bit-width),
    and one with every weight at its smallest width (its liveness walk has every value any candidate has).
    A size that changes with several choices (only GAT's exp table, see the module docstring) gets the sum of
    its per-choice changes; :meth:`shared` lists them.
    """

    def __init__(self, archs: Sequence[str], widths: Sequence[int | None], num_layers: int,
                 components: Sequence[str], bit_candidates: Sequence[int], make_config: Any, n: int, e: int,
                 storage: str = "deployed", max_in_degree: int = 1023, centered_input: bool = False) -> None:
        self.archs, self.widths = tuple(archs), tuple(widths)
        self.bits = tuple(bit_candidates)
        self.base = 8 if 8 in self.bits else max(b for b in self.bits if b != 32)
        self.components = tuple(components)
        self.num_layers = num_layers
        self.combos: dict[tuple[str, int | None], _Combo] = {}
        for a in self.archs:
            for w in self.widths:
                self.combos[(a, w)] = self._build(a, w, make_config, n, e, storage, max_in_degree, centered_input)

    def _sizes(self, cfg: ModelConfig, n: int, e: int, storage: str, mid: int,
               centered: bool) -> tuple[Graph, dict[Key, float]]:
        graph, probe = shape_fold(cfg, mid, centered)
        consts, values = graph_sizes(graph, n, e, storage, probe)
        sizes: dict[Key, float] = {("c", k): v for k, v in consts.items()}
        sizes.update({("v", k): v for k, v in values.items()})
        return graph, sizes

    def _build(self, a: str, w: int | None, make_config: Any, n: int, e: int, storage: str, mid: int,
               centered: bool) -> _Combo:
        slots = [(i, c) for i in range(self.num_layers) for c in self.components]
        base_bits = {s: self.base for s in slots}
        _, base = self._sizes(make_config(a, w, base_bits), n, e, storage, mid, centered)
        deltas: dict[Key, dict[Owner, list[float]]] = {}
        for slot in slots:
            for j, b in enumerate(self.bits):
                if b == self.base:
                    continue
                _, var = self._sizes(make_config(a, w, {**base_bits, slot: b}), n, e, storage, mid, centered)
                for k in set(var) | set(base):
                    diff = var.get(k, 0.0) - base.get(k, 0.0)
                    if diff:
                        deltas.setdefault(k, {}).setdefault(slot, [0.0] * len(self.bits))[j] = diff
        base_all = {k: base.get(k, 0.0) for k in set(base) | set(deltas)}
        shared = sorted(k[1] for k, d in deltas.items() if len(d) > 1)
        # the liveness walk of the config with every weight at its smallest width: it has every value any
        # candidate has (int4 weights add their unpacked copy), in fold's order
        small = min(b for b in self.bits if b != 32)
        structure_bits = {s: (small if s[1] == "weight" else self.base) for s in slots}
        graph, structure = self._sizes(make_config(a, w, structure_bits), n, e, storage, mid, centered)
        value_keys = [("v", name) for name in [v.name for v in graph.inputs] + [nd.outputs[0] for nd in graph.nodes]]
        missing = [k[1] for k in base_all if k[0] == "v" and k not in set(value_keys)]
        if missing:
            raise ValueError(f"cost: values {missing[:3]} of a candidate are not in the structure fold of {a}")
        col = {k: j for j, k in enumerate(value_keys)}
        steps = live_sets(graph)
        live = np.zeros((len(steps), len(value_keys)))
        for r, (_, names) in enumerate(steps):
            live[r, [col[("v", v)] for v in names]] = 1.0
        return _Combo(base_all, deltas, value_keys, live, shared)

    def shared(self) -> dict[tuple[str, int | None], list[str]]:
        """Per (arch, width): constants/values whose bytes change with more than one choice (added up)."""
        return {k: c.shared for k, c in self.combos.items() if c.shared}

    def expected(self, arch_probs: Mapping[str, Tensor], width_probs: Mapping[int | None, Tensor],
                 bit_probs: Mapping[Owner, Tensor]) -> tuple[Tensor, Tensor]:
        """(E[model bytes], E[buffer bytes]): exact expectation over (arch, width); per key the
        probability-weighted bytes of its owner's candidates, model size their sum, buffer their peak."""
        size = torch.zeros(())
        buf = torch.zeros(())
        for (a, w), combo in self.combos.items():
            pw = arch_probs[a] * width_probs[w]
            exp: dict[Key, Tensor | float] = dict(combo.base)
            for k, by_owner in combo.deltas.items():
                exp[k] = exp[k] + sum(bit_probs[o] @ torch.tensor(row, dtype=torch.float32)
                                      for o, row in by_owner.items())
            model = sum((v for k, v in exp.items() if k[0] == "c"), torch.zeros(()))
            vals = torch.stack([torch.as_tensor(exp.get(k, 0.0), dtype=torch.float32) for k in combo.value_keys])
            peak = (torch.from_numpy(combo.live).float() @ vals).max()
            size = size + pw * model
            buf = buf + pw * peak
        return size, buf
