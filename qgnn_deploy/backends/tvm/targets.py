"""Named compile targets for the TVM backend.

Users pick a board by name (``--target cortex-a72``) instead of writing an LLVM
target; anything else can be given as a TVM target JSON string.  The table is
rendered into the README by :func:`target_table_markdown`.

| preset           | triple            | mcpu                   | mattr               | GEMM kernel | cross |
|------------------|-------------------|------------------------|---------------------|-------------|-------|
| `x86_64`         | x86_64-linux-gnu  | detected (`znver4`...) | host features       | best of the x86 rows | no |
| `x86_64-generic` | x86_64-linux-gnu  | `x86-64`               | (SSE2 baseline)     | SSE2 pmaddwd | no   |
| `x86-64-v2`      | x86_64-linux-gnu  | `x86-64-v2`            | (SSE4.2)            | SSE2 pmaddwd | no   |
| `x86-64-v3`      | x86_64-linux-gnu  | `x86-64-v3`            | (AVX2, FMA)         | AVX2 pmaddwd | no   |
| `x86-64-v3-vnni` | x86_64-linux-gnu  | `x86-64-v3`            | `+avxvnni`          | AVX-VNNI    | no    |
| `x86-64-v4`      | x86_64-linux-gnu  | `x86-64-v4`            | (AVX-512 F/BW/DQ/VL) | AVX-512BW pmaddwd | no |
| `x86-64-v4-vnni` | x86_64-linux-gnu  | `x86-64-v4`            | `+avx512vnni`       | AVX-512 VNNI | no   |
| `arm64`          | aarch64-linux-gnu | `generic`              | `+neon`             | NEON smlal  | yes   |
| `cortex-a53`     | aarch64-linux-gnu | `cortex-a53`           | `+neon`             | NEON smlal  | yes   |
| `cortex-a55`     | aarch64-linux-gnu | `cortex-a55`           | `+neon,+dotprod`    | SDOT        | yes   |
| `cortex-a72`     | aarch64-linux-gnu | `cortex-a72`           | `+neon`             | NEON smlal  | yes   |
| `cortex-a76`     | aarch64-linux-gnu | `cortex-a76`           | `+neon,+dotprod`    | SDOT        | yes   |
| `cortex-a78`     | aarch64-linux-gnu | `cortex-a78`           | `+neon,+dotprod`    | SDOT        | yes   |
| `neoverse-n1`    | aarch64-linux-gnu | `neoverse-n1`          | `+neon,+dotprod`    | SDOT        | yes   |
| `neoverse-v1`    | aarch64-linux-gnu | `neoverse-v1`          | `+neon,+dotprod,+i8mm` | I8MM smmla | yes  |

Any other CPU: ``--target '{"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a55",
"mattr": ["+neon", "+dotprod"], "num-cores": 4}'`` (x86_64 or aarch64 triples; aarch64 is cross-compiled).
``num-cores`` sets how many row ranges the aggregation kernels split into (results never depend on it).

Typical boards: Raspberry Pi 3 / Zero 2 (A53), Pi 4 (A72), Pi 5 / RK3588 big cores (A76), RK3566/RK3588
little cores (A55), Graviton2 / Ampere Altra (Neoverse N1), Graviton3 (Neoverse V1; its I8MM kernel also suits
Cortex-A710/X2 and Neoverse N2 through a target JSON with ``+i8mm``).  ARM kernels: docs/targets.md.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from typing import Any

from qgnn_deploy.errors import QgnnError

CROSS_CXX = "aarch64-linux-gnu-g++"
CROSS_PACKAGE = "g++-aarch64-linux-gnu"
AARCH64_TRIPLE = "aarch64-linux-gnu"


@dataclass(frozen=True)
class TargetPreset:
    """A resolved compile target: a TVM target dict plus how to link for it."""

    name: str
    triple: str
    tvm_target: dict[str, Any]
    cross_compile: bool
    description: str = ""
    features: tuple[str, ...] = field(default_factory=tuple)

    @property
    def is_aarch64(self) -> bool:
        return self.triple.startswith("aarch64")

    @property
    def has_vnni(self) -> bool:
        return "avx512vnni" in self.features

    @property
    def has_dotprod(self) -> bool:
        return "+dotprod" in self.tvm_target.get("mattr", ()) or "dotprod" in self.features

    def tvm(self) -> Any:
        """The ``tvm.target.Target`` (imported lazily: TVM takes a second to import)."""
        import tvm

        return tvm.target.Target(self.tvm_target)

    def cross_compiler(self) -> Any:
        """The ``fcompile`` for ``export_library``, or ``None`` for the host compiler."""
        if not self.cross_compile:
            return None
        check_cross_compiler()
        from tvm.support import cc

        return cc.cross_compiler(CROSS_CXX)

    def manifest(self) -> dict[str, Any]:
        return {"name": self.name, "triple": self.triple, "tvm_target": dict(self.tvm_target),
                "cross_compiled": self.cross_compile}


def check_cross_compiler() -> str:
    """Path of the aarch64 C++ cross compiler, or a QgnnError naming the package to install."""
    path = shutil.which(CROSS_CXX)
    if path is None:
        raise QgnnError(f"the aarch64 cross compiler {CROSS_CXX!r} is not on PATH; install it with "
                        f"'apt-get install {CROSS_PACKAGE}' (Debian/Ubuntu package {CROSS_PACKAGE})")
    return path


def _arm(name: str, mcpu: str, dotprod: bool, description: str, i8mm: bool = False) -> TargetPreset:
    feats = ("neon", *(("dotprod",) if dotprod else ()), *(("i8mm",) if i8mm else ()))
    mattr = [f"+{f}" for f in feats]
    tgt = {"kind": "llvm", "mtriple": AARCH64_TRIPLE, "mcpu": mcpu, "mattr": mattr, "num-cores": 4}
    return TargetPreset(name, AARCH64_TRIPLE, tgt, True, description, feats)


def _x86(name: str, mcpu: str, extra: str | None, feats: tuple[str, ...], description: str) -> TargetPreset:
    """A portable x86-64 psABI level (``mcpu`` x86-64-v2/v3/v4), optionally plus one VNNI feature."""
    tgt: dict[str, Any] = {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": mcpu, "num-cores": 2}
    if extra:
        tgt["mattr"] = [f"+{extra}"]
    return TargetPreset(name, "x86_64-linux-gnu", tgt, False, description, feats + ((extra,) if extra else ()))


_V3 = ("sse4.2", "avx2", "fma")
_V4 = (*_V3, "avx512f", "avx512bw", "avx512dq", "avx512vl")
# Static presets; ``x86_64`` is filled in on first use because it probes the host CPU.
_STATIC: dict[str, TargetPreset] = {
    "x86_64-generic": TargetPreset(
        "x86_64-generic", "x86_64-linux-gnu",
        {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "x86-64", "num-cores": 2}, False,
        "portable x86-64 (SSE2 baseline), runs on any x86-64 Linux", ()),
    "x86-64-v2": _x86("x86-64-v2", "x86-64-v2", None, ("sse4.2",),
                      "x86-64-v2 (SSE4.2, POPCNT): any x86-64 CPU since ~2009"),
    "x86-64-v3": _x86("x86-64-v3", "x86-64-v3", None, _V3,
                      "x86-64-v3 (AVX2, FMA): Haswell+, AMD Zen 1-4, AVX2 Atom/Celeron (Gracemont)"),
    "x86-64-v3-vnni": _x86("x86-64-v3-vnni", "x86-64-v3", "avxvnni", _V3,
                           "x86-64-v3 + AVX-VNNI (256-bit): Alder Lake and later client CPUs, Zen 5"),
    "x86-64-v4": _x86("x86-64-v4", "x86-64-v4", None, _V4,
                      "x86-64-v4 (AVX-512 F/BW/DQ/VL, no VNNI): Skylake-SP/X, Zen 4 built portably"),
    "x86-64-v4-vnni": _x86("x86-64-v4-vnni", "x86-64-v4", "avx512vnni", _V4,
                           "x86-64-v4 + AVX-512 VNNI: Cascade Lake+, Ice Lake, Sapphire Rapids, Zen 4/5"),
    "arm64": _arm("arm64", "generic", False, "generic ARMv8-A with NEON, runs on any 64-bit ARM Linux board"),
    "cortex-a53": _arm("cortex-a53", "cortex-a53", False, "Cortex-A53 (Raspberry Pi 3, Pi Zero 2, many SBCs)"),
    "cortex-a55": _arm("cortex-a55", "cortex-a55", True, "Cortex-A55 (RK3566, little cores of RK3588), SDOT"),
    "cortex-a72": _arm("cortex-a72", "cortex-a72", False, "Cortex-A72 (Raspberry Pi 4, RK3399 big cores)"),
    "cortex-a76": _arm("cortex-a76", "cortex-a76", True, "Cortex-A76 (Raspberry Pi 5, RK3588 big cores), SDOT"),
    "cortex-a78": _arm("cortex-a78", "cortex-a78", True, "Cortex-A78 (Jetson Orin CPU, recent phones), SDOT"),
    "neoverse-n1": _arm("neoverse-n1", "neoverse-n1", True, "Neoverse N1 (AWS Graviton2, Ampere Altra), SDOT"),
    "neoverse-v1": _arm("neoverse-v1", "neoverse-v1", True, "Neoverse V1 (AWS Graviton3), I8MM (smmla)", i8mm=True),
}

# LLVM feature names probed on the host and on JSON targets; they pick the GEMM (gemm_x86.x86_gemm_kind) and,
# with avx512vbmi, LoRAP's one-kernel softmax (fusion.softmax_into_vbmi).
_HOST_FEATURES = ("sse4.2", "avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512vnni", "avxvnni",
                  "avx512vbmi")


def host_preset() -> TargetPreset:
    """The ``x86_64`` preset: this machine's CPU as LLVM names it, with its features."""
    import tvm
    from tvm.target import codegen

    mcpu = codegen.llvm_get_system_cpu()
    cores = os.cpu_count() or 1
    tgt = {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": mcpu, "num-cores": cores}
    probe = tvm.target.Target(tgt)
    feats = tuple(f for f in _HOST_FEATURES if codegen.llvm_cpu_has_features(f, probe))
    return TargetPreset("x86_64", "x86_64-linux-gnu", tgt, False,
                        f"this host's CPU ({mcpu}; {', '.join(feats) or 'baseline'}), not portable", feats)


class _Targets(dict):
    """``TARGETS``: preset name -> TargetPreset; the host entry is probed lazily."""

    def __missing__(self, key: str) -> TargetPreset:
        if key == "x86_64":
            preset = host_preset()
            self[key] = preset
            return preset
        raise KeyError(key)

    def names(self) -> list[str]:
        return ["x86_64", *_STATIC]


TARGETS: _Targets = _Targets(_STATIC)


def runs_on_host(preset: TargetPreset) -> bool:
    """Whether a library built for ``preset`` can run on this machine: x86-64, and every CPU feature the preset
    assumes is one this host's CPU has (as LLVM reports them, the names the presets use)."""
    import platform

    if preset.is_aarch64 or platform.machine() not in ("x86_64", "AMD64"):
        return False
    return set(preset.features) <= set(TARGETS["x86_64"].features)


def preset_names() -> list[str]:
    return TARGETS.names()


def resolve_target(spec: str) -> TargetPreset:
    """A preset name or a TVM target JSON string -> :class:`TargetPreset`."""
    spec = spec.strip()
    if spec in TARGETS.names():
        return TARGETS[spec]
    if spec.startswith("{"):
        try:
            tgt = json.loads(spec)
        except json.JSONDecodeError as exc:
            raise QgnnError(f"--target is not valid JSON: {exc}") from exc
        if not isinstance(tgt, dict) or tgt.get("kind") != "llvm":
            raise QgnnError('a target JSON must be an object with "kind": "llvm" (CPU targets only)')
        try:
            import tvm

            parsed = tvm.target.Target(tgt)
        except Exception as exc:  # noqa: BLE001 - TVM raises assorted types for bad targets
            raise QgnnError(f"TVM rejects the target {spec}: {str(exc).splitlines()[0]}") from exc
        triple = str(tgt.get("mtriple") or "x86_64-linux-gnu")
        cross = triple.startswith("aarch64")
        if not (cross or triple.startswith("x86_64")):
            raise QgnnError(f"unsupported target triple {triple!r}: only x86_64 and aarch64 Linux are supported")
        feats = tuple(str(a).lstrip("+") for a in tgt.get("mattr", ()))
        if not cross:
            from tvm.target import codegen

            feats += tuple(f for f in _HOST_FEATURES if codegen.llvm_cpu_has_features(f, parsed))
        name = "custom-" + ("aarch64" if cross else "x86_64")
        return TargetPreset(name, triple, tgt, cross, "user-supplied TVM target", feats)
    raise QgnnError(f"unknown target {spec!r}; valid names: {', '.join(TARGETS.names())} "
                    '(or a TVM target JSON such as \'{"kind": "llvm", "mtriple": "aarch64-linux-gnu", '
                    '"mcpu": "cortex-a55", "mattr": ["+neon", "+dotprod"]}\')')


X86_GEMM_NAMES = {"vnni": "AVX-512 VNNI (`vpdpbusd` zmm)", "avxvnni": "AVX-VNNI (`vpdpbusd` ymm)",
                  "avx512bw": "AVX-512BW (`vpmaddwd` zmm)", "avx2": "AVX2 (`vpmaddwd` ymm)",
                  "avx2-pair": "AVX2 (`vpmaddubsw` ymm, pair-bounded weights; else `vpmaddwd` ymm)",
                  "sse2": "SSE2 (`pmaddwd` xmm)"}


def _gemm_name(p: TargetPreset) -> str:
    if not p.is_aarch64:
        from .gemm_x86 import x86_gemm_kind

        return X86_GEMM_NAMES[x86_gemm_kind(p.features)]
    from .gemm_arm import ARM_KERNEL_NAMES, arm_gemm_kind

    return ARM_KERNEL_NAMES[arm_gemm_kind(p)]


def target_table_markdown() -> str:
    """The preset table as markdown, for the README."""
    rows = ["| preset | triple | mcpu | mattr | int8 GEMM | cross-compiled | for |", "|---|---|---|---|---|---|---|"]
    for name in TARGETS.names():
        p = TARGETS[name]
        t = p.tvm_target
        rows.append(f"| `{name}` | {p.triple} | {t.get('mcpu', '')} | {','.join(t.get('mattr', [])) or '-'} | "
                    f"{_gemm_name(p)} | {'yes' if p.cross_compile else 'no'} | {p.description} |")
    rows.append("")
    rows.append("Any other CPU: pass a TVM target JSON, e.g. `--target '{\"kind\": \"llvm\", \"mtriple\": "
                "\"aarch64-linux-gnu\", \"mcpu\": \"cortex-a55\", \"mattr\": [\"+neon\", \"+dotprod\"]}'`.")
    return "\n".join(rows)
