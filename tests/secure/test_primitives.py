"""Shamir sharing, the SecAgg+ graph and the ChaCha20 mask generator."""

from __future__ import annotations

import itertools
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedlab.secure import neighbourhoods, plan_neighbours
from fedlab.secure.prg import mask
from fedlab.secure.shamir import SHARE_BYTES, combine, split


@settings(derandomize=True, max_examples=40, deadline=None)
@given(n=st.integers(1, 9), data=st.data())
def test_any_threshold_subset_of_shares_recovers_the_secret(n, data):
    t = data.draw(st.integers(1, n))
    secret = data.draw(st.binary(min_size=32, max_size=32))
    xs = data.draw(st.lists(st.integers(1, 500), min_size=n, max_size=n, unique=True))
    shares = split(secret, t, xs)
    assert all(len(s) == SHARE_BYTES for s in shares.values())
    for subset in itertools.islice(itertools.combinations(xs, t), 20):
        assert combine({x: shares[x] for x in subset}, 32) == secret


def test_fewer_than_threshold_shares_do_not_recover_the_secret():
    secret = os.urandom(32)
    shares = split(secret, 3, [1, 2, 3, 4])
    with pytest.raises(ValueError, match="expected length"):  # overwhelmingly a 521-bit value
        combine({1: shares[1], 2: shares[2]}, 32)


@pytest.mark.parametrize(
    ("secret", "t", "xs", "quoted"),
    [
        (b"x" * 65, 1, [1], "64 bytes"),
        (b"x", 0, [1], "0"),
        (b"x", 3, [1, 2], "3"),
        (b"x", 1, [1, 1], r"\[1, 1\]"),
        (b"x", 1, [0], r"\[0\]"),
    ],
)
def test_split_refuses_bad_arguments(secret, t, xs, quoted):
    with pytest.raises(ValueError, match=quoted):
        split(secret, t, xs)


@settings(derandomize=True, max_examples=40, deadline=None)
@given(n=st.integers(3, 40), data=st.data())
def test_the_graph_is_k_regular_symmetric_and_fixed_by_the_seed(n, data):
    k = data.draw(st.sampled_from([n - 1, *range(2, n - 1, 2)]))
    cohort = data.draw(st.lists(st.integers(0, 10**6), min_size=n, max_size=n, unique=True))
    seed = data.draw(st.binary(min_size=16, max_size=16))
    g = neighbourhoods(cohort, k, seed)
    assert set(g) == set(cohort)
    for c, nb in g.items():
        assert len(nb) == k and c not in nb
        assert all(c in g[j] for j in nb)
    assert g == neighbourhoods(cohort, k, seed)


def test_a_different_seed_gives_a_different_graph_and_odd_degree_is_refused():
    cohort = list(range(30))
    assert neighbourhoods(cohort, 4, b"a" * 16) != neighbourhoods(cohort, 4, b"b" * 16)
    with pytest.raises(ValueError, match="got 3"):
        neighbourhoods(cohort, 3, b"a" * 16)


def test_planned_degree_is_sparse_for_large_cohorts_and_complete_for_small():
    k, t = plan_neighbours(10_000, 0.1)
    assert k < 200 and t == k // 2 + 1
    assert plan_neighbours(10, 0.3) == (9, 5)
    with pytest.raises(ValueError, match="0.7"):
        plan_neighbours(100, 0.7)


def test_masks_are_deterministic_per_seed_and_wrap_in_the_ring():
    seed = os.urandom(32)
    a, b = mask(seed, 1000, np.uint32), mask(seed, 1000, np.uint32)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.uint32 and not np.array_equal(a, mask(os.urandom(32), 1000, np.uint32))
    np.testing.assert_array_equal((a + (np.uint32(0) - a)), np.zeros(1000, np.uint32))
    with pytest.raises(ValueError, match="31"):
        mask(b"x" * 31, 10, np.uint32)
