"""``PrivacyTracker``: a federation's ledger, kept by observing it, and its budget guard."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fedlab.federated.observers import Observer
from fedlab.privacy.accounting import Accountant, PrivacyLedger, Sampling

if TYPE_CHECKING:
    from fedlab.federated.federation import Federation
    from fedlab.federated.types import RoundResult

__all__ = ["BudgetExceeded", "PrivacyTracker", "check_clients_clip"]


class BudgetExceeded(RuntimeError):
    """The next round would spend more privacy than the budget allows."""


def _dp_parameters(federation: Federation) -> tuple[float, Any]:
    strategy = federation.strategy
    z = getattr(strategy, "noise_multiplier", None)
    if z is None or not callable(getattr(strategy, "mechanism_event", None)):
        raise TypeError(
            f"the federation's strategy {type(strategy).__name__} adds no DP noise; wrap it in "
            "fedlab.privacy.DPFedAvg to account for privacy"
        )
    return float(z), strategy.mechanism_event()  # type: ignore[attr-defined]


def _check_client_clipping(federation: Federation) -> None:
    """Under secure aggregation the server never sees an update to clip: the accounting
    holds only if every client clips to at most the strategy's C before it masks."""
    clip = getattr(federation.strategy, "clip_norm", None)
    if getattr(federation.strategy, "adaptive", False) or clip is None:
        raise ValueError(
            "with secure aggregation the DP strategy must use a fixed clip_norm (adaptive "
            "clipping needs each client's clipped bit, which the sum hides)"
        )
    check_clients_clip(federation, float(clip))


def check_clients_clip(federation: Federation, clip: float) -> None:
    """Raise unless every client of ``federation`` clips its update to L2 norm ``<= clip``
    as the last change before it masks (engine client stages, or devices told to).

    Raises
    ------
    ValueError
        Saying what clips too loosely, too early, or not at all.
    """
    from fedlab.federated.authenticate import SignUpdate
    from fedlab.federated.stages import ClipUpdate

    dispatcher = federation.dispatcher
    if hasattr(dispatcher, "client_clip_norm"):
        # A fleet of devices: they clip (the task's plan carries the bound); the engine's
        # client stages do not run there.
        device_clip = getattr(dispatcher, "client_clip_norm", None)
        if device_clip is None or device_clip > clip:
            raise ValueError(
                "with secure aggregation on a fleet the devices must clip: give the "
                f"dispatcher clip_norm <= {clip:g} (it has {device_clip!r}), so that the "
                "sensitivity the accounting assumes holds"
            )
        return
    if getattr(federation.dispatcher, "pipeline", None) is not federation.pipeline:
        raise ValueError(
            f"with secure aggregation the clients must clip, but this dispatcher "
            f"({type(federation.dispatcher).__name__}) does not run the pipeline's client "
            "stages: the accounted sensitivity would not be enforced"
        )
    stages = list(federation.pipeline.client)
    # The last stage that may change the tensors must be the clip: a codec after it
    # (error feedback adds a residual, quantisation rounds) can raise the norm above C.
    changing = [s for s in stages if not isinstance(s, SignUpdate)]
    last = changing[-1] if changing else None
    if not isinstance(last, ClipUpdate) or last.clip_norm > clip:
        raise ValueError(
            "with secure aggregation the server cannot clip: the pipeline's last client "
            f"stage that changes the update must be ClipUpdate(clip_norm <= {clip:g}) so "
            "that the sensitivity the accounting assumes holds (client stages now: "
            f"{[s.name for s in stages]})"
        )


