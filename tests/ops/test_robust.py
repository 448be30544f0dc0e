"""Robust reducers: median, trimmed mean, norm bounding; the opt-in strategy wrapper; refusal
on a secure sum; default strategies untouched. No TensorFlow."""

from __future__ import annotations

import numpy as np
import pytest

from fedlab.federated.reduce import WeightedSum
from fedlab.federated.robust import (
    CoordinateMedian,
    NormBounded,
    RobustAggregationError,
    TrimmedMean,
    make_reducer,
    reducer_to_dict,
    trimmed_mean,
    update_norm,
)
from fedlab.federated.strategies import FedAvg, FedAvgM, RobustAggregation, strategy_to_dict
from fedlab.federated.types import ClientUpdate

SHAPES = [(3, 4), (4,)]


def updates(n: int, seed: int = 0, *, bad: int = 0, scale: float = -10.0) -> list[ClientUpdate]:
    """``n`` honest updates around +1, the first ``bad`` of them sign-flipped × |scale|."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        delta = tuple((1.0 + 0.1 * rng.standard_normal(s)).astype(np.float32) for s in SHAPES)
        if i < bad:
            delta = tuple((scale * d).astype(np.float32) for d in delta)
        out.append(ClientUpdate(i, delta, int(rng.integers(5, 30))))
    return out


def test_median_and_trimmed_mean_match_a_slow_per_coordinate_reference() -> None:
    batch = updates(9, seed=3)
    for reducer, pick in (
        (CoordinateMedian(), lambda v: float(np.median(v))),
        (TrimmedMean(trim=0.2), lambda v: float(np.mean(sorted(v)[1:-1]))),  # floor(.2·9)=1
    ):
        got = reducer.reduce(batch).mean()
        for t, shape in enumerate(SHAPES):
            for idx in np.ndindex(shape):
                values = [float(u.delta[t][idx]) for u in batch]
                assert got[t][idx] == pytest.approx(pick(values), rel=1e-6), reducer.name


def test_ten_percent_sign_flipped_clients_wreck_the_mean_but_not_the_robust_reducers() -> None:
    batch = updates(20, seed=1, bad=2)  # 10 % malicious, ×10 sign-flipped
    honest = np.mean([u.delta[0] for u in batch[2:]], axis=0)
    fedavg = WeightedSum().reduce(batch).mean()[0]
    assert np.abs(fedavg - honest).mean() > 1.0  # the attack moves the mean by > its size
    for reducer in (CoordinateMedian(), TrimmedMean(trim=0.1), NormBounded(max_norm=5.0)):
        estimate = reducer.reduce(batch).mean()[0]
        assert np.abs(estimate - honest).mean() < 0.3, reducer.name


def test_norm_bounding_scales_long_updates_only() -> None:
    batch = updates(4, bad=1, scale=50.0)
    norms = [update_norm(u.delta) for u in batch]
    bound = sorted(norms)[1] * 1.01
    bounded = NormBounded(max_norm=bound, inner=CoordinateMedian())
    assert reducer_to_dict(bounded) == {
        "name": "norm_bounded",
        "max_norm": bound,
        "inner": {"name": "median"},
    }
    assert make_reducer(reducer_to_dict(bounded)) == bounded
    only_short = NormBounded(max_norm=1e9).reduce(batch).mean()
    for a, b in zip(only_short, WeightedSum().reduce(batch).mean(), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: TrimmedMean(trim=0.5), "trim must be"),
        (lambda: TrimmedMean(trim="x"), "trim must be"),
        (lambda: NormBounded(max_norm=0), "max_norm must be"),
        (lambda: NormBounded(max_norm=float("inf")), "max_norm must be"),
        (lambda: make_reducer("mode"), "unknown reducer 'mode'"),
        (lambda: trimmed_mean([], 0.1), "at least one"),
        (lambda: CoordinateMedian().reduce([]), "empty cohort"),
    ],
)
def test_bad_parameters_are_clear_errors(make, message) -> None:
    with pytest.raises(ValueError, match=message):
        make()


def test_the_wrapper_runs_any_server_step_and_refuses_a_secure_sum() -> None:
    w = tuple(np.zeros(s, np.float32) for s in SHAPES)
    batch = updates(7, bad=1)
    strategy = RobustAggregation(inner=FedAvgM(momentum=0.5), reducer=TrimmedMean(trim=0.15))
    state = strategy.init_state(w)
    new, state = strategy.aggregate(w, batch, state)
    expected, _ = FedAvgM(momentum=0.5).server_step(
        w, TrimmedMean(trim=0.15).reduce(batch).mean(), FedAvgM(momentum=0.5).init_state(w)
    )
    for a, b in zip(new, expected, strict=True):
        np.testing.assert_array_equal(a, b)
    assert strategy_to_dict(strategy)["reducer"] == {
        "name": "trimmed_mean",
        "trim": 0.15,
        "min_trimmed": 1,
    }
    with pytest.raises(RobustAggregationError, match="only their sum"):
        strategy.aggregate_sum(w, WeightedSum().reduce(batch), state)
    with pytest.raises(TypeError, match="reducer must be a Reducer"):
        RobustAggregation(inner=FedAvg(), reducer="median")


def test_a_federation_with_secure_aggregation_refuses_a_robust_reducer_before_any_round() -> None:
    from fedlab.federated import Federation, FederationConfig
    from fedlab.federated.secure_stage import SecureAggregation
    from fedlab.secure import SecAggConfig
    from tests.federated.test_dispatch import NumpyRuntime, tiny_fleet

    robust = RobustAggregation(inner=FedAvg(), reducer=CoordinateMedian())
    with pytest.raises(ValueError, match="needs every client's update"):
        Federation(
            data=tiny_fleet(),
            runtime=NumpyRuntime(),
            config=FederationConfig(clients_per_round=6, client_lr=0.1, seed=1),
            strategy=robust,
            secure_aggregation=SecureAggregation(
                SecAggConfig(threshold=3, clip=4.0, max_examples=32, ring_bits=64)
            ),
        )
    # and the strategy itself refuses a sum, should anything hand it one
    with pytest.raises(RobustAggregationError, match="secure aggregation"):
        robust.aggregate_sum((), None, {})  # type: ignore[arg-type]


def test_default_strategies_keep_their_results_and_fingerprint_fields() -> None:
    """The hook is a wrapper: FedAvg's dict (the checkpoint fingerprint's input) is as before."""
    assert strategy_to_dict(FedAvg()) == {"name": "fedavg", "server_lr": 1.0}
    w = tuple(np.zeros(s, np.float32) for s in SHAPES)
    batch = updates(5)
    plain, _ = FedAvg().aggregate(w, batch, {})
    wrapped, _ = RobustAggregation(inner=FedAvg(), reducer=WeightedSum()).aggregate(w, batch, {})
    for a, b in zip(plain, wrapped, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
