"""``qgnn bench-suite``: latency, memory, buffer and size of every route for one model, in one run.

PyG FP32 (eager, cached normalisation, ``torch.compile``, CSR), ORT FP32 on the PyG
export, ORT's own ``quantize_static`` QDQ model, our integer ONNX in ORT and our
TVM x86-64 library (through ``runtimes/qgnn_bench.py``), the GAT pair (PyG ``GATConv``
vs ours), then a synthetic size series and a roofline note.  ``--targets FILE`` adds a
targets table (``examples/targets/bench_suite.toml``).  This command only parses
arguments: the suite is :func:`qgnn_deploy.perf.suite.run_suite`.
"""

from __future__ import annotations

import argparse
import shlex
import tempfile
from pathlib import Path

from qgnn_deploy.commands import add_list_argument, add_parser
from qgnn_deploy.errors import QgnnError


def register(sub: argparse._SubParsersAction) -> None:
    p = add_parser(sub, "bench-suite", __doc__)
    p.add_argument("--model", type=Path, default=None, help="GCN INT8 checkpoint (default: train QAT+LoRAP on Cora)")
    p.add_argument("--int4-model", type=Path, default=None, help="GCN INT4 checkpoint for the size target "
                   "(default: train one)")
    p.add_argument("--out-dir", type=Path, default=Path("bench_suite"),
                   help="where the JSON, markdown and PNG outputs go")
    p.add_argument("--work-dir", type=Path, default=None, help="artifacts, graphs and trained models (kept; "
                   "default: a temporary directory)")
    p.add_argument("--name", default="bench_suite", help="file stem of the outputs")
    p.add_argument("--quick", action="store_true", help="tiny synthetic graph, few repeats (tests, development)")
    p.add_argument("--threads", type=int, default=2, help="threads for every backend")
    p.add_argument("--warmup", type=int, default=None, help="untimed runs (default: 10; --quick 2)")
    p.add_argument("--repeats", type=int, default=None, help="timed runs (default: 50; --quick 5)")
    p.add_argument("--processes", type=int, default=None, metavar="K",
                   help="measure every GCN / GAT latency row (and the size series' rows a target reads) in K "
                   "processes, round-robin across the rows, each with its warm-up and repeats/K timed runs (at "
                   "least 5), statistics over the pooled runs (default: 3; --quick 1)")
    add_list_argument(p, "--sizes", item=_node_count, metavar="N", help="node counts of the synthetic series "
                      "(default: 10000,100000,1000000; --quick 200,2000; an empty string skips the series)")
    p.add_argument("--degree", type=float, default=10.0, help="average degree of the synthetic graphs")
    p.add_argument("--tune", type=int, default=0, metavar="N",
                   help="also build a meta-schedule tuned TVM library with N trials (0: none)")
    p.add_argument("--no-compile", dest="torch_compile", action="store_false", help="skip torch.compile")
    p.add_argument("--no-tvm", dest="tvm", action="store_false", help="skip the TVM backend")
    p.add_argument("--no-int4", dest="int4", action="store_false", help="skip the INT4 size row")
    p.add_argument("--det-runs", type=int, default=None,
                   help="runs per thread count in the determinism check (default: 5; --quick 2)")
    p.add_argument("--epochs", type=int, default=200, help="training epochs when no --model is given")
    p.add_argument("--data-root", default=None, help="dataset root (default: $QGNN_DATA_ROOT, else the user cache)")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per backend process")
    p.add_argument("--targets", type=Path, default=None, metavar="FILE",
                   help="TOML file of targets to check (e.g. examples/targets/bench_suite.toml; default: none)")
    p.add_argument("--tvm-target", default="x86_64", metavar="PRESET",
                   help="x86 preset the TVM rows are built for (default: x86_64, this host's CPU); a portable "
                   "preset such as x86-64-v3 times that tier's kernels here, on a CPU that must support it")
    p.add_argument("--no-gcn", dest="gcn", action="store_false",
                   help="skip the GCN table, size series and roofline (the GAT rows only)")
    p.add_argument("--no-gat", dest="gat", action="store_false", help="skip the GAT rows (PyG GATConv vs ours)")
    p.add_argument("--gat-model", type=Path, default=None,
                   help="GAT checkpoint for the GAT rows (default: train GAT INT8 QAT+LoRAP)")
    p.add_argument("--gat-heads", type=int, default=8, help="heads of the trained GAT's hidden layer")
    p.add_argument("--gat-hidden", type=int, default=8, help="channels per head of the trained GAT")
    p.add_argument("--gat-epochs", type=int, default=200, help="training epochs of the GAT when no --gat-model")
    p.set_defaults(func=run, _parser=p)


