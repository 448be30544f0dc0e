"""Accounting for the distributed discrete Gaussian (DDG) under secure aggregation.

Each contributor of a round adds i.i.d. N_Z(0, σ²) noise to every coordinate of its encoded
update (:mod:`fedlab.secure.ddg`) and the server unmasks only the sum. The released vector
is ``Σ_i q_i + Σ_i z_i``: an integer vector query plus the sum of n i.i.d. discrete
Gaussians, which is *not* itself a discrete Gaussian.

The bound (Kairouz, Liu and Steinke, "The Distributed Discrete Gaussian Mechanism for
Federated Learning with Secure Aggregation", ICML 2021, arXiv:2102.06387, Proposition 14 /
Eq. 17 of the arXiv version, the RDP form behind its Theorem 1): let σ >= 1/2, let the
noise be the sum of n i.i.d. N_Z(0, σ²)^d vectors, and let neighbouring inputs differ by an
integer vector of L2 norm <= Δ2 and L1 norm <= Δ1. With

    τ = 10 · Σ_{k=1}^{n-1} exp(-2π²σ² · k/(k+1)),

the mechanism satisfies (α, ε(α))-Rényi DP for every α >= 1 with

    ε(α) = min{ α/2 · Δ2²/(nσ²) + τ·d,
                α/2 · (Δ2²/(nσ²) + 2·Δ1·τ/(√n·σ) + τ²·d),
                α/2 · (Δ2/(√n·σ) + τ·√d)² }.

Theorem 1 states its concentrated-DP corollary: (½ε²)-zCDP with
``ε = min{ sqrt(Δ2²/(nσ²) + 2τd), Δ2/(√n·σ) + τ√d }`` (:func:`ddg_zcdp`). We compose the
RDP curve itself over rounds (it is never looser than the zCDP form) and convert it to
(ε, δ) with dp-accounting's RDP conversion (``compute_epsilon`` / ``compute_delta``). The
paper's text was not available offline; the statement was read from the authors' reference
implementation (google-research/federated ``distributed_dp/accounting_utils.py``,
``compute_rdp_dgaussian``, citing Proposition 14) and a third-party implementation of
Theorem 1, Eq. 4 that agrees with it, and it is checked numerically in
``tests/privacy/test_ddg_accounting.py`` against the exact privacy profile of the 1-D
mechanism (convolved pmfs, dp-accounting PLD) and against exact Rényi divergences at small
σ where τ matters.

Sensitivity in encoded units (:func:`encoded_sensitivity`). A client clips its update u to
``‖u‖₂ <= C`` before encoding; :class:`~fedlab.secure.fixedpoint.FixedPoint` then clips
each coordinate to ``[-c, c]`` (a projection onto a box containing 0, so the norm does not
grow and is also <= c·√d), multiplies by ``w·scale`` (``w = n/max_examples <= 1`` when
weighted, else 1) and rounds to nearest: ``q = rint(a)``, ``a = w·scale·box(u)``. Then

* ``‖q‖₂ <= ‖a‖₂ + ‖q - a‖₂ <= scale·min(C, c√d) + √d/2`` (each rounding error <= ½), and
* ``‖q‖₂ <= 2‖a‖₂`` (a coordinate rounds to a non-zero value only if ``|a_j| >= ½``, and
  then ``|q_j| <= |a_j| + ½ <= 2|a_j|``),

so one client's encoded vector has norm at most ``B = min(scale·m + √d/2, 2·scale·m)``,
``m = min(C, c√d)``. Weighting only shrinks ``a``. Neighbouring rounds differ in one
contributor's data:

* ``"replace-one"`` (default; the contributor is present in both, with other data): the sum
  moves by ``q(u) - q(u')``, ``Δ2 <= 2B``;
* ``"zero-out"`` (its update replaced by zeros, which encode to exactly 0): ``Δ2 <= B``.

The difference is an integer vector, so ``Δ1 <= min(√d·Δ2, Δ2²)``. Only the d update
coordinates are noised: the ``num_examples`` slot of the masked vector is summed *without*
noise and released exactly. Under either adjacency a data-dependent count would move that
slot by up to ``max_examples`` and void the guarantee, so it must carry no private
information: use ``weighted=False`` with every client sending the same ``num_examples``
(the slot then reveals the number of contributors, which the server knows anyway), or
declare the counts public (``example_counts_public=True``: counts are then not protected
and the guarantee covers the update vectors only).

Truncation. Noise beyond ``bound`` is redrawn, so the released noise is the DDG conditioned
on the event E that none of the η-probable excesses happened; with ``η = P(not E) =
1 - Π_rounds (1 - p)^(n·d)``, ``p = P(|Z| > bound)`` from the pmf, every event S satisfies
``P'(S) <= P(S)/(1-η)`` and ``P(S) <= (1-η)·P'(S) + η``. If the untruncated mechanism is
(ε, δ₀)-DP the truncated one is therefore (ε, (δ₀ + e^ε·η)/(1-η))-DP; :class:`DDGLedger`
reports the smallest ε on the RDP curve for which this is <= δ. (Paying only η would be
wrong: the neighbour's side of the coupling costs e^ε·η.)

No subsampling amplification is claimed: every recorded round counts in full, however its
cohort was chosen. Dropouts reduce the noise (a client that never delivers its masked input
takes its noise with it), so each round is recorded with its actual contributors.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
from dp_accounting.pld import privacy_loss_distribution as _pld
from dp_accounting.rdp import rdp_privacy_accountant as _rdp

from fedlab.secure.ddg import DistributedDiscreteGaussian, bound_for_tail, discrete_gaussian_pmf
from fedlab.secure.fixedpoint import FixedPoint

__all__ = [
    "RDP_ORDERS",
    "Adjacency",
    "DDGLedger",
    "DDGPlan",
    "Sensitivity",
    "ddg_rdp",
    "ddg_tau",
    "ddg_zcdp",
    "encoded_sensitivity",
    "exact_epsilon_1d",
    "exact_rdp_1d",
    "plan_ddg",
    "plan_ddg_run",
]

Adjacency = Literal["replace-one", "zero-out"]
_ADJACENCIES = ("replace-one", "zero-out")

#: RDP orders: dp-accounting's defaults plus large ones (a large σ·√n/Δ2 needs them).
RDP_ORDERS: tuple[float, ...] = tuple(float(a) for a in _rdp.DEFAULT_RDP_ORDERS) + tuple(
    float(2**k) for k in range(11, 21)
)

# Relative slack on sensitivities computed in float, so rounding never understates them.
_SLACK = 1e-12


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        raise TypeError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return v


def _count(name: str, value: int, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value!r}")
    return int(value)


def _adjacency(value: str) -> Adjacency:
    if value not in _ADJACENCIES:
        raise ValueError(f"adjacency must be one of {_ADJACENCIES}, got {value!r}")
    return value  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class Sensitivity:
    """How far one client moves the encoded sum, in integer units.

    Attributes
    ----------
    l2, l1 : float
        Bounds on the L2 and L1 norms of the change (``l1 <= min(√d·l2, l2²)``).
    dim : int
        Noised coordinates d (the update; the ``num_examples`` slot is not noised).
    adjacency : {"replace-one", "zero-out"}
        The neighbouring relation the bounds hold for.
    note : str
        How they were derived (printed in the privacy statement).
    """

    l2: float
    l1: float
    dim: int
    adjacency: Adjacency
    note: str = ""

    def __post_init__(self) -> None:
        l2 = _positive("l2", self.l2)
        l1 = _positive("l1", self.l1)
        d = _count("dim", self.dim)
        _adjacency(self.adjacency)
        if not isinstance(self.note, str):
            raise TypeError(f"note must be a str, got {self.note!r}")
        cap = min(math.sqrt(d) * l2, l2 * l2) * (1 + _SLACK)
        if l1 > cap:
            raise ValueError(
                f"l1={l1!r} exceeds min(sqrt(d)*l2, l2^2) = {cap!r}: an integer vector of L2 "
                f"norm {l2!r} in {d} dimensions cannot have that L1 norm"
            )
        object.__setattr__(self, "l2", l2)
        object.__setattr__(self, "l1", l1)
        object.__setattr__(self, "dim", d)

    @classmethod
    def from_l2(cls, l2: float, *, dim: int, adjacency: Adjacency, note: str = "") -> Sensitivity:
        """The L2 bound with the L1 bound it implies for integer vectors."""
        l2 = _positive("l2", l2)
        d = _count("dim", dim)
        return cls(l2=l2, l1=min(math.sqrt(d) * l2, l2 * l2), dim=d, adjacency=adjacency, note=note)


def encoded_sensitivity(
    *,
    l2_clip: float,
    codec: FixedPoint,
    dim: int,
    adjacency: Adjacency = "replace-one",
    example_counts_public: bool = False,
) -> Sensitivity:
    """Sensitivity of the encoded sum for updates L2-clipped to ``l2_clip`` (module docstring).

    Parameters
    ----------
    l2_clip : float
        C: every client clips its update to L2 norm <= C before encoding.
    codec : FixedPoint
        The round's codec (``RoundSetup.codec``): its ``scale`` and per-coordinate ``clip``.
    dim : int
        Update size d.
    adjacency : {"replace-one", "zero-out"}
        The neighbouring relation.
    example_counts_public : bool
        Required with a weighted codec: the un-noised ``num_examples`` slot then reveals the
        count total, and the guarantee treats counts as public.

    Raises
    ------
    ValueError
        For a weighted codec unless ``example_counts_public`` (see the module docstring).
    """
    c = _positive("l2_clip", l2_clip)
    if not isinstance(codec, FixedPoint):
        raise TypeError(f"codec must be a FixedPoint, got {type(codec).__name__}")
    d = _count("dim", dim)
    adj = _adjacency(adjacency)
    if not isinstance(example_counts_public, bool):
        raise TypeError(f"example_counts_public must be a bool, got {example_counts_public!r}")
    if codec.weighted and not example_counts_public:
        raise ValueError(
            "a weighted codec sums each client's num_examples without noise, so neighbouring "
            "fleets differ there by up to max_examples: use weighted=False with a constant "
            "num_examples, or pass example_counts_public=True to exclude the counts from the "
            "guarantee"
        )
    m = min(c, codec.clip * math.sqrt(d))
    a = codec.scale * m
    one = min(a + math.sqrt(d) / 2, 2 * a) * (1 + _SLACK)
    l2 = 2 * one if adj == "replace-one" else one
    count_note = (
        "num_examples counts are treated as public (summed without noise, not protected)"
        if codec.weighted
        else "the num_examples slot is summed without noise: every client must send the same "
        "count (it then reveals only the number of contributors)"
    )
    note = (
        f"updates L2-clipped to C = {c:g}, box-clipped to ±{codec.clip:g}, scaled by "
        f"{codec.scale:.6g} and rounded to nearest: one client's encoded norm <= "
        f"min(scale·min(C, c·√d) + √d/2, 2·scale·min(C, c·√d)) = {one:.6g} (d = {d}); "
        f"{adj}: Δ2 = {l2:.6g}; {count_note}"
    )
    return Sensitivity.from_l2(l2, dim=d, adjacency=adj, note=note)


def ddg_tau(sigma: float, shares: int) -> float:
    """τ = 10·Σ_{k=1}^{n-1} exp(-2π²σ²·k/(k+1)) for n = ``shares`` noise shares (0 for n = 1)."""
    s = _positive("sigma", sigma)
    n = _count("shares", shares)
    k = np.arange(1, n, dtype=np.float64)
    return float(10.0 * np.sum(np.exp(-2.0 * math.pi**2 * s * s * k / (k + 1))))


def ddg_rdp(
    orders: Sequence[float] | np.ndarray,
    *,
    sigma: float,
    shares: int,
    sensitivity: Sensitivity,
) -> np.ndarray:
    """RDP ε(α) of one DDG round (Kairouz et al., Proposition 14; module docstring).

    Parameters
    ----------
    orders : sequence of float
        Orders α >= 1.
    sigma : float
        Local scale σ >= 1/2 (encoded units).
    shares : int
        n: independent noise shares in the sum (contributors whose noise the adversary does
        not know).
    sensitivity : Sensitivity
        Δ2, Δ1 and d.
    """
    s = _positive("sigma", sigma)
    if s < 0.5:
        raise ValueError(f"the bound needs sigma >= 1/2, got {sigma!r}")
    n = _count("shares", shares)
    a = np.asarray(orders, dtype=np.float64)
    if a.ndim != 1 or a.size == 0 or not np.all(a >= 1):
        raise ValueError(f"orders must be a non-empty 1-D sequence of values >= 1, got {orders!r}")
    tau = ddg_tau(s, n)
    d = sensitivity.dim
    l2 = sensitivity.l2 / (math.sqrt(n) * s)
    l1 = sensitivity.l1 / (math.sqrt(n) * s)
    term1 = a / 2 * l2**2 + tau * d
    term2 = a / 2 * (l2**2 + 2 * l1 * tau + tau**2 * d)
    term3 = a / 2 * (l2 + math.sqrt(d) * tau) ** 2
    return np.minimum(np.minimum(term1, term2), term3)


def ddg_zcdp(*, sigma: float, shares: int, sensitivity: Sensitivity) -> float:
    """ρ of Kairouz et al.'s Theorem 1: ρ = ε²/2, ε = min{√(Δ2²/(nσ²) + 2τd), Δ2/(√nσ) + τ√d}."""
    s = _positive("sigma", sigma)
    n = _count("shares", shares)
    tau = ddg_tau(s, n)
    d = sensitivity.dim
    base = sensitivity.l2**2 / (n * s * s)
    eps = min(math.sqrt(base + 2 * tau * d), math.sqrt(base) + tau * math.sqrt(d))
    return 0.5 * eps * eps


