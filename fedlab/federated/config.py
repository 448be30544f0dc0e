"""``FederationConfig``: every knob of a federation, as one frozen, dict-round-trippable object."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from fedlab.federated.types import CLIENT_OPTIMIZERS, is_int, is_real

__all__ = ["CLIENT_OPTIMIZERS", "FederationConfig"]


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
        # Every field is checked for its type and its range, and every error is a
        # ValueError that names the field and quotes the value (papermill parameters and
        # JSON arrive untyped: "0.05", True and inf must not slip through).
        def fail(name: str, wanted: str) -> None:
            raise ValueError(f"{name} must be {wanted}, got {getattr(self, name)!r}")

        def number(name: str) -> float:
            value = getattr(self, name)
            if not is_real(value) or not math.isfinite(value):
                fail(name, "a finite number")
            return float(value)

        if (self.clients_per_round is None) == (self.client_fraction is None):
            raise ValueError(
                "set exactly one of clients_per_round and client_fraction, got "
                f"clients_per_round={self.clients_per_round!r}, "
                f"client_fraction={self.client_fraction!r}"
            )
        if self.clients_per_round is not None and (
            not is_int(self.clients_per_round) or self.clients_per_round < 1
        ):
            fail("clients_per_round", "an int >= 1")
        if self.client_fraction is not None and not 0 < number("client_fraction") <= 1:
            fail("client_fraction", "in (0, 1]")
        for name in ("local_epochs", "batch_size", "eval_every", "eval_batch_size"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                fail(name, "an int >= 1")
        if not number("client_lr") > 0:
            fail("client_lr", "a finite number > 0")
        if not isinstance(self.client_optimizer, str) or (
            self.client_optimizer not in CLIENT_OPTIMIZERS
        ):
            fail("client_optimizer", f"one of {CLIENT_OPTIMIZERS}")
        if not 0 <= number("client_momentum") < 1:
            fail("client_momentum", "in [0, 1)")
        if not 0 <= number("dropout_rate") < 1:
            fail("dropout_rate", "in [0, 1)")
        if self.deadline_s is not None and not number("deadline_s") > 0:
            fail("deadline_s", "a finite number > 0 or None")
        if not 0 <= number("over_selection") <= 10:
            fail("over_selection", "in [0, 10]")
        if not number("seconds_per_example") >= 0:
            fail("seconds_per_example", "a finite number >= 0")
        if not is_int(self.seed) or self.seed < 0:
            fail("seed", "an int >= 0")

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
        if not isinstance(data, dict):
            raise ValueError(f"FederationConfig data must be a dict, got {data!r}")
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown FederationConfig fields: {sorted(unknown)}")
        return cls(**data)
