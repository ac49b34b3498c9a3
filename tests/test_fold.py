"""Fold: the integer graph reproduces the fake-quant model, for every arch / prompt / bit-width.

Exactness note: the fake-quant model computes in float32 and the integer graph in
exact integers with fixed-point rescaling; a value within float error of a
rounding boundary may land one code apart.  The tests therefore allow at most a
handful of codes differing by exactly one step (in practice none differ).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qgnn_deploy.data.datasets import make_synthetic_graphs, make_synthetic_nodes
from qgnn_deploy.errors import QgnnError
from qgnn_deploy.fold import fold_model
from qgnn_deploy.fold.parity import graph_output_codes, model_output_codes, parity_report
from qgnn_deploy.ir.testing import awkward_graphs
from qgnn_deploy.models.net import ModelConfig, default_bits
from qgnn_deploy.train.trainer import TrainSettings, train

MAX_ONE_STEP_FRACTION = 1e-3


@pytest.fixture(scope="module")
def synthetic():
    torch.set_num_threads(2)
    return make_synthetic_nodes(num_nodes=240, num_features=16)


def _train(ds, epochs: int = 8, **cfg) -> torch.nn.Module:
    base = dict(arch="gcn", in_dim=ds.num_features, hidden=16, out_dim=ds.num_classes, framework="qat",
                bits=default_bits(8), task=ds.task)
    base.update(cfg)
    return train(ModelConfig(**base), ds, TrainSettings(epochs=epochs, progress=False)).model


def _assert_parity(rep: dict) -> None:
    assert rep["max_code_diff"] <= 1, rep
    assert rep["mismatched_codes"] <= max(2, MAX_ONE_STEP_FRACTION * rep["output_codes"]), rep


@pytest.mark.parametrize("arch", ["gcn", "gin", "sage"])
@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("prompt", [None, "softmax", "lora"])
def test_fold_matches_fake_quant(synthetic, arch, bits, prompt):
    lorap = None if prompt is None else {"k": 4, "rank": 2, "variant": prompt}
    model = _train(synthetic, arch=arch, bits=default_bits(bits), lorap=lorap)
    graph = fold_model(model, max_in_degree=255)
    feeds = {"x": synthetic.data.x.numpy(), "edge_index": synthetic.data.edge_index.numpy()}
    rep = parity_report(model, graph, feeds, synthetic)
    _assert_parity(rep)
    assert rep["test_acc_integer"] == pytest.approx(rep["test_acc_fake_quant"], abs=2 / 100)
    assert graph.float_ops() == ["x_q", "logits"]  # only the boundary computes in float


@pytest.mark.parametrize("mode", ["gpf", "gpf-plus"])
def test_fold_gpf_prompts(synthetic, mode):
    model = _train(synthetic, bits=default_bits(4), gpf={"mode": mode, "k": 3}, lorap={"k": 4, "rank": 2})
    graph = fold_model(model, max_in_degree=255)
    feeds = {"x": synthetic.data.x.numpy(), "edge_index": synthetic.data.edge_index.numpy()}
    _assert_parity(parity_report(model, graph, feeds, synthetic))


@pytest.mark.parametrize("arch", ["gcn", "gin", "sage"])
def test_fold_awkward_graphs(synthetic, arch):
    model = _train(synthetic, arch=arch, bits=default_bits(4), lorap={"k": 4, "rank": 2})
    graph = fold_model(model, max_in_degree=255)
    for name, (x, ei) in awkward_graphs(synthetic.num_features, seed=3).items():
        feeds = {"x": x, "edge_index": ei}
        _, codes_m = model_output_codes(model, feeds)
        _, codes_g = graph_output_codes(graph, feeds)
        diff = np.abs(codes_m - codes_g)
        assert diff.max(initial=0) <= 1, name
        assert (diff > 0).sum() <= 2, name


def test_fold_graph_classification():
    ds = make_synthetic_graphs(num_graphs=60)
    model = _train(ds, epochs=4, arch="gin", bits=default_bits(8), lorap={"k": 4, "rank": 2})
    graph = fold_model(model, max_in_degree=63)
    from qgnn_deploy.fold import sample_feeds_for

    feeds, _ = sample_feeds_for({"dataset": {"name": "synthetic-graphs"}})
    del feeds  # the fixed sample graph; this test checks the smaller set below
    from torch_geometric.data import Batch

    batch = Batch.from_data_list([ds.graphs[i] for i in ds.splits["test"]])
    feeds = {"x": batch.x.numpy(), "edge_index": batch.edge_index.numpy(), "batch": batch.batch.numpy()}
    assert "batch" in {v.name for v in graph.inputs}
    rep = parity_report(model, graph, feeds, ds)
    _assert_parity(rep)


def test_fp32_model_is_refused(synthetic):
    model = _train(synthetic, epochs=2, framework="fp32", bits=default_bits(32))
    with pytest.raises(QgnnError, match="FP32"):
        fold_model(model)


def test_accumulator_overflow_is_ruled_out_at_fold_time(synthetic):
    model = _train(synthetic, epochs=2, arch="gin")
    with pytest.raises(QgnnError, match="accumulator"):
        fold_model(model, max_in_degree=10**7)


def test_int4_weights_are_packed(synthetic):
    model = _train(synthetic, epochs=2, bits=default_bits(4))
    graph = fold_model(model, max_in_degree=255)
    assert graph.op_counts().get("unpack_int4", 0) == 2
    packed = [k for k in graph.initializers if k.endswith("_packed")]
    w = model.layers[0].lin.weight
    assert graph.initializers[packed[0]].nbytes == (w.numel() + 1) // 2


@pytest.mark.parametrize("framework", ["qat", "dq", "a2q", "mixq"])
@pytest.mark.parametrize("lorap", [False, True])
def test_cora_parity_interpreter_and_onnx_runtime(cora_dataset, framework, lorap):
    """On real Cora: interpreter == fake-quant model (within the float caveat), ORT == interpreter bit for bit."""
    from qgnn_deploy.backends.onnx import export_onnx
    from qgnn_deploy.backends.onnx.runner import OnnxRunner

    ds = cora_dataset
    model = _train(ds, epochs=6, framework=framework, bits=default_bits(4),
                   lorap={"k": 8, "rank": 4} if lorap else None)
    graph = fold_model(model)
    feeds = {"x": ds.data.x.numpy(), "edge_index": ds.data.edge_index.numpy()}
    rep = parity_report(model, graph, feeds, ds)
    assert rep["max_code_diff"] <= 2 if framework == "a2q" else rep["max_code_diff"] <= 1, rep
    assert rep["mismatched_codes"] <= 10, rep
    assert rep["test_acc_integer"] == pytest.approx(rep["test_acc_fake_quant"], abs=0.002)
    expected = graph_output_codes(graph, feeds)[0]
    for threads in (1, 2):
        out = OnnxRunner(export_onnx(graph), graph, threads=threads).run(feeds)
        np.testing.assert_array_equal(next(iter(out.values())), expected)


def test_dedupe_initializers_pass():
    from qgnn_deploy.ir.graph import GraphBuilder
    from qgnn_deploy.ir.interpreter import run
    from qgnn_deploy.ir.passes import dedupe_initializers

    b = GraphBuilder()
    x = b.input("x", "int32", ("N", 2))
    t1 = b.const("t1", np.array([[1, 2]], np.int32))
    t2 = b.const("t2", np.array([[1, 2]], np.int32))
    y = b.op("add", [b.op("add", [x, t1], "a"), t2], "y")
    b.output(y, "int32", ("N", 2))
    feeds = {"x": np.arange(6, dtype=np.int32).reshape(3, 2)}
    before = run(b.graph, feeds)["y"]
    assert dedupe_initializers(b.graph) == 1
    assert list(b.graph.initializers) == ["t1"]
    np.testing.assert_array_equal(run(b.graph, feeds)["y"], before)


def test_trimmed_tables_read_like_the_full_ones():
    """lut clips its index, so cutting equal leading/trailing runs to one entry (offset moved) changes no lookup."""
    from qgnn_deploy.fold.tables import trim_table
    from qgnn_deploy.ir.interpreter import KERNELS

    rng = np.random.default_rng(0)
    cases = [np.array([0, 0, 0, 5, 7, 7, 9, 9, 9]), np.array([3]), np.array([4, 4, 4]), np.array([1, 2]),
             np.array([2, 2, 1]), rng.integers(0, 3, 50), np.repeat([0.5, 0.25, 0.25], [3, 1, 4]).astype(np.float32)]
    idx = np.arange(-20, 80, dtype=np.int64)
    for table in cases:
        short, dropped = trim_table(table)
        assert short.dtype == table.dtype and short.size <= table.size
        for offset in (-3, 0, 5):
            np.testing.assert_array_equal(KERNELS["lut"]([idx, short], {"offset": offset - dropped}),
                                          KERNELS["lut"]([idx, table], {"offset": offset}))
    assert trim_table(np.array([0, 0, 0, 5, 7, 7, 9, 9, 9]))[0].tolist() == [0, 5, 7, 7, 9]


@pytest.mark.parametrize("arch", ["gcn", "sage"])
@pytest.mark.parametrize("bits", [8, 4])
def test_edge_tables_are_compact_and_exact(arch, bits):
    """The stored degree lookup returns Q(coefficient) for every degree (and clips beyond), is smaller than the
    trimmed table (a step function at these widths)."""
    from qgnn_deploy.fold.tables import edge_coefficients, edge_table, trim_table
    from qgnn_deploy.quant.fake import FixedFakeQuant
    from qgnn_deploy.quant.spec import QuantSpec

    q = FixedFakeQuant(QuantSpec(bits=bits, kind="unsigned"))
    stored = edge_table(q, arch, 1023)
    values, _ = edge_coefficients(arch, 1023)
    full = q.to_int(torch.as_tensor(values, dtype=torch.float32)).numpy()
    d = np.arange(0, 1024, dtype=np.int64)
    idx = d + 1 if arch == "gcn" else d  # GCN looks up the degree with its self loop
    np.testing.assert_array_equal(stored.lookup(idx), full)
    assert stored.op == "lut_steps"
    thresholds, codes = stored.arrays
    assert codes.dtype == np.uint8 and thresholds.dtype in (np.int8, np.int16)
    assert codes.size == np.unique(full).size  # monotone: one value per distinct code
    assert stored.nbytes < trim_table(full.astype(np.uint8))[0].nbytes


def _lut_and_steps_agree(table: np.ndarray, offset: int, idx: np.ndarray) -> None:
    """The full table, its trimmed ``lut``, its step form and :func:`compact_lookup`'s choice read alike."""
    from qgnn_deploy.fold.tables import StoredLookup, compact_lookup, step_form, trim_table

    want = StoredLookup("lut", (table,), offset).lookup(idx)
    short, dropped = trim_table(table)
    steps = step_form(short, offset - dropped)
    assert steps is not None and steps[1].dtype == table.dtype
    assert np.all(np.diff(steps[0].astype(np.int64)) > 0)
    for stored in (StoredLookup("lut", (short,), offset - dropped), StoredLookup("lut_steps", steps),
                   compact_lookup(table, offset)):
        got = stored.lookup(idx)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want, err_msg=f"{stored.op}: {table.tolist()} offset {offset}")
    chosen = compact_lookup(table, offset)
    assert chosen.nbytes == min(short.nbytes, steps[0].nbytes + steps[1].nbytes)


