"""Canary rollout: a candidate reaches a small cohort first, and their metrics gate promotion.

A rollout of a candidate version goes:

1. the canary cohort (a fraction of the fleet drawn by seed, or explicit device ids) is told to
   run the candidate; they report running it (:meth:`Registry.report_running`);
2. each canary device evaluates the candidate *and* the current production version on its
   own held-out data and reports the paired difference — in plain, or (``secure=``) only
   through secure aggregation: each device masks ``(dᵢ, dᵢ²)`` and the server unmasks
   ``n``, ``Σdᵢ`` and ``Σdᵢ²``, exactly what the paired t bound needs (mean and sample
   variance), and never sees one device's accuracy;
3. a one-sided **non-inferiority test** on the paired differences ``dᵢ = acc_candᵢ − acc_curᵢ``:
   H₀: ``E[d] ≤ −tolerance`` (the candidate is worse by more than the tolerance) against
   H₁: ``E[d] > −tolerance``. The candidate is promoted only if H₀ is rejected at level
   ``alpha``, i.e. the one-sided ``1 − alpha`` lower confidence bound of the mean difference
   lies above ``−tolerance``. The bound is Student's t (paired t-test) or a percentile
   bootstrap (``test="bootstrap"``, no normality assumption);
4. promoted: the candidate goes to ``production`` and the rest of the fleet; rejected: the
   canary devices are rolled back to production and the decision, with its statistics, is
   in the audit log. Either way only the canary cohort ever ran an unproven candidate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from fedlab.data.federated_dataset import ClientData
from fedlab.federated.types import Weights
from fedlab.ops.registry import Registry, RegistryError
from fedlab.secure import RoundSetup, SecAggConfig
from fedlab.secure.simulate import run_round as run_secure_round

__all__ = [
    "CanaryDecision",
    "CanaryPolicy",
    "LocalEvaluator",
    "bound_from_moments",
    "canary_cohort",
    "noninferiority_bound",
    "run_canary",
]

Test = Literal["paired_t", "bootstrap"]
LocalEvaluator = Callable[[Weights, ClientData], float]


@dataclass(frozen=True, slots=True)
class CanaryPolicy:
    """How a candidate is tried and judged.

    Attributes
    ----------
    fraction : float
        Share of the fleet in the canary cohort (ignored when ``device_ids`` is given).
    device_ids : tuple of int
        An explicit canary cohort.
    min_devices : int
        At least this many canary devices must report, else the candidate is not promoted
        (too little evidence is a rejection, never a pass).
    tolerance : float
        Accepted loss of accuracy (0.02 = two points) before a candidate counts as worse.
    alpha : float
        Level of the one-sided test (the chance of promoting a candidate that is worse by
        exactly ``tolerance``).
    test : {"paired_t", "bootstrap"}
        Student's t lower bound on the mean paired difference, or a percentile bootstrap.
    bootstrap_samples : int
        Resamples for the bootstrap.
    seed : int
        Draws the cohort and the bootstrap.
    secure : SecAggConfig, optional
        Report the differences through SecAgg+ (only their count, sum and sum of squares
        reach the server; ``test`` must be ``"paired_t"``: a bootstrap needs the values).
        Its ``clip`` must be at least 1 (``|dᵢ| ≤ 1``) and ``weighted`` False.
    """

    fraction: float = 0.1
    device_ids: tuple[int, ...] = ()
    min_devices: int = 5
    tolerance: float = 0.02
    alpha: float = 0.05
    test: Test = "paired_t"
    bootstrap_samples: int = 2000
    seed: int = 0
    secure: SecAggConfig | None = None

    def __post_init__(self) -> None:
        if self.secure is not None:
            if not isinstance(self.secure, SecAggConfig):
                raise TypeError(f"secure must be a SecAggConfig, got {self.secure!r}")
            if self.test != "paired_t":
                raise ValueError("a secure canary needs test='paired_t' (a bootstrap needs values)")
            if self.secure.clip < 1 or self.secure.weighted:
                raise ValueError(
                    "secure canary: SecAggConfig needs clip >= 1 (|d| <= 1) and weighted=False, "
                    f"got clip={self.secure.clip!r}, weighted={self.secure.weighted!r}"
                )
        if not (isinstance(self.fraction, int | float) and 0 < self.fraction <= 1):
            raise ValueError(f"fraction must be in (0, 1], got {self.fraction!r}")
        ids = tuple(self.device_ids)
        if any(isinstance(d, bool) or not isinstance(d, int | np.integer) or d < 0 for d in ids):
            raise ValueError(f"device_ids must be ints >= 0, got {self.device_ids!r}")
        if len(set(ids)) != len(ids):
            raise ValueError(f"device_ids has duplicates: {self.device_ids!r}")
        object.__setattr__(self, "device_ids", tuple(int(d) for d in ids))
        if isinstance(self.min_devices, bool) or not isinstance(self.min_devices, int):
            raise ValueError(f"min_devices must be an int >= 2, got {self.min_devices!r}")
        if self.min_devices < 2:
            raise ValueError(f"min_devices must be an int >= 2, got {self.min_devices!r}")
        if not (isinstance(self.tolerance, int | float) and 0 <= self.tolerance < 1):
            raise ValueError(f"tolerance must be in [0, 1), got {self.tolerance!r}")
        if not (isinstance(self.alpha, float) and 0 < self.alpha < 0.5):
            raise ValueError(f"alpha must be a float in (0, 0.5), got {self.alpha!r}")
        if self.test not in ("paired_t", "bootstrap"):
            raise ValueError(f"test must be 'paired_t' or 'bootstrap', got {self.test!r}")
        if not (isinstance(self.bootstrap_samples, int) and self.bootstrap_samples >= 100):
            raise ValueError(
                f"bootstrap_samples must be an int >= 100, got {self.bootstrap_samples!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form."""
        out = asdict(self)
        out["device_ids"] = list(self.device_ids)
        out["secure"] = repr(self.secure) if self.secure is not None else None
        return out


