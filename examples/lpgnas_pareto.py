"""LPGNAS on Cora: size-accuracy Pareto front of searched models vs uniform QAT baselines.

    python examples/lpgnas_pareto.py                 # Cora, 5 penalty weights x 3 seeds (~25 min, 1 thread)
    python examples/lpgnas_pareto.py --quick         # synthetic data, tiny budgets (~30 s smoke run)

Writes ``<out>/lpgnas_pareto.png``, ``<out>/lpgnas_pareto.csv`` (every evaluated point) and
``<out>/lpgnas_pareto.md`` (tables and the uniform-quantisation observation).  Model size and
buffer size are the fold-derived counts of :mod:`qgnn_deploy.nas.cost` (the definitions of
:mod:`qgnn_deploy.ir.analysis`) on the dataset's graph.  Baselines are the same architecture
(GCN, widest hidden width) trained with plain QAT by the toolkit's trainer; searched models are
discretised and retrained with the same trainer and budget.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from qgnn_deploy.data.specs import load_dataset
from qgnn_deploy.models.net import ModelConfig, default_bits
from qgnn_deploy.nas.search import GraphFacts, SearchSettings, retrain, search
from qgnn_deploy.nas.space import SearchSpace
from qgnn_deploy.train.trainer import TrainSettings, train

FIELDS = ["kind", "name", "penalty", "seed", "arch", "hidden", "choice", "expected_model_bytes",
          "expected_buffer_bytes", "model_bytes", "buffer_bytes", "val_acc", "test_acc", "integer_test_acc",
          "mismatched_codes", "seconds"]


def deploy_check(outcome, ds, space, settings, workdir: Path, onnx: bool = False) -> dict:
    """Save the searched model as a normal checkpoint, fold it, and measure the integer graph's test accuracy.

    With ``onnx`` the checkpoint also goes through ``qgnn export --target onnx`` and the ONNX model's test
    accuracy is measured with ONNX Runtime on the dataset graph.
    """
    import numpy as np

    from qgnn_deploy.fold import fold_checkpoint
    from qgnn_deploy.nas.search import save_searched

    ckpt = save_searched(workdir / "model.pt", outcome, ds, space, settings)
    par = fold_checkpoint(ckpt).report["parity"]
    out = {"integer_test_acc": par["test_acc_integer"], "fake_quant_test_acc": par["test_acc_fake_quant"],
           "mismatched_codes": par["mismatched_codes"]}
    if onnx:
        from qgnn_deploy.backends.onnx.runner import OnnxRunner
        from qgnn_deploy.cli import main as cli_main

        art = workdir / "artifact"
        assert cli_main(["export", str(ckpt), "--target", "onnx", "--out", str(art), "--force"]) == 0
        report = json.loads((art / "report.json").read_text())
        d = ds.data
        got = OnnxRunner(art / "model.onnx", threads=1).run({"x": d.x.numpy().astype(np.float32),
                                                             "edge_index": d.edge_index.numpy().astype(np.int64)})
        logits = next(v for v in got.values() if v.dtype == np.float32)
        mask = d.test_mask.numpy()
        out["onnx_test_acc"] = float((logits.argmax(-1)[mask] == d.y.numpy()[mask]).mean())
        out["onnx_bit_exact"] = bool(report["parity"]["bit_exact"])
    return out


def baseline_configs(arch: str, in_dim: int, hidden: int, out_dim: int, layers: int) -> dict[str, ModelConfig]:
    """FP32 and uniform WxAy QAT configs (W = weight bits, A = every activation component; edges stay 8-bit).

    The issue's five (FP32, W8A8, W4A8, W4A4, W2A8) plus W4A2 and W2A2 to locate where accuracy breaks.
    """
    def cfg(w: int, a: int) -> ModelConfig:
        bits = default_bits(a)
        bits["weight"] = w
        return ModelConfig(arch=arch, in_dim=in_dim, hidden=hidden, out_dim=out_dim, num_layers=layers,
                           framework="qat", bits=bits)

    fp32 = ModelConfig(arch=arch, in_dim=in_dim, hidden=hidden, out_dim=out_dim, num_layers=layers,
                       framework="fp32", bits=default_bits(32))
    return {"FP32": fp32, "W8A8": cfg(8, 8), "W4A8": cfg(4, 8), "W4A4": cfg(4, 4), "W2A8": cfg(2, 8),
            "W4A2": cfg(4, 2), "W2A2": cfg(2, 2)}


def pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not dominated (smaller size and higher accuracy), sorted by size."""
    front, best = [], -1.0
    for s, a in sorted(points, key=lambda p: (p[0], -p[1])):
        if a > best:
            front.append((s, a))
            best = a
    return front


