"""AArch64 int8 GEMM kernels per preset: the inner loop's instructions (objdump) and bit-exact runs under qemu."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from bench_artifacts import BuiltOnDemand, run_libraries_under_qemu

from qgnn_deploy.ir.graph import Graph, GraphBuilder
from qgnn_deploy.ir.interpreter import run

pytest.importorskip("tvm")

from qgnn_deploy.backends.tvm import compile_to_dir  # noqa: E402
from qgnn_deploy.backends.tvm.mca import (  # noqa: E402
    CANDIDATES,
    PRESET_CPUS,
    Insn,
    allowed_variants,
    disassemble,
    estimate,
    gemm_loops,
    loop_macs,
    macs,
    mnemonics,
)

K, N_OUT = 37, 20  # K % 8 == 5 and N % 16 == 4: every kernel's K tail and column padding are exercised
# preset -> GEMM kind the build must report
PRESETS = {"arm64": "neon", "cortex-a53": "neon", "cortex-a72": "neon", "cortex-a76": "sdot", "neoverse-v1": "i8mm"}
ROW_COUNTS = (1, 3, 4, 6, 13, 64)  # around the 4-row block and the 2-row i8mm pairs


def two_gemm_graph() -> Graph:
    """u8 A times symmetric weights in [-127, 127] (NEON: smlal form), s8 A times weights that hold -128
    (NEON: smull-only form), and a short K = 6 GEMM (I8MM falls back to NEON), zero points on A; all three
    accumulators are returned."""
    rng = np.random.default_rng(7)
    b = GraphBuilder()
    x = b.input("x", "float32", ("N", K))
    x6 = b.input("x6", "float32", ("N", 6))
    xu = b.op("quantize", [x], "xu", scale=0.02, zero_point=128, qmin=0, qmax=255, dtype="uint8")
    xs = b.op("quantize", [x], "xs", scale=0.02, zero_point=-3, qmin=-128, qmax=127, dtype="int8")
    wu = rng.integers(-127, 128, size=(K, N_OUT)).astype(np.int8)
    wu[:4, 0] = -127
    ws = rng.integers(-128, 128, size=(K, N_OUT)).astype(np.int8)
    ws[:8, :2] = -128  # (-128) * (-128) products next to each other: an int16 pair sum would overflow
    au = b.op("matmul", [xu, b.const("wu", wu)], "au", a_zero_point=128)
    as_ = b.op("matmul", [xs, b.const("ws", ws)], "as", a_zero_point=-3)
    x6q = b.op("quantize", [x6], "x6q", scale=0.05, zero_point=128, qmin=0, qmax=255, dtype="uint8")
    a6 = b.op("matmul", [x6q, b.const("w6", rng.integers(-127, 128, size=(6, 5)).astype(np.int8))], "a6")
    cat = b.op("concat", [au, as_, a6], "cat", axis=1)
    y = b.op("dequantize", [cat], "y", scale=1.0, zero_point=0)
    b.output(y, "float32", ("N", 2 * N_OUT + 5))
    g = b.graph
    g.validate()
    return g


def _feeds(rows: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(rows)
    x = rng.normal(scale=2.0, size=(rows, K)).astype(np.float32)
    x[0, :8] = -10.0  # saturates to qmin: a u8 0 (flipped to -128) and an s8 -128 against the -128 weights
    return {"x": x, "x6": rng.normal(scale=3.0, size=(rows, 6)).astype(np.float32)}


@pytest.fixture(scope="module")
def arm_libs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if shutil.which("aarch64-linux-gnu-g++") is None or shutil.which("aarch64-linux-gnu-objdump") is None:
        pytest.skip("aarch64 cross toolchain not installed (apt-get install g++-aarch64-linux-gnu)")

    def build(preset: str) -> Path:
        d = tmp_path_factory.mktemp(f"arm_gemm_{preset}")
        fields = compile_to_dir(two_gemm_graph(), preset, d, sample_feeds=_feeds(6))
        assert fields["kernels"]["gemm"] == PRESETS[preset] and PRESETS[preset] in fields["kernels"]["gemm_used"]
        return d / fields["library"]

    return BuiltOnDemand(build)


DEFAULT_RUN_PRESETS = ("cortex-a53", "neoverse-v1")  # NEON widening and I8MM; the rest (same kernels) run in -m slow


@pytest.mark.parametrize("preset", [p if p in DEFAULT_RUN_PRESETS else pytest.param(p, marks=pytest.mark.slow)
                                    for p in PRESETS])
def test_gemm_inner_loops_use_the_intended_instructions(arm_libs: dict[str, Path], preset: str) -> None:
    """The K = 37 GEMMs' inner loops, read back from the aarch64 library with objdump, multiply with the intended
    instructions only (the K = 6 GEMM has no k loop: its row-block loop also holds the int32 K-tail code)."""
    loops = gemm_loops(disassemble(arm_libs[preset]))
    everything = set().union(*(mnemonics(lp) for lp in loops))
    pure = [mnemonics(lp) for lp in loops if loop_macs(lp) >= 64 and not mnemonics(lp) & {"mla", "mul"}]
    kind = PRESETS[preset]
    if kind == "neon":
        assert any({"smull", "smlal", "sadalp"} <= u for u in pure)  # u8 A, B without -128: two products per lane
        assert any({"smull", "sadalp"} <= u and "smlal" not in u for u in pure)  # B with -128: one product
        assert not everything & {"sdot", "smmla", "usmmla"}  # runs on any ARMv8-A
    elif kind == "sdot":
        assert sum("sdot" in u for u in pure) >= 2, pure
    else:
        assert any("usmmla" in u for u in pure) and any("smmla" in u for u in pure)  # u8 A: usmmla; s8 A: smmla
        assert "sdot" not in everything


def test_mca_estimate_counts_the_loop_macs(arm_libs: dict[str, Path]) -> None:
    """llvm-mca runs on an extracted loop; MACs per iteration are counted from its instructions."""
    if not any(shutil.which(n) for n in ("llvm-mca", "llvm-mca-19")):
        pytest.skip("llvm-mca not installed (apt-get install llvm)")
    loop = max(gemm_loops(disassemble(arm_libs["neoverse-v1"])), key=loop_macs)
    est = estimate(loop, "neoverse-v1", iterations=50)
    n_mmla = sum(1 for x in loop if x.mnemonic in ("smmla", "usmmla"))
    assert est.macs_per_iter == 32 * n_mmla > 0 and est.cycles_per_iter > 0
    assert est.macs_per_cycle == pytest.approx(est.macs_per_iter / est.cycles_per_iter)


def test_mac_counts_and_variant_sets() -> None:
    """MACs per instruction by arrangement, and which kernels each preset's ISA may use in the estimate."""
    assert macs(Insn(0, "smlal", "v0.8h, v1.8b, v2.8b")) == 8 and macs(Insn(0, "sdot", "v0.4s, v1.16b, v2.16b")) == 16
    assert macs(Insn(0, "usmmla", "v0.4s, v1.16b, v2.16b")) == 32 and macs(Insn(0, "mla", "v0.4s, v1.4s, v2.4s")) == 4
    assert macs(Insn(0, "sadalp", "v0.4s, v1.8h")) == 0 and macs(Insn(0, "mul", "x0, x1, x2")) == 0
    assert [v for v in allowed_variants("cortex-a53") if v in CANDIDATES] == ["generic", "neon"]
    assert [v for v in allowed_variants("cortex-a76") if v in CANDIDATES] == ["generic", "neon", "sdot"]
    assert [v for v in allowed_variants("neoverse-v1") if v in CANDIDATES] == ["generic", "neon", "sdot", "i8mm"]
    assert set(PRESET_CPUS) >= {"arm64", "cortex-a53", "cortex-a72", "cortex-a76", "neoverse-n1", "neoverse-v1"}


