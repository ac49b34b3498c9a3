"""Hand-built integer graphs and awkward input graphs for backend parity tests.

``op_zoo_graph`` exercises every op in :data:`qgnn_deploy.ir.ops.OPS` in a
GCN-like layer with an integer-softmax prompt, so a backend that reproduces it
bit-exactly on :func:`awkward_graphs` covers the whole catalogue.
"""

from __future__ import annotations

import numpy as np

from qgnn_deploy.ir.graph import Graph, GraphBuilder
from qgnn_deploy.quant.fixed_point import quantize_multiplier


def pack_int4(w: np.ndarray) -> np.ndarray:
    """Pack int8 values in [-8, 7] two per byte, low nibble first."""
    flat = w.reshape(-1).astype(np.int16)
    if flat.size and (flat.min() < -8 or flat.max() > 7):
        raise ValueError("pack_int4: values must lie in [-8, 7]")
    nib = (flat & 0x0F).astype(np.uint8)
    if nib.size % 2:
        nib = np.concatenate([nib, np.zeros(1, np.uint8)])
    return (nib[0::2] | (nib[1::2] << 4)).astype(np.uint8)


def random_edge_index(n: int, e: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, n, size=(2, e), dtype=np.int64) if n else np.zeros((2, 0), np.int64)


def awkward_graphs(features: int, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Named (x float32 [N,F], edge_index int64 [2,E]) cases that break naive kernels."""
    rng = np.random.default_rng(seed)

    def feats(n: int) -> np.ndarray:
        return rng.normal(0.0, 1.0, size=(n, features)).astype(np.float32)

    cases: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    cases["random"] = (feats(60), random_edge_index(60, 300, rng))
    iso = random_edge_index(40, 80, rng)
    iso = iso[:, (iso[0] < 30) & (iso[1] < 30)]  # nodes 30..39 are isolated
    cases["isolated_nodes"] = (feats(40), iso)
    loops = np.concatenate([random_edge_index(25, 50, rng), np.tile(np.arange(25), (2, 1))], axis=1)
    cases["self_loops"] = (feats(25), loops)
    dup = random_edge_index(20, 30, rng)
    cases["duplicate_edges"] = (feats(20), np.concatenate([dup, dup, dup[:, :5]], axis=1))
    hub_src = np.arange(1, 200, dtype=np.int64)
    hub = np.stack([hub_src, np.zeros_like(hub_src)])
    cases["hub"] = (feats(200), np.concatenate([hub, random_edge_index(200, 100, rng)], axis=1))
    csr = random_edge_index(50, 400, rng)
    csr = csr[:, np.argsort(csr[1], kind="stable")]  # destinations ascending (CSR order; kernels take a fast path)
    cases["csr_order"] = (feats(50), np.concatenate([csr, [[3], [49]]], axis=1))  # + an edge into the last node
    cases["single_node"] = (feats(1), np.zeros((2, 0), np.int64))
    cases["single_node_loop"] = (feats(1), np.zeros((2, 1), np.int64))
    return cases


STEP_THRESHOLDS = np.array([-3, -1, -1, 0, 2, 7, 40, 150], np.int16)  # a duplicate, and below/above any degree


def step_lookups(b: GraphBuilder, deg: str) -> str:
    """int32 [N, 1] sum of three ``lut_steps`` of the in-degree: K = 8 on ``deg - 4`` (negative for low degrees,
    exactly on thresholds, below the first and above the last one in the awkward graphs), K = 1 and K = 0."""
    shifted = b.op("sub", [deg, b.const("c4", np.array([[4]], np.int32))], "deg_minus4")
    k8 = b.op("lut_steps", [shifted, b.const("steps8_t", STEP_THRESHOLDS),
                            b.const("steps8_v", np.array([5, -7, 3, 9, -1, 6, -4, 2, 8], np.int8))], "steps8")
    k1 = b.op("lut_steps", [deg, b.const("steps1_t", np.array([3], np.int32)),
                            b.const("steps1_v", np.array([1, 20], np.uint8))], "steps1")
    k0 = b.op("lut_steps", [deg, b.const("steps0_t", np.zeros(0, np.int8)),
                            b.const("steps0_v", np.array([-2], np.int8))], "steps0")
    k8_32, k1_32 = (b.op("cast", [k], f"{k}_32", dtype="int32") for k in (k8, k1))
    total = b.op("add", [k8_32, k1_32], "steps_81")
    return b.op("add", [total, b.op("cast", [k0], "steps0_32", dtype="int32")], "steps_sum")


def op_zoo_graph(features: int = 12, hidden: int = 8, prompts: int = 4, seed: int = 0) -> Graph:
    """A GCN-like layer + integer-softmax prompt + SAGE-style concat using every op."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder()
    x = b.input("x", "float32", ("N", features))
    ei = b.input("edge_index", "int64", (2, "E"))
    src = b.op("take_row", [ei], "src", index=0)
    dst = b.op("take_row", [ei], "dst", index=1)

    xq = b.op("quantize", [x], "x_q", scale=0.05, zero_point=128, qmin=0, qmax=255, dtype="uint8")
    w4 = rng.integers(-8, 8, size=(features, hidden)).astype(np.int8)
    w = b.op("unpack_int4", [b.const("w_packed", pack_int4(w4))], "w", shape=[features, hidden])
    acc = b.op("matmul", [xq, w], "lin_acc", a_zero_point=128)
    bias = b.const("bias", rng.integers(-50, 50, size=(1, hidden)).astype(np.int32))
    acc = b.op("add", [acc, bias], "lin_bias")
    m, n = quantize_multiplier(0.05 * 0.1 / 0.08)
    h = b.op("requantize", [acc], "h", multiplier=m, shift=n, zero_point=0, qmin=-127, qmax=127, dtype="int8")

    # GCN-style symmetric normalisation through a degree LUT (per-node factors).
    deg = b.op("degree", [dst, x], "deg")
    deg1 = b.op("add", [deg, b.const("one", np.ones((1, 1), np.int32))], "deg_plus_self")
    table = np.round(255.0 / np.sqrt(np.arange(1, 1025))).astype(np.int32)
    dfac = b.op("lut", [deg1, b.const("dinv_table", table)], "dinv_q", offset=-1)
    h32 = b.op("cast", [h], "h32", dtype="int32")
    msg_src = b.op("mul", [h32, dfac], "h_scaled")
    msgs = b.op("gather_rows", [msg_src, src], "messages")
    agg = b.op("scatter_add", [msgs, dst, x], "agg_sum")
    agg = b.op("add", [agg, msg_src], "agg_self")
    mrow, nrow = quantize_multiplier(0.08 / 255 / 255 / 0.1, acc_bound=2.0**31 * 255)
    mult = b.op("mul", [b.op("cast", [dfac], "dfac64", dtype="int64"), b.const("m_agg", np.array([[mrow]], np.int64))],
                "row_mult")
    shift = b.const("row_shift", np.array([[nrow]], np.int64))
    aggq = b.op("requantize", [agg, mult, shift], "agg_q", zero_point=0, dtype="int8")

    # Integer softmax over k prompts, then a prompt added in a shared int32 accumulator.
    wa = rng.integers(-100, 100, size=(hidden, prompts)).astype(np.int8)
    score = b.op("matmul", [aggq, b.const("w_score", wa)], "score_acc")
    score = b.op("requantize", [score], "score_q", multiplier=1, shift=6, zero_point=0, dtype="int8")
    smax = b.op("reduce_max", [score], "score_max", axis=1, keepdims=True)
    s32 = b.op("cast", [score], "score32", dtype="int32")
    d = b.op("sub", [s32, b.op("cast", [smax], "smax32", dtype="int32")], "score_shift")
    exp_table = np.round(2**15 * np.exp(np.arange(-255, 1) * 0.05)).astype(np.int32)
    e = b.op("lut", [d, b.const("exp_table", exp_table)], "exp_q", offset=255)
    tot = b.op("reduce_sum", [e], "exp_sum", axis=1, keepdims=True)
    num = b.op("add", [b.op("mul", [e, b.const("c510", np.array(510, np.int32))], "exp_x510"), tot], "alpha_num")
    alpha = b.op("div_floor", [num, b.op("mul", [tot, b.const("c2", np.array(2, np.int32))], "den")], "alpha32")
    alpha = b.op("cast", [alpha], "alpha_q", dtype="uint8")
    pmat = rng.integers(-127, 128, size=(prompts, hidden)).astype(np.int8)
    pacc = b.op("matmul", [alpha, b.const("prompt_basis", pmat)], "prompt_acc")
    agg255 = b.op("mul", [b.op("cast", [aggq], "agg32", dtype="int32"), b.const("c255", np.array(255, np.int32))],
                  "agg_x255")
    pre = b.op("add", [agg255, pacc], "prompted")
    # per-head weights: alpha [N, prompts] repeated over hidden // prompts columns (GAT's coefficient expansion)
    if hidden % prompts == 0:
        heads = b.op("repeat_cols", [b.op("cast", [alpha], "alpha_i32", dtype="int32")], "alpha_heads",
                     repeats=hidden // prompts)
        pre = b.op("add", [pre, b.op("mul", [heads, b.op("cast", [aggq], "agg32b", dtype="int32")], "agg_heads")],
                   "prompted_heads")
    mx = b.op("scatter_max", [b.op("gather_rows", [h32, src], "h_src"), dst, x], "agg_max")
    mx = b.op("add", [mx, step_lookups(b, deg)], "agg_max_stepped")
    mx = b.op("clamp", [mx, ], "agg_max_relu", lo=0, hi=127)
    both = b.op("concat", [pre, mx], "cat", axis=1)
    yq = b.op("requantize", [both], "y_q", multiplier=m, shift=n + 8, zero_point=0, qmin=-128, qmax=127,
              dtype="int8")
    y = b.op("dequantize", [yq], "y", scale=0.1, zero_point=0)
    b.output(y, "float32", ("N", 2 * hidden))
    g = b.graph
    g.meta.update({"task": "node", "max_in_degree": 1023, "num_classes": 2 * hidden})
    g.validate()
    return g


def pooled_zoo_graph(features: int = 6, hidden: int = 5, seed: int = 1) -> Graph:
    """Graph-level variant: per-row quantize (A2Q-style) and sum pooling by ``batch``."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder()
    x = b.input("x", "float32", ("N", features))
    b.input("edge_index", "int64", (2, "E"))
    batch = b.input("batch", "int64", ("N",))
    scale = b.const("row_scale", np.array([[0.03]], np.float32) * np.ones((1, 1), np.float32))
    qmin = b.const("row_qmin", np.array([[-8]], np.int64))
    qmax = b.const("row_qmax", np.array([[7]], np.int64))
    xq = b.op("quantize_rows", [x, scale, qmin, qmax], "x_q", dtype="int8")
    w = rng.integers(-127, 128, size=(features, hidden)).astype(np.int8)
    acc = b.op("matmul", [xq, b.const("w", w)], "acc")
    pooled = b.op("pool_sum", [acc, batch], "pooled")
    yq = b.op("requantize", [pooled], "y_q", multiplier=3, shift=7, zero_point=0, dtype="int8")
    y = b.op("dequantize", [yq], "y", scale=0.2, zero_point=0)
    b.output(y, "float32", ("G", hidden))
    g = b.graph
    g.meta.update({"task": "graph", "max_in_degree": 1 << 20})
    g.validate()
    return g


def lut_steps_graph(idx_dtype: str = "int64", seed: int = 2) -> tuple[Graph, dict[str, np.ndarray]]:
    """``lut_steps`` for K = 0..9 and 33 (random sorted thresholds with duplicates, int8/int16/int32) on an index
    ``i [N, 1]`` of ``idx_dtype``, concatenated into one int32 [N, 11] output, and feeds holding the dtype's
    extremes, every threshold and its neighbours."""
    rng = np.random.default_rng(seed)
    info = np.iinfo(idx_dtype)
    b = GraphBuilder()
    i = b.input("i", idx_dtype, ("N", 1))
    cols, probes = [], [int(info.min), int(info.max), 0, -1, 1]
    for k in [*range(10), 33]:
        tdt = ("int8", "int16", "int32")[k % 3]
        lo, hi = max(int(np.iinfo(tdt).min), int(info.min)), min(int(np.iinfo(tdt).max), int(info.max))
        t = np.sort(rng.integers(lo, hi, size=k, endpoint=True))
        if k >= 4:
            t[2] = t[1]  # a duplicate threshold: its value is never read
        t[:k // 3] = np.sort(rng.integers(max(lo, -5), min(hi, 5), size=k // 3, endpoint=True))  # small ones too
        t = np.sort(t).astype(tdt)
        vdt = ("int8", "uint8", "int16", "int32")[k % 4]
        v = rng.integers(np.iinfo(vdt).min, np.iinfo(vdt).max, size=k + 1, endpoint=True).astype(vdt)
        out = b.op("lut_steps", [i, b.const(f"t{k}", t), b.const(f"v{k}", v)], f"steps{k}")
        cols.append(b.op("cast", [out], f"steps{k}_32", dtype="int32"))
        probes += [int(x) + d for x in t for d in (-1, 0, 1)]
    y = b.op("concat", cols[:8], "cat_a", axis=1)
    y = b.op("concat", [y, *cols[8:]], "cat", axis=1)
    b.output(y, "int32", ("N", len(cols)))
    g = b.graph
    g.validate()
    vals = np.clip(np.array(probes + rng.integers(-300, 300, 64).tolist(), dtype=object), int(info.min),
                   int(info.max)).astype(idx_dtype)
    return g, {"i": vals.reshape(-1, 1)}