@dataclass(frozen=True, slots=True)
class CanaryDecision:
    """The outcome of one canary: what was tried where, the statistics, and the verdict."""

    candidate: str
    baseline: str
    cohort: tuple[int, ...]
    promoted: bool
    mean_difference: float
    lower_bound: float
    tolerance: float
    test: str
    candidate_accuracy: float
    baseline_accuracy: float
    reason: str
    differences: tuple[float, ...] = field(default=(), repr=False)

    def summary(self) -> dict[str, Any]:
        """The aggregate statistics (what the audit log keeps; no per-device values)."""
        return {
            "candidate": self.candidate,
            "baseline": self.baseline,
            "cohort_size": len(self.cohort),
            "promoted": self.promoted,
            "mean_difference": self.mean_difference,
            "lower_bound": self.lower_bound,
            "tolerance": self.tolerance,
            "test": self.test,
            "candidate_accuracy": self.candidate_accuracy,
            "baseline_accuracy": self.baseline_accuracy,
            "reason": self.reason,
        }


def canary_cohort(num_devices: int, policy: CanaryPolicy) -> tuple[int, ...]:
    """The canary devices: ``policy.device_ids``, or ``ceil(fraction·n)`` drawn by seed."""
    if policy.device_ids:
        bad = [d for d in policy.device_ids if d >= num_devices]
        if bad:
            raise ValueError(f"canary device ids {bad} are not in a fleet of {num_devices}")
        return policy.device_ids
    size = max(policy.min_devices, math.ceil(policy.fraction * num_devices))
    if size > num_devices:
        raise ValueError(
            f"a canary of {size} devices does not fit a fleet of {num_devices} "
            f"(min_devices={policy.min_devices})"
        )
    rng = np.random.default_rng([policy.seed, 0xCA])
    return tuple(sorted(int(d) for d in rng.choice(num_devices, size=size, replace=False)))


