"""``qgnn export`` / ``qgnn-export``: fold a trained checkpoint and write a deployable artifact."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from qgnn_deploy.commands import add_parser
from qgnn_deploy.errors import QgnnError


def register(subparsers: Any) -> None:
    p = add_parser(subparsers, "export", __doc__)
    p.add_argument("model", type=Path, help="model.pt written by qgnn-train")
    p.add_argument("--target", default="onnx",
                   help="onnx, x86_64, arm64, a board preset (see docs/targets.md), or a TVM target JSON; "
                        "every target also gets model.onnx")
    p.add_argument("--out", type=Path, required=True, help="artifact directory to write (atomic: complete or absent)")
    p.add_argument("--tune", type=int, default=0, metavar="N",
                   help="meta-schedule trials for compiled targets (0: no tuning; a previous export's "
                        "tuning/ database in --out is reused)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.add_argument("--sample-graph", "--sample-input", dest="sample_graph", type=Path, default=None, metavar="NPZ",
                   help="sample input (.npz with x, edge_index[, batch]) to bundle and check parity on, "
                        "instead of the checkpoint's own test graph; with targets y (and masks) every stage is "
                        "scored on it")
    p.add_argument("--data-root", default=None,
                   help="where the checkpoint's dataset lives on this machine (default $QGNN_DATA_ROOT or the cache)")
    p.add_argument("--assume-vnni", action="store_true",
                   help="the deployment CPUs' int8 dot product does not saturate (x86 with VNNI, arm64): keep "
                        "full-range int8 weights in the u8 x s8 MatMulInteger instead of u8 x u8 with weights + 128 "
                        "(~1.2-1.4x faster GEMM; inexact on older x86)")
    p.add_argument("--integer-input", action="store_true",
                   help="the artifact takes the node features already quantized (x_q, uint8 for a per-tensor input "
                        "quantizer; scale and zero point in manifest.json) instead of FP32 x: quantize the features "
                        "once per dataset, not on every call (4x smaller input buffer, no float op in the model)")
    p.add_argument("--check-emulated", action="store_true",
                   help="aarch64 targets: run the cross-compiled library once under qemu-user on the sample input "
                        "and write the artifact only if it is bit-exact (needs the sysroot of "
                        "export/make_a64_sysroot.sh; emulated, so no timing)")
    p.add_argument("--allow-mismatch", action="store_true",
                   help="export even when the folded integer graph disagrees with the checkpoint's fake-quant model "
                        "beyond the documented tolerance (docs/security.md); recorded in manifest.json")
    p.set_defaults(func=run)


def load_sample(path: Path) -> dict[str, np.ndarray]:
    """Arrays of a user-supplied sample graph (no pickles)."""
    if not path.is_file():
        raise QgnnError(f"sample graph {path} not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as exc:  # BadZipFile, ValueError for object arrays, OSError
        raise QgnnError(f"sample graph {path} is not a readable .npz file ({type(exc).__name__})") from None


def accuracy_by_stage(result: Any, saturation_safe: bool) -> dict[str, Any] | None:
    """Test accuracy (MAE for regression) of each stage on the fold's sample, the ONNX model run through ORT."""
    from qgnn_deploy.backends.onnx import OnnxRunner, export_onnx
    from qgnn_deploy.data.scoring import metric_name, score
    from qgnn_deploy.ir.passes import quantize_input_feeds

    payload = getattr(result, "payload", None)
    ds = getattr(result, "dataset", None)
    parity = (getattr(result, "report", None) or {}).get("parity") or {}
    if not payload or ds is None:
        return None
    graph = result.graph
    feeds = quantize_input_feeds(graph, dict(result.sample_feeds))
    logits = OnnxRunner(export_onnx(graph, saturation_safe=saturation_safe), graph).run(feeds)[graph.outputs[0].name]
    key = metric_name(ds)
    metrics = payload.get("metrics", {}) if isinstance(payload, dict) else {}
    stages = {"checkpoint (training run)": metrics.get(f"test_{key}") if "sample_input" not in parity else None,
              "fake_quant": parity.get(f"test_{key}_fake_quant"),
              "integer_interpreter": parity.get(f"test_{key}_integer"),
              "onnx_runtime": score(logits, ds)}
    return {k: v for k, v in stages.items() if v is not None}


