"""Performance suite: our integer backends side by side with what users run today.

* :mod:`.measure` - latency statistics, peak memory (VmHWM), thread pinning (no heavy imports).
* :mod:`.worker` - one backend measured in its own process (``python -m qgnn_deploy.perf.worker SPEC``).
* :mod:`.baselines` - the plain PyG ``GCNConv`` twin of a trained model, its ONNX export, ORT's QDQ.
* :mod:`.liveness` - activation-buffer estimate of an ONNX model (shapes observed on the sample).
* :mod:`.graphs` - synthetic graphs for the size series.
* :mod:`.suite` - the whole run: Cora table, size series, roofline note, targets, JSON/PNG/markdown.
"""
