"""Shared fixtures. TensorFlow is imported lazily by the tests that need it."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

import fedlab._tf  # noqa: F401 - tfmot before tensorflow, before any test module imports it
from fedlab.data import FederatedDataset, federated_digits


@pytest.fixture(scope="session")
def small_digits() -> FederatedDataset:
    """20 Dirichlet-skewed digit clients (fast enough for round-engine tests)."""
    return federated_digits(num_clients=20, alpha=0.5, seed=1)


@pytest.fixture(scope="session")
def digits_runtime():
    """One reference runtime on the digits CNN, shared (it is stateless between clients)."""
    from fedlab.federated import KerasRuntime
    from fedlab.models import digits_cnn

    return KerasRuntime(lambda: digits_cnn((8, 8, 1), 10, seed=0))
