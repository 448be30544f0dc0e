"""Client selection: samplers, device profiles, and the timing model behind stragglers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from fedlab.federated.scheduling import Availability

__all__ = [
    "AdaptiveEpochs",
    "ClientProfile",
    "EpochPolicy",
    "FixedEpochs",
    "PoissonSampler",
    "Sampler",
    "UniformSampler",
    "WeightedSampler",
    "sample_profiles",
    "simulated_duration",
]


class Sampler(Protocol):
    """Chooses which candidates take part in a round."""

    def select(
        self, candidates: np.ndarray, count: int, rng: np.random.Generator, round_index: int
    ) -> np.ndarray:
        """``count`` distinct ids drawn from ``candidates`` (``count <= len(candidates)``)."""
        ...


@dataclass(frozen=True, slots=True)
class UniformSampler:
    """Every candidate equally likely, without replacement."""

    def select(
        self, candidates: np.ndarray, count: int, rng: np.random.Generator, round_index: int
    ) -> np.ndarray:
        """Uniform draw without replacement."""
        return np.sort(rng.choice(candidates, size=count, replace=False))


@dataclass(frozen=True, slots=True)
class WeightedSampler:
    """Resource-aware selection: client *i* drawn with probability ∝ ``weights[i]``
    (battery level, speed, recency…), without replacement.

    Weights must be positive for every client so that nobody is starved forever, which
    would bias the model towards well-resourced devices.
    """

    weights: tuple[float, ...]

    def __post_init__(self) -> None:
        w = np.asarray(self.weights, dtype=np.float64)
        if w.ndim != 1 or len(w) == 0 or not np.all(np.isfinite(w)) or (w <= 0).any():
            raise ValueError(
                f"weights must be finite and > 0 for every client, got {self.weights!r}"
            )

    def select(
        self, candidates: np.ndarray, count: int, rng: np.random.Generator, round_index: int
    ) -> np.ndarray:
        """Weighted draw without replacement."""
        if candidates.max(initial=-1) >= len(self.weights):
            raise ValueError(
                f"candidate id {int(candidates.max())} has no weight ({len(self.weights)} weights)"
            )
        p = np.asarray(self.weights, dtype=np.float64)[candidates]
        return np.sort(rng.choice(candidates, size=count, replace=False, p=p / p.sum()))


@dataclass(frozen=True, slots=True)
class PoissonSampler:
    """Every candidate joins independently with probability ``q``: the cohort size varies
    (mean q·N). This is the sampling that DP accounting with Poisson subsampling assumes;
    ``count`` is ignored."""

    q: float

    def __post_init__(self) -> None:
        if not 0 < self.q <= 1:
            raise ValueError(f"q must be in (0, 1], got {self.q!r}")

    def select(
        self, candidates: np.ndarray, count: int, rng: np.random.Generator, round_index: int
    ) -> np.ndarray:
        """Independent coin flips."""
        return np.sort(candidates[rng.random(len(candidates)) < self.q])


@dataclass(frozen=True, slots=True)
class ClientProfile:
    """A device's speed: relative compute speed (1.0 = reference device) and link rates;
    optionally its daily :class:`~fedlab.federated.scheduling.Availability` (charging,
    Wi-Fi, battery) for upload scheduling (``None``: always available)."""

    compute_speed: float = 1.0
    uplink_bps: float = 1e6
    downlink_bps: float = 4e6
    availability: Availability | None = None

    def __post_init__(self) -> None:
        for name in ("compute_speed", "uplink_bps", "downlink_bps"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be finite and > 0, got {value!r}")
        if self.availability is not None and not isinstance(self.availability, Availability):
            raise TypeError(
                f"availability must be an Availability or None, got {self.availability!r}"
            )


def sample_profiles(
    num_clients: int, *, heterogeneity: float = 0.0, seed: int = 0
) -> tuple[ClientProfile, ...]:
    """Device profiles with log-normal spread ``heterogeneity`` (0 = identical devices).

    With ``heterogeneity=1`` the slowest of 100 devices is roughly 10× slower than the median,
    the kind of spread between a Pi Zero 2 W and a Pi 5.
    """
    if not heterogeneity >= 0:
        raise ValueError(f"heterogeneity must be >= 0, got {heterogeneity!r}")
    rng = np.random.default_rng([seed, 0xD0])
    speed = rng.lognormal(0.0, heterogeneity, size=num_clients)
    link = rng.lognormal(0.0, heterogeneity, size=num_clients)
    return tuple(
        ClientProfile(float(s), float(1e6 * k), float(4e6 * k))
        for s, k in zip(speed, link, strict=True)
    )


def simulated_duration(
    profile: ClientProfile,
    *,
    examples_processed: int,
    seconds_per_example: float,
    bytes_down: int,
    bytes_up: int,
) -> float:
    """Seconds a device needs: download, ``examples_processed`` example-steps, upload."""
    compute = examples_processed * seconds_per_example / profile.compute_speed
    return compute + 8 * bytes_down / profile.downlink_bps + 8 * bytes_up / profile.uplink_bps


class EpochPolicy(Protocol):
    """Decides a client's local epochs for a round (adaptive epochs)."""

    def epochs(
        self, client_id: int, num_examples: int, profile: ClientProfile, default: int
    ) -> int:
        """Local epochs (>= 1)."""
        ...


@dataclass(frozen=True, slots=True)
class FixedEpochs:
    """Every client runs the configured number of epochs."""

    def epochs(
        self, client_id: int, num_examples: int, profile: ClientProfile, default: int
    ) -> int:
        """``default``."""
        return default


@dataclass(frozen=True, slots=True)
class AdaptiveEpochs:
    """Clients with more compute run more epochs: as many as fit in ``budget_s`` of
    simulated compute, between ``min_epochs`` and ``max_epochs``."""

    budget_s: float
    seconds_per_example: float = 0.002
    min_epochs: int = 1
    max_epochs: int = 5

    def __post_init__(self) -> None:
        if not self.budget_s > 0:
            raise ValueError(f"budget_s must be > 0, got {self.budget_s!r}")
        if not 1 <= self.min_epochs <= self.max_epochs:
            raise ValueError(
                f"need 1 <= min_epochs <= max_epochs, got {self.min_epochs!r}, {self.max_epochs!r}"
            )

    def epochs(
        self, client_id: int, num_examples: int, profile: ClientProfile, default: int
    ) -> int:
        """Epochs that fit the budget on this device."""
        per_epoch = num_examples * self.seconds_per_example / profile.compute_speed
        fit = int(self.budget_s // per_epoch) if per_epoch > 0 else self.max_epochs
        return max(self.min_epochs, min(self.max_epochs, fit))


def _check_profiles(profiles: Sequence[ClientProfile], population: int) -> None:
    if len(profiles) != population:
        raise ValueError(f"{len(profiles)} profiles for {population} clients")