@dataclass(frozen=True, slots=True)
class _Round:
    sigma: float
    bound: int
    contributors: int
    shares: int
    sensitivity: Sensitivity
    tail: float
    count: int = 1

    @property
    def key(self) -> tuple[float, int, int, int, Sensitivity]:
        return (self.sigma, self.bound, self.contributors, self.shares, self.sensitivity)

    @property
    def central_noise_multiplier(self) -> float:
        return math.sqrt(self.shares) * self.sigma / self.sensitivity.l2


@dataclass
class DDGLedger:
    """Privacy spent by rounds of distributed discrete Gaussian noise under secure aggregation.

    Parameters
    ----------
    delta : float
        Target δ of the reported ε (covers both the RDP conversion and the truncation).
    adjacency : {"replace-one", "zero-out"}
        Neighbouring relation; every recorded sensitivity must be for it.
    colluders : int
        Contributors per round that may share their noise with the server; each round is
        accounted with ``contributors - colluders`` noise shares.
    orders : sequence of float
        RDP orders (more orders only tighten ε).
    """

    delta: float
    adjacency: Adjacency = "replace-one"
    colluders: int = 0
    orders: tuple[float, ...] = RDP_ORDERS
    entries: list[_Round] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not (
            isinstance(self.delta, int | float)
            and not isinstance(self.delta, bool)
            and 0 < self.delta < 1
        ):
            raise ValueError(f"delta must be in (0, 1), got {self.delta!r}")
        _adjacency(self.adjacency)
        _count("colluders", self.colluders, 0)
        orders = tuple(float(a) for a in self.orders)
        if not orders or min(orders) < 1:
            raise ValueError(f"orders must be non-empty and >= 1, got {self.orders!r}")
        self.orders = orders

    @property
    def rounds(self) -> int:
        """Rounds recorded."""
        return sum(e.count for e in self.entries)

    def record_round(
        self,
        *,
        noise: DistributedDiscreteGaussian,
        contributors: int,
        sensitivity: Sensitivity,
    ) -> None:
        """Add one round.

        Parameters
        ----------
        noise : DistributedDiscreteGaussian
            Every contributor's noise (σ and truncation bound).
        contributors : int
            Clients whose masked input is in the unmasked sum (``SecAggResult.contributors``):
            only their noise is in it.
        sensitivity : Sensitivity
            From :func:`encoded_sensitivity` for this round's codec.
        """
        entry = self._entry(noise, contributors, sensitivity)
        last = self.entries[-1] if self.entries else None
        if last is not None and last.key == entry.key:
            self.entries[-1] = replace(last, count=last.count + 1)
        else:
            self.entries.append(entry)

    def _entry(
        self, noise: DistributedDiscreteGaussian, contributors: int, sensitivity: Sensitivity
    ) -> _Round:
        if not isinstance(noise, DistributedDiscreteGaussian):
            raise TypeError(f"noise must be a DistributedDiscreteGaussian, got {noise!r}")
        if not isinstance(sensitivity, Sensitivity):
            raise TypeError(f"sensitivity must be a Sensitivity, got {sensitivity!r}")
        if sensitivity.adjacency != self.adjacency:
            raise ValueError(
                f"sensitivity is for {sensitivity.adjacency!r}, the ledger for {self.adjacency!r}"
            )
        n = _count("contributors", contributors)
        shares = n - self.colluders
        if shares < 1:
            raise ValueError(
                f"{n} contributors with {self.colluders} colluders leave no noise the server "
                "does not know: no guarantee"
            )
        return _Round(noise.sigma, noise.bound, n, shares, sensitivity, noise.tail)

    def rdp(self) -> np.ndarray:
        """The composed RDP curve at :attr:`orders`."""
        total = np.zeros(len(self.orders))
        for e in self.entries:
            total += e.count * ddg_rdp(
                self.orders, sigma=e.sigma, shares=e.shares, sensitivity=e.sensitivity
            )
        return total

    def truncation_mass(self) -> float:
        """η: probability that any noise value of any contributor in any round hit the bound."""
        log_keep = sum(
            e.count * e.contributors * e.sensitivity.dim * math.log1p(-e.tail) for e in self.entries
        )
        return -math.expm1(log_keep)

    def delta_for(self, epsilon: float) -> float:
        """δ at which the recorded rounds are ε-DP: ``(δ_RDP(ε) + e^ε·η) / (1 - η)``."""
        if not (isinstance(epsilon, int | float) and epsilon >= 0):
            raise ValueError(f"epsilon must be >= 0, got {epsilon!r}")
        if not self.entries:
            return 0.0
        d0, _ = _rdp.compute_delta(self.orders, self.rdp(), float(epsilon))
        eta = self.truncation_mass()
        if eta == 0.0:
            return float(d0)
        if epsilon + math.log(eta) >= 0.0:
            return 1.0
        return min(1.0, (float(d0) + math.exp(epsilon + math.log(eta))) / (1 - eta))

    def epsilon(self, delta: float | None = None) -> float:
        """Smallest ε (on the RDP curve) with :meth:`delta_for` (ε) <= δ; ``inf`` if none."""
        target = self.delta if delta is None else delta
        if not (isinstance(target, int | float) and 0 < target < 1):
            raise ValueError(f"delta must be in (0, 1), got {target!r}")
        if not self.entries:
            return 0.0
        rdp = self.rdp()
        eta = self.truncation_mass()
        low, _ = _rdp.compute_epsilon(self.orders, rdp, target)
        low = float(low)
        if eta == 0.0 or math.isinf(low):
            return low

        log_eta, log_target = math.log(eta), math.log(target)

        def ok(eps: float) -> bool:
            if eps + log_eta >= log_target:  # e^ε·η alone exceeds δ (and would overflow)
                return False
            d0, _ = _rdp.compute_delta(self.orders, rdp, eps)
            return float(d0) + math.exp(eps + log_eta) <= (1 - eta) * target

        high = low + 1e-9
        while not ok(high):
            if high + log_eta >= log_target:
                return math.inf
            high = low + 2 * (high - low) + 1e-6
        for _ in range(100):
            if high - low <= 1e-10 * max(1.0, high):
                break
            mid = 0.5 * (low + high)
            if ok(mid):
                high = mid
            else:
                low = mid
        return high

    def epsilon_after_next(
        self,
        *,
        noise: DistributedDiscreteGaussian,
        contributors: int,
        sensitivity: Sensitivity,
    ) -> float:
        """ε if one more round like this were recorded (for a budget check before a round;
        pass the fewest contributors the round may end with)."""
        trial = DDGLedger(
            delta=self.delta,
            adjacency=self.adjacency,
            colluders=self.colluders,
            orders=self.orders,
            entries=list(self.entries),
        )
        trial.record_round(noise=noise, contributors=contributors, sensitivity=sensitivity)
        return trial.epsilon()

    def privacy_statement(self, mechanism_notes: Sequence[str] = ()) -> str:
        """ε with every assumption it rests on, and the trust model; never a bare number."""
        lines = ["Distributed discrete Gaussian privacy statement (client level)", ""]
        if not self.entries:
            lines.append("No rounds recorded: nothing has been released.")
            return "\n".join(lines)
        eps = self.epsilon()
        eta = self.truncation_mass()
        adjacency = {
            "replace-one": "two fleets differ in all data of one contributor (present in both)",
            "zero-out": "one contributor's update is replaced by zeros",
        }[self.adjacency]
        lines += [f"Adjacency: {adjacency}.", f"{self.rounds} round(s) recorded:"]
        for e in self.entries:
            lines.append(
                f"  {e.count} round(s): {e.contributors} contributors"
                + (f" ({e.shares} noise shares unknown to the server)" if self.colluders else "")
                + f", each adding N_Z(0, {e.sigma:.6g}²) per coordinate, truncated at "
                f"±{e.bound} (P(|Z| > bound) = {e.tail:.3g}); d = {e.sensitivity.dim}, "
                f"Δ2 = {e.sensitivity.l2:.6g}, Δ1 = {e.sensitivity.l1:.6g}, "
                f"τ = {ddg_tau(e.sigma, e.shares):.3g}; central-equivalent noise multiplier "
                f"√n·σ/Δ2 = {e.central_noise_multiplier:.4g}."
            )
        if math.isinf(eps):
            lines.append(f"ε = inf at δ = {self.delta:.3g}: no finite guarantee.")
        else:
            d0 = self.delta_for(eps)
            lines.append(
                f"ε = {eps:.4g} at δ = {self.delta:.3g} (δ used: {d0:.4g}, of which the noise "
                f"truncation costs η = {eta:.3g} as (δ_RDP + e^ε·η)/(1 − η))."
            )
        lines += [
            "Bound: Kairouz, Liu & Steinke 2021 (arXiv:2102.06387), Proposition 14 (RDP of a "
            "sum of discrete Gaussians), composed over rounds and converted to (ε, δ) by "
            "dp-accounting. No subsampling amplification is claimed: every round counts in "
            "full.",
            "",
            "Sensitivity:",
        ]
        notes = sorted({e.sensitivity.note for e in self.entries if e.sensitivity.note})
        lines += [f"  {n}" for n in notes] or ["  (as recorded)"]
        if mechanism_notes:
            lines += ["Mechanism:"] + [f"  {n}" for n in mechanism_notes]
        trust = (
            "Trust model: no single party sees an un-noised sum. Each contributor adds its noise "
            "on its device before masking, and the server unmasks only the noised sum. This "
            "holds if the server is honest-but-curious (runs the protocol as specified and "
            f"reports who contributed), at most {self.colluders} contributor(s) per round share "
            "their noise with it (the rounds above are accounted without theirs), fewer than "
            "the secure-aggregation threshold of clients collude with it (else it can unmask "
            "individual inputs), and every device draws its noise from fresh OS entropy "
            "(predictable noise can be subtracted)."
        )
        dropouts = (
            "Dropouts reduce the noise: a client that does not deliver its masked input takes "
            "its noise with it, so each round is accounted with the contributors actually in "
            "the sum; a server that drops honest clients on purpose weakens the guarantee."
        )
        lines += ["", *textwrap.wrap(trust, 88), *textwrap.wrap(dropouts, 88)]
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class DDGPlan:
    """A codec, noise and sensitivity that fit together (from :func:`plan_ddg`).

    Attributes
    ----------
    codec : FixedPoint
        With ``noise_bound = noise.bound`` (pass the same to ``SecAggConfig``).
    noise : DistributedDiscreteGaussian
        Each client's noise.
    sensitivity : Sensitivity
        For the ledger.
    l2_clip : float
        The L2 bound C every client must clip to (the sensitivity assumes it).
    """

    codec: FixedPoint
    noise: DistributedDiscreteGaussian
    sensitivity: Sensitivity
    l2_clip: float