def noninferiority_bound(
    differences: Sequence[float],
    *,
    alpha: float,
    test: Test = "paired_t",
    bootstrap_samples: int = 2000,
    seed: int = 0,
) -> float:
    """One-sided ``1 − alpha`` lower confidence bound of the mean of ``differences``.

    ``paired_t``: ``d̄ − t₁₋α,ₙ₋₁ · s/√n`` (a paired t-test rejects H₀: mean ≤ −tol at level
    α exactly when this bound is above −tol). ``bootstrap``: the α-quantile of the means of
    ``bootstrap_samples`` resamples with replacement.
    """
    d = np.asarray(differences, np.float64)
    if d.ndim != 1 or len(d) < 2:
        raise ValueError(f"need at least 2 paired differences, got {len(d)}")
    if not np.isfinite(d).all():
        raise ValueError("differences hold NaN or Inf")
    mean = float(d.mean())
    if test == "paired_t":
        from scipy import stats

        sd = float(d.std(ddof=1))
        return mean - float(stats.t.ppf(1 - alpha, len(d) - 1)) * sd / math.sqrt(len(d))
    if test == "bootstrap":
        rng = np.random.default_rng([seed, 0xB0])
        means = d[rng.integers(0, len(d), size=(bootstrap_samples, len(d)))].mean(axis=1)
        return float(np.quantile(means, alpha))
    raise ValueError(f"test must be 'paired_t' or 'bootstrap', got {test!r}")


def bound_from_moments(n: int, total: float, total_sq: float, *, alpha: float) -> float:
    """The paired t lower bound of :func:`noninferiority_bound` from ``n``, ``Σd`` and
    ``Σd²`` alone (what secure aggregation reveals). The sample variance is clamped at 0
    (fixed-point rounding can make a tiny variance come out negative)."""
    if n < 2:
        raise ValueError(f"need at least 2 paired differences, got {n}")
    from scipy import stats

    mean = total / n
    var = max(0.0, (total_sq - n * mean * mean) / (n - 1))
    return mean - float(stats.t.ppf(1 - alpha, n - 1)) * math.sqrt(var) / math.sqrt(n)


def _secure_moments(
    diffs: dict[int, float], config: SecAggConfig, round_index: int
) -> tuple[int, float, float]:
    """``n, Σd, Σd²`` of the devices' differences, unmasked by SecAgg+ (in process)."""
    try:
        setup = RoundSetup.create(
            config, round_index=round_index, cohort=sorted(diffs), dimension=2
        )
    except ValueError as exc:  # a threshold this cohort cannot meet
        raise RegistryError(f"secure canary: {exc}") from None
    vectors = {c: np.array([d, d * d]) for c, d in diffs.items()}
    out = run_secure_round(setup, vectors, dict.fromkeys(diffs, 1))
    if not out.ok or out.result is None:
        raise RegistryError(f"secure canary aggregation failed: {out.failure}")
    n = len(out.result.contributors)
    return n, float(out.result.total[0]), float(out.result.total[1])


