"""Hostile and broken inputs (issue 18): shared helpers.

Hypothesis runs derandomized with a bounded number of examples, so the suite is the same
on every run and stays fast; each property names the space it samples.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from fedlab.edge.transport import FileTransport, Task, _npz_bytes
from fedlab.federated import ClientPlan, ClientUpdate

#: Settings of every property in this suite: reproducible, bounded, no example database.
HOSTILE = settings(
    max_examples=60,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

SHAPES = ((4, 3), (3,))
WEIGHTS = (np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3), np.full(3, 0.1, np.float32))
VERSION = "kit-model-v1"
DEVICES = {"a": 40, "b": 40, "c": 40, "m": 40}  # enrolled devices and their data sizes


def make_task(round_index: int = 1, weights=WEIGHTS) -> Task:
    plan = ClientPlan(
        client_id=0, round_index=round_index, epochs=1, batch_size=4, learning_rate=0.1
    )
    return Task(plan, weights, VERSION)


def honest_update(seed: int, n: int = 20) -> ClientUpdate:
    rng = np.random.default_rng(seed)
    delta = tuple((0.01 * rng.standard_normal(s)).astype(np.float32) for s in SHAPES)
    return ClientUpdate(
        client_id=0, delta=delta, num_examples=n, num_steps=5, metrics={"train_loss": 0.5}
    )


def exchange_with(folder: Path, task: Task, devices=("a", "b", "c", "m")) -> FileTransport:
    """An exchange folder holding one honest update per device for ``task``."""
    exchange = FileTransport(folder)
    for i, device in enumerate(devices):
        exchange.submit(device, task, honest_update(i))
    return exchange


def header_of(task: Task, device: str, **changes) -> dict:
    """The header an honest device writes, with ``changes``."""
    header = {
        "device_id": device,
        "client_id": 0,
        "round_index": task.round_index,
        "num_examples": 20,
        "num_steps": 5,
        "train_loss": 0.5,
        "model_version": task.model_version,
        "base_version": task.base_version,
    }
    header.update(changes)
    return header


def write_update(path: Path, header, delta=None) -> None:
    """An update file with an arbitrary header (a dict, or any JSON value) and delta."""
    delta = delta if delta is not None else honest_update(9).delta
    arrays = {f"d{i:03d}": d for i, d in enumerate(delta)}
    arrays["header"] = np.array(json.dumps(header))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_npz_bytes(arrays))


@pytest.fixture(scope="session")
def agent_kit(tmp_path_factory: pytest.TempPathFactory):
    """A minimal signed Raspberry Pi kit (trainable digits CNN, no wheel): what the agent
    verifies and loads. Built once; about ten seconds."""
    from fedlab.edge.manifest import generate_signing_key, public_key_b64, write_manifest
    from fedlab.models import build_model
    from fedlab.optimize.trainable import export_trainable_tflite

    root = tmp_path_factory.mktemp("agent-kit")
    kit = root / "kit"
    model = build_model("digits_cnn", (8, 8, 1), 10)
    export = export_trainable_tflite(model, batch_size=16)
    export.save(kit / "model" / "model.tflite")
    key = generate_signing_key(root / "workbench.pem")
    info = {
        "mode": "litert",
        "target": "raspberry_pi",
        "model": {
            "file": "model/model.tflite",
            "spec": export.metadata(),
            "version": hashlib.sha256(export.model).hexdigest(),
        },
    }
    files = sorted(str(f.relative_to(kit)) for f in kit.rglob("*") if f.is_file())
    manifest = write_manifest(kit, files, key, info)
    weights = tuple(np.asarray(w) for w in model.get_weights())
    return {"folder": kit, "key": public_key_b64(key), "manifest": manifest, "weights": weights}
