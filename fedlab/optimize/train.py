"""Central Keras training used by the compression techniques (fine-tuning, baselines)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fedlab._tf import keras

__all__ = ["clone", "fit", "keras_accuracy"]


def clone(model: keras.Model) -> keras.Model:
    """A functional copy with the same weights (techniques never mutate their input)."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def fit(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    callbacks: Sequence[Any] = (),
    seed: int = 0,
) -> keras.Model:
    """Compile with Adam and sparse cross-entropy on logits, then train in place."""
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs!r}")
    keras.utils.set_random_seed(seed)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    if epochs:
        model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0, callbacks=list(callbacks))
    return model


def keras_accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of a Keras model."""
    logits = model.predict(x, batch_size=512, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == y))
