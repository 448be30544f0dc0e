"""TFLite conversion: float32, dynamic-range, float16 and full-integer int8.

Models are converted from a concrete function with a **static batch of 1** (the Edge TPU
and most microcontroller runtimes need static shapes); the LiteRT measurements in
:mod:`fedlab.optimize.measure` run them one example at a time.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np

from fedlab._tf import keras, tf

__all__ = ["MODES", "to_tflite"]

Mode = Literal["float32", "dynamic", "float16", "int8"]
MODES: tuple[str, ...] = ("float32", "dynamic", "float16", "int8")


def _check_representative(model: keras.Model, data: np.ndarray) -> np.ndarray:
    expected = tuple(int(d) for d in model.input_shape[1:])
    if not isinstance(data, np.ndarray):
        raise TypeError(f"representative data must be a numpy array, got {type(data).__name__}")
    if not np.issubdtype(data.dtype, np.floating):
        raise TypeError(f"representative data must be floating point, got dtype {data.dtype}")
    if data.ndim != len(expected) + 1 or tuple(data.shape[1:]) != expected:
        raise ValueError(
            f"representative data has shape {data.shape}, "
            f"the model input is (n, {', '.join(map(str, expected))})"
        )
    if len(data) == 0:
        raise ValueError("representative data is empty")
    if not np.isfinite(data).all():
        raise ValueError("representative data contains NaN or Inf")
    return data.astype(np.float32)


def to_tflite(
    model: keras.Model,
    *,
    mode: Mode = "float32",
    representative: np.ndarray | None = None,
    int8_io: bool = False,
    per_channel: bool = True,
    samples: int = 200,
) -> bytes:
    """Convert a Keras model to a ``.tflite`` flatbuffer.

    Parameters
    ----------
    mode : {"float32", "dynamic", "float16", "int8"}
        ``"dynamic"`` stores int8 weights and computes in float; ``"int8"`` is full-integer
        quantization calibrated on ``representative`` (builtin int8 ops only).
    representative : np.ndarray
        Training examples for int8 calibration, shaped like the model input.
    int8_io : bool
        With ``"int8"``: int8 input and output tensors too (what the Edge TPU needs).
    per_channel : bool
        With ``"int8"`` or ``"dynamic"``: one scale per output channel of each kernel (the
        converter's default, usually the most accurate). ``False`` gives one scale per
        tensor: each per-channel kernel drops 12 bytes per channel of quantization
        parameters for its weights and again for its bias, at some accuracy risk.
    samples : int
        Calibration examples used (the first ``samples``).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    shape = [1, *(int(d) for d in model.input_shape[1:])]
    function = tf.function(lambda x: model(x, training=False)).get_concrete_function(
        tf.TensorSpec(shape, tf.float32)
    )
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], model)
    if mode != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if mode == "int8":
        if representative is None:
            raise ValueError("int8 quantization needs representative data (training examples)")
        data = _check_representative(model, representative)[:samples]

        def calibration():
            for example in data:
                yield [example[None]]

        converter.representative_dataset = calibration
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    elif int8_io:
        raise ValueError(f"int8_io needs mode='int8', got mode={mode!r}")
    if not per_channel:
        if mode not in ("int8", "dynamic"):
            raise ValueError(f"per_channel=False needs mode='int8' or 'dynamic', got {mode!r}")
        # The converter's only switch for per-tensor quantization (TF 2.15).
        converter._experimental_disable_per_channel = True
    with _captured_stderr() as log:
        try:
            return bytes(converter.convert())
        except Exception as exc:
            raise RuntimeError(
                f"TFLite conversion failed: {exc}\nconverter log:\n{log.read()}"
            ) from exc


@contextlib.contextmanager
def _captured_stderr() -> Iterator[Any]:
    """Send file descriptor 2 to a temporary file for the duration.

    The MLIR converter prints pages of per-op summaries straight to stderr from C++
    (Python's ``sys.stderr`` never sees them). They are kept, and shown when the
    conversion fails, instead of flooding every notebook and test log.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield log
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            log.seek(0)
