"""DP-FedAvg's client-side clipping form: clients clip, the server noises the sum it is
given (what secure aggregation delivers) — the same mechanism as server-side clipping."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow_privacy")

from fedlab.federated.reduce import UniformSum, WeightedSum
from fedlab.federated.types import ClientUpdate
from fedlab.privacy import DPFedAvg
from fedlab.privacy.dp_fedavg import clip_by_global_norm

SHAPES = [(40, 30), (30,), (30, 10)]


def batch(n: int, scale: float = 1.0) -> list[ClientUpdate]:
    rng = np.random.default_rng(3)
    return [
        ClientUpdate(
            client_id=i,
            delta=tuple((scale * rng.standard_normal(s)).astype(np.float32) for s in SHAPES),
            num_examples=10 + i,
        )
        for i in range(n)
    ]


def zeros() -> tuple[np.ndarray, ...]:
    return tuple(np.zeros(s, np.float32) for s in SHAPES)


def clipped(updates: list[ClientUpdate], clip: float) -> list[ClientUpdate]:
    return [
        ClientUpdate(u.client_id, clip_by_global_norm(u.delta, clip)[0], u.num_examples)
        for u in updates
    ]


def test_without_noise_client_clipping_equals_server_clipping() -> None:
    dp = DPFedAvg(noise_multiplier=0.0, clip_norm=2.0, expected_clients=5)
    updates = batch(5)  # norms ≈ 37: all clipped
    w = zeros()
    server, _ = dp.aggregate(w, updates, dp.init_state(w))
    cohort = UniformSum().reduce(clipped(updates, 2.0))
    client, state = dp.aggregate_sum(w, cohort, dp.init_state(w))
    for a, b in zip(server, client, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert int(state["dp.round"][0]) == 1  # the round counter moved on


def test_the_sum_gets_gaussian_noise_of_std_z_c_over_the_denominator() -> None:
    z, clip, expected = 1.5, 2.0, 4
    dp = DPFedAvg(noise_multiplier=z, clip_norm=clip, expected_clients=expected)
    w = zeros()
    cohort = UniformSum().reduce(clipped(batch(4), clip))
    noised, _ = dp.aggregate_sum(w, cohort, dp.init_state(w))
    clean = cohort.mean()  # weight == count == expected: the same denominator
    residual = np.concatenate([(a - b).ravel() for a, b in zip(noised, clean, strict=True)])
    assert residual.size == 1530
    assert np.std(residual) == pytest.approx(z * clip / expected, rel=0.06)
    assert abs(np.mean(residual)) < 4 * z * clip / expected / np.sqrt(residual.size)


def test_a_sum_that_was_not_clipped_weighted_sums_and_adaptive_clipping_are_refused() -> None:
    dp = DPFedAvg(noise_multiplier=1.0, clip_norm=1.0, expected_clients=3)
    w = zeros()
    with pytest.raises(ValueError, match="some client did not clip"):
        dp.aggregate_sum(w, UniformSum().reduce(batch(3)), dp.init_state(w))
    with pytest.raises(ValueError, match="weight == count"):
        dp.aggregate_sum(w, WeightedSum().reduce(clipped(batch(3), 1.0)), dp.init_state(w))
    adaptive = DPFedAvg(
        noise_multiplier=1.0, clip_norm=1.0, expected_clients=3, target_quantile=0.5
    )
    with pytest.raises(ValueError, match="adaptive clipping"):
        adaptive.aggregate_sum(
            w, UniformSum().reduce(clipped(batch(3), 1.0)), adaptive.init_state(w)
        )
    with pytest.raises(TypeError, match="adds noise while reducing"):
        dp.server_step(w, w, dp.init_state(w))


def _secure_dp_federation(client_stages):
    from fedlab.federated import Federation, Pipeline
    from fedlab.federated.secure_stage import SecureAggregation
    from fedlab.secure import SecAggConfig
    from tests.federated.test_dispatch import CFG, NumpyRuntime, tiny_fleet

    secagg = SecAggConfig(threshold=3, clip=4.0, max_examples=32, ring_bits=64, weighted=False)
    return Federation(
        data=tiny_fleet(),
        runtime=NumpyRuntime(),
        config=CFG,
        strategy=DPFedAvg(noise_multiplier=1.0, clip_norm=0.5, expected_clients=6),
        pipeline=Pipeline(client=client_stages),
        secure_aggregation=SecureAggregation(secagg),
    )


def test_under_secure_aggregation_the_ledger_requires_client_clipping() -> None:
    """The server cannot clip what it never sees: without a client ClipUpdate at most C the
    accounted sensitivity would be a lie, so the tracker refuses to attach (or to run)."""
    from fedlab.federated.stages import ClipUpdate
    from fedlab.privacy import PrivacyTracker

    for stages in ((), (ClipUpdate(2.0),)):
        fed = _secure_dp_federation(stages)
        with pytest.raises(ValueError, match=r"must be ClipUpdate\(clip_norm <= 0.5\)"):
            PrivacyTracker(population=12, delta=1e-5).attach(fed)
    fed = _secure_dp_federation((ClipUpdate(0.5),))
    tracker = PrivacyTracker(population=12, delta=1e-5).attach(fed)
    fed.run(2)
    assert all(not r.aggregation_failure for r in fed.history)
    statement = tracker.privacy_statement()
    assert "each client clips its own update before secure aggregation" in statement
    assert tracker.ledger.epsilon() > 0
    # the same ledger as server-side clipping: same z, cohort, population → same ε
    plain = _secure_dp_federation((ClipUpdate(0.5),))
    plain.secure_aggregation = None
    central = PrivacyTracker(population=12, delta=1e-5).attach(plain)
    plain.run(2)
    assert central.ledger.epsilon() == pytest.approx(tracker.ledger.epsilon())
    assert "central DP" in central.privacy_statement()


def test_under_secure_aggregation_the_clip_must_be_the_last_change() -> None:
    from fedlab.codec import QSGD
    from fedlab.federated import EncodeUpdate
    from fedlab.federated.stages import ClipUpdate
    from fedlab.privacy import PrivacyTracker

    fed = _secure_dp_federation((ClipUpdate(0.5), EncodeUpdate(QSGD(bits=4))))
    with pytest.raises(ValueError, match="last client stage that changes the update"):
        PrivacyTracker(population=12, delta=1e-5).attach(fed)