def plan_ddg(
    *,
    l2_clip: float,
    dim: int,
    contributors: int,
    max_clients: int,
    noise_multiplier: float,
    tail: float,
    draws: int | None = None,
    ring_bits: int = 32,
    adjacency: Adjacency = "replace-one",
) -> DDGPlan:
    """Choose σ and the ring headroom for a target central-equivalent noise multiplier.

    σ = z·Δ2/√n with n = ``contributors`` (the fewest you expect: fewer contributors mean
    less noise), Δ2 from :func:`encoded_sensitivity` for an unweighted codec with
    per-coordinate clip C, and the smallest ``noise_bound`` b that covers the truncation
    target for the σ it implies (a larger b leaves fewer levels, a smaller Δ2 and σ).

    Parameters
    ----------
    l2_clip, dim : float, int
        C and d.
    contributors, max_clients : int
        Expected contributors n and the cohort size the ring must hold.
    noise_multiplier : float
        z: total noise stddev over Δ2 (the central Gaussian it stands for).
    tail : float
        Target probability that any value hits the bound over ``draws`` draws. The ledger
        pays ``e^ε·η`` for it in δ, so pick ``tail`` well below ``δ·e^(-ε)`` for the ε you
        expect to report (benchmarks/ddg.py uses ``1e-3·δ·e^(-1.2 ε)``).
    draws : int, optional
        Noise values the tail target covers; default ``max_clients · dim`` (one round; pass
        ``max_clients · dim · rounds`` to cover a whole run).
    """
    c = _positive("l2_clip", l2_clip)
    d = _count("dim", dim)
    n = _count("contributors", contributors)
    m = _count("max_clients", max_clients)
    if n > m:
        raise ValueError(f"contributors ({n}) cannot exceed max_clients ({m})")
    z = _positive("noise_multiplier", noise_multiplier)
    draws = m * d if draws is None else _count("draws", draws)

    def build(bound: int) -> tuple[FixedPoint, float, Sensitivity]:
        codec = FixedPoint(
            clip=c,
            max_clients=m,
            max_examples=1,
            ring_bits=ring_bits,
            weighted=False,
            noise_bound=bound,
        )
        sens = encoded_sensitivity(l2_clip=c, codec=codec, dim=d, adjacency=adjacency)
        return codec, z * sens.l2 / math.sqrt(n), sens

    def needed(bound: int) -> int:
        _, sigma, _ = build(bound)
        return bound_for_tail(sigma, tail, draws=draws)

    room = ((1 << (ring_bits - 1)) - 1) // m
    low, high = -1, room - 1  # needed() decreases as the bound grows: bisect needed(b) <= b
    if needed(high) > high:
        raise ValueError(
            f"no room: noise of multiplier {z} for {n} of {m} clients does not fit a "
            f"{ring_bits}-bit ring; use ring_bits=64 or a looser tail"
        )
    while high - low > 1:
        mid = (low + high) // 2
        if mid >= 0 and needed(mid) <= mid:
            high = mid
        else:
            low = mid
    codec, sigma, sens = build(high)
    return DDGPlan(codec, DistributedDiscreteGaussian(sigma=sigma, bound=high), sens, c)


