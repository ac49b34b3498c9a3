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
# kernel variant -> (preset it is compiled for, CPUs to estimate it on)
_ANY = ("cortex-a53", "cortex-a55", "cortex-a72", "cortex-a76", "neoverse-n1", "neoverse-v1")
VARIANTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "generic (int32 lanes)": ("arm64", _ANY),
    "neon smull+smlal+sadalp": ("cortex-a53", _ANY),
    "neon smull+sadalp (B has -128)": ("cortex-a53", _ANY),
    "sdot": ("cortex-a76", ("cortex-a55", "cortex-a76", "neoverse-n1", "neoverse-v1")),
    "i8mm usmmla": ("neoverse-v1", ("neoverse-v1", "neoverse-n2")),
}
# the kernel kind each variant is (for the per-preset choice) and the CPU model that stands for each preset
_KIND = {"generic (int32 lanes)": "generic", "neon smull+smlal+sadalp": "neon", "sdot": "sdot", "i8mm usmmla": "i8mm"}
PRESET_CPU = {"arm64": "cortex-a53", "cortex-a53": "cortex-a53", "cortex-a55": "cortex-a55",
              "cortex-a72": "cortex-a72", "cortex-a76": "neoverse-n1", "cortex-a78": "neoverse-n1",
              "neoverse-n1": "neoverse-n1", "neoverse-v1": "neoverse-v1"}  # fmt: skip


def variant_kernel(variant: str, k: int, nb: int):  # noqa: ANN201 - a tirx.PrimFunc
    """The u8-A GEMM PrimFunc of a kernel variant (what ``emit_matmul`` instantiates for that preset)."""
    from .gemm import generic_kernel, sdot_kernel
    from .gemm_arm import i8mm_kernel, neon_kernel

    if variant.startswith("generic"):
        return generic_kernel(k, nb, "uint8")
    if variant.startswith("neon"):
        return neon_kernel(k, nb, "uint8", 1 if "-128" in variant else 2)
    return sdot_kernel(k, nb, "uint8") if variant == "sdot" else i8mm_kernel(k, nb, "uint8")


def build_variant(variant: str, out_dir: Path, k: int = 256, nb: int = 1) -> Path:
    """Cross-compile one GEMM kernel (K x 16*nb, symbolic M) for the variant's preset into a shared library."""
    import tvm

    from .targets import resolve_target

    preset = resolve_target(VARIANTS[variant][0])
    func = variant_kernel(variant, k, nb).with_attr("global_symbol", "gemm")
    ex = tvm.compile(tvm.IRModule({"gemm": func}), target=preset.tvm())
    lib = out_dir / "gemm.so"
    out_dir.mkdir(parents=True, exist_ok=True)
    ex.export_library(str(lib), fcompile=preset.cross_compiler())
    return lib


def _tool_version(cmd: list[str]) -> str:
    out = subprocess.run(cmd, capture_output=True, text=True).stdout.strip().splitlines()
    return next((ln.strip() for ln in out if "version" in ln.lower()), "?")  # the first line that names it


def report(out: Path | None) -> str:
    """Build every variant, estimate it on its CPUs, and render the markdown document (written atomically)."""
    import tvm

    from .gemm_arm import ARM_KERNEL_NAMES, arm_gemm_kind
    from .targets import TARGETS

    rows = [
        "| kernel variant | built for | MACs/iter | -mcpu | sched. model | cycles/iter | est. MACs/cycle |",
        "|---|---|---|---|---|---|---|",
    ]
    table: dict[tuple[str, str], Estimate] = {}
    with tempfile.TemporaryDirectory(prefix="qgnn-mca-") as tmp:
        for i, (variant, (preset, cpus)) in enumerate(VARIANTS.items()):
            loop = main_loop(build_variant(variant, Path(tmp) / str(i)))
            for cpu in cpus:
                est = table[variant, cpu] = estimate(loop, cpu)
                rows.append(
                    f"| {variant} | `{preset}` | {est.macs_per_iter} | {cpu} | {est.model} | "
                    f"{est.cycles_per_iter:.2f} | {est.macs_per_cycle:.1f} |"
                )
    choice = [
        "| preset | estimated on | candidates its ISA allows (est. MACs/cycle) | kernel it gets | fastest? |",
        "|---|---|---|---|---|",
    ]
    for name, cpu in PRESET_CPU.items():
        preset = TARGETS[name]
        feats = {str(f).lstrip("+") for f in preset.tvm_target.get("mattr", ())}
        allowed = {
            v: table[v, cpu].macs_per_cycle
            for v, kind in _KIND.items()
            if (v, cpu) in table
            and (kind in ("generic", "neon") or kind in feats or (kind == "sdot" and "dotprod" in feats))
        }
        got = arm_gemm_kind(preset)
        got_variant = next(v for v, kind in _KIND.items() if kind == got)
        best = max(allowed, key=allowed.get)
        cands = ", ".join(f"{v} {m:.1f}" for v, m in allowed.items())
        choice.append(
            f"| `{name}` | {cpu} | {cands} | {ARM_KERNEL_NAMES.get(got, got)} | "
            f"{'yes' if best == got_variant else 'no: ' + best} |"
        )
    text = f"""# ARM int8 GEMM inner loops: llvm-mca estimate

**Static estimate, not a device timing.** No ARM board was used: each kernel variant's GEMM loop is
read back from an aarch64 library and given to `llvm-mca`, which models one core's pipelines with all
loads hitting L1.  It ranks kernel variants on a CPU; it does not predict end-to-end model latency.

Command (writes this file): `python -m qgnn_deploy.backends.tvm.mca --out examples/results/arm_gemm_llvm_mca.md`

- tools: {_tool_version([mca_binary(), "--version"])}; {_tool_version([OBJDUMP, "--version"])}; TVM {tvm.__version__}
- method: the u8-activation GEMM kernel of each variant (K = 256, 16 output columns, symbolic M) is
  cross-compiled for the preset named in the table; the innermost loop that does vector multiplies is taken
  from `{OBJDUMP} -d`; `llvm-mca -mtriple=aarch64 -mcpu=CPU -iterations=200` runs it (branch dropped).
  MACs per iteration are counted from the loop's instructions (smull/smlal 8b: 8, mla .4s: 4, sdot .4s: 16,
  smmla/usmmla: 32), so est. MACs/cycle = MACs per iteration / cycles per iteration.
- scheduling models: LLVM has no Cortex-A72 or A76 model; `-mcpu=cortex-a72`/`cortex-a76` use the Cortex-A57
  model (the A72 is an A57 derivative; for the A76 the Neoverse N1 row, its server sibling with its own model,
  is the better guide).  SDOT is unknown to the A57 model (default latencies), so the cortex-a76 SDOT row is
  pessimistic.
- "neon smull+sadalp (B has -128)" is the exact fallback the NEON kernel uses when a weight matrix holds -128
  (two products could overflow int16); the project's symmetric int8 weights are in [-127, 127].

{chr(10).join(rows)}

## Kernel choice per preset

The preset's CPU (the generic `arm64` preset is judged on the slowest common core, the Cortex-A53) against
the variants its ISA allows:

{chr(10).join(choice)}

The NEON widening kernel replaces the int32-lane generic kernel on every core without dotprod (about 1.3x on
the in-order A53, 1.8-2x on the out-of-order cores, by this estimate); SDOT stays for dotprod cores and I8MM is
taken where the CPU has it.
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
    try:
        sys.stdout.write(report(args.out))
    except QgnnError as exc:
        print(f"qgnn: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
