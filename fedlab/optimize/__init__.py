"""Model compression: pruning, QAT, clustering, distillation, TFLite conversion, LiteRT
measurements and Edge TPU checks (workbench layer: needs TensorFlow and tfmot)."""

from fedlab.optimize.anatomy import TFLiteAnatomy, anatomy, int8_size_row, strip_strings
from fedlab.optimize.convert import MODES, to_tflite
from fedlab.optimize.distill import distill
from fedlab.optimize.edgetpu import EDGETPU_OPS, EdgeTPUReport, edgetpu_report
from fedlab.optimize.measure import TFLiteReport, load_tflite, measure_tflite
from fedlab.optimize.pruning import prune, sparsity_of
from fedlab.optimize.qat import cluster, quantize_aware
from fedlab.optimize.recipe import Recipe, RecipeResult, compare, standard_recipes
from fedlab.optimize.train import clone, fit, keras_accuracy
from fedlab.optimize.trainable import (
    TrainableExport,
    UnsupportedLayer,
    export_trainable_tflite,
    flex_ops,
)

__all__ = [
    "EDGETPU_OPS",
    "MODES",
    "EdgeTPUReport",
    "Recipe",
    "RecipeResult",
    "TFLiteAnatomy",
    "TFLiteReport",
    "TrainableExport",
    "UnsupportedLayer",
    "anatomy",
    "clone",
    "cluster",
    "compare",
    "distill",
    "edgetpu_report",
    "export_trainable_tflite",
    "fit",
    "flex_ops",
    "int8_size_row",
    "keras_accuracy",
    "load_tflite",
    "measure_tflite",
    "prune",
    "quantize_aware",
    "sparsity_of",
    "standard_recipes",
    "strip_strings",
    "to_tflite",
]
