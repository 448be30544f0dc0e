"""Magnitude pruning with tfmot: polynomial-decay schedule or 2:4 structured sparsity."""

from __future__ import annotations

import math

import numpy as np

from fedlab._tf import import_tfmot, keras
from fedlab.optimize.train import clone, fit

tfmot = import_tfmot()

__all__ = ["prune", "sparsity_of"]


def prune(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    *,
    sparsity: float,
    epochs: int = 2,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    structured_2_4: bool = False,
    block_size: tuple[int, int] = (1, 1),
) -> keras.Model:
    """Prune the kernels of ``model`` to ``sparsity`` while fine-tuning; returns a stripped copy.

    Parameters
    ----------
    sparsity : float
        Target fraction of zero weights, in [0, 1). Ignored with ``structured_2_4`` (which is
        exactly 50 %: two of every four consecutive input weights are zero).
    epochs : int
        Fine-tuning epochs; sparsity ramps up polynomially over the first 70 % of steps.
    block_size : (int, int)
        Prune ``Dense`` kernels (``(inputs, outputs)``) in whole blocks of this shape, ranked
        by their mean magnitude. ``(4, 1)`` zeroes runs of four consecutive inputs of one
        output — contiguous bytes in TFLite's ``(outputs, inputs)`` layout, which gzip
        stores as one back-reference and block-sparse kernels skip. Dense layers whose
        kernel does not divide into blocks, and convolutions, are pruned element-wise.
        Blocks remove more at once: give them more fine-tuning epochs.
    """
    if not isinstance(sparsity, int | float) or not 0 <= sparsity < 1:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity!r}")
    if epochs < 1:
        raise ValueError(f"pruning needs at least one fine-tuning epoch, got {epochs!r}")
    if (
        not isinstance(block_size, tuple | list)
        or len(block_size) != 2
        or not all(isinstance(b, int) and b >= 1 for b in block_size)
    ):
        raise ValueError(f"block_size must be two positive integers, got {block_size!r}")
    if structured_2_4 and tuple(block_size) != (1, 1):
        raise ValueError("block_size and structured_2_4 are two different patterns: pick one")
    steps = math.ceil(len(x) / batch_size) * epochs
    if structured_2_4:
        # tfmot's m-by-n sparsity handles 2-D (Dense) and 4-D (Conv2D) kernels only; other
        # layers (Conv1D, depthwise) stay dense.
        base = clone(model)

        def wrap(layer: keras.layers.Layer) -> keras.layers.Layer:
            kernel = getattr(layer, "kernel", None)
            if (
                isinstance(layer, keras.layers.Dense | keras.layers.Conv2D)
                and not isinstance(layer, keras.layers.DepthwiseConv2D)
                and kernel is not None
                and len(kernel.shape) in (2, 4)
            ):
                return tfmot.sparsity.keras.prune_low_magnitude(layer, sparsity_m_by_n=(2, 4))
            return layer

        # As in tfmot's guide: the returned layers are base's own (weights included), so no
        # set_weights; base is a private copy.
        wrapped = keras.models.clone_model(base, clone_function=wrap)
    else:
        schedule = tfmot.sparsity.keras.PolynomialDecay(
            initial_sparsity=0.0,
            final_sparsity=float(sparsity),
            begin_step=0,
            end_step=max(1, int(0.7 * steps)),
            frequency=max(1, steps // 20),
        )
        blocks = tuple(int(b) for b in block_size)
        if blocks == (1, 1):
            wrapped = tfmot.sparsity.keras.prune_low_magnitude(
                clone(model), pruning_schedule=schedule
            )
        else:

            def wrap_blocks(layer: keras.layers.Layer) -> keras.layers.Layer:
                if not layer.trainable_weights:
                    return layer
                use = blocks if _divides_into(layer, blocks) else (1, 1)
                return tfmot.sparsity.keras.prune_low_magnitude(
                    layer, pruning_schedule=schedule, block_size=use
                )

            # clone_function gets clone's own layers (weights included): no set_weights.
            wrapped = keras.models.clone_model(clone(model), clone_function=wrap_blocks)
    fit(
        wrapped,
        x,
        y,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        callbacks=[tfmot.sparsity.keras.UpdatePruningStep()],
    )
    return tfmot.sparsity.keras.strip_pruning(wrapped)


def _divides_into(layer: keras.layers.Layer, blocks: tuple[int, ...]) -> bool:
    if not isinstance(layer, keras.layers.Dense):
        return False
    shape = tuple(int(d) for d in layer.kernel.shape)
    return all(d % b == 0 for d, b in zip(shape, blocks, strict=True))


def sparsity_of(model: keras.Model) -> float:
    """Fraction of exact zeros among the kernels of Dense and convolution layers."""
    zeros = total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dense | keras.layers.Conv1D | keras.layers.Conv2D):
            kernel = layer.get_weights()[0]
            zeros += int(np.sum(kernel == 0))
            total += kernel.size
    if total == 0:
        raise ValueError(f"model {model.name!r} has no Dense or convolution kernels")
    return zeros / total
