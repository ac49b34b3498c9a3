"""The evaluation table: mean +/- std per row, headline metrics, markdown."""

from __future__ import annotations

import math
import statistics
from typing import Any

from qgnn_deploy.experiments.config import Row


def _stats(values: list[float], scale: float = 100.0) -> tuple[float, float]:
    vals = [scale * v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return math.nan, math.nan
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def summarise(rows: list[Row], records: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean +/- std per row: accuracy in %, or MAE as is for regression runs (records with ``test_mae``)."""
    mae = any("test_mae" in r for r in records)
    key, scale = ("test_mae", 1.0) if mae else ("test_acc", 100.0)
    by_row: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_row.setdefault(r["row"], []).append(r)
    out = []
    for row in rows:
        recs = sorted(by_row.get(row.key, []), key=lambda r: r["seed"])
        mean, std = _stats([r[key] for r in recs], scale)
        dmean, dstd = _stats([r.get("deployed_acc") for r in recs], scale)
        entry = {"row": row.key, "framework": row.framework, "bits": row.bits, "prompt": row.prompt,
                 "test_mean": mean, "test_std": std, "deployed_mean": dmean, "deployed_std": dstd,
                 "seeds": [r["seed"] for r in recs], key: [r[key] for r in recs]}
        bits = [r["a2q_avg_bits"] for r in recs if r.get("a2q_avg_bits") is not None
                and not math.isnan(r["a2q_avg_bits"])]
        if bits:
            entry["avg_node_bits"] = statistics.fmean(bits)
        lb = [r["layer_bits"] for r in recs if r.get("layer_bits")]
        if lb and row.framework == "mixq":
            entry["mixq_bits"] = lb
        out.append(entry)
    return {"rows": out, "metric": "mae" if mae else "accuracy", "metrics": evaluation_metrics(out)}


def evaluation_metrics(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The table's headline figures (no thresholds): FP32 mean, each INT8 row's gap to it, each framework's
    best INT4 prompt gain (points; ``None`` where a row is missing)."""
    def num(v: Any) -> float | None:
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)

    e = {x["row"]: x for x in entries}
    fp = num(e.get("fp32", {}).get("test_mean"))
    int8 = {x["framework"]: num(x["test_mean"]) for x in entries if x["bits"] == 8 and x["prompt"] == "none"}
    gains: dict[str, float | None] = {}
    for fw in sorted({x["framework"] for x in entries if x["bits"] == 4}):
        base = num(e.get(f"{fw}-int4-none", {}).get("test_mean"))
        best = max((m for k in (f"{fw}-int4-lorap", f"{fw}-int4-gpf-lorap")
                    if k in e and (m := num(e[k]["test_mean"])) is not None), default=None)
        gains[fw] = best - base if best is not None and base is not None else None
    return {"fp32_test_mean": fp,
            "int8_minus_fp32": {fw: (v - fp if v is not None and fp is not None else None)
                                for fw, v in sorted(int8.items())},
            "int4_best_prompt_gain": gains}


def _fmt(mean: float, std: float) -> str:
    return "—" if math.isnan(mean) else f"{mean:.2f} ± {std:.2f}"


PROMPT_NAMES = {"none": "—", "lorap": "LoRAP", "gpf-lorap": "GPF-LoRAP"}
FW_NAMES = {"fp32": "FP32", "qat": "QAT", "dq": "Degree-Quant", "a2q": "A2Q", "mixq": "MixQ"}


def render_markdown(summary: dict[str, Any], command: str, meta: dict[str, Any]) -> str:
    mae = summary.get("metric") == "mae"
    what, test_col, dep_col = (("test MAE (lower is better)", "Test MAE", "Deployed MAE") if mae else
                               ("test accuracy %", "Test acc (%)", "Deployed (%)"))
    lines = [f"{meta['dataset']} ({meta['arch'].upper()}), {what} over seeds {meta['seeds']}, "
             f"mean ± std (model selected on validation).", "",
             f"Command: `{command}`", "",
             f"| Framework | Bits | Prompt | {test_col} | Δ vs no prompt | {dep_col} | Bits chosen |",
             "|---|---|---|---|---|---|---|"]
    fmt = _fmt_mae if mae else _fmt
    base = {x["row"]: x["test_mean"] for x in summary["rows"] if x["prompt"] == "none"}
    for x in summary["rows"]:
        delta = ""
        if x["prompt"] != "none":
            b = base.get(f"{x['framework']}-int{x['bits']}-none", math.nan)
            delta = "" if math.isnan(b) or math.isnan(x["test_mean"]) else \
                (f"{x['test_mean'] - b:+.4f}" if mae else f"{x['test_mean'] - b:+.2f}")
        chosen = ""
        if "avg_node_bits" in x:
            chosen = f"avg node bits {x['avg_node_bits']:.2f}"
        elif "mixq_bits" in x:
            chosen = "; ".join(sorted({_bits_str(lb) for lb in x["mixq_bits"]}))
        lines.append(f"| {FW_NAMES.get(x['framework'], x['framework'])} | "
                     f"{'FP32' if x['bits'] == 32 else 'INT' + str(x['bits'])} | {PROMPT_NAMES[x['prompt']]} | "
                     f"{fmt(x['test_mean'], x['test_std'])} | {delta} | "
                     f"{fmt(x['deployed_mean'], x['deployed_std'])} | {chosen} |")
    targets = summary.get("targets") or {}
    if targets:
        lines += ["", "Targets: " + "; ".join(
            f"{v.get('label') or k}: " + ("—" if v.get("met") is None else ("yes" if v["met"] else "NO")) +
            (" (" + ", ".join(f"{fw} {'—' if m is None else ('yes' if m else 'NO')}"
                              for fw, m in v["per_key"].items()) + ")" if v.get("per_key") else "")
            for k, v in targets.items()) + "."]
    return "\n".join(lines) + "\n"


def _fmt_mae(mean: float, std: float) -> str:
    return "—" if math.isnan(mean) else f"{mean:.4f} ± {std:.4f}"


def _bits_str(layer_bits: list[dict[str, int]]) -> str:
    return " / ".join(",".join(f"{k[0]}{v}" for k, v in sorted(lb.items())) for lb in layer_bits)




