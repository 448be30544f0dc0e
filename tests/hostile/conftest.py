"""Hostile and broken inputs (issue 18): shared helpers.

Hypothesis runs derandomized with a bounded number of examples, so the suite is the same
on every run and stays fast; each property names the space it samples.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from fedlab.edge.transport import FileTransport
from fedlab.federated import ClientPlan, ClientUpdate
from fedlab.protocol import KIND_ENVELOPE, MAGIC, RoundTask, UpdateEnvelope

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


def make_task(round_index: int = 1, weights=WEIGHTS) -> RoundTask:
    plan = ClientPlan(
        client_id=0, round_index=round_index, epochs=1, batch_size=4, learning_rate=0.1
    )
    return RoundTask.from_client_plan(plan, model_version=VERSION, weights=weights)


def honest_update(seed: int, n: int = 20) -> ClientUpdate:
    rng = np.random.default_rng(seed)
    delta = tuple((0.01 * rng.standard_normal(s)).astype(np.float32) for s in SHAPES)
    return ClientUpdate(
        client_id=0, delta=delta, num_examples=n, num_steps=5, metrics={"train_loss": 0.5}
    )


def envelope_of(task: RoundTask, update: ClientUpdate, device: str = "") -> UpdateEnvelope:
    """What an honest device sends for ``update``."""
    return UpdateEnvelope.from_client_update(update, task, device_id=device)


def exchange_with(folder: Path, task: RoundTask, devices=("a", "b", "c", "m")) -> FileTransport:
    """An exchange folder holding one honest update per device for ``task``."""
    exchange = FileTransport(folder)
    for i, device in enumerate(devices):
        exchange.submit(device, envelope_of(task, honest_update(i)))
    return exchange


def header_of(task: RoundTask, device: str, **changes) -> dict:
    """The envelope header an honest device writes, with ``changes``."""
    header = {
        "device_id": device,
        "client_id": 0,
        "round_index": task.round_index,
        "num_examples": 20,
        "num_steps": 5,
        "metrics": {"train_loss": 0.5},
        "headers": {},
        "body": "tensors",
        "model_version": task.model_version,
        "base_version": task.base_version,
    }
    header.update(changes)
    return header


def raw_frame(kind: int, header_text: str, tensors=()) -> bytes:
    """A protocol frame written by hand from the documented layout, with any header text
    (``Infinity``, ``1e400``, broken JSON) and a correct checksum: what a hostile writer,
    not a damaged file, produces."""
    descriptors, data = b"", b""
    for t in tensors:
        a = np.ascontiguousarray(t, dtype="<f4")
        descriptors += struct.pack(f"<BBH{a.ndim}I", 2, a.ndim, 0, *a.shape)
        data += a.tobytes()
    head = header_text.encode()
    body = struct.pack("<4sHBBIIQ", MAGIC, 1, kind, 0, len(head), len(tensors), 0)
    body += head + descriptors + data
    return body + struct.pack("<I", zlib.crc32(body))


def write_update(path: Path, header, delta=None) -> None:
    """An update file with an arbitrary header (a dict, or any JSON value) and delta."""
    delta = delta if delta is not None else honest_update(9).delta
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw_frame(KIND_ENVELOPE, json.dumps(header), delta))


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
