"""Fixtures shared by the test modules: the embedded synthetic dataset and an offline Cora root.

``-m slow`` selects the long suites the default run excludes (``bash export/run.sh test-all`` runs both).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def _has_cora_raw(root: Path) -> bool:
    from qgnn_deploy.data.datasets import PLANETOID_FILES

    return all((root / "Cora" / "raw" / f).is_file() for f in PLANETOID_FILES)


@pytest.fixture(scope="session")
def synthetic_dataset():
    """``load_dataset("synthetic")``: the embedded node-classification graph (600 nodes, 4 classes), built once."""
    from qgnn_deploy.data.specs import load_dataset

    return load_dataset("synthetic")


@pytest.fixture(scope="session")
def cora_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset root where ``load_dataset("cora", root)`` works offline, or skip.

    ``$QGNN_DATA_ROOT`` when it already holds the Planetoid raw files; else a fresh session directory that
    the Planetoid loader fills from the read-only shared copy (``$QGNN_SHARED_DATASETS`` or ``../shared/datasets``);
    else, only with ``QGNN_ALLOW_DOWNLOAD=1``, a fresh directory PyG downloads into.
    """
    from qgnn_deploy.data.pyg_loaders import shared_planetoid

    env = os.environ.get("QGNN_DATA_ROOT")
    if env and _has_cora_raw(Path(env)):
        return Path(env)
    if shared_planetoid("Cora") is None and not os.environ.get("QGNN_ALLOW_DOWNLOAD"):
        pytest.skip("Cora is not available offline: set QGNN_DATA_ROOT to a root with Cora/raw/ind.cora.*, "
                    "provide ../shared/datasets/planetoid, or allow a download with QGNN_ALLOW_DOWNLOAD=1")
    return tmp_path_factory.mktemp("datasets")


@pytest.fixture(scope="session")
def cora_dataset(cora_root: Path):
    """Cora (standard Planetoid split) loaded once per session from :func:`cora_root`."""
    from qgnn_deploy.data.specs import load_dataset

    return load_dataset("cora", cora_root)
