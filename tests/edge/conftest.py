"""Kits built once per test session (exporting and signing takes a few seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def kits(tmp_path_factory: pytest.TempPathFactory):
    """A Raspberry Pi kit and a Coral kit of the digits CNN, signed by one workbench key."""
    from fedlab.data import load_digits
    from fedlab.kits import build_kit
    from fedlab.models import build_model

    out = tmp_path_factory.mktemp("kits")
    train, _ = load_digits(seed=0)
    model = build_model("digits_cnn", (8, 8, 1), 10)
    key = out / "workbench.pem"
    pi = build_kit(model, target="raspberry_pi", out=out, signing_key=key)
    coral = build_kit(model, target="coral", out=out, signing_key=key, representative=train.x[:100])
    return {"pi": pi, "coral": coral, "key": key, "model": model}


def write_device(folder: Path, kit, **overrides) -> Path:
    """A device folder: device.json (from the kit's template) and local data."""
    from fedlab.data import federated_digits

    folder.mkdir(parents=True, exist_ok=True)
    client = federated_digits(num_clients=20, seed=1).clients[3]
    np.savez(folder / "data.npz", x=client.x, y=client.y)
    config = json.loads((kit.folder / "device.json.template").read_text())
    config.update(
        device_id="pi-3",
        kit_dir=str(kit.folder),
        data_path="data.npz",
        transport={"kind": "files", "folder": "exchange"},
        state_dir="state",
    )
    config.update(overrides)
    path = folder / "device.json"
    path.write_text(json.dumps(config))
    return path


@pytest.fixture(scope="session")
def host_kit(kits, tmp_path_factory: pytest.TempPathFactory):
    """A Raspberry Pi kit for THIS machine's platform with its wheels vendored: the
    wheelhouse is repacked from the installed packages (no network), so the kit installs
    offline into a real venv here."""
    from fedlab.kits import build_kit
    from fedlab.kits.requirements import device_requirements, read_lock, target_environment
    from fedlab.kits.wheelhouse import from_installed, host_platform

    out = tmp_path_factory.mktemp("hostkit")
    root = Path(__file__).resolve().parents[2]
    reqs = device_requirements(
        read_lock(root / "requirements.lock"), environment=target_environment(host_platform())
    )
    house = from_installed(reqs, out / "wheelhouse")
    return build_kit(
        kits["model"],
        target="raspberry_pi",
        out=out / "kits",
        signing_key=kits["key"],
        wheelhouse=house.folder,
    )
