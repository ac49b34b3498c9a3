"""Performance suite: our integer backends side by side with what users run today.

Python API: :func:`.suite.run_suite` with a :class:`.config.SuiteConfig` (``qgnn bench-suite`` only parses flags).

* :mod:`.suite` - orchestration: the stages below in order, then metrics, targets (if a file is given), outputs.
* :mod:`.config` - :class:`~.config.SuiteConfig` and the row names/labels.
* :mod:`.cora` - the main-graph GCN table (+ :mod:`.gemm_probe`, :mod:`.determinism`, the INT4 size).
* :mod:`.gat` - PyG ``GATConv`` FP32 vs our integer GAT.
* :mod:`.series` / :mod:`.roofline` - latency against graph size; the largest graph against the probes.
* :mod:`.metrics` - the headline ratios (thresholds live in ``examples/targets/*.toml``, :mod:`qgnn_deploy.targets`).
* :mod:`.report` - markdown and PNGs; :mod:`.machine` - CPU, ISA flags, versions.
* :mod:`.runs` - one backend per process, shared model training and export helpers.
* :mod:`.measure` - latency statistics, peak memory (VmHWM), thread pinning (no heavy imports).
* :mod:`.worker` - one backend measured in its own process (``python -m qgnn_deploy.perf.worker SPEC``).
* :mod:`.baselines` - the plain PyG ``GCNConv`` / ``GATConv`` twins of a trained model, ONNX export, ORT's QDQ.
* :mod:`.liveness` - activation-buffer estimate of an ONNX model (shapes observed on the sample).
* :mod:`.graphs` - synthetic graphs for the size series.
"""
