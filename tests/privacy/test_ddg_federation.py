"""Distributed discrete Gaussian noise in a federation: the clients' masked vectors carry
the noise (``SecAggConfig.noise_sigma``), the strategy adds none, and ``DDGTracker`` keeps
the ledger from what the rounds really had (contributors after dropouts)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedlab.federated import Federation, Pipeline
from fedlab.federated.secure_stage import SecureAggregation
from fedlab.federated.stages import ClipUpdate
from fedlab.privacy import BudgetExceeded
from fedlab.privacy.ddg import DDGLedger, plan_ddg
from fedlab.privacy.ddg_tracker import DDGTracker, secagg_config
from fedlab.secure import RoundSetup, plain_sum, run_round
from fedlab.secure.ddg import discrete_gaussian_variance
from tests.federated.test_dispatch import CFG, SHAPES, NumpyRuntime, tiny_fleet

C = 0.5
DIM = sum(math.prod(s) for s in SHAPES)
DELTA = 1e-5


def _plan(contributors: int = 4, z: float = 1.0):
    return plan_ddg(
        l2_clip=C,
        dim=DIM,
        contributors=contributors,
        max_clients=CFG.clients_per_round,
        noise_multiplier=z,
        tail=1e-12,
        draws=CFG.clients_per_round * DIM * 100,
    )


def _federation(plan, *, clip: float | None = C, **secure) -> Federation:
    stages = (ClipUpdate(clip_norm=clip),) if clip else ()
    return Federation(
        data=tiny_fleet(),
        runtime=NumpyRuntime(),
        config=CFG,
        pipeline=Pipeline(client=stages),
        secure_aggregation=SecureAggregation(secagg_config(plan, threshold=3), **secure),
    )


def test_the_tracker_records_every_round_with_its_contributors():
    plan = _plan()
    fed = _federation(plan, dropout={"masked_input": 0.2}, seed=5)
    tracker = DDGTracker(plan, delta=DELTA).attach(fed)
    history = fed.run(3)
    released = [r for r in history if r.completed]
    assert len(released) == len(tracker.epsilons) >= 2
    # The same rounds recorded by hand: one entry per round with its contributors.
    ledger = DDGLedger(delta=DELTA)
    for r in released:
        ledger.record_round(
            noise=plan.noise, contributors=len(r.completed), sensitivity=plan.sensitivity
        )
    assert tracker.epsilon() == ledger.epsilon() and 0 < tracker.epsilon() < math.inf
    assert any(len(r.completed) < CFG.clients_per_round for r in released), "a dropout"
    statement = tracker.statement()
    assert "no single party sees an un-noised sum" in statement.replace("\n", " ")
    assert f"clips its update to L2 norm <= {C:g}" in statement


def test_the_clients_noise_is_in_the_unmasked_sum():
    # Config-driven noise: the clients draw it themselves (OS entropy), no hook passed.
    plan = plan_ddg(
        l2_clip=1.0, dim=20_000, contributors=5, max_clients=5, noise_multiplier=1.0, tail=1e-9
    )
    setup = RoundSetup.create(
        secagg_config(plan, threshold=3), round_index=0, cohort=range(5), dimension=20_000
    )
    rng = np.random.default_rng(1)
    updates = {c: rng.normal(0, 0.003, 20_000) for c in range(5)}
    counts = dict.fromkeys(range(5), 7)
    out = run_round(setup, updates, counts)
    assert out.result is not None
    exact, examples = plain_sum(updates, dict.fromkeys(range(5), 1), setup.codec)
    assert out.result.num_examples == examples == 5  # no count released: one per client
    noise = (out.result.total - exact) * setup.codec.scale
    want = 5 * discrete_gaussian_variance(plan.noise.sigma)
    assert np.var(noise) == pytest.approx(want, rel=0.05)
    assert abs(np.mean(noise)) < 5 * math.sqrt(want / noise.size)


def test_mismatches_are_refused_before_any_round():
    plan = _plan()
    with pytest.raises(ValueError, match="must clip|last client stage"):
        DDGTracker(plan, delta=DELTA).attach(_federation(plan, clip=None))
    with pytest.raises(ValueError, match="ClipUpdate"):  # clients clip looser than the plan's C
        DDGTracker(plan, delta=DELTA).attach(_federation(plan, clip=2 * C))
    wrong_dim = plan_ddg(
        l2_clip=C,
        dim=DIM - 1,
        contributors=4,
        max_clients=CFG.clients_per_round,
        noise_multiplier=1.0,
        tail=1e-12,
    )
    with pytest.raises(ValueError, match="parameters, the model has"):
        DDGTracker(wrong_dim, delta=DELTA).attach(_federation(wrong_dim))
    with pytest.raises(ValueError, match="colluders"):  # t + 1 = 4 contributors at least
        DDGTracker(plan, delta=DELTA, colluders=4).attach(_federation(plan))
    other = _plan(contributors=3)  # a different σ
    with pytest.raises(ValueError, match="does not encode or noise as the plan says"):
        DDGTracker(other, delta=DELTA).attach(_federation(plan))
    plain = Federation(data=tiny_fleet(), runtime=NumpyRuntime(), config=CFG)
    with pytest.raises(ValueError, match="adds no distributed noise"):
        DDGTracker(plan, delta=DELTA).attach(plain)
    released = _federation(plan)
    released.run_round()
    with pytest.raises(ValueError, match="already released"):
        DDGTracker(plan, delta=DELTA).attach(released)


def test_the_budget_refuses_the_round_that_could_exceed_it():
    plan = _plan()
    fed = _federation(plan)
    probe = DDGLedger(delta=DELTA)
    probe.record_round(noise=plan.noise, contributors=4, sensitivity=plan.sensitivity)
    one = probe.epsilon()  # the check before round 1: the fewest contributors (t + 1 = 4)
    probe = DDGLedger(delta=DELTA)
    for n in (6, 4):  # round 1 had all 6; round 2 might end with 4
        probe.record_round(noise=plan.noise, contributors=n, sensitivity=plan.sensitivity)
    two = probe.epsilon()
    assert one < two
    budget = (one + two) / 2
    DDGTracker(plan, delta=DELTA, budget_epsilon=budget).attach(fed)
    fed.run_round()
    with pytest.raises(BudgetExceeded):
        fed.run_round()
    assert fed.rounds_done == 1


def test_a_run_plan_keeps_the_truncation_cost_negligible_for_its_epsilon():
    from fedlab.privacy import plan_ddg_run

    delta, rounds = 1e-3, 20
    plan = plan_ddg_run(
        l2_clip=1.0,
        dim=650,
        contributors=6,
        max_clients=10,
        noise_multiplier=0.5,
        rounds=rounds,
        delta=delta,
    )
    ledger = DDGLedger(delta=delta)
    for _ in range(rounds):
        ledger.record_round(noise=plan.noise, contributors=6, sensitivity=plan.sensitivity)
    eps = ledger.epsilon()
    assert math.isfinite(eps)
    # what truncation adds to δ at that ε is at most ~1e-3 of δ
    assert math.exp(eps) * ledger.truncation_mass() <= 2e-3 * delta
