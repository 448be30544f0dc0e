"""A kit names the registry version its model came from (signed), and the devices running
it report that version: the registry then knows which version runs where."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_devices_report_the_registry_version_their_kit_carries(kits, tmp_path: Path) -> None:
    from fedlab.data import federated_digits
    from fedlab.federated import Federation, FederationConfig
    from fedlab.kits import DeviceDispatcher, build_kit, make_emulated_devices
    from fedlab.ops.registry import Registry
    from tests.edge.test_device_federation import _runtime

    model = kits["model"]
    registry = Registry(tmp_path / "registry")
    version = registry.register(tuple(w.numpy() for w in model.weights), label="v1").id
    kit = build_kit(
        model,
        target="raspberry_pi",
        out=tmp_path / "kits",
        signing_key=kits["key"],
        registry_version=version,
    )
    assert kit.manifest.info["registry_version"] == version  # covered by the signature
    digits = federated_digits(num_clients=20, scheme="iid", seed=0)
    devices = make_emulated_devices(kit, digits.clients[:2], tmp_path / "fleet")
    dispatcher = DeviceDispatcher(
        devices,
        tmp_path / "fleet" / "exchange",
        model_version=kit.manifest.info["model"]["version"],
    )
    fed = Federation(
        runtime=_runtime(),
        dispatcher=dispatcher,
        test=digits.test,
        config=FederationConfig(clients_per_round=2, batch_size=16, seed=0),
    )
    assert fed.run_round().completed == (0, 1)
    reported = {
        cid: dispatcher.last_runs[d.device_id].report["registry_version"]
        for cid, d in enumerate(devices)
    }
    assert set(reported.values()) == {version}
    for cid, ref in reported.items():
        registry.report_running([cid], ref)
    assert registry.running() == {0: version, 1: version}
    with pytest.raises(ValueError, match="registry_version"):
        build_kit(model, out=tmp_path / "bad", signing_key=kits["key"], registry_version="v1!")
