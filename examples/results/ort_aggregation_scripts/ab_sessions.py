"""Interleaved A/B of ONNX models on an artifact's sample (issue 12): 1-thread CPU ms (time.process_time) and
2-thread wall ms, min / p25 / median; every model but those named *ort_fp32* is first checked bit-exact against
the artifact's reference output at 1 and 2 threads.

    python ab_sessions.py REPS ARTIFACT_DIR MODEL.onnx...
    AB_THREADS=2 python ab_sessions.py ...   # one thread count per process (section 7)

With both thread counts in one process, the 2-thread sessions' spinning worker threads are charged to the
1-thread sessions' ``process_time``; ``AB_THREADS`` (1 or 2) times one thread count only, wall and CPU clock.

ARTIFACT_DIR: a `qgnn export` output (sample_input.npz, reference_output.npz); models taking x_q get
``x_q = QuantizeLinear(x)`` computed with the manifest's input quantizer (clip(rint(x / s) + zp)).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

THREAD_COUNTS = (int(os.environ["AB_THREADS"]),) if os.environ.get("AB_THREADS") else (1, 2)


def _session(path: str, threads: int) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def main(reps: int, art: Path, models: list[str]) -> None:
    feeds = dict(np.load(art / "sample_input.npz"))
    want = next(iter(np.load(art / "reference_output.npz").values()))
    if "x" in feeds and "x_q" not in feeds:
        manifest = json.loads((art / "manifest.json").read_text())
        q = manifest.get("input_quant") or manifest.get("quantization", {}).get("inputs", {}).get("x")
        if q:
            v = np.rint(feeds["x"] / np.float32(q["scale"])) + q["zero_point"]
            feeds["x_q"] = np.clip(v, q["qmin"], q["qmax"]).astype(q["dtype"])
    sessions, inputs = {}, {}
    for m in models:
        names = [i.name for i in onnx.load(m).graph.input]
        inputs[m] = {k: feeds[k] for k in names}
        for th in THREAD_COUNTS:
            s = sessions[(m, th)] = _session(m, th)
            if "ort_fp32" not in m:
                for _ in range(2):
                    assert np.array_equal(s.run(None, inputs[m])[0], want), (m, th)
    times: dict = {k: [] for k in sessions}
    load0 = os.getloadavg()[0]
    for _ in range(reps):
        for (m, th), s in sessions.items():
            clock = time.process_time if th == 1 else time.perf_counter
            t0 = clock()
            s.run(None, inputs[m])
            times[(m, th)].append(clock() - t0)
    if len(THREAD_COUNTS) == 1:
        ref = np.median(times[(models[0], THREAD_COUNTS[0])])
        print(f"{reps} interleaved runs at {THREAD_COUNTS[0]} thread(s) (1 thread: CPU time, 2: wall), "
              f"load {load0:.1f} -> {os.getloadavg()[0]:.1f}; ours bit-exact vs the reference")
        print(f"| model | ms min / p25 / median | {Path(models[0]).stem} median / this median |")
        print("|---|---|---|")
        for m in models:
            v = np.array(times[(m, THREAD_COUNTS[0])]) * 1e3
            print(f"| {Path(m).stem} | {v.min():.2f} / {np.percentile(v, 25):.2f} / {np.median(v):.2f} | "
                  f"{ref / np.median(v / 1e3):.2f}x |")
        return
    print(f"{reps} interleaved runs, load {load0:.1f} -> {os.getloadavg()[0]:.1f}; ours bit-exact vs the reference "
          "at 1 and 2 threads")
    print("| model | 1-thread CPU ms min / p25 / median | 2-thread wall ms min / p25 / median |")
    print("|---|---|---|")
    for m in models:
        cells = []
        for th in (1, 2):
            v = np.array(times[(m, th)]) * 1e3
            cells.append(f"{v.min():.2f} / {np.percentile(v, 25):.2f} / {np.median(v):.2f}")
        print(f"| {Path(m).stem} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main(int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:])
