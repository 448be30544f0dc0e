"""Robust reducers: coordinate-wise median, trimmed mean, and norm bounding.

A plain (weighted) mean lets one client move the global model arbitrarily far: a single
update scaled by 10⁶ dominates the average. The reducers here bound that influence:

* :class:`CoordinateMedian` — each coordinate is the median of the clients' values
  (Yin et al. 2018, "Byzantine-Robust Distributed Learning"); breaks down only when half
  the cohort is malicious.
* :class:`TrimmedMean` — each coordinate drops the ``trim`` fraction of the largest and
  the smallest values and averages the rest (Yin et al. 2018).
* :class:`NormBounded` — rescales every update whose global L2 norm exceeds ``max_norm``
  down to ``max_norm`` before an inner reducer (Sun et al. 2019, "Can You Really Backdoor
  Federated Learning?"); cheap and compatible with any reducer.

All implement :class:`~fedlab.federated.reduce.Reducer` and return a
:class:`~fedlab.federated.reduce.CohortSum` whose :meth:`~CohortSum.mean` is the robust
estimate (``total = estimate × count``, ``weight = count``): a strategy's server step is
unchanged. Median and trimmed mean count every client once (they ignore ``num_examples``,
which a malicious client could inflate).

They need the individual updates. Secure aggregation gives the server only the sum, so a
strategy that uses one of these (:class:`~fedlab.federated.strategies.RobustAggregation`)
refuses to run on a secure sum with :class:`RobustAggregationError`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedlab.federated.reduce import CohortSum, Reducer, UniformSum, WeightedSum
from fedlab.federated.types import ClientUpdate, Weights

__all__ = [
    "REDUCERS",
    "CoordinateMedian",
    "NormBounded",
    "RobustAggregationError",
    "TrimmedMean",
    "bound_norm",
    "coordinate_median",
    "make_reducer",
    "reducer_to_dict",
    "trimmed_mean",
    "update_norm",
]


class RobustAggregationError(RuntimeError):
    """A robust reducer was asked to work on something it cannot (an already-summed cohort)."""


def _stack(updates: Sequence[ClientUpdate]) -> list[np.ndarray]:
    if not updates:
        raise ValueError("cannot reduce an empty cohort")
    return [
        np.stack([np.asarray(p, np.float64) for p in parts])
        for parts in zip(*(u.delta for u in updates), strict=True)
    ]


def coordinate_median(deltas: Sequence[Weights]) -> Weights:
    """Coordinate-wise median of client deltas, in float64 (pure kernel)."""
    if not deltas:
        raise ValueError("coordinate_median needs at least one delta")
    return tuple(
        np.median(np.stack([np.asarray(p, np.float64) for p in parts]), axis=0)
        for parts in zip(*deltas, strict=True)
    )


def trimmed_mean(deltas: Sequence[Weights], trim: float) -> Weights:
    """Coordinate-wise mean after dropping ``floor(trim·n)`` smallest and largest values.

    Parameters
    ----------
    deltas : sequence of weight tuples
        One per client.
    trim : float
        Fraction trimmed from *each* end, in ``[0, 0.5)``.
    """
    if not deltas:
        raise ValueError("trimmed_mean needs at least one delta")
    if not (isinstance(trim, int | float) and 0 <= trim < 0.5):
        raise ValueError(f"trim must be a number in [0, 0.5), got {trim!r}")
    n = len(deltas)
    k = math.floor(trim * n)
    out = []
    for parts in zip(*deltas, strict=True):
        stacked = np.sort(np.stack([np.asarray(p, np.float64) for p in parts]), axis=0)
        out.append(stacked[k : n - k].mean(axis=0))
    return tuple(out)


def update_norm(delta: Weights) -> float:
    """Global L2 norm of a delta over all its tensors (float64)."""
    return float(np.sqrt(sum(float(np.sum(np.asarray(t, np.float64) ** 2)) for t in delta)))


def bound_norm(delta: Weights, max_norm: float) -> Weights:
    """``delta`` scaled down to global L2 norm ``max_norm`` if it is longer (else unchanged)."""
    norm = update_norm(delta)
    if norm <= max_norm:
        return delta
    scale = max_norm / norm
    return tuple((np.asarray(t, np.float64) * scale).astype(np.float32) for t in delta)


def _as_estimate(estimate: Weights, count: int) -> CohortSum:
    return CohortSum(tuple(t * count for t in estimate), float(count), count)


@dataclass(frozen=True, slots=True)
class CoordinateMedian:
    """Coordinate-wise median of the cohort's deltas (each client counts once)."""

    name: str = "median"

    def reduce(self, updates: Sequence[ClientUpdate]) -> CohortSum:
        """A cohort sum whose mean is the coordinate-wise median."""
        stacked = _stack(updates)
        return _as_estimate(tuple(np.median(s, axis=0) for s in stacked), len(updates))


