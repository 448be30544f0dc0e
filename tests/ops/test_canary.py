"""Canary rollout on a real registry and a real federation of simulated devices: healthy
candidates are promoted, broken ones never leave the canary cohort. No TensorFlow."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from scipy import stats

from fedlab.federated import Federation, Pipeline
from fedlab.ops.canary import CanaryPolicy, canary_cohort, noninferiority_bound, run_canary
from fedlab.ops.registry import Provenance, Registry, RegistryError
from fedlab.ops.simulation import SignFlipAttack, SoftmaxRuntime
from tests.ops.conftest import OPS_CFG

RUNTIME = SoftmaxRuntime()


def candidate(fleet, start, *, seed: int, poisoned: float = 0.0, rounds: int = 3):
    """Continue training from ``start``; with ``poisoned`` a share of devices sign-flips ×10."""
    bad = frozenset(range(0, fleet.num_devices, round(1 / poisoned))) if poisoned else frozenset()
    fed = Federation(
        data=fleet.dataset(),
        runtime=SoftmaxRuntime(initial=start),
        config=replace(OPS_CFG, seed=seed),
        pipeline=Pipeline().with_stages(client=[SignFlipAttack(bad)]),
    )
    fed.run(rounds)
    return fed.weights


@pytest.mark.parametrize("alpha", [0.05, 0.1])
def test_the_paired_t_bound_decides_as_scipys_one_sided_t_test(alpha) -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        d = rng.normal(rng.uniform(-0.05, 0.02), 0.03, size=int(rng.integers(3, 30)))
        tol = 0.02
        bound = noninferiority_bound(d, alpha=alpha)
        p = stats.ttest_1samp(d + tol, 0.0, alternative="greater").pvalue
        assert (bound > -tol) == (p < alpha)


def test_the_bootstrap_bound_covers_the_mean_at_its_level() -> None:
    rng = np.random.default_rng(1)
    misses = sum(
        noninferiority_bound(rng.normal(0, 1, 40), alpha=0.1, test="bootstrap", seed=s) > 0
        for s in range(300)
    )
    assert 0.04 < misses / 300 < 0.18  # a one-sided 90 % bound exceeds the true mean ~10 %


def test_policy_and_bound_refuse_bad_input() -> None:
    for bad in (
        {"fraction": 0},
        {"alpha": 0.7},
        {"device_ids": (1, 1)},
        {"test": "z"},
        {"min_devices": 1},
        {"tolerance": -0.1},
    ):
        with pytest.raises(ValueError, match=next(iter(bad))):
            CanaryPolicy(**bad)
    with pytest.raises(ValueError, match="at least 2"):
        noninferiority_bound([0.1], alpha=0.05)
    with pytest.raises(ValueError, match="not in a fleet of 5"):
        canary_cohort(5, CanaryPolicy(device_ids=(7,)))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_healthy_promoted_and_broken_never_beyond_the_canary(
    tmp_path, sensor_fleet, production, seed
) -> None:
    reg = Registry(tmp_path)
    base = reg.register(production, label="v1").id
    reg.promote(base)
    reg.report_running(range(sensor_fleet.num_devices), base)
    policy = CanaryPolicy(fraction=0.25, seed=seed, tolerance=0.03)
    holdout = sensor_fleet.holdout()

    broken = reg.register(
        candidate(sensor_fleet, production, seed=seed, poisoned=0.3),
        provenance=Provenance(parent=base, rounds=3),
        label="poisoned",
    ).id
    decision = run_canary(reg, broken, holdout=holdout, evaluate=RUNTIME.accuracy, policy=policy)
    assert not decision.promoted and decision.lower_bound < -policy.tolerance
    assert reg.current() == base, "production never points at the broken version"
    exposed = {e.version for e in reg.audit_log(action="promote") if e.channel == "production"}
    assert broken not in exposed
    assert set(reg.running().values()) == {base}, "the canary cohort was rolled back"
    starts = [e for e in reg.audit_log(action="promote") if e.version == broken]
    assert len(starts) == 1 and starts[0].channel == "canary"
    assert set(starts[0].detail["cohort"]) == set(decision.cohort)
    assert len(decision.cohort) == math.ceil(0.25 * sensor_fleet.num_devices)
    assert [e.action for e in reg.audit_log()][-2:] == ["promote", "auto_rollback"]
    logged = reg.audit_log(action="canary_decision")[-1].detail
    assert logged["promoted"] is False and "differences" not in logged  # aggregates only

    healthy = reg.register(
        candidate(sensor_fleet, production, seed=seed),
        provenance=Provenance(parent=base, rounds=3),
        label="healthy",
    ).id
    decision = run_canary(reg, healthy, holdout=holdout, evaluate=RUNTIME.accuracy, policy=policy)
    assert decision.promoted, decision.reason
    assert reg.current() == healthy and set(reg.running().values()) == {healthy}


def test_too_few_reports_is_a_rejection_and_the_candidate_must_differ(
    tmp_path, sensor_fleet, production
) -> None:
    reg = Registry(tmp_path)
    base = reg.register(production).id
    reg.promote(base)
    with pytest.raises(RegistryError, match="already on 'production'"):
        run_canary(reg, base, holdout=sensor_fleet.holdout(), evaluate=RUNTIME.accuracy)
    other = reg.register(candidate(sensor_fleet, production, seed=9, rounds=1)).id
    nan_device = lambda w, data: math.nan if data.client_id % 2 else RUNTIME.accuracy(w, data)  # noqa: E731
    policy = CanaryPolicy(device_ids=(1, 3, 5, 7, 8), min_devices=2)
    decision = run_canary(
        reg, other, holdout=sensor_fleet.holdout(), evaluate=nan_device, policy=policy
    )
    assert not decision.promoted and "only 1 canary devices reported" in decision.reason
    assert reg.current() == base
