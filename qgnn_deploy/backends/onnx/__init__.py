"""ONNX backend: integer graph -> standard ONNX (opset >= 18) run by ONNX Runtime's CPU provider."""

from qgnn_deploy.backends.onnx import handlers as _handlers  # noqa: F401  (fills HANDLERS)
from qgnn_deploy.backends.onnx.exporter import DEFAULT_OPSET, HANDLERS, export_onnx, infer_dtypes, save_onnx
from qgnn_deploy.backends.onnx.runner import OnnxRunner, kernel_report, validate_feeds

__all__ = ["DEFAULT_OPSET", "HANDLERS", "OnnxRunner", "export_onnx", "infer_dtypes", "kernel_report", "save_onnx",
           "validate_feeds"]
