from __future__ import annotations

import numpy as np
import pytest

from fedlab.data import (
    ClientData,
    FederatedDataset,
    LabeledArrays,
    federate,
    federated_digits,
    load_digits,
)


def test_digits_split_is_stratified_scaled_and_seeded() -> None:
    train, test = load_digits(seed=0)
    assert len(train) + len(test) == 1797
    assert train.x.shape[1:] == (8, 8, 1) and 0.0 <= train.x.min() and train.x.max() <= 1.0
    share = np.bincount(test.y) / np.bincount(np.concatenate([train.y, test.y]))
    assert np.allclose(share, 0.2, atol=0.01)
    again, _ = load_digits(seed=0)
    assert np.array_equal(train.y, again.y)
    with pytest.raises(ValueError, match="1.5"):
        load_digits(test_fraction=1.5)


def test_federated_digits_stats_and_union() -> None:
    data = federated_digits(num_clients=25, alpha=0.3, seed=2)
    stats = data.stats()
    assert stats["num_clients"] == 25 and stats["num_examples"] == sum(data.sizes)
    assert data.label_counts().shape == (25, 10)
    assert data.label_counts().sum() == stats["num_examples"]
    assert len(data.union()) == stats["num_examples"]
    assert [c.client_id for c in data.clients] == list(range(25))
    assert 0.1 < stats["dominant_class_share_mean"] <= 1.0


def test_more_clients_than_examples_is_a_value_error() -> None:
    train, test = load_digits()
    with pytest.raises(ValueError, match="num_clients=5000"):
        federate(train, test, scheme="iid", num_clients=5000)


def test_unknown_scheme_and_natural_without_groups() -> None:
    train, test = load_digits()
    with pytest.raises(ValueError, match="'zipf'"):
        federate(train, test, scheme="zipf", num_clients=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="groups"):
        federate(train, test, scheme="natural")


def test_value_objects_validate() -> None:
    x = np.zeros((3, 2), np.float32)
    with pytest.raises(ValueError, match="3 rows but y has 2"):
        LabeledArrays(x, np.zeros(2, np.int64))
    with pytest.raises(TypeError, match="integer"):
        LabeledArrays(x, np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="no examples"):
        ClientData(0, x[:0], np.zeros(0, np.int64))
    good = ClientData(0, x, np.zeros(3, np.int64))
    with pytest.raises(ValueError, match="ids must be 0..n-1"):
        FederatedDataset(
            (ClientData(1, x, np.zeros(3, np.int64)),), LabeledArrays(x, np.zeros(3, np.int64)), 2
        )
    with pytest.raises(ValueError, match="shape"):
        FederatedDataset(
            (good,), LabeledArrays(np.zeros((3, 4), np.float32), np.zeros(3, np.int64)), 2
        )
