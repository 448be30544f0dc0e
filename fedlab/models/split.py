"""Backbone/head split, head-only training and parameter counts."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedlab._tf import keras

__all__ = ["ParamCount", "count_params", "freeze_backbone", "split_backbone_head"]


@dataclass(frozen=True, slots=True)
class ParamCount:
    """Parameter counts of a model and their float32 size."""

    trainable: int
    non_trainable: int

    @property
    def total(self) -> int:
        """All parameters."""
        return self.trainable + self.non_trainable

    @property
    def trainable_bytes(self) -> int:
        """Bytes of the trainable parameters at float32: the size of one dense update."""
        return 4 * self.trainable


def count_params(model: keras.Model) -> ParamCount:
    """Count trainable and non-trainable parameters (respecting frozen layers)."""
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    frozen = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
    return ParamCount(trainable, frozen)


def _head(model: keras.Model) -> keras.layers.Layer:
    try:
        return model.get_layer("head")
    except ValueError:
        raise ValueError(
            f"model {model.name!r} has no layer named 'head'; not a zoo model"
        ) from None


def split_backbone_head(model: keras.Model) -> tuple[keras.Model, keras.Model]:
    """Split a zoo model into ``(backbone, head)`` sharing the same layer objects.

    ``backbone`` maps inputs to the embedding; ``head`` maps an embedding to logits, so
    ``head(backbone(x))`` equals ``model(x)``.
    """
    head_layer = _head(model)
    embedding = head_layer.input
    backbone = keras.Model(model.inputs, embedding, name=f"{model.name}_backbone")
    emb_input = keras.Input(shape=tuple(embedding.shape[1:]), name="embedding_in")
    head = keras.Model(emb_input, head_layer(emb_input), name=f"{model.name}_head")
    return backbone, head


def freeze_backbone(model: keras.Model, *, frozen: bool = True) -> keras.Model:
    """Make every layer but the head (non-)trainable, in place; returns ``model``.

    Head-only fine-tuning trains and uploads just the head's weights, which is what a
    Coral Edge TPU deployment can do on device.
    """
    head_layer = _head(model)
    for layer in model.layers:
        if layer is not head_layer:
            layer.trainable = not frozen
    return model
