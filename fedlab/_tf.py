"""TensorFlow with one Keras for the whole process (workbench layer only).

TensorFlow 2.15 resolves ``tf.keras`` lazily, on first use: to the ``keras`` 2.15 package,
or to ``tf_keras`` when ``TF_USE_LEGACY_KERAS=1``. tensorflow-model-optimization 0.8.1
sets that variable when it is imported, and its quantization only works when it was
imported *before* TensorFlow: otherwise the layers it rebuilds during QAT come from the
other Keras ("… is not a valid TF-Keras layer"). Measured on this stack:

* tfmot, then tensorflow → ``tf.keras`` is ``tf_keras`` and QAT works;
* tensorflow, then tfmot → QAT fails, whichever Keras ``tf.keras`` resolved to.

So every fedlab module that needs TensorFlow imports it from here, this module imports
tfmot first, and fedlab builds every model with ``tf_keras`` by name (``keras`` below),
never through the lazily resolved ``tf.keras``. (If you import tensorflow yourself before
fedlab, import ``tensorflow_model_optimization`` before it too, and build models with
``tf_keras``.) The variable stays set, so notebook kernels and other child processes make
the same choice.
"""

from __future__ import annotations

import os
from types import ModuleType

# An inherited TF_USE_LEGACY_KERAS=1 (a parent process imported tfmot) present when
# TensorFlow itself is imported breaks tfmot's Conv1D QAT; tfmot sets it again below.
os.environ.pop("TF_USE_LEGACY_KERAS", None)

import tensorflow_model_optimization as _tfmot

# isort: split
import tensorflow as tf
import tf_keras as keras

__all__ = ["import_tfmot", "keras", "tf"]


def import_tfmot() -> ModuleType:
    """``tensorflow_model_optimization`` (already imported, in the right order)."""
    return _tfmot
