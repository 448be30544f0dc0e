"""Vectorised simulation: all clients of a round in one compiled graph (needs TensorFlow)."""

from fedlab.federated.vectorized.program import Program, UnsupportedModel, compile_program
from fedlab.federated.vectorized.runtime import FallbackWarning, VectorizedRuntime, make_runtime

__all__ = [
    "FallbackWarning",
    "Program",
    "UnsupportedModel",
    "VectorizedRuntime",
    "compile_program",
    "make_runtime",
]