def test_step_form_reads_like_the_table_property():
    """Property: for random tables (runs, monotone, constant, one entry, int/float dtypes) and offsets, lut and
    lut_steps give identical values at every index, including negative ones and far beyond the table."""
    rng = np.random.default_rng(7)
    # (not int64's extremes: the reference lut's idx + offset wraps there)
    idx = np.concatenate([np.arange(-300, 300), [-(2**40), 2**40]])
    for trial in range(300):
        size = int(rng.integers(1, 120))
        kind = trial % 4
        if kind == 0:  # long runs of few values
            table = np.repeat(rng.integers(-5, 6, size=size), rng.integers(1, 9, size=size))
        elif kind == 1:  # monotone non-increasing (degree coefficients)
            table = np.sort(rng.integers(0, 16, size=size))[::-1]
        elif kind == 2:
            table = rng.integers(0, 256, size=size)
        else:
            table = np.full(size, rng.integers(-9, 9))
        dtype = ("uint8", "int8", "int16", "int64", "float32")[trial % 5]
        table = np.abs(table).astype(dtype) if dtype == "uint8" else table.astype(dtype)
        _lut_and_steps_agree(table, int(rng.integers(-150, 150)), idx.astype(np.int64))


@pytest.mark.parametrize("arch", ["gcn", "sage"])
def test_edge_lookup_forms_agree_on_every_reachable_degree(arch):
    """Both representations of every edge table fold can emit give the same code for every index the graph can
    produce (in-degree 0 .. max_in_degree, + 1 for GCN's self loop) and for any index beyond."""
    from qgnn_deploy.fold.tables import edge_coefficients, edge_table
    from qgnn_deploy.quant.fake import FixedFakeQuant
    from qgnn_deploy.quant.spec import QuantSpec

    for bits in range(2, 9):
        q = FixedFakeQuant(QuantSpec(bits=bits, kind="unsigned"))
        for dmax in (1, 7, 255, 1023, 4095):
            values, offset = edge_coefficients(arch, dmax)
            table = q.to_int(torch.as_tensor(values, dtype=torch.float32)).numpy().astype(np.uint8)
            idx = np.arange(-3, dmax + 6, dtype=np.int64)
            _lut_and_steps_agree(table, offset, idx)
            stored = edge_table(q, arch, dmax)
            deg = np.arange(0, dmax + 2, dtype=np.int64)
            np.testing.assert_array_equal(stored.lookup(deg + 1 if arch == "gcn" else deg),
                                          table[np.minimum(deg, dmax)])


