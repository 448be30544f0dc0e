"""The device half of distributed DP: the discrete Gaussian sampler, its truncation, and its
noise through a real secure-aggregation round."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from fedlab.secure import RoundSetup, SecAggConfig, run_round
from fedlab.secure.ddg import (
    DistributedDiscreteGaussian,
    bound_for_tail,
    discrete_gaussian_log_tail,
    discrete_gaussian_pmf,
    discrete_gaussian_tail,
    discrete_gaussian_variance,
    sample_discrete_gaussian,
)


def _mp_tail(sigma: float, bound: int) -> float:
    """P(|Z| > bound) with 50-digit arithmetic, straight from the definition."""
    mpmath.mp.dps = 50
    s2 = 2 * mpmath.mpf(sigma) ** 2
    top = int(bound + 60 * sigma + 10)
    tail = mpmath.fsum(mpmath.exp(-(mpmath.mpf(k) ** 2) / s2) for k in range(bound + 1, top))
    norm = 1 + 2 * mpmath.fsum(mpmath.exp(-(mpmath.mpf(k) ** 2) / s2) for k in range(1, top))
    return float(2 * tail / norm)


def _chi2_gof(samples: np.ndarray, sigma: float, pool: int) -> float:
    """Chi-square p-value of samples against the exact pmf; each tail pooled into ±pool."""
    k = np.arange(-pool, pool + 1)
    probs = discrete_gaussian_pmf(sigma, k)
    rest = 1.0 - probs.sum()
    probs[0] += rest / 2
    probs[-1] += rest / 2
    observed = np.bincount(np.clip(samples, -pool, pool) + pool, minlength=2 * pool + 1)
    return float(stats.chisquare(observed, probs * samples.size).pvalue)


# -- exact distribution ------------------------------------------------------------------------


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.5, 7.0])
def test_pmf_sums_to_one_and_matches_the_definition(sigma):
    k = np.arange(-int(20 * sigma) - 5, int(20 * sigma) + 6)
    pmf = discrete_gaussian_pmf(sigma, k)
    assert abs(pmf.sum() - 1) < 1e-13
    raw = np.exp(-(k.astype(float) ** 2) / (2 * sigma**2))
    np.testing.assert_allclose(pmf, raw / raw.sum(), rtol=1e-12)


def test_large_sigma_uses_poisson_summation_and_agrees_with_direct_sums():
    for sigma in (49.0, 51.0, 400.0):
        k = np.arange(-int(45 * sigma), int(45 * sigma) + 1).astype(float)
        raw = np.exp(-(k**2) / (2 * sigma**2))
        direct_var = float(np.sum(k**2 * raw) / raw.sum())
        assert discrete_gaussian_variance(sigma) == pytest.approx(direct_var, rel=1e-12)
        np.testing.assert_allclose(
            discrete_gaussian_pmf(sigma, np.array([0, 7, -300])),
            raw[np.searchsorted(k, [0, 7, -300])] / raw.sum(),
            rtol=1e-12,
        )


def test_variance_is_slightly_below_sigma_squared():
    assert discrete_gaussian_variance(0.5) == pytest.approx(0.86 * 0.25, rel=1e-3)
    assert 0 < 1 - discrete_gaussian_variance(1.0) < 1e-6
    assert discrete_gaussian_variance(3.0) <= 9.0


@pytest.mark.parametrize("sigma", [0.5, 1.0, 3.0, 12.5, 180.0])
def test_samples_follow_the_exact_pmf(sigma):
    rng = np.random.default_rng(20260)
    z = sample_discrete_gaussian(sigma, 200_000, rng)
    assert z.dtype == np.int64 and z.shape == (200_000,)
    pool = max(1, int(3 * sigma))
    assert _chi2_gof(z, sigma, pool) > 1e-3
    var = discrete_gaussian_variance(sigma)
    # the sample variance's standard error is ~ var·sqrt(2/N) = 0.32 % of it
    assert z.var() == pytest.approx(var, rel=0.02)
    assert abs(z.mean()) < 5 * math.sqrt(var / z.size)


def test_sampler_agrees_with_tensorflow_privacys_sampler():
    import tensorflow as tf
    from tensorflow_privacy.privacy.dp_query import discrete_gaussian_utils as tfdg

    sigma, n = 6, 100_000
    tf.random.set_seed(7)
    theirs = tfdg.sample_discrete_gaussian(scale=sigma, shape=(n,), dtype=tf.int64).numpy()
    ours = sample_discrete_gaussian(float(sigma), n, np.random.default_rng(7))
    edges = np.arange(-3 * sigma, 3 * sigma + 2) - 0.5
    edges = np.concatenate([[-np.inf], edges, [np.inf]])
    table = np.vstack([np.histogram(ours, edges)[0], np.histogram(theirs, edges)[0]])
    assert stats.chi2_contingency(table).pvalue > 1e-3
    assert stats.ks_2samp(ours, theirs).pvalue > 1e-3
    # and both against the exact law
    assert _chi2_gof(theirs, sigma, 3 * sigma) > 1e-3


def test_sampler_refuses_bad_arguments():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="-1"):
        sample_discrete_gaussian(-1.0, 3, rng)
    with pytest.raises(TypeError, match="Generator"):
        sample_discrete_gaussian(1.0, 3, np.random.RandomState(0))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="size"):
        sample_discrete_gaussian(1.0, (2, -1), rng)
    assert sample_discrete_gaussian(2.0, (0, 4), rng).shape == (0, 4)


# -- the tail and the truncation ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("sigma", "bound"), [(0.5, 2), (1.0, 3), (3.0, 20), (40.0, 300), (250.0, 2300)]
)
def test_tail_is_computed_from_the_pmf(sigma, bound):
    exact = _mp_tail(sigma, bound)
    got = discrete_gaussian_tail(sigma, bound)
    assert exact <= got <= exact * (1 + 1e-8)


def test_tail_for_large_sigma_is_a_tight_upper_bound():
    sigma, bound = 2.0e4, 180_000  # beyond the terms summed one by one
    # midpoint rule on a convex decreasing function: the integral from b + 1/2 bounds it
    lo = 0.5 * math.erfc((bound + 1) / (sigma * math.sqrt(2)))
    got = discrete_gaussian_tail(sigma, bound)
    mid = math.erfc((bound + 0.5) / (sigma * math.sqrt(2)))
    assert 2 * lo <= got <= mid * (1 + 1e-8)
    assert got == pytest.approx(mid, rel=1e-6)


def test_log_tail_does_not_underflow():
    lt = discrete_gaussian_log_tail(1.0, 60)  # ~ e^-1800
    assert -1900 < lt < -1700
    assert discrete_gaussian_tail(1.0, 60) == 0.0  # below the smallest float


@pytest.mark.parametrize("sigma", [0.5, 1.0, 7.3, 1234.5])
def test_bound_for_tail_is_the_smallest_sufficient_bound(sigma):
    b = bound_for_tail(sigma, 1e-9, draws=1000)
    assert 1000 * discrete_gaussian_tail(sigma, b) <= 1e-9
    assert b == 0 or 1000 * discrete_gaussian_tail(sigma, b - 1) > 1e-9


def test_truncated_noise_is_the_conditioned_discrete_gaussian():
    ddg = DistributedDiscreteGaussian(sigma=3.0, bound=3)  # 32 % of draws redrawn
    z = ddg.sample(300_000, np.random.default_rng(5))
    assert np.abs(z).max() == 3
    k = np.arange(-3, 4)
    cond = discrete_gaussian_pmf(3.0, k)
    cond /= cond.sum()
    observed = np.bincount(z + 3, minlength=7)
    assert stats.chisquare(observed, cond * z.size).pvalue > 1e-3
    exact = 1 - discrete_gaussian_pmf(3.0, k).sum()
    assert exact <= ddg.tail <= exact * (1 + 2e-9)  # the computed tail carries 1e-9 slack


@settings(max_examples=60, deadline=None)
@given(
    sigma=st.floats(0.5, 300.0),
    slack=st.floats(1.0, 4.0),
    shape=st.lists(st.integers(0, 40), min_size=1, max_size=3),
    seed=st.integers(0, 2**32 - 1),
)
def test_hook_never_returns_a_value_beyond_the_bound(sigma, slack, shape, seed):
    ddg = DistributedDiscreteGaussian(sigma=sigma, bound=math.ceil(slack * sigma))
    hook = ddg.noise(np.random.default_rng(seed))
    z = hook(np.zeros(tuple(shape), dtype=np.int64))
    assert z.shape == tuple(shape) and z.dtype == np.int64
    assert z.size == 0 or int(np.abs(z).max()) <= ddg.bound


def test_config_is_strict_and_round_trips():
    ddg = DistributedDiscreteGaussian.for_tail(sigma=40.0, tail=1e-12, draws=10**6)
    assert DistributedDiscreteGaussian.from_dict(ddg.to_dict()) == ddg
    assert ddg.to_dict() == {"sigma": 40.0, "bound": ddg.bound}
    with pytest.raises(ValueError, match="0.4"):
        DistributedDiscreteGaussian(sigma=0.4, bound=10)
    with pytest.raises(ValueError, match="bound=2"):
        DistributedDiscreteGaussian(sigma=3.0, bound=2)
    with pytest.raises(TypeError, match="bound"):
        DistributedDiscreteGaussian(sigma=3.0, bound=4.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="sigma"):
        DistributedDiscreteGaussian(sigma="3", bound=4)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Generator"):
        ddg.noise(42)  # type: ignore[arg-type]


def test_device_layer_samples_without_tensorflow_or_scipy():
    script = (
        "import sys\n"
        "for m in ('tensorflow', 'scipy', 'dp_accounting'): sys.modules[m] = None\n"
        "import numpy as np\n"
        "from fedlab.secure.ddg import DistributedDiscreteGaussian\n"
        "d = DistributedDiscreteGaussian.for_tail(sigma=1e4, tail=1e-20, draws=10**7)\n"
        "z = d.noise()(np.zeros(1000, dtype=np.int64))\n"
        "print(int(np.abs(z).max()) <= d.bound)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "True"


# -- end to end through secure aggregation -----------------------------------------------------


def _round(cohort: int, dim: int, ddg: DistributedDiscreteGaussian, drop, seed: int):
    config = SecAggConfig(
        threshold=cohort // 2 + 1, clip=1.0, weighted=False, noise_bound=ddg.bound
    )
    setup = RoundSetup.create(
        config,
        round_index=0,
        cohort=range(cohort),
        dimension=dim,
        seed=f"ddg e2e {seed}".encode().ljust(32, b"."),
    )
    rng = np.random.default_rng(seed)
    updates = {c: rng.uniform(-0.3, 0.3, dim) for c in range(cohort)}
    out = run_round(
        setup, updates, dict.fromkeys(range(cohort), 1), drop=drop, noise=ddg.noise(rng)
    )
    assert out.ok, out.failure
    codec = setup.codec
    result = out.result
    expected = sum(
        codec.encode(updates[c], 1)[1:].view(np.int32).astype(np.int64) for c in result.contributors
    )
    noise = np.rint(result.total * codec.scale).astype(np.int64) - expected
    return result, codec, noise


@pytest.mark.parametrize(
    ("drop", "contributors"),
    [({}, 10), ({"masked_input": {1, 4, 8}}, 7), ({"unmask": {2, 5}}, 10)],
)
def test_unmasked_sum_carries_the_contributors_noise_only(drop, contributors):
    ddg = DistributedDiscreteGaussian.for_tail(sigma=40.0, tail=1e-9, draws=10 * 20_000)
    result, codec, noise = _round(10, 20_000, ddg, drop, seed=contributors + len(drop))
    assert len(result.contributors) == contributors
    # integer noise, exactly the sum of the contributors' draws
    assert int(np.abs(noise).max()) <= contributors * ddg.bound
    var = contributors * ddg.variance
    # the sample variance of 20 000 coordinates has ~1 % standard error
    assert noise.var() == pytest.approx(var, rel=0.05)
    assert (noise / codec.scale).var() == pytest.approx(var / codec.scale**2, rel=0.05)
    assert abs(noise.mean()) < 5 * math.sqrt(var / noise.size)