def run_canary(
    registry: Registry,
    candidate: str,
    *,
    holdout: Sequence[ClientData],
    evaluate: LocalEvaluator,
    policy: CanaryPolicy | None = None,
    channel: str = "production",
) -> CanaryDecision:
    """Try ``candidate`` on a canary cohort and promote it or roll the cohort back.

    Parameters
    ----------
    registry : Registry
        Holds the candidate and the ``channel``'s current version (the baseline).
    candidate : str
        Version id, prefix or channel name of the candidate.
    holdout : sequence of ClientData
        Every device's local held-out data, indexed by device id (it never leaves the device
        in a real fleet; here the simulated device evaluates on it).
    evaluate : callable
        ``evaluate(weights, client_data) -> accuracy`` as a device computes it.
    policy : CanaryPolicy
        Cohort, tolerance, test; defaults to ``CanaryPolicy()``.
    channel : str
        The channel the candidate would replace.

    Returns
    -------
    CanaryDecision
        Also recorded in the audit log (aggregate statistics only).
    """
    policy = policy or CanaryPolicy()
    cand = registry.resolve(candidate)
    base = registry.current(channel)
    if base is None:
        raise RegistryError(f"channel {channel!r} has no version to compare the candidate with")
    if cand == base:
        raise RegistryError(f"candidate {cand[:10]} is already on {channel!r}")
    cohort = canary_cohort(len(holdout), policy)
    cand_w, base_w = registry.load(cand), registry.load(base)

    registry.promote(cand, "canary", reason="canary start", detail={"cohort": list(cohort)})
    registry.report_running(cohort, cand)
    pairs: dict[int, tuple[float, float]] = {}
    for device in cohort:
        a_cand = float(evaluate(cand_w, holdout[device]))
        a_base = float(evaluate(base_w, holdout[device]))
        if math.isfinite(a_cand) and math.isfinite(a_base):
            pairs[device] = (a_cand, a_base)
    diffs = tuple(c - b for c, b in pairs.values())
    cand_acc = float(np.mean([c for c, _ in pairs.values()])) if pairs else math.nan
    base_acc = float(np.mean([b for _, b in pairs.values()])) if pairs else math.nan
    secure_n = len(diffs)
    if policy.secure is not None:
        # the server learns n, Σd, Σd² only: no per-device difference, no accuracies
        if len(diffs) >= policy.min_devices:
            secure_n, total, total_sq = _secure_moments(
                {d: c - b for d, (c, b) in pairs.items()}, policy.secure, round_index=policy.seed
            )
        diffs, cand_acc, base_acc = (), math.nan, math.nan
    if secure_n < policy.min_devices:
        bound, promoted = math.nan, False
        reason = f"only {secure_n} canary devices reported (need {policy.min_devices})"
    elif policy.secure is not None:
        bound = bound_from_moments(secure_n, total, total_sq, alpha=policy.alpha)
        promoted = bound > -policy.tolerance
        relation = ">" if promoted else "<="
        reason = (
            f"paired_t (secure sums of {secure_n} devices) {1 - policy.alpha:.0%} lower bound "
            f"of the accuracy change {bound:+.4f} {relation} -{policy.tolerance:g}"
        )
    else:
        bound = noninferiority_bound(
            diffs,
            alpha=policy.alpha,
            test=policy.test,
            bootstrap_samples=policy.bootstrap_samples,
            seed=policy.seed,
        )
        promoted = bound > -policy.tolerance
        relation = ">" if promoted else "<="
        reason = (
            f"{policy.test} {1 - policy.alpha:.0%} lower bound of the accuracy change "
            f"{bound:+.4f} {relation} -{policy.tolerance:g}"
        )
    if policy.secure is not None and secure_n >= policy.min_devices:
        mean_diff = total / secure_n
    else:
        mean_diff = float(np.mean(diffs)) if diffs else math.nan
    decision = CanaryDecision(
        candidate=cand,
        baseline=base,
        cohort=cohort,
        promoted=promoted,
        mean_difference=mean_diff,
        lower_bound=bound,
        tolerance=policy.tolerance,
        test=policy.test,
        candidate_accuracy=cand_acc,
        baseline_accuracy=base_acc,
        reason=reason,
        differences=diffs,
    )
    summary = {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v)
        for k, v in decision.summary().items()
    }
    registry.record("canary_decision", version=cand, channel=channel, detail=summary)
    if promoted:
        registry.promote(cand, channel, reason="canary passed", detail={"lower_bound": bound})
        registry.report_running(range(len(holdout)), cand)
    else:
        registry.report_running(cohort, base)
        registry.promote(base, "canary", reason="canary failed: automatic rollback")
        registry.record(
            "auto_rollback",
            version=base,
            channel="canary",
            detail={"rejected": cand, "reason": reason},
        )
    return decision
