"""FedAvg (McMahan et al. 2017): the example-weighted mean of client deltas."""

from __future__ import annotations

from dataclasses import dataclass

from fedlab.federated.aggregate import add_weights
from fedlab.federated.strategies.base import ServerStep, StrategyState, check_server_lr
from fedlab.federated.types import Weights

__all__ = ["FedAvg"]


@dataclass(frozen=True, slots=True)
class FedAvg(ServerStep):
    """``w ← w + η·Σ nᵢΔᵢ / Σ nᵢ`` (η = ``server_lr``, 1 for plain FedAvg)."""

    server_lr: float = 1.0
    name: str = "fedavg"

    def __post_init__(self) -> None:
        check_server_lr(self.server_lr)

    @property
    def client_proximal_mu(self) -> float:
        """No proximal term."""
        return 0.0

    def init_state(self, weights: Weights) -> StrategyState:
        """FedAvg keeps no state."""
        return {}

    def server_step(
        self, weights: Weights, delta: Weights, state: StrategyState
    ) -> tuple[Weights, StrategyState]:
        """Apply the mean delta."""
        return add_weights(weights, delta, self.server_lr), state
