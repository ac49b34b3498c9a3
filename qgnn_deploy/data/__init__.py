"""Datasets: spec strings (``data/specs.py``) through PyG's loaders, user files, embedded synthetic graphs."""

from qgnn_deploy.data.datasets import GraphDataset
from qgnn_deploy.data.files import wrap_data
from qgnn_deploy.data.specs import ACCEPTED_FORMS, load_dataset, parse_spec

__all__ = ["ACCEPTED_FORMS", "GraphDataset", "load_dataset", "parse_spec", "wrap_data"]
