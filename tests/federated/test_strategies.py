"""Strategies against aggregates computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from fedlab.federated import (
    ClientUpdate,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedProx,
    FedYogi,
    make_strategy,
    weighted_mean,
)
from fedlab.federated.strategies import STRATEGIES, strategy_to_dict


def upd(cid: int, n: int, *values: list[float]) -> ClientUpdate:
    return ClientUpdate(cid, tuple(np.array(v, dtype=np.float32) for v in values), n)


W = (np.array([1.0, 1.0], np.float32), np.array([[0.5]], np.float32))
U = [upd(0, 1, [1.0, 2.0], [[4.0]]), upd(1, 3, [3.0, 4.0], [[0.0]])]
# example-weighted mean delta: ([1·1+3·3]/4, [1·2+3·4]/4), (1·4+3·0)/4
MEAN = (np.array([2.5, 3.5]), np.array([[1.0]]))


def close(a, b) -> None:
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)


def test_fedavg_weights_by_examples() -> None:
    new, state = FedAvg().aggregate(W, U, FedAvg().init_state(W))
    close(new, (np.array([3.5, 4.5]), np.array([[1.5]])))
    assert state == {}
    half, _ = FedAvg(server_lr=0.5).aggregate(W, U, {})
    close(half, (np.array([2.25, 2.75]), np.array([[1.0]])))


def test_fedavg_is_not_the_unweighted_mean() -> None:
    new, _ = FedAvg().aggregate(W, U, {})
    assert not np.allclose(new[0], W[0] + np.array([2.0, 3.0]))


def test_fedprox_aggregates_like_fedavg_and_asks_clients_for_mu() -> None:
    prox = FedProx(mu=0.1)
    assert prox.client_proximal_mu == 0.1 and FedAvg().client_proximal_mu == 0.0
    close(prox.aggregate(W, U, {})[0], FedAvg().aggregate(W, U, {})[0])


def test_fedavgm_two_rounds() -> None:
    s = FedAvgM(server_lr=1.0, momentum=0.5)
    state = s.init_state(W)
    w1, state = s.aggregate(W, U, state)
    close(w1, (W[0] + MEAN[0], W[1] + MEAN[1]))  # v1 = Δ
    second = [upd(2, 1, [1.0, 0.0], [[2.0]])]
    w2, state = s.aggregate(w1, second, state)
    v2 = (0.5 * MEAN[0] + np.array([1.0, 0.0]), 0.5 * MEAN[1] + np.array([[2.0]]))
    close(state["velocity"], v2)
    close(w2, (w1[0] + v2[0], w1[1] + v2[1]))


@pytest.mark.parametrize("cls", [FedAdam, FedYogi, FedAdagrad])
def test_adaptive_first_and_second_step_by_hand(cls) -> None:
    eta, b1, b2, tau = 0.1, 0.9, 0.99, 1e-3
    s = cls(server_lr=eta, beta1=b1, beta2=b2, tau=tau)
    w = (np.array([0.0], np.float32),)
    state = s.init_state(w)
    close(state["v"], (np.array([tau**2]),))
    deltas = [0.2, -0.4]
    m, v, expected_w = 0.0, tau**2, 0.0
    for d in deltas:
        w, state = s.aggregate(w, [upd(0, 5, [d])], state)
        m = b1 * m + (1 - b1) * d
        if cls is FedAdam:
            v = b2 * v + (1 - b2) * d * d
        elif cls is FedYogi:
            v = v - (1 - b2) * d * d * np.sign(v - d * d)
        else:
            v = v + d * d
        expected_w += eta * m / (np.sqrt(v) + tau)
        np.testing.assert_allclose(w[0], [expected_w], rtol=1e-5)
        np.testing.assert_allclose(state["m"][0], [m], rtol=1e-5)
        np.testing.assert_allclose(state["v"][0], [v], rtol=1e-5)


def test_registry_round_trip() -> None:
    for name, cls in STRATEGIES.items():
        s = make_strategy(name)
        assert isinstance(s, cls)
        assert make_strategy(strategy_to_dict(s)) == s
    assert make_strategy("FedAdam", server_lr=0.3).server_lr == 0.3
    with pytest.raises(ValueError, match="'fedsgd'"):
        make_strategy("fedsgd")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: FedAvg(server_lr=0), "server_lr must be finite and > 0, got 0"),
        (lambda: FedAvgM(momentum=1.0), "got 1.0"),
        (lambda: FedProx(mu=-1), "got -1"),
        (lambda: FedAdam(tau=0), "tau"),
        (lambda: FedYogi(beta2=1.0), "beta2"),
        (lambda: weighted_mean([], []), "at least one"),
        (lambda: weighted_mean([W], [0.0]), "positive sum"),
        (lambda: weighted_mean([W, W], [1.0]), "2 contributors but 1 weights"),
    ],
)
def test_invalid_parameters(call, message) -> None:
    with pytest.raises(ValueError, match=message):
        call()
