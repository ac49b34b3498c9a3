"""The max-in-degree rule: how large a fan-in a folded graph must accept without int32 overflow.

Fold sizes the degree lookup tables and proves the accumulators cannot overflow
for a recorded maximum in-degree; the runtimes check every input against it.
The rule here is the one ``fold_checkpoint``, ``qgnn evaluate`` and the NAS cost
model use: the default 1023, or the next ``2^k - 1`` above four times the sample
graph's largest in-degree (headroom for larger graphs of the same kind).
"""

from __future__ import annotations

from typing import Any

import numpy as np

DEFAULT_MAX_IN_DEGREE = 1023
HEADROOM = 4


def observed_max_in_degree(edge_index: Any, num_nodes: int) -> int:
    """The largest in-degree (edges per destination node) of a graph."""
    dst = np.asarray(edge_index)[1] if np.asarray(edge_index).size else np.zeros(0, np.int64)
    return int(np.bincount(dst, minlength=int(num_nodes)).max(initial=0)) if dst.size else 0


def max_in_degree_for(edge_index: Any, num_nodes: int) -> int:
    """The ``max_in_degree`` to fold with for graphs like this one (``fold_model(model, max_in_degree_for(...))``)."""
    observed = observed_max_in_degree(edge_index, num_nodes)
    return max(DEFAULT_MAX_IN_DEGREE, int(2 ** np.ceil(np.log2(HEADROOM * observed + 1))) - 1)
