"""The reduce step of aggregation: many client updates → one cohort sum.

A strategy's server step (FedAvg, FedAvgM, FedAdam…) only needs the cohort's mean delta,
and the mean only needs ``Σ wᵢ·Δᵢ`` and ``Σ wᵢ``. Secure aggregation delivers exactly that
pair and never an individual ``Δᵢ``, so aggregation accepts either the individual updates
(reduced here) or an already-summed :class:`CohortSum`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from fedlab.federated.types import ClientUpdate, Weights

__all__ = ["CohortSum", "Reducer", "UniformSum", "WeightedSum"]


@dataclass(frozen=True, slots=True)
class CohortSum:
    """``total = Σ wᵢ·Δᵢ`` (float64, tensor by tensor), ``weight = Σ wᵢ`` over ``count``
    clients. FedAvg weighs by examples, so ``weight`` is then the cohort's example count."""

    total: Weights
    weight: float
    count: int

    def __post_init__(self) -> None:
        if not isinstance(self.count, int) or isinstance(self.count, bool) or self.count < 1:
            raise ValueError(f"count must be an int >= 1, got {self.count!r}")
        if not (math.isfinite(self.weight) and self.weight > 0):
            raise ValueError(f"weight must be finite and > 0, got {self.weight!r}")
        if not self.total:
            raise ValueError("total must hold at least one tensor")
        if not all(np.isfinite(t).all() for t in self.total):
            raise ValueError("total holds NaN or Inf")

    def mean(self) -> Weights:
        """``Σ wᵢ·Δᵢ / Σ wᵢ`` as float32: the delta a server step applies."""
        return tuple(
            (np.asarray(t, np.float64) / self.weight).astype(np.float32) for t in self.total
        )


class Reducer(Protocol):
    """Turns accepted updates into a :class:`CohortSum`."""

    @property
    def name(self) -> str:
        """Registry name."""
        ...

    def reduce(self, updates: Sequence[ClientUpdate]) -> CohortSum:
        """The cohort sum of ``updates`` (never empty)."""
        ...


def _sum(updates: Sequence[ClientUpdate], weights: Sequence[float]) -> CohortSum:
    if not updates:
        raise ValueError("cannot reduce an empty cohort")
    total = []
    for parts in zip(*(u.delta for u in updates), strict=True):
        acc = np.zeros(parts[0].shape, dtype=np.float64)
        for w, part in zip(weights, parts, strict=True):
            acc += w * np.asarray(part, np.float64)
        total.append(acc)
    return CohortSum(tuple(total), float(sum(weights)), len(updates))


@dataclass(frozen=True, slots=True)
class WeightedSum:
    """FedAvg's reduce: each update weighted by its number of examples."""

    name: str = "weighted_sum"

    def reduce(self, updates: Sequence[ClientUpdate]) -> CohortSum:
        """``Σ nᵢ·Δᵢ`` and ``Σ nᵢ``."""
        return _sum(updates, [float(u.num_examples) for u in updates])


@dataclass(frozen=True, slots=True)
class UniformSum:
    """Every client counts once, whatever its data size (``Σ Δᵢ`` and the client count)."""

    name: str = "uniform_sum"

    def reduce(self, updates: Sequence[ClientUpdate]) -> CohortSum:
        """``Σ Δᵢ`` and ``n``."""
        return _sum(updates, [1.0] * len(updates))
