"""Accounting of the distributed discrete Gaussian: checked from above (dp-accounting's
continuous Gaussian) and from below (the exact privacy profile of the 1-D mechanism)."""

from __future__ import annotations

import itertools
import math

import dp_accounting
import mpmath
import numpy as np
import pytest
from dp_accounting.pld import privacy_loss_distribution as pld
from dp_accounting.rdp import rdp_privacy_accountant as rdp_mod
from hypothesis import given, settings
from hypothesis import strategies as st

from fedlab.privacy.ddg import (
    RDP_ORDERS,
    DDGLedger,
    Sensitivity,
    ddg_rdp,
    ddg_tau,
    ddg_zcdp,
    encoded_sensitivity,
    exact_epsilon_1d,
    exact_rdp_1d,
    plan_ddg,
)
from fedlab.secure import RoundSetup, SecAggConfig, run_round
from fedlab.secure.ddg import DistributedDiscreteGaussian, bound_for_tail
from fedlab.secure.fixedpoint import FixedPoint

DELTA = 1e-5


def _untruncated(sigma: float) -> DistributedDiscreteGaussian:
    """A bound so far out that its tail mass is 0.0 in float (η = 0)."""
    return DistributedDiscreteGaussian(sigma=sigma, bound=math.ceil(60 * sigma) + 1)


def _ledger_epsilon(sigma, shares, l2, rounds, dim=1, noise=None, delta=DELTA) -> float:
    ledger = DDGLedger(delta=delta)
    sens = Sensitivity.from_l2(l2, dim=dim, adjacency="replace-one")
    for _ in range(rounds):
        ledger.record_round(
            noise=noise or _untruncated(sigma), contributors=shares, sensitivity=sens
        )
    return ledger.epsilon()


def _gaussian_rdp_epsilon(z: float, rounds: int, delta: float = DELTA) -> float:
    acc = dp_accounting.rdp.RdpAccountant(orders=RDP_ORDERS)
    acc.compose(dp_accounting.GaussianDpEvent(z), rounds)
    return float(acc.get_epsilon(delta))


# -- the formula ---------------------------------------------------------------------------


def test_rdp_is_the_three_term_minimum_of_proposition_14():
    sens = Sensitivity(l2=30.0, l1=200.0, dim=50, adjacency="replace-one")
    sigma, n = 0.8, 6
    tau = 10 * sum(math.exp(-2 * math.pi**2 * sigma**2 * k / (k + 1)) for k in range(1, n))
    assert ddg_tau(sigma, n) == pytest.approx(tau, rel=1e-14)
    for alpha in (1.0, 1.5, 2.0, 10.0, 300.0):
        l2 = 30.0 / (math.sqrt(n) * sigma)
        l1 = 200.0 / (math.sqrt(n) * sigma)
        want = min(
            alpha / 2 * l2**2 + tau * 50,
            alpha / 2 * (l2**2 + 2 * l1 * tau + tau**2 * 50),
            alpha / 2 * (l2 + math.sqrt(50) * tau) ** 2,
        )
        got = ddg_rdp([alpha], sigma=sigma, shares=n, sensitivity=sens)[0]
        assert got == pytest.approx(want, rel=1e-14)
        # never looser than Theorem 1's zCDP corollary (RDP(α) <= α·ρ)
        assert got <= alpha * ddg_zcdp(sigma=sigma, shares=n, sensitivity=sens) * (1 + 1e-12)
    assert ddg_tau(3.0, 1) == 0.0  # one share is a plain discrete Gaussian


@pytest.mark.parametrize(("sigma", "shares"), [(0.5, 2), (0.5, 5), (0.7, 3), (1.0, 10)])
def test_exact_renyi_divergences_respect_the_bound_and_need_tau(sigma, shares):
    orders = [1.5, 2.0, 3.0, 4.0, 8.0]
    exact = exact_rdp_1d(orders, sigma=sigma, shares=shares, sensitivity=1)
    bound = ddg_rdp(
        orders,
        sigma=sigma,
        shares=shares,
        sensitivity=Sensitivity.from_l2(1.0, dim=1, adjacency="replace-one"),
    )
    assert np.all(exact <= bound * (1 + 1e-9)), (exact, bound)
    if sigma == 0.5:
        # a sum of small-σ discrete Gaussians is *less* private than a continuous Gaussian
        # of the same total variance: without τ the bound would be wrong here
        assert np.any(exact > np.asarray(orders) / (2 * shares * sigma**2) * (1 + 1e-6))