def plan_ddg_run(
    *,
    l2_clip: float,
    dim: int,
    contributors: int,
    max_clients: int,
    noise_multiplier: float,
    rounds: int,
    delta: float,
    ring_bits: int = 32,
    adjacency: Adjacency = "replace-one",
) -> DDGPlan:
    """:func:`plan_ddg` with the truncation target chosen for a whole run.

    The ledger pays ``e^ε·η`` for truncation, so the tail must sit below ``δ·e^(-ε)`` for
    the ε the run will reach — which depends on σ. This iterates: plan, compute the ε of
    ``rounds`` rounds with ``contributors`` (RDP alone), set ``tail = 1e-3·δ·e^(-1.2·ε)``
    (as ``benchmarks/ddg.py``), until the tail stops shrinking; the truncation then costs
    at most ~1e-3 of δ.

    Parameters
    ----------
    l2_clip, dim, contributors, max_clients, noise_multiplier, ring_bits, adjacency
        As :func:`plan_ddg`.
    rounds : int
        Rounds the run may last (every noise value of every round is covered).
    delta : float
        The δ the run's ε will be reported at.
    """
    rounds = _count("rounds", rounds)
    if not (isinstance(delta, int | float) and 0 < delta < 1):
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    draws = max_clients * dim * rounds
    tail = 1e-3 * delta
    plan = None
    for _ in range(8):
        plan = plan_ddg(
            l2_clip=l2_clip,
            dim=dim,
            contributors=contributors,
            max_clients=max_clients,
            noise_multiplier=noise_multiplier,
            tail=tail,
            draws=draws,
            ring_bits=ring_bits,
            adjacency=adjacency,
        )
        ledger = DDGLedger(delta=delta, adjacency=adjacency)
        for _ in range(rounds):
            ledger.record_round(
                noise=plan.noise, contributors=contributors, sensitivity=plan.sensitivity
            )
        eps, _ = _rdp.compute_epsilon(ledger.orders, ledger.rdp(), delta)
        wanted = 1e-3 * delta * math.exp(-1.2 * float(eps))
        if wanted >= tail or wanted == 0.0:
            break
        tail = wanted
    assert plan is not None
    return plan


