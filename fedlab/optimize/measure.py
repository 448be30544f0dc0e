"""Honest measurements of a ``.tflite`` model through the LiteRT interpreter."""

from __future__ import annotations

import gzip
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["TFLiteReport", "load_tflite", "measure_tflite"]


def load_tflite(model: bytes | str | Path) -> bytes:
    """The flatbuffer bytes of a model (path or bytes); refuses files that are not TFLite."""
    data = Path(model).read_bytes() if isinstance(model, str | Path) else bytes(model)
    if len(data) < 8 or data[4:8] != b"TFL3":
        source = str(model) if isinstance(model, str | Path) else f"{len(data)} bytes"
        raise ValueError(f"{source} is not a TFLite model (no 'TFL3' flatbuffer identifier)")
    return data


@dataclass(frozen=True, slots=True)
class TFLiteReport:
    """Accuracy, size and latency of one ``.tflite`` model."""

    accuracy: float
    size_bytes: int
    gzip_bytes: int
    latency_ms_median: float
    latency_ms_p90: float
    input_dtype: str
    output_dtype: str
    tensor_types: dict[str, int] = field(default_factory=dict)


def _interpreter(data: bytes, threads: int = 1, *, delegates: bool = True):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = (
        OpResolverType.AUTO if delegates else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    interpreter = Interpreter(
        model_content=data, num_threads=threads, experimental_op_resolver_type=resolver
    )
    interpreter.allocate_tensors()
    return interpreter


def _quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    dtype = detail["dtype"]
    if np.issubdtype(dtype, np.integer):
        scale, zero = detail["quantization"]
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)
    return x.astype(dtype)


def measure_tflite(
    model: bytes | str | Path,
    x: np.ndarray,
    y: np.ndarray,
    *,
    latency_runs: int = 200,
    warmup: int = 20,
) -> TFLiteReport:
    """Accuracy on ``(x, y)`` one example at a time, sizes, and single-thread latency.

    Inputs are quantized with the model's own scale and zero point when it has integer
    inputs; the latency is the median and 90th percentile of ``latency_runs`` invokes
    after ``warmup`` invokes, with one thread.
    """
    data = load_tflite(model)
    interpreter = _interpreter(data)
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    expected = tuple(int(d) for d in inp["shape"][1:])
    if tuple(x.shape[1:]) != expected:
        raise ValueError(f"examples have shape {x.shape[1:]}, the model input is {expected}")
    correct = 0
    for example, label in zip(x, y, strict=True):
        interpreter.set_tensor(inp["index"], _quantize(example[None].astype(np.float32), inp))
        interpreter.invoke()
        correct += int(np.argmax(interpreter.get_tensor(out["index"])[0]) == label)
    sample = _quantize(x[:1].astype(np.float32), inp)
    times = []
    for i in range(warmup + latency_runs):
        interpreter.set_tensor(inp["index"], sample)
        start = time.perf_counter()
        interpreter.invoke()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    types = Counter(np.dtype(t["dtype"]).name for t in interpreter.get_tensor_details())
    return TFLiteReport(
        accuracy=correct / len(y),
        size_bytes=len(data),
        gzip_bytes=len(gzip.compress(data, compresslevel=9)),
        latency_ms_median=1000 * float(np.median(times)),
        latency_ms_p90=1000 * float(np.percentile(times, 90)),
        input_dtype=np.dtype(inp["dtype"]).name,
        output_dtype=np.dtype(out["dtype"]).name,
        tensor_types=dict(types),
    )