def test_requant_parameters_are_narrow():
    """Multipliers int32 and shifts int8 in the folded graph (requantize widens them to int64)."""
    from qgnn_deploy.fold.tables import requant_arrays

    m, n = requant_arrays(np.array([[2**31 - 1, 5]]), np.array([[62, 0]]))
    assert (m.dtype, n.dtype) == (np.int32, np.int8)
    assert requant_arrays(np.array([2**31]), np.array([0]))[0].dtype == np.int64  # never truncated
    with pytest.raises(ValueError):
        requant_arrays(np.array([1]), np.array([200]))


def test_lorap_basis_packed_or_dropped_when_zero(synthetic):
    """A 4-bit LoRAP basis is stored packed; one that quantizes to all zeros adds nothing and emits no softmax
    branch.  Both stay code-exact against the fake-quant model, and ORT against the interpreter."""
    pytest.importorskip("onnxruntime")
    from qgnn_deploy.backends.onnx import export_onnx
    from qgnn_deploy.backends.onnx.runner import OnnxRunner

    model = _train(synthetic, epochs=2, bits=default_bits(4), lorap={"k": 4, "rank": 2})
    feeds = {"x": synthetic.data.x.numpy(), "edge_index": synthetic.data.edge_index.numpy()}
    prompts = [layer.prompt for layer in model.layers]
    with torch.no_grad():
        for p in prompts:
            p.V.zero_()
    graph = fold_model(model, max_in_degree=255)
    assert not [k for k in graph.initializers if "lorap" in k]
    _assert_parity(parity_report(model, graph, feeds, synthetic))
    with torch.no_grad():
        torch.manual_seed(0)
        for p in prompts:
            p.V.normal_(0.0, 30.0)  # large enough to survive the 4-bit aggregate grid
    graph = fold_model(model, max_in_degree=255)
    packed = graph.initializers["layer0_lorap_basis_packed"]
    assert packed.dtype == np.uint8 and packed.size == (prompts[0].k * model.layers[0].lin.out_features + 1) // 2
    assert "layer0_lorap_exp_table" in graph.initializers
    _assert_parity(parity_report(model, graph, feeds, synthetic))
    expected = graph_output_codes(graph, feeds)[0]
    out = OnnxRunner(export_onnx(graph), graph, threads=1).run(feeds)
    np.testing.assert_array_equal(next(iter(out.values())), expected)


