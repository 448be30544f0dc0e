"""What a device keeps across restarts (its generated id, the kit version it ran), the
atomic writer's modes, and what the Coral path really runs on."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

import pytest

from fedlab.edge import ConfigError, DeviceConfig, EdgeTPUUnavailable, EmbeddingBackbone
from fedlab.edge.agent import DeviceAgent
from fedlab.edge.config import resolve_device_id
from fedlab.edge.manifest import KitVerificationError, check_not_rollback, verify_kit
from fedlab.edge.model import atomic_write_bytes
from tests.edge.conftest import write_device


def test_the_atomic_writer_sets_the_mode_it_is_given(tmp_path) -> None:
    default = atomic_write_bytes(tmp_path / "a", b"x")
    secret = atomic_write_bytes(tmp_path / "b", b"x", mode=0o600)
    assert stat.S_IMODE(default.stat().st_mode) == 0o644
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    with pytest.raises(ValueError, match="mode must be permission bits"):
        atomic_write_bytes(tmp_path / "c", b"x", mode=0o4777)
    assert not (tmp_path / "c").exists()


def test_a_device_id_is_generated_once_and_kept(kits, tmp_path) -> None:
    good = json.loads(write_device(tmp_path, kits["pi"]).read_text())
    config = DeviceConfig.from_dict({**good, "device_id": ""}, base=tmp_path)
    first = resolve_device_id(config)
    assert re.fullmatch(r"pi-[0-9a-f]{8}", first.device_id)
    assert resolve_device_id(config).device_id == first.device_id  # kept in state_dir
    assert (tmp_path / "state" / "device_id").read_text().strip() == first.device_id
    other = DeviceConfig.from_dict({**good, "device_id": ""}, base=tmp_path / "elsewhere")
    assert resolve_device_id(other).device_id != first.device_id  # another board
    assert resolve_device_id(DeviceConfig.from_dict(good)).device_id == "pi-3"  # configured
    agent = DeviceAgent(config)
    assert agent.config.device_id == first.device_id
    with pytest.raises(ConfigError, match="'state_dir' is empty too"):
        DeviceConfig.from_dict({**good, "device_id": "", "state_dir": ""})
    (tmp_path / "state" / "device_id").write_text("../../etc\n")
    with pytest.raises(ConfigError, match="is not a device id"):
        resolve_device_id(config)


def test_the_agent_refuses_a_kit_older_than_one_it_ran(kits, tmp_path) -> None:
    pi, coral = kits["pi"], kits["coral"]
    assert pi.version < coral.version  # one more per kit of the same workbench key
    state = tmp_path / "state"
    manifest = verify_kit(pi.folder, pi.trusted_key)
    assert check_not_rollback(manifest, state) == pi.version
    assert json.loads((state / "kit_version.json").read_text()) == {"kit_version": pi.version}
    (state / "kit_version.json").write_text(json.dumps({"kit_version": coral.version}))
    with pytest.raises(KitVerificationError, match="refusing a rollback"):
        check_not_rollback(manifest, state)
    config = write_device(tmp_path, pi)
    from tests.edge.test_kit_and_agent import run_agent

    proc = run_agent(config)
    assert proc.returncode == 3 and "refusing a rollback" in proc.stderr, proc.stderr
    (state / "kit_version.json").write_text("{oops")
    with pytest.raises(KitVerificationError, match="damaged"):
        check_not_rollback(manifest, state)


def test_kit_versions_only_go_up(kits, tmp_path) -> None:
    from fedlab.kits import build_kit

    key = tmp_path / "wb.pem"
    first = build_kit(kits["model"], out=tmp_path / "a", signing_key=key)
    assert first.version == 1
    with pytest.raises(ValueError, match="kit_version must be higher than 1"):
        build_kit(kits["model"], out=tmp_path / "b", signing_key=key, kit_version=1)
    assert build_kit(kits["model"], out=tmp_path / "c", signing_key=key, kit_version=5).version == 5
    # every path of the kit and of its archive is readable by another user
    import tarfile

    for path in [first.folder, *first.folder.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o044 == 0o044, (path, oct(mode))
    with tarfile.open(first.tarball) as tar:
        assert {m.uid for m in tar.getmembers()} == {0}
        assert all(m.mode & 0o044 == 0o044 for m in tar.getmembers())


def test_an_uncompiled_backbone_is_reported_as_running_on_the_cpu(kits, tmp_path) -> None:
    backbone = kits["coral"].folder / kits["coral"].manifest.info["model"]["backbone"]
    calls: list[str] = []

    def loads(library):  # a delegate that would load: it must not even be asked
        calls.append(library)
        return object()

    with pytest.raises(EdgeTPUUnavailable, match="not compiled for the Edge TPU"):
        EmbeddingBackbone(backbone, fallback="refuse", delegate_loader=loads)
    with pytest.warns(UserWarning, match="not compiled for the Edge TPU"):
        cpu = EmbeddingBackbone(backbone, fallback="cpu", delegate_loader=loads)
    assert calls == [] and cpu.on_edgetpu is False and cpu.compiled is False
    assert cpu.runs_on.startswith("cpu: the backbone is not compiled")
    config = write_device(tmp_path, kits["coral"], device_id="coral-1", coral_fallback="cpu")
    with pytest.warns(UserWarning):
        agent = DeviceAgent(DeviceConfig.load(config))
    assert agent.accelerator.startswith("cpu: ") and "not compiled" in agent.accelerator
    assert not Path(agent.config.state_dir, "device_id").exists()  # configured id: none made
