"""DP-FedAvg on tensorflow-privacy's queries, the tracker and its budget, DP-SGD, and attacks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

pytest.importorskip("tensorflow")

from fedlab.data import federated_digits
from fedlab.federated import (
    ClientUpdate,
    FedAvg,
    FedAvgM,
    Federation,
    FederationConfig,
    PoissonSampler,
    make_runtime,
)
from fedlab.models import build_model
from fedlab.privacy import (
    BudgetExceeded,
    DPFedAvg,
    DPSGDRuntime,
    PrivacyLedger,
    PrivacyTracker,
    clip_by_global_norm,
    dp_sgd_epsilon,
    dp_sgd_statement,
    loss_threshold_attack,
    member_holdout_split,
)

W = (np.zeros(3, np.float32), np.zeros((2, 2), np.float32))


def upd(cid: int, a: list[float], b: list[list[float]], n: int = 1) -> ClientUpdate:
    return ClientUpdate(cid, (np.array(a, np.float32), np.array(b, np.float32)), n)


@settings(max_examples=60, deadline=None)
@given(
    first=arrays(np.float32, 5, elements=st.floats(-1e4, 1e4, width=32)),
    second=arrays(np.float32, (2, 3), elements=st.floats(-1e4, 1e4, width=32)),
    clip=st.floats(1e-3, 1e3),
)
def test_clipping_never_exceeds_the_norm(first, second, clip) -> None:
    clipped, norm = clip_by_global_norm((first, second), clip)
    after = math.sqrt(sum(float(np.sum(np.square(c, dtype=np.float64))) for c in clipped))
    assert after <= clip * (1 + 1e-5)
    if norm <= clip:
        assert all(np.array_equal(a, b) for a, b in zip(clipped, (first, second), strict=True))


def test_without_noise_it_is_the_clipped_sum_over_the_expected_count() -> None:
    dp = DPFedAvg(noise_multiplier=0.0, clip_norm=1.0, expected_clients=4)
    updates = [
        upd(0, [0.3, 0.0, 0.4], [[0, 0], [0, 0]], n=50),  # norm 0.5: kept
        upd(1, [0.0, 6.0, 0.0], [[0, 0], [8.0, 0]], n=1),
    ]  # norm 10: scaled to 1
    new, state = dp.aggregate(W, updates, dp.init_state(W))
    expected_sum = (np.array([0.3, 0.6, 0.4]), np.array([[0, 0], [0.8, 0]]))
    # Fixed denominator (4 expected clients), clients weighted equally, not by examples.
    np.testing.assert_allclose(new[0], expected_sum[0] / 4, atol=1e-6)
    np.testing.assert_allclose(new[1], expected_sum[1] / 4, atol=1e-6)
    assert int(state["dp.round"][0]) == 1


def test_noise_has_the_calibrated_scale_and_is_reproducible_on_request() -> None:
    weights = (np.zeros(20_000, np.float32),)
    dp = DPFedAvg(
        noise_multiplier=1.5, clip_norm=2.0, expected_clients=10, reproducible_noise=True, seed=7
    )
    updates = [ClientUpdate(i, (np.zeros(20_000, np.float32),), 1) for i in range(3)]
    state = dp.init_state(weights)
    first, state1 = dp.aggregate(weights, updates, state)
    assert np.std(first[0]) == pytest.approx(1.5 * 2.0 / 10, rel=0.03)  # z·C / expected
    again, _ = dp.aggregate(weights, updates, state)
    assert np.array_equal(first[0], again[0])
    second, _ = dp.aggregate(weights, updates, state1)
    assert not np.array_equal(first[0], second[0])  # every round draws fresh noise


def test_wraps_any_server_optimizer() -> None:
    dp = DPFedAvg(
        noise_multiplier=0.0, clip_norm=10.0, expected_clients=1, inner=FedAvgM(momentum=0.5)
    )
    state = dp.init_state(W)
    assert "velocity" in state
    u = [upd(0, [1, 0, 0], [[0, 0], [0, 0]])]
    w1, state = dp.aggregate(W, u, state)
    w2, state = dp.aggregate(w1, u, state)
    np.testing.assert_allclose(w2[0], [1 + 1.5, 0, 0], atol=1e-6)  # v2 = 0.5·1 + 1


def test_adaptive_clipping_moves_towards_the_quantile() -> None:
    weights = (np.zeros(4, np.float32),)
    big = [ClientUpdate(i, (np.full(4, 5.0, np.float32),), 1) for i in range(20)]  # norm 10
    small = [ClientUpdate(i, (np.full(4, 0.005, np.float32),), 1) for i in range(20)]  # norm 0.01
    clips = {}
    for label, updates in (("big", big), ("small", small)):
        dp = DPFedAvg(noise_multiplier=0.5, clip_norm=1.0, expected_clients=20, target_quantile=0.5)
        state = dp.init_state(weights)
        for _ in range(10):
            _, state = dp.aggregate(weights, updates, state)
        clips[label] = dp.current_clip(state)
    assert clips["big"] > 1.5  # norms of 10 pull the clip up from 1.0
    assert clips["small"] < 0.7  # norms of 0.01 pull it down


def test_mechanism_event_includes_the_count_query_when_adaptive() -> None:
    import dp_accounting

    fixed = DPFedAvg(noise_multiplier=1.0, clip_norm=1.0, expected_clients=10).mechanism_event()
    assert fixed == dp_accounting.GaussianDpEvent(1.0)
    adaptive = DPFedAvg(
        noise_multiplier=1.0, clip_norm=1.0, expected_clients=10, target_quantile=0.5
    ).mechanism_event()
    assert isinstance(adaptive, dp_accounting.ComposedDpEvent)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"noise_multiplier": -1.0}, "got -1.0"),
        ({"clip_norm": 0.0}, "clip_norm"),
        ({"expected_clients": 0}, "expected_clients"),
        ({"target_quantile": 1.5}, "got 1.5"),
    ],
)
def test_bad_parameters(kwargs, message) -> None:
    base = dict(noise_multiplier=1.0, clip_norm=1.0, expected_clients=5)
    with pytest.raises(ValueError, match=message):
        DPFedAvg(**{**base, **kwargs})


DIGITS = federated_digits(num_clients=20, alpha=0.5, seed=1)


def dp_federation(strategy=None, **cfg) -> Federation:
    runtime = make_runtime(lambda: build_model("digits_cnn", (8, 8, 1), 10, seed=0))
    config = FederationConfig(
        **{
            "clients_per_round": 5,
            "local_epochs": 1,
            "batch_size": 8,
            "client_lr": 0.1,
            "seed": 2,
            **cfg,
        }
    )
    return Federation(
        data=DIGITS,
        runtime=runtime,
        config=config,
        strategy=strategy or DPFedAvg(noise_multiplier=1.0, clip_norm=0.5, expected_clients=5),
    )


def test_tracker_records_rounds_and_matches_a_ledger() -> None:
    fed = dp_federation()
    tracker = PrivacyTracker(population=20, delta=1e-3, sampling="fixed").attach(fed)
    fed.run(3)
    reference = PrivacyLedger(20, 1e-3, "fixed")
    for _ in range(3):
        reference.record_round(
            noise_multiplier=1.0, cohort=5, mechanism=fed.strategy.mechanism_event()
        )
    assert tracker.ledger.epsilon() == pytest.approx(reference.epsilon(), rel=1e-12)
    assert [r for r, _ in tracker.epsilons] == [0, 1, 2]
    assert tracker.epsilons[0][1] < tracker.epsilons[2][1]
    assert "fixed cohort of 5 of 20" in tracker.privacy_statement()


def test_budget_refuses_the_round_that_would_exceed_it() -> None:
    fed = dp_federation()
    tracker = PrivacyTracker(
        population=20, delta=1e-3, sampling="fixed", budget_epsilon=8.0
    ).attach(fed)
    with pytest.raises(
        BudgetExceeded, match=r"round \d+ refused: it would raise ε from .* over the budget ε = 8"
    ):
        for _ in range(100):
            fed.run_round()
    done = fed.rounds_done
    assert 1 <= done < 100 and tracker.ledger.epsilon() <= 8.0
    weights = fed.weights
    with pytest.raises(BudgetExceeded):  # a budget already spent stays spent
        fed.run_round()
    assert fed.rounds_done == done and all(
        np.array_equal(a, b) for a, b in zip(weights, fed.weights, strict=True)
    )


def test_tracker_refuses_mismatched_sampling_and_non_dp_strategies() -> None:
    with pytest.raises(ValueError, match="PoissonSampler"):
        PrivacyTracker(population=20, delta=1e-3, sampling="poisson").attach(dp_federation())
    with pytest.raises(TypeError, match="adds no DP noise"):
        PrivacyTracker(population=20, delta=1e-3).attach(dp_federation(strategy=FedAvg()))
    with pytest.raises(ValueError, match="budget_epsilon must be > 0, got -2"):
        PrivacyTracker(population=20, delta=1e-3, budget_epsilon=-2)


def test_poisson_sampled_dp_federation() -> None:
    runtime = make_runtime(lambda: build_model("digits_cnn", (8, 8, 1), 10, seed=0))
    fed = Federation(
        data=DIGITS,
        runtime=runtime,
        sampler=PoissonSampler(0.25),
        config=FederationConfig(clients_per_round=5, batch_size=8, client_lr=0.1),
        strategy=DPFedAvg(noise_multiplier=1.0, clip_norm=0.5, expected_clients=5),
    )
    tracker = PrivacyTracker(population=20, delta=1e-3, sampling="poisson").attach(fed)
    fed.run(4)
    sizes = {len(r.selected) for r in fed.history}
    assert len(sizes) > 1  # the cohort size varies
    assert tracker.ledger.epsilon("pld") < tracker.ledger.epsilon("rdp")


def test_dp_federation_resumes_exactly(tmp_path) -> None:
    strategy = DPFedAvg(
        noise_multiplier=1.0,
        clip_norm=0.5,
        expected_clients=5,
        target_quantile=0.5,
        reproducible_noise=True,  # exact resumption needs replayable noise (a test-only choice)
    )
    whole = dp_federation(strategy)
    whole.run(4)
    runtime = make_runtime(lambda: build_model("digits_cnn", (8, 8, 1), 10, seed=0))
    part = Federation(
        data=DIGITS,
        runtime=runtime,
        config=whole.config,
        strategy=strategy,
        checkpoint_dir=tmp_path,
    )
    part.run(2)
    resumed = Federation(
        data=DIGITS,
        runtime=runtime,
        config=whole.config,
        strategy=strategy,
        checkpoint_dir=tmp_path,
        resume=True,
    )
    resumed.run(2)
    assert resumed.history.deterministic_records() == whole.history.deterministic_records()
    assert all(np.array_equal(a, b) for a, b in zip(resumed.weights, whole.weights, strict=True))


def test_dp_sgd_accounting_matches_tensorflow_privacy() -> None:
    from tensorflow_privacy import compute_dp_sgd_privacy

    ours = dp_sgd_epsilon(
        num_examples=60_000, batch_size=256, epochs=60, noise_multiplier=1.1, delta=1e-5
    )
    theirs, _ = compute_dp_sgd_privacy(
        n=60_000, batch_size=256, noise_multiplier=1.1, epochs=60, delta=1e-5
    )
    assert ours == pytest.approx(theirs, rel=0.02)
    statement = dp_sgd_statement(
        num_examples=60_000, batch_size=256, epochs=60, noise_multiplier=1.1, delta=1e-5
    )
    assert "DP-SGD" in statement and f"{theirs:.3f}"[:3] in statement
    with pytest.raises(ValueError, match="batch_size"):
        dp_sgd_epsilon(num_examples=10, batch_size=20, epochs=1, noise_multiplier=1.0, delta=1e-5)


def test_dp_sgd_runtime_trains_with_clipped_noisy_gradients() -> None:
    from fedlab.federated import ClientPlan

    runtime = DPSGDRuntime(
        lambda: build_model("digits_cnn", (8, 8, 1), 10, seed=0),
        l2_norm_clip=1.0,
        noise_multiplier=0.0,
    )
    client = DIGITS.clients[0]
    w = runtime.initial_weights()
    plan = ClientPlan(0, 0, 3, 8, 0.1, seed=1)
    update = runtime.train_one(w, client, plan)
    local = tuple(a + d for a, d in zip(w, update.delta, strict=True))
    before = runtime.evaluate(w, client.x, client.y)["loss"]
    assert runtime.evaluate(local, client.x, client.y)["loss"] < before
    noisy = DPSGDRuntime(
        lambda: build_model("digits_cnn", (8, 8, 1), 10, seed=0),
        l2_norm_clip=1.0,
        noise_multiplier=50.0,
    )
    loud = noisy.train_one(w, client, plan)
    size = lambda u: math.sqrt(sum(float((d**2).sum()) for d in u.delta))  # noqa: E731
    assert size(loud) > 3 * size(update)  # the noise dominates


def test_membership_attack_auc_and_interval() -> None:
    rng = np.random.default_rng(0)
    leaky = loss_threshold_attack(
        rng.exponential(0.5, 400), rng.exponential(1.0, 400), bootstrap=300
    )
    assert leaky.auc > 0.6 and leaky.ci_low > 0.5 and leaky.ci_low < leaky.auc < leaky.ci_high
    same = loss_threshold_attack(
        rng.exponential(1.0, 400), rng.exponential(1.0, 400), bootstrap=300
    )
    assert same.ci_low < 0.5 < same.ci_high
    assert "95% CI" in same.describe()
    with pytest.raises(ValueError, match="NaN or Inf"):
        loss_threshold_attack(np.array([1.0, np.nan]), np.array([1.0, 2.0]))


def test_member_holdout_split_keeps_devices() -> None:
    members, nonmembers = member_holdout_split(DIGITS, holdout=0.3, seed=0)
    assert members.num_clients == DIGITS.num_clients
    assert sum(members.sizes) + len(nonmembers) == sum(DIGITS.sizes)
    assert all(m >= 1 for m in members.sizes)
