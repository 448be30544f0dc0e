"""FedProx (Li et al. 2020): FedAvg aggregation, clients add ``μ/2·‖w − w_global‖²``."""

from __future__ import annotations

from dataclasses import dataclass

from fedlab.federated.aggregate import add_weights
from fedlab.federated.strategies.base import ServerStep, StrategyState, check_server_lr
from fedlab.federated.types import Weights

__all__ = ["FedProx"]


@dataclass(frozen=True, slots=True)
class FedProx(ServerStep):
    """FedAvg on the server; the round engine passes ``mu`` to every client's objective."""

    mu: float = 0.01
    server_lr: float = 1.0
    name: str = "fedprox"

    def __post_init__(self) -> None:
        if not self.mu >= 0:
            raise ValueError(f"mu must be >= 0, got {self.mu!r}")
        check_server_lr(self.server_lr)

    @property
    def client_proximal_mu(self) -> float:
        """The proximal coefficient μ."""
        return self.mu

    def init_state(self, weights: Weights) -> StrategyState:
        """No server state."""
        return {}

    def server_step(
        self, weights: Weights, delta: Weights, state: StrategyState
    ) -> tuple[Weights, StrategyState]:
        """Apply the mean delta."""
        return add_weights(weights, delta, self.server_lr), state
