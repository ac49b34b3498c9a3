"""The suite's markdown report and its PNG figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qgnn_deploy.perf.config import LABELS, OURS, SERIES_KEYS
from qgnn_deploy.perf.gat import gat_markdown
from qgnn_deploy.perf.pooling import load_text, median_text, method_text, process_checks
from qgnn_deploy.perf.series import SLOW_CALL_S, SLOW_CALLS_PER_PROCESS
from qgnn_deploy.targets import markdown_table


def _mb(b: Any) -> str:
    return "—" if not b else f"{b / 2**20:.1f}"


def _kb(b: Any) -> str:
    return "—" if not b else f"{b / 1024:.1f}"


def _x(v: Any) -> str:
    return "—" if v is None else f"{v:.2f}×"


def _above(r: dict[str, Any]) -> int | None:
    """Peak RSS above the process's RSS after importing the runtime, before loading the model."""
    if r.get("peak_rss_bytes") and r.get("rss_before_load_bytes"):
        return int(r["peak_rss_bytes"] - r["rss_before_load_bytes"])
    return None


def _gcn_section(res: dict[str, Any]) -> list[str]:
    """The GCN table, notes, size series and roofline."""
    m = res["main"]
    lines: list[str] = []
    lines += ["| backend | median ms | p90 | p99 | speed-up vs PyG eager | peak RSS MiB (ratio) | above import MiB "
              "| buffer KiB (ratio) | model KiB (ratio) | file KiB | test acc | load before |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for k, r in res["rows"].items():
        rr = res["ratios"]["per_backend"].get(k, {})
        if "error" in r:
            lines.append(f"| {r.get('label', LABELS.get(k, k))} | failed: {r['error'][:120]} | | | | | | | | | | |")
            continue
        lat = r["latency_ms"]
        acc = "—" if r.get("test_acc") is None else f"{100 * r['test_acc']:.1f}"
        lines.append(f"| {r['label']} | {median_text(r)} | {lat['p90']:.3f} | {lat['p99']:.3f} | "
                     f"{_x(rr.get('speedup_vs_pyg_eager'))} | {_mb(r.get('peak_rss_bytes'))} "
                     f"({_x(rr.get('peak_rss_bytes_ratio'))}) | {_mb(_above(r))} | {_kb(r.get('buffer_bytes'))} "
                     f"({_x(rr.get('buffer_bytes_ratio'))}) | {_kb(r.get('model_bytes'))} "
                     f"({_x(rr.get('model_bytes_ratio'))}) | {_kb(r.get('model_file_bytes'))} | {acc} | "
                     f"{load_text(r)} |")
    lines += ["", "Model KiB: parameters as stored (FP32: 4 B each; ours: `ir.analysis.model_bytes`, int4 packed; "
              "QDQ: its ONNX file). Buffer: peak live activation bytes with inputs counted (ours: "
              "`ir.analysis.buffer_report`; ORT/PyG: ONNX liveness on the sample, see `liveness.py`). "
              "Peak RSS: VmHWM of the backend's own process (includes the runtime's import: "
              "torch for PyG, libtvm for TVM); 'above import' subtracts the RSS measured after the imports and the "
              "input graph load, before the model load."]
    lines += process_checks(res["rows"], OURS, LABELS)
    ir = m.get("buffer_detail", {}).get("ours_ir", {})
    if ir:
        lines += ["", "Input contracts: the FP32-input rows take `x` as the user has it and quantize it inside every "
                  "call; the `uint8 input` rows are the `qgnn-export --integer-input` artifact, which takes `x_q` "
                  "(the features quantized once per dataset with the scale/zero point in its manifest; "
                  f"{m.get('input_quantize_once_ms')} ms for this graph in NumPy, not in the latency), like an "
                  "image model that takes uint8 pixels. Outputs are bit-identical. Buffer peaks: " +
                  ", ".join(f"{kind} {_kb(b['peak_bytes'])} KiB at `{b['peak_at']}` (inputs {_kb(b['input_bytes'])} "
                            "KiB)" for kind, b in ir.items()) + "."]
    gp = res.get("gemm_vs_ort")
    if gp:
        lines += ["", gemm_line(gp)]
    fast = res["ratios"].get("fastest_fp32")
    if fast:
        best = (res.get("metrics") or {}).get("best_vs_fastest_fp32", {}).get("value")
        lines += ["", f"Fastest FP32 row: {LABELS.get(fast, fast)} ({res['ratios']['fastest_fp32_ms']:.3f} ms); "
                  "our best row is " + ("—" if best is None else f"{best:.2f}×") + " faster."]
    i4 = res.get("int4")
    if i4:
        lines += ["", f"INT4 (packed) model: {i4['model_bytes']} B = {i4['model_bytes_ratio']:.3f}× FP32 "
                  f"({i4['fp32_model_bytes']} B); integer test accuracy {100 * i4['test_acc_integer']:.1f}%."]
    det = res.get("determinism", {})
    lines += ["", "Determinism (threads 1 and " + str(res["config"]["threads"]) + f", {det.get('runs')} runs each): " +
              ", ".join(f"{k}: {'identical' if d['deterministic'] else 'DIFFERENT'}"
                        f"{' and equal to the interpreter' if d['equals_reference'] else ''}"
                        for k, d in det.items() if isinstance(d, dict))]
    s = res.get("series")
    if s:
        lines += ["", f"## Size series (F={s['features']}, average degree {s['degree']})", "",
                  "| N | E | backend | median ms | calls (processes) | ns per edge | peak RSS MiB | load before |",
                  "|---|---|---|---|---|---|---|---|"]
        for p in s["points"]:
            for k in SERIES_KEYS:
                r = p.get(k)
                if r is None:
                    continue
                val = (f"{median_text(r)} | {r['latency_ms'].get('n', '')} ({len(r.get('processes') or [0])}) | "
                       f"{1e6 * r['latency_ms']['median'] / p['num_edges']:.1f} | {_mb(r.get('peak_rss_bytes'))} | "
                       f"{load_text(r)}" if "latency_ms" in r else f"failed: {r.get('error', '')[:80]} | | | | ")
                lines.append(f"| {p['num_nodes']} | {p['num_edges']} | {LABELS.get(k, k)} | {val} |")
        if any(len((p.get(k) or {}).get("processes") or ()) > 1 for p in s["points"] for k in SERIES_KEYS):
            lines += ["", "Rows a target reads (ours; from 10^5 nodes ORT FP32 and PyG cached) pooled over processes, "
                      "round-robin per size, as the GCN rows: median over every process's calls, in parentheses the "
                      "min–max of the per-process medians; peak RSS: the largest process. Rows estimated above "
                      f"{SLOW_CALL_S:g} s a call get 1 warm-up, and {SLOW_CALLS_PER_PROCESS} calls per process when "
                      "pooled."]
        so = (res.get("metrics") or {}).get("series_ours_ort_vs_ort_fp32_and_pyg_cached") or {}
        if so.get("per_row"):
            lines += ["", "Our ONNX in ORT against the fastest of ORT FP32 and PyG cached (either edge order), "
                      "from 10^5 nodes: " +
                      "; ".join(f"{LABELS[k]} " + ", ".join(f"N={n}: {v:.2f}×" for n, v in vs.items())
                                for k, vs in so["per_row"].items()) +
                      ". Edges sorted once: one stable argsort by destination on the host per graph (`qgnn_bench.py "
                      "--sort-edges`), outside the timed calls; the model checks the order and falls back to the "
                      "scatter branch otherwise, so both contracts give the same output."]
        lines += ["", "Growth exponent of latency vs edges (log-log slope): " +
                  ", ".join(f"{k} {v:.2f}" for k, v in s["growth_exponent_vs_edges"].items() if v is not None)]
        seg = s.get("segment_exponents_vs_edges") or {}
        if any(seg.values()):
            lines += ["", "Slope between consecutive sizes: " +
                      "; ".join(f"{k} " + " → ".join(f"{v:.2f}" for v in vs) for k, vs in seg.items() if vs)]
    rf = res.get("roofline", {})
    if rf.get("achieved"):
        a, pr = rf["achieved"], rf["probe"]
        lines += ["", "## Roofline (largest graph)", "",
                  f"- Probes: int8 GEMM {pr['int8_gemm']['ops_per_s'] / 1e9:.1f} Gop/s ({pr['int8_gemm']['method']}); "
                  f"copy bandwidth {pr['memory_bandwidth']['bytes_per_s'] / 1e9:.1f} GB/s "
                  f"({pr['memory_bandwidth']['method']}).",
                  f"- {LABELS[a['backend']]} at N={a['num_nodes']}, E={a['num_edges']}: {a['median_ms']:.1f} ms, "
                  f"{a['int_ops_per_s'] / 1e9:.2f} Gop/s ({100 * a['fraction_of_peak_int8_ops']:.1f}% of the GEMM "
                  f"peak), {a['bytes_compulsory_per_s'] / 1e9:.2f} GB/s compulsory traffic "
                  f"({100 * a['fraction_of_copy_bandwidth_compulsory']:.1f}% of copy bandwidth), "
                  f"{a['bytes_unfused_per_s'] / 1e9:.2f} GB/s if every op streamed its operands.",
                  f"- Arithmetic intensity {a['arithmetic_intensity_ops_per_byte']:.2f} op/B: {a['bound_by']}-bound; "
                  f"the roofline time is {a['time_at_roofline_ms']:.1f} ms "
                  f"({a['median_ms'] / a['time_at_roofline_ms']:.1f}× away)."]
        g = rf.get("gather") or {}
        if "reference_ms" in g:
            aggs = ", ".join(f"{c} columns {t:.1f} ms" for c, t in zip(g["aggregation_columns"], g["aggregation_ms"]))
            lines += [f"- Gather-aware reference {g['reference_ms']:.1f} ms ({a['median_ms'] / g['reference_ms']:.1f}× "
                      f"away): the roofline time plus each aggregation's random row reads alone ({aggs}; gather "
                      f"probe: {g['probe']['method']})."]
        elif g:
            lines += [f"- Gather probe failed: {g['probe'].get('error')}."]
    return lines


def render_markdown(res: dict[str, Any]) -> str:
    """The report: header, GCN table and notes, GAT pair, size series, roofline, targets (if applied)."""
    m = res.get("main") or res["gat"]
    lines = [f"# bench-suite: {m['dataset']} (N={m['num_nodes']}, E={m['num_edges']}, F={m['features']})", "",
             f"Command: `{res['command']}`", "",
             f"Machine: {res['machine']['cpu']}, {res['machine']['cpus']} CPUs; threads fixed at "
             f"**{res['config']['threads']}** for every backend; load average at start {res['load_average']['start']}"
             f", end {res['load_average']['end']}. " + method_text(res["config"].get("processes", 1),
                                                                   res["config"]["warmup"], res["config"]["repeats"]),
             "", isa_line(res["machine"]), ""]
    if max(res["load_average"]["start"][0], res["load_average"]["end"][0]) > 2.5:
        lines += ["**Warning: the load average was above 2.5 during this run; the timings are not reliable.**", ""]
    if res.get("main"):
        lines += _gcn_section(res)
    if res.get("gat"):
        lines += gat_markdown(res["gat"])
    lines += markdown_table(res.get("targets") or {})
    return "\n".join(lines) + "\n"


def plot(res: dict[str, Any], out_dir: Path, stem: str) -> list[Path]:
    """``<stem>.png`` (latency and memory per backend) and ``<stem>_series.png`` (vs graph size)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths: list[Path] = []
    if not res.get("rows"):  # --no-gcn: no GCN table to plot
        return paths
    rows = {k: r for k, r in res["rows"].items() if "latency_ms" in r}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    names = [LABELS[k].replace("ours: ", "ours:\n").replace(" (", "\n(") for k in rows]
    colors = ["tab:green" if k in OURS else "tab:gray" for k in rows]
    axes[0].barh(names, [r["latency_ms"]["median"] for r in rows.values()], color=colors,
                 xerr=[[0] * len(rows), [r["latency_ms"]["p90"] - r["latency_ms"]["median"] for r in rows.values()]])
    axes[0].set_xlabel("latency ms (median, bar to p90)")
    axes[1].barh(names, [(r.get("peak_rss_bytes") or 0) / 2**20 for r in rows.values()], color=colors)
    axes[1].set_xlabel("peak RSS MiB (own process)")
    axes[2].barh(names, [(r.get("buffer_bytes") or 0) / 2**20 for r in rows.values()], color=colors)
    axes[2].set_xlabel("activation buffer MiB (inputs counted)")
    for ax in axes[1:]:
        ax.set_yticklabels([])
    m = res["main"]
    fig.suptitle(f"{m['dataset']} N={m['num_nodes']} E={m['num_edges']}, {res['config']['threads']} threads")
    fig.tight_layout()
    p = out_dir / f"{stem}.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)
    s = res.get("series")
    if s and s["points"]:
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
        for k in SERIES_KEYS:
            pts = [p for p in s["points"] if "latency_ms" in p.get(k, {})]
            if not pts:
                continue
            lab = f"{LABELS[k]} (slope {s['growth_exponent_vs_edges'].get(k) or float('nan'):.2f})"
            axes[0].loglog([p["num_edges"] for p in pts], [p[k]["latency_ms"]["median"] for p in pts], "o-", label=lab)
            axes[1].loglog([p["num_nodes"] for p in pts], [p[k]["peak_rss_bytes"] / 2**20 for p in pts], "o-",
                           label=LABELS[k])
        axes[0].set_xlabel("edges")
        axes[0].set_ylabel("median latency ms")
        axes[1].set_xlabel("nodes")
        axes[1].set_ylabel("peak RSS MiB")
        for ax in axes:
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
        fig.suptitle(f"synthetic graphs, F={s['features']}, degree {s['degree']}")
        fig.tight_layout()
        p = out_dir / f"{stem}_series.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    return paths


def isa_line(machine: dict[str, Any]) -> str:
    flags = machine.get("isa_flags") or {}
    tier = ", ".join(f"{f} {'yes' if v else 'no'}" for f, v in flags.items()) or "unknown"
    kernel = f"`{machine.get('gemm_kernel') or '—'}`"
    preset = machine.get("tvm_target", "x86_64")
    where = ("our int8 GEMM kernel on this host: " + kernel if preset == "x86_64" else
             f"TVM rows built for the portable preset `{preset}` (int8 GEMM kernel {kernel}), not for this host's CPU")
    return f"ISA tier: {tier}; {where}."


def gemm_line(gp: dict[str, Any]) -> str:
    if "error" in gp:
        return f"GEMM vs ORT MatMulInteger: failed: {gp['error'][:160]}"
    m, k, n = gp["shape"]
    return (f"GEMM {m}×{k}×{n} (u8 × s8 → s32), same operands, {gp['ours_ms']['n']} calls each, each runtime "
            f"in its own process: ours "
            f"(`{gp.get('gemm_kernel')}`) {gp['ours_ms']['median']:.3f} ms median ({gp['ours_gops_best']:.0f} Gop/s "
            f"best), ORT MatMulInteger {gp['ort_ms']['median']:.3f} ms ({gp['ort_gops_best']:.0f} Gop/s best): "
            f"ORT / ours = **{gp['ort_over_ours_median']:.2f}×** (median), {gp['ort_over_ours_best']:.2f}× (best); "
            f"ours {'exact' if gp.get('ours_exact') else 'NOT EXACT'} (vs int64 NumPy), ORT "
            + ("exact." if gp.get("ort_exact") else f"not exact: {gp.get('ort_wrong_elements')} saturated sums "
               "(MLAS's AVX2 u8 x s8 path uses vpmaddubsw, which saturates int16; the ratio is then vs a "
               "cheaper, inexact computation)."))


