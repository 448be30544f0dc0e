"""A strategy wrapper that reduces with a chosen (robust) reducer.

``RobustAggregation(inner=FedAvg(), reducer=CoordinateMedian())`` reduces the accepted
updates with ``reducer`` and applies the inner strategy's server step to the result, so any
server optimizer (FedAvg, FedAvgM, FedAdam…) gets a median, trimmed mean or norm-bounded mean
instead of the example-weighted mean. The default strategies are untouched (no new field,
same results, same checkpoint fingerprints); robustness is opt-in by wrapping.

A coordinate-wise median or trimmed mean needs the individual updates; secure aggregation
delivers only their sum, so :meth:`RobustAggregation.aggregate_sum` refuses with
:class:`~fedlab.federated.robust.RobustAggregationError` (norm bounding alone belongs on the
clients there: the client clip stage).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fedlab.federated.reduce import CohortSum
from fedlab.federated.robust import RobustAggregationError
from fedlab.federated.strategies.base import StrategyState
from fedlab.federated.types import ClientUpdate, Weights

__all__ = ["RobustAggregation"]


@dataclass(frozen=True, slots=True)
class RobustAggregation:
    """``inner``'s server step on ``reducer``'s estimate of the cohort's delta.

    Parameters
    ----------
    inner : Strategy
        Supplies ``init_state``, ``server_step`` and the clients' proximal μ.
    reducer : Reducer
        Turns the accepted updates into a :class:`~fedlab.federated.reduce.CohortSum`
        (:class:`~fedlab.federated.robust.CoordinateMedian`, ``TrimmedMean``, ``NormBounded``).
    """

    inner: Any
    reducer: Any
    name: str = "robust"

    def __post_init__(self) -> None:
        for method in ("server_step", "init_state"):
            if not callable(getattr(self.inner, method, None)):
                raise TypeError(f"inner must be a Strategy, got {type(self.inner).__name__}")
        if not callable(getattr(self.reducer, "reduce", None)):
            raise TypeError(f"reducer must be a Reducer, got {type(self.reducer).__name__}")

    @property
    def client_proximal_mu(self) -> float:
        """The inner strategy's μ."""
        return float(self.inner.client_proximal_mu)

    def init_state(self, weights: Weights) -> StrategyState:
        """The inner strategy's state."""
        state: StrategyState = self.inner.init_state(weights)
        return state

    @property
    def needs_individual_updates(self) -> bool:
        """True: a robust reducer cannot run on a securely aggregated sum."""
        return True

    def server_step(
        self, weights: Weights, delta: Weights, state: StrategyState
    ) -> tuple[Weights, StrategyState]:
        """The inner strategy's server step."""
        out: tuple[Weights, StrategyState] = self.inner.server_step(weights, delta, state)
        return out

    def aggregate(
        self, weights: Weights, updates: Sequence[ClientUpdate], state: StrategyState
    ) -> tuple[Weights, StrategyState]:
        """Reduce with ``reducer``, then the inner server step."""
        return self.server_step(weights, self.reducer.reduce(updates).mean(), state)

    def aggregate_sum(
        self, weights: Weights, cohort: CohortSum, state: StrategyState
    ) -> tuple[Weights, StrategyState]:
        """Refused: a robust reducer cannot work on an already-summed cohort."""
        raise RobustAggregationError(
            f"the {self.reducer.name!r} reducer needs every client's update, but secure "
            "aggregation gives the server only their sum; use a plain strategy with secure "
            "aggregation (bound norms on the clients with the clip stage), or drop secure "
            "aggregation to use a robust reducer"
        )
