"""The strategy interface: how the server turns accepted updates into the next global model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields, is_dataclass
from typing import Any, Protocol

from fedlab.federated.aggregate import weighted_mean
from fedlab.federated.types import ClientUpdate, Weights

__all__ = ["Strategy", "StrategyState", "mean_delta", "strategy_to_dict"]

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

    def aggregate(
        self, weights: Weights, updates: Sequence[ClientUpdate], state: StrategyState
    ) -> tuple[Weights, StrategyState]:
        """The next global weights and state; ``updates`` is never empty."""
        ...


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
