from __future__ import annotations

import numpy as np
import pytest

from fedlab.federated import (
    AdaptiveEpochs,
    ClientProfile,
    FederationConfig,
    UniformSampler,
    WeightedSampler,
    sample_profiles,
    simulated_duration,
)


def test_uniform_sampler_distinct_and_seeded() -> None:
    pick = UniformSampler().select(np.arange(50), 10, np.random.default_rng(1), 0)
    assert len(set(pick.tolist())) == 10 and pick.max() < 50
    again = UniformSampler().select(np.arange(50), 10, np.random.default_rng(1), 0)
    assert np.array_equal(pick, again)


def test_uniform_sampler_is_fair_over_many_rounds() -> None:
    rng = np.random.default_rng(0)
    counts = np.zeros(20)
    for r in range(2000):
        counts[UniformSampler().select(np.arange(20), 5, rng, r)] += 1
    assert np.allclose(counts / 2000, 0.25, atol=0.03)


def test_weighted_sampler_prefers_heavy_clients_without_starving_others() -> None:
    sampler = WeightedSampler(tuple([10.0] * 5 + [1.0] * 15))
    rng = np.random.default_rng(0)
    counts = np.zeros(20)
    for r in range(1000):
        counts[sampler.select(np.arange(20), 4, rng, r)] += 1
    assert counts[:5].mean() > 3 * counts[5:].mean()
    assert counts.min() > 0
    with pytest.raises(ValueError, match="> 0"):
        WeightedSampler((1.0, 0.0))


def test_profiles_and_duration() -> None:
    same = sample_profiles(4, heterogeneity=0.0)
    assert {p.compute_speed for p in same} == {1.0}
    varied = sample_profiles(500, heterogeneity=1.0, seed=2)
    speeds = np.array([p.compute_speed for p in varied])
    assert speeds.max() / speeds.min() > 20
    p = ClientProfile(compute_speed=2.0, uplink_bps=8e3, downlink_bps=16e3)
    # 100 examples × 0.01 s / 2 + 8·2000/16000 + 8·1000/8000
    assert simulated_duration(
        p, examples_processed=100, seconds_per_example=0.01, bytes_down=2000, bytes_up=1000
    ) == pytest.approx(0.5 + 1.0 + 1.0)
    with pytest.raises(ValueError, match="compute_speed"):
        ClientProfile(compute_speed=0.0)


def test_adaptive_epochs_fit_the_budget() -> None:
    policy = AdaptiveEpochs(budget_s=1.0, seconds_per_example=0.01, max_epochs=4)
    assert policy.epochs(0, 50, ClientProfile(compute_speed=1.0), 1) == 2
    assert policy.epochs(0, 50, ClientProfile(compute_speed=0.1), 1) == 1  # min
    assert policy.epochs(0, 50, ClientProfile(compute_speed=10.0), 1) == 4  # max


def test_config_cohort_and_over_selection() -> None:
    cfg = FederationConfig(clients_per_round=10, over_selection=0.3)
    assert cfg.cohort_size(100) == 10 and cfg.selection_size(100) == 13
    assert cfg.selection_size(11) == 11
    frac = FederationConfig(clients_per_round=None, client_fraction=0.05)
    assert frac.cohort_size(200) == 10
    with pytest.raises(ValueError, match="clients_per_round=10 exceeds the population of 5"):
        cfg.cohort_size(5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"clients_per_round": None, "client_fraction": 1.5},
            "client_fraction must be in \\(0, 1\\], got 1.5",
        ),
        ({"clients_per_round": 0}, "got 0"),
        ({"client_fraction": 0.5}, "exactly one"),
        ({"local_epochs": 0}, "local_epochs must be an int >= 1, got 0"),
        ({"client_lr": float("nan")}, "nan"),
        ({"client_optimizer": "rmsprop"}, "'rmsprop'"),
        ({"dropout_rate": 1.0}, "got 1.0"),
        ({"deadline_s": -3.0}, "got -3.0"),
        ({"batch_size": 2.5}, "got 2.5"),
    ],
)
def test_invalid_config(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        FederationConfig(**kwargs)


def test_config_round_trip() -> None:
    cfg = FederationConfig(clients_per_round=7, deadline_s=30.0, seed=4)
    assert FederationConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.with_changes(local_epochs=3).local_epochs == 3
    with pytest.raises(ValueError, match="unknown FederationConfig fields"):
        FederationConfig.from_dict({"rounds": 3})
