"""``DDGTracker``: the ledger of a federation whose clients add distributed discrete
Gaussian noise under secure aggregation, kept by observing it, and its budget guard.

The noise is in the clients' masked vectors (``SecAggConfig.noise_sigma``), so the
federation's strategy needs none of its own (plain FedAvg over the unmasked, already noised
sum); every completed round is recorded with the clients actually in the sum — dropouts
take their noise with them. See :mod:`fedlab.privacy.ddg` for the bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fedlab.federated.observers import Observer
from fedlab.privacy.ddg import DDGLedger, DDGPlan
from fedlab.privacy.tracker import BudgetExceeded, check_clients_clip
from fedlab.secure import SecAggConfig

if TYPE_CHECKING:
    from fedlab.federated.federation import Federation
    from fedlab.federated.types import RoundResult

__all__ = ["DDGTracker", "secagg_config"]


def secagg_config(
    plan: DDGPlan,
    *,
    threshold: int,
    num_neighbours: int | None = None,
    min_clients: int | None = None,
) -> SecAggConfig:
    """The :class:`~fedlab.secure.SecAggConfig` that encodes and noises as ``plan`` says
    (its clip, ring, fixed ``max_clients`` headroom, unweighted, σ and noise bound)."""

    codec = plan.codec
    return SecAggConfig(
        threshold=threshold,
        clip=codec.clip,
        num_neighbours=num_neighbours,
        max_examples=1,
        ring_bits=codec.ring_bits,
        weighted=False,
        min_clients=min_clients,
        noise_bound=plan.noise.bound,
        noise_sigma=plan.noise.sigma,
        max_clients=codec.max_clients,
    )


@dataclass
class DDGTracker(Observer):
    """Records one distributed-DP round per completed round and enforces a budget.

    Parameters
    ----------
    plan : DDGPlan
        From :func:`fedlab.privacy.ddg.plan_ddg`: the codec, the clients' noise, the
        sensitivity in integer units and the L2 bound ``C`` every client must clip to.
    delta : float
        Target δ.
    colluders : int
        Contributors per round assumed to share their noise with the server.
    budget_epsilon : float, optional
        Refuse any round after which ε could exceed this (assuming the fewest contributors
        the protocol allows).
    """

    plan: DDGPlan
    delta: float
    colluders: int = 0
    budget_epsilon: float | None = None
    ledger: DDGLedger = field(init=False)
    epsilons: list[tuple[int, float]] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.plan, DDGPlan):
            raise TypeError(f"plan must be a DDGPlan, got {self.plan!r}")
        if self.budget_epsilon is not None and not (
            math.isfinite(self.budget_epsilon) and self.budget_epsilon > 0
        ):
            raise ValueError(f"budget_epsilon must be > 0, got {self.budget_epsilon!r}")
        self.ledger = DDGLedger(
            delta=self.delta, adjacency=self.plan.sensitivity.adjacency, colluders=self.colluders
        )

    def check(self, federation: Federation) -> None:
        """Raise unless the accounting models how ``federation`` runs its next round: its
        secure aggregation adds this plan's noise with this plan's encoding to a model of
        the plan's size, every round keeps more contributors than ``colluders``, and every
        client clips to at most the plan's C last.

        Raises
        ------
        ValueError
            Naming what differs.
        """
        secure = federation.secure_aggregation
        config = None if secure is None else secure.config
        if config is None or config.noise is None:
            raise ValueError(
                "the federation adds no distributed noise: give it SecureAggregation("
                "secagg_config(plan, threshold=...))"
            )
        codec = self.plan.codec
        wanted = {
            "noise": self.plan.noise,
            "clip": codec.clip,
            "ring_bits": codec.ring_bits,
            "max_clients": codec.max_clients,
            "weighted": False,
        }
        got = {
            "noise": config.noise,
            "clip": config.clip,
            "ring_bits": config.ring_bits,
            "max_clients": config.max_clients,
            "weighted": config.weighted,
        }
        differ = {k: (got[k], v) for k, v in wanted.items() if got[k] != v}
        if differ:
            raise ValueError(
                f"the secure aggregation does not encode or noise as the plan says: {differ} "
                "(got, planned); build its config with secagg_config(plan, ...)"
            )
        dim = sum(int(w.size) for w in federation.weights)
        if dim != self.plan.sensitivity.dim:
            raise ValueError(
                f"the plan is for {self.plan.sensitivity.dim} parameters, the model has {dim}: "
                "its τ·d terms and truncation mass would be understated"
            )
        fewest = config.min_clients or config.threshold + 1
        if fewest <= self.colluders:
            raise ValueError(
                f"a round may end with {fewest} contributors, no more than the {self.colluders} "
                "colluders assumed: it would carry no noise the server does not know"
            )
        check_clients_clip(federation, self.plan.l2_clip)

    def attach(self, federation: Federation) -> DDGTracker:
        """Subscribe to ``federation`` (observer and guard) before its first release.

        Raises
        ------
        ValueError
            The federation does not match the plan, or already released rounds (their
            noise is unknown to this tracker: no guarantee).
        """
        self.check(federation)
        if any(r.completed for r in federation.history):
            raise ValueError(
                "the federation already released rounds this tracker did not see: attach it "
                "before the first round, or reset()"
            )
        federation.add_observer(self)
        federation.add_guard(self)
        return self

    def on_round_end(self, federation: Federation, result: RoundResult) -> None:
        """Record the round if it released a sum (its contributors' noise is in it)."""
        if not result.completed:
            return
        self.ledger.record_round(
            noise=self.plan.noise,
            contributors=len(result.completed),
            sensitivity=self.plan.sensitivity,
        )
        self.epsilons.append((result.round_index, self.ledger.epsilon()))

    def before_round(self, federation: Federation, round_index: int) -> None:
        """Refuse the round if the accounting does not model it or it could exceed the
        budget (with the fewest contributors the protocol lets through)."""
        self.check(federation)
        if self.budget_epsilon is None:
            return
        secure = federation.secure_aggregation
        assert secure is not None
        config = secure.config
        fewest = config.min_clients or config.threshold + 1
        after = self.ledger.epsilon_after_next(
            noise=self.plan.noise, contributors=fewest, sensitivity=self.plan.sensitivity
        )
        if after > self.budget_epsilon:
            raise BudgetExceeded(
                f"round {round_index} could bring ε to {after:.3f} (with {fewest} "
                f"contributors) > budget {self.budget_epsilon:g}"
            )

    def epsilon(self) -> float:
        """ε at ``delta`` of everything recorded."""
        return self.ledger.epsilon()

    def statement(self) -> str:
        """The privacy statement: ε with its assumptions and the trust model."""
        return self.ledger.privacy_statement(
            (f"every client clips its update to L2 norm <= {self.plan.l2_clip:g} before encoding",)
        )
