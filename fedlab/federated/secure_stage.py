"""Secure aggregation as a cohort-level server stage (simulated in this process).

The accepted clients' updates are summed by SecAgg+ (:mod:`fedlab.secure`): each client
masks its fixed-point update with pairwise and self masks, the server only ever holds masked
vectors and learns nothing but ``Σ nᵢ·xᵢ`` and ``Σ nᵢ`` (or ``Σ xᵢ`` unweighted). The sum goes
to the strategy's :meth:`aggregate_sum` — for DP-FedAvg the client-side clipping form, where
the server noises the sum it is given.

Clients can drop out at each of the protocol's four stages (``dropout``, drawn per round from
``seed``); below the threshold the round's aggregation aborts and nothing is applied. What the
simulation cannot show: on a real fleet the server never sees a plaintext update, so the
server pipeline's per-update norm bound does not apply there — clients' clipping and the
fixed-point clip (``config.clip`` per coordinate) bound each client's influence instead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from fedlab.federated.reduce import CohortSum
from fedlab.federated.types import ClientUpdate
from fedlab.secure import STAGES, RoundSetup, SecAggConfig
from fedlab.secure.simulate import run_round

__all__ = ["SecureAggregation", "SecureSum"]


@dataclass(frozen=True, slots=True)
class SecureSum:
    """What secure aggregation gave the server in one round.

    ``cohort`` is the unmasked sum (``None`` when the protocol aborted, with ``failure``
    saying at which stage and why); ``lost`` maps each client whose input is not in the
    sum to the stage where it was lost; ``upload_bytes`` is what the clients sent in all.
    """

    cohort: CohortSum | None
    lost: Mapping[int, str]
    failure: str = ""
    upload_bytes: int = 0
    error_bound: float = 0.0


@dataclass(frozen=True, slots=True)
class SecureAggregation:
    """Sum the round's accepted updates with SecAgg+ (``config``), simulated in-process.

    Parameters
    ----------
    config : SecAggConfig
        Threshold, per-coordinate clip, graph degree, ``max_examples`` (the cap on the
        weight inside the masked vector), ring size, weighted or not.
    dropout : mapping of stage → probability
        Chance that a client still in the protocol stops answering at that stage
        (``"advertise_keys"``, ``"share_keys"``, ``"masked_input"``, ``"unmask"``).
    seed : int
        Seed of the dropout draws (the protocol's keys and masks use OS entropy).
    """

    config: SecAggConfig
    dropout: Mapping[str, float] = field(default_factory=dict)
    seed: int = 0
    name: str = "secure-aggregation"

    def __post_init__(self) -> None:
        if not isinstance(self.config, SecAggConfig):
            raise TypeError(f"config must be a SecAggConfig, got {self.config!r}")
        unknown = set(self.dropout) - set(STAGES)
        if unknown:
            raise ValueError(f"dropout: unknown stages {sorted(unknown)}; stages are {STAGES}")
        for stage, p in self.dropout.items():
            if isinstance(p, bool) or not isinstance(p, int | float) or not 0 <= p < 1:
                raise ValueError(f"dropout[{stage!r}] must be in [0, 1), got {p!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {self.seed!r}")

    def aggregate(self, round_index: int, updates: Sequence[ClientUpdate]) -> SecureSum:
        """Run one SecAgg+ round over ``updates`` (the accepted clients, at least two)."""
        if len(updates) < 2:
            return SecureSum(
                None,
                {u.client_id: "cohort" for u in updates},
                f"secure aggregation needs at least 2 clients, {len(updates)} reported",
            )
        shapes = [np.shape(d) for d in updates[0].delta]
        flat = {u.client_id: np.concatenate([np.ravel(d) for d in u.delta]) for u in updates}
        counts = {u.client_id: int(u.num_examples) for u in updates}
        cohort_ids = tuple(sorted(flat))
        rng = np.random.default_rng([self.seed, round_index, 0x5EC])
        drop: dict[str, set[int]] = {}
        alive = list(cohort_ids)
        for stage in STAGES:
            p = float(self.dropout.get(stage, 0.0))
            lost = {c for c, u in zip(alive, rng.random(len(alive)), strict=True) if u < p}
            if lost:
                drop[stage] = lost
                alive = [c for c in alive if c not in lost]
        try:
            setup = RoundSetup.create(
                self.config,
                round_index=round_index,
                cohort=cohort_ids,
                dimension=int(next(iter(flat.values())).size),
            )
        except ValueError as exc:  # e.g. a threshold the cohort cannot meet
            return SecureSum(None, dict.fromkeys(cohort_ids, "setup"), f"setup: {exc}")
        outcome = run_round(setup, flat, counts, drop=drop)
        uploaded = int(sum(outcome.upload_bytes.values()))
        if outcome.result is None:
            failure = outcome.failure
            reason = f"{failure.stage}: {failure.reason}" if failure else "aborted"
            return SecureSum(None, dict.fromkeys(cohort_ids, "aborted"), reason, uploaded)
        result = outcome.result
        lost_at = {c: stage for stage, ids in result.dropped.items() for c in ids}
        total = np.asarray(result.total, np.float64)
        tensors: list[np.ndarray] = []
        offset = 0
        for shape in shapes:
            size = math.prod(shape)
            tensors.append(total[offset : offset + size].reshape(shape))
            offset += size
        weight = float(result.num_examples) if result.weighted else float(len(result.contributors))
        cohort = CohortSum(tuple(tensors), weight, len(result.contributors))
        return SecureSum(cohort, lost_at, "", uploaded, float(result.error_bound))
