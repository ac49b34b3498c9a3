"""What a bench-suite run depends on (:class:`SuiteConfig`) and the names of its rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

PYG_VARIANTS = (("pyg_eager", "eager", "PyG FP32 eager"), ("pyg_cached", "cached", "PyG FP32 eager, cached norm"),
                ("pyg_compile", "compile", "PyG FP32 torch.compile"),
                ("pyg_csr", "csr", "PyG FP32 on CSR adj_t (ToSparseTensor), cached norm"),
                ("torch_sparse_csr", "sparse_csr", "FP32 torch.sparse_csr GCN by hand, A @ (X @ W)"))
FP32_ROWS = (*(k for k, _, _ in PYG_VARIANTS), "ort_fp32")  # "fastest FP32" is the fastest of these
LABELS = {**{k: lab for k, _, lab in PYG_VARIANTS}, "ort_fp32": "ORT FP32 (torch.onnx.export)",
          "ort_qdq": "ORT quantize_static QDQ", "ours_ort": "ours: integer ONNX in ORT",
          "ours_tvm": "ours: TVM x86-64 (untuned)", "ours_tvm_tuned": "ours: TVM x86-64 (tuned), uint8 input",
          "ours_ort_u8": "ours: integer ONNX in ORT, uint8 input",
          "ours_ort_sorted": "ours: integer ONNX in ORT, edges sorted once",
          "pyg_cached_sorted": "PyG FP32 eager, cached norm, edges sorted once",
          "ours_tvm_u8": "ours: TVM x86-64 (untuned), uint8 input",
          "ours_tvm_u8_sorted": "ours: TVM x86-64 (untuned), uint8 input, edges sorted once"}
OURS = ("ours_ort", "ours_tvm", "ours_ort_u8", "ours_tvm_u8", "ours_tvm_tuned")
# Our rows per artifact: "fp32_input" takes x as the user has it; "uint8_input" (qgnn-export --integer-input) takes
# the features quantized once per dataset, like an image model that takes uint8 pixels.
ARTIFACT_OF = {"ours_ort": "fp32_input", "ours_tvm": "fp32_input", "ours_tvm_tuned": "tuned",
               "ours_ort_u8": "uint8_input", "ours_tvm_u8": "uint8_input"}
SERIES_KEYS = ("pyg_eager", "pyg_cached", "pyg_cached_sorted", "ort_fp32", "ours_ort", "ours_ort_sorted", "ours_tvm",
               "ours_tvm_u8", "ours_tvm_u8_sorted")
SERIES_ORT_ROWS = ("ours_ort", "ours_ort_sorted")  # our ONNX artifact in ORT: edges as given, sorted once on the host
SERIES_ORT_BASELINES = ("ort_fp32", "pyg_cached", "pyg_cached_sorted")  # what those rows must beat (the fastest)
SERIES_TARGET_FROM = 100_000  # node count from which the series target compares those rows


@dataclass
class SuiteConfig:
    """Everything a run depends on (recorded in the JSON)."""

    out_dir: Path
    work_dir: Path
    model: Path | None = None
    int4_model: Path | None = None
    quick: bool = False
    threads: int = 2
    warmup: int = 10
    repeats: int = 50
    processes: int = 3  # each Cora / GAT latency row in this many processes, round-robin, pooled (perf.pooling)
    sizes: list[int] = field(default_factory=lambda: [10_000, 100_000, 1_000_000])
    series_features: int = 128
    degree: float = 10.0
    tune: int = 0
    torch_compile: bool = True
    tvm: bool = True
    int4: bool = True
    det_runs: int = 5
    epochs: int = 200
    data_root: str | None = None
    command: str = ""
    timeout: float = 1800.0
    targets: Path | None = None
    gcn: bool = True
    gat: bool = True
    gat_model: Path | None = None
    gat_heads: int = 8
    gat_hidden: int = 8
    gat_epochs: int = 200
    tvm_target: str = "x86_64"  # the preset the TVM rows are built for (must run on this host)

