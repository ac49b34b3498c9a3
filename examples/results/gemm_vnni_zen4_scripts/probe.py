"""The suite's probe alone: gemm_vs_ort on a built library (ours and ORT each in own processes)."""
import json
import os
import sys
from pathlib import Path

from qgnn_deploy.perf.gemm_probe import gemm_vs_ort

lib, ops, work, threads, repeats, sessions = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), \
    int(sys.argv[5]), int(sys.argv[6])
r = gemm_vs_ort(Path(lib), Path(ops), Path(work), threads, repeats, "vnni", sessions=sessions)
r["load_after"] = list(os.getloadavg())
keep = {k: r.get(k) for k in ("ours_exact", "ort_exact", "ort_ms", "ours_ms", "ort_over_ours_median",
                              "ort_over_ours_best", "load_average_before", "load_after", "error")}
print(json.dumps(keep, indent=None, default=str))