@pytest.mark.parametrize("dim", [4, 9, 25])
def test_exact_divergence_of_a_spread_shift_respects_the_tau_d_term(dim):
    # a shift of 1 on every coordinate (Δ2 = √d, Δ1 = d): the noise is independent across
    # coordinates, so the exact divergence is d times the 1-D one and the excess over the
    # continuous Gaussian grows with d, which is what τ·d pays for
    orders = [1.5, 2.0, 3.0, 4.0, 8.0]
    sigma, shares = 0.5, 2
    exact = dim * exact_rdp_1d(orders, sigma=sigma, shares=shares, sensitivity=1)
    sens = Sensitivity(l2=math.sqrt(dim), l1=float(dim), dim=dim, adjacency="zero-out")
    bound = ddg_rdp(orders, sigma=sigma, shares=shares, sensitivity=sens)
    assert np.all(exact <= bound)
    continuous = np.asarray(orders) * dim / (2 * shares * sigma**2)
    assert exact[-1] > continuous[-1] * (1 + 1e-3)


def test_exact_1d_profile_matches_dp_accountings_discrete_gaussian_for_one_share():
    for sigma, shift in ((1.0, 1), (3.0, 2), (5.0, 5)):
        ours = exact_epsilon_1d(
            sigma=sigma, shares=1, sensitivity=shift, rounds=3, delta=DELTA, discretization=1e-3
        )
        theirs = pld.from_discrete_gaussian_mechanism(
            sigma, sensitivity=shift, pessimistic_estimate=False, value_discretization_interval=1e-3
        ).self_compose(3)
        upper = pld.from_discrete_gaussian_mechanism(
            sigma, sensitivity=shift, value_discretization_interval=1e-3
        ).self_compose(3)
        assert ours == pytest.approx(theirs.get_epsilon_for_delta(DELTA), abs=1e-3)
        assert ours <= upper.get_epsilon_for_delta(DELTA)


# -- from above: the continuous Gaussian -----------------------------------------------------


def test_epsilon_approaches_the_continuous_gaussian_as_sigma_grows():
    n, rounds, dim = 10, 10, 1000
    gauss = _gaussian_rdp_epsilon(1.0, rounds)  # central-equivalent multiplier √n·σ/Δ2 = 1
    gaps = []
    for sigma in (0.5, 0.75, 1.0, 2.0, 8.0):
        eps = _ledger_epsilon(sigma, n, math.sqrt(n) * sigma, rounds, dim=dim)
        assert eps >= gauss * (1 - 1e-12)
        gaps.append(eps / gauss - 1)
    assert gaps[0] > 0.5  # at σ = 1/2 the τ·d term dominates
    assert all(a >= b for a, b in itertools.pairwise(gaps)), gaps
    assert gaps[-1] < 1e-9 and gaps[-2] < 1e-9  # τ ~ 1e-16 at σ = 2


# -- from below: the exact 1-D mechanism -----------------------------------------------------

CASES = [  # (σ, contributors, integer sensitivity, rounds)
    (1.0, 10, 3, 10),
    (2.0, 10, 5, 10),
    (2.0, 50, 20, 1),
    (4.0, 20, 10, 100),
    (1.0, 100, 10, 10),
]


@pytest.mark.parametrize(("sigma", "shares", "shift", "rounds"), CASES)
def test_upper_bound_dominates_the_exact_1d_profile_and_is_not_loose(sigma, shares, shift, rounds):
    exact = exact_epsilon_1d(
        sigma=sigma, shares=shares, sensitivity=shift, rounds=rounds, delta=DELTA
    )
    for dim in (1, 100):  # a d-dimensional worst case is at least the 1-D one
        eps = _ledger_epsilon(sigma, shares, float(shift), rounds, dim=dim)
        assert eps >= exact
    eps = _ledger_epsilon(sigma, shares, float(shift), rounds)
    assert ddg_tau(sigma, shares) < 1e-3
    assert eps <= 2 * exact  # measured 1.06-1.08x: the RDP-to-(ε, δ) conversion
    # a sensitivity bug of 2x would be caught from below
    assert _ledger_epsilon(sigma, shares, shift / 2, rounds) < exact


