"""The strategy interface: how the server turns accepted updates into the next global model.

Aggregation is two steps: *reduce* the cohort to its mean delta (:mod:`fedlab.federated.reduce`;
or receive the sum from secure aggregation), then the strategy's *server step* applies it
(FedAvg adds it, FedAvgM and FedAdam keep optimizer state).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import fields, is_dataclass
from typing import Any, Protocol

from fedlab.federated.aggregate import weighted_mean
from fedlab.federated.reduce import CohortSum
from fedlab.federated.types import ClientUpdate, Weights

__all__ = [
    "ServerStep",
    "Strategy",
    "StrategyState",
    "check_server_lr",
    "mean_delta",
    "strategy_to_dict",
]

StrategyState = Mapping[str, Weights]


class Strategy(Protocol):
    """A server-side aggregation rule. Implementations are frozen dataclasses."""

    @property
    def name(self) -> str:
        """Registry name (``"fedavg"``…)."""
        ...

    @property
    def client_proximal_mu(self) -> float:
        """FedProx μ that clients must add to their objective (0 for none)."""
        ...

    def init_state(self, weights: Weights) -> StrategyState:
        """Server optimizer state for a model with these weights."""
        ...

    def server_step(
        self, weights: Weights, delta: Weights, state: StrategyState
    ) -> tuple[Weights, StrategyState]:
        """Apply the cohort's reduced (mean) delta: the next global weights and state."""
        ...

    def aggregate(
        self, weights: Weights, updates: Sequence[ClientUpdate], state: StrategyState
    ) -> tuple[Weights, StrategyState]:
        """Reduce individual updates (never empty), then :meth:`server_step`."""
        ...

    def aggregate_sum(
        self, weights: Weights, cohort: CohortSum, state: StrategyState
    ) -> tuple[Weights, StrategyState]:
        """:meth:`server_step` on an already-summed cohort (what secure aggregation gives)."""
        ...


class ServerStep:
    """Mixin: ``aggregate`` and ``aggregate_sum`` for a strategy that defines only
    ``server_step`` (reduce = FedAvg's example-weighted mean)."""

    __slots__ = ()

    def server_step(
        self, weights: Weights, delta: Weights, state: StrategyState
    ) -> tuple[Weights, StrategyState]:
        raise NotImplementedError

    def aggregate(
        self, weights: Weights, updates: Sequence[ClientUpdate], state: StrategyState
    ) -> tuple[Weights, StrategyState]:
        """The example-weighted mean delta of ``updates``, then the server step."""
        return self.server_step(weights, mean_delta(updates), state)

    def aggregate_sum(
        self, weights: Weights, cohort: CohortSum, state: StrategyState
    ) -> tuple[Weights, StrategyState]:
        """The cohort's mean delta ``Σ wᵢΔᵢ / Σ wᵢ``, then the server step."""
        return self.server_step(weights, cohort.mean(), state)


def check_server_lr(value: float) -> None:
    """A server learning rate must be a finite number > 0 (``inf`` gives a NaN model)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"server_lr must be a number, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"server_lr must be finite and > 0, got {value!r}")


def mean_delta(updates: Sequence[ClientUpdate]) -> Weights:
    """Average of the client deltas weighted by their number of examples."""
    return weighted_mean([u.delta for u in updates], [u.num_examples for u in updates])


def strategy_to_dict(strategy: Any) -> dict[str, Any]:
    """``{"name": …, **parameters}`` for any dataclass strategy (wrapped strategies nest)."""
    out: dict[str, Any] = {"name": strategy.name}
    for f in fields(strategy):
        if f.name == "name" or not f.compare:  # caches and other internals are not parameters
            continue
        value = getattr(strategy, f.name)
        out[f.name] = strategy_to_dict(value) if is_dataclass(value) else value
    return out
