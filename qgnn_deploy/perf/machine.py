"""The host: CPU name, int8-relevant ISA flags, our GEMM kernel choice, library versions."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

ISA_FLAGS = ("avx2", "avx512vnni", "avxvnni", "dotprod", "i8mm")  # /proc/cpuinfo spells some differently


def isa_flags(cpuinfo: str) -> dict[str, bool]:
    """The int8-relevant ISA tier flags of a ``/proc/cpuinfo`` text (x86 ``flags`` / arm64 ``Features``)."""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.startswith(("flags", "Features")):
            flags |= set(line.split(":", 1)[-1].split())
    alias = {"avx512vnni": "avx512_vnni", "avxvnni": "avx_vnni", "dotprod": "asimddp"}  # our names -> Linux's
    return {f: f in flags or alias.get(f, f) in flags for f in ISA_FLAGS}


def machine(tvm_target: str = "x86_64") -> dict[str, Any]:
    """This host, plus the int8 GEMM kernel our TVM rows get when built for ``tvm_target``."""
    cpu = platform.processor() or ""
    text = ""
    try:
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    kernel = None
    if platform.machine() in ("x86_64", "AMD64"):
        try:
            from qgnn_deploy.backends.tvm.compile import gemm_kind
            from qgnn_deploy.backends.tvm.targets import TARGETS

            kernel = gemm_kind(TARGETS[tvm_target])
        except Exception:  # noqa: BLE001 - TVM missing: the report still names the CPU
            kernel = None
    return {"cpu": cpu, "cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "isa_flags": isa_flags(text), "gemm_kernel": kernel, "tvm_target": tvm_target}


def versions() -> dict[str, str]:
    out = {}
    for mod in ("torch", "torch_geometric", "onnx", "onnxruntime", "tvm", "numpy"):
        try:
            out[mod] = str(__import__(mod).__version__)
        except Exception:  # noqa: BLE001
            out[mod] = "unavailable"
    return out


