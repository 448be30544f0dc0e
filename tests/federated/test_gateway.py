"""Gateways pre-aggregate their MCUs' updates: FedAvg over gateways equals FedAvg over the
devices, with or without secure aggregation inside each group (numpy fake runtime)."""

from __future__ import annotations

import numpy as np
import pytest

from fedlab.federated import Federation, FederationConfig
from fedlab.federated.gateway import GatewayRuntime, gateway_dataset, group_devices
from fedlab.federated.runtime_base import ClientFailure
from fedlab.federated.secure_stage import SecureAggregation
from fedlab.federated.types import ClientPlan
from fedlab.secure import SecAggConfig
from tests.federated.test_dispatch import NumpyRuntime, tiny_fleet

GROUPS = group_devices(12, 3)  # 4 gateways of 3 MCUs
ALL = FederationConfig(clients_per_round=4, local_epochs=2, client_lr=0.1, seed=3)
SECAGG = SecAggConfig(threshold=2, clip=4.0, max_examples=64, ring_bits=64)


def gateway_federation(secure=None, **kwargs) -> Federation:
    devices = tiny_fleet()
    runtime = GatewayRuntime(NumpyRuntime(), devices, GROUPS, secure=secure)
    return Federation(data=gateway_dataset(devices, GROUPS), runtime=runtime, config=ALL, **kwargs)


def device_mean_delta(weights, members):
    """What FedAvg over the MCUs themselves would apply (the fake runtime's update)."""
    data = tiny_fleet()
    runtime = NumpyRuntime()
    jobs = [(data.clients[m], ClientPlan(m, 0, ALL.local_epochs, ALL.batch_size, ALL.client_lr))
            for m in members]  # fmt: skip
    updates = runtime.train_clients(weights, jobs)
    n = np.array([u.num_examples for u in updates], np.float64)
    return [sum(w * u.delta[i] for w, u in zip(n, updates, strict=True)) / n.sum()
            for i in range(len(weights))]  # fmt: skip


def test_groups_and_the_gateway_view_of_the_fleet() -> None:
    assert group_devices(7, 3) == ((0, 1, 2), (3, 4, 5), (6,))
    devices = tiny_fleet()
    view = gateway_dataset(devices, GROUPS)
    assert view.num_clients == 4
    assert view.clients[1].num_examples == sum(devices.clients[m].num_examples for m in (3, 4, 5))
    for bad in (((0, 1), (1, 2)), ((0, 99),), ((),)):
        with pytest.raises(ValueError):
            gateway_dataset(devices, bad)
    with pytest.raises(ValueError, match="at least 2 devices"):
        GatewayRuntime(NumpyRuntime(), devices, ((0,), (1, 2)), secure=SECAGG)


def test_fedavg_over_gateways_equals_fedavg_over_their_devices() -> None:
    fed = gateway_federation()
    w0 = fed.weights
    result = fed.run_round()
    assert result.completed == (0, 1, 2, 3)  # every gateway, every MCU behind them
    expected = device_mean_delta(w0, range(12))
    for w, a, e in zip(fed.weights, w0, expected, strict=True):
        np.testing.assert_allclose(w - a, e, rtol=1e-5, atol=1e-7)
    assert result.num_examples == sum(c.num_examples for c in tiny_fleet().clients)
    # one update per gateway goes up: a quarter of the per-device uploads
    assert result.bytes_up == 4 * sum(w.nbytes for w in w0)


def test_secure_groups_give_the_same_model_and_the_gateway_gets_only_sums() -> None:
    plain, secure = gateway_federation(), gateway_federation(secure=SECAGG)
    plain.run(2)
    secure.run(2)
    for a, b in zip(secure.weights, plain.weights, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)  # fixed-point resolution
    runtime = secure.runtime
    [(gateway, plan)] = [(gateway_dataset(tiny_fleet(), GROUPS).clients[0],
                          ClientPlan(0, 2, 2, 32, 0.1, seed=1))]  # fmt: skip
    [update] = runtime.train_clients(secure.weights, [(gateway, plan)])
    assert update.metrics["devices"] == 3 and update.metrics["mcu_upload_bytes"] > 0


def test_two_levels_of_secure_aggregation() -> None:
    outer = SecureAggregation(SecAggConfig(threshold=2, clip=4.0, max_examples=256, ring_bits=64))
    both = gateway_federation(secure=SECAGG, secure_aggregation=outer)
    plain = gateway_federation()
    both.run(2)
    plain.run(2)
    assert all(not r.aggregation_failure for r in both.history)
    for a, b in zip(both.weights, plain.weights, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


class FailingFor(NumpyRuntime):
    def __init__(self, bad):
        self.bad = set(bad)

    def train_clients(self, global_weights, jobs):
        out = super().train_clients(global_weights, jobs)
        return [ClientFailure(u.client_id, "flash full") if u.client_id in self.bad else u
                for u in out]  # fmt: skip


def test_failed_mcus_are_left_out_and_an_empty_group_is_the_gateways_failure() -> None:
    devices = tiny_fleet()
    runtime = GatewayRuntime(FailingFor({0, 1, 2, 4}), devices, GROUPS)
    fed = Federation(data=gateway_dataset(devices, GROUPS), runtime=runtime, config=ALL)
    result = fed.run_round()
    assert [c for c, _ in result.failed] == [0]
    assert "device 0: flash full" in result.failed[0][1]
    assert result.completed == (1, 2, 3)  # gateway 1 forwards its two healthy devices
    healthy = [m for m in range(3, 12) if m != 4]
    assert result.num_examples == sum(tiny_fleet().clients[m].num_examples for m in healthy)
