"""The do-it-yourself routes: a plain PyG ``GCNConv`` twin of a trained model, its ONNX export, ORT's QDQ.

The twin has the trained model's (fake-quantized) weights and biases and the same
layer shapes, without quantizers or LoRAP prompts: it is the FP32 model a user
would deploy with PyG today (GCN and GAT twins).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from qgnn_deploy.errors import QgnnError


def _as_used(quantizer: Any, tensor: Any) -> np.ndarray:
    """``tensor`` as the quantized model multiplies with it (fake-quantized when its quantizer is on)."""
    t = quantizer(tensor) if quantizer.spec.enabled else tensor
    return t.detach().float().numpy().copy()


def twin_weights(model: Any) -> dict[str, np.ndarray]:
    """``w{i}`` [out, in] and ``b{i}`` of every layer of a QGNN GCN, as the quantized model uses them."""
    import torch

    if model.config.arch != "gcn" or model.config.task != "node":
        raise QgnnError("bench-suite compares GCN node classifiers only (the PyG twin is GCNConv)")
    out: dict[str, np.ndarray] = {}
    with torch.no_grad():
        for i, layer in enumerate(model.layers):
            out[f"w{i}"] = _as_used(layer.q_weight, layer.lin.weight)
            out[f"b{i}"] = layer.bias.detach().float().numpy().copy()
    return out


def _relu_stack(convs: list[Any]) -> Any:
    """``conv -> ReLU -> ... -> conv`` in eval mode: the layer order of both twins (and of our models)."""
    import torch

    class ReluStack(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.convs = torch.nn.ModuleList(convs)

        def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
            for i, conv in enumerate(self.convs):
                if i:
                    x = torch.relu(x)
                x = conv(x, edge_index)
            return x

    return ReluStack().eval()


def build_twin(weights: dict[str, np.ndarray], cached: bool = False) -> Any:
    """A ``torch.nn.Module``: GCNConv -> ReLU -> ... -> GCNConv with ``weights`` loaded."""
    import torch
    from torch_geometric.nn import GCNConv

    n_layers = len([k for k in weights if k.startswith("w")])

    convs = []
    for i in range(n_layers):
        out_dim, in_dim = weights[f"w{i}"].shape
        conv = GCNConv(in_dim, out_dim, cached=cached)
        conv.lin.weight.data.copy_(torch.from_numpy(weights[f"w{i}"]))
        conv.bias.data.copy_(torch.from_numpy(weights[f"b{i}"]))
        convs.append(conv)
    return _relu_stack(convs)


def csr_adj_t(x: Any, edge_index: Any) -> Any:
    """PyG's documented fast path: ``T.ToSparseTensor`` (here with the ``torch.sparse_csr`` layout, as
    torch_sparse is not installed) turns ``edge_index`` into a transposed CSR ``adj_t`` once per dataset."""
    import torch
    import torch_geometric.transforms as T
    from torch_geometric.data import Data

    data = T.ToSparseTensor(layout=torch.sparse_csr)(Data(x=x, edge_index=edge_index, num_nodes=int(x.shape[0])))
    return data.adj_t


class SparseCsrGCN:
    """The FP32 GCN a performance-minded user writes by hand: the normalised adjacency (PyG's ``gcn_norm``:
    self-loops, symmetric degree scaling) precomputed once as a ``torch.sparse_csr`` matrix, then
    ``A @ (X @ W) + b`` per layer with ReLU between layers."""

    def __init__(self, weights: dict[str, np.ndarray], edge_index: Any, num_nodes: int) -> None:
        import torch
        from torch_geometric.nn.conv.gcn_conv import gcn_norm

        ei, w = gcn_norm(edge_index, None, num_nodes, add_self_loops=True)
        self.adj = torch.sparse_coo_tensor(ei.flip(0), w, (num_nodes, num_nodes)).coalesce().to_sparse_csr()
        n_layers = len([k for k in weights if k.startswith("w")])
        self.w_t = [torch.from_numpy(np.ascontiguousarray(weights[f"w{i}"].T)) for i in range(n_layers)]
        self.b = [torch.from_numpy(weights[f"b{i}"]) for i in range(n_layers)]

    def __call__(self, x: Any) -> Any:
        import torch

        for i, (w_t, b) in enumerate(zip(self.w_t, self.b)):
            if i:
                x = torch.relu(x)
            x = self.adj @ (x @ w_t) + b
        return x


def fp32_parameter_bytes(weights: dict[str, np.ndarray]) -> int:
    """FP32 model size: 4 bytes per parameter of the twin."""
    return int(sum(v.size for v in weights.values()) * 4)


def export_twin_onnx(weights: dict[str, np.ndarray], path: Path, feeds: dict[str, np.ndarray]) -> Path:
    """``torch.onnx.export`` with the TorchScript exporter (``dynamo=False``), dynamic N and E, opset 18."""
    import torch

    model = build_twin(weights, cached=False)
    x = torch.from_numpy(feeds["x"])
    ei = torch.from_numpy(feeds["edge_index"])
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(model, (x, ei), str(path), opset_version=18, dynamo=False,
                          input_names=["x", "edge_index"], output_names=["logits"],
                          dynamic_axes={"x": {0: "N"}, "edge_index": {1: "E"}, "logits": {0: "N"}})
    return path


def quantize_qdq(fp32_path: Path, out_path: Path, feeds: dict[str, np.ndarray]) -> Path:
    """ORT ``quantize_static`` (QDQ, u8 activations, s8 weights, MinMax) calibrated on ``feeds``."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"x": feeds["x"], "edge_index": feeds["edge_index"]}])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    quantize_static(str(fp32_path), str(out_path), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=False)
    return out_path


