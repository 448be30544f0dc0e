from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedlab.data import (
    partition_by_group,
    partition_dirichlet,
    partition_iid,
    partition_quantity_skew,
    partition_shards,
)


def assert_disjoint_cover(parts: list[np.ndarray], n: int) -> None:
    joined = np.concatenate(parts)
    assert len(joined) == n, "every example is assigned exactly once"
    assert np.array_equal(np.sort(joined), np.arange(n))
    assert all(p.dtype == np.int64 and np.all(np.diff(p) > 0) for p in parts)


LABELS = np.repeat(np.arange(10), 60)


@pytest.mark.parametrize(
    "make",
    [
        lambda: partition_iid(len(LABELS), 30, seed=3),
        lambda: partition_dirichlet(LABELS, 30, alpha=0.5, seed=3),
        lambda: partition_shards(LABELS, 30, seed=3),
        lambda: partition_quantity_skew(len(LABELS), 30, sigma=1.0, seed=3),
    ],
    ids=["iid", "dirichlet", "shards", "quantity"],
)
def test_partitions_are_disjoint_covers_and_seeded(make) -> None:
    parts = make()
    assert len(parts) == 30
    assert_disjoint_cover(parts, len(LABELS))
    again = make()
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))


def test_iid_sizes_are_balanced() -> None:
    sizes = [len(p) for p in partition_iid(1000, 7, seed=0)]
    assert max(sizes) - min(sizes) <= 1


def test_dirichlet_skew_grows_as_alpha_shrinks() -> None:
    def dominant_share(alpha: float) -> float:
        parts = partition_dirichlet(LABELS, 20, alpha=alpha, seed=0)
        return float(np.mean([np.bincount(LABELS[p]).max() / len(p) for p in parts]))

    skewed, mild, flat = dominant_share(0.1), dominant_share(1.0), dominant_share(100.0)
    assert skewed > mild > flat
    assert flat < 0.25  # close to the 0.1 of perfectly balanced clients
    assert skewed > 0.5


def test_dirichlet_respects_min_size() -> None:
    parts = partition_dirichlet(LABELS, 50, alpha=0.3, seed=0, min_size=5)
    assert min(len(p) for p in parts) >= 5


def test_shards_give_about_two_classes_per_client() -> None:
    parts = partition_shards(LABELS, 30, shards_per_client=2, seed=0)
    classes = [len(np.unique(LABELS[p])) for p in parts]
    # 60 shards of 10 examples: every shard is label-pure here, so ≤ 2 classes each.
    assert max(classes) <= 2
    assert all(len(p) == 20 for p in parts)


def test_quantity_skew_sizes() -> None:
    equal = partition_quantity_skew(100, 10, sigma=0.0, seed=0)
    assert {len(p) for p in equal} == {10}
    skewed = partition_quantity_skew(1000, 10, sigma=1.5, seed=0, min_size=3)
    sizes = np.array([len(p) for p in skewed])
    assert sizes.min() >= 3 and sizes.max() > 3 * np.median(sizes) / 2


def test_by_group() -> None:
    groups = np.array([5, 2, 5, 9, 2, 2])
    parts, ids = partition_by_group(groups)
    assert ids.tolist() == [2, 5, 9]
    assert [p.tolist() for p in parts] == [[1, 4, 5], [0, 2], [3]]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: partition_dirichlet(LABELS, 10, alpha=0.0), "alpha must be > 0, got 0.0"),
        (lambda: partition_dirichlet(LABELS, 10, alpha=-1), "got -1"),
        (lambda: partition_iid(10, 11), "num_clients=11"),
        (lambda: partition_iid(10, 0), "got 0"),
        (lambda: partition_shards(LABELS, 400, shards_per_client=2), "num_clients=400"),
        (lambda: partition_quantity_skew(100, 5, sigma=-0.5), "got -0.5"),
        (lambda: partition_by_group(np.array([])), "non-empty"),
    ],
)
def test_invalid_arguments_are_value_errors_quoting_the_value(call, message) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def test_num_clients_must_be_an_int() -> None:
    with pytest.raises(TypeError, match="2.5"):
        partition_iid(10, 2.5)  # type: ignore[arg-type]


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(min_value=20, max_value=300),
    clients=st.integers(min_value=1, max_value=10),
    classes=st.integers(min_value=2, max_value=6),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_property_every_partitioner_covers_the_data(
    n: int, clients: int, classes: int, seed: int
) -> None:
    labels = np.random.default_rng(seed).integers(0, classes, size=n)
    assert_disjoint_cover(partition_iid(n, clients, seed=seed), n)
    assert_disjoint_cover(partition_dirichlet(labels, clients, alpha=1.0, seed=seed, min_size=1), n)
    assert_disjoint_cover(partition_shards(labels, clients, seed=seed), n)
    assert_disjoint_cover(partition_quantity_skew(n, clients, seed=seed), n)
