"""Emulated boards on the workbench: each device is a folder (config + local data) and a
separate Python process that can import only what a board has (``fedlab.edge.emulate``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedlab.data.federated_dataset import ClientData
from fedlab.edge.transport import SUFFIX, FileTransport
from fedlab.federated.stages import UpdatePolicy
from fedlab.federated.types import ClientUpdate
from fedlab.kits.builder import Kit
from fedlab.protocol import RoundTask

__all__ = ["EmulatedDevice", "EmulatedRound", "make_emulated_devices", "run_emulated_round"]


@dataclass(frozen=True, slots=True)
class EmulatedDevice:
    """One emulated board: its id, folder and ``device.json``, and the number of examples
    it enrolled with (the cap on the ``num_examples`` its updates may claim)."""

    device_id: str
    folder: Path
    config: Path
    num_examples: int | None = None


@dataclass(frozen=True, slots=True)
class EmulatedRound:
    """What one round on emulated devices produced.

    Attributes
    ----------
    reports : dict
        Each device's report line (its JSON on stdout).
    accepted, rejected : list
        ``[(update file, validated update)]`` and ``[(update file, reason)]``.
    failures : dict
        Devices whose agent failed: exit code and message.
    bytes_down : int
        Size of the task frame every device read.
    bytes_up : int
        Total size of the round's update frames (accepted or not).
    """

    reports: dict[str, dict[str, Any]]
    accepted: list[tuple[str, ClientUpdate]]
    rejected: list[tuple[str, str]]
    failures: dict[str, str] = field(default_factory=dict)
    bytes_down: int = 0
    bytes_up: int = 0


def make_emulated_devices(
    kit: Kit, clients: Sequence[ClientData], root: str | Path, **config: Any
) -> list[EmulatedDevice]:
    """A device folder per client under ``root``, sharing ``root/exchange`` as transport.

    ``**config`` overrides fields of the kit's ``device.json`` template (``coral_fallback``…).
    """
    base = Path(root)
    template = json.loads((kit.folder / "device.json.template").read_text())
    devices = []
    for client in clients:
        device_id = f"{kit.manifest.info['target'].replace('_', '-')}-{client.client_id:03d}"
        folder = base / device_id
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / "data.npz", x=client.x, y=client.y)
        settings = {
            **template,
            "device_id": device_id,
            "kit_dir": str(kit.folder.resolve()),
            "data_path": "data.npz",
            "transport": {"kind": "files", "folder": str((base / "exchange").resolve())},
            "state_dir": "state",
            **config,
        }
        path = folder / "device.json"
        path.write_text(json.dumps(settings, indent=1))
        devices.append(EmulatedDevice(device_id, folder, path, client.num_examples))
    return devices


def run_emulated_round(
    devices: Sequence[EmulatedDevice],
    exchange: str | Path,
    task: RoundTask,
    *,
    timeout_s: float = 300.0,
    policy: UpdatePolicy | None = None,
) -> EmulatedRound:
    """Publish ``task`` (a :class:`~fedlab.protocol.RoundTask` with inline weights), run
    every device's agent (one process each, TensorFlow blocked), and collect the envelopes.
    A device that fails is reported with its exit code and
    message, not hidden; an update refused by ``policy`` (default ``UpdatePolicy()``) or
    from a device not in ``devices`` is listed in ``rejected`` with its reason."""
    transport = FileTransport(exchange)
    bytes_down = transport.publish(task).stat().st_size
    reports: dict[str, dict[str, Any]] = {}
    failures: dict[str, str] = {}
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    for device in devices:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "fedlab.edge.emulate",
                "fedlab.edge.agent",
                "--config",
                str(device.config),
            ],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=env,
            check=False,
        )
        if proc.returncode != 0:
            failures[device.device_id] = f"exit {proc.returncode}: {proc.stderr.strip()}"
            continue
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        if lines:
            reports[device.device_id] = json.loads(lines[-1])
    enrolled = {d.device_id: d.num_examples for d in devices}
    accepted, rejected = transport.collect(task, devices=enrolled, policy=policy)
    files = transport.updates.glob(f"*-r{task.round_index}{SUFFIX}")
    bytes_up = sum(path.stat().st_size for path in files)
    return EmulatedRound(reports, accepted, rejected, failures, bytes_down, bytes_up)
