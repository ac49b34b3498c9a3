"""Constants every int8 GEMM kernel family shares (x86 in gemm.py/gemm_x86.py, AArch64 in gemm_arm.py)."""

_SCHEDULED = {"tir.noalias": True, "tirx.is_scheduled": True}
ROWS = 4  # rows per register block (NEON / generic kernels)
LANES = 16  # int32 outputs per block (one zmm, or four NEON q registers)
# Accumulator scope: a "global" decl_buffer of constant size inside the parallel body lowers to a stack
# alloca that LLVM promotes to registers; "local" became a TVMBackendAllocWorkspace call per row block
# (a heap round trip per 4 rows) whose stores LLVM could not drop: one 64-byte store per vpdpbusd.
ACC_SCOPE = "global"
FLIP = -2139062144  # 0x80808080 as int32: xor flips the sign bit of 4 packed bytes (a +/- 128)
