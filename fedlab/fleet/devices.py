"""Device folders for a loopback fleet: one ``device.json`` and local data per client.

A real board gets the same two files from its owner (the kit's ``device.json.template``
filled in, and its own data); on the workbench client ``i`` of the run's split is device
``i``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fedlab.data.federated_dataset import FederatedDataset
from fedlab.edge.config import DeviceConfig

__all__ = ["write_devices"]


def write_devices(
    folder: str | Path,
    *,
    kit_dir: str | Path,
    trusted_key: str,
    data: FederatedDataset,
    clients: list[int] | None = None,
    state: bool = True,
) -> dict[int, Path]:
    """Write ``folder/pi-<i>/{device.json,data.npz}`` for each client; returns client id →
    ``device.json`` (validated by :class:`~fedlab.edge.config.DeviceConfig`).

    Parameters
    ----------
    folder : path
        Parent of the device folders.
    kit_dir : path
        The installed kit.
    trusted_key : str
        The workbench key the kit is signed with.
    data : FederatedDataset
        The split: device ``i`` gets ``data.clients[i]``.
    clients : list of int, optional
        Which clients (default: all).
    state : bool
        Give each device a ``state_dir`` (checkpoint and last answered round).
    """
    out: dict[int, Path] = {}
    for cid in clients if clients is not None else range(data.num_clients):
        if not 0 <= cid < data.num_clients:
            raise ValueError(f"client {cid} is not in the split of {data.num_clients}")
        dev = Path(folder) / f"pi-{cid}"
        dev.mkdir(parents=True, exist_ok=True)
        client = data.clients[cid]
        np.savez(dev / "data.npz", x=client.x, y=client.y)
        config = {
            "device_id": f"pi-{cid}",
            "kit_dir": str(Path(kit_dir).resolve()),
            "data_path": "data.npz",
            "trusted_key": trusted_key,
            "mode": "litert",
            "state_dir": "state" if state else "",
        }
        path = dev / "device.json"
        path.write_text(json.dumps(config, indent=2))
        DeviceConfig.load(path)  # refuse a bad config here, not on the device
        out[cid] = path
    return out