def test_upper_bound_dominates_where_tau_is_large():
    exact = exact_epsilon_1d(sigma=0.5, shares=5, sensitivity=1, rounds=10, delta=DELTA)
    assert _ledger_epsilon(0.5, 5, 1.0, 10) >= exact


# -- truncation ------------------------------------------------------------------------------


def test_truncation_mass_is_the_computed_tail_and_enters_delta():
    noise = DistributedDiscreteGaussian(sigma=3.0, bound=19)  # η ~ 7e-8: it shows in ε
    mpmath.mp.dps = 40
    s2 = 2 * mpmath.mpf(3.0) ** 2
    tail = 2 * mpmath.fsum(mpmath.exp(-(mpmath.mpf(k) ** 2) / s2) for k in range(20, 400))
    tail /= 1 + 2 * mpmath.fsum(mpmath.exp(-(mpmath.mpf(k) ** 2) / s2) for k in range(1, 400))
    ledger = DDGLedger(delta=DELTA)
    sens = Sensitivity.from_l2(4.0, dim=40, adjacency="replace-one")
    for contributors in (10, 10, 7):
        ledger.record_round(noise=noise, contributors=contributors, sensitivity=sens)
    draws = (10 + 10 + 7) * 40
    eta = float(1 - (1 - tail) ** draws)
    assert ledger.truncation_mass() == pytest.approx(eta, rel=1e-8)
    assert ledger.truncation_mass() >= eta
    eps = ledger.epsilon()
    d0, _ = rdp_mod.compute_delta(ledger.orders, ledger.rdp(), eps)
    assert ledger.delta_for(eps) == pytest.approx((d0 + math.exp(eps) * eta) / (1 - eta))
    assert ledger.delta_for(eps) <= DELTA
    assert ledger.delta_for(eps * (1 - 1e-6)) > DELTA  # the smallest such ε
    untruncated = DDGLedger(delta=DELTA)
    for contributors in (10, 10, 7):
        untruncated.record_round(
            noise=_untruncated(3.0), contributors=contributors, sensitivity=sens
        )
    assert untruncated.truncation_mass() == 0.0
    assert untruncated.epsilon() < eps < 1.1 * untruncated.epsilon()
    # one step tighter, η grows ~9x and e^ε·η alone exceeds δ: no guarantee at all
    tighter = DDGLedger(delta=DELTA)
    for contributors in (10, 10, 7):
        tighter.record_round(
            noise=DistributedDiscreteGaussian(sigma=3.0, bound=18),
            contributors=contributors,
            sensitivity=sens,
        )
    assert tighter.epsilon() == math.inf


def test_a_bound_too_tight_for_the_epsilon_gives_no_guarantee():
    ledger = DDGLedger(delta=DELTA)
    noise = DistributedDiscreteGaussian(sigma=2.0, bound=4)  # 5 % of draws redrawn
    ledger.record_round(
        noise=noise,
        contributors=10,
        sensitivity=Sensitivity.from_l2(5.0, dim=10, adjacency="replace-one"),
    )
    assert ledger.epsilon() == math.inf
    assert "no finite guarantee" in ledger.privacy_statement()


# -- contributors, colluders, dropouts --------------------------------------------------------


def test_fewer_contributors_and_colluders_cost_privacy():
    sens = Sensitivity.from_l2(40.0, dim=1000, adjacency="replace-one")
    noise = _untruncated(20.0)

    def eps(contributors, colluders=0):
        ledger = DDGLedger(delta=DELTA, colluders=colluders)
        for n in contributors:
            ledger.record_round(noise=noise, contributors=n, sensitivity=sens)
        return ledger.epsilon()

    assert eps([10, 10]) < eps([10, 7]) < eps([7, 7])
    assert eps([10, 10], colluders=3) == eps([7, 7])
    ledger = DDGLedger(delta=DELTA)
    ledger.record_round(noise=noise, contributors=10, sensitivity=sens)
    nxt = ledger.epsilon_after_next(noise=noise, contributors=7, sensitivity=sens)
    assert nxt == eps([10, 7]) and ledger.rounds == 1
    with pytest.raises(ValueError, match="no noise"):
        eps([3], colluders=3)


