"""FedProx (Li et al. 2020): FedAvg aggregation, clients add ``μ/2·‖w − w_global‖²``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fedlab.federated.aggregate import add_weights
from fedlab.federated.strategies.base import StrategyState, mean_delta
from fedlab.federated.types import ClientUpdate, Weights

__all__ = ["FedProx"]


@dataclass(frozen=True, slots=True)
class FedProx:
    """FedAvg on the server; the round engine passes ``mu`` to every client's objective."""

    mu: float = 0.01
    server_lr: float = 1.0
    name: str = "fedprox"

    def __post_init__(self) -> None:
        if not self.mu >= 0:
            raise ValueError(f"mu must be >= 0, got {self.mu!r}")
        if not self.server_lr > 0:
            raise ValueError(f"server_lr must be > 0, got {self.server_lr!r}")

    @property
    def client_proximal_mu(self) -> float:
        """The proximal coefficient μ."""
        return self.mu

    def init_state(self, weights: Weights) -> StrategyState:
        """No server state."""
        return {}

    def aggregate(
        self, weights: Weights, updates: Sequence[ClientUpdate], state: StrategyState
    ) -> tuple[Weights, StrategyState]:
        """Apply the weighted mean delta."""
        return add_weights(weights, mean_delta(updates), self.server_lr), state
