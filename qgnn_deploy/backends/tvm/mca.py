"""Static evidence for the AArch64 int8 GEMM kernels: disassembly of the GEMM inner loop and ``llvm-mca``.

No ARM board is at hand, so two checks stand in for a device timing:

* :func:`gemm_loops` finds, in ``aarch64-linux-gnu-objdump -d`` of a built library, the innermost loops
  that multiply (tests assert they use ``smlal``/``sadalp``, ``sdot``, ``smmla``...);
* :func:`estimate` feeds such a loop to ``llvm-mca`` for a CPU model and turns its cycles per iteration
  into int8 multiply-accumulates per cycle (MACs are counted from the instructions themselves).

``python -m qgnn_deploy.backends.tvm.mca --out examples/results/arm_gemm_llvm_mca.md`` cross-compiles a
small GEMM model once per kernel variant and writes the table (a static estimate, not a device timing).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from qgnn_deploy.errors import QgnnError

OBJDUMP = "aarch64-linux-gnu-objdump"
_LINE = re.compile(r"^\s*([0-9a-f]+):\s+(?:[0-9a-f]{8}\s+)?([a-z][a-z0-9.]*)\s*(.*)$")
_BRANCH = re.compile(r"^(b\.[a-z]+|b|cbz|cbnz|tbz|tbnz)$")
# MACs one vector instruction does, by mnemonic and destination arrangement (int8 products per instruction).
_DOT = {"sdot": 4, "udot": 4, "usdot": 4, "smmla": 8, "ummla": 8, "usmmla": 8}
_WIDEN = ("smull", "smull2", "umull", "umull2", "smlal", "smlal2", "umlal", "umlal2", "mla", "mul")
_LANES = {"16b": 16, "8b": 8, "8h": 8, "4h": 4, "4s": 4, "2s": 2, "2d": 2}


@dataclass(frozen=True)
class Insn:
    addr: int
    mnemonic: str
    operands: str

    def text(self) -> str:
        """The instruction as assembly llvm-mca accepts (objdump's ``// #imm`` comments dropped)."""
        return f"{self.mnemonic}\t{self.operands.split('//')[0].strip()}".strip()


def macs(insn: Insn) -> int:
    """int8 multiply-accumulates done by one vector instruction (0 for anything else)."""
    dest = re.match(r"v\d+\.(\w+)", insn.operands)
    if dest is None:
        return 0
    lanes = _LANES.get(dest.group(1), 0)
    if insn.mnemonic in _DOT:
        return lanes * _DOT[insn.mnemonic]
    return lanes if insn.mnemonic in _WIDEN else 0


def disassemble(lib: Path) -> list[Insn]:
    """``objdump -d`` of an aarch64 ELF as instructions (addresses across all functions)."""
    if shutil.which(OBJDUMP) is None:
        raise QgnnError(f"{OBJDUMP} not found: apt-get install binutils-aarch64-linux-gnu")
    out = subprocess.run(
        [OBJDUMP, "-d", "--no-show-raw-insn", str(lib)], capture_output=True, text=True, check=True
    ).stdout
    insns = []
    for line in out.splitlines():
        mt = _LINE.match(line)
        if mt:
            insns.append(Insn(int(mt.group(1), 16), mt.group(2), mt.group(3).strip()))
    return insns


def _target(insn: Insn) -> int | None:
    if not _BRANCH.match(insn.mnemonic):
        return None
    mt = re.search(r"(?:^|,\s*)([0-9a-f]+)(?:\s+<|$)", insn.operands)
    return int(mt.group(1), 16) if mt else None


def gemm_loops(insns: list[Insn]) -> list[list[Insn]]:
    """Innermost loops (a backward branch with no other backward branch inside) that do vector MACs."""
    index = {ins.addr: i for i, ins in enumerate(insns)}
    spans = []
    for i, ins in enumerate(insns):
        tgt = _target(ins)
        if tgt is not None and tgt < ins.addr and tgt in index:
            spans.append((index[tgt], i))
    loops = []
    for start, end in spans:
        if any(s > start and e < end for s, e in spans if (s, e) != (start, end)) or any(
            start < e < end for s, e in spans if (s, e) != (start, end)
        ):
            continue
        body = insns[start : end + 1]
        if any(macs(x) for x in body):
            loops.append(body)
    return loops


def loop_macs(loop: list[Insn]) -> int:
    return sum(macs(x) for x in loop)


def mnemonics(loop: list[Insn]) -> set[str]:
    return {x.mnemonic for x in loop}


def main_loop(lib: Path) -> list[Insn]:
    """The GEMM inner loop of a library: the innermost loop doing the most MACs per iteration."""
    loops = gemm_loops(disassemble(lib))
    if not loops:
        raise QgnnError(f"no vector multiply loop found in {lib}")
    return max(loops, key=loop_macs)


def mca_binary() -> str:
    """The newest ``llvm-mca`` on PATH (LLVM 19 has Neoverse N1/V1 models; LLVM 14 maps them to Cortex-A57)."""
    for name in ("llvm-mca-21", "llvm-mca-20", "llvm-mca-19", "llvm-mca-18", "llvm-mca-17", "llvm-mca"):
        if shutil.which(name):
            return name
    raise QgnnError("llvm-mca not found: apt-get install llvm (Debian/Ubuntu)")


@dataclass(frozen=True)
class Estimate:
    mcpu: str
    model: str  # the scheduling model llvm-mca used (its resource names' prefix)
    cycles_per_iter: float
    macs_per_iter: int

    @property
    def macs_per_cycle(self) -> float:
        return self.macs_per_iter / self.cycles_per_iter


def estimate(loop: list[Insn], mcpu: str, iterations: int = 200) -> Estimate:
    """llvm-mca's steady-state cycles for the loop body (branch dropped) on ``mcpu``."""
    body = "\n".join(x.text() for x in loop if not _BRANCH.match(x.mnemonic)) + "\n"
    proc = subprocess.run(
        [mca_binary(), "-mtriple=aarch64", f"-mcpu={mcpu}", "-mattr=+dotprod,+i8mm", f"-iterations={iterations}"],
        input=body,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise QgnnError(f"llvm-mca -mcpu={mcpu} failed: {(proc.stderr.strip().splitlines() or ['?'])[0]}")
    cycles = int(re.search(r"Total Cycles:\s+(\d+)", proc.stdout).group(1))
    res = re.search(r"Resources:\n\[[\d.]+\]\s+-\s+(\w+)", proc.stdout)
    model = re.sub(r"Unit\w*$", "", res.group(1)) if res else "?"
    return Estimate(mcpu, model, cycles / iterations, loop_macs(loop))


# ---------------------------------------------------------------------- the report
# Kernel variants in table order.  "neon1" (one product per int16 lane: what a weight matrix holding -128 gets)
# and "sdot1" (the SDOT kernel before this table: one row at a time) are shown, but are not candidates.
VARIANT_NAMES = {
    "generic": "generic (int32 lanes)",
    "neon": "NEON smull+smlal+sadalp",
    "neon1": "NEON smull+sadalp (B with -128)",
    "sdot1": "SDOT 1-row (before)",
    "sdot": "SDOT 4-row",
    "i8mm": "I8MM usmmla",
}
CANDIDATES = ("generic", "neon", "sdot", "i8mm")
# preset -> llvm-mca CPU models that stand for it (LLVM has no A72/A76 model: they map to Cortex-A57; N1 is the
# A76's server sibling and the A78 is of the same family)
PRESET_CPUS = {
    "arm64": ("cortex-a53", "cortex-a72", "neoverse-n1"),
    "cortex-a53": ("cortex-a53",),
    "cortex-a55": ("cortex-a55",),
    "cortex-a72": ("cortex-a72",),
    "cortex-a76": ("cortex-a76", "neoverse-n1"),
    "cortex-a78": ("neoverse-n1",),
    "neoverse-n1": ("neoverse-n1",),
    "neoverse-v1": ("neoverse-v1",),
}


def allowed_variants(preset_name: str) -> list[str]:
    """The variants a preset's ISA can run (every aarch64 CPU has NEON)."""
    from .targets import TARGETS

    feats = {str(f).lstrip("+") for f in TARGETS[preset_name].tvm_target.get("mattr", ())}
    return [v for v in VARIANT_NAMES if v.startswith(("generic", "neon")) or
            (v.startswith("sdot") and "dotprod" in feats) or (v == "i8mm" and "i8mm" in feats)]  # fmt: skip


def variant_kernel(variant: str, k: int, nb: int):  # noqa: ANN201 - a tirx.PrimFunc
    """The u8-A GEMM PrimFunc of a kernel variant (what ``emit_matmul`` instantiates for that preset)."""
    from .gemm import generic_kernel
    from .gemm_arm import i8mm_kernel, neon_kernel, sdot_kernel, sdot_rows_kernel

    makers = {
        "generic": lambda: generic_kernel(k, nb, "uint8"),
        "neon": lambda: neon_kernel(k, nb, "uint8", 2),
        "neon1": lambda: neon_kernel(k, nb, "uint8", 1),
        "sdot1": lambda: sdot_kernel(k, nb, "uint8"),
        "sdot": lambda: sdot_rows_kernel(k, nb, "uint8"),
        "i8mm": lambda: i8mm_kernel(k, nb, "uint8"),
    }
    return makers[variant]()


def build_variant(variant: str, preset_name: str, out_dir: Path, k: int = 256, nb: int = 1) -> Path:
    """Cross-compile one GEMM kernel (K x 16*nb, symbolic M) for a preset into a shared library."""
    import tvm

    from .targets import resolve_target

    preset = resolve_target(preset_name)
    func = variant_kernel(variant, k, nb).with_attr("global_symbol", "gemm")
    ex = tvm.compile(tvm.IRModule({"gemm": func}), target=preset.tvm())
    out_dir.mkdir(parents=True, exist_ok=True)
    lib = out_dir / "gemm.so"
    ex.export_library(str(lib), fcompile=preset.cross_compiler())
    return lib


def _tool_version(cmd: list[str]) -> str:
    out = subprocess.run(cmd, capture_output=True, text=True).stdout.strip().splitlines()
    return next((ln.strip() for ln in out if re.search(r"\d+\.\d+", ln)), "?")  # the first line with a version


def _host_cpu() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown CPU"
    return next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), "unknown")


