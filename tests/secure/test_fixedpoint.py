"""Fixed-point encoding: exact within the resolution, headroom for the cohort, strict inputs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedlab.secure import FixedPoint


@settings(derandomize=True, max_examples=60, deadline=None)
@given(
    n=st.integers(1, 40),
    bits=st.sampled_from([32, 64]),
    weighted=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_sum_of_encodings_decodes_to_the_float_sum_within_the_bound(n, bits, weighted, seed):
    rng = np.random.default_rng(seed)
    codec = FixedPoint(clip=2.0, max_clients=n, max_examples=30, ring_bits=bits, weighted=weighted)
    xs = rng.uniform(-3, 3, size=(n, 50))  # some coordinates beyond the clip
    ns = rng.integers(0, 40, size=n)  # some counts beyond the cap
    total = np.zeros(51, dtype=codec.dtype)
    for x, k in zip(xs, ns, strict=True):
        total += codec.encode(x, int(k))
    vec, examples = codec.decode_sum(total)
    capped = np.minimum(ns, 30)
    w = capped if weighted else np.ones(n)
    expected = (w[:, None] * np.clip(xs, -2, 2)).sum(axis=0)
    assert examples == int(capped.sum())
    assert np.max(np.abs(vec - expected)) <= codec.sum_error(n)


def test_extreme_values_do_not_wrap_for_a_full_cohort():
    codec = FixedPoint(clip=1.0, max_clients=100, max_examples=1000)
    total = np.zeros(3, dtype=codec.dtype)
    for _ in range(100):
        total += codec.encode(np.array([1.0, -1.0]), 1000)
    vec, examples = codec.decode_sum(total)
    assert examples == 100_000
    np.testing.assert_allclose(vec, [100_000.0, -100_000.0], atol=codec.sum_error(100))


def test_a_32_bit_ring_costs_what_float32_costs():
    assert FixedPoint(clip=1.0, max_clients=100).encode(np.zeros(10), 1).nbytes == 4 * 11


@pytest.mark.parametrize(
    ("kwargs", "error", "quoted"),
    [
        ({"clip": -1.0, "max_clients": 2}, ValueError, "-1.0"),
        ({"clip": float("nan"), "max_clients": 2}, ValueError, "nan"),
        ({"clip": "1", "max_clients": 2}, TypeError, "'1'"),
        ({"clip": 1.0, "max_clients": 0}, ValueError, "0"),
        ({"clip": 1.0, "max_clients": 2.5}, TypeError, "2.5"),
        ({"clip": 1.0, "max_clients": 2, "ring_bits": 16}, ValueError, "16"),
        ({"clip": 1.0, "max_clients": 2, "noise_bound": -1}, ValueError, "-1"),
        ({"clip": 1.0, "max_clients": 70_000, "max_examples": 70_000}, ValueError, "ring_bits=64"),
    ],
)
def test_constructor_refuses_bad_values_and_quotes_them(kwargs, error, quoted):
    with pytest.raises(error, match=quoted):
        FixedPoint(**kwargs)


def test_encode_refuses_non_finite_updates_and_bad_counts():
    codec = FixedPoint(clip=1.0, max_clients=2)
    with pytest.raises(ValueError, match="non-finite"):
        codec.encode(np.array([0.0, np.inf]), 1)
    with pytest.raises(ValueError, match="-3"):
        codec.encode(np.zeros(2), -3)
    with pytest.raises(TypeError, match="2.0"):
        codec.encode(np.zeros(2), 2.0)  # type: ignore[arg-type]


def test_noise_hook_must_stay_within_its_headroom():
    codec = FixedPoint(clip=1.0, max_clients=4, noise_bound=10)
    ok = codec.encode(np.zeros(3), 1, noise=lambda q: np.full(q.shape, -10, dtype=np.int64))
    assert ok[1:].view(np.int32).tolist() == [-10, -10, -10]
    with pytest.raises(ValueError, match="noise_bound=10"):
        codec.encode(np.zeros(3), 1, noise=lambda q: np.full(q.shape, 11, dtype=np.int64))
    with pytest.raises(ValueError, match="integers"):
        codec.encode(np.zeros(3), 1, noise=lambda q: np.zeros(q.shape))


def test_round_trips_through_a_plain_dict():
    codec = FixedPoint(clip=0.5, max_clients=9, max_examples=7, ring_bits=64, weighted=False)
    assert FixedPoint.from_dict(codec.to_dict()) == codec