def test_int4_lorap_basis_survives_and_folds_exactly(synthetic):
    """At INT4 the softmax basis sits on the aggregate grid / 2^k: a trained QAT + LoRAP model keeps a non-zero
    integer basis, fold emits the prompt (uint8 exp tables, aggregate scaled by 255 * 2^k), and the folded graph
    reproduces the fake-quant model's output codes; ONNX Runtime reproduces the interpreter."""
    pytest.importorskip("onnxruntime")
    from qgnn_deploy.backends.onnx import export_onnx
    from qgnn_deploy.backends.onnx.runner import OnnxRunner
    from qgnn_deploy.models.prompts import ALPHA_DEN, BASIS_MAX_SHIFT

    model = _train(synthetic, bits=default_bits(4), lorap={"k": 4, "rank": 2})
    feeds = {"x": synthetic.data.x.numpy(), "edge_index": synthetic.data.edge_index.numpy()}
    graph = fold_model(model, max_in_degree=255)
    for i, layer in enumerate(model.layers):
        p = layer.prompt
        shift = p.basis_shift()
        assert 0 < shift <= BASIS_MAX_SHIFT
        step = float(layer.q_aggregate.scale_zp(None)[0])
        assert float(p.q_basis.scale_zp(None)[0]) == step / 2**shift
        p_int = p.q_basis.to_int(p.basis().detach())
        assert p_int.any() and int(p_int.abs().max()) <= p.q_basis.spec.qmax
        assert f"layer{i}_lorap_basis_packed" in graph.initializers
        table = graph.initializers[f"layer{i}_lorap_exp_table"]
        assert table.dtype == np.uint8 and int(table.max()) == 255
        den = ALPHA_DEN << shift
        assert any(n.name == f"layer{i}_lorap_agg_x{den}" for n in graph.nodes)
    rep = parity_report(model, graph, feeds, synthetic)
    assert rep["mismatched_codes"] == 0, rep
    assert rep["test_acc_integer"] == rep["test_acc_fake_quant"]
    expected = graph_output_codes(graph, feeds)[0]
    for threads in (1, 2):
        out = OnnxRunner(export_onnx(graph), graph, threads=threads).run(feeds)
        np.testing.assert_array_equal(next(iter(out.values())), expected)


