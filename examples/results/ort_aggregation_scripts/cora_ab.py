"""A/B of Cora ONNX exports in ORT (issue 12): per-model latency and ORT profiler breakdown, interleaved.

    python cora_ab.py export CKPT OUTDIR TAG     # writes TAG_fp32in.onnx, TAG_u8in.onnx (+ TAG_i64rq_* if the
                                                 # exporter has requantize=), and ort_fp32.onnx (torch.onnx.export)
    python cora_ab.py time CKPT REPS MODEL.onnx...   # checks each against the interpreter at 1 and 2 threads

Run ``export`` once with PYTHONPATH=/work/main (the baseline) and once with the branch, then ``time`` on all
files.  Reports median/min 1-thread CPU ms (``time.process_time``), median 2-thread wall ms, and the
1-thread profiler's per-op-type kernel ms.
"""

from __future__ import annotations

import inspect
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnxruntime as ort


def _graphs(ckpt: str):
    from qgnn_deploy.fold import fold_checkpoint
    from qgnn_deploy.ir.passes import prequantized_copy, quantize_input_feeds

    fold = fold_checkpoint(ckpt)
    feeds = {k: np.ascontiguousarray(v) for k, v in fold.sample_feeds.items()}
    twin = prequantized_copy(fold.graph)
    return fold, {"fp32in": (fold.graph, feeds), "u8in": (twin, quantize_input_feeds(twin, feeds))}


def export(ckpt: str, out: Path, tag: str) -> None:
    from qgnn_deploy.backends.onnx import export_onnx, save_onnx

    fold, graphs = _graphs(ckpt)
    out.mkdir(parents=True, exist_ok=True)
    for kind, (g, _) in graphs.items():
        save_onnx(export_onnx(g), str(out / f"{tag}_{kind}.onnx"))
        if "requantize" in inspect.signature(export_onnx).parameters:
            save_onnx(export_onnx(g, requantize="int64"), str(out / f"{tag}_i64rq_{kind}.onnx"))
    if not (out / "ort_fp32.onnx").exists():
        from qgnn_deploy.perf.baselines import export_twin_onnx, twin_weights

        export_twin_onnx(twin_weights(fold.model), out / "ort_fp32.onnx", graphs["fp32in"][1])


def _session(path: str, threads: int, prof: str | None = None) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    if prof:
        so.enable_profiling = True
        so.profile_file_prefix = prof
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def _profile(path: str, feeds: dict[str, np.ndarray], runs: int = 20) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        s = _session(path, 1, os.path.join(tmp, "p"))
        for _ in range(runs + 2):
            s.run(None, feeds)
        ev = json.loads(Path(s.end_profiling()).read_text())
    win = sorted((e["ts"], e["ts"] + e["dur"]) for e in ev if e.get("name") == "model_run")[2:]
    per: dict[str, float] = defaultdict(float)
    for e in ev:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and any(a <= e["ts"] <= b for a, b in win):
            per[e["args"]["op_name"]] += e["dur"] / len(win) / 1e3
    return per


def time_models(ckpt: str, reps: int, models: list[str]) -> None:
    from qgnn_deploy.ir import run

    fold, graphs = _graphs(ckpt)
    feeds_of, sessions = {}, {}
    for m in models:
        kind = "u8in" if m.endswith("u8in.onnx") else "fp32in"
        g, f = graphs[kind]
        feeds_of[m] = f
        want = run(g, f)[g.outputs[0].name] if "ort_fp32" not in m else None
        for th in (1, 2):
            sessions[(m, th)] = s = _session(m, th)
            outs = [s.run(None, f)[0] for _ in range(3)]
            if want is not None:
                assert all(np.array_equal(o, want) for o in outs), f"{m} differs from the interpreter ({th} threads)"
    cpu, wall = defaultdict(list), defaultdict(list)
    for _ in range(reps):
        for (m, th), s in sessions.items():
            c0, t0 = time.process_time(), time.perf_counter()
            s.run(None, feeds_of[m])
            (cpu if th == 1 else wall)[m].append(time.process_time() - c0 if th == 1 else time.perf_counter() - t0)
    print(f"{reps} interleaved runs, load average {os.getloadavg()}; ours bit-exact vs interpreter at 1 and 2 threads")
    print("| model | 1-thread CPU ms median (min) | 2-thread wall ms median (min) | top kernels, 1 thread (ms) |")
    print("|---|---|---|---|")
    for m in models:
        per = _profile(m, feeds_of[m])
        top = ", ".join(f"{k} {v:.2f}" for k, v in sorted(per.items(), key=lambda kv: -kv[1])[:7])
        print(f"| {Path(m).stem} | {1e3 * statistics.median(cpu[m]):.2f} ({1e3 * min(cpu[m]):.2f}) | "
              f"{1e3 * statistics.median(wall[m]):.2f} ({1e3 * min(wall[m]):.2f}) | {top} |")


if __name__ == "__main__":
    if sys.argv[1] == "export":
        export(sys.argv[2], Path(sys.argv[3]), sys.argv[4])
    else:
        time_models(sys.argv[2], int(sys.argv[3]), sys.argv[4:])
