"""FedAvgM (Hsu et al. 2019): FedAvg with server momentum."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedlab.federated.aggregate import add_weights
from fedlab.federated.strategies.base import ServerStep, StrategyState, check_server_lr
from fedlab.federated.types import Weights

__all__ = ["FedAvgM"]


@dataclass(frozen=True, slots=True)
class FedAvgM(ServerStep):
    """``v ← β·v + Δ̄``, ``w ← w + η·v`` with Δ̄ the example-weighted mean delta."""

    server_lr: float = 1.0
    momentum: float = 0.9
    name: str = "fedavgm"

    def __post_init__(self) -> None:
        check_server_lr(self.server_lr)
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")

    @property
    def client_proximal_mu(self) -> float:
        """No proximal term."""
        return 0.0

    def init_state(self, weights: Weights) -> StrategyState:
        """Zero velocity."""
        return {"velocity": tuple(np.zeros_like(w, dtype=np.float32) for w in weights)}

    def server_step(
        self, weights: Weights, delta: Weights, state: StrategyState
    ) -> tuple[Weights, StrategyState]:
        """Momentum step on the mean delta."""
        velocity = tuple(
            (self.momentum * v + d).astype(np.float32)
            for v, d in zip(state["velocity"], delta, strict=True)
        )
        return add_weights(weights, velocity, self.server_lr), {"velocity": velocity}
