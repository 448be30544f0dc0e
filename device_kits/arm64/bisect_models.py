"""Tiny trainable models with one layer type each, to find an op whose ``train`` crashes.

Usage (the workbench's .venv)::

    python device_kits/arm64/bisect_models.py OUT_DIR

Writes ``OUT_DIR/<name>.tflite`` + ``.json`` through
``fedlab.optimize.trainable.export_trainable_tflite`` (8×8×1 input, 10 classes, batch 16 —
the shapes of the digits kit, so ``train_check.py --data`` works on them too). Each model is a
Dense head on top of the layer under test, so the crash of a model and not of ``dense`` names
the layer; ``ops`` in each ``.json`` lists the builtins it uses.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

SHAPE = (8, 8, 1)


def models() -> dict[str, Callable[[], Any]]:
    from fedlab._tf import keras

    layers = keras.layers

    def chain(*body: Any) -> Callable[[], Any]:
        def build() -> Any:
            keras.utils.set_random_seed(0)
            inputs = keras.Input(shape=SHAPE)
            h = inputs
            for layer in body:
                h = layer()(h)
            return keras.Model(inputs, layers.Dense(10)(h))

        return build

    def digits() -> Any:
        from fedlab.models import build_model

        return build_model("digits_cnn", SHAPE, 10)

    return {
        "digits_cnn": digits,
        "dense": chain(layers.Flatten),
        "dense_relu": chain(layers.Flatten, lambda: layers.Dense(32, activation="relu")),
        "conv_valid": chain(lambda: layers.Conv2D(4, 3), layers.Flatten),
        "conv_same": chain(lambda: layers.Conv2D(4, 3, padding="same"), layers.Flatten),
        "conv_relu": chain(lambda: layers.Conv2D(4, 3, activation="relu"), layers.Flatten),
        "conv_cin16": chain(
            lambda: layers.Conv2D(16, 1),
            lambda: layers.Conv2D(4, 3, padding="same"),
            layers.Flatten,
        ),
        "conv_stride2": chain(lambda: layers.Conv2D(4, 3, strides=2), layers.Flatten),
        "maxpool": chain(layers.MaxPooling2D, layers.Flatten),
        "conv_maxpool": chain(
            lambda: layers.Conv2D(4, 3, padding="same"), layers.MaxPooling2D, layers.Flatten
        ),
        "gap": chain(lambda: layers.Conv2D(4, 1), layers.GlobalAveragePooling2D),
    }


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    from fedlab.optimize.trainable import export_trainable_tflite

    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    for name, build in models().items():
        export = export_trainable_tflite(build(), batch_size=16, trainable="all")
        export.save(out / f"{name}.tflite")
        print(f"{name:<14} {len(export.model):>7} bytes  {' '.join(export.ops)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
