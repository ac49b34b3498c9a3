"""x86 ISA tiers: every preset's GEMM inner loop uses the intended instructions (objdump), and the tiers this
CPU can run are bit-exact with the reference interpreter."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from bench_artifacts import BuiltOnDemand

from qgnn_deploy.ir.graph import Graph, GraphBuilder
from qgnn_deploy.ir.interpreter import run
from qgnn_deploy.ir.testing import awkward_graphs, op_zoo_graph

tvm = pytest.importorskip("tvm")

from qgnn_deploy.backends.tvm import TARGETS, compile_to_dir, run_library  # noqa: E402
from qgnn_deploy.backends.tvm.compile import gemm_kind  # noqa: E402
from qgnn_deploy.backends.tvm.targets import target_table_markdown  # noqa: E402

X86_PRESETS = ["x86_64", "x86_64-generic", "x86-64-v2", "x86-64-v3", "x86-64-v3-vnni", "x86-64-v4", "x86-64-v4-vnni"]
# preset -> (kernel, instruction regex, register, instructions in one inner-loop iteration at least)
EXPECTED = {
    "x86_64-generic": ("sse2", r"\bpmaddwd\b", "xmm", 8),  # 2 rows x 4 xmm accumulators
    "x86-64-v2": ("sse2", r"\bpmaddwd\b", "xmm", 8),
    "x86-64-v3": ("avx2-pair", r"\bvpmaddubsw\b", "ymm", 10),  # 5 rows x 2 ymm (w1 / w3 are pair-friendly)
    "x86-64-v3-vnni": ("avxvnni", r"\{vex\} vpdpbusd\b", "ymm", 12),  # VEX (AVX-VNNI), not EVEX
    "x86-64-v4": ("avx512bw", r"\bvpmaddwd\b", "zmm", 8),  # 8 rows x 1 zmm
    "x86-64-v4-vnni": ("vnni", r"\bvpdpbusd\b", "zmm", 8),
}
KIND_EXPECTED = {kind: rest for kind, *rest in EXPECTED.values()}
KIND_EXPECTED["avx2"] = (r"\bvpmaddwd\b", "ymm", 12)  # forced, or avx2-pair's fallback for uniform weights


def _host_cpu_flags() -> set[str]:
    text = Path("/proc/cpuinfo").read_text()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return set(line.split(":", 1)[-1].split())


def _runs_here(preset: str) -> bool:
    flags = _host_cpu_flags()
    need = {
        "x86-64-v3": {"avx2", "fma"},
        "x86-64-v3-vnni": {"avx2", "avx_vnni"},
        "x86-64-v4": {"avx512f", "avx512bw", "avx512dq", "avx512vl"},
        "x86-64-v4-vnni": {"avx512f", "avx512bw", "avx512vnni"},
    }.get(preset, set())
    return need <= flags


def gemm_graph(seed: int = 0) -> Graph:
    """FP32 x -> quantize -> matmul (K=41, N=16: the fused-quantize kernel), an s8 matmul with zero points on its
    requantized result (K=16, uniform weights with extremes) and a second quantize -> u8 matmul with N=20 (two
    column blocks, odd K, unfused).  w1 and w3 are QAT-like (x86-64-v3 runs them with ``avx2-pair``, w3 with
    residual quads), w2 is uniform (``avx2-pair`` falls back to ``avx2`` for it)."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder()
    x = b.input("x", "float32", ("N", 41))
    xq = b.op("quantize", [x], "xq", scale=0.05, zero_point=128, qmin=0, qmax=255, dtype="uint8")
    w1 = np.clip(rng.normal(0.0, 30.0, (41, 16)).round(), -128, 127).astype(np.int8)
    acc = b.op("matmul", [xq, b.const("w1", w1)], "acc", a_zero_point=128)
    h = b.op("requantize", [acc], "h", multiplier=1 << 20, shift=30, zero_point=-3, qmin=-128, qmax=127, dtype="int8")
    w2 = rng.integers(-128, 128, (16, 20)).astype(np.int8)
    w2[0] = -128  # extremes: 255 * -128 pairs would saturate a plain vpmaddubsw
    h2 = b.op("matmul", [h, b.const("w2", w2)], "h2", a_zero_point=-3)
    xq2 = b.op("quantize", [x], "xq2", scale=0.1, zero_point=0, qmin=0, qmax=255, dtype="uint8")
    w3 = np.clip(rng.normal(0.0, 20.0, (41, 20)).round(), -128, 127).astype(np.int8)  # QAT-like: avx2-pair
    w3[32:34, 5], w3[38:40, 17] = 120, -128  # pairs over the bound in the unpermuted K tail: residual quads
    wide = b.op("matmul", [xq2, b.const("w3", w3)], "wide")
    out = b.op("concat", [h2, wide], "out", axis=1)
    b.output(out, "int32", ("N", 40))
    g = b.graph
    g.validate()
    return g


