"""Build the GEMM-only library (Cora 2708x1433x16, u8 x s8) like gemm_stage does; save operands."""
import sys
from pathlib import Path

import numpy as np

from qgnn_deploy.backends.tvm.compile import compile_to_dir
from qgnn_deploy.ir.graph import GraphBuilder

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(0)
m, k, n = 2708, 1433, 16
x = rng.integers(0, 256, (m, k), dtype=np.uint8)
w = rng.integers(-128, 128, (k, n), dtype=np.int8)
b = GraphBuilder()
a = b.input("a", "uint8", ("N", k))
b.output(b.op("matmul", [a, b.const("w", w)], "y"), "int32", ("N", n))
fields = compile_to_dir(b.graph, "x86_64", out, sample_feeds={"a": x})
np.savez(out / "operands.npz", a=x, b=w)
print(fields["library"], fields["kernels"])