def command_line(args: argparse.Namespace) -> str:
    """The equivalent ``qgnn bench-suite`` command: every option that differs from its default."""
    parts = ["qgnn", "bench-suite"]
    for action in args._parser._actions:
        if not action.option_strings or action.dest in ("help", "_parser", "verbose", "quiet", "version"):
            continue
        value = getattr(args, action.dest, action.default)
        if value == action.default:
            continue
        flag = action.option_strings[0]
        if action.nargs == 0:
            parts.append(flag)
        else:
            parts += [flag, ",".join(map(str, value)) if isinstance(value, list) else str(value)]
    return " ".join(shlex.quote(p) for p in parts)


def _node_count(text: str) -> int:
    """``10000``, ``1e6``: a node count."""
    return int(float(text))


def parse_sizes(sizes: list[int] | None, quick: bool) -> list[int]:
    """The synthetic series' node counts: ``--sizes`` or the default for the mode."""
    if sizes is None:
        return [200, 2000] if quick else [10_000, 100_000, 1_000_000]
    if any(s < 10 for s in sizes):
        raise QgnnError("--sizes: every graph needs at least 10 nodes")
    return sorted(sizes)


def _check_tvm_target(name: str) -> None:
    """The suite times every library on this host: ``name`` must be a preset whose code this CPU can run."""
    from qgnn_deploy.backends.tvm.targets import TARGETS, runs_on_host

    if name not in TARGETS.names():
        raise QgnnError(f"--tvm-target: unknown preset {name!r}; valid: {', '.join(TARGETS.names())}")
    preset = TARGETS[name]
    if preset.is_aarch64:
        raise QgnnError(f"--tvm-target {name}: the suite times libraries on this host; time an aarch64 library "
                        "on the device with runtimes/qgnn_bench.py")
    if not runs_on_host(preset):
        missing = sorted(set(preset.features) - set(TARGETS["x86_64"].features))
        raise QgnnError(f"--tvm-target {name}: this CPU lacks {', '.join(missing)}, so it cannot run that build")


def run(args: argparse.Namespace) -> int:
    from qgnn_deploy.perf.suite import SuiteConfig, run_suite
    from qgnn_deploy.targets import load_targets

    if args.threads < 1:
        raise QgnnError("--threads must be >= 1")
    if args.processes is not None and args.processes < 1:
        raise QgnnError(f"--processes must be >= 1 (got {args.processes})")
    for m in (args.model, args.int4_model, args.gat_model):
        if m is not None and not Path(m).is_file():
            raise QgnnError(f"checkpoint {m} not found")
    if args.targets is not None:
        load_targets(args.targets)  # a bad targets file fails before any work
    if not (args.gcn or args.gat):
        raise QgnnError("--no-gcn with --no-gat leaves nothing to measure")
    if args.gat_heads < 1 or args.gat_hidden < 1:
        raise QgnnError("--gat-heads and --gat-hidden must be >= 1")
    if args.tvm:
        _check_tvm_target(args.tvm_target)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="qgnn-bench-suite-"))
    cfg = SuiteConfig(
        out_dir=args.out_dir, work_dir=work, model=args.model, int4_model=args.int4_model, quick=args.quick,
        threads=args.threads, warmup=args.warmup if args.warmup is not None else (2 if args.quick else 10),
        repeats=args.repeats if args.repeats is not None else (5 if args.quick else 50),
        processes=args.processes if args.processes is not None else (1 if args.quick else 3),
        sizes=parse_sizes(args.sizes, args.quick), degree=args.degree, tune=args.tune,
        torch_compile=args.torch_compile, tvm=args.tvm, int4=args.int4,
        det_runs=args.det_runs if args.det_runs is not None else (2 if args.quick else 5), epochs=args.epochs,
        data_root=args.data_root, timeout=args.timeout,
        command=command_line(args), targets=args.targets, gcn=args.gcn, gat=args.gat, gat_model=args.gat_model,
        gat_heads=args.gat_heads, gat_hidden=args.gat_hidden, gat_epochs=args.gat_epochs, tvm_target=args.tvm_target,
    )
    from qgnn_deploy.perf.report import render_markdown

    res = run_suite(cfg, args.name)
    print(render_markdown(res))
    print(f"wrote {args.out_dir}/{args.name}.json, .md" + "".join(f", {Path(p).name}" for p in res["plots"]) +
          f" (work dir {work})")
    return 0
