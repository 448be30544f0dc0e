"""``FederationConfig``: every knob of a federation, as one frozen, dict-round-trippable object."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

__all__ = ["CLIENT_OPTIMIZERS", "FederationConfig"]

CLIENT_OPTIMIZERS = ("sgd", "momentum", "adam")


@dataclass(frozen=True, slots=True)
class FederationConfig:
    """Configuration of a federation's rounds.

    Attributes
    ----------
    clients_per_round : int, optional
        Clients selected per round. Exactly one of this and ``client_fraction`` is set.
    client_fraction : float, optional
        Share of the population selected per round, in (0, 1].
    local_epochs : int
        Local epochs per client (an epoch policy can adapt it per client).
    batch_size : int
        Client mini-batch size.
    client_lr : float
        Client learning rate.
    client_optimizer : {"sgd", "momentum", "adam"}
        Client optimizer; its state is reset at the start of every round.
    client_momentum : float
        Momentum of the ``"momentum"`` optimizer.
    dropout_rate : float
        Probability, in [0, 1), that a selected client never reports.
    deadline_s : float, optional
        Simulated seconds after which the server stops waiting (stragglers are cut off).
    over_selection : float
        Extra share of clients selected to make up for dropouts and stragglers (0.3 selects
        30 % more); the server keeps the fastest ``clients_per_round`` reports.
    seconds_per_example : float
        Simulated compute time of one example-epoch on a device of speed 1.0.
    eval_every : int
        Evaluate the global model on the test set every this many rounds (and the last).
    eval_batch_size : int
        Batch size of central evaluation.
    seed : int
        Root seed: the same seed gives the same history.
    """

    clients_per_round: int | None = 10
    client_fraction: float | None = None
    local_epochs: int = 1
    batch_size: int = 10
    client_lr: float = 0.05
    client_optimizer: str = "sgd"
    client_momentum: float = 0.9
    dropout_rate: float = 0.0
    deadline_s: float | None = None
    over_selection: float = 0.0
    seconds_per_example: float = 0.002
    eval_every: int = 1
    eval_batch_size: int = 1024
    seed: int = 0

    def __post_init__(self) -> None:
        if (self.clients_per_round is None) == (self.client_fraction is None):
            raise ValueError(
                "set exactly one of clients_per_round and client_fraction, got "
                f"clients_per_round={self.clients_per_round!r}, "
                f"client_fraction={self.client_fraction!r}"
            )
        if self.clients_per_round is not None and (
            not isinstance(self.clients_per_round, int) or self.clients_per_round < 1
        ):
            raise ValueError(
                f"clients_per_round must be an int >= 1, got {self.clients_per_round!r}"
            )
        if self.client_fraction is not None and not 0 < self.client_fraction <= 1:
            raise ValueError(f"client_fraction must be in (0, 1], got {self.client_fraction!r}")
        for name in ("local_epochs", "batch_size", "eval_every", "eval_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if not (math.isfinite(self.client_lr) and self.client_lr > 0):
            raise ValueError(f"client_lr must be a finite number > 0, got {self.client_lr!r}")
        if self.client_optimizer not in CLIENT_OPTIMIZERS:
            raise ValueError(
                f"client_optimizer must be one of {CLIENT_OPTIMIZERS}, "
                f"got {self.client_optimizer!r}"
            )
        if not 0 <= self.client_momentum < 1:
            raise ValueError(f"client_momentum must be in [0, 1), got {self.client_momentum!r}")
        if not 0 <= self.dropout_rate < 1:
            raise ValueError(f"dropout_rate must be in [0, 1), got {self.dropout_rate!r}")
        if self.deadline_s is not None and not self.deadline_s > 0:
            raise ValueError(f"deadline_s must be > 0 or None, got {self.deadline_s!r}")
        if not 0 <= self.over_selection <= 10:
            raise ValueError(f"over_selection must be in [0, 10], got {self.over_selection!r}")
        if not self.seconds_per_example >= 0:
            raise ValueError(f"seconds_per_example must be >= 0, got {self.seconds_per_example!r}")
        if not isinstance(self.seed, int):
            raise TypeError(f"seed must be an int, got {self.seed!r}")

    def cohort_size(self, population: int) -> int:
        """Clients the server wants per round in a population of ``population``."""
        if self.clients_per_round is not None:
            wanted = self.clients_per_round
        else:
            assert self.client_fraction is not None
            wanted = max(1, round(self.client_fraction * population))
        if wanted > population:
            raise ValueError(
                f"clients_per_round={wanted!r} exceeds the population of {population} clients"
            )
        return wanted

    def selection_size(self, population: int) -> int:
        """Clients actually invited: the cohort plus over-selection, capped by the population."""
        return min(population, math.ceil(self.cohort_size(population) * (1 + self.over_selection)))

    def with_changes(self, **changes: Any) -> FederationConfig:
        """A validated copy with some fields changed."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (JSON and papermill friendly)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FederationConfig:
        """Rebuild from :meth:`to_dict` output; unknown keys are an error."""
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown FederationConfig fields: {sorted(unknown)}")
        return cls(**data)
