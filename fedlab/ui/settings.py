"""``DashboardSettings``: what the dashboard's controls say, as one frozen value, and how it
is applied to a federation at a round boundary. No widgets here."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from fedlab.federated.config import FederationConfig
from fedlab.federated.strategies import STRATEGIES, Strategy, make_strategy

if TYPE_CHECKING:
    from fedlab.federated.federation import Federation

__all__ = ["DashboardSettings", "apply_settings", "build_strategy"]


@dataclass(frozen=True, slots=True)
class DashboardSettings:
    """The knobs a learner turns between rounds.

    Attributes
    ----------
    clients_per_round, local_epochs, client_lr, dropout_rate
        As in :class:`~fedlab.federated.FederationConfig`.
    deadline_s : float
        Simulated straggler deadline in seconds; 0 means no deadline.
    strategy : str
        Server strategy by name (``"fedavg"``, ``"fedavgm"``, ``"fedadam"``…).
    dp : bool
        Aggregate with DP-FedAvg (Gaussian noise on clipped client updates) and account ε.
    noise_multiplier, clip_norm
        DP-FedAvg parameters (used when ``dp`` is on).
    """

    clients_per_round: int
    local_epochs: int
    client_lr: float
    dropout_rate: float
    deadline_s: float
    strategy: str
    dp: bool = False
    noise_multiplier: float = 1.0
    clip_norm: float = 1.0

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"unknown strategy {self.strategy!r}; choose one of {sorted(STRATEGIES)}"
            )
        if not (math.isfinite(self.deadline_s) and self.deadline_s >= 0):
            raise ValueError(f"deadline_s must be >= 0 (0 = none), got {self.deadline_s!r}")
        if not (math.isfinite(self.noise_multiplier) and self.noise_multiplier > 0):
            raise ValueError(f"noise_multiplier must be > 0, got {self.noise_multiplier!r}")
        if not (math.isfinite(self.clip_norm) and self.clip_norm > 0):
            raise ValueError(f"clip_norm must be > 0, got {self.clip_norm!r}")
        # The round fields are validated by the config they become.
        self.config_changes()

    @classmethod
    def from_federation(cls, federation: Federation) -> DashboardSettings:
        """The settings that describe ``federation`` as it is configured now."""
        cfg = federation.config
        strategy = federation.strategy
        inner = getattr(strategy, "inner", None)
        noise = getattr(strategy, "noise_multiplier", None)
        name = _strategy_name(inner if noise is not None else strategy)
        return cls(
            clients_per_round=cfg.cohort_size(federation.dispatcher.num_clients),
            local_epochs=cfg.local_epochs,
            client_lr=cfg.client_lr,
            dropout_rate=cfg.dropout_rate,
            deadline_s=cfg.deadline_s or 0.0,
            strategy=name,
            dp=noise is not None,
            noise_multiplier=float(noise) if noise is not None else 1.0,
            clip_norm=float(getattr(strategy, "clip_norm", 1.0)),
        )

    def config_changes(self) -> dict[str, Any]:
        """The :class:`FederationConfig` fields these settings set."""
        changes = {
            "clients_per_round": self.clients_per_round,
            "client_fraction": None,
            "local_epochs": self.local_epochs,
            "client_lr": self.client_lr,
            "dropout_rate": self.dropout_rate,
            "deadline_s": self.deadline_s if self.deadline_s > 0 else None,
        }
        FederationConfig(**changes)  # type: ignore[arg-type]  # raises on a bad value
        return changes

    def with_changes(self, **changes: Any) -> DashboardSettings:
        """A validated copy with some fields changed."""
        return replace(self, **changes)


def _strategy_name(strategy: Any) -> str:
    for name, cls in STRATEGIES.items():
        if type(strategy) is cls:
            return name
    raise ValueError(
        f"the dashboard controls only the named strategies {sorted(STRATEGIES)}; "
        f"this federation uses {type(strategy).__name__}"
    )


def build_strategy(
    settings: DashboardSettings, *, seed: int = 0, reproducible_noise: bool = False
) -> Strategy:
    """The server strategy the settings describe (DP-FedAvg wrapping it when ``dp`` is on).

    DP noise is secret (OS entropy) unless ``reproducible_noise`` is True, when it derives
    from ``seed`` — and the privacy statement says the guarantee is void against the seed's
    holders.
    """
    inner = make_strategy(settings.strategy)
    if not settings.dp:
        return inner
    from fedlab.privacy.dp_fedavg import DPFedAvg  # imports TensorFlow: only when asked for

    dp: Strategy = DPFedAvg(
        noise_multiplier=settings.noise_multiplier,
        clip_norm=settings.clip_norm,
        expected_clients=settings.clients_per_round,
        inner=inner,
        reproducible_noise=reproducible_noise,
        seed=seed,
    )
    return dp


def _swap_seed(federation: Federation) -> tuple[int, bool]:
    """Seed and noise mode of a strategy swapped in now.

    Secret noise stays secret. Reproducible noise gets a seed of its own for this round
    boundary: the new strategy restarts its round counter, and the old seed would replay
    round 0's noise (the noise would cancel between the two releases).
    """
    current = federation.strategy
    if not getattr(current, "reproducible_noise", False):
        return federation.config.seed, False
    base = int(getattr(current, "seed", federation.config.seed))
    digest = hashlib.sha256(f"{base}:swap:{federation.rounds_done}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1, True


def apply_settings(
    federation: Federation, settings: DashboardSettings, applied: DashboardSettings | None
) -> bool:
    """Make ``federation`` run its next round with ``settings``.

    Parameters
    ----------
    federation : Federation
        Changed in place (its config, and its strategy when a strategy or DP setting
        changed).
    settings : DashboardSettings
        What the controls say now.
    applied : DashboardSettings, optional
        What was applied last (None: nothing yet; the strategy is rebuilt only if it differs
        from the federation's current one).

    Returns
    -------
    bool
        True when the strategy was replaced (its server state starts afresh).
    """
    federation.update_config(federation.config.with_changes(**settings.config_changes()))
    strategy_fields: tuple[str, ...] = ("strategy", "dp", "noise_multiplier", "clip_norm")
    if settings.dp:
        strategy_fields += ("clients_per_round",)  # DP-FedAvg's fixed denominator
    reference = applied if applied is not None else DashboardSettings.from_federation(federation)
    if all(getattr(settings, f) == getattr(reference, f) for f in strategy_fields):
        return False
    seed, reproducible = _swap_seed(federation)
    federation.set_strategy(build_strategy(settings, seed=seed, reproducible_noise=reproducible))
    return True
