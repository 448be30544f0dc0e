"""Quantization-aware training and weight clustering with tfmot."""

from __future__ import annotations

from collections.abc import Collection

import numpy as np

from fedlab._tf import import_tfmot, tf
from fedlab.optimize.train import clone, fit

tfmot = import_tfmot()

__all__ = ["cluster", "quantize_aware"]


def quantize_aware(
    model: tf.keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int = 2,
    layers: Collection[str] | None = None,
    batch_size: int = 32,
    learning_rate: float = 5e-4,
) -> tf.keras.Model:
    """Fine-tune ``model`` with fake-quantization (the whole model, or only ``layers``).

    Raises
    ------
    ValueError
        Naming the layer when tfmot cannot quantize it.
    """
    base = clone(model)
    q = tfmot.quantization.keras
    try:
        if layers is None:
            qat_model = q.quantize_model(base)
        else:
            unknown = set(layers) - {layer.name for layer in base.layers}
            if unknown:
                raise ValueError(f"no layers named {sorted(unknown)} in model {model.name!r}")

            def annotate(layer: tf.keras.layers.Layer) -> tf.keras.layers.Layer:
                return q.quantize_annotate_layer(layer) if layer.name in layers else layer

            annotated = tf.keras.models.clone_model(base, clone_function=annotate)
            annotated.set_weights(base.get_weights())
            qat_model = q.quantize_apply(annotated)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise ValueError(
            f"quantization-aware training cannot handle model {model.name!r}: {exc}"
        ) from exc
    return fit(qat_model, x, y, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate)


def cluster(
    model: tf.keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    *,
    clusters: int = 16,
    epochs: int = 2,
    preserve_sparsity: bool = False,
    batch_size: int = 32,
    learning_rate: float = 5e-4,
) -> tf.keras.Model:
    """Share weights: every kernel takes at most ``clusters`` distinct values (k-means++).

    With ``preserve_sparsity`` (after pruning) zeros stay zeros.
    """
    if not isinstance(clusters, int) or clusters < 2:
        raise ValueError(f"clusters must be an int >= 2, got {clusters!r}")
    init = tfmot.clustering.keras.CentroidInitialization.KMEANS_PLUS_PLUS
    if preserve_sparsity:
        from tensorflow_model_optimization.python.core.clustering.keras.experimental import (
            cluster as experimental,
        )

        wrapped = experimental.cluster_weights(
            clone(model),
            number_of_clusters=clusters,
            cluster_centroids_init=init,
            preserve_sparsity=True,
        )
    else:
        wrapped = tfmot.clustering.keras.cluster_weights(
            clone(model), number_of_clusters=clusters, cluster_centroids_init=init
        )
    fit(wrapped, x, y, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate)
    return tfmot.clustering.keras.strip_clustering(wrapped)
