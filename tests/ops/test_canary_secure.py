"""A canary whose devices report only through secure aggregation: the server unmasks
n, Σd and Σd², decides as the plain paired t test does, and never sees one device's
accuracy."""

from __future__ import annotations

import numpy as np
import pytest

from fedlab.ops.canary import CanaryPolicy, bound_from_moments, noninferiority_bound, run_canary
from fedlab.ops.registry import Provenance, Registry
from fedlab.secure import SecAggConfig
from tests.ops.test_canary import RUNTIME, candidate

# 10 canary devices (25 % of 40): the complete graph has k = 9, so t in 5..9
SECURE = SecAggConfig(threshold=6, clip=1.0, max_examples=1, ring_bits=64, weighted=False)


def test_the_bound_from_sums_equals_the_bound_from_values() -> None:
    rng = np.random.default_rng(3)
    for _ in range(30):
        d = rng.normal(-0.01, 0.03, size=int(rng.integers(3, 40)))
        exact = noninferiority_bound(d, alpha=0.05)
        got = bound_from_moments(len(d), float(d.sum()), float((d * d).sum()), alpha=0.05)
        assert got == pytest.approx(exact, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_a_secure_canary_decides_like_the_plain_one(tmp_path, sensor_fleet, production, seed):
    holdout = sensor_fleet.holdout()
    for secure in (None, SECURE):
        reg = Registry(tmp_path / f"{seed}-{secure is not None}")
        base = reg.register(production, label="v1").id
        reg.promote(base)
        policy = CanaryPolicy(fraction=0.25, seed=seed, tolerance=0.03, secure=secure)
        decisions = []
        for poisoned in (0.3, 0.0):
            version = reg.register(
                candidate(sensor_fleet, production, seed=seed, poisoned=poisoned),
                provenance=Provenance(parent=base, rounds=3),
            ).id
            decisions.append(
                run_canary(reg, version, holdout=holdout, evaluate=RUNTIME.accuracy, policy=policy)
            )
        if secure is None:
            plain = decisions
            continue
        for s, p in zip(decisions, plain, strict=True):
            assert s.promoted == p.promoted
            # fixed-point resolution of the ring: the bounds agree far below the tolerance
            assert s.lower_bound == pytest.approx(p.lower_bound, abs=1e-6)
            assert s.differences == () and np.isnan(s.candidate_accuracy)
        assert [d.promoted for d in decisions] == [False, True]


def test_a_secure_canary_needs_the_t_test_and_a_ring_for_differences() -> None:
    with pytest.raises(ValueError, match="test='paired_t'"):
        CanaryPolicy(secure=SECURE, test="bootstrap")
    with pytest.raises(ValueError, match="clip >= 1"):
        CanaryPolicy(secure=SecAggConfig(threshold=3, clip=0.5, weighted=False))
    with pytest.raises(TypeError, match="SecAggConfig"):
        CanaryPolicy(secure={"threshold": 3})  # type: ignore[arg-type]


def test_a_secure_canary_that_falls_short_reveals_no_device_value(
    tmp_path, sensor_fleet, production
):
    reg = Registry(tmp_path)
    base = reg.register(production).id
    reg.promote(base)
    other = reg.register(candidate(sensor_fleet, production, seed=5, rounds=1)).id
    policy = CanaryPolicy(device_ids=(1, 2, 3), min_devices=5, secure=SECURE)
    decision = run_canary(
        reg, other, holdout=sensor_fleet.holdout(), evaluate=RUNTIME.accuracy, policy=policy
    )
    assert not decision.promoted and "only 3 canary devices" in decision.reason
    assert decision.differences == ()
    assert np.isnan(decision.candidate_accuracy) and np.isnan(decision.baseline_accuracy)