def plot(rows: list[dict], path: Path, title: str) -> None:
    """Size (log) vs test accuracy; baselines as mean +- std over seeds, searched points coloured by lambda.

    The y-axis covers the working models; baselines that collapsed far below are drawn at the bottom edge
    with their accuracy in the label.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fig, ax = plt.subplots(figsize=(7.2, 4.6), dpi=110)
    base = [r for r in rows if r["kind"] == "baseline"]
    srch = [r for r in rows if r["kind"] == "searched"]
    names = list(dict.fromkeys(r["name"] for r in base))
    means = {n: statistics.mean(r["test_acc"] for r in base if r["name"] == n) for n in names}
    top = max([r["test_acc"] for r in rows] or [1.0])
    working = [a for a in [r["test_acc"] for r in srch] + list(means.values()) if a >= 0.75 * top]
    y_lo = min(working or [0.0]) - 0.03
    y_hi = top + 0.015
    same_size: dict[float, int] = {}
    for name in names:
        rs = [r for r in base if r["name"] == name]
        size, mean = rs[0]["model_bytes"] / 1024, means[name]
        k = same_size.get(size, 0)
        same_size[size] = k + 1
        if mean < y_lo:
            ax.plot([size], [y_lo + 0.004], marker="v", color="tab:red", ms=7, clip_on=False)
            ax.annotate(f"{name} {mean:.3f} (collapsed)", (size, y_lo + 0.004), textcoords="offset points",
                        xytext=(8, 2 + 9 * (k - 1 if k else 0)), fontsize=7, color="tab:red")
            continue
        std = statistics.pstdev([r["test_acc"] for r in rs]) if len(rs) > 1 else None
        ax.errorbar([size], [mean], yerr=[std] if std is not None else None, fmt="s", color="0.35", capsize=3)
        ax.annotate(f"{name} {mean:.3f}", (size, mean), textcoords="offset points", xytext=(8, 0), va="center",
                    fontsize=7)
    pens = sorted({r["penalty"] for r in srch})
    cmap = plt.get_cmap("viridis")
    for k, pen in enumerate(pens):
        rs = [r for r in srch if r["penalty"] == pen]
        color = cmap(k / max(len(pens) - 1, 1))
        ax.scatter([r["model_bytes"] / 1024 for r in rs], [r["test_acc"] for r in rs], s=22,
                   color=color, label=f"LPGNAS lambda={pen:g}", zorder=3)
        for r in rs:
            if r["test_acc"] < y_lo:
                ax.plot([r["model_bytes"] / 1024], [y_lo + 0.004], marker="v", color=color, ms=7, clip_on=False)
                ax.annotate(f"{r['name']} {r['test_acc']:.3f} (collapsed)", (r["model_bytes"] / 1024, y_lo + 0.004),
                            textcoords="offset points", xytext=(-8, 8), ha="right", fontsize=7, color=color)
    front = pareto([(r["model_bytes"] / 1024, r["test_acc"]) for r in srch])
    if len(front) > 1:
        ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="tab:red", lw=1, alpha=0.6,
                label="searched front")
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_ylim(y_lo, y_hi)
    ax.set_xlabel("model size (KiB as deployed: int4 packed, int32 biases, tables; log scale)")
    ax.set_ylabel("test accuracy")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def uniform_observation(rows: list[dict], tolerance: float = 0.01) -> str:
    """Where naive uniform quantisation starts to lose accuracy (mean test drop > ``tolerance`` vs FP32)."""
    base = [r for r in rows if r["kind"] == "baseline"]
    mean = {n: statistics.mean(r["test_acc"] for r in base if r["name"] == n)
            for n in dict.fromkeys(r["name"] for r in base)}
    ref = mean.get("FP32")
    if ref is None:
        return "no FP32 baseline"
    parts = [f"{n} {100 * a:.1f}% ({100 * (a - ref):+.1f})" for n, a in mean.items()]
    losing = [n for n, a in mean.items() if n != "FP32" and ref - a > tolerance]
    keeps = [n for n, a in mean.items() if n != "FP32" and ref - a <= tolerance]
    return (f"uniform baselines (mean test accuracy, change vs FP32): {'; '.join(parts)}. "
            f"Within {100 * tolerance:.0f} point of FP32: {', '.join(keeps) or 'none'}; "
            f"losing more: {', '.join(losing) or 'none'}.")


def front_comparison(rows: list[dict]) -> list[str]:
    """Per uniform baseline: the best searched model (mean over seeds of one setting) no larger than it."""
    base = [r for r in rows if r["kind"] == "baseline"]
    srch = [r for r in rows if r["kind"] == "searched"]
    groups: dict[tuple, list[dict]] = {}
    for r in srch:
        groups.setdefault((r["penalty"], r["seed"]), []).append(r)
    out = []
    for name in dict.fromkeys(r["name"] for r in base):
        rs = [r for r in base if r["name"] == name]
        size, acc = rs[0]["model_bytes"], statistics.mean(r["test_acc"] for r in rs)
        fits = [r for r in srch if r["model_bytes"] <= size]
        if not fits:
            out.append(f"- {name} ({size / 1024:.1f} KiB, {100 * acc:.1f}%): no searched model that small")
            continue
        best = max(fits, key=lambda r: r["val_acc"])  # selected on validation, reported on test
        mean_fit = statistics.mean(r["test_acc"] for r in fits)
        out.append(f"- {name} ({size / 1024:.1f} KiB, {100 * acc:.1f}%): {len(fits)} searched models <= its size, "
                   f"mean test {100 * mean_fit:.1f}% ({100 * (mean_fit - acc):+.1f}); best-by-val {best['name']} "
                   f"{best['model_bytes'] / 1024:.1f} KiB {100 * best['test_acc']:.1f}%")
    return out


def read_rows(path: Path) -> list[dict]:
    """Rows of a CSV this script wrote, with numbers parsed."""
    rows = list(csv.DictReader(open(path)))
    for r in rows:
        for k in ("model_bytes", "buffer_bytes", "val_acc", "test_acc"):
            r[k] = float(r[k])
        for k in ("penalty", "integer_test_acc", "expected_model_bytes", "expected_buffer_bytes"):
            r[k] = float(r[k]) if r.get(k) not in ("", None) else ""
        r["mismatched_codes"] = int(r["mismatched_codes"]) if r.get("mismatched_codes") not in ("", None) else ""
    return rows


def bits_text(row: dict) -> str:
    """``W/I/M/A`` bits per layer for searched rows, ``WxAy`` for baselines."""
    if row["kind"] == "baseline":
        return row["name"]
    ch = json.loads(row["choice"])
    layers = sorted({k.split(".")[0] for k in ch if ".bits." in k})
    return " ; ".join("/".join(str(ch.get(f"{lay}.bits.{c}", "-")) for c in ("weight", "input", "message", "aggregate"))
                      for lay in layers) + " (W/I/M/A)"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="synthetic data and tiny budgets (smoke test)")
    p.add_argument("--dataset", default=None, help="default: cora (synthetic with --quick)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--penalties", default=None, help="comma-separated penalty weights lambda")
    p.add_argument("--seeds", default=None, help="comma-separated seeds")
    p.add_argument("--baseline-seeds", default=None)
    p.add_argument("--search-epochs", type=int, default=None)
    p.add_argument("--train-epochs", type=int, default=None)
    p.add_argument("--patience", type=int, default=None)
    p.add_argument("--space", default="deployable", choices=("deployable", "full"))
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core box)")
    p.add_argument("--summarize", default=None, metavar="CSV",
                   help="no training: re-plot a CSV this script wrote and print the front comparison")
    p.add_argument("--no-deploy", action="store_true", help="skip folding the searched models (and the ONNX export)")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.summarize:
        rows = read_rows(Path(args.summarize))
        png = Path(args.summarize).with_suffix(".png")
        plot(rows, png, "LPGNAS (searched) vs uniform QAT baselines (GCN, hidden 64), 3 seeds each")
        print("\n".join([uniform_observation(rows), "", "searched vs uniform, size for size:",
                         *front_comparison(rows)]))
        print(f"wrote {png}")
        return 0
    q = args.quick
    dataset = args.dataset or ("synthetic" if q else "cora")
    penalties = [float(v) for v in (args.penalties or ("0,2" if q else "0,0.1,0.3,1,4")).split(",")]
    seeds = [int(v) for v in (args.seeds or ("0" if q else "0,1,2")).split(",")]
    bseeds = [int(v) for v in (args.baseline_seeds or ("0" if q else "0,1,2")).split(",")]
    s_epochs = args.search_epochs or (6 if q else 50)
    t_epochs = args.train_epochs or (6 if q else 100)
    patience = args.patience if args.patience is not None else (None if q else 25)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "lpgnas_pareto_quick" if q else "lpgnas_pareto"

    ds = load_dataset(dataset, args.data_root)
    facts = GraphFacts.of(ds)
    space = SearchSpace(num_layers=2, widths=(16, 32, 64), bits=(2, 4, 8), space=args.space)
    tset = dict(epochs=t_epochs, progress=False, patience=patience)
    rows: list[dict] = []
    t_all = time.time()
    onnx_done, onnx_note = bool(q), "ONNX export not run"

    def log(msg: str) -> None:
        print(f"[{time.time() - t_all:7.1f}s] {msg}", flush=True)

    for pen in penalties:
        for seed in seeds:
            t0 = time.time()
            settings = SearchSettings(epochs=s_epochs, penalty=pen, seed=seed)
            outcome = search(ds, space, settings)
            res = retrain(outcome, ds, TrainSettings(seed=seed, **tset))
            cfg = outcome.discretised.config
            dep: dict = {}
            if not args.no_deploy:
                with tempfile.TemporaryDirectory() as tmp:
                    dep = deploy_check(outcome, ds, space, settings, Path(tmp), onnx=not onnx_done)
                if "onnx_test_acc" in dep:
                    onnx_done = True
                    onnx_note = (f"ONNX export of lpgnas-l{pen:g}-s{seed} ({cfg.arch}/{cfg.hidden}): ORT bit-exact "
                                 f"with the interpreter: {dep['onnx_bit_exact']}; test accuracy ONNX "
                                 f"{dep['onnx_test_acc']:.4f} vs fake-quant {res.metrics['test_acc']:.4f}")
            rows.append({"kind": "searched", "name": f"lpgnas-l{pen:g}-s{seed}", "penalty": pen, "seed": seed,
                         "arch": cfg.arch, "hidden": cfg.hidden, "choice": json.dumps(outcome.discretised.choice),
                         "expected_model_bytes": round(outcome.expected["model_bytes"], 1),
                         "expected_buffer_bytes": round(outcome.expected["buffer_bytes"], 1),
                         "model_bytes": outcome.cost.model_bytes, "buffer_bytes": outcome.cost.buffer_bytes,
                         "val_acc": res.metrics["val_acc"], "test_acc": res.metrics["test_acc"],
                         "integer_test_acc": dep.get("integer_test_acc", ""),
                         "mismatched_codes": dep.get("mismatched_codes", ""), "seconds": round(time.time() - t0, 1)})
            bits = " | ".join(",".join(f"{k[0]}{v}" for k, v in lb.items()) for lb in cfg.layer_bits or [])
            log(f"search lambda {pen:g} seed {seed}: {cfg.arch}/{cfg.hidden} [{bits}] size "
                f"{outcome.cost.model_bytes / 1024:.1f} KiB test {res.metrics['test_acc']:.4f}")

    for name, cfg in baseline_configs("gcn", ds.num_features, max(space.widths), ds.num_classes, 2).items():
        cost = facts.cost(cfg)
        for seed in bseeds:
            t0 = time.time()
            res = train(cfg, ds, TrainSettings(seed=seed, **tset))
            rows.append({"kind": "baseline", "name": name, "penalty": "", "seed": seed, "arch": cfg.arch,
                         "hidden": cfg.hidden, "choice": json.dumps(cfg.bits_for(0)), "expected_model_bytes": "",
                         "expected_buffer_bytes": "", "model_bytes": cost.model_bytes,
                         "buffer_bytes": cost.buffer_bytes, "val_acc": res.metrics["val_acc"],
                         "test_acc": res.metrics["test_acc"], "integer_test_acc": "", "mismatched_codes": "",
                         "seconds": round(time.time() - t0, 1)})
            log(f"baseline {name:5s} seed {seed}: size {cost.model_bytes / 1024:8.1f} KiB  "
                f"test {res.metrics['test_acc']:.4f}")
    with open(out / f"{stem}.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)
    plot(rows, out / f"{stem}.png", f"LPGNAS (searched) vs uniform QAT baselines on {dataset} "
                                    f"(GCN, hidden {max(space.widths)})")
    obs = uniform_observation(rows)
    base_front = pareto([(r["model_bytes"], r["test_acc"]) for r in rows if r["kind"] == "baseline"])
    srch = [r for r in rows if r["kind"] == "searched"]
    dominated = [r["name"] for r in srch
                 if any(s <= r["model_bytes"] and a > r["test_acc"] for s, a in base_front)]
    lines = [f"# LPGNAS Pareto ({dataset}, {time.strftime('%Y-%m-%d')})", "",
             f"search {s_epochs} epochs, retrain/baselines {t_epochs} epochs (patience {patience}), "
             f"penalties {penalties}, seeds {seeds}, baseline seeds {bseeds}, space {args.space}; "
             f"total {time.time() - t_all:.0f} s", "",
             "| kind | name | arch/hidden | bits per layer | model KiB | buffer KiB | val | test | integer test |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        integer = f"{r['integer_test_acc']:.3f}" if r["integer_test_acc"] != "" else "-"
        lines.append(f"| {r['kind']} | {r['name']} | {r['arch']}/{r['hidden']} | {bits_text(r)} | "
                     f"{r['model_bytes'] / 1024:.1f} | {r['buffer_bytes'] / 1024:.0f} | {r['val_acc']:.3f} | "
                     f"{r['test_acc']:.3f} | {integer} |")
    deployed = [r for r in srch if r["integer_test_acc"] != ""]
    same = sum(1 for r in deployed if r["mismatched_codes"] == 0 and abs(r["integer_test_acc"] - r["test_acc"]) < 1e-6)
    lines += ["", obs, "",
              f"deployment: {same} of {len(deployed)} searched models fold to an integer graph whose test accuracy "
              f"equals the fake-quant accuracy with zero mismatched output codes; {onnx_note}.", "",
              f"searched points dominated by a uniform baseline (smaller or equal size, higher test accuracy): "
              f"{', '.join(dominated) or 'none'} of {len(srch)}.", "", "searched vs uniform, size for size:",
              *front_comparison(rows)]
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {out / (stem + '.png')}, {out / (stem + '.csv')}, {out / (stem + '.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