# -- exact reference for the 1-D mechanism (lower bounds for the tests and the benchmark) ------


def _sum_pmf(sigma: float, shares: int, reach: int) -> tuple[np.ndarray, np.ndarray]:
    """Support and pmf of the sum of ``shares`` i.i.d. N_Z(0, σ²), each cut at ±reach.

    Convolving non-negative arrays loses no relative precision, so tail values are accurate
    until they underflow; the mass cut off is P(|Z| > reach) per share.
    """
    k = np.arange(-reach, reach + 1)
    one = discrete_gaussian_pmf(sigma, k)
    pmf = one
    for _ in range(shares - 1):
        pmf = np.convolve(pmf, one)
    support = np.arange(-shares * reach, shares * reach + 1)
    return support, pmf


def exact_epsilon_1d(
    *,
    sigma: float,
    shares: int,
    sensitivity: int,
    rounds: int,
    delta: float,
    discretization: float = 1e-4,
) -> float:
    """ε(δ) of the 1-D mechanism ``x + Σ_{i<n} Z_i`` (Z_i i.i.d. N_Z(0, σ²)), T-fold composed.

    The privacy loss distribution of the shifted pair (``x' = x + sensitivity``) is built from
    the exact pmfs with dp-accounting (``from_two_probability_mass_functions``, optimistic
    rounding) and self-composed ``rounds`` times. Every approximation (optimistic rounding,
    outcomes below 1e-30 dropped from both sides) can only lower the result, so it is a
    lower bound on the true ε of this pair, hence on the ε of any d-dimensional DDG with
    L2 sensitivity >= ``sensitivity`` (a shift along one axis is one admissible pair).
    By symmetry of the noise the other direction has the same loss distribution.
    """
    s = _positive("sigma", sigma)
    n = _count("shares", shares)
    shift = _count("sensitivity", sensitivity)
    t = _count("rounds", rounds)
    reach = math.ceil(14 * s) + shift
    support, pmf = _sum_pmf(s, n, reach)
    keep = pmf > 1e-30
    support, logp = support[keep], np.log(pmf[keep])
    lower = dict(zip(support.tolist(), logp.tolist(), strict=True))
    upper_all = dict(zip((support + shift).tolist(), logp.tolist(), strict=True))
    upper = {o: v for o, v in upper_all.items() if o in lower}
    lower = {o: v for o, v in lower.items() if o in upper_all}
    pld = _pld.from_two_probability_mass_functions(
        lower, upper, pessimistic_estimate=False, value_discretization_interval=discretization
    )
    return float(pld.self_compose(t).get_epsilon_for_delta(delta))