def test_lorap_basis_shift_follows_the_basis(synthetic):
    """k is the largest shift (<= max_shift) whose range holds the basis: a large basis falls back to the aggregate
    grid instead of clipping, and max_shift 0 is the aggregate grid itself."""
    from qgnn_deploy.models.prompts import BASIS_MAX_SHIFT

    model = _train(synthetic, epochs=2, bits=default_bits(4), lorap={"k": 4, "rank": 2})
    p = model.layers[0].prompt
    step = float(model.layers[0].q_aggregate.scale_zp(None)[0])
    qmax = p.q_basis.spec.qmax
    with torch.no_grad():
        p.U.zero_()
        p.U[0, 0] = 1.0
        p.V.zero_()
        for k in range(BASIS_MAX_SHIFT + 1):
            p.V[0, 0] = qmax * step / 2**k  # exactly the range of shift k
            assert p.basis_shift() == k
            assert int(p.q_basis.to_int(p.basis())[0, 0]) == qmax
        p.V[0, 0] = 1000 * step
        assert p.basis_shift() == 0
        p.q_basis.max_shift.fill_(0)
        p.V[0, 0] = 0.1 * step
        assert p.basis_shift() == 0 and int(p.q_basis.to_int(p.basis())[0, 0]) == 0


def test_lorap_checkpoint_without_basis_shift_loads_as_trained(synthetic, tmp_path):
    """A checkpoint written before the finer basis grid (no ``q_basis.max_shift`` / ``mixer.exp_one`` in its state
    dict) loads as the program it was trained as: basis on the aggregate grid (k = 0), 2^15 uint16 exp tables."""
    from qgnn_deploy.models.prompts import ALPHA_DEN, EXP_ONE_LEGACY
    from qgnn_deploy.train.checkpoint import load_checkpoint, save_checkpoint

    model = _train(synthetic, epochs=2, bits=default_bits(8), lorap={"k": 4, "rank": 2})
    with torch.no_grad():
        for layer in model.layers:  # a basis of ~3 aggregate steps: non-zero on either grid, k = 4 for new models
            p = layer.prompt
            p.V.mul_(3 * float(layer.q_aggregate.scale_zp(None)[0]) / float(p.basis().abs().max()))
            assert p.basis_shift() == 4
    path = save_checkpoint(tmp_path / "new.pt", model, synthetic.describe(), {})
    payload = torch.load(path, weights_only=True)
    payload["state_dict"] = {k: v for k, v in payload["state_dict"].items()
                             if not k.endswith(("q_basis.max_shift", "mixer.exp_one"))}
    assert len(payload["state_dict"]) == len(model.state_dict()) - 2 * len(model.layers)
    torch.save(payload, tmp_path / "old.pt")
    old, _ = load_checkpoint(tmp_path / "old.pt")
    feeds = {"x": synthetic.data.x.numpy(), "edge_index": synthetic.data.edge_index.numpy()}
    for layer in old.layers:
        assert int(layer.prompt.q_basis.max_shift) == 0 and layer.prompt.basis_shift() == 0
        assert int(layer.prompt.mixer.exp_one) == EXP_ONE_LEGACY
    graph = fold_model(old, max_in_degree=255)
    for i in range(len(old.layers)):
        table = graph.initializers[f"layer{i}_lorap_exp_table"]
        assert table.dtype == np.uint16 and int(table.max()) == EXP_ONE_LEGACY
        assert any(n.name == f"layer{i}_lorap_agg_x{ALPHA_DEN}" for n in graph.nodes)
    _assert_parity(parity_report(old, graph, feeds, synthetic))
    # the saved settings win over the model's defaults, and a round trip keeps them
    again = save_checkpoint(tmp_path / "again.pt", old, synthetic.describe(), {})
    assert int(load_checkpoint(again)[0].layers[0].prompt.q_basis.max_shift) == 0
