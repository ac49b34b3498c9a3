"""Experiment runners with a Python API (the ``qgnn`` commands are thin layers over them).

* :mod:`.evaluation` - :class:`~.evaluation.EvaluationConfig` + :func:`~.evaluation.run_evaluation`: the
  benchmark table (FP32 and every QAT framework at each bit-width, +/- prompts, over seeds) on any dataset.

The bench-suite's API is :func:`qgnn_deploy.perf.suite.run_suite`.
"""
