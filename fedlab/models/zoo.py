"""Compact Keras models for on-device learning, each split into a backbone and a head.

Every model is a functional ``keras.Model`` whose output is **logits** (no softmax; the
losses use ``from_logits``) and whose last layer is a ``Dense`` named ``"head"``. Everything
before it is the backbone; its output, the layer named ``"embedding"``, is what a Coral Edge
TPU computes in head-only deployments.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fedlab._tf import keras, tf

__all__ = [
    "MODEL_BUILDERS",
    "build_model",
    "digits_cnn",
    "mobilenet_tiny",
    "sensor_cnn1d",
    "tiny_transformer",
]

layers = keras.layers


def _check_shape(input_shape: tuple[int, ...], rank: int, name: str) -> tuple[int, ...]:
    shape = tuple(int(d) for d in input_shape)
    if len(shape) != rank or any(d < 1 for d in shape):
        raise ValueError(
            f"{name} needs an input shape of {rank} positive dims, got {input_shape!r}"
        )
    return shape


def _check_classes(num_classes: int) -> None:
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")


def digits_cnn(
    input_shape: tuple[int, ...] = (8, 8, 1),
    num_classes: int = 10,
    *,
    width: float = 1.0,
    seed: int = 0,
) -> keras.Model:
    """A small CNN for 8×8 digits (about 40k parameters at ``width=1``).

    conv 3×3 ×16 → conv 3×3 ×32 → max-pool 2 → dense 64 (embedding) → dense (head), every
    channel and unit count scaled by ``width`` (a narrow student for distillation).
    """
    shape = _check_shape(input_shape, 3, "digits_cnn")
    _check_classes(num_classes)
    if not 0 < width <= 4:
        raise ValueError(f"width must be in (0, 4], got {width!r}")

    def n(units: int) -> int:
        return max(2, round(units * width))

    init = keras.initializers.GlorotUniform
    inputs = keras.Input(shape=shape, name="image")
    relu = "relu"
    h = layers.Conv2D(n(16), 3, padding="same", activation=relu, kernel_initializer=init(seed))(
        inputs
    )
    h = layers.Conv2D(n(32), 3, padding="same", activation=relu, kernel_initializer=init(seed + 1))(
        h
    )
    h = layers.MaxPooling2D(2)(h)
    h = layers.Flatten()(h)
    h = layers.Dense(n(64), activation=relu, kernel_initializer=init(seed + 2), name="embedding")(h)
    outputs = layers.Dense(num_classes, kernel_initializer=init(seed + 3), name="head")(h)
    return keras.Model(inputs, outputs, name="digits_cnn")


def mobilenet_tiny(
    input_shape: tuple[int, ...] = (32, 32, 3),
    num_classes: int = 10,
    *,
    width: float = 1.0,
    blocks: int = 4,
    seed: int = 0,
) -> keras.Model:
    """A MobileNet-style CNN of depthwise-separable blocks with a width multiplier.

    Stem conv 3×3/2 → ``blocks`` × (depthwise 3×3 → BN → ReLU6 → pointwise 1×1 → BN → ReLU6),
    channels doubling every other block with stride 2 → global average pool (embedding) → head.
    ``width`` scales every channel count, as MobileNet's α does.
    """
    shape = _check_shape(input_shape, 3, "mobilenet_tiny")
    _check_classes(num_classes)
    if not 0 < width <= 4:
        raise ValueError(f"width must be in (0, 4], got {width!r}")
    if not isinstance(blocks, int) or blocks < 1:
        raise ValueError(f"blocks must be a positive int, got {blocks!r}")
    init = keras.initializers.GlorotUniform

    def ch(n: int) -> int:
        return max(8, round(n * width / 8) * 8)

    inputs = keras.Input(shape=shape, name="image")
    stem_stride = 2 if min(shape[:2]) >= 16 else 1
    h = layers.Conv2D(
        ch(16),
        3,
        strides=stem_stride,
        padding="same",
        use_bias=False,
        kernel_initializer=init(seed),
    )(inputs)
    h = layers.BatchNormalization()(h)
    h = layers.ReLU(6.0)(h)
    channels, size = ch(16), min(shape[:2]) // stem_stride
    for b in range(blocks):
        stride = 2 if b % 2 == 1 and size >= 4 else 1
        size //= stride
        if b % 2 == 1:
            channels = min(channels * 2, ch(256))
        h = layers.DepthwiseConv2D(
            3,
            strides=stride,
            padding="same",
            use_bias=False,
            depthwise_initializer=init(seed + 10 + b),
        )(h)
        h = layers.BatchNormalization()(h)
        h = layers.ReLU(6.0)(h)
        h = layers.Conv2D(channels, 1, use_bias=False, kernel_initializer=init(seed + 20 + b))(h)
        h = layers.BatchNormalization()(h)
        h = layers.ReLU(6.0)(h)
    h = layers.GlobalAveragePooling2D(name="embedding")(h)
    outputs = layers.Dense(num_classes, kernel_initializer=init(seed + 1), name="head")(h)
    return keras.Model(inputs, outputs, name=f"mobilenet_tiny_w{width:g}")


def sensor_cnn1d(
    input_shape: tuple[int, ...] = (100, 3), num_classes: int = 6, *, seed: int = 0
) -> keras.Model:
    """A 1-D CNN for accelerometer windows (about 7k parameters).

    conv1d 5 ×16 /2 → conv1d 5 ×32 /2 → conv1d 3 ×32 → global average pool → dense 32
    (embedding) → dense (head).
    """
    shape = _check_shape(input_shape, 2, "sensor_cnn1d")
    _check_classes(num_classes)
    init = keras.initializers.GlorotUniform
    inputs = keras.Input(shape=shape, name="window")
    h = layers.Conv1D(
        16, 5, strides=2, padding="same", activation="relu", kernel_initializer=init(seed)
    )(inputs)
    h = layers.Conv1D(
        32, 5, strides=2, padding="same", activation="relu", kernel_initializer=init(seed + 1)
    )(h)
    h = layers.Conv1D(32, 3, padding="same", activation="relu", kernel_initializer=init(seed + 2))(
        h
    )
    h = layers.GlobalAveragePooling1D()(h)
    h = layers.Dense(32, activation="relu", kernel_initializer=init(seed + 3), name="embedding")(h)
    outputs = layers.Dense(num_classes, kernel_initializer=init(seed + 4), name="head")(h)
    return keras.Model(inputs, outputs, name="sensor_cnn1d")


class _PositionEmbedding(keras.layers.Layer):
    """Learned absolute position embedding added to a (batch, steps, dim) sequence."""

    def __init__(self, steps: int, dim: int, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.steps, self.dim, self.seed = steps, dim, seed

    def build(self, input_shape: Any) -> None:
        self.table = self.add_weight(
            name="table",
            shape=(self.steps, self.dim),
            initializer=keras.initializers.RandomNormal(stddev=0.02, seed=self.seed),
        )

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return x + self.table

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "steps": self.steps, "dim": self.dim, "seed": self.seed}


def tiny_transformer(
    input_shape: tuple[int, ...] = (100, 3),
    num_classes: int = 6,
    *,
    dim: int = 32,
    heads: int = 2,
    layers_: int = 1,
    patch: int = 5,
    seed: int = 0,
) -> keras.Model:
    """A tiny transformer encoder for sequences (a "transformer-lite" for sensor data).

    Non-overlapping patches of ``patch`` steps are projected to ``dim``, a learned position
    embedding is added, then ``layers_`` pre-norm encoder blocks (multi-head self-attention,
    MLP ×2) and a mean pool (embedding) feed the head.
    """
    steps, features = _check_shape(input_shape, 2, "tiny_transformer")
    _check_classes(num_classes)
    if steps % patch:
        raise ValueError(f"sequence length {steps} is not a multiple of patch={patch!r}")
    if dim % heads:
        raise ValueError(f"dim={dim!r} is not divisible by heads={heads!r}")
    init = keras.initializers.GlorotUniform
    tokens = steps // patch
    inputs = keras.Input(shape=(steps, features), name="sequence")
    h = layers.Reshape((tokens, patch * features))(inputs)
    h = layers.Dense(dim, kernel_initializer=init(seed))(h)
    h = _PositionEmbedding(tokens, dim, seed=seed + 1)(h)
    for i in range(layers_):
        a = layers.LayerNormalization(epsilon=1e-5)(h)
        a = layers.MultiHeadAttention(heads, dim // heads, kernel_initializer=init(seed + 10 + i))(
            a, a
        )
        h = layers.Add()([h, a])
        m = layers.LayerNormalization(epsilon=1e-5)(h)
        m = layers.Dense(2 * dim, activation="gelu", kernel_initializer=init(seed + 20 + i))(m)
        m = layers.Dense(dim, kernel_initializer=init(seed + 30 + i))(m)
        h = layers.Add()([h, m])
    h = layers.LayerNormalization(epsilon=1e-5)(h)
    h = layers.GlobalAveragePooling1D(name="embedding")(h)
    outputs = layers.Dense(num_classes, kernel_initializer=init(seed + 2), name="head")(h)
    return keras.Model(inputs, outputs, name="tiny_transformer")


MODEL_BUILDERS: dict[str, Callable[..., keras.Model]] = {
    "digits_cnn": digits_cnn,
    "mobilenet_tiny": mobilenet_tiny,
    "sensor_cnn1d": sensor_cnn1d,
    "tiny_transformer": tiny_transformer,
}


def build_model(
    name: str, input_shape: tuple[int, ...], num_classes: int, **kwargs: Any
) -> keras.Model:
    """Build a zoo model by name (``"digits_cnn"``, ``"mobilenet_tiny"``, ``"sensor_cnn1d"``,
    ``"tiny_transformer"``) for the given input shape and class count."""
    try:
        builder = MODEL_BUILDERS[name]
    except KeyError:
        raise ValueError(
            f"unknown model {name!r}; choose one of {sorted(MODEL_BUILDERS)}"
        ) from None
    return builder(tuple(input_shape), num_classes, **kwargs)