def _trust_model(federation: Federation) -> str:
    holds = callable(getattr(federation.dispatcher, "secure_clients", None))
    if federation.secure_aggregation is not None and holds:
        return (
            "trust model: each device clips its own update and keeps it; only masked "
            "vectors leave the device (secure aggregation); the server unmasks only the sum "
            "of the clipped updates and is trusted to add the noise to it (it sees that "
            "un-noised sum, never an individual update)."
        )
    if federation.secure_aggregation is not None:
        return (
            "trust model: each client clips its own update before secure aggregation; the "
            "server only ever unmasks the sum of the clipped updates and is trusted to add "
            "the noise to it (it sees that un-noised sum, never an individual update)."
        )
    return (
        "trust model: the server sees every client's update and is trusted to clip each "
        "one, add the noise and release only the noised aggregate (central DP)."
    )


def _dp_rounds(federation: Federation) -> int:
    """Rounds the federation's current DP strategy has aggregated (its state's counter)."""
    state = federation._strategy_state  # the tracker reads, never writes, the server state
    counter = state.get("dp.round")
    return int(counter[0]) if counter is not None else 0


@dataclass
class PrivacyTracker(Observer):
    """Records one client-level event per aggregated round and enforces a budget.

    Parameters
    ----------
    population : int
        Devices that can be sampled.
    delta : float
        Target δ.
    sampling : {"fixed", "poisson"}
        ``"fixed"`` matches the Federation's sampler (a fixed cohort without replacement,
        RDP accountant); ``"poisson"`` accounts the cohort as Poisson sampling with
        q = cohort/population (RDP and PLD), the assumption of most published DP-FedAvg results.
    budget_epsilon : float, optional
        Refuse any round after which ε would exceed this.
    accountant : {"rdp", "pld"}, optional
        Accountant of the budget (default: PLD when valid, else RDP).
    """

    population: int
    delta: float
    sampling: Sampling = "fixed"
    budget_epsilon: float | None = None
    accountant: Accountant | None = None
    ledger: PrivacyLedger = field(init=False)
    epsilons: list[tuple[int, float]] = field(default_factory=list, init=False)
    notes: tuple[str, ...] = field(default=(), init=False)

    def __post_init__(self) -> None:
        self.ledger = PrivacyLedger(self.population, self.delta, self.sampling)
        if self.budget_epsilon is not None and not (
            math.isfinite(self.budget_epsilon) and self.budget_epsilon > 0
        ):
            raise ValueError(f"budget_epsilon must be > 0, got {self.budget_epsilon!r}")
        if self.accountant is not None and self.accountant not in self.ledger.accountants:
            raise ValueError(
                f"accountant {self.accountant!r} is not valid for sampling {self.sampling!r}; "
                f"use one of {self.ledger.accountants}"
            )

    @property
    def budget_accountant(self) -> Accountant:
        """Accountant used for the budget and the reported ε."""
        return self.accountant or self.ledger.accountants[-1]

    def check(self, federation: Federation) -> None:
        """Raise unless the accounting models how ``federation`` will run its next round.

        The accounting assumes: a DP strategy adds the noise; every device is in the round
        with the same probability (``UniformSampler`` for a fixed cohort, ``PoissonSampler``
        with its exact q for Poisson); the server keeps every report it invites (no
        over-selection, which keeps the fastest devices and so raises their inclusion
        probability above the one accounted).

        Raises
        ------
        TypeError
            The strategy adds no DP noise.
        ValueError
            The population, sampler or over-selection differs from what is accounted.
        """
        from fedlab.federated.selection import PoissonSampler, UniformSampler

        if federation.population != self.population:
            raise ValueError(
                f"tracker population {self.population} != federation population "
                f"{federation.population}"
            )
        _dp_parameters(federation)
        sampler = federation.sampler
        expected = PoissonSampler if self.sampling == "poisson" else UniformSampler
        if type(sampler) is not expected:
            raise ValueError(
                f"accounting assumes {self.sampling!r} sampling but the federation uses "
                f"{type(sampler).__name__}; use PoissonSampler with sampling='poisson', "
                "or UniformSampler (a uniform fixed cohort) with sampling='fixed' — a weighted "
                "or otherwise non-uniform sampler is not modelled by the accounting"
            )
        over = federation.config.over_selection
        if over > 0:
            raise ValueError(
                f"over_selection={over!r} keeps the fastest reports, so fast devices are in "
                "more rounds than the accounted sampling probability; set over_selection=0 "
                "for a private federation"
            )
        if federation.secure_aggregation is not None:
            _check_client_clipping(federation)

    def attach(self, federation: Federation) -> PrivacyTracker:
        """Subscribe to ``federation`` (as observer and guard), replaying its history.

        Raises
        ------
        ValueError
            When the federation already released rounds that its current DP strategy did not
            aggregate (non-private rounds, or rounds of a strategy swapped out since): their
            privacy cannot be accounted (ε = ∞), so nothing is attached.
        """
        self.check(federation)
        released = [r for r in federation.history if r.completed]
        noised = _dp_rounds(federation)
        if len(released) != noised:
            raise ValueError(
                f"the federation released {len(released)} round(s) but its DP strategy "
                f"aggregated {noised}: earlier rounds had other (or no) noise and cannot be "
                "accounted (ε = ∞); attach the tracker before the first round, or reset()"
            )
        for result in released:
            self._record(federation, result)
        federation.add_observer(self)
        federation.add_guard(self)
        return self

    def _record(self, federation: Federation, result: RoundResult) -> None:
        if not result.completed:
            return  # nothing aggregated, nothing released
        z, mechanism = _dp_parameters(federation)
        cohort, q = self._cohort(federation)
        self.ledger.record_round(noise_multiplier=z, cohort=cohort, mechanism=mechanism, q=q)
        describe = getattr(federation.strategy, "describe", None)
        if callable(describe):
            self.notes = (*describe(), _trust_model(federation))
        self.epsilons.append((result.round_index, self.ledger.epsilon("rdp")))

    def _cohort(self, federation: Federation) -> tuple[int, float | None]:
        """The cohort (expected cohort for Poisson) and, for Poisson, the sampler's exact q."""
        if self.sampling == "poisson":
            q = float(federation.sampler.q)  # type: ignore[attr-defined]
            return min(self.population, max(1, round(q * self.population))), q
        return federation.config.cohort_size(self.population), None

    def before_round(self, federation: Federation, round_index: int) -> None:
        """Refuse the round if the accounting does not model it or it would exceed the budget."""
        self.check(federation)
        if self.budget_epsilon is None:
            return
        z, mechanism = _dp_parameters(federation)
        cohort, q = self._cohort(federation)
        # RDP upper-bounds PLD: when it is within budget there is no need for the slower PLD.
        rdp_next = self.ledger.epsilon_after_next(
            noise_multiplier=z, cohort=cohort, mechanism=mechanism, accountant="rdp", q=q
        )
        if rdp_next <= self.budget_epsilon:
            return
        spent = self.ledger.epsilon(self.budget_accountant)
        nxt = rdp_next
        if self.budget_accountant != "rdp":
            nxt = self.ledger.epsilon_after_next(
                noise_multiplier=z,
                cohort=cohort,
                mechanism=mechanism,
                accountant=self.budget_accountant,
                q=q,
            )
        if nxt > self.budget_epsilon:
            raise BudgetExceeded(
                f"round {round_index + 1} refused: it would raise ε from {spent:.4g} to {nxt:.4g}, "
                f"over the budget ε = {self.budget_epsilon:g} (δ = {self.delta:.3g}, "
                f"{self.budget_accountant.upper()} accountant, {self.ledger.rounds} rounds spent)"
            )

    def on_round_end(self, federation: Federation, result: RoundResult) -> None:
        """Record the round's event."""
        self._record(federation, result)

    def privacy_statement(self) -> str:
        """The ledger's statement, with the mechanism's details (clip norm, denominator,
        noise source) as the strategy describes them."""
        return self.ledger.privacy_statement(mechanism_notes=self.notes)
