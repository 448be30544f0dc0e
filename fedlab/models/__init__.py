"""Compact Keras model zoo with a backbone/head split (workbench layer: needs TensorFlow)."""

from fedlab.models.split import ParamCount, count_params, freeze_backbone, split_backbone_head
from fedlab.models.zoo import (
    MODEL_BUILDERS,
    build_model,
    digits_cnn,
    mobilenet_tiny,
    sensor_cnn1d,
    tiny_transformer,
)

__all__ = [
    "MODEL_BUILDERS",
    "ParamCount",
    "build_model",
    "count_params",
    "digits_cnn",
    "freeze_backbone",
    "mobilenet_tiny",
    "sensor_cnn1d",
    "split_backbone_head",
    "tiny_transformer",
]