def _feeds(n: int, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed + n)
    x = rng.normal(0.0, 4.0, size=(n, 41)).astype(np.float32)
    x[:, 0] = 100.0  # quantizes to 255: the saturating corner of u8 x s8
    return {"x": x}


@pytest.fixture(scope="module")
def x86_gemm_libs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict]]:

    def build(name: str) -> tuple[Path, dict]:
        d = tmp_path_factory.mktemp(name.replace("-", "_"))
        fields = compile_to_dir(gemm_graph(), name, d, sample_feeds=_feeds(67))
        return d / fields["library"], fields

    return BuiltOnDemand(build)


# the host and the AVX2 tier (avx2-pair) in the default run; every other preset's build in -m slow
TIERS = [p if p in ("x86_64", "x86-64-v3") else pytest.param(p, marks=pytest.mark.slow) for p in X86_PRESETS]


def inner_loops(disassembly: str) -> list[list[str]]:
    """Instruction lists of the innermost loops: [target, jump] ranges of backward jumps containing no other."""
    ins = []
    for line in disassembly.splitlines():
        m = re.match(r"\s*([0-9a-f]+):\s+(.*)$", line)
        if m:
            ins.append((int(m.group(1), 16), m.group(2).strip()))
    loops = []
    for i, (addr, text) in enumerate(ins):
        j = re.match(r"j\w+\s+([0-9a-f]+)\b", text)
        if j and int(j.group(1), 16) < addr:
            start = int(j.group(1), 16)
            body = [(a, t) for a, t in ins[: i + 1] if a >= start]
            loops.append(body)
    inner = []
    for body in loops:
        jumps_back = sum(
            1
            for a, t in body[:-1]
            if (m := re.match(r"j\w+\s+([0-9a-f]+)\b", t))
            and int(m.group(1), 16) < a
            and int(m.group(1), 16) >= body[0][0]
        )
        if jumps_back == 0:
            inner.append([t for _, t in body])
    return inner


def _objdump(lib: Path) -> str:
    tool = shutil.which("objdump")
    if tool is None:
        pytest.skip("objdump (binutils) is not installed")
    return subprocess.run(
        [tool, "-d", "--no-show-raw-insn", str(lib)], check=True, capture_output=True, text=True
    ).stdout


@pytest.mark.parametrize("preset", TIERS)
def test_gemm_inner_loop_uses_the_tier_instructions(preset: str, x86_gemm_libs: dict) -> None:
    lib, fields = x86_gemm_libs[preset]
    kind = fields["kernels"]["gemm"]
    if preset == "x86_64":
        assert kind == gemm_kind(TARGETS["x86_64"])
    else:
        assert kind == EXPECTED[preset][0]
    pattern, reg, per_iter = KIND_EXPECTED[kind]
    loops = inner_loops(_objdump(lib))
    counts = [sum(1 for t in body if re.search(pattern, t) and f"%{reg}" in t) for body in loops]
    assert max(counts, default=0) >= per_iter, (preset, sorted(counts)[-5:])
    # no other vector width sneaks into the hot loop (e.g. a zmm kernel split into ymm halves)
    best = loops[counts.index(max(counts))]
    others = {"xmm", "ymm", "zmm"} - {reg}
    assert not any(re.search(pattern, t) and any(f"%{o}" in t for o in others) for t in best), preset


@pytest.mark.parametrize("preset", TIERS)
def test_runnable_tiers_bit_exact(preset: str, x86_gemm_libs: dict) -> None:
    if not _runs_here(preset):
        pytest.skip(f"this CPU cannot run {preset} (checked by disassembly only)")
    lib, _ = x86_gemm_libs[preset]
    g = gemm_graph()
    for n in (1, 5, 6, 7, 67, 97, 200):  # around the 2/6/8-row blocks and the 16-block task panels
        feeds = _feeds(n)
        np.testing.assert_array_equal(run_library(lib, feeds), run(g, feeds)["out"], err_msg=f"{preset} N={n}")


@pytest.mark.parametrize("preset", [pytest.param("x86-64-v2", marks=pytest.mark.slow), "x86-64-v3"])
def test_op_zoo_bit_exact_per_tier(preset: str, tmp_path: Path) -> None:
    """The whole op zoo (u8 and s8 GEMM operands, fused quantize at K >= 16) on the awkward graphs."""
    if not _runs_here(preset):
        pytest.skip(f"this CPU cannot run {preset}")
    g = op_zoo_graph(features=21)
    x, ei = awkward_graphs(21)["random"]
    fields = compile_to_dir(g, preset, tmp_path, sample_feeds={"x": x, "edge_index": ei})
    for case, (x, ei) in awkward_graphs(21).items():
        feeds = {"x": x, "edge_index": ei}
        np.testing.assert_array_equal(
            run_library(tmp_path / fields["library"], feeds),
            run(g, feeds)[g.outputs[0].name],
            err_msg=f"{preset}/{case}",
        )