def test_ledger_records_the_contributors_of_a_real_round():
    plan = plan_ddg(
        l2_clip=1.0, dim=50, contributors=6, max_clients=8, noise_multiplier=2.0, tail=1e-30
    )
    config = SecAggConfig(threshold=5, clip=1.0, weighted=False, noise_bound=plan.noise.bound)
    setup = RoundSetup.create(config, round_index=0, cohort=range(8), dimension=50)
    assert setup.codec == plan.codec
    rng = np.random.default_rng(3)
    updates = {c: rng.uniform(-0.1, 0.1, 50) for c in range(8)}
    out = run_round(
        setup,
        updates,
        dict.fromkeys(range(8), 1),
        drop={"masked_input": {0, 5}},
        noise=plan.noise.noise(rng),
    )
    assert out.ok and len(out.result.contributors) == 6
    sens = encoded_sensitivity(l2_clip=1.0, codec=setup.codec, dim=50)
    assert sens == plan.sensitivity
    ledger = DDGLedger(delta=DELTA)
    ledger.record_round(
        noise=plan.noise, contributors=len(out.result.contributors), sensitivity=sens
    )
    full = DDGLedger(delta=DELTA)
    full.record_round(noise=plan.noise, contributors=8, sensitivity=sens)
    assert ledger.entries[0].contributors == 6
    assert ledger.entries[0].central_noise_multiplier == pytest.approx(2.0)
    assert full.epsilon() < ledger.epsilon() < _gaussian_rdp_epsilon(2.0, 1) * 1.001


def test_identical_rounds_are_kept_as_one_entry():
    ledger = DDGLedger(delta=DELTA)
    sens = Sensitivity.from_l2(10.0, dim=5, adjacency="replace-one")
    for n in (10, 10, 10, 9):
        ledger.record_round(noise=_untruncated(5.0), contributors=n, sensitivity=sens)
    assert [(e.contributors, e.count) for e in ledger.entries] == [(10, 3), (9, 1)]
    assert ledger.rounds == 4


# -- sensitivity of fedlab's encoding ---------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(
    dim=st.integers(1, 300),
    clients=st.integers(1, 200),
    coord_clip=st.floats(0.05, 2.0),
    seed=st.integers(0, 2**32 - 1),
    shape=st.sampled_from(["random", "axis", "flat"]),
)
def test_encoded_updates_stay_within_the_derived_sensitivity(dim, clients, coord_clip, seed, shape):
    codec = FixedPoint(clip=coord_clip, max_clients=clients, weighted=False, noise_bound=7)
    l2_clip = 1.0
    rng = np.random.default_rng(seed)

    def clipped_update():
        if shape == "axis":
            u = np.zeros(dim)
            u[rng.integers(dim)] = rng.choice([-1.0, 1.0])
        elif shape == "flat":  # every coordinate rounds up by almost ½ at the worst scale
            u = np.full(dim, 1.0 / math.sqrt(dim)) * rng.choice([-1.0, 1.0], dim)
        else:
            u = rng.normal(size=dim)
        return u * (l2_clip / max(np.linalg.norm(u), 1e-300)) * rng.uniform(0.5, 1.0)

    def q(u):
        return codec.encode(u, 1)[1:].view(np.int32).astype(np.int64)

    one = encoded_sensitivity(l2_clip=l2_clip, codec=codec, dim=dim, adjacency="zero-out")
    pair = encoded_sensitivity(l2_clip=l2_clip, codec=codec, dim=dim)
    a, b = q(clipped_update()), q(clipped_update())
    assert np.linalg.norm(a) <= one.l2 and np.linalg.norm(b) <= one.l2
    assert np.linalg.norm(a - b) <= pair.l2
    assert np.abs(a - b).sum() <= pair.l1
    assert pair.l2 == pytest.approx(2 * one.l2)


