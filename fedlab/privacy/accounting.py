"""Client-level privacy accounting on dp-accounting: a ledger of DP events, statements
that spell out their assumptions, and calibration.

Every federated round with DP-FedAvg is one *client-level* Gaussian mechanism applied to a
sampled cohort. Two sampling models are supported:

* ``"poisson"`` — each device joins a round independently with probability q (add/remove
  one device adjacency); accounted as ``PoissonSampledDpEvent(q, GaussianDpEvent(z))`` with
  both the RDP and the (tighter) PLD accountant;
* ``"fixed"`` — a cohort of exactly k of N devices drawn without replacement, which is what
  :class:`~fedlab.federated.Federation` does (replace-one adjacency); accounted as
  ``SampledWithoutReplacementDpEvent(N, k, GaussianDpEvent(z / 2))`` with the RDP accountant
  (dp-accounting's PLD accountant does not support this event).

Why z / 2 under replace-one: replacing one device's clipped update u (‖u‖ ≤ C) by another
one v moves the clipped sum by u − v, whose norm reaches 2C. dp-accounting's Gaussian
event takes the noise standard deviation over the sensitivity *under the chosen neighbouring
relation*, so noise z·C on a sensitivity of 2C is a Gaussian of multiplier z/2. (Under
add/remove the sensitivity is C and the multiplier is z.) The same holds for every Gaussian
of a composed mechanism (adaptive clipping's noised count of ±½ records moves by 1 under
replace-one).

A mechanism made of several Gaussians that all see the same sampled cohort (adaptive
clipping: the noised sum and the noised count) is one Gaussian mechanism on the concatenated
output, of multiplier ``(Σ z_i⁻²)^-½``. It is accounted that way, which both PLD and RDP
support, and which is tighter than composing the sampled Gaussians one by one.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import dp_accounting
from dp_accounting import pld, rdp

__all__ = [
    "Accountant",
    "PrivacyLedger",
    "Sampling",
    "effective_noise_multiplier",
    "epsilon_for",
    "max_rounds_for",
    "noise_multiplier_for",
    "round_event",
]

Sampling = Literal["poisson", "fixed"]
Accountant = Literal["rdp", "pld"]


def _check_delta(delta: float) -> None:
    if not (isinstance(delta, int | float) and 0 < delta < 1):
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")


def _check_common(population: int, cohort: int, noise_multiplier: float) -> None:
    if not isinstance(population, int) or population < 1:
        raise ValueError(f"population must be an int >= 1, got {population!r}")
    if not isinstance(cohort, int) or not 1 <= cohort <= population:
        raise ValueError(f"cohort must be an int in [1, population={population}], got {cohort!r}")
    if not (math.isfinite(noise_multiplier) and noise_multiplier >= 0):
        raise ValueError(f"noise multiplier z must be >= 0, got {noise_multiplier!r}")


def effective_noise_multiplier(mechanism: dp_accounting.DpEvent) -> float:
    """The multiplier of the single Gaussian equivalent to ``mechanism``.

    ``mechanism`` is a Gaussian event, or a composition (``ComposedDpEvent``,
    ``SelfComposedDpEvent``) of Gaussians that all see the same records, as
    tensorflow-privacy's queries report them (stddev over the add/remove sensitivity).
    Composing Gaussians of multipliers z_i on one sample is a Gaussian of multiplier
    ``(Σ z_i⁻²)^-½`` on the concatenated output (0 if any z_i is 0).

    Raises
    ------
    ValueError
        For any other event: it cannot be accounted as a sampled Gaussian.
    """
    inverse_square = _inverse_square(mechanism)
    if inverse_square == 0:
        raise ValueError(f"{mechanism!r} contains no Gaussian: nothing to account")
    return 0.0 if math.isinf(inverse_square) else 1.0 / math.sqrt(inverse_square)


def _inverse_square(event: dp_accounting.DpEvent) -> float:
    if isinstance(event, dp_accounting.GaussianDpEvent):
        z = float(event.noise_multiplier)
        if not (z >= 0 and not math.isnan(z)):
            raise ValueError(f"Gaussian noise multiplier must be >= 0, got {z!r}")
        return math.inf if z == 0 else z**-2
    if isinstance(event, dp_accounting.ComposedDpEvent):
        return sum(_inverse_square(e) for e in event.events)
    if isinstance(event, dp_accounting.SelfComposedDpEvent):
        return event.count * _inverse_square(event.event)
    raise ValueError(
        f"cannot account {event!r} as a sampled Gaussian: the mechanism must be a Gaussian "
        "event or a composition of Gaussian events"
    )


def _check_q(q: float) -> None:
    if not (isinstance(q, int | float) and not isinstance(q, bool) and 0 < q <= 1):
        raise ValueError(f"sampling probability q must be in (0, 1], got {q!r}")


def round_event(
    *,
    noise_multiplier: float,
    population: int,
    cohort: int,
    sampling: Sampling = "poisson",
    mechanism: dp_accounting.DpEvent | None = None,
    q: float | None = None,
) -> dp_accounting.DpEvent:
    """The DP event of one DP-FedAvg round: a sampled Gaussian mechanism.

    Parameters
    ----------
    noise_multiplier : float
        z: noise standard deviation over the clipping norm C (>= 0; 0 means no privacy).
    population, cohort : int
        Devices in the fleet and (expected) devices per round; q = cohort / population.
    sampling : {"poisson", "fixed"}
        The sampling model (see the module docstring). Under ``"fixed"`` (replace-one) the
        Gaussian's multiplier is halved: the clipped sum's sensitivity is 2C.
    mechanism : DpEvent, optional
        The unsampled mechanism when it is not a plain Gaussian of multiplier z (adaptive
        clipping adds a noised count: pass ``DPFedAvg.mechanism_event()``); it is accounted
        as one Gaussian of its :func:`effective_noise_multiplier`.
    q : float, optional
        Poisson sampling probability when it is not exactly ``cohort / population`` (the
        sampler's own q; the accounting must not round it to a whole cohort).
    """
    _check_common(population, cohort, noise_multiplier)
    z = float(noise_multiplier)
    if mechanism is not None:
        z = effective_noise_multiplier(mechanism)
    if sampling == "poisson":
        if q is None:
            q = cohort / population
        _check_q(q)
        return dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z))
    if sampling == "fixed":
        if q is not None and q != cohort / population:
            raise ValueError(
                f"a fixed cohort of {cohort} of {population} has q = cohort/population, got q={q!r}"
            )
        # Replace-one adjacency: sensitivity 2C, so the multiplier is (z·C) / (2C) = z/2.
        return dp_accounting.SampledWithoutReplacementDpEvent(
            population, cohort, dp_accounting.GaussianDpEvent(z / 2)
        )
    raise ValueError(f"sampling must be 'poisson' or 'fixed', got {sampling!r}")


def _accountant(kind: Accountant, sampling: Sampling) -> dp_accounting.PrivacyAccountant:
    if kind == "rdp":
        relation = (
            dp_accounting.NeighboringRelation.REPLACE_ONE
            if sampling == "fixed"
            else dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE
        )
        return rdp.RdpAccountant(neighboring_relation=relation)
    if kind == "pld":
        if sampling == "fixed":
            raise ValueError(
                "dp-accounting's PLD accountant does not support sampling without replacement; "
                "use accountant='rdp' for sampling='fixed' (or account as 'poisson')"
            )
        # A 1e-3 grid is 10x faster than the default 1e-4 and moves ε by ~1e-5 here; the
        # discretization stays pessimistic, so ε remains an upper bound.
        return pld.PLDAccountant(value_discretization_interval=1e-3)
    raise ValueError(f"accountant must be 'rdp' or 'pld', got {kind!r}")


def epsilon_for(
    *,
    noise_multiplier: float,
    population: int,
    cohort: int,
    rounds: int,
    delta: float,
    sampling: Sampling = "poisson",
    accountant: Accountant = "pld",
) -> float:
    """ε after ``rounds`` identical rounds (``inf`` when z = 0)."""
    _check_delta(delta)
    if not isinstance(rounds, int) or rounds < 0:
        raise ValueError(f"rounds must be an int >= 0, got {rounds!r}")
    event = round_event(
        noise_multiplier=noise_multiplier, population=population, cohort=cohort, sampling=sampling
    )
    if rounds == 0:
        return 0.0
    if noise_multiplier == 0:
        return math.inf
    acc = _accountant(accountant, sampling)
    acc.compose(event, rounds)
    return float(acc.get_epsilon(delta))


def _fleet_epsilon(
    population: int, cohort: int, delta: float, sampling: Sampling, accountant: Accountant
) -> Callable[..., float]:
    """:func:`epsilon_for` with the fleet fixed; call with ``noise_multiplier`` and ``rounds``."""
    return functools.partial(
        epsilon_for,
        population=population,
        cohort=cohort,
        delta=delta,
        sampling=sampling,
        accountant=accountant,
    )


def noise_multiplier_for(
    *,
    target_epsilon: float,
    delta: float,
    rounds: int,
    population: int,
    cohort: int,
    sampling: Sampling = "poisson",
    accountant: Accountant = "pld",
    rtol: float = 0.005,
) -> float:
    """Smallest noise multiplier z whose ε after ``rounds`` is at most ``target_epsilon``.

    Uses dp-accounting's ``calibrate_dp_mechanism`` (bisection; ε decreases monotonically in
    z). The result's ε lies in ``[target·(1 − 2·rtol), target]``.
    """
    if not (math.isfinite(target_epsilon) and target_epsilon > 0):
        raise ValueError(f"target epsilon must be > 0, got {target_epsilon!r}")
    _check_delta(delta)
    if not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be an int >= 1, got {rounds!r}")
    _check_common(population, cohort, 1.0)

    fleet = _fleet_epsilon(population, cohort, delta, sampling, accountant)

    def eps(z: float) -> float:
        return fleet(noise_multiplier=z, rounds=rounds)

    upper = 1.0
    while eps(upper) > target_epsilon:
        upper *= 2
        if upper > 1e4:
            raise ValueError(f"no noise multiplier <= 1e4 reaches ε = {target_epsilon!r}")
    lower = upper / 2
    while lower > 1e-3 and eps(lower) <= target_epsilon:
        upper, lower = lower, lower / 2

    def make_event(z: float) -> dp_accounting.DpEvent:
        event = round_event(
            noise_multiplier=z, population=population, cohort=cohort, sampling=sampling
        )
        return dp_accounting.SelfComposedDpEvent(event, rounds)

    z = dp_accounting.calibrate_dp_mechanism(
        lambda: _accountant(accountant, sampling),
        make_event,
        target_epsilon,
        delta,
        dp_accounting.ExplicitBracketInterval(lower, upper),
        tol=1e-4 * lower,
    )
    achieved = eps(z)
    if not target_epsilon * (1 - 2 * rtol) <= achieved <= target_epsilon * (1 + 1e-9):
        raise RuntimeError(
            f"calibration missed: z = {z:.6g} gives ε = {achieved:.6g} "
            f"for target {target_epsilon:g}"
        )
    return float(z)


def max_rounds_for(
    *,
    epsilon: float,
    delta: float,
    noise_multiplier: float,
    population: int,
    cohort: int,
    sampling: Sampling = "poisson",
    accountant: Accountant = "pld",
    limit: int = 100_000,
) -> int:
    """Most rounds whose ε stays within ``epsilon`` (0 if even one round exceeds it)."""
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise ValueError(f"epsilon must be > 0, got {epsilon!r}")

    fleet = _fleet_epsilon(population, cohort, delta, sampling, accountant)

    def eps(rounds: int) -> float:
        return fleet(noise_multiplier=noise_multiplier, rounds=rounds)

    if eps(1) > epsilon:
        return 0
    low, high = 1, 2
    while high <= limit and eps(high) <= epsilon:
        low, high = high, high * 2
    if high > limit:
        return limit if eps(limit) <= epsilon else _bisect(eps, low, limit, epsilon)
    return _bisect(eps, low, high, epsilon)


def _bisect(eps: Callable[[int], float], low: int, high: int, epsilon: float) -> int:
    """Largest r in [low, high) with eps(r) <= epsilon, given eps(low) <= epsilon < eps(high)."""
    while high - low > 1:
        mid = (low + high) // 2
        if eps(mid) <= epsilon:
            low = mid
        else:
            high = mid
    return low


@dataclass
class _Entry:
    noise_multiplier: float
    cohort: int
    count: int
    mechanism: dp_accounting.DpEvent | None = None
    q: float | None = None

    @property
    def key(self) -> tuple[float, int, dp_accounting.DpEvent | None, float | None]:
        return (self.noise_multiplier, self.cohort, self.mechanism, self.q)

    @property
    def effective_z(self) -> float:
        if self.mechanism is None:
            return self.noise_multiplier
        return effective_noise_multiplier(self.mechanism)


@dataclass
class PrivacyLedger:
    """The privacy spent by a federation, round by round.

    Parameters
    ----------
    population : int
        Devices that could be sampled.
    delta : float
        Target δ (commonly < 1/population, e.g. population^-1.1).
    sampling : {"poisson", "fixed"}
        Sampling model of the accounting (see the module docstring).
    """

    population: int
    delta: float
    sampling: Sampling = "poisson"
    entries: list[_Entry] = field(default_factory=list)

    def __post_init__(self) -> None:
        _check_delta(self.delta)
        if not isinstance(self.population, int) or self.population < 1:
            raise ValueError(f"population must be an int >= 1, got {self.population!r}")
        if self.sampling not in ("poisson", "fixed"):
            raise ValueError(f"sampling must be 'poisson' or 'fixed', got {self.sampling!r}")

    @property
    def rounds(self) -> int:
        """Rounds recorded."""
        return sum(e.count for e in self.entries)

    @property
    def accountants(self) -> tuple[Accountant, ...]:
        """Accountants valid for this sampling model."""
        return ("rdp", "pld") if self.sampling == "poisson" else ("rdp",)

    def record_round(
        self,
        *,
        noise_multiplier: float,
        cohort: int,
        mechanism: dp_accounting.DpEvent | None = None,
        q: float | None = None,
    ) -> None:
        """Add one round (identical consecutive rounds are kept as one self-composed event).

        ``q`` is the Poisson sampling probability when it is not ``cohort / population``.
        """
        entry = self._entry(noise_multiplier, cohort, mechanism, q)  # validates
        last = self.entries[-1] if self.entries else None
        if last is not None and last.key == entry.key:
            last.count += 1
        else:
            self.entries.append(entry)

    def _entry(
        self,
        noise_multiplier: float,
        cohort: int,
        mechanism: dp_accounting.DpEvent | None,
        q: float | None,
    ) -> _Entry:
        entry = _Entry(
            float(noise_multiplier), cohort, 1, mechanism, None if q is None else float(q)
        )
        self._event(entry)  # raises on a bad value before anything is recorded
        return entry

    def _epsilon(self, entries: Sequence[_Entry], accountant: Accountant) -> float:
        if not entries:
            return 0.0
        if any(e.effective_z == 0 for e in entries):
            return math.inf
        acc = _accountant(accountant, self.sampling)
        for e in entries:
            acc.compose(self._event(e), e.count)
        return float(acc.get_epsilon(self.delta))

    def _event(self, e: _Entry) -> dp_accounting.DpEvent:
        return round_event(
            noise_multiplier=e.noise_multiplier,
            population=self.population,
            cohort=e.cohort,
            sampling=self.sampling,
            mechanism=e.mechanism,
            q=e.q,
        )

    def epsilon(self, accountant: Accountant | None = None) -> float:
        """ε spent so far at this ledger's δ (PLD when available, else RDP)."""
        return self._epsilon(self.entries, accountant or self.accountants[-1])

    def epsilon_after_next(
        self,
        *,
        noise_multiplier: float,
        cohort: int,
        mechanism: dp_accounting.DpEvent | None = None,
        accountant: Accountant | None = None,
        q: float | None = None,
    ) -> float:
        """ε if one more round with these parameters were run."""
        extra = [*self.entries, self._entry(noise_multiplier, cohort, mechanism, q)]
        return self._epsilon(extra, accountant or self.accountants[-1])

    def events(self) -> dp_accounting.DpEvent:
        """Everything recorded as one composed dp-accounting event."""
        return dp_accounting.ComposedDpEvent(
            [dp_accounting.SelfComposedDpEvent(self._event(e), e.count) for e in self.entries]
        )

    def privacy_statement(self, mechanism_notes: Sequence[str] = ()) -> str:
        """ε with every assumption it rests on; never a bare number.

        Parameters
        ----------
        mechanism_notes : sequence of str
            Lines describing the mechanism (clip norm, denominator, noise source), as
            ``DPFedAvg.describe()`` gives them.
        """
        lines = ["Client-level DP-FedAvg privacy statement", ""]
        if not self.entries:
            lines.append("No rounds recorded: nothing has been released.")
            return "\n".join(lines)
        lines += [
            "Adjacency: client-level — two fleets differ in ALL data of one device "
            + (
                "(one device added or removed; the clipped sum moves by at most C)."
                if self.sampling == "poisson"
                else "(one device replaced by another; the clipped sum moves by at most 2C, "
                "so each Gaussian is accounted with multiplier z/2)."
            ),
            f"Population: {self.population} devices; δ = {self.delta:.3g}.",
        ]
        for e in self.entries:
            if self.sampling == "poisson" and e.q is not None:
                how = (
                    f"Poisson sampling, q = {e.q:.6g} (expected cohort {e.q * self.population:.4g})"
                )
            elif self.sampling == "poisson":
                q = e.cohort / self.population
                how = f"Poisson sampling, q = {e.cohort}/{self.population} = {q:.4g}"
            else:
                how = f"fixed cohort of {e.cohort} of {self.population} without replacement"
            noise = f"Gaussian noise multiplier z = {e.noise_multiplier:g}"
            if e.mechanism is not None:
                noise += (
                    f" (mechanism as composed by tensorflow-privacy: {e.mechanism}; one Gaussian "
                    f"of effective multiplier {e.effective_z:.6g})"
                )
            lines.append(f"  {e.count} round(s): {how}; {noise}.")
        for accountant in self.accountants:
            name = {
                "rdp": "RDP (Rényi DP, conservative)",
                "pld": "PLD (privacy loss distribution, tight)",
            }
            lines.append(
                f"ε = {self.epsilon(accountant):.4g} at δ = {self.delta:.3g} — "
                f"{name[accountant]} accountant."
            )
        lines += ["", "Mechanism:"]
        lines += [f"  {note}" for note in mechanism_notes] or [
            "  every round clips each client's update to L2 norm C and adds Gaussian noise of",
            "  standard deviation z·C to the sum (DP-FedAvg at the aggregator).",
        ]
        lines += [
            "",
            "Assumptions: the model released after every round counts; the sampling of devices",
            "is as stated and secret; the noise is secret and never reused (anyone who can",
            "predict it subtracts it and sees the exact clipped sum); no other use is made of",
            "client data. The guarantee is for the whole sequence of released models.",
            "Not covered: the per-round history the server keeps (participant ids, un-noised",
            "train loss, example counts, timings) and any update seen before aggregation (the",
            "server sees individual updates unless secure aggregation hides them). Publish",
            "only the models, not the history.",
        ]
        if self.sampling == "fixed":
            lines.append(
                "PLD is not reported: dp-accounting's PLD accountant does not support "
                "sampling without replacement."
            )
        return "\n".join(lines)
