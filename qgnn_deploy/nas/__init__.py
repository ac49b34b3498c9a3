"""LPGNAS: differentiable search of GNN architecture and per-component quantisation.

One round: a supernet relaxes every choice to a softmax (or straight-through Gumbel) mixture and is
trained by back-propagation (weights on the train split, architecture logits on the validation
split plus ``lambda`` times the expected model size and buffer size); the arg-max is mapped onto a
normal :class:`~qgnn_deploy.models.net.ModelConfig`, retrained with QAT and saved with
``save_checkpoint``, so fold, export, compile and benchmark need no special case.

Search space, per layer ``l`` (the full table with the deployable mapping is ``SEARCH_SPACE.md``):

===================  =========================================  ===========================================
choice               candidates                                 deployable (``space="deployable"``)
===================  =========================================  ===========================================
aggregation          sum / mean / max                           one global ``arch``: (sum, gcn) -> ``gcn``,
neighbour weighting  GCN norm ``1/sqrt(d_i d_j)`` / 1 / attn     (mean, const) -> ``sage``, (sum, const) ->
                                                                ``gin``; max and attention: full space only
activation           relu / relu6 / identity (hidden layers)    relu
hidden width         16 / 32 / 64 (configurable)                one global ``width`` -> ``hidden``
bits: weight         2 / 4 / 8 (+ FP32 with ``allow_fp32``)     ``layer_bits[l]["weight"]``
bits: layer input    2 / 4 / 8 (+ FP32)                         ``layer_bits[l]["input"]``
bits: message        2 / 4 / 8 (+ FP32)                         ``["message"]`` (GIN: ``["hidden"]``)
bits: aggregation    2 / 4 / 8 (+ FP32)                         ``layer_bits[l]["aggregate"]``
===================  =========================================  ===========================================

Edge coefficients and the output stay at 8 bits (``default_bits(8)``).  Model size and buffer size
follow :mod:`qgnn_deploy.ir.analysis`, computed on a shape-only fold of the candidate (:mod:`qgnn_deploy.nas.cost`).
"""

from qgnn_deploy.nas.cost import Cost, config_cost
from qgnn_deploy.nas.search import SearchOutcome, SearchSettings, retrain, save_searched, search
from qgnn_deploy.nas.space import Discretised, SearchSpace, to_model_config
from qgnn_deploy.nas.supernet import SuperNet

__all__ = ["Cost", "Discretised", "SearchOutcome", "SearchSettings", "SearchSpace", "SuperNet", "config_cost",
           "retrain", "save_searched", "search", "to_model_config"]
