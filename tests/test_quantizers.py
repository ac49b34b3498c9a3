"""Every quantizer's forward and backward against hand-computed values.

Scales are chosen as powers of two (or exact binary fractions) so the float32
arithmetic is exact and the expected integers can be written down by hand.
"""

from __future__ import annotations

import math

import pytest
import torch

from qgnn_deploy.quant.fake import (
    FixedFakeQuant,
    RangeFakeQuant,
    TiedFakeQuant,
    WeightFakeQuant,
    int_round,
    round_ste,
)
from qgnn_deploy.quant.frameworks.a2q import A2QNodeQuant, LSQFakeQuant, bucket_of, bucket_table
from qgnn_deploy.quant.frameworks.degree_quant import PercentileFakeQuant, tail_fraction
from qgnn_deploy.quant.frameworks.mixq import MixQActQuant, MixQWeightQuant
from qgnn_deploy.quant.spec import QuantSpec

torch.set_num_threads(2)


def _range_q(spec: QuantSpec, lo: float, hi: float) -> RangeFakeQuant:
    q = RangeFakeQuant(spec)
    q.lo.fill_(lo)
    q.hi.fill_(hi)
    q.initialized.fill_(True)
    return q.eval()


# ----------------------------------------------------------------------------------------- rounding
def test_rounding_modes_on_ties():
    v = torch.tensor([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 1.2, -1.7])
    assert int_round(v, "half_up").tolist() == [-2, -1, 0, 1, 2, 3, 1, -2]
    assert int_round(v, "half_even").tolist() == [-2, -2, -0, 0, 2, 2, 1, -2]
    x = v.clone().requires_grad_(True)
    round_ste(x, "half_up").sum().backward()
    assert x.grad.tolist() == [1.0] * 8  # straight through


# ----------------------------------------------------------------------------------------- plain QAT
X_SIGNED = [-3.0, -0.625, -0.125, 0.125, 0.375, 0.3, 1.875]  # / 0.25 = [-12, -2.5, -0.5, 0.5, 1.5, 1.2, 7.5]


@pytest.mark.parametrize("rounding,q_expected", [
    ("half_up", [-7, -2, 0, 1, 2, 1, 7]),
    ("half_even", [-7, -2, 0, 0, 2, 1, 7]),
])
def test_range_signed_forward_backward(rounding, q_expected):
    q = _range_q(QuantSpec(bits=4, kind="signed", rounding=rounding), -1.75, 0.5)  # scale = 1.75 / 7 = 0.25
    assert float(q.scale_zp(None)[0]) == 0.25
    x = torch.tensor(X_SIGNED, requires_grad=True)
    y = q(x)
    assert y.tolist() == [0.25 * v for v in q_expected]
    assert q.to_int(x.detach()).tolist() == q_expected
    y.backward(torch.arange(1.0, 8.0))
    # clipped entries (-12 -> -7 and 7.5 -> 8 -> 7) get no gradient, the rest pass straight through
    assert x.grad.tolist() == [0.0, 2.0, 3.0, 4.0, 5.0, 6.0, 0.0]


def test_range_observer_is_ema_of_min_max():
    q = RangeFakeQuant(QuantSpec(bits=8, kind="signed"), momentum=0.1).train()
    q(torch.tensor([-1.0, 2.0]))
    assert (float(q.lo), float(q.hi)) == (-1.0, 2.0)
    q(torch.tensor([-3.0, 4.0]))
    assert float(q.lo) == pytest.approx(-1.2) and float(q.hi) == pytest.approx(2.2)


