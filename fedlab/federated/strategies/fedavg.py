"""FedAvg (McMahan et al. 2017): the example-weighted mean of client deltas."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fedlab.federated.aggregate import add_weights
from fedlab.federated.strategies.base import StrategyState, mean_delta
from fedlab.federated.types import ClientUpdate, Weights

__all__ = ["FedAvg"]


@dataclass(frozen=True, slots=True)
class FedAvg:
    """``w ← w + η·Σ nᵢΔᵢ / Σ nᵢ`` (η = ``server_lr``, 1 for plain FedAvg)."""

    server_lr: float = 1.0
    name: str = "fedavg"

    def __post_init__(self) -> None:
        if not self.server_lr > 0:
            raise ValueError(f"server_lr must be > 0, got {self.server_lr!r}")

    @property
    def client_proximal_mu(self) -> float:
        """No proximal term."""
        return 0.0

    def init_state(self, weights: Weights) -> StrategyState:
        """FedAvg keeps no state."""
        return {}

    def aggregate(
        self, weights: Weights, updates: Sequence[ClientUpdate], state: StrategyState
    ) -> tuple[Weights, StrategyState]:
        """Apply the weighted mean delta."""
        return add_weights(weights, mean_delta(updates), self.server_lr), state
