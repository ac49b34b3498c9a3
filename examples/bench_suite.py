"""Thin wrapper: ``python examples/bench_suite.py [ARGS]`` == ``qgnn bench-suite [ARGS]``.

The full measurement that produced ``examples/results/bench_suite.md``::

    python examples/bench_suite.py --model model_int8.pt --int4-model model_int4.pt \\
        --out-dir examples/results --work-dir /tmp/qgnn-bench-suite --targets examples/targets/bench_suite.toml

The GAT pair alone (``examples/results/bench_suite_gat.md``)::

    python examples/bench_suite.py --no-gcn --gat-model gat_int8_lorap.pt --out-dir examples/results \\
        --name bench_suite_gat --targets examples/targets/bench_suite.toml
"""

from __future__ import annotations

import sys

from qgnn_deploy.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench-suite", *sys.argv[1:]]))
