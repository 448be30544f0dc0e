from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from fedlab._tf import keras  # noqa: E402
from fedlab.models import (  # noqa: E402
    MODEL_BUILDERS,
    build_model,
    count_params,
    freeze_backbone,
    split_backbone_head,
)

SHAPES = {
    "digits_cnn": ((8, 8, 1), 10),
    "mobilenet_tiny": ((32, 32, 3), 10),
    "sensor_cnn1d": ((100, 3), 6),
    "tiny_transformer": ((100, 3), 6),
}


@pytest.mark.parametrize("name", sorted(MODEL_BUILDERS))
def test_every_zoo_model_builds_splits_and_freezes(name: str) -> None:
    shape, classes = SHAPES[name]
    model = build_model(name, shape, classes)
    x = np.random.default_rng(0).random((3, *shape), dtype=np.float32)
    logits = model(x).numpy()
    assert logits.shape == (3, classes)
    # logits, not probabilities
    assert not np.allclose(logits.sum(axis=1), 1.0)
    backbone, head = split_backbone_head(model)
    np.testing.assert_allclose(head(backbone(x)).numpy(), logits, rtol=1e-5, atol=1e-5)
    full = count_params(model)
    freeze_backbone(model)
    head_only = count_params(model)
    assert head_only.total == full.total
    assert head_only.trainable == count_params(head).trainable < full.trainable
    freeze_backbone(model, frozen=False)
    assert count_params(model) == full


def test_builders_are_seeded() -> None:
    a = build_model("digits_cnn", (8, 8, 1), 10, seed=3).get_weights()
    b = build_model("digits_cnn", (8, 8, 1), 10, seed=3).get_weights()
    c = build_model("digits_cnn", (8, 8, 1), 10, seed=4).get_weights()
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_parameter_counts() -> None:
    digits = count_params(build_model("digits_cnn", (8, 8, 1), 10))
    assert 30_000 < digits.trainable < 50_000 and digits.non_trainable == 0
    assert digits.trainable_bytes == 4 * digits.trainable
    narrow = count_params(build_model("mobilenet_tiny", (32, 32, 3), 10, width=0.5))
    wide = count_params(build_model("mobilenet_tiny", (32, 32, 3), 10, width=2.0))
    assert wide.total > 3 * narrow.total


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: build_model("resnet", (8, 8, 1), 10), "unknown model 'resnet'"),
        (lambda: build_model("digits_cnn", (8, 8), 10), r"\(8, 8\)"),
        (lambda: build_model("digits_cnn", (8, 8, 1), 1), "got 1"),
        (lambda: build_model("mobilenet_tiny", (32, 32, 3), 10, width=0.0), "width"),
        (lambda: build_model("tiny_transformer", (99, 3), 6), "patch=5"),
    ],
)
def test_bad_arguments(call, message) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def test_split_needs_a_head() -> None:
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    with pytest.raises(ValueError, match="no layer named 'head'"):
        split_backbone_head(model)


def test_synthetic_sensor_data_is_learnable() -> None:
    """The 1-D CNN learns the synthetic activities far above chance on unseen devices."""
    from fedlab.data import federated_sensors

    data = federated_sensors(num_devices=40, test_devices=20, seed=0)
    union = data.union()
    keras.utils.set_random_seed(0)
    model = build_model("sensor_cnn1d", data.input_shape, data.num_classes)
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(union.x, union.y, epochs=15, batch_size=32, verbose=0)
    _, accuracy = model.evaluate(data.test.x, data.test.y, verbose=0)
    assert accuracy > 0.8  # chance is 1/6
