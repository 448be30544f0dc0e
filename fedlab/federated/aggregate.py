"""Pure aggregation kernels over weight lists and sample counts (no I/O, no state)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedlab.federated.types import Weights

__all__ = ["add_weights", "relative_difference", "weighted_mean"]


def weighted_mean(tensors: Sequence[Weights], weights: Sequence[float]) -> Weights:
    """Per-tensor weighted mean ``Σ wᵢ·xᵢ / Σ wᵢ``, computed in float64, returned as float32.

    Parameters
    ----------
    tensors : sequence of weight tuples
        One tuple of arrays per contributor, all with the same shapes.
    weights : sequence of float
        Non-negative weight of each contributor (sample counts for FedAvg), positive sum.
    """
    if not tensors:
        raise ValueError("weighted_mean needs at least one contributor")
    if len(tensors) != len(weights):
        raise ValueError(f"{len(tensors)} contributors but {len(weights)} weights")
    w = np.asarray(weights, dtype=np.float64)
    if (w < 0).any() or not w.sum() > 0:
        raise ValueError(f"weights must be non-negative with a positive sum, got {list(weights)}")
    w = w / w.sum()
    out = []
    for parts in zip(*tensors, strict=True):
        acc = np.zeros(parts[0].shape, dtype=np.float64)
        for share, part in zip(w, parts, strict=True):
            acc += share * part
        out.append(acc.astype(np.float32))
    return tuple(out)


def add_weights(base: Weights, step: Weights, scale: float = 1.0) -> Weights:
    """``base + scale·step`` tensor by tensor, as float32."""
    return tuple(
        (b.astype(np.float64) + scale * s).astype(np.float32)
        for b, s in zip(base, step, strict=True)
    )


def relative_difference(a: Weights, b: Weights) -> float:
    """``‖a − b‖ / ‖b‖`` over all tensors together (global L2 norms, in float64)."""
    num = sum(
        float(np.sum((np.asarray(x, np.float64) - y) ** 2)) for x, y in zip(a, b, strict=True)
    )
    den = sum(float(np.sum(np.asarray(y, np.float64) ** 2)) for y in b)
    if den == 0.0:
        return 0.0 if num == 0.0 else float("inf")
    return float(np.sqrt(num / den))