def test_affine_zero_point():
    q = _range_q(QuantSpec(bits=8, kind="affine", rounding="half_even"), -1.0, 3.0)
    scale, zp = q.scale_zp(None)
    s = float(scale)
    assert s == pytest.approx(4 / 255) and zp == 64  # round(1 / (4/255)) = round(63.75)
    x = torch.tensor([0.0, 3.0, -1.0, 5.0, -2.0], requires_grad=True)
    # 3 / s = 191.25 -> 191 + 64 = 255; -1 / s = -63.75 -> -64 + 64 = 0; 5 and -2 clip
    assert q.to_int(x.detach()).tolist() == [64, 255, 0, 255, 0]
    y = q(x)
    assert y.detach().tolist() == pytest.approx([0.0, 191 * s, -64 * s, 191 * s, -64 * s], abs=1e-6)
    y.sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 1.0, 0.0, 0.0]
    p = q.qparams()
    assert p.zero_point == 64 and int(p.qmin) == 0 and int(p.qmax) == 255 and p.dtype == "uint8"


def test_unsigned_range():
    q = _range_q(QuantSpec(bits=2, kind="unsigned"), -5.0, 1.5)  # negative lo ignored: scale = 1.5 / 3
    assert float(q.scale_zp(None)[0]) == 0.5
    assert q(torch.tensor([-0.3, 0.24, 0.25, 1.1, 9.0])).tolist() == [0.0, 0.0, 0.5, 1.0, 1.5]


def test_per_channel_weights():
    w = torch.nn.Parameter(torch.tensor([[0.25, -1.5, 0.75], [0.75, -0.125, 0.375]]))
    q = WeightFakeQuant(QuantSpec(bits=3, kind="signed", axis=0), w)  # qmax 3: scales 0.5 and 0.25
    scale, _ = q.scale_zp(None)
    assert scale.reshape(-1).tolist() == [0.5, 0.25]
    y = q(w)
    # row 0: [0.5, -3, 1.5] -> [1, -3, 2]; row 1: [3, -0.5, 1.5] -> [3, 0, 2]  (half up)
    assert y.tolist() == [[0.5, -1.5, 1.0], [0.75, 0.0, 0.5]]
    assert q.to_int(w.detach()).tolist() == [[1, -3, 2], [3, 0, 2]]
    y.sum().backward()
    assert w.grad.tolist() == [[1.0] * 3] * 2
    p = q.qparams()
    assert p.axis == 0 and p.scale.shape == (2, 1)


def test_fixed_and_tied():
    fixed = FixedFakeQuant(QuantSpec(bits=8, kind="unsigned"))
    assert float(fixed.scale_zp(None)[0]) == pytest.approx(1 / 255)
    assert fixed.to_int(torch.tensor([0.0, 3 / 255, 1.0, 1.5])).tolist() == [0, 3, 255, 255]
    base = _range_q(QuantSpec(bits=4, kind="signed"), -1.75, 0.5)  # scale 0.25
    tied = TiedFakeQuant(QuantSpec(bits=4, kind="signed"), base)
    half = TiedFakeQuant(QuantSpec(bits=8, kind="signed"), base, divisor=2.0)
    assert float(tied.scale_zp(None)[0]) == 0.25 and float(half.scale_zp(None)[0]) == 0.125
    x = torch.tensor([0.3, -0.1, 20.0], requires_grad=True)
    assert tied(x).tolist() == [0.25, 0.0, 1.75]
    assert half(x).tolist() == [0.25, -0.125, 127 * 0.125]
    base.lo.fill_(-3.5)  # the tied quantizer follows its source
    assert float(tied.scale_zp(None)[0]) == 0.5


def test_off_quantizer_is_identity():
    q = RangeFakeQuant(QuantSpec(bits=32)).train()
    x = torch.randn(5)
    assert torch.equal(q(x), x) and not bool(q.initialized)


# ----------------------------------------------------------------------------------------- Degree-Quant
def test_percentile_observer_clips_tails():
    assert tail_fraction(8) == 0.001 and tail_fraction(4) == 0.01 and tail_fraction(2) == 0.01
    q = PercentileFakeQuant(QuantSpec(bits=4, kind="signed")).train()
    x = torch.cat([torch.arange(1.0, 1001.0), -torch.arange(1.0, 1001.0), torch.zeros(5000), torch.tensor([1e6])])
    lo, hi = q.batch_range(x)
    # 2001 nonzeros; 1% tails: k = round(0.01 * 2000) + 1 = 21 -> -980; k = round(0.99 * 2000) + 1 = 1981 -> 981
    assert float(lo) == -980.0 and float(hi) == 981.0
    q(x)
    assert float(q.hi) == 981.0  # first batch initialises the EMA


