"""The client-runtime interface (TensorFlow-free, so the round engine imports without TF)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from fedlab.data.federated_dataset import ClientData
from fedlab.federated.types import ClientPlan, ClientUpdate, Weights

__all__ = ["ClientFailure", "ClientRuntime", "RunNote"]


@dataclass(frozen=True, slots=True)
class ClientFailure:
    """A client whose local training raised; ``error`` is ``"Type: message"``."""

    client_id: int
    error: str


@dataclass(frozen=True, slots=True)
class RunNote:
    """Which runtime trained the last :meth:`ClientRuntime.train_clients` call.

    ``fallback_clients`` of them were retried on the reference runtime after the fast path
    failed (``fallback_reason``), which cost ``fallback_seconds`` on top. A runtime that has
    such a note exposes it as ``last_run``; the round engine records :meth:`describe`.
    """

    runtime: str
    fallback_clients: int = 0
    fallback_reason: str = ""
    fallback_seconds: float = 0.0

    def describe(self) -> str:
        """``"vectorized"``, or with the fallback: what, why and what it cost."""
        if not self.fallback_clients:
            return self.runtime
        return (
            f"{self.runtime}; {self.fallback_clients} clients retried on reference "
            f"(+{self.fallback_seconds:.1f} s): {self.fallback_reason}"
        )


@runtime_checkable
class ClientRuntime(Protocol):
    """What the round engine needs from a client runtime."""

    def initial_weights(self) -> Weights:
        """The model's initial weights (the round-0 global model)."""
        ...

    def train_clients(
        self, global_weights: Weights, jobs: Sequence[tuple[ClientData, ClientPlan]]
    ) -> list[ClientUpdate | ClientFailure]:
        """Train every job from ``global_weights``; one result per job, in order."""
        ...

    def evaluate(
        self, weights: Weights, x: np.ndarray, y: np.ndarray, *, batch_size: int = 1024
    ) -> dict[str, float]:
        """Loss and accuracy of ``weights`` on ``(x, y)``."""
        ...
