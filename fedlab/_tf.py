"""TensorFlow with one Keras for the whole process (workbench layer only).

TensorFlow 2.15 resolves ``tf.keras`` lazily, on first use: to the ``keras`` 2.15 package,
or to ``tf_keras`` when ``TF_USE_LEGACY_KERAS=1``. tensorflow-model-optimization 0.8.1
sets that variable when it is imported, and its quantization only works when it was
imported *before* TensorFlow: otherwise the layers it rebuilds during QAT come from the
other Keras ("… is not a valid TF-Keras layer"). Measured on this stack:

* tfmot, then tensorflow → ``tf.keras`` is ``tf_keras`` and QAT works;
* tensorflow, then tfmot → QAT fails, whichever Keras ``tf.keras`` resolved to.

So every fedlab module that needs TensorFlow imports it from here, and this module imports
tfmot first. (If you import tensorflow yourself before fedlab, import
``tensorflow_model_optimization`` before it too.) The variable stays set, so notebook
kernels and other child processes make the same choice.
"""

from __future__ import annotations

from types import ModuleType

import tensorflow as tf
import tensorflow_model_optimization as _tfmot

__all__ = ["import_tfmot", "tf"]


def import_tfmot() -> ModuleType:
    """``tensorflow_model_optimization`` (already imported, in the right order)."""
    return _tfmot
