"""QAT frameworks behind one interface; a new framework is one module + one registry line.

A framework decides *which* quantizer each model component gets and may add a
per-forward context (Degree-Quant's protective mask), a loss penalty (A2Q's
memory term, MixQ's bit penalty) and an epoch hook (MixQ fixes its bits).
"""

from __future__ import annotations

import importlib

from qgnn_deploy.quant.frameworks.base import Framework

_MODULES = {
    "fp32": "qgnn_deploy.quant.frameworks.base:FP32",
    "qat": "qgnn_deploy.quant.frameworks.base:PlainQAT",
    "dq": "qgnn_deploy.quant.frameworks.degree_quant:DegreeQuant",
    "a2q": "qgnn_deploy.quant.frameworks.a2q:A2Q",
    "mixq": "qgnn_deploy.quant.frameworks.mixq:MixQ",
}
FRAMEWORK_NAMES = tuple(_MODULES)


def framework_class(name: str) -> type[Framework]:
    """The framework class registered under a CLI name (class attributes such as ``parity_tolerance``)."""
    if name not in _MODULES:
        raise KeyError(f"unknown QAT framework {name!r}; choose from {', '.join(_MODULES)}")
    module, cls = _MODULES[name].split(":")
    return getattr(importlib.import_module(module), cls)


def get_framework(name: str, **options) -> Framework:
    """Instantiate a framework by its CLI name (``fp32``, ``qat``, ``dq``, ``a2q``, ``mixq``)."""
    return framework_class(name)(**options)
