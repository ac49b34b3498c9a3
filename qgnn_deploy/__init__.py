"""qgnn-deploy: quantization-aware-trained GNNs as integer programs on edge CPUs."""

__version__ = "0.1.0"