def test_percentile_observer_sparse_input_keeps_range():
    q = PercentileFakeQuant(QuantSpec(bits=4, kind="affine")).train()
    x = torch.zeros(100, 100)
    x[::7, ::3] = 1.0  # ~5% nonzero: a plain 1% percentile over all entries would be 0
    lo, hi = q.batch_range(x)
    assert float(lo) == 0.0 and float(hi) == 1.0


# ----------------------------------------------------------------------------------------- A2Q
def test_lsq_forward_backward():
    q = LSQFakeQuant(QuantSpec(bits=4, kind="signed")).eval()
    q.lo.fill_(-3.5)
    q.hi.fill_(1.0)
    q.initialized.fill_(True)  # range step 3.5 / 7 = 0.5, times exp(log_ratio = 0)
    x = torch.tensor([0.3, -0.7, 5.0], requires_grad=True)
    y = q(x)  # v = [0.6, -1.4, 10] -> q = [1, -1, 7 (clipped)]
    assert y.tolist() == [0.5, -0.5, 3.5]
    y.sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 0.0]
    # dy/ds = (q - v) inside, qmax when clipped: 0.4 + 0.4 + 7 = 7.8; d s / d log_ratio = s = 0.5
    assert float(q.log_ratio.grad) == pytest.approx(7.8 * 0.5, rel=1e-5)
    with torch.no_grad():
        q.log_ratio.fill_(0.6931471805599453)  # learned correction doubles the step
    assert float(q.scale_zp(None)[0]) == pytest.approx(1.0)


def test_lsq_affine_follows_range_with_zero_point():
    q = LSQFakeQuant(QuantSpec(bits=8, kind="affine")).train()
    q(torch.tensor([-1.0, 3.0]))
    step, zp = q.scale_zp(None)
    assert float(step) == pytest.approx(4 / 255) and zp == 64


def test_degree_buckets():
    deg = torch.tensor([0, 1, 2, 3, 6, 7, 100, 10**6])
    assert bucket_of(deg, 4).tolist() == [0, 1, 1, 2, 2, 3, 3, 3]
    table = bucket_table(4)  # lut with clipping: degrees beyond the table use the last entry
    assert table == [0, 1, 1, 2, 2, 2, 2, 3]
    assert [table[min(int(d), len(table) - 1)] for d in deg] == bucket_of(deg, 4).tolist()


def test_a2q_node_quant_forward_backward():
    from qgnn_deploy.quant.fake import QuantContext

    q = A2QNodeQuant(QuantSpec(bits=4, kind="signed"), num_buckets=3).eval()
    q.amax.copy_(torch.tensor([3.5, 1.75, 3.0]))
    q.initialized.fill_(True)
    with torch.no_grad():
        q.bit_delta[2] = -1.0  # bucket 2 at 3 bits: qmax 3
    assert q.step_table().tolist() == [0.5, 0.25, 1.0]  # amax_b / qmax_b
    ctx = QuantContext(degree=torch.tensor([0, 1, 5]))  # buckets 0, 1, 2
    x = torch.tensor([[0.3, -0.3], [0.3, 0.1], [0.3, 5.0]], requires_grad=True)
    y = q(x, ctx)
    assert y.tolist() == [[0.5, -0.5], [0.25, 0.0], [0.0, 3.0]]
    assert q.to_int(x.detach(), ctx).tolist() == [[1, -1], [1, 0], [0, 3]]
    y.sum().backward()
    assert x.grad.tolist() == [[1.0, 1.0], [1.0, 1.0], [1.0, 0.0]]
    # step gradients dy/ds: bucket 0: (1 - 0.6) + (-1 + 0.6) = 0; bucket 1: (1 - 1.2) + (0 - 0.4) = -0.6;
    # bucket 2: (0 - 0.3) + 3 (clipped at qmax) = 2.7; d s / d r = s
    assert q.log_ratio.grad.tolist() == pytest.approx([0.0, -0.6 * 0.25, 2.7], abs=1e-5)
    # bits act through qmax: dL/dqmax = dL/ds * ds/dqmax (s = amax / qmax) + s * [clipped at the top]
    # bucket 1: -0.6 * (-1.75 / 49) = 0.0214; bucket 2: 2.7 * (-3 / 9) + 1 = 0.1; dqmax/db = 2^(b-1) ln 2
    ln2 = math.log(2)
    assert q.bit_delta.grad.tolist() == pytest.approx([0.0, 0.6 * 1.75 / 49 * 8 * ln2, 0.1 * 4 * ln2], rel=1e-4)
    p = q.qparams()
    assert p.per_node["mode"] == "degree_bucket" and p.bits.tolist() == [4, 4, 3]
    assert p.qmax.tolist() == [7, 7, 3] and p.qmin.tolist() == [-7, -7, -3]
    assert p.scale.tolist() == [0.5, 0.25, 1.0]