def test_sensitivity_of_an_axis_update_is_almost_attained():
    codec = FixedPoint(clip=1.0, max_clients=10, weighted=False)
    sens = encoded_sensitivity(l2_clip=1.0, codec=codec, dim=1000)
    u = np.zeros(1000)
    u[0] = 1.0
    q = codec.encode(u, 1)[1:].view(np.int32).astype(np.int64)
    qn = codec.encode(-u, 1)[1:].view(np.int32).astype(np.int64)
    attained = np.linalg.norm(q - qn)
    assert attained <= sens.l2 <= attained + math.sqrt(1000) + 2  # only the rounding slack


def test_weighted_codec_needs_public_counts():
    codec = FixedPoint(clip=1.0, max_clients=10, max_examples=50, weighted=True)
    with pytest.raises(ValueError, match="num_examples"):
        encoded_sensitivity(l2_clip=1.0, codec=codec, dim=10)
    sens = encoded_sensitivity(l2_clip=1.0, codec=codec, dim=10, example_counts_public=True)
    assert "public" in sens.note
    unweighted = FixedPoint(clip=1.0, max_clients=10, weighted=False)
    assert sens.l2 == encoded_sensitivity(l2_clip=1.0, codec=unweighted, dim=10).l2


def test_constructors_are_strict():
    with pytest.raises(ValueError, match="l1"):
        Sensitivity(l2=2.0, l1=5.0, dim=100, adjacency="replace-one")  # l1 <= l2² = 4
    with pytest.raises(ValueError, match="adjacency"):
        Sensitivity.from_l2(2.0, dim=3, adjacency="add-remove")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="delta"):
        DDGLedger(delta=0.0)
    ledger = DDGLedger(delta=DELTA, adjacency="zero-out")
    with pytest.raises(ValueError, match="replace-one"):
        ledger.record_round(
            noise=_untruncated(2.0),
            contributors=3,
            sensitivity=Sensitivity.from_l2(2.0, dim=3, adjacency="replace-one"),
        )
    assert ledger.entries == []
    with pytest.raises(ValueError, match="1/2"):
        ddg_rdp(
            [2.0],
            sigma=0.3,
            shares=2,
            sensitivity=Sensitivity.from_l2(1.0, dim=1, adjacency="zero-out"),
        )


# -- the statement and the plan ---------------------------------------------------------------


def test_statement_names_the_trust_model_and_every_assumption():
    ledger = DDGLedger(delta=DELTA, colluders=2)
    assert "No rounds recorded" in ledger.privacy_statement()
    sens = Sensitivity.from_l2(100.0, dim=20, adjacency="replace-one", note="derived here")
    ledger.record_round(noise=_untruncated(40.0), contributors=12, sensitivity=sens)
    text = ledger.privacy_statement(["clients clip to C = 1"])
    eps = ledger.epsilon()
    assert f"ε = {eps:.4g} at δ = 1e-05" in text
    for phrase in (
        "no single party sees an un-noised sum",
        "honest-but-curious",
        "2 contributor(s)",
        "10 noise shares",
        "Dropouts reduce the noise",
        "No subsampling amplification",
        "Proposition 14",
        "derived here",
        "clients clip to C = 1",
    ):
        assert phrase in " ".join(text.split()), phrase  # wrapped lines joined


def test_plan_fits_the_ring_and_hits_the_noise_multiplier():
    plan = plan_ddg(
        l2_clip=1.0,
        dim=20_000,
        contributors=40,
        max_clients=50,
        noise_multiplier=1.0,
        tail=1e-15,
    )
    assert plan.codec.noise_bound == plan.noise.bound
    assert math.sqrt(40) * plan.noise.sigma / plan.sensitivity.l2 == pytest.approx(1.0)
    needed = bound_for_tail(plan.noise.sigma, 1e-15, draws=50 * 20_000)
    assert needed <= plan.noise.bound
    # the smallest such bound: one less leaves more levels, more σ, and does not cover it
    smaller = FixedPoint(clip=1.0, max_clients=50, weighted=False, noise_bound=plan.noise.bound - 1)
    sens = encoded_sensitivity(l2_clip=1.0, codec=smaller, dim=20_000)
    sigma = sens.l2 / math.sqrt(40)
    assert bound_for_tail(sigma, 1e-15, draws=50 * 20_000) > plan.noise.bound - 1
    SecAggConfig(threshold=26, clip=1.0, weighted=False, noise_bound=plan.noise.bound)
