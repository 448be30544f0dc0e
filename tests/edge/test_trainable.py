"""Trainable TFLite export: builtin ops only, gradients equal to TensorFlow's."""

from __future__ import annotations

import numpy as np
import pytest

from fedlab._tf import keras, tf
from fedlab.models import MODEL_BUILDERS, build_model
from fedlab.optimize.trainable import UnsupportedLayer, export_trainable_tflite, flex_ops

SHAPES = {
    "digits_cnn": (8, 8, 1),
    "mobilenet_tiny": (16, 16, 3),
    "sensor_cnn1d": (100, 3),
    "tiny_transformer": (40, 3),
}
FULL = {"digits_cnn", "sensor_cnn1d"}  # every layer has a builtin backward


@pytest.mark.parametrize("name", sorted(MODEL_BUILDERS))
def test_every_zoo_model_exports_without_flex_ops(name: str) -> None:
    model = build_model(name, SHAPES[name], 6)
    if name in FULL:
        export = export_trainable_tflite(model, batch_size=8)
        assert export.trainable == "all"
        assert export.trainable_indices == tuple(range(len(model.weights)))
    else:
        with pytest.raises(UnsupportedLayer, match="layer '.*'"):
            export_trainable_tflite(model, batch_size=8)
        export = export_trainable_tflite(model, batch_size=8, trainable="head")
        assert len(export.trainable_indices) == 2  # the head's kernel and bias
    assert flex_ops(export.ops) == [], export.ops
    assert {"ASSIGN_VARIABLE", "READ_VARIABLE"} <= set(export.ops)
    assert not any(op.startswith("Flex") for op in export.ops)


def _litert_step(export, x, y, lr):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=export.model)
    train = interpreter.get_signature_runner("train")
    w = np.full(len(y), 1.0 / len(y), np.float32)
    loss = train(
        x=x, y=y.astype(np.int32), w=w, lr=np.float32(lr), mu=np.float32(0), beta=np.float32(0)
    )["loss"]
    out = interpreter.get_signature_runner("get_weights")()
    return float(loss), [out[f"w{i:02d}"] for i in range(len(out))]


@pytest.mark.parametrize("name", sorted(FULL))
def test_one_step_equals_tensorflow_autodiff(name: str) -> None:
    model = build_model(name, SHAPES[name], 6)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, *SHAPES[name])).astype(np.float32)
    y = rng.integers(0, 6, 8)
    with tf.GradientTape() as tape:
        logits = model(x)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
    grads = tape.gradient(loss, model.trainable_variables)
    got_loss, got = _litert_step(export_trainable_tflite(model, batch_size=8), x, y, lr=0.5)
    assert got_loss == pytest.approx(float(loss), rel=1e-5)
    for w, g, new in zip(model.trainable_variables, grads, got, strict=True):
        np.testing.assert_allclose(new, w.numpy() - 0.5 * g.numpy(), rtol=1e-4, atol=1e-6)


def test_max_pool_ties_route_the_gradient_like_tensorflow() -> None:
    # A blank image: every window of the pooled ReLU(bias) map is a tie.
    inputs = keras.Input((4, 4, 1))
    h = keras.layers.Conv2D(
        2, 3, padding="same", activation="relu", bias_initializer=keras.initializers.Constant(0.5)
    )(inputs)
    h = keras.layers.MaxPooling2D(2)(h)
    h = keras.layers.Flatten()(h)
    model = keras.Model(inputs, keras.layers.Dense(3)(h))
    x = np.zeros((4, 4, 4, 1), np.float32)
    x[1, 1, 2, 0] = 1.0
    y = np.array([0, 1, 2, 0])
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, model(x)))
    grads = tape.gradient(loss, model.trainable_variables)
    _, got = _litert_step(export_trainable_tflite(model, batch_size=4), x, y, lr=1.0)
    for w, g, new in zip(model.trainable_variables, grads, got, strict=True):
        np.testing.assert_allclose(new, w.numpy() - g.numpy(), rtol=1e-5, atol=1e-6)


def test_unsupported_layers_and_arguments_are_named() -> None:
    inputs = keras.Input((6,))
    h = keras.layers.Dense(4, activation="tanh", name="tanh_layer")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(h))
    with pytest.raises(UnsupportedLayer, match="'tanh_layer': activation 'tanh'"):
        export_trainable_tflite(model)
    with pytest.raises(ValueError, match="batch_size must be an int >= 1, got 0"):
        export_trainable_tflite(model, batch_size=0)
    with pytest.raises(ValueError, match="trainable must be 'all' or 'head'"):
        export_trainable_tflite(model, trainable="body")  # type: ignore[arg-type]
    inputs = keras.Input((6,))
    a, b = keras.layers.Dense(3)(inputs), keras.layers.Dense(3)(inputs)
    branched = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Add()([a, b])))
    with pytest.raises(UnsupportedLayer, match="not fed by the layer before"):
        export_trainable_tflite(branched)