@dataclass(frozen=True, slots=True)
class TrimmedMean:
    """Coordinate-wise ``trim``-trimmed mean (each client counts once).

    ``trim`` is the fraction dropped at *each* end; with 10 % malicious clients use
    ``trim >= 0.1``. ``floor(trim·n)`` values go at each end, so a small cohort may trim none:
    ``min_trimmed`` (default 1) forces at least that many per end when the cohort allows it.
    """

    trim: float = 0.1
    min_trimmed: int = 1
    name: str = "trimmed_mean"

    def __post_init__(self) -> None:
        if isinstance(self.trim, bool) or not isinstance(self.trim, int | float):
            raise ValueError(f"trim must be a number in [0, 0.5), got {self.trim!r}")
        if not 0 <= self.trim < 0.5:
            raise ValueError(f"trim must be a number in [0, 0.5), got {self.trim!r}")
        if isinstance(self.min_trimmed, bool) or not isinstance(self.min_trimmed, int):
            raise ValueError(f"min_trimmed must be an int >= 0, got {self.min_trimmed!r}")
        if self.min_trimmed < 0:
            raise ValueError(f"min_trimmed must be an int >= 0, got {self.min_trimmed!r}")

    def trimmed_per_end(self, n: int) -> int:
        """How many values are dropped at each end for a cohort of ``n``."""
        k = max(math.floor(self.trim * n), self.min_trimmed)
        return min(k, (n - 1) // 2)

    def reduce(self, updates: Sequence[ClientUpdate]) -> CohortSum:
        """A cohort sum whose mean is the coordinate-wise trimmed mean."""
        stacked = _stack(updates)
        n = len(updates)
        k = self.trimmed_per_end(n)
        estimate = tuple(np.sort(s, axis=0)[k : n - k].mean(axis=0) for s in stacked)
        return _as_estimate(estimate, n)


@dataclass(frozen=True, slots=True)
class NormBounded:
    """Scale every update down to L2 norm ``max_norm`` (if longer), then ``inner``'s reduce.

    With ``inner=WeightedSum()`` this is FedAvg with server-side norm bounding; it still
    weighs by the *claimed* ``num_examples`` (capped by the pipeline at the enrolled size).
    """

    max_norm: float
    inner: Any = field(default_factory=WeightedSum)
    name: str = "norm_bounded"

    def __post_init__(self) -> None:
        if isinstance(self.max_norm, bool) or not isinstance(self.max_norm, int | float):
            raise ValueError(f"max_norm must be a finite number > 0, got {self.max_norm!r}")
        if not (math.isfinite(self.max_norm) and self.max_norm > 0):
            raise ValueError(f"max_norm must be a finite number > 0, got {self.max_norm!r}")
        if not callable(getattr(self.inner, "reduce", None)):
            raise TypeError(f"inner must be a Reducer, got {type(self.inner).__name__}")

    def reduce(self, updates: Sequence[ClientUpdate]) -> CohortSum:
        """Bound each update's norm, then reduce with ``inner``."""
        bounded = [
            ClientUpdate(
                u.client_id,
                bound_norm(u.delta, float(self.max_norm)),
                u.num_examples,
                u.num_steps,
                u.metrics,
            )
            for u in updates
        ]
        result: CohortSum = self.inner.reduce(bounded)
        return result


REDUCERS: dict[str, type] = {
    "weighted_sum": WeightedSum,
    "uniform_sum": UniformSum,
    "median": CoordinateMedian,
    "trimmed_mean": TrimmedMean,
    "norm_bounded": NormBounded,
}


def reducer_to_dict(reducer: Reducer) -> dict[str, Any]:
    """``{"name": …, **parameters}`` (a nested inner reducer nests)."""
    out: dict[str, Any] = {"name": reducer.name}
    for key in ("trim", "min_trimmed", "max_norm"):
        if hasattr(reducer, key):
            out[key] = getattr(reducer, key)
    inner = getattr(reducer, "inner", None)
    if inner is not None:
        out["inner"] = reducer_to_dict(inner)
    return out


def make_reducer(spec: str | Mapping[str, Any], **params: Any) -> Reducer:
    """Build a reducer from its name (``"median"``…) or :func:`reducer_to_dict` output."""
    if isinstance(spec, Mapping):
        params = {**{k: v for k, v in spec.items() if k != "name"}, **params}
        spec = str(spec.get("name", ""))
    key = str(spec).lower()
    if key not in REDUCERS:
        raise ValueError(f"unknown reducer {spec!r}; choose one of {sorted(REDUCERS)}")
    if "inner" in params and isinstance(params["inner"], Mapping | str):
        params["inner"] = make_reducer(params["inner"])
    reducer: Reducer = REDUCERS[key](**params)
    return reducer
