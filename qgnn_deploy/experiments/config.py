"""What an evaluation depends on (:class:`EvaluationConfig`), its table rows and the names it accepts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FRAMEWORKS = ("qat", "dq", "a2q", "mixq")
PROMPTS = ("none", "lorap", "gpf-lorap")
PROMPT_PARAMS = ("prompt.", "gpf.")
DeployedFn = Callable[[Path, Any], "float | None"]



@dataclass(frozen=True)
class EvaluationConfig:
    """Everything an evaluation depends on; the defaults are ``qgnn evaluate``'s."""

    dataset: str = "cora"
    data_root: str | None = None
    split_seed: int = 0
    arch: str = "gcn"
    heads: int = 8  # --arch gat: heads of the hidden layers
    out_heads: int = 1  # --arch gat: heads of the last layer
    frameworks: tuple[str, ...] = FRAMEWORKS
    bits: tuple[int, ...] = (8, 4)
    prompts: tuple[str, ...] = ("none", "lorap")
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int = 100
    patience: int = 30
    lr: float = 0.01
    weight_decay: float = 5e-4
    hidden: int = 16
    dropout: float = 0.5
    framework_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    lorap_k: int = 8
    lorap_rank: int = 4
    lorap_variant: str = "softmax"
    gpf_k: int = 4
    prompt_mode: str = "joint"
    prompt_epochs: int = 40
    prompt_lr: float = 0.01
    deployed: bool = True
    jobs: int = 1
    threads: int | None = None  # torch threads per job (default: 2 / jobs)
    out_dir: Path = Path("evaluation")
    device: str = "cpu"
    progress: bool = True
    targets: Path | None = None  # a TOML targets file; None: no targets
    command: str = ""  # the command line recorded in the report



@dataclass(frozen=True)
class Row:
    """One table row: a framework at a bit-width with a prompt variant."""

    framework: str
    bits: int
    prompt: str = "none"

    @property
    def key(self) -> str:
        return "fp32" if self.framework == "fp32" else f"{self.framework}-int{self.bits}-{self.prompt}"

    @property
    def base(self) -> Row:
        return Row(self.framework, self.bits, "none")


def plan_rows(frameworks: list[str], bits: list[int], prompts: list[str]) -> list[Row]:
    rows = [Row("fp32", 32)]
    for b in bits:
        for fw in frameworks:
            rows += [Row(fw, b, p) for p in prompts]
    return rows