def report(out: Path | None) -> str:
    """Build every variant each preset allows, estimate it on the preset's CPU models, render the markdown
    document (written atomically)."""
    import tvm

    from .gemm_arm import ARM_KERNEL_NAMES, arm_gemm_kind
    from .targets import TARGETS

    head = " | ".join(VARIANT_NAMES.values())
    compact = [f"| preset | llvm-mca -mcpu (model) | {head} | kernel it gets | fastest candidate? |",
               "|---" * (len(VARIANT_NAMES) + 4) + "|"]  # fmt: skip
    detail = ["| preset | variant | MACs/iter | instructions/iter | -mcpu | model | cycles/iter | est. MACs/cycle |",
              "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="qgnn-mca-") as tmp:
        for name, cpus in PRESET_CPUS.items():
            got = arm_gemm_kind(TARGETS[name])
            loops = {v: main_loop(build_variant(v, name, Path(tmp) / f"{name}-{v}")) for v in allowed_variants(name)}
            for cpu in cpus:
                ests = {v: estimate(loop, cpu) for v, loop in loops.items()}
                for v, est in ests.items():
                    detail.append(f"| `{name}` | {VARIANT_NAMES[v]} | {est.macs_per_iter} | {len(loops[v])} | {cpu} | "
                                  f"{est.model} | {est.cycles_per_iter:.2f} | {est.macs_per_cycle:.2f} |")  # fmt: skip
                cells = [f"{ests[v].macs_per_cycle:.1f}" if v in ests else "-" for v in VARIANT_NAMES]
                best = max((v for v in CANDIDATES if v in ests), key=lambda v: ests[v].macs_per_cycle)
                model = next(iter(ests.values())).model
                verdict = "yes" if best == got else f"no: {VARIANT_NAMES[best]}"
                compact.append(f"| `{name}` | {cpu} ({model}) | {' | '.join(cells)} | "
                               f"{ARM_KERNEL_NAMES.get(got, got)} | {verdict} |")  # fmt: skip
    text = f"""# ARM int8 GEMM inner loops: llvm-mca estimate

**Static estimate, not a device timing.** No ARM board was used: each kernel variant's GEMM loop is
read back from an aarch64 library and given to `llvm-mca`, which models one core's pipelines with all
loads hitting L1.  It ranks kernel variants on a CPU; it does not predict end-to-end model latency.

Command (writes this file): `python -m qgnn_deploy.backends.tvm.mca --out examples/results/arm_gemm_llvm_mca.md`

- tools: {_tool_version([mca_binary(), "--version"])}; {_tool_version([OBJDUMP, "--version"])}; TVM {tvm.__version__};
  run on an x86-64 host ({_host_cpu()}), which does not affect a static estimate
- method: for every preset, each GEMM kernel variant its ISA allows (u8 activations, K = 256, 16 output
  columns, symbolic M) is cross-compiled with that preset's target (so with its `-mcpu` scheduling); the
  innermost loop that does vector multiplies is taken from `{OBJDUMP} -d`; `llvm-mca -mtriple=aarch64
  -mcpu=CPU -iterations=200` runs it (branch dropped).  MACs per iteration are counted from the loop's
  instructions (smull/smlal 8b: 8, mla .4s: 4, sdot .4s: 16, smmla/usmmla: 32), so est. MACs/cycle =
  MACs per iteration / cycles per iteration.
- scheduling models: LLVM has no Cortex-A72 or A76 model; `-mcpu=cortex-a72`/`cortex-a76` use the Cortex-A57
  model (the A72 is an A57 derivative).  For A76-class cores (`cortex-a76`, `cortex-a78`) the Neoverse N1 model,
  the A76's server sibling, is the better guide: the A57 model does not know `sdot` (default latencies).
  The generic `arm64` preset runs on every core, so it is estimated on the A53, A72 and N1 models.
- "NEON smull+sadalp (B with -128)" is the exact fallback the NEON kernel uses when a weight matrix holds -128
  (two products could overflow int16); the project's symmetric int8 weights are in [-127, 127].
  "SDOT 1-row (before)" is the SDOT kernel the dotprod presets had before this table; neither is a candidate.

## Estimated int8 MACs per cycle of the GEMM inner loop

{chr(10).join(compact)}

The NEON widening kernel replaces the int32-lane generic kernel on every core without dotprod; SDOT now runs
4 rows per k step (each B block loaded once for 4 rows, 16 independent accumulator chains) instead of one row
after another; I8MM is taken where the CPU has it.  Scheduling matters on the in-order A53: the same NEON loop
scheduled for another `-mcpu` estimates slower there (see the `arm64` rows).

## Details

{chr(10).join(detail)}
"""
    if out is not None:
        tmp_out = out.with_name(out.name + ".tmp")
        tmp_out.write_text(text)
        tmp_out.replace(out)
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m qgnn_deploy.backends.tvm.mca",
        description="llvm-mca static estimate of the aarch64 int8 GEMM inner loops",
    )
    ap.add_argument("--out", type=Path, help="write the markdown table here (default: print it)")
    args = ap.parse_args(argv)
    if args.out is not None and not args.out.parent.is_dir():
        print(f"qgnn: error: --out: directory {args.out.parent} does not exist", file=sys.stderr)
        return 2
    try:
        sys.stdout.write(report(args.out))
    except QgnnError as exc:
        print(f"qgnn: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