def fold_parity_gate(report: dict[str, Any], result: Any, allow_mismatch: bool) -> dict[str, Any]:
    """Refuse a fold whose integer graph disagrees with the fake-quant model (unless ``--allow-mismatch``).

    Returns the manifest entries that record the decision.
    """
    from qgnn_deploy.fold.parity import parity_violation

    parity = report.get("parity")
    if not parity:
        return {}
    framework = (getattr(result, "graph", None) and result.graph.meta.get("framework")) or None
    why = parity_violation(parity, framework)
    entry = {"fold_parity": {k: parity[k] for k in ("output_codes", "mismatched_codes", "max_code_diff")
                             if k in parity} | {"within_tolerance": why is None}}
    if why is None:
        return entry
    if not allow_mismatch:
        raise QgnnError(f"{why}; no artifact written (a corrupt checkpoint? --allow-mismatch exports it anyway)")
    return entry | {"allow_mismatch": True}


def run(args: argparse.Namespace) -> int:
    from qgnn_deploy.exporting import check_target, export_graph

    model = Path(args.model)
    if not model.is_file():
        raise QgnnError(f"checkpoint {model} not found")
    if args.tune < 0:
        raise QgnnError("--tune must be >= 0")
    preset = check_target(args.target)  # fail fast, before the (slow) fold
    if args.check_emulated:
        from qgnn_deploy.exporting import require_emulation

        require_emulation(preset)
    if Path(args.out).exists() and not args.force:
        raise QgnnError(f"{args.out} already exists (pass --force to replace it)")
    sample = load_sample(args.sample_graph) if args.sample_graph else None
    from qgnn_deploy.fold import fold_checkpoint

    if sample is not None and "x" in sample:  # fold and check parity on the user's graph, not the training set
        result = fold_checkpoint(model, data_root=args.data_root, sample=sample, sample_path=args.sample_graph)
        if result.report.get("parity"):  # say which graph the parity figures were measured on
            result.report["parity"]["sample_input"] = str(args.sample_graph)
    else:
        result = fold_checkpoint(model, data_root=args.data_root)
    if args.integer_input:
        from qgnn_deploy.ir.passes import prequantize_input

        try:
            prequantize_input(result.graph)
        except ValueError as exc:
            raise QgnnError(f"--integer-input: {exc}") from None
    if sample is None:
        feeds = dict(result.sample_feeds)  # the checkpoint's own graph
    else:  # the user's graph (float x, or x_q already quantized for an --integer-input artifact)
        dtypes = {"x": np.float32, "x_q": None, "edge_index": np.int64, "batch": np.int64}
        feeds = {k: v if dtypes[k] is None else v.astype(dtypes[k]) for k, v in sample.items() if k in dtypes}
    report_extra = dict(getattr(result, "report", None) or {})
    manifest_extra = fold_parity_gate(report_extra, result, args.allow_mismatch)
    if sample is not None:
        report_extra["sample_input"] = {"source": str(args.sample_graph)}
    accuracy = accuracy_by_stage(result, saturation_safe=not args.assume_vnni)
    regression = bool(getattr(getattr(result, "dataset", None), "regression", False))
    if accuracy:
        report_extra["mae" if regression else "accuracy"] = accuracy
    manifest = export_graph(result.graph, args.target, args.out, sample_feeds=feeds,
                            source={"path": str(model), "sha256": result.checkpoint_sha256},
                            report_extra=report_extra, tune_trials=args.tune, force=args.force,
                            saturation_safe=not args.assume_vnni, manifest_extra=manifest_extra,
                            check_emulated=args.check_emulated)
    files = manifest.get("files", {})
    print(f"wrote {args.out} (target {manifest['target']}): " + ", ".join(
        f"{name} {entry['bytes']} B" for name, entry in files.items() if entry.get("role") in ("onnx", "tvm_library")))
    if manifest.get("allow_mismatch"):
        fp = manifest["fold_parity"]
        print(f"  WARNING: exported with --allow-mismatch: {fp.get('mismatched_codes')}/{fp.get('output_codes')} "
              "output codes differ from the fake-quant model (recorded in manifest.json)")
    if accuracy:
        what = "MAE" if regression else "accuracy"
        print(f"  test {what}: " + ", ".join(f"{k} {v:.4f}" for k, v in accuracy.items()))
    print(f"  parameters {manifest['model_bytes']} B, peak buffers {manifest['buffer_bytes']} B on the sample, "
          f"max in-degree {manifest['max_in_degree']}, ORT bit-exact vs interpreter on the sample: yes")
    if args.check_emulated:
        print("  TVM aarch64 library bit-exact vs interpreter on the sample under qemu-user (emulated): yes")
    return 0
