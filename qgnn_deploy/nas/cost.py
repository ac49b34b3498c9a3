"""Analytic model size and buffer size, exact for a fixed config and in expectation for the supernet.

The definitions are those of :mod:`qgnn_deploy.ir.analysis` (the one place that defines them):

* **model size** = bytes of stored constants, int4 packed two per byte;
* **buffer size** = peak bytes of values live at once when the integer graph runs in node order
  (graph inputs counted, constants not, each value freed after its last use).

Here they are computed from the *schedule* an integer graph of the layer runs (the same value
sequence a fold emits, see :func:`layer_schedule`), so no graph needs to be built and every byte
count can be an expectation over the relaxed choices.

Storage per element (``storage="deployed"``, what the integer graph holds)::

    weight  s_w(b) = 1/2 byte if b <= 4 (int4 packed), 1 byte if b <= 8, 4 bytes for FP32
    value   s_a(b) = 1 byte if b <= 8 (int8/uint8),   4 bytes for FP32;   int32 accumulators 4 bytes

``storage="ideal"`` uses ``b / 8`` bytes for both (the LPGNAS paper's bit counting).

Model size of one layer (``F`` in, ``H`` out, ``b_w`` weight bits; biases are int32)::

    gcn   F H s_w + 4 H            sage  2 F H s_w + 4 H           gin   (F H + H H) s_w + 8 H
    attention weighting (full space only) adds 2 H s_w(8)

Buffer of one GCN layer (``N`` nodes, ``E`` edges, ``s_in``/``s_msg``/``s_agg`` value storage): the
values are ``x_q [N,F] s_in``, ``acc [N,H] 4``, ``h [N,H] s_msg``, ``deg, dfac [N,1] 4``,
``h32, m [N,H] 4``, ``g [E,H] 4`` (gathered messages), ``s, t [N,H] 4``, ``row_mult [N,1] 8``,
``a_q [N,H] s_agg``, ``y [N,H] 4`` (``[F,H] 1`` more for an int4 weight's unpacked copy); with
``src, dst [E] 8`` alive throughout, the peak at layer 0's scatter is
``16 E + 4 N + 4 E H + 2 * 4 N H`` (``src, dst, dfac, m, g, s``) unless the input stage
``4 N F + 16 E + N F s_in`` (float input and its quantized copy) is larger (Cora).  The exact
peak is what :func:`peak_bytes` computes on the schedule, in expectation:
``E[bytes(value)] = E[rows] E[cols] E[s]`` (independent choices), and
``E[buffer] ~= sum_archs P(archs) max_t live_t`` (the max of expected live sets per arch tuple).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

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


def layer_model_bytes(arch: str, z: LayerSizes) -> Num:
    """Stored constants of one layer (bytes); see the module docstring."""
    if arch == "sage":
        return 2 * z.f * z.h * z.s_w + 4 * z.h
    if arch == "gin":
        return (z.f * z.h + z.h2) * z.s_w + 8 * z.h
    base = z.f * z.h * z.s_w + 4 * z.h
    if arch == "attn":
        base = base + 2 * z.h
    return base


Step = tuple[str, Num, list[str]]  # (value name, bytes, inputs)


def layer_schedule(arch: str, i: int, xin: str, n: int, e: int, z: LayerSizes) -> tuple[list[Step], str]:
    """Values one layer's integer graph produces, in node order; returns (steps, output name).

    ``arch`` in ``gcn``/``sage``/``gin`` (deployable) or ``max``/``attn`` (full-space proxies of the
    GCN schedule).  Layer 0 quantizes the float input; later layers requantize the previous int32
    output with the ReLU folded into the clip.
    """
    p = f"l{i}."
    s: list[Step] = []

    def add(name: str, nbytes: Num, inputs: list[str]) -> str:
        s.append((p + name, nbytes, inputs))
        return p + name

    xq = add("x_q", n * z.f * z.s_in, [xin])
    if arch in ("gcn", "max", "attn"):
        w = [add("w", z.f * z.h * z.w_unpacked, [])]
        acc = add("acc", 4 * n * z.h, [xq, *w])
        h = add("h", n * z.h * z.s_msg, [acc])
        deg = add("deg", 4 * n, ["dst", h])
        dfac = add("dfac", 4 * n, [deg])
        h32 = add("h32", 4 * n * z.h, [h])
        m = add("m", 4 * n * z.h, [h32, dfac])
        extra = [add("att", 4 * e, [m, "src", "dst"])] if arch == "attn" else []
        g = add("g", 4 * e * z.h, [m, "src", *extra])
        sc = add("s", 4 * n * z.h, [g, "dst", m])
        t = add("t", 4 * n * z.h, [sc, m])
        rm = add("row_mult", 8 * n, [dfac])
        aq = add("a_q", n * z.h * z.s_agg, [t, rm])
        y = add("y", 4 * n * z.h, [aq])
        return s, y
    x32 = add("x32", 4 * n * z.f, [xq])
    g = add("g", 4 * e * z.f, [x32, "src"])
    sc = add("s", 4 * n * z.f, [g, "dst", xq])
    if arch == "sage":
        deg = add("deg", 4 * n, ["dst", xq])
        rm = add("row_mult", 8 * n, [deg])
        mean = add("mean", n * z.f * z.s_in, [sc, rm])
        cat = add("cat", 2 * n * z.f * z.s_in, [mean, xq])
        w = [add("w", 2 * z.f * z.h * z.w_unpacked, [])]
        acc = add("acc", 4 * n * z.h, [cat, *w])
        y = add("y", 4 * n * z.h, [acc])
        return s, y
    if arch != "gin":
        raise ValueError(f"unknown layer kind {arch!r}")
    ex = add("x_eps", 4 * n * z.f, [x32])
    t = add("t", 4 * n * z.f, [sc, ex])
    aq = add("a_q", n * z.f * z.s_agg, [t])
    w1 = [add("w1", z.f * z.h * z.w_unpacked, [])]
    acc1 = add("acc1", 4 * n * z.h, [aq, *w1])
    a1 = add("a1", 4 * n * z.h, [acc1])
    hq = add("h_q", n * z.h * z.s_msg, [a1])
    w2 = [add("w2", z.h2 * z.w_unpacked, [])]
    acc2 = add("acc2", 4 * n * z.h, [hq, *w2])
    y = add("y", 4 * n * z.h, [acc2])
    return s, y


def model_schedule(archs: Sequence[str], sizes: Sequence[LayerSizes], n: int, e: int, f0: int,
                   classes: int) -> tuple[dict[str, Num], list[Step], str]:
    """Whole node-classification graph: inputs, steps (edge rows, layers, output), output name."""
    inputs: dict[str, Num] = {"x": 4.0 * n * f0, "edge_index": 16.0 * e}
    steps: list[Step] = [("src", 8.0 * e, ["edge_index"]), ("dst", 8.0 * e, ["edge_index"])]
    cur = "x"
    for i, (arch, z) in enumerate(zip(archs, sizes)):
        st, cur = layer_schedule(arch, i, cur, n, e, z)
        steps += st
    steps += [("y_q", 1.0 * n * classes, [cur]), ("out", 4.0 * n * classes, ["y_q"])]
    return inputs, steps, "out"


def peak_bytes(inputs: Mapping[str, Num], steps: Sequence[Step], output: str) -> Num:
    """Peak live bytes: the liveness walk of :func:`qgnn_deploy.ir.analysis.buffer_report` on a schedule."""
    sizes: dict[str, Num] = dict(inputs)
    last_use: dict[str, int] = {}
    for k, (name, nbytes, ins) in enumerate(steps):
        sizes[name] = nbytes
        for v in ins:
            last_use[v] = k
    live = set(inputs)
    current: Num = sum(sizes[v] for v in live)
    peaks: list[Num] = [current]
    for k, (name, _, ins) in enumerate(steps):
        live.add(name)
        current = current + sizes[name]
        peaks.append(current)
        for v in set(ins) | {name}:
            if v in live and v != output and last_use.get(v, -1) <= k:
                live.discard(v)
                current = current - sizes[v]
    if any(isinstance(p, Tensor) for p in peaks):
        return torch.stack([torch.as_tensor(p, dtype=torch.float32) for p in peaks]).max()
    return max(peaks)


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


def config_cost(config: Any, num_nodes: int, num_edges: int, storage: str = "deployed") -> Cost:
    """Model size and buffer size of a deployable node-classification config (no graph built)."""
    if config.task != "node" or config.lorap or config.gpf:
        raise ValueError("config_cost covers node-classification models without prompts")
    sizes = config_layer_sizes(config, storage)
    archs = [config.arch] * config.num_layers
    size = sum(layer_model_bytes(config.arch, z) for z in sizes)
    inputs, steps, out = model_schedule(archs, sizes, num_nodes, num_edges, config.in_dim, config.out_dim)
    return Cost(float(size), float(peak_bytes(inputs, steps, out)))


def expected_cost(arch_probs: Sequence[Mapping[str, Tensor]], sizes: Sequence[LayerSizes], n: int, e: int,
                  f0: int, classes: int) -> tuple[Tensor, Tensor]:
    """(E[model bytes], E[buffer bytes]) for per-layer kind probabilities and expected sizes.

    Model size is linear, so its expectation is exact; the buffer is ``sum over kind tuples of
    P(tuple) * peak(schedule(tuple), expected sizes)``.
    """
    size = sum(sum(p * layer_model_bytes(k, z) for k, p in probs.items()) for probs, z in zip(arch_probs, sizes))
    kinds = [list(p.keys()) for p in arch_probs]
    buf = torch.zeros(())
    for combo in itertools.product(*kinds):
        prob = torch.ones(())
        for probs, k in zip(arch_probs, combo):
            prob = prob * probs[k]
        inputs, steps, out = model_schedule(combo, sizes, n, e, f0, classes)
        buf = buf + prob * peak_bytes(inputs, steps, out)
    return torch.as_tensor(size), buf