def test_ubsw_split_kernel_exact_at_saturation() -> None:
    """The 6-bit weight split keeps vpmaddubsw exact where the plain instruction saturates (255 * -128 * 2)."""
    from tvm import relax

    from qgnn_deploy.backends.tvm.compile import build_options, pipeline
    from qgnn_deploy.backends.tvm.relax_builder import build_module
    from qgnn_deploy.backends.tvm.targets import resolve_target

    if not _runs_here("x86-64-v3"):
        pytest.skip("needs AVX2")
    for a_dtype in ("uint8", "int8"):
        info = np.iinfo(a_dtype)
        b = GraphBuilder()
        a = b.input("a", a_dtype, ("N", 23))
        w = np.random.default_rng(0).integers(-128, 128, (23, 16)).astype(np.int8)
        w[:4] = -128
        w[4:8] = 127
        b.output(b.op("matmul", [a, b.const("w", w)], "y"), "int32", ("N", 16))
        preset = resolve_target("x86-64-v3")
        opts = build_options(preset)
        opts.gemm_kind = "avx2-ubsw"
        vm = relax.VirtualMachine(
            tvm.compile(build_module(b.graph, opts), target=preset.tvm(), relax_pipeline=pipeline(preset)), tvm.cpu()
        )
        feeds = np.random.default_rng(1).integers(info.min, info.max + 1, (9, 23)).astype(a_dtype)
        feeds[0], feeds[1] = info.max, info.min
        got = vm["main"](tvm.runtime.tensor(feeds)).numpy()
        np.testing.assert_array_equal(got, run(b.graph, {"a": feeds})["y"], err_msg=a_dtype)


def test_presets_declare_the_features_llvm_sees() -> None:
    """The hard-coded feature tuples of the portable presets match LLVM's view of their mcpu/mattr."""
    from tvm.target import codegen

    from qgnn_deploy.backends.tvm.targets import _HOST_FEATURES

    for name in X86_PRESETS[1:]:
        p = TARGETS[name]
        seen = {f for f in _HOST_FEATURES if codegen.llvm_cpu_has_features(f, p.tvm())}
        assert seen == set(p.features), name


def test_target_table_names_each_x86_kernel() -> None:
    table = target_table_markdown()
    for name, kernel in (
        ("x86-64-v3", "AVX2 (`vpmaddubsw` ymm, pair-bounded weights; else `vpmaddwd` ymm)"),
        ("x86-64-v3-vnni", "AVX-VNNI (`vpdpbusd` ymm)"),
        ("x86-64-v4", "AVX-512BW (`vpmaddwd` zmm)"),
        ("x86-64-v4-vnni", "AVX-512 VNNI"),
        ("x86-64-v2", "SSE2 (`pmaddwd` xmm)"),
    ):
        row = next(ln for ln in table.splitlines() if ln.startswith(f"| `{name}` |"))
        assert kernel in row, row


def test_host_detection_prefers_avx_vnni() -> None:
    from qgnn_deploy.backends.tvm.gemm_x86 import x86_gemm_kind

    assert x86_gemm_kind(("avx2", "avxvnni")) == "avxvnni"
    assert x86_gemm_kind(("avx2", "avx512bw", "avxvnni", "avx512vnni")) == "vnni"
    assert x86_gemm_kind(("avx2", "avx512f", "avx512bw")) == "avx512bw"
    assert x86_gemm_kind(("avx2",)) == "avx2-pair"
    assert x86_gemm_kind(()) == "sse2"


def test_epilogue_reads_its_constants_once_per_block() -> None:
    """The requantize epilogue's per-column constants (multiplier, rounding half, shift) are read once per register
    block, not per row: between two rows' output stores of the VNNI prompt GEMM (16 columns, ``den * a`` addend)
    the only memory reads are that row's two halves of ``a`` (the accumulators come from the stack).  Reading the
    constants for every row (LLVM cannot tell them from the output inside the parallel body) added six."""
    from qgnn_deploy.backends.tvm.gemm import vnni_requant_kernel
    from qgnn_deploy.backends.tvm.gemm_skeleton import Epilogue

    kernel = vnni_requant_kernel(8, 1, Epilogue(0, 0, 255, "uint8", 16, 4080, "int8"), "uint8")
    mod = tvm.IRModule({"main": kernel.with_attr("global_symbol", "main")})
    asm = tvm.tirx.build(mod, target=TARGETS["x86-64-v4-vnni"].tvm()).inspect_source("asm")
    body = [ln.strip() for ln in asm.split(".L__tvm_parallel_lambda,@function", 1)[1].splitlines()
            if re.match(r"\s+v\w+\s", ln)]
    stores = [i for i, t in enumerate(body) if t.startswith("vpmovusdb") and "(" in t]
    assert len(stores) >= 8, stores  # the 8 rows of a full register block
    for a, b in zip(stores, stores[1:8]):
        reads = [t for t in body[a + 1:b] if "(" in t and "%rsp" not in t]
        assert len(reads) <= 2, reads
