"""Cost per round and per month from measured rounds; retention of registry versions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedlab.federated import Federation, FederationConfig
from fedlab.federated.strategies import FedAvg
from fedlab.ops.cost import Prices, estimate_cost, measure_aggregation_cpu, measure_traffic
from fedlab.ops.registry import Provenance, Registry
from fedlab.ops.retention import RetentionPolicy
from fedlab.ops.simulation import SoftmaxRuntime


def test_cost_scales_with_the_fleet_and_comes_from_measured_rounds(sensor_fleet) -> None:
    cfg = FederationConfig(
        clients_per_round=10, local_epochs=1, batch_size=16, client_lr=0.2, dropout_rate=0.2, seed=0
    )
    fed = Federation(data=sensor_fleet.dataset(), runtime=SoftmaxRuntime(), config=cfg)
    history = fed.run(4)
    traffic = measure_traffic(history.rounds)
    model_bytes = sum(w.nbytes for w in fed.weights)
    assert traffic.up_per_client == model_bytes and traffic.down_per_client == model_bytes
    assert 0.5 < traffic.completion < 1.0  # dropouts are measured, not assumed
    cpu = measure_aggregation_cpu(FedAvg(), fed.weights, cohort=10, repeats=3)
    assert cpu >= 0
    common = dict(
        participation=0.1,
        rounds_per_day=24,
        server_cpu_s_per_round=cpu,
        measured_cohort=10,
        model_bytes=model_bytes,
        checkpoint_bytes=4096,
    )
    small = estimate_cost(traffic, num_devices=1_000, **common)
    big = estimate_cost(traffic, num_devices=100_000, **common)
    assert big.assumptions["cohort"] == 100 * small.assumptions["cohort"] == 10_000
    ratio = big.per_month["downlink (egress)"] / small.per_month["downlink (egress)"]
    assert ratio == pytest.approx(100)
    expected = 10_000 * model_bytes * 24 * 30 / 1e9 * Prices().egress_per_gb
    assert big.per_month["downlink (egress)"] == pytest.approx(expected)
    assert big.month_total > small.month_total > 0
    with pytest.raises(ValueError, match="participation"):
        estimate_cost(traffic, num_devices=10, **{**common, "participation": 0})
    with pytest.raises(ValueError, match="egress_per_gb"):
        Prices(egress_per_gb=-1)
    with pytest.raises(ValueError, match="at least one"):
        measure_traffic([])


def test_retention_keeps_the_newest_promoted_and_running_versions(tmp_path) -> None:
    reg = Registry(tmp_path)
    rng = np.random.default_rng(0)
    ids, parent = [], ""
    for i in range(8):
        v = reg.register(
            (rng.standard_normal(16).astype(np.float32),),
            provenance=Provenance(parent=parent, rounds=1),
            label=f"v{i}",
        )
        ids.append(v.id)
        parent = v.id
    reg.promote(ids[1])
    reg.promote(ids[3])
    reg.report_running([5], ids[3])
    policy = RetentionPolicy(keep_last=2)
    assert policy.plan(reg) == [ids[0], ids[2], ids[4], ids[5]]
    assert policy.apply(reg) == [ids[0], ids[2], ids[4], ids[5]]
    assert policy.plan(reg) == []
    assert [v.id for v in reg.lineage(ids[7])] == ids[::-1]  # lineage survives purges
    assert len(reg.audit_log(action="purge")) == 4
    assert reg.orphan_blobs() == []
    kept = policy.steady_state_versions(registered_per_month=30, promoted_per_month=4, months=12)
    assert kept == 2 + 48
    assert "registry.devices" in RetentionPolicy.per_client_data()
    with pytest.raises(ValueError, match="keep_last"):
        RetentionPolicy(keep_last=0)
    with pytest.raises(ValueError, match="months"):
        policy.steady_state_versions(registered_per_month=1, promoted_per_month=1, months=math.inf)


def test_the_registry_observer_records_lineage_and_provenance(tmp_path, sensor_fleet) -> None:
    from fedlab.ops.registry import RegistryObserver

    reg = Registry(tmp_path)
    cfg = FederationConfig(
        clients_per_round=5, local_epochs=1, batch_size=16, client_lr=0.2, seed=4
    )
    obs = RegistryObserver(reg, every=2, model_config={"model": "softmax"})
    fed = Federation(
        data=sensor_fleet.dataset(), runtime=SoftmaxRuntime(), config=cfg, observers=[obs]
    )
    fed.run(5)
    assert len(obs.registered) == 2
    first, second = obs.registered
    assert second.provenance.parent == first.id and second.provenance.rounds == 2
    assert second.provenance.strategy == {"name": "fedavg", "server_lr": 1.0}
    assert second.provenance.seeds == {"federation": 4}
    assert second.provenance.extra["fingerprint"] == fed.fingerprint()
    assert second.config == {"model": "softmax"}
    assert [v.id for v in reg.lineage(second.id)] == [second.id, first.id]