def test_mca_cli_bad_out_dir(tmp_path: Path) -> None:
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "qgnn_deploy.backends.tvm.mca", "--out", str(tmp_path / "no" / "x.md")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("qgnn: error: --out") and "Traceback" not in proc.stderr


@pytest.mark.slow  # default-run budget (CI ~20 min on 2 cores): `bash export/run.sh test-all` runs it
@pytest.mark.arm64
def test_arm_gemm_kernels_bit_exact_under_qemu(arm_libs: dict[str, Path], tmp_path: Path) -> None:
    """Every ARM kernel variant (NEON widening, SDOT, I8MM) equals the interpreter, run under qemu-user
    (``QEMU_CPU=max``: an Armv8.x+ CPU model with dotprod and i8mm)."""
    from qgnn_deploy import arm64

    if not arm64.a64_python_available():
        pytest.skip("aarch64 sysroot/qemu not available: bash export/make_a64_sysroot.sh (see qgnn_deploy.arm64)")
    g = two_gemm_graph()
    presets = list(PRESETS)
    got = run_libraries_under_qemu(arm64, tmp_path, {f"rows{r}": _feeds(r) for r in ROW_COUNTS}, ("x", "x6"),
                                   [arm_libs[p] for p in presets], env={"QEMU_CPU": "max", "TVM_NUM_THREADS": "2"})
    for r in ROW_COUNTS:
        ref = run(g, _feeds(r))["y"]
        for i, preset in enumerate(presets):
            np.testing.assert_array_equal(got[f"{i}__rows{r}"], ref, err_msg=f"{preset}/rows{r}")
