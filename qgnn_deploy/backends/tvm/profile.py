"""Per-kernel profile of a compiled TVM library (``python -m qgnn_deploy.backends.tvm.profile``).

TVM 0.27's Relax VM has no ``profile=True`` mode, so this uses ``VirtualMachine.set_instrument``: one
instrumented call records every kernel the VM launches with its arguments, then each kernel is re-run in
isolation on those arguments and timed (median of ``repeat``).  Kernels are independent of each other's
timing this way (warm caches, no VM overhead); the whole-graph latency is measured separately, so
``total - sum(kernels)`` estimates what the VM itself costs (allocation, shape checks, launches).

``--uint8-input`` profiles the integer-input variant of a folded graph (what ``qgnn-export
--integer-input`` builds): the boundary ``quantize`` of ``x`` moves to the caller.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from qgnn_deploy.ir.graph import Graph


def integer_input_variant(graph: Graph, feeds: dict[str, np.ndarray]) -> tuple[Graph, dict[str, np.ndarray]]:
    """The ``qgnn-export --integer-input`` form of ``graph`` (:func:`~qgnn_deploy.ir.passes.prequantize_input`)."""
    from qgnn_deploy.ir.passes import prequantized_copy, quantize_input_feeds

    g2 = prequantized_copy(graph)
    return g2, quantize_input_feeds(g2, feeds)


def profile_library(lib_path: Path | str, graph: Graph, feeds: dict[str, np.ndarray], repeat: int = 50,
                    total_repeat: int = 200) -> dict[str, Any]:
    """{"total_us": {median, p10, min}, "kernels": [(symbol, median_us)], "bit_exact": bool} on ``feeds``."""
    import tvm
    from tvm import relax

    from qgnn_deploy.ir.interpreter import run

    vm = relax.VirtualMachine(tvm.runtime.load_module(str(lib_path)), tvm.cpu())
    args = [tvm.runtime.tensor(np.ascontiguousarray(feeds[vi.name])) for vi in graph.inputs]
    main = vm["main"]
    exact = bool(np.array_equal(main(*args).numpy(), run(graph, feeds)[graph.outputs[0].name]))
    for _ in range(10):
        main(*args)
    tot = []
    for _ in range(total_repeat):  # before any instrument is installed: it would run on every VM call
        t = time.perf_counter()
        main(*args)
        tot.append(time.perf_counter() - t)
    calls: list[tuple[str, Any, list[Any]]] = []

    def record(func: Any, symbol: str, before: bool, _ret: Any, *call_args: Any) -> int:
        if before and not symbol.startswith(("vm.", "relax.")):
            calls.append((symbol, func, list(call_args)))
        return 0

    vm.set_instrument(record)
    main(*args)
    kernels = []
    for symbol, func, call_args in calls:
        for _ in range(5):
            func(*call_args)
        ts = []
        for _ in range(repeat):
            t = time.perf_counter()
            func(*call_args)
            ts.append(time.perf_counter() - t)
        kernels.append((symbol, statistics.median(ts) * 1e6))
    chain = []
    for _ in range(total_repeat):  # the same launches back to back, without the VM: what the VM itself adds
        t = time.perf_counter()
        for _symbol, func, call_args in calls:
            func(*call_args)
        chain.append(time.perf_counter() - t)

    def stats(ts: list[float]) -> dict[str, float]:
        return {"median": statistics.median(ts) * 1e6, "p10": float(np.percentile(ts, 10)) * 1e6, "min": min(ts) * 1e6}

    return {"bit_exact": exact, "kernels": kernels, "total_us": stats(tot), "chain_us": stats(chain)}


def render(prof: dict[str, Any]) -> str:
    lines = [f"{'kernel':90s} {'median us':>10s}"]
    lines += [f"{s[:90]:90s} {us:10.1f}" for s, us in prof["kernels"]]
    ksum = sum(us for _, us in prof["kernels"])
    t = prof["total_us"]
    lines.append(f"{len(prof['kernels'])} kernel launches, sum {ksum:.1f} us; whole graph median {t['median']:.1f} "
                 f"p10 {t['p10']:.1f} min {t['min']:.1f} us; bit-exact vs interpreter: {prof['bit_exact']}")
    if "chain_us" in prof:
        c = prof["chain_us"]
        lines.append(f"the {len(prof['kernels'])} launches replayed back to back without the VM: "
                     f"median {c['median']:.1f} p10 {c['p10']:.1f} min {c['min']:.1f} us (whole graph - this = VM "
                     "overhead; this - sum = what warm isolated timing hides: cold caches, thread-pool wake-ups)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path, help="a qgnn-train checkpoint (folded here)")
    ap.add_argument("--target", default="x86_64")
    ap.add_argument("--uint8-input", action="store_true", help="profile the integer-input variant")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--out", type=Path, default=None, help="keep the library here")
    args = ap.parse_args(argv)
    if os.environ.get("TVM_NUM_THREADS") != str(args.threads):
        print(f"warning: TVM_NUM_THREADS={os.environ.get('TVM_NUM_THREADS')} in this process, not {args.threads}")
    from qgnn_deploy.fold import fold_checkpoint

    from .compile import compile_to_dir

    fold = fold_checkpoint(args.checkpoint, data_root=args.data_root)
    graph, feeds = fold.graph, {k: np.ascontiguousarray(v) for k, v in fold.sample_feeds.items()}
    if args.uint8_input:
        graph, feeds = integer_input_variant(graph, feeds)
    out = args.out or Path(tempfile.mkdtemp(prefix="qgnn_tvm_profile_"))
    fields = compile_to_dir(graph, args.target, out, sample_feeds=feeds)
    prof = profile_library(out / fields["library"], graph, feeds, repeat=args.repeat)
    print(f"{args.checkpoint} target {args.target}, {'uint8' if args.uint8_input else 'fp32'} input, "
          f"{args.threads} threads, load {os.getloadavg()[0]:.2f}")
    print(render(prof))
    return prof


def _exec_with_threads(argv: list[str]) -> None:
    """TVM's thread pool must see TVM_NUM_THREADS at process start: re-exec with it set (CLI only)."""
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--threads", type=int, default=2)
    threads = str(ap.parse_known_args(argv)[0].threads)
    if os.environ.get("TVM_NUM_THREADS") != threads:
        env = dict(os.environ, TVM_NUM_THREADS=threads)
        os.execve(sys.executable, [sys.executable, "-m", "qgnn_deploy.backends.tvm.profile", *argv], env)


if __name__ == "__main__":
    _exec_with_threads(sys.argv[1:])
    main()
