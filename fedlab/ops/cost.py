"""A cost model per round and per month for a fleet of N devices, from measured rounds.

Inputs are measurements, not guesses: bytes up and down per participating client come from
:class:`~fedlab.federated.types.RoundResult` records, server CPU seconds per aggregated
update from :func:`measure_aggregation_cpu` (process CPU time of the real strategy, and of
secure aggregation if given, on updates of the real model's shapes), storage from the
registry's blob sizes under a :class:`~fedlab.ops.retention.RetentionPolicy`. Prices are
parameters (:class:`Prices`); the defaults are round list prices of a public cloud in 2026
and only illustrate the arithmetic — put in your own.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from fedlab.federated.types import ClientUpdate, RoundResult, Weights
from fedlab.ops.retention import RetentionPolicy

__all__ = [
    "CostEstimate",
    "Prices",
    "RoundTraffic",
    "estimate_cost",
    "measure_aggregation_cpu",
    "measure_traffic",
    "measured_server_cpu",
]

GB = 1e9
DAYS_PER_MONTH = 30.0


@dataclass(frozen=True, slots=True)
class Prices:
    """Unit prices (currency units; the defaults are illustrative, not a quote).

    ``egress_per_gb`` is server → devices (downloads of the model), ``ingress_per_gb``
    devices → server, ``device_data_per_mb`` what a device's cellular plan charges (0 for
    Wi-Fi fleets), ``cpu_hour`` one server core hour, ``storage_gb_month`` object storage.
    """

    egress_per_gb: float = 0.09
    ingress_per_gb: float = 0.0
    cpu_hour: float = 0.05
    storage_gb_month: float = 0.023
    device_data_per_mb: float = 0.0

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


@dataclass(frozen=True, slots=True)
class RoundTraffic:
    """Measured traffic: mean bytes per reporting client (up) and per invited client (down),
    and the share of invited clients whose update was used."""

    up_per_client: float
    down_per_client: float
    completion: float
    rounds: int


def measure_traffic(results: Sequence[RoundResult]) -> RoundTraffic:
    """Per-client bytes from measured rounds (rounds without reports are skipped for up)."""
    results = list(results)
    if not results:
        raise ValueError("need at least one RoundResult")
    reported = [r for r in results if r.completed]
    up = sum(r.bytes_up for r in reported) / max(1, sum(len(r.completed) for r in reported))
    invited = sum(len(r.selected) for r in results)
    down = sum(r.bytes_down for r in results) / max(1, invited)
    completion = sum(len(r.completed) for r in results) / max(1, invited)
    return RoundTraffic(float(up), float(down), float(completion), len(results))


def measured_server_cpu(results: Sequence[RoundResult]) -> tuple[float, int]:
    """Median server CPU seconds per round and the median cohort it served, from the
    rounds' own :attr:`~fedlab.federated.types.RoundResult.server_cpu_s` (pipeline, secure
    aggregation, reduce and server step as they really ran): the ``server_cpu_s_per_round``
    and ``measured_cohort`` of :func:`estimate_cost`."""
    used = [r for r in results if r.completed]
    if not used:
        raise ValueError("need at least one round with reports")
    cpu = float(np.median([r.server_cpu_s for r in used]))
    cohort = int(np.median([len(r.completed) + len(r.rejected) for r in used]))
    return cpu, max(1, cohort)


def measure_aggregation_cpu(
    strategy: Any,
    weights: Weights,
    *,
    cohort: int,
    repeats: int = 5,
    secure_aggregation: Any = None,
    seed: int = 0,
) -> float:
    """Median process CPU seconds of one round's server aggregation of ``cohort`` updates.

    Runs the real ``strategy.aggregate`` (or ``secure_aggregation.aggregate`` then
    ``strategy.aggregate_sum``) on random updates shaped like ``weights``.
    """
    if isinstance(cohort, bool) or not isinstance(cohort, int) or cohort < 1:
        raise ValueError(f"cohort must be an int >= 1, got {cohort!r}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an int >= 1, got {repeats!r}")
    rng = np.random.default_rng(seed)

    def delta() -> Weights:
        return tuple((0.01 * rng.standard_normal(w.shape)).astype(np.float32) for w in weights)

    updates = [ClientUpdate(c, delta(), 20) for c in range(cohort)]
    state = strategy.init_state(weights)
    times = []
    for r in range(repeats):
        start = time.process_time()
        if secure_aggregation is not None:
            summed = secure_aggregation.aggregate(r, updates)
            if summed.cohort is not None:
                strategy.aggregate_sum(weights, summed.cohort, state)
        else:
            strategy.aggregate(weights, updates, state)
        times.append(time.process_time() - start)
    return float(np.median(times))


@dataclass(frozen=True, slots=True)
class CostEstimate:
    """Cost per round and per month, by item, with the assumptions that produced it."""

    per_round: dict[str, float]
    per_month: dict[str, float]
    assumptions: dict[str, Any]

    @property
    def month_total(self) -> float:
        """Everything per month."""
        return float(sum(self.per_month.values()))


def estimate_cost(
    traffic: RoundTraffic,
    *,
    num_devices: int,
    participation: float,
    rounds_per_day: float,
    server_cpu_s_per_round: float,
    measured_cohort: int,
    model_bytes: int,
    checkpoint_bytes: int = 0,
    registered_per_month: float = 30.0,
    promoted_per_month: float = 4.0,
    retention: RetentionPolicy | None = None,
    prices: Prices | None = None,
    months: float = 12.0,
) -> CostEstimate:
    """Cost of running a fleet of ``num_devices`` (per round and per 30-day month).

    Parameters
    ----------
    traffic : RoundTraffic
        Measured per-client bytes (:func:`measure_traffic`).
    num_devices : int
        Fleet size N.
    participation : float
        Share of the fleet invited per round (cohort = ``ceil(participation × N)``).
    rounds_per_day : float
        Rounds the server runs per day.
    server_cpu_s_per_round, measured_cohort : float, int
        Measured aggregation CPU seconds for a cohort of ``measured_cohort`` clients;
        scaled linearly to the cohort size (reduce is linear in the cohort; SecAgg+ with a
        log-degree graph is close to it).
    model_bytes, checkpoint_bytes : int
        One registry blob and one checkpoint file; two checkpoints are kept.
    registered_per_month, promoted_per_month : float
        Versions registered and promoted per month (storage under ``retention``).
    months : float
        Storage is reported at this age of the registry.
    """
    prices = prices or Prices()
    retention = retention or RetentionPolicy()
    if isinstance(num_devices, bool) or not isinstance(num_devices, int) or num_devices < 1:
        raise ValueError(f"num_devices must be an int >= 1, got {num_devices!r}")
    if not (isinstance(participation, int | float) and 0 < participation <= 1):
        raise ValueError(f"participation must be in (0, 1], got {participation!r}")
    if not (isinstance(rounds_per_day, int | float) and rounds_per_day > 0):
        raise ValueError(f"rounds_per_day must be > 0, got {rounds_per_day!r}")
    if not server_cpu_s_per_round >= 0 or measured_cohort < 1:
        raise ValueError("server_cpu_s_per_round must be >= 0 and measured_cohort >= 1")
    cohort = math.ceil(participation * num_devices)
    up = cohort * traffic.completion * traffic.up_per_client
    down = cohort * traffic.down_per_client
    cpu_s = server_cpu_s_per_round * cohort / measured_cohort
    per_round = {
        "uplink (ingress)": up / GB * prices.ingress_per_gb,
        "downlink (egress)": down / GB * prices.egress_per_gb,
        "device data plans": (up + down) / 1e6 * prices.device_data_per_mb,
        "server CPU": cpu_s / 3600 * prices.cpu_hour,
    }
    rounds = rounds_per_day * DAYS_PER_MONTH
    versions = retention.steady_state_versions(
        registered_per_month=registered_per_month,
        promoted_per_month=promoted_per_month,
        months=months,
    )
    stored = versions * model_bytes + 2 * checkpoint_bytes
    per_month = {k: v * rounds for k, v in per_round.items()}
    per_month["storage (registry + checkpoints)"] = stored / GB * prices.storage_gb_month
    return CostEstimate(
        per_round=per_round,
        per_month=per_month,
        assumptions={
            "num_devices": num_devices,
            "cohort": cohort,
            "rounds_per_month": rounds,
            "bytes_up_per_round": up,
            "bytes_down_per_round": down,
            "server_cpu_s_per_round": cpu_s,
            "stored_versions": versions,
            "stored_bytes": stored,
            "prices": asdict(prices),
            "retention": retention.to_dict(),
        },
    )
