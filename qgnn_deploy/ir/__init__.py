"""Integer intermediate representation, its op catalogue and reference interpreter."""

from qgnn_deploy.ir.graph import Graph, GraphBuilder, Node, ValueInfo
from qgnn_deploy.ir.interpreter import IROverflowError, run
from qgnn_deploy.ir.ops import OPS

__all__ = ["Graph", "GraphBuilder", "Node", "ValueInfo", "OPS", "run", "IROverflowError"]
