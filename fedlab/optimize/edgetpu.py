"""Edge TPU compatibility of a ``.tflite`` model, checked op by op.

The Edge TPU runs only fully 8-bit-quantized models with static shapes, built from the
operations in Coral's "supported operations" table (coral.ai/docs/edgetpu/models-intro/,
transcribed below for compiler version 16). Anything else falls back to the CPU — or,
before the first supported op, makes the compiler give up on the rest of the graph.

The Edge TPU compiler itself runs only on x86-64 Debian/Ubuntu and is not installed here;
:func:`edgetpu_report` says so and prints the command to run on such a host.
"""

from __future__ import annotations

import platform
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedlab.optimize.measure import _interpreter, load_tflite

__all__ = ["EDGETPU_OPS", "EdgeTPUReport", "edgetpu_report"]

EDGETPU_OPS: frozenset[str] = frozenset(
    {
        "ADD",
        "AVERAGE_POOL_2D",
        "CONCATENATION",
        "CONV_2D",
        "DEPTHWISE_CONV_2D",
        "EXPAND_DIMS",
        "FULLY_CONNECTED",
        "HARD_SWISH",
        "L2_NORMALIZATION",
        "LOGISTIC",
        "MAXIMUM",
        "MAX_POOL_2D",
        "MEAN",
        "MINIMUM",
        "MUL",
        "PACK",
        "PAD",
        "PRELU",
        "QUANTIZE",
        "REDUCE_MAX",
        "REDUCE_MIN",
        "RELU",
        "RELU6",
        "RELU_N1_TO_1",
        "RESHAPE",
        "RESIZE_BILINEAR",
        "RESIZE_NEAREST_NEIGHBOR",
        "RSQRT",
        "SLICE",
        "SOFTMAX",
        "SPACE_TO_DEPTH",
        "SPLIT",
        "SQUARED_DIFFERENCE",
        "SQUEEZE",
        "STRIDED_SLICE",
        "SUB",
        "SUM",
        "TANH",
        "TRANSPOSE",
        "TRANSPOSE_CONV",
        "UNIDIRECTIONAL_SEQUENCE_LSTM",
    }
)
_INTEGER = {"int8", "uint8"}
_AUXILIARY = {"int32", "int64"}  # biases and shape operands


@dataclass(frozen=True, slots=True)
class EdgeTPUReport:
    """Whether a model can be compiled for the Edge TPU, and every reason it cannot."""

    ready: bool
    fully_integer: bool
    static_shapes: bool
    ops: dict[str, int]
    problems: tuple[tuple[str, str, str], ...] = ()  # (op, layer/tensor, reason)
    compiler: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def describe(self) -> str:
        """A readable report."""
        lines = [
            f"Edge TPU ready: {'yes' if self.ready else 'no'} "
            f"(fully integer: {self.fully_integer}, static shapes: {self.static_shapes})"
        ]
        lines += [f"  {op} at {where}: {reason}" for op, where, reason in self.problems]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _name(tensor: dict) -> str:
    # A file from strip_strings has no tensor names: point at the index instead.
    return str(tensor["name"]) or f"tensor {tensor['index']}"


def edgetpu_report(
    model: bytes | str | Path, *, filename: str = "model_int8.tflite"
) -> EdgeTPUReport:
    """Check every op and tensor of a ``.tflite`` model against the Edge TPU's requirements."""
    data = load_tflite(model)
    interpreter = _interpreter(data, delegates=False)  # the real ops, not XNNPACK's DELEGATE
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    problems: list[tuple[str, str, str]] = []
    ops: dict[str, int] = {}
    fully_integer = True
    for op in interpreter._get_ops_details():
        name = op["op_name"]
        ops[name] = ops.get(name, 0) + 1
        outputs = [tensors[i] for i in op["outputs"] if i in tensors]
        where = _name(outputs[0]) if outputs else f"op {op['index']}"
        if name not in EDGETPU_OPS:
            problems.append((name, where, "operation not supported by the Edge TPU (runs on CPU)"))
        for index in [*op["inputs"], *op["outputs"]]:
            tensor = tensors.get(index)
            if tensor is None:
                continue
            dtype = np.dtype(tensor["dtype"]).name
            if dtype not in _INTEGER and dtype not in _AUXILIARY:
                fully_integer = False
                problems.append((name, _name(tensor), f"tensor is {dtype}, not 8-bit integer"))
    static = True
    for tensor in tensors.values():
        signature = tensor.get("shape_signature")
        if signature is not None and any(int(d) < 0 for d in signature):
            static = False
            problems.append(("-", _name(tensor), f"dynamic shape {list(signature)}"))
    io = [*interpreter.get_input_details(), *interpreter.get_output_details()]
    notes = []
    if any(np.dtype(t["dtype"]).name == "float32" for t in io):
        notes.append(
            "float32 input/output: the CPU quantizes at the edges; convert with int8_io=True "
            "to keep the whole graph on the Edge TPU"
        )
    compiler = shutil.which("edgetpu_compiler")
    if compiler is None:
        notes.append(
            "edgetpu_compiler is not installed on this machine "
            f"({platform.system()} {platform.machine()}); it runs on x86-64 Debian/Ubuntu: "
            f"`sudo apt-get install edgetpu-compiler && edgetpu_compiler -s {filename}`"
        )
    unique = tuple(dict.fromkeys(problems))
    return EdgeTPUReport(
        ready=not unique,
        fully_integer=fully_integer,
        static_shapes=static,
        ops=ops,
        problems=unique,
        compiler=compiler,
        notes=tuple(notes),
    )
