"""File anatomy, stripped and per-tensor files, and block pruning, through real LiteRT."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

pytest.importorskip("tensorflow_model_optimization")

from fedlab._tf import keras
from fedlab.data import load_digits
from fedlab.models import build_model, count_params
from fedlab.optimize import (
    Recipe,
    anatomy,
    edgetpu_report,
    fit,
    int8_size_row,
    prune,
    sparsity_of,
    strip_strings,
    to_tflite,
)
from fedlab.optimize.anatomy import buffer_offsets
from fedlab.optimize.measure import _interpreter, _quantize

TRAIN, TEST = load_digits(seed=0)
X, Y = TRAIN.x[:600], TRAIN.y[:600]


@pytest.fixture(scope="module")
def trained() -> keras.Model:
    return fit(build_model("digits_cnn", (8, 8, 1), 10, seed=0), X, Y, epochs=6)


@pytest.fixture(scope="module")
def int8_file(trained) -> bytes:
    return to_tflite(trained, mode="int8", representative=X, int8_io=True)


def outputs(data: bytes, x: np.ndarray) -> np.ndarray:
    interpreter = _interpreter(data)
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    rows = []
    for example in x:
        interpreter.set_tensor(inp["index"], _quantize(example[None], inp))
        interpreter.invoke()
        rows.append(interpreter.get_tensor(out["index"])[0].copy())
    return np.stack(rows)


def test_anatomy_adds_up(trained, int8_file) -> None:
    params = count_params(trained).total
    for data, bytes_per_weight in ((to_tflite(trained), 4), (int8_file, 1)):
        a = anatomy(data)
        assert a.file_bytes == len(data)
        parts = a.weight_bytes + a.quantization_bytes + a.string_bytes + a.metadata_bytes
        assert a.structure_bytes == a.file_bytes - parts > 0
        assert a.weight_bytes >= bytes_per_weight * params
        assert a.overhead_bytes == a.file_bytes - a.weight_bytes
        assert a.string_bytes > 0 and a.tensors >= 10 and a.operators >= 5
    i8 = anatomy(int8_file)
    # per channel: a float32 scale and an int64 zero point for every channel of each conv
    assert i8.per_channel_tensors >= 4
    assert i8.quantization_bytes >= 12 * 2 * (16 + 32)
    assert i8.row()["structure KB"] == i8.structure_bytes / 1024


def test_stripped_file_runs_the_same(int8_file) -> None:
    stripped = strip_strings(int8_file)
    before, after = anatomy(int8_file), anatomy(stripped)
    assert after.string_bytes == 0 and len(stripped) < len(int8_file)
    assert after.weight_bytes == before.weight_bytes
    assert all(offset % 8 == 0 for offset in buffer_offsets(stripped))
    np.testing.assert_array_equal(outputs(stripped, TEST.x), outputs(int8_file, TEST.x))
    # A report on a file without names points at tensor indices.
    report = edgetpu_report(strip_strings(to_tflite(build_model("digits_cnn", (8, 8, 1), 10))))
    assert not report.ready
    assert any(where.startswith("tensor ") for _, where, _ in report.problems)


def test_buffers_after_the_flatbuffer(trained) -> None:
    """The layout of files over 2 GB, forced on a small model."""
    from fedlab._tf import tf
    from fedlab.optimize.convert import _captured_stderr

    function = tf.function(lambda x: trained(x, training=False)).get_concrete_function(
        tf.TensorSpec([1, 8, 8, 1], tf.float32)
    )
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], trained)
    converter._experimental_use_buffer_offset = True
    with _captured_stderr():
        data = bytes(converter.convert())
    assert anatomy(data).weight_bytes == anatomy(to_tflite(trained)).weight_bytes
    with pytest.raises(ValueError, match="over 2 GB"):
        strip_strings(data)


def test_per_tensor_dynamic_range(trained) -> None:
    per_channel = anatomy(to_tflite(trained, mode="dynamic"))
    per_tensor = anatomy(to_tflite(trained, mode="dynamic", per_channel=False))
    assert per_tensor.per_channel_tensors == 0 < per_channel.per_channel_tensors
    assert per_tensor.file_bytes < per_channel.file_bytes


def test_per_tensor_quantization(trained, int8_file) -> None:
    per_tensor = to_tflite(trained, mode="int8", representative=X, int8_io=True, per_channel=False)
    a, b = anatomy(int8_file), anatomy(per_tensor)
    assert b.per_channel_tensors == 0 < a.per_channel_tensors
    assert b.quantization_bytes < a.quantization_bytes / 3
    agree = np.mean(outputs(per_tensor, TEST.x).argmax(1) == outputs(int8_file, TEST.x).argmax(1))
    assert agree > 0.95


def test_block_pruning_zeroes_whole_blocks_and_gzips_smaller(trained) -> None:
    blocks = prune(trained, X, Y, sparsity=0.75, epochs=2, block_size=(4, 1))
    kernel = blocks.get_layer("embedding").get_weights()[0]  # (512 inputs, 64 outputs)
    zeros_per_block = (kernel.reshape(128, 4, 64) == 0).sum(axis=1)
    assert set(np.unique(zeros_per_block)) <= {0, 4}
    assert np.mean(zeros_per_block == 4) == pytest.approx(0.75, abs=0.02)
    # layer names depend on what else the process built: find the convolution by type
    conv = [la for la in blocks.layers if isinstance(la, keras.layers.Conv2D)][1].get_weights()[0]
    assert np.mean(conv == 0) == pytest.approx(0.75, abs=0.02)  # element-wise there
    assert sparsity_of(blocks) == pytest.approx(0.75, abs=0.02)
    elementwise = prune(trained, X, Y, sparsity=0.75, epochs=2)

    def gz(model: keras.Model) -> int:
        data = to_tflite(model, mode="int8", representative=X, int8_io=True)
        return len(gzip.compress(data, compresslevel=9))

    assert gz(blocks) < 0.95 * gz(elementwise)


def test_recipe_ships_the_small_file(trained, int8_file) -> None:
    result = Recipe("small", mode="int8", int8_io=True, per_channel=False, strip=True).run(
        trained, (X, Y), (TEST.x, TEST.y), latency_runs=10
    )
    assert anatomy(result.tflite).string_bytes == 0
    assert result.report.size_bytes == len(result.tflite) < len(int8_file)
    assert result.row["edge_tpu_ready"] is True


def test_size_row_ceiling(trained) -> None:
    row = int8_size_row("digits", trained, X)
    assert row["params"] == count_params(trained).total
    assert 3.0 < row["int8 file ratio"] < row["weights-only ratio"] < 4.0
    assert row["int8 overhead KB"] > 0


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda m: prune(m, X, Y, sparsity=0.5, block_size=(0, 1)), ValueError, "block_size"),
        (lambda m: prune(m, X, Y, sparsity=0.5, block_size=4), ValueError, "block_size"),
        (
            lambda m: prune(m, X, Y, sparsity=0.5, block_size=(4, 1), structured_2_4=True),
            ValueError,
            "pick one",
        ),
        (lambda m: to_tflite(m, per_channel=False), ValueError, "per_channel=False"),
        (lambda m: Recipe("b", prune_block=(4, 1)), ValueError, "needs a prune sparsity"),
        (
            lambda m: Recipe("b", prune=0.5, prune_block=(4, 1), structured_2_4=True),
            ValueError,
            "no 2:4 sparsity",
        ),
        (lambda m: Recipe("p", per_channel=False), ValueError, "per_channel=False"),
        (lambda m: Recipe("e", fine_tune_epochs=0), ValueError, "fine_tune_epochs"),
        (lambda m: anatomy(b"PK\x03\x04 not a model"), ValueError, "not a TFLite model"),
        (lambda m: strip_strings(b"short"), ValueError, "not a TFLite model"),
    ],
)
def test_bad_input(trained, call, error, message) -> None:
    with pytest.raises(error, match=message):
        call(trained)
