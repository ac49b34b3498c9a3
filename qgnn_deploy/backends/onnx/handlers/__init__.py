"""One ONNX emitter per IR op, each bit-exact against :mod:`qgnn_deploy.ir.interpreter`.

Pattern choices follow ``shared/notes/toolchain.md`` Q1 (ORT 1.31 CPU):

* activations reach MatMulInteger as uint8 (int8 values are shifted by +128 and
  the zero point with them): MLAS's u8 x s8 kernel is ~10x faster than s8 x s8;
* the neighbour sum is ScatterElements(reduction="add") on int32, which is
  exact and deterministic with several threads (ScatterND-add is racy), run
  column by column as 1-D scatters over the shared ``[E]`` index (see
  ``_scatter``); 1-D lookups use GatherElements, not Gather (ORT 1.31's 1-D
  Gather copies each element with memcpy, ~15x slower);
* int4 weights are an INT4 initializer followed by Cast(to=INT8), never
  DequantizeLinear -> MatMul, which ORT rewrites into the inexact MatMulNBits;
* requantize runs in float64 (Mul, Add, Floor, Clip: ``_requantize_f64``) when
  static bounds prove that exact (int32 accumulators, |M| < 2**53, shifts small
  enough that any rounded product saturates anyway); otherwise in int64/uint64
  with an exact floor division by 2**n done as a logical right shift of an
  offset value (ONNX Div truncates toward zero, and ``(v - Mod(v, d)) / d`` is
  exact but 4x slower in ORT);
* int8 weights that could saturate MLAS's AVX2 u8 x s8 kernel run u8 x u8
  (weights + 128), or, exported for a VNNI CPU, as two 7-bit halves in one
  u8 x s8 GEMM: exact either way (see ``matmul``, ``_split_gemm``);
* constant operands of broadcasting ops get the other operand's rank
  (``exporter.match_constant_ranks``: ORT's broadcaster is ~20x faster then);
* int64 values are never bounded with Clip/Max/Min/ReduceMax: ORT 1.31's CPU
  kernels for those get int64 values just outside the int32 range wrong (e.g.
  ``Clip(4285714437, -1000, 1000)`` returns 4285714437; see ``_clip64``).
  Less/Greater + Where and TopK are exact and are used instead.
"""

from qgnn_deploy.backends.onnx.handlers import aggregate, requantize, tensor_ops  # noqa: F401  (each fills HANDLERS)
