"""Aggregation = reduce + server step: a strategy gives the same model from individual
updates as from their cohort sum (what secure aggregation delivers). No TensorFlow."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedlab.federated.reduce import CohortSum, UniformSum, WeightedSum
from fedlab.federated.strategies import STRATEGIES, make_strategy
from fedlab.federated.types import ClientUpdate

SHAPES = [(3, 4), (4,), (2, 2, 3)]


def updates(n: int, seed: int = 0) -> list[ClientUpdate]:
    rng = np.random.default_rng(seed)
    return [
        ClientUpdate(
            client_id=i,
            delta=tuple(rng.standard_normal(s).astype(np.float32) for s in SHAPES),
            num_examples=int(rng.integers(1, 50)),
        )
        for i in range(n)
    ]


def weights0() -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(9)
    return tuple(rng.standard_normal(s).astype(np.float32) for s in SHAPES)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_individual_updates_and_their_cohort_sum_give_the_same_model(name) -> None:
    strategy = make_strategy(name)
    w = weights0()
    state_a = state_b = strategy.init_state(w)
    wa, wb = w, w
    for r in range(3):  # stateful strategies (momentum, Adam) too, over several rounds
        batch = updates(5, seed=r)
        wa, state_a = strategy.aggregate(wa, batch, state_a)
        wb, state_b = strategy.aggregate_sum(wb, WeightedSum().reduce(batch), state_b)
    for a, b in zip(wa, wb, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_reducers_weigh_as_named() -> None:
    batch = updates(4)
    weighted, uniform = WeightedSum().reduce(batch), UniformSum().reduce(batch)
    assert weighted.weight == sum(u.num_examples for u in batch) and weighted.count == 4
    assert uniform.weight == 4 and uniform.count == 4
    expected = sum(u.num_examples * u.delta[0].astype(np.float64) for u in batch)
    np.testing.assert_allclose(weighted.total[0], expected)
    np.testing.assert_allclose(
        uniform.mean()[1], np.mean([u.delta[1] for u in batch], axis=0), rtol=1e-6
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(total=(np.ones(2),), weight=0.0, count=1), "weight must be finite and > 0"),
        (dict(total=(np.ones(2),), weight=math.inf, count=1), "weight"),
        (dict(total=(np.ones(2),), weight=1.0, count=0), "count must be an int >= 1"),
        (dict(total=(np.ones(2),), weight=1.0, count=True), "count"),
        (dict(total=(), weight=1.0, count=1), "at least one tensor"),
        (dict(total=(np.array([np.nan]),), weight=1.0, count=1), "NaN or Inf"),
    ],
)
def test_a_bad_cohort_sum_is_refused(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        CohortSum(**kwargs)


def test_empty_cohort_cannot_be_reduced() -> None:
    with pytest.raises(ValueError, match="empty cohort"):
        WeightedSum().reduce([])


@pytest.mark.parametrize("value", [math.inf, math.nan, 0.0, -1.0, True, "1"])
def test_server_lr_must_be_finite_and_positive(value) -> None:
    for name in STRATEGIES:
        with pytest.raises(ValueError, match="server_lr"):
            make_strategy(name, server_lr=value)