def exact_rdp_1d(
    orders: Sequence[float], *, sigma: float, shares: int, sensitivity: int
) -> np.ndarray:
    """Exact Rényi divergences D_α(W + Δ ‖ W) of W = Σ_{i<n} Z_i, Z_i i.i.d. N_Z(0, σ²).

    Summed in log space over a support wide enough for the orders given (the mass cut
    off only lowers the sum, so the result is a lower bound up to float rounding).
    """
    s = _positive("sigma", sigma)
    n = _count("shares", shares)
    shift = _count("sensitivity", sensitivity)
    a = np.asarray(orders, dtype=np.float64)
    if a.ndim != 1 or not np.all(a > 1):
        raise ValueError(f"orders must be a 1-D sequence of values > 1, got {orders!r}")
    reach = math.ceil(20 * s + float(np.max(a)) * shift) + shift
    support, pmf = _sum_pmf(s, n, reach)
    logq = np.full(pmf.shape, -np.inf)
    pos = pmf > 0
    logq[pos] = np.log(pmf[pos])
    logp = np.full(pmf.shape, -np.inf)
    logp[shift:] = logq[:-shift]  # P(w) = Q(w - Δ)
    both = np.isfinite(logp) & np.isfinite(logq)
    out = []
    for alpha in a:
        terms = alpha * logp[both] + (1 - alpha) * logq[both]
        top = float(np.max(terms))
        out.append((top + math.log(float(np.sum(np.exp(terms - top))))) / (alpha - 1))
    del support
    return np.asarray(out)
