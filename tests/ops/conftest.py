"""A small synthetic sensor fleet and a production model trained on it (numpy only)."""

from __future__ import annotations

import pytest

from fedlab.federated import Federation, FederationConfig
from fedlab.ops.simulation import SensorFleet, SoftmaxRuntime

OPS_CFG = FederationConfig(
    clients_per_round=20, local_epochs=1, batch_size=16, client_lr=0.2, seed=0
)


@pytest.fixture(scope="session")
def sensor_fleet() -> SensorFleet:
    return SensorFleet.generate(num_devices=40, windows_per_device=80, seed=1, drift=2.0)


@pytest.fixture(scope="session")
def production(sensor_fleet) -> tuple:
    fed = Federation(data=sensor_fleet.dataset(), runtime=SoftmaxRuntime(), config=OPS_CFG)
    fed.run(15)
    return fed.weights
