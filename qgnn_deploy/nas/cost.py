"""Analytic model size and buffer size, exact for a fixed config and in expectation for the supernet.

The definitions are those of :mod:`qgnn_deploy.ir.analysis` (the one place that defines them):

* **model size** = bytes of stored constants, int4 packed two per byte;
* **buffer size** = peak bytes of values live at once when the integer graph runs in node order
  (graph inputs counted, constants not, each value freed after its last use).

Here they are computed from the value *schedule* ``fold_model`` emits (``qgnn_deploy/fold/``), so no
graph needs to be built and every byte count can be an expectation over the relaxed choices;
``tests/test_nas.py`` checks ``config_cost`` against ``model_bytes`` / ``buffer_report`` of the folded
model for every arch (model size without the few 4-byte ``c_int32_*`` scalars).

Storage per element (``storage="deployed"``, what the integer graph holds)::

    weight  s_w(b) = 1/2 byte if b <= 4 (int4 packed), 1 byte if b <= 8, 4 bytes for FP32
    value   s_a(b) = 1 byte if b <= 8 (int8/uint8),   4 bytes for FP32;   int32 accumulators 4 bytes

``storage="ideal"`` uses ``b / 8`` bytes for both (the LPGNAS paper's bit counting).  FP32 components
cannot be folded; their 4 bytes are what a float deployment would hold.

Model size of one layer (``F`` in, ``H`` out, ``T`` = bytes of the stored edge-coefficient lookup: the trimmed
``lut`` table or the ``lut_steps`` thresholds + values, whichever is smaller, computed by fold's own helper
:func:`qgnn_deploy.fold.tables.edge_table_bytes`; a requantization stores an int32 multiplier and an int8 shift,
``r = 5`` bytes, per channel)::

    gcn   s_w F H + r H + T + r + 4 H            (W, message mult/shift, edge table, aggregate mult/shift, bias)
    sage  T + r + s_w 2F H + 4 H + r H            (edge table, mean mult/shift, W, bias, output mult/shift)
    gin   s_w (F H + H H) + 2 * 4 H + 2 * r H     (W1, W2, biases, hidden and output mult/shift)

Buffer of a GCN layer (``N`` nodes, ``E`` edges): the fold emits ``lin [N,H] 4``, ``message [N,H] s_msg``,
``deg_self, edge [N,1] 4``, ``edge_q [N,1] 1``, ``message_i32, message_scaled [N,H] 4``,
``gather [E,H] 4``, ``scatter, agg_self [N,H] 4``, ``rowfactor64, rowmult [N,1] 8``,
``aggregate [N,H] s_agg``, ``agg_i32, agg_x255, out [N,H] 4`` (plus ``[F,H] 1`` for an int4 weight's
unpacked copy).  The float input stays live until the last scatter (its node-count reference), so on a
small graph the peak is at layer 0's scatter::

    4 N F0 + 16 E + 4 N + 4 N + 4 N H + 4 E H + 4 N H    (x, src/dst, in_degree, edge, scaled, gather, scatter)

GIN and SAGE aggregate the layer *input* (``[E, F] 4`` gathered rows), which dominates on Cora.
:func:`peak_bytes` walks the schedule exactly like ``buffer_report``.  In expectation each value's
bytes are ``E[rows] E[cols] E[s]`` (independent choices) and
``E[buffer] ~= sum over layer-kind tuples of P(tuple) * peak(schedule(tuple), expected sizes)``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from qgnn_deploy.fold.tables import edge_table_bytes as fold_edge_table_bytes
from qgnn_deploy.fold.tables import requant_param_bytes

Num = float | Tensor


# ------------------------------------------------------------------------------------------ storage
def weight_storage(bits: int, storage: str = "deployed") -> float:
    """Bytes per stored weight element."""
    if storage == "ideal":
        return bits / 8.0
    if bits <= 4:
        return 0.5
    if bits <= 8:
        return 1.0
    return 4.0


def value_storage(bits: int, storage: str = "deployed") -> float:
    """Bytes per activation element as the integer graph holds it."""
    if storage == "ideal":
        return bits / 8.0
    return 1.0 if bits <= 8 else 4.0


# ------------------------------------------------------------------------------------------ layers
@dataclass
class LayerSizes:
    """(Expected) sizes of one layer: widths and per-element storage in bytes.

    ``h2`` is ``E[H^2]`` (GIN's square weight); ``w_unpacked`` the probability that the weight is
    int4-packed (its unpacked int8 copy is a runtime value).
    """

    f: Num
    h: Num
    h2: Num
    s_in: Num
    s_w: Num
    s_msg: Num
    s_agg: Num
    w_unpacked: Num


def weight_bytes(count: Num, s_w: Num) -> Num:
    """``count * s_w``; a fixed int4 matrix with an odd element count takes one more half byte."""
    if not isinstance(count, Tensor) and not isinstance(s_w, Tensor) and s_w == 0.5:
        return float(math.ceil(count / 2))
    return count * s_w


def edge_table_bytes(arch: str, edge_bits: int, max_in_degree: int) -> int:
    """Bytes of the edge-coefficient lookup a layer of kind ``arch`` stores (fold's ``lut`` or ``lut_steps``
    form, whichever is smaller; 0 for GIN).

    The full-space proxies (``max``/``attn``) are costed as GCN.  Unquantized (32-bit) edges have no integer
    table; they are counted as ``max_in_degree + 1`` one-byte entries, the untrimmed length.
    """
    if arch == "gin":
        return 0
    if arch == "gat":  # no degree table; the exp table (uint16, at most 2 * 306 bytes before trimming)
        return 2 * 306
    if edge_bits >= 32:
        return int(max_in_degree) + 1
    return fold_edge_table_bytes("sage" if arch == "sage" else "gcn", edge_bits, max_in_degree)


def layer_model_bytes(arch: str, z: LayerSizes, table: int) -> Num:
    """Stored constants of one layer as the fold emits them (bytes; 4-byte ``c_int32_*`` scalars excluded).

    ``table`` is the bytes of the layer's edge-coefficient table (:func:`edge_table_bytes`, 0 where an
    identical earlier table is shared).  Per-channel requantization (every matmul output) stores an int32
    multiplier and an int8 shift per channel (``r H``, ``r = 5``); a per-tensor one with a per-node row
    factor stores one of each (``r``).  Weights of <= 4 bits are int4-packed.
    """
    r = requant_param_bytes()
    if arch == "sage":  # table, mean mult/shift, W [2F, H], bias, per-channel requant of the output
        return table + r + weight_bytes(2 * z.f * z.h, z.s_w) + 4 * z.h + r * z.h
    if arch == "gin":  # W1, b1, hidden mult/shift, W2, b2, per-channel requant of the output
        return weight_bytes(z.f * z.h, z.s_w) + 4 * z.h + r * z.h + weight_bytes(z.h2, z.s_w) + 4 * z.h + r * z.h
    # gcn (and the full-space proxies): W, message mult/shift, table, aggregate mult/shift, bias
    base = weight_bytes(z.f * z.h, z.s_w) + r * z.h + table + r + 4 * z.h
    if arch in ("attn", "gat"):  # attention vectors (gat: an estimate, see layer_schedule)
        base = base + 2 * z.h
    return base


Step = tuple[str, Num, list[str]]  # (value name, bytes, inputs)


def layer_schedule(arch: str, i: int, cur: str, n: int, e: int, z: LayerSizes,
                   centered: bool = False) -> tuple[list[Step], str]:
    """The values the fold (``qgnn_deploy/fold/layers.py``) emits for one layer, in node order.

    ``cur`` is the layer's quantized input value; returns (steps, int32 output value).  ``centered``: the
    input has a non-zero zero point, so GIN/SAGE subtract it before summing (one more ``[N, F]`` int32).
    ``max``/``attn`` (full space, not foldable) are costed as the GCN schedule (+ ``[E] 4`` scores).
    """
    p = f"layer{i}_"
    s: list[Step] = []

    def add(name: str, nbytes: Num, inputs: list[str]) -> str:
        s.append((p + name, nbytes, inputs))
        return p + name

    if arch in ("gcn", "max", "attn", "gat"):  # gat: costed as the attention proxy (an estimate, not exact)
        w = [add("w", z.f * z.h * z.w_unpacked, [])]
        lin = add("lin", 4 * n * z.h, [cur, *w])
        msg = add("message", n * z.h * z.s_msg, [lin])
        deg1 = add("deg_self", 4 * n, ["in_degree"])
        eq = add("edge_q", 1 * n, [deg1])
        edge = add("edge", 4 * n, [eq])
        m32 = add("message_i32", 4 * n * z.h, [msg])
        he = add("message_scaled", 4 * n * z.h, [m32, edge])
        extra = [add("att", 4 * e, [he, "src", "dst"])] if arch in ("attn", "gat") else []
        gat = add("gather", 4 * e * z.h, [he, "src", *extra])
        sc = add("scatter", 4 * n * z.h, [gat, "dst", "in_degree"])
        agg = add("agg_self", 4 * n * z.h, [sc, he])
        rf = add("aggregate_rowfactor64", 8 * n, [edge])
        rm = add("aggregate_rowmult", 8 * n, [rf])
        a = add("aggregate", n * z.h * z.s_agg, [agg, rm])
        a32 = add("agg_i32", 4 * n * z.h, [a])
        x255 = add("agg_x255", 4 * n * z.h, [a32])
        return s, add("out", 4 * n * z.h, [x255])
    xc = add("x_i32", 4 * n * z.f, [cur])
    if centered:
        xc = add("x_centered", 4 * n * z.f, [xc])
    gat = add("gather", 4 * e * z.f, [xc, "src"])
    sc = add("scatter", 4 * n * z.f, [gat, "dst", "in_degree"])
    if arch == "sage":
        eq = add("edge_q", 1 * n, ["in_degree"])
        edge = add("edge", 4 * n, [eq])
        rf = add("mean_rowfactor64", 8 * n, [edge])
        rm = add("mean_rowmult", 8 * n, [rf])
        mean = add("mean", n * z.f * z.s_in, [sc, rm])
        cat = add("cat", 2 * n * z.f * z.s_in, [mean, cur])
        w = [add("w", 2 * z.f * z.h * z.w_unpacked, [])]
        lin = add("lin", 4 * n * z.h, [cat, *w])
        return s, add("lin_b", 4 * n * z.h, [lin])
    if arch != "gin":
        raise ValueError(f"unknown layer kind {arch!r}")
    slf = add("self", 4 * n * z.f, [xc])
    nb = add("neigh", 4 * n * z.f, [sc])
    acc = add("agg_acc", 4 * n * z.f, [slf, nb])
    a = add("aggregate", n * z.f * z.s_agg, [acc])
    w1 = [add("w1", z.f * z.h * z.w_unpacked, [])]
    m1 = add("mlp1", 4 * n * z.h, [a, *w1])
    m1b = add("mlp1_b", 4 * n * z.h, [m1])
    hid = add("hidden", n * z.h * z.s_msg, [m1b])
    w2 = [add("w2", z.h2 * z.w_unpacked, [])]
    m2 = add("mlp2", 4 * n * z.h, [hid, *w2])
    return s, add("mlp2_b", 4 * n * z.h, [m2])


def model_schedule(archs: Sequence[str], sizes: Sequence[LayerSizes], n: int, e: int, f0: int, classes: int,
                   centered: bool = False) -> tuple[dict[str, Num], list[Step], str]:
    """Whole node-classification graph as ``fold_model`` emits it: inputs, steps, output name.

    The scatters take the small ``in_degree`` [N, 1] as their node-count reference, so the float input
    ``x`` dies once it is quantized.
    """
    inputs: dict[str, Num] = {"x": 4.0 * n * f0, "edge_index": 16.0 * e}
    steps: list[Step] = [("src", 8.0 * e, ["edge_index"]), ("dst", 8.0 * e, ["edge_index"]),
                         ("in_degree", 4.0 * n, ["dst", "x"]), ("x_q", n * f0 * sizes[0].s_in, ["x"])]
    cur = "x_q"
    for i, (arch, z) in enumerate(zip(archs, sizes)):
        if i > 0:
            steps.append((f"layer{i}_input", n * z.f * z.s_in, [cur]))
            cur = f"layer{i}_input"
        st, cur = layer_schedule(arch, i, cur, n, e, z, centered and i == 0)
        steps += st
    steps += [("output", 1.0 * n * classes, [cur]), ("logits", 4.0 * n * classes, ["output"])]
    return inputs, steps, "logits"


_LIVENESS: dict[tuple, tuple[list[str], np.ndarray]] = {}


def liveness(inputs: Sequence[str], steps: Sequence[tuple[str, Sequence[str]]], output: str) -> tuple[list[str],
                                                                                                     np.ndarray]:
    """The walk of :func:`qgnn_deploy.ir.analysis.buffer_report` as a 0/1 matrix (cached by structure).

    Row ``t`` marks the values live right after value ``t`` is allocated (row 0: the inputs), so the
    peak is ``max(M @ bytes)``: each value is freed after its last use, graph outputs never.
    """
    key = (tuple(inputs), tuple((name, tuple(ins)) for name, ins in steps), output)
    hit = _LIVENESS.get(key)
    if hit is not None:
        return hit
    names = list(inputs) + [name for name, _ in steps]
    col = {v: k for k, v in enumerate(names)}
    last_use: dict[str, int] = {}
    for k, (_, ins) in enumerate(steps):
        for v in ins:
            last_use[v] = k
    mat = np.zeros((len(steps) + 1, len(names)))
    live = set(inputs)
    mat[0, [col[v] for v in live]] = 1.0
    for k, (name, ins) in enumerate(steps):
        live.add(name)
        mat[k + 1, [col[v] for v in live]] = 1.0
        for v in set(ins) | {name}:
            if v in live and v != output and last_use.get(v, -1) <= k:
                live.discard(v)
    _LIVENESS[key] = (names, mat)
    return names, mat


def peak_bytes(inputs: Mapping[str, Num], steps: Sequence[Step], output: str) -> Num:
    """Peak live bytes of a schedule, exactly as ``buffer_report`` walks a graph; differentiable in the sizes."""
    names, mat = liveness(list(inputs), [(name, ins) for name, _, ins in steps], output)
    sizes = dict(inputs)
    sizes.update({name: nbytes for name, nbytes, _ in steps})
    tensor_cols = [k for k, v in enumerate(names) if isinstance(sizes[v], Tensor)]
    const = np.array([0.0 if isinstance(sizes[v], Tensor) else float(sizes[v]) for v in names])
    base = mat @ const
    if not tensor_cols:
        return float(base.max())
    var = torch.stack([sizes[names[k]].to(torch.float32).reshape(()) for k in tensor_cols])
    live = torch.from_numpy(base).float() + torch.from_numpy(mat[:, tensor_cols]).float() @ var
    return live.max()


# ------------------------------------------------------------------------------------------ configs
@dataclass(frozen=True)
class Cost:
    model_bytes: float
    buffer_bytes: float

    def to_dict(self) -> dict[str, float]:
        return {"model_bytes": self.model_bytes, "buffer_bytes": self.buffer_bytes}


def config_layer_sizes(config: Any, storage: str = "deployed") -> list[LayerSizes]:
    """Deterministic :class:`LayerSizes` of a :class:`~qgnn_deploy.models.net.ModelConfig`."""
    dims = [config.in_dim] + [config.hidden] * (config.num_layers - 1) + [config.out_dim]
    out = []
    for i in range(config.num_layers):
        b = config.bits_for(i)
        msg = b["hidden"] if config.arch == "gin" else b["message"]
        f, h = dims[i], dims[i + 1]
        out.append(LayerSizes(f=float(f), h=float(h), h2=float(h * h), s_in=value_storage(b["input"], storage),
                              s_w=weight_storage(b["weight"], storage), s_msg=value_storage(msg, storage),
                              s_agg=value_storage(b["aggregate"], storage),
                              w_unpacked=1.0 if b["weight"] <= 4 and storage == "deployed" else 0.0))
    return out


def fold_max_in_degree(edge_index: Any, num_nodes: int) -> int:
    """The ``max_in_degree`` ``fold_checkpoint`` picks for a sample graph (sizes the edge tables)."""
    from qgnn_deploy.fold.degree import max_in_degree_for

    return max_in_degree_for(edge_index, num_nodes)


def config_cost(config: Any, num_nodes: int, num_edges: int, storage: str = "deployed", max_in_degree: int = 1023,
                centered_input: bool = False) -> Cost:
    """Model size and buffer size of a node-classification config, as ``fold_model`` + ``ir.analysis`` count them.

    ``centered_input``: the boundary quantizer has a non-zero zero point (features with negative values),
    which adds a centring step to a first GIN/SAGE layer.  Model size excludes the few 4-byte ``c_int32_*``
    scalar constants.
    """
    if config.task != "node" or config.lorap or config.gpf:
        raise ValueError("config_cost covers node-classification models without prompts")
    sizes = config_layer_sizes(config, storage)
    archs = [config.arch] * config.num_layers
    # identical degree tables of later layers are stored once (fold's dedupe_initializers pass)
    table = edge_table_bytes(config.arch, config.bits_for(0)["edge"], max_in_degree)
    size = sum(layer_model_bytes(config.arch, z, table if i == 0 else 0) for i, z in enumerate(sizes))
    inputs, steps, out = model_schedule(archs, sizes, num_nodes, num_edges, config.in_dim, config.out_dim,
                                        centered_input)
    return Cost(float(size), float(peak_bytes(inputs, steps, out)))


def expected_cost(arch_probs: Sequence[Mapping[str, Tensor]], sizes: Sequence[LayerSizes], n: int, e: int,
                  f0: int, classes: int, max_in_degree: int = 1023,
                  centered_input: bool = False, edge_bits: int = 8) -> tuple[Tensor, Tensor]:
    """(E[model bytes], E[buffer bytes]) for per-layer kind probabilities and expected sizes.

    Model size is linear, so its expectation is exact; the buffer is ``sum over kind tuples of
    P(tuple) * peak(schedule(tuple), expected sizes)``.  ``edge_bits``: the edge coefficients' width (not
    searched; the search's configs keep ``default_bits(8)``'s 8).
    """
    # the degree table is counted once (layer 0): fold stores identical tables once
    size = sum(sum(p * layer_model_bytes(k, z, edge_table_bytes(k, edge_bits, max_in_degree) if i == 0 else 0)
                   for k, p in probs.items())
               for i, (probs, z) in enumerate(zip(arch_probs, sizes)))
    kinds = [list(p.keys()) for p in arch_probs]
    buf = torch.zeros(())
    for combo in itertools.product(*kinds):
        prob = torch.ones(())
        for probs, k in zip(arch_probs, combo):
            prob = prob * probs[k]
        inputs, steps, out = model_schedule(combo, sizes, n, e, f0, classes, centered_input)
        buf = buf + prob * peak_bytes(inputs, steps, out)
    return torch.as_tensor(size), buf