def test_a2q_node_observer_tracks_bucket_ranges():
    from qgnn_deploy.quant.fake import QuantContext

    q = A2QNodeQuant(QuantSpec(bits=8, kind="affine"), num_buckets=3, momentum=0.5).train()
    ctx = QuantContext(degree=torch.tensor([0, 0, 1]))  # bucket 2 absent
    q(torch.tensor([[1.0, 0.0], [0.5, 0.0], [2.0, 0.0]]), ctx)
    assert q.amax.tolist() == [1.0, 2.0, 2.0] and not bool(q.signed_range)  # absent bucket: global max
    q(torch.tensor([[3.0, 0.0], [0.0, 0.0], [2.0, 0.0]]), ctx)
    assert q.amax.tolist() == [2.0, 2.0, 2.0]  # EMA with momentum 0.5; bucket 2 unchanged
    assert q.qparams().dtype == "uint8" and q.qparams().qmax.tolist() == [255] * 3


# ----------------------------------------------------------------------------------------- MixQ
def test_mixq_activation_mix_and_logit_gradient():
    q = MixQActQuant(QuantSpec(bits=4, kind="signed"), (2, 4, 8), init_bias=0.0)
    assert q.candidates == (2, 4)
    q.lo.fill_(-3.5)
    q.hi.fill_(3.5)
    q.initialized.fill_(True)
    q.eval()
    x = torch.tensor([1.0, 3.0], requires_grad=True)
    y = q(x)  # 2-bit (scale 3.5): [0, 3.5]; 4-bit (scale 0.5): [1, 3]; mixed 50/50
    assert y.tolist() == [0.5, 3.25]
    y.sum().backward()
    # dL/dtheta_k = pi_k (g_k - sum_j pi_j g_j), g = [3.5, 4.0]
    assert q.logits.grad.tolist() == pytest.approx([-0.125, 0.125])
    assert x.grad.tolist() == [1.0, 1.0]
    assert float(q.expected_bits().detach()) == pytest.approx(3.0)
    assert q.chosen_bits() == 4  # tie goes to the higher bit-width


def test_mixq_weight_mix():
    w = torch.nn.Parameter(torch.tensor([[1.0, 0.5]]))
    q = MixQWeightQuant(QuantSpec(bits=8, kind="signed", axis=0), (2, 8), init_bias=0.0)
    q.bind(w)
    with torch.no_grad():
        q.logits.copy_(torch.tensor([0.0, math.log(3.0)]))  # pi = [0.25, 0.75]
    y = q(w)  # 2-bit: scale 1 -> [1, 1] (0.5 rounds up); 8-bit: scale 1/127 -> [1, 64/127]
    assert y.tolist()[0] == pytest.approx([1.0, 0.25 * 1 + 0.75 * 64 / 127])
    assert q.chosen_bits() == 8
