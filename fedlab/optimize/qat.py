"""Quantization-aware training and weight clustering with tfmot."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import numpy as np

from fedlab._tf import import_tfmot, keras
from fedlab.optimize.train import clone, fit

tfmot = import_tfmot()

__all__ = ["ConvQuantizeConfig", "cluster", "quantize_aware"]


_QuantizeConfig: Any = tfmot.quantization.keras.QuantizeConfig


class ConvQuantizeConfig(_QuantizeConfig):
    """8-bit config for convolutions tfmot has no default for (Conv1D): a symmetric per-tensor
    kernel quantizer and an asymmetric moving-average quantizer on the activation, the
    same scheme tfmot's default registry uses for Conv2D."""

    def get_weights_and_quantizers(self, layer):
        quantizers = tfmot.quantization.keras.quantizers
        return [
            (
                layer.kernel,
                quantizers.LastValueQuantizer(
                    num_bits=8, symmetric=True, narrow_range=False, per_axis=False
                ),
            )
        ]

    def get_activations_and_quantizers(self, layer):
        quantizers = tfmot.quantization.keras.quantizers
        return [
            (
                layer.activation,
                quantizers.MovingAverageQuantizer(
                    num_bits=8, symmetric=False, narrow_range=False, per_axis=False
                ),
            )
        ]

    def set_quantize_weights(self, layer, quantize_weights):
        layer.kernel = quantize_weights[0]

    def set_quantize_activations(self, layer, quantize_activations):
        layer.activation = quantize_activations[0]

    def get_output_quantizers(self, layer):
        return []

    def get_config(self) -> dict[str, Any]:
        return {}


def quantize_aware(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int = 2,
    layers: Collection[str] | None = None,
    batch_size: int = 32,
    learning_rate: float = 5e-4,
) -> keras.Model:
    """Fine-tune ``model`` with fake-quantization (the whole model, or only ``layers``).

    Raises
    ------
    ValueError
        Naming the layer when tfmot cannot quantize it.
    """
    base = clone(model)
    q = tfmot.quantization.keras
    names = {layer.name for layer in base.layers}
    if layers is not None and set(layers) - names:
        raise ValueError(f"no layers named {sorted(set(layers) - names)} in model {model.name!r}")

    def annotate(layer: keras.layers.Layer) -> keras.layers.Layer:
        if layers is not None and layer.name not in layers:
            return layer
        if isinstance(layer, keras.layers.Conv1D):
            return q.quantize_annotate_layer(layer, quantize_config=ConvQuantizeConfig())
        return q.quantize_annotate_layer(layer)

    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_registry as registry_module,
    )

    registry = registry_module.Default8BitQuantizeRegistry()
    for layer in base.layers:
        targeted = layers is None or layer.name in layers
        if (
            targeted
            and not isinstance(layer, keras.layers.InputLayer | keras.layers.Conv1D)
            and not registry.supports(layer)
        ):
            raise ValueError(
                f"quantization-aware training cannot handle layer {layer.name!r} "
                f"({type(layer).__name__}): tfmot has no 8-bit config for it; leave it out with "
                "layers=... or give it a tfmot QuantizeConfig"
            )
    try:
        annotated = keras.models.clone_model(base, clone_function=annotate)
        annotated.set_weights(base.get_weights())
        with q.quantize_scope({"ConvQuantizeConfig": ConvQuantizeConfig}):
            qat_model = q.quantize_apply(annotated)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise ValueError(
            f"quantization-aware training cannot handle model {model.name!r}: {exc}"
        ) from exc
    return fit(qat_model, x, y, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate)


def cluster(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    *,
    clusters: int = 16,
    epochs: int = 2,
    preserve_sparsity: bool = False,
    batch_size: int = 32,
    learning_rate: float = 5e-4,
) -> keras.Model:
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
