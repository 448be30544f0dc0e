"""One loopback fleet per module: a SuperLink (TLS, SuperNode auth, a database) and three
SuperNodes whose keys are registered, each a fedlab device (kit + digits shard).

Every process is started in its own process group by :class:`fedlab.fleet.LocalFleet` and
stopped by PID in the fixture's finalizer, also when a test fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fedlab.fleet.devices import write_devices
from fedlab.fleet.processes import FleetProcess, LocalFleet
from fedlab.fleet.run import FleetRunSpec, fleet_data

NUM_CLIENTS = 3


@dataclass
class Fleet:
    """The module's fleet and what the tests need to drive it."""

    fleet: LocalFleet
    work: Path
    kit_dir: Path
    trusted_key: str
    devices: dict[int, Path]
    keys: dict[int, Path]
    node_ids: dict[int, int]
    nodes: dict[int, FleetProcess] = field(default_factory=dict)
    num_clients: int = NUM_CLIENTS

    def spec(self, name: str, **overrides) -> FleetRunSpec:
        """A run of this fleet writing to ``work/runs/<name>``."""
        base = {
            "kit_dir": str(self.kit_dir),
            "trusted_key": self.trusted_key,
            "out_dir": str(self.work / "runs" / name),
            "num_clients": self.num_clients,
            "clients_per_round": self.num_clients,
            "rounds": 3,
            "min_nodes": self.num_clients,
            "round_timeout": 60.0,
            "enroll_timeout": 60.0,
            "seed": 7,
        }
        base.update(overrides)
        return FleetRunSpec(**base)

    def start_node(self, cid: int, **kwargs) -> FleetProcess:
        """(Re)start client ``cid``'s SuperNode with its registered key."""
        proc = self.fleet.start_supernode(
            f"sn{cid}", device_config=self.devices[cid], client_id=cid, key=self.keys[cid], **kwargs
        )
        self.nodes[cid] = proc
        return proc


@pytest.fixture(scope="session")
def fleet_kit(tmp_path_factory: pytest.TempPathFactory):
    """The digits CNN as a signed Raspberry Pi kit."""
    from fedlab.kits import build_kit
    from fedlab.models import build_model

    out = tmp_path_factory.mktemp("fleet-kit")
    model = build_model("digits_cnn", (8, 8, 1), 10)
    return build_kit(model, target="raspberry_pi", out=out, signing_key=out / "workbench.pem")


def start_fleet(work: Path, kit, num_clients: int) -> Iterator[Fleet]:
    """SuperLink + ``num_clients`` registered SuperNodes on 127.0.0.1, each device ``i``
    holding shard ``i`` of the digits split into ``num_clients`` (stopped by PID at the end)."""
    data = fleet_data(
        FleetRunSpec(kit_dir="-", trusted_key="-", out_dir="-", num_clients=num_clients)
    )
    devices = write_devices(
        work / "devices", kit_dir=kit.folder, trusted_key=kit.trusted_key, data=data
    )
    with LocalFleet(work / "flower", tls=True, node_auth=True, database=True) as local:
        local.start_superlink()
        keys, node_ids = {}, {}
        for cid in devices:
            private, public = local.node_key(f"sn{cid}")
            keys[cid] = private
            node_ids[cid] = local.register(public)
        state = Fleet(local, work, kit.folder, kit.trusted_key, devices, keys, node_ids)
        state.num_clients = num_clients
        for cid in devices:
            state.start_node(cid)
        yield state


@pytest.fixture(scope="module")
def fleet(fleet_kit, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """SuperLink + three registered SuperNodes on 127.0.0.1 (stopped by PID at the end)."""
    yield from start_fleet(tmp_path_factory.mktemp("fleet"), fleet_kit, NUM_CLIENTS)