# ------------------------------------------------------------------------------------------------ GAT
def gat_twin_weights(model: Any) -> dict[str, np.ndarray]:
    """Per layer ``w{i}`` [H*C, in], ``att{i}`` [2, H, C] (source, destination), ``b{i}``, ``heads{i}``,
    ``concat{i}`` of a QGNN GAT, with the weights and attention vectors as the quantized model uses them."""
    import torch

    if model.config.arch != "gat" or model.config.task != "node":
        raise QgnnError("the GAT rows compare GAT node classifiers only (the PyG twin is GATConv)")
    out: dict[str, np.ndarray] = {}
    with torch.no_grad():
        for i, layer in enumerate(model.layers):
            out[f"w{i}"] = _as_used(layer.q_weight, layer.lin.weight)
            out[f"att{i}"] = _as_used(layer.q_att_w, layer.att)
            out[f"b{i}"] = layer.bias.detach().float().numpy().copy()
            out[f"heads{i}"] = np.array(layer.heads, np.int64)
            out[f"concat{i}"] = np.array(layer.concat, np.bool_)
    return out


def build_gat_twin(weights: dict[str, np.ndarray]) -> Any:
    """A ``torch.nn.Module``: GATConv -> ReLU -> ... -> GATConv (PyG defaults: self-loops added, LeakyReLU
    slope set to our 51/256) with ``weights`` loaded; takes ``edge_index`` or a sparse ``adj_t``."""
    import torch
    from torch_geometric.nn import GATConv

    from qgnn_deploy.models.gat import SLOPE_MULT, SLOPE_SHIFT

    n_layers = len([k for k in weights if k.startswith("w")])

    convs = []
    for i in range(n_layers):
        heads, concat = int(weights[f"heads{i}"]), bool(weights[f"concat{i}"])
        hc, in_dim = weights[f"w{i}"].shape
        conv = GATConv(in_dim, hc // heads, heads=heads, concat=concat,
                       negative_slope=SLOPE_MULT / 2**SLOPE_SHIFT, dropout=0.0)
        conv.lin.weight.data.copy_(torch.from_numpy(weights[f"w{i}"]))
        conv.att_src.data.copy_(torch.from_numpy(weights[f"att{i}"][0:1]))
        conv.att_dst.data.copy_(torch.from_numpy(weights[f"att{i}"][1:2]))
        conv.bias.data.copy_(torch.from_numpy(weights[f"b{i}"]))
        convs.append(conv)
    return _relu_stack(convs)
