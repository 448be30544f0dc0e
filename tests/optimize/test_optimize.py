"""Compression techniques on tiny models, measured through the real LiteRT runtime."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow_model_optimization")

from fedlab._tf import keras, tf
from fedlab.data import load_digits
from fedlab.models import build_model
from fedlab.optimize import (
    Recipe,
    cluster,
    distill,
    edgetpu_report,
    fit,
    keras_accuracy,
    load_tflite,
    measure_tflite,
    prune,
    quantize_aware,
    sparsity_of,
    to_tflite,
)

TRAIN, TEST = load_digits(seed=0)
X, Y = TRAIN.x[:600], TRAIN.y[:600]


@pytest.fixture(scope="module")
def trained() -> keras.Model:
    return fit(build_model("digits_cnn", (8, 8, 1), 10, seed=0), X, Y, epochs=6)


def test_float_tflite_accuracy_equals_keras(trained) -> None:
    data = to_tflite(trained, mode="float32")
    report = measure_tflite(data, TEST.x, TEST.y, latency_runs=20)
    assert report.accuracy == pytest.approx(
        keras_accuracy(trained, TEST.x, TEST.y), abs=1 / len(TEST.y)
    )
    assert report.input_dtype == "float32" and report.size_bytes == len(data)
    assert 0 < report.gzip_bytes < report.size_bytes
    assert 0 < report.latency_ms_median <= report.latency_ms_p90


def test_int8_model_really_has_int8_tensors(trained) -> None:
    data = to_tflite(trained, mode="int8", representative=X, int8_io=True)
    report = measure_tflite(data, TEST.x, TEST.y, latency_runs=20)
    assert report.input_dtype == "int8" and report.output_dtype == "int8"
    assert report.tensor_types.get("int8", 0) > report.tensor_types.get("float32", 0)
    assert report.tensor_types.get("float32", 0) == 0
    float_size = len(to_tflite(trained, mode="float32"))
    assert report.size_bytes < float_size / 3
    assert report.accuracy >= keras_accuracy(trained, TEST.x, TEST.y) - 0.03
    tpu = edgetpu_report(data)
    assert tpu.ready and tpu.fully_integer and tpu.static_shapes, tpu.describe()
    assert "CONV_2D" in tpu.ops and "FULLY_CONNECTED" in tpu.ops
    assert any("edgetpu_compiler" in n for n in tpu.notes)


def test_dynamic_and_float16_modes(trained) -> None:
    f32 = len(to_tflite(trained, mode="float32"))
    assert len(to_tflite(trained, mode="dynamic")) < f32 / 3
    assert len(to_tflite(trained, mode="float16")) < 0.6 * f32


def test_edgetpu_report_names_float_and_unsupported_ops(trained) -> None:
    report = edgetpu_report(to_tflite(trained, mode="float32"))
    assert not report.ready and not report.fully_integer
    assert any("not 8-bit integer" in reason for _, _, reason in report.problems)
    inputs = keras.Input((8,))
    odd = keras.Model(
        inputs, keras.layers.Lambda(lambda t: tf.math.floormod(t, 3.0), name="modulo")(inputs)
    )
    problems = edgetpu_report(
        to_tflite(
            odd,
            mode="int8",
            representative=np.random.default_rng(0).random((20, 8), dtype=np.float32),
        )
    ).problems
    assert any(op == "FLOOR_MOD" and "not supported" in reason for op, _, reason in problems), (
        problems
    )


def test_pruned_weights_really_are_zero(trained) -> None:
    pruned = prune(trained, X, Y, sparsity=0.75, epochs=2)
    assert sparsity_of(pruned) == pytest.approx(0.75, abs=0.02)
    assert sparsity_of(trained) < 0.01  # the input model is untouched
    assert keras_accuracy(pruned, TEST.x, TEST.y) > 0.7


def test_two_four_structured_sparsity(trained) -> None:
    pruned = prune(trained, X, Y, sparsity=0.0, epochs=1, structured_2_4=True)
    kernel = pruned.get_layer("embedding").get_weights()[0]  # (512, 64): groups of 4 inputs
    groups = (kernel.T.reshape(64, -1, 4) == 0).sum(axis=-1)
    assert (groups >= 2).all()


def test_clustering_limits_distinct_values(trained) -> None:
    clustered = cluster(trained, X, Y, clusters=8, epochs=1)
    kernel = clustered.get_layer("embedding").get_weights()[0]
    assert len(np.unique(kernel)) <= 8


def test_qat_handles_conv1d_and_annotated_layers() -> None:
    from fedlab.data import federated_sensors

    data = federated_sensors(num_devices=8, test_devices=2)
    u = data.union()
    qat = quantize_aware(build_model("sensor_cnn1d", (100, 3), 6), u.x, u.y, epochs=1)
    report = measure_tflite(
        to_tflite(qat, mode="int8", representative=u.x, int8_io=True),
        data.test.x,
        data.test.y,
        latency_runs=10,
    )
    assert report.input_dtype == "int8"
    head_only = quantize_aware(
        build_model("digits_cnn", (8, 8, 1), 10), X, Y, epochs=1, layers={"head"}
    )
    assert any("quant" in type(layer).__name__.lower() for layer in head_only.layers)


def test_distillation_trains_the_student(trained) -> None:
    student = build_model("digits_cnn", (8, 8, 1), 10, seed=5)
    before = keras_accuracy(student, TEST.x, TEST.y)
    distill(trained, student, X, Y, temperature=4.0, epochs=4)
    assert keras_accuracy(student, TEST.x, TEST.y) > max(0.6, before + 0.3)


def test_recipe_row(trained) -> None:
    result = Recipe("prune50+int8", prune=0.5, mode="int8", int8_io=True, fine_tune_epochs=1).run(
        trained, (X, Y), (TEST.x, TEST.y), latency_runs=10
    )
    row = result.row
    assert row["recipe"] == "prune50+int8" and row["edge_tpu_ready"] is True
    assert row["sparsity"] == pytest.approx(0.5, abs=0.02)
    assert row["gzip_kb"] < row["size_kb"]


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda m: prune(m, X, Y, sparsity=1.0),
            ValueError,
            r"sparsity must be in \[0, 1\), got 1.0",
        ),
        (lambda m: prune(m, X, Y, sparsity=-0.1), ValueError, "got -0.1"),
        (
            lambda m: to_tflite(m, mode="int8", representative=np.zeros((4, 7, 7, 1), np.float32)),
            ValueError,
            r"shape \(4, 7, 7, 1\), the model input is \(n, 8, 8, 1\)",
        ),
        (
            lambda m: to_tflite(m, mode="int8", representative=np.zeros((4, 8, 8, 1), np.int32)),
            TypeError,
            "dtype int32",
        ),
        (lambda m: to_tflite(m, mode="int8"), ValueError, "representative"),
        (lambda m: to_tflite(m, mode="int4"), ValueError, "'int4'"),
        (lambda m: Recipe("bad", qat=True, mode="float16"), ValueError, "mode='int8'"),
        (lambda m: cluster(m, X, Y, clusters=1), ValueError, "got 1"),
    ],
)
def test_bad_input(trained, call, error, message) -> None:
    with pytest.raises(error, match=message):
        call(trained)


def test_qat_names_the_layer_it_cannot_handle() -> None:
    class Custom(keras.layers.Layer):
        def call(self, x):
            return x * 2.0

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(Custom(name="doubler")(inputs)))
    with pytest.raises(ValueError, match="doubler"):
        quantize_aware(model, np.zeros((8, 4), np.float32), np.zeros(8, np.int64), epochs=1)


def test_not_a_tflite_file(tmp_path) -> None:
    path = tmp_path / "model.tflite"
    path.write_bytes(b"PK\x03\x04 this is a zip")
    with pytest.raises(ValueError, match="not a TFLite model"):
        load_tflite(path)
    with pytest.raises(ValueError, match="not a TFLite model"):
        measure_tflite(b"short", TEST.x, TEST.y)
